"""Run plans and batches as data, for the store: :func:`encode` and :func:`decode`.

A queue run keeps its plan and every batch it sends in the store, where workers on other
machines read them. Pickle there would let whoever can write the store's tables run code
in every worker; this format holds data only. A payload is JSON: an envelope naming the
format and the h3pipe that wrote it, around the value objects listed in ``_TYPES`` (by
class name, field by field), tuples, dicts (as key-value pairs, so keys keep their type),
numeric arrays (little-endian bytes in base64) and geometries (WKB in hex).

Decoding builds nothing else: it constructs only the listed frozen dataclasses, from
exactly their fields, and refuses (:class:`StoreError`, naming both sides) a payload of
another format, an unknown type or field, or a pickle left by an older h3pipe, which is
never unpickled.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from typing import Any

import numpy as np

from h3pipe.about import version as ours
from h3pipe.errors import StoreError
from h3pipe.grid import CellBlock
from h3pipe.operations.base import Batch
from h3pipe.planning.feeds import FeatureFeed, Grouping, OutputFeed
from h3pipe.planning.prepare import RunOptions, RunPlan, Sweep, UsedItem
from h3pipe.planning.scope import Scope, ScopeCells
from h3pipe.sources.dimensions import Dimensions, Scenario
from h3pipe.sources.raster import RasterInfo, TileInfo
from h3pipe.sources.vector import VectorInfo
from h3pipe.spec import PipelineSpec, Retry, SourceSpec, StacSpec, StepSpec

# Raised whenever the encoding of anything below changes; a worker refuses other formats.
FORMAT = 2  # 2: RunPlan.workers_chosen (0.1.0 wrote 1)
KINDS = ("plan", "batch")
_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    RunPlan, RunOptions, Sweep, UsedItem, PipelineSpec, StepSpec, SourceSpec, StacSpec,
    Dimensions, Scenario, Scope, ScopeCells, CellBlock, RasterInfo, TileInfo, VectorInfo,
    Batch, Retry, FeatureFeed, OutputFeed, Grouping)}
# Arrays are numbers only, little-endian: never an object array.
_DTYPES = frozenset(np.dtype(t).newbyteorder("<").str for t in (
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float32", "float64"))
_OLDER = "was recorded by an older h3pipe"


class PayloadError(StoreError):
    """A plan or batch in the store that this h3pipe does not read."""


# -- encoding -----------------------------------------------------------------------------

def encode(value: Any, kind: str) -> bytes:
    """``value`` (a plan, or a batch's record) as the store keeps it."""
    assert kind in KINDS
    envelope = {"format": FORMAT, "h3pipe": ours(), "kind": kind, "value": _out(value)}
    return json.dumps(envelope, allow_nan=False, separators=(",", ":")).encode()


def _out(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return _out(value.item())
    if isinstance(value, list):
        return [_out(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [_out(v) for v in value]}
    if isinstance(value, dict):
        return {"$dict": [[_out(k), _out(v)] for k, v in value.items()]}
    if isinstance(value, np.ndarray):
        return _array_out(value)
    if dataclasses.is_dataclass(value) and _TYPES.get(type(value).__name__) is type(value):
        return {"$": type(value).__name__} | {f.name: _out(getattr(value, f.name))
                                              for f in dataclasses.fields(value) if f.init}
    if type(value).__module__.startswith("shapely"):
        import shapely

        return {"$wkb": shapely.to_wkb(value, hex=True, include_srid=False)}
    raise TypeError(f"the store's plan format has no place for a {type(value).__name__}")


def _array_out(array: np.ndarray) -> dict[str, Any]:
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    if little.dtype.str not in _DTYPES:
        raise TypeError(f"the store's plan format holds numeric arrays, not {array.dtype}")
    data = base64.b64encode(np.ascontiguousarray(little).tobytes()).decode()
    return {"$array": [little.dtype.str, list(array.shape), data]}


# -- decoding -----------------------------------------------------------------------------

def decode(payload: bytes, kind: str, where: str) -> Any:
    """The value :func:`encode` kept; ``where`` names it in errors ("the plan of run X").
    Refuses a payload of another format or kind, and never unpickles one."""
    assert kind in KINDS
    try:
        envelope = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise PayloadError(f"{where} {_OLDER} or by something else (not h3pipe's {kind} "
                           "format: it is not read)", hint="run it again with this "
                           "h3pipe (the same command)") from None
    if not isinstance(envelope, dict) or set(envelope) != {"format", "h3pipe", "kind",
                                                            "value"}:
        raise _invalid(where, kind, "its envelope is not format, h3pipe, kind and value")
    if envelope["format"] != FORMAT:
        raise _other_format(where, kind, envelope["h3pipe"], envelope["format"])
    if envelope["kind"] != kind:
        raise _invalid(where, kind, f"it holds a {envelope['kind']!r}")
    try:
        return _in(envelope["value"])
    except PayloadError as exc:
        raise _invalid(where, kind, exc.message) from None
    except (TypeError, ValueError) as exc:  # a field the class itself refuses
        raise _invalid(where, kind, str(exc)) from None


def _other_format(where: str, kind: str, version: Any, fmt: Any) -> PayloadError:
    newer = isinstance(fmt, int) and fmt > FORMAT
    return PayloadError(
        f"{where} was written by h3pipe {version} with {kind} format {fmt}; this h3pipe "
        f"{ours()} reads format {FORMAT}",
        hint="upgrade h3pipe on this worker to the version that submitted it" if newer
        else "run it again with this h3pipe (the same command), or use the h3pipe that "
        "submitted it")


def _invalid(where: str, kind: str, why: str) -> PayloadError:
    return PayloadError(f"{where} is not a {kind} of format {FORMAT} that h3pipe "
                        f"{ours()} reads: {why}; nothing of it is run",
                        hint="the store's queue tables were written by something else than "
                        "h3pipe: check who can write the store, and run it again")


def _in(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_in(v) for v in value]
    if not isinstance(value, dict) or not value:
        raise PayloadError(f"unexpected {type(value).__name__}")
    if "$" in value:
        return _object(value)
    if len(value) != 1:
        raise PayloadError(f"an object with keys {sorted(value)}")
    (tag, body), = value.items()
    if tag == "$tuple" and isinstance(body, list):
        return tuple(_in(v) for v in body)
    if tag == "$dict" and isinstance(body, list):
        return {_hashable(_in(k)): _in(v) for k, v in (_pair(p) for p in body)}
    if tag == "$float" and body in ("nan", "inf", "-inf"):
        return float(body)
    if tag == "$array":
        return _array_in(body)
    if tag == "$wkb" and isinstance(body, str):
        return _geometry_in(body)
    raise PayloadError(f"unknown type {tag!r}")


def _object(value: dict[str, Any]) -> Any:
    name = value["$"]
    cls = _TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise PayloadError(f"unknown type {name!r}")
    given = {k: v for k, v in value.items() if k != "$"}
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise PayloadError(f"{name} has no field {unknown[0]!r}")
    missing = [k for k in known if k not in given]
    if missing:
        raise PayloadError(f"{name} lacks its field {missing[0]!r}")
    return cls(**{k: _in(v) for k, v in given.items()})


def _pair(pair: Any) -> tuple[Any, Any]:
    if not isinstance(pair, list) or len(pair) != 2:
        raise PayloadError("a dict entry that is not a key and a value")
    return pair[0], pair[1]


def _hashable(key: Any) -> Any:
    if isinstance(key, list | dict):
        raise PayloadError("a dict key that is a list or a dict")
    return key


def _array_in(body: Any) -> np.ndarray:
    if not (isinstance(body, list) and len(body) == 3 and body[0] in _DTYPES
            and isinstance(body[1], list) and all(isinstance(n, int) and n >= 0
                                                  for n in body[1])
            and isinstance(body[2], str)):
        raise PayloadError("an array that is not a numeric dtype, a shape and its bytes")
    data = base64.b64decode(body[2], validate=True)
    dtype = np.dtype(body[0])
    if len(data) != dtype.itemsize * math.prod(body[1]):
        raise PayloadError(f"an array of shape {body[1]} with {len(data)} bytes")
    out = np.frombuffer(data, dtype=dtype).reshape(body[1])
    return out.astype(out.dtype.newbyteorder("="))  # a writable copy, in native order


def _geometry_in(text: str) -> Any:
    import shapely

    try:
        return shapely.from_wkb(bytes.fromhex(text))
    except (ValueError, shapely.errors.GEOSException) as exc:
        raise PayloadError(f"a geometry that is not WKB ({exc})") from None


# -- what the queue keeps -----------------------------------------------------------------

def encode_plan(plan: RunPlan) -> bytes:
    return encode(plan, "plan")


def decode_plan(payload: bytes, run_id: str) -> RunPlan:
    plan = decode(payload, "plan", f"the plan of run {run_id}")
    if not isinstance(plan, RunPlan):
        raise _invalid(f"the plan of run {run_id}", "plan", "it holds no RunPlan")
    return plan


def encode_batch(batch: Batch, retry: Retry, storage: str) -> bytes:
    """A batch as sent, with the step's retries and its output's storage."""
    return encode({"batch": batch, "retry": retry, "storage": storage}, "batch")


def decode_batch(payload: bytes, label: str) -> tuple[Batch, Retry, str]:
    where = f"the batch of task {label}"
    held = decode(payload, "batch", where)
    if not (isinstance(held, dict) and set(held) == {"batch", "retry", "storage"}
            and isinstance(held["batch"], Batch) and isinstance(held["retry"], Retry)
            and isinstance(held["storage"], str)):
        raise _invalid(where, "batch", "it is not a batch, its retries and its storage")
    return held["batch"], held["retry"], held["storage"]


__all__ = ["FORMAT", "PayloadError", "decode", "decode_batch", "decode_plan", "encode",
           "encode_batch", "encode_plan"]
