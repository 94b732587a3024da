"""How ``h3pipe export`` shapes a sweep's result: :func:`shape` keeps the rows of the
scenarios and bands asked for (``--where flood_type=pluvial_defended --where year=2050
--where return_period=rp100``) in the wide layout (a column per band and statistic:
``rp100_flooded_buildings``) or the long one (a row per band, its name in the band key
column, a column per statistic: ``return_period``, ``flooded_buildings``).
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa

from h3pipe.errors import UsageError
from h3pipe.sources.dimensions import SCENARIO

LAYOUTS = ("wide", "long")


def parse_where(items: list[str]) -> dict[str, list[str]]:
    """``key=value`` (or ``key=v1,v2``) filters, each key's values merged."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--where '{item}' is not KEY=VALUE (e.g. --where year=2050)")
        out.setdefault(key.strip(), []).extend(v.strip() for v in value.split(","))
    return out


def merged(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The layout of several results of one dataset: every key, the first bands."""
    keys: list[str] = []
    bands = None
    for e in entries:
        layout = json.loads(e.get("layout") or "{}")
        keys += [k for k in layout.get("keys", []) if k not in keys]
        bands = bands or layout.get("bands")
    return {"keys": keys, "bands": bands}


def shape(table: pa.Table, layout: dict[str, Any], where: dict[str, list[str]],
          layout_name: str = "wide") -> pa.Table:
    """``table`` (read_results' rows) with only the rows and bands ``where`` keeps, in the
    layout asked for; a ``where`` that keeps nothing raises :class:`UsageError`."""
    if layout_name not in LAYOUTS:
        raise UsageError(f"--layout '{layout_name}' is not one of {', '.join(LAYOUTS)}")
    bands = layout.get("bands") or {}
    band_key = bands.get("key")
    _refuse_unmatched(table, layout.get("keys", []), bands, where)
    # pyarrow.compute (0.1 s) for the export that names keys, not with every command.
    import pyarrow.compute as pc

    read = table
    for key in layout.get("keys", []):
        if key in where:
            table = table.filter(pc.is_in(table.column(key), pa.array(where[key], pa.string())))
    if read.num_rows and not table.num_rows:
        _no_row_has_all(read, layout.get("keys", []), where)
    if not band_key:
        if layout_name == "long":
            raise UsageError("--layout long needs a dataset of a multi-band source")
        return table
    chosen = where.get(band_key, bands["names"])
    if layout_name == "long":
        return _long(table, layout.get("keys", []), band_key, bands["names"], chosen)
    dropped = {c for b in bands["names"] if b not in chosen for c in table.column_names
               if c.startswith(f"{b}_")}
    return table.select([c for c in table.column_names if c not in dropped])


def _refuse_unmatched(table: pa.Table, keys: list[str], bands: dict[str, Any],
                      where: dict[str, list[str]]) -> None:
    """Raise when ``where`` names a key, band or value the dataset lacks: a filter that
    matches nothing is a typo, not an empty export."""
    band_key = bands.get("key")
    known = [*keys, *([band_key] if band_key else [])]
    for key, values in where.items():
        if key not in known:
            raise UsageError(f"--where {key}: the dataset has no key '{key}'"
                             + (f" (keys: {', '.join(known)})" if known else
                                " (it is one row per cell: no scenarios or bands)"))
        if key == band_key:
            kind, have = "band", list(bands["names"])
        else:
            kind, have = "value", _values(table, key)
        unknown = [v for v in dict.fromkeys(values) if v not in have]
        if unknown:
            raise UsageError(f"--where {key}: no {kind} {', '.join(unknown)} ({kind}s: "
                             f"{', '.join(have) or 'none'})")


def _values(table: pa.Table, key: str) -> list[str]:
    """The values of key column ``key`` in ``table``, sorted; a null is none (no --where
    can name it)."""
    import pyarrow.compute as pc

    return sorted(str(v) for v in pc.unique(table.column(key)).to_pylist() if v is not None)


def _no_row_has_all(read: pa.Table, keys: list[str], where: dict[str, list[str]]) -> NoReturn:
    """Raise: each value exists, but no scenario has them all (year=2020 with ssp=s1)."""
    given = " ".join(f"--where {k}={','.join(v)}" for k, v in where.items() if k in keys)
    have = _values(read, SCENARIO) if SCENARIO in keys else []
    raise UsageError(f"{given}: no scenario has all of these"
                     + (f" (scenarios: {', '.join(have)})" if have else ""))


def _long(table: pa.Table, keys: list[str], band_key: str, names: list[str],
          chosen: list[str]) -> pa.Table:
    """A row per band of each row: the band's name in ``band_key``, its columns unprefixed."""
    prefixed = {c: b for c in table.column_names for b in names if c.startswith(f"{b}_")}
    bases = list(dict.fromkeys(c[len(prefixed[c]) + 1:] for c in prefixed))
    front = [c for c in ("h3_index", "resolution", *keys) if c in table.column_names]
    others = [c for c in table.column_names if c not in prefixed and c not in front]
    parts = []
    for band in (b for b in names if b in chosen):
        cols = {c: table.column(c) for c in front}
        cols[band_key] = pa.array(np.full(table.num_rows, band, dtype=object), pa.string())
        cols |= {c: table.column(c) for c in others}
        for base in bases:
            name = f"{band}_{base}"
            cols[base] = table.column(name) if name in table.column_names else \
                pa.nulls(table.num_rows, pa.float64())
        parts.append(pa.table(cols))
    return pa.concat_tables(parts, promote_options="permissive")


__all__ = ["LAYOUTS", "merged", "parse_where", "shape"]
