"""Plans and batches as the store keeps them (h3pipe.queue.codec): real plans built by
prepare() on a small sweep project, and their batches, come back field for field, arrays
and geometries to the byte; a tampered payload (a pickle, an unknown type or field,
another format) is refused by name, and nothing in it runs."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import shapely

from h3pipe import __version__
from h3pipe.config.project import ProjectConfig
from h3pipe.errors import OperationError
from h3pipe.planning.batching import Batcher
from h3pipe.planning.prepare import UsedItem, prepare
from h3pipe.planning.scope import resolve_scope
from h3pipe.queue import codec
from h3pipe.sources.dimensions import Dimensions, Scenario
from h3pipe.sources.raster import RasterInfo, TileInfo
from h3pipe.spec import Retry, StacSpec
from tests.conftest import write_project
from tests.execution.test_sweep import BBOX, BUILDINGS, EXPOSURE, SOURCE, ZONAL, make_scene


def same(a, b, seen: set[str], path: str = "value") -> None:
    """``a`` and ``b`` equal in every field (those dataclass equality skips too), arrays
    by dtype, shape and bytes, geometries by WKB; the classes met go into ``seen``."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if dataclasses.is_dataclass(a):
        seen.add(type(a).__name__)
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), seen, f"{path}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes()), path
    elif isinstance(a, shapely.Geometry):
        assert shapely.to_wkb(a) == shapely.to_wkb(b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            same(a[k], b[k], seen, f"{path}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, seen, f"{path}[{n}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_scene(tmp_path_factory.mktemp("codec"))
    write_project(root, sources={"hz": SOURCE, "b": BUILDINGS},
                  pipelines={"e": EXPOSURE, "z": ZONAL})
    return ProjectConfig(root)


def _batches(plan):
    """Every step's first batches, a later stage's fed by (made up) upstream outputs."""
    planner = Batcher.of(plan, None)
    planner.store_location = ""  # as the queue plans them
    for step in plan.pipeline.steps:
        if step.input_step:
            planner.outputs = {step.input_step: {1: "t1.parquet", 2: "t2.parquet"}}
            planner.sizes = {step.input_step: {1: 10, 2: 3}}
        for batch in planner.batches(step)[:3]:
            yield batch, plan.retry(step), step.storage


def _plan_round_trip(project, pipeline, seen):
    plan = prepare(project, pipeline, resolve_scope(bbox=BBOX))
    back = codec.decode_plan(codec.encode_plan(plan), plan.run_id)
    same(plan, back, seen)
    assert back.fingerprints() == plan.fingerprints() and back.params() == plan.params()
    assert len(back.cells) == len(plan.cells) > 0
    for batch, retry, storage in _batches(plan):
        got = codec.decode_batch(codec.encode_batch(batch, retry, storage), "t")
        same((batch, retry, storage), got, seen)
        if batch.block is not None:
            assert got[0].cell_ids().tolist() == batch.cell_ids().tolist()


def _small_values_round_trip(seen):
    """What the sweep plans lack: a STAC item and spec, NaN and infinite floats, keys
    that are not text, bool and empty arrays, big-endian input, a sweep's groups."""
    tile = TileInfo("https://example.org/a.tif", 0, 0, 10, 10, float("nan"))
    value = {
        "item": UsedItem("s", "item-1", "https://example.org/a.tif", None),
        "stac": StacSpec("https://example.org/stac", "c", query={"eo:cloud_cover": {"lt": 5}}),
        "raster": RasterInfo("s", "WKT", True, -180.0, 90.0, 0.1, -0.1, 1, "float32",
                             float("nan"), True, (tile,), "planetary_computer", (1, 2),
                             ("a", "b")),
        "floats": [float("inf"), float("-inf"), -0.0, 1e-300],
        1: (Scenario((("ssp", None), ("year", "2050"))),),
        "arrays": (np.array([True, False]), np.zeros((0, 4)), np.arange(3, dtype=">i4")),
        "dims": Dimensions((("year", ("2020", "2050")),), ((("year", ("2050",)),),)),
        "retry": Retry(0, 0.5),
    }
    back = codec.decode(codec.encode(value, "batch"), "batch", "a test value")
    assert back["arrays"][2].dtype == np.dtype("=i4")  # native order, the same numbers
    value["arrays"] = (*value["arrays"][:2], np.arange(3, dtype="=i4"))
    same(value, back, seen)


@pytest.mark.parametrize("pipeline", ["e", "z"])
def test_a_prepared_plan_and_its_batches_come_back_whole(project, pipeline):
    _plan_round_trip(project, pipeline, set())


def test_values_no_small_plan_holds_come_back_too():
    _small_values_round_trip(set())


def test_every_encoded_type_comes_back(project):
    seen: set[str] = set()
    for pipeline in ("e", "z"):
        _plan_round_trip(project, pipeline, seen)
    _small_values_round_trip(seen)
    assert set(codec._TYPES) - seen == set()


# -- refused ------------------------------------------------------------------------------

class _Touch:
    """Unpickling this creates ``path``: what a store row must never get to do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_pickle_in_the_store_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Touch(marker))
    with pytest.raises(codec.PayloadError, match="plan of run r1 was recorded by an older "
                       "h3pipe") as err:
        codec.decode_plan(payload, "r1")
    assert "run it again" in str(err.value)
    assert not marker.exists()
    pickle.loads(payload)  # the payload does what it says: decoding it would have run it
    assert marker.exists()


def _envelope(value, **changes):
    return json.dumps({"format": codec.FORMAT, "h3pipe": __version__, "kind": "batch",
                       "value": value} | changes).encode()


def test_a_payload_of_another_format_names_both_versions():
    with pytest.raises(codec.PayloadError) as err:
        codec.decode_plan(json.dumps({"format": 99, "h3pipe": "9.9.9", "kind": "plan",
                                      "value": None}).encode(), "r1")
    assert str(err.value).startswith(
        f"the plan of run r1 was written by h3pipe 9.9.9 with plan format 99; this h3pipe "
        f"{__version__} reads format {codec.FORMAT}; upgrade h3pipe on this worker")
    with pytest.raises(codec.PayloadError, match="with plan format 0.*run it again"):
        codec.decode_plan(json.dumps({"format": 0, "h3pipe": "0.0.1", "kind": "plan",
                                      "value": None}).encode(), "r1")


def test_a_plan_submitted_by_the_previous_format_is_refused_by_name(project):
    # What 0.1.0 stored for a queue run in flight: format 1, a RunPlan without
    # workers_chosen. A worker of this version names both formats and what to do.
    plan = prepare(project, "z", resolve_scope(bbox=BBOX))
    envelope = json.loads(codec.encode_plan(plan))
    del envelope["value"]["workers_chosen"]
    old = json.dumps(envelope | {"format": 1, "h3pipe": "0.1.0"}).encode()
    with pytest.raises(codec.PayloadError) as err:
        codec.decode_plan(old, plan.run_id)
    assert str(err.value).startswith(
        f"the plan of run {plan.run_id} was written by h3pipe 0.1.0 with plan format 1; "
        f"this h3pipe {__version__} reads format 2")
    assert "run it again with this h3pipe" in str(err.value)


@pytest.mark.parametrize(("value", "words"), [
    ({"$": "Retry", "retries": 1, "backoff": 1.0, "command": "rm -rf /"},
     "Retry has no field 'command'"),
    ({"$": "Retry", "retries": 1}, "Retry lacks its field 'backoff'"),
    ({"$": "posix.system", "command": "touch /tmp/x"}, "unknown type 'posix.system'"),
    ({"$": "Popen", "args": ["touch", "/tmp/x"]}, "unknown type 'Popen'"),
    ({"$reduce": ["os", "system"]}, "unknown type '$reduce'"),
    ({"$array": ["|O", [1], "AAAAAAAAAAA="]}, "not a numeric dtype"),
    ({"$array": ["<u8", [2], "AAAAAAAAAAA="]}, "shape [2] with 8 bytes"),
    ({"$wkb": "zz"}, "not WKB"),
    ({"a": 1, "b": 2}, "an object with keys ['a', 'b']"),
    ({"$dict": [[[1], 2]]}, "a dict key that is a list"),
])
def test_a_tampered_value_is_refused_by_name(value, words):
    with pytest.raises(codec.PayloadError) as err:
        codec.decode(_envelope(value), "batch", "the batch of task s#1")
    assert words in str(err.value) and "nothing of it is run" in str(err.value)


def test_a_batch_payload_must_hold_a_batch():
    with pytest.raises(codec.PayloadError, match="not a batch, its retries"):
        codec.decode_batch(codec.encode({"batch": 1, "retry": 2, "storage": "table"},
                                        "batch"), "s#1")
    with pytest.raises(codec.PayloadError, match="it holds a 'batch'"):
        codec.decode_plan(_envelope(None), "r1")
    with pytest.raises(codec.PayloadError, match="envelope"):
        codec.decode_plan(json.dumps({"value": None}).encode(), "r1")


def test_what_the_format_has_no_place_for_is_not_written():
    with pytest.raises(TypeError, match="no place for a bytes"):
        codec.encode({"x": b"raw"}, "batch")
    with pytest.raises(TypeError, match="numeric arrays, not object"):
        codec.encode(np.array([object()]), "batch")


def test_a_queue_batch_naming_another_store_is_refused(project):
    """The queue plans later stages to read the worker's own store; a batch that names
    another (a tampered row) is refused before anything is read."""
    from h3pipe.queue.work import own_store
    from h3pipe.storage.runlog import TaskKey

    plan = prepare(project, "e", resolve_scope(bbox=BBOX))
    later = [b for b in _batches(plan) if b[0].step_id == "exposure"]
    assert later and own_store(later[0], TaskKey("r", "exposure", 1)) == later[0]
    batch, retry, storage = later[0]
    other = dataclasses.replace(batch, feed=dataclasses.replace(
        batch.feed, store="postgresql://evil.example.org/x"))
    with pytest.raises(OperationError, match="names a store of its own") as err:
        own_store((other, retry, storage), TaskKey("r", "exposure", 1))
    assert "evil.example.org" not in str(err.value)
