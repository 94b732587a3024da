"""The independent route for zonal statistics tests: exactextract called directly on the
same cell polygons, with h3pipe's documented empty-cell rule applied, and the comparison."""

from __future__ import annotations

import math
from typing import Any

import h3
import pytest
import shapely
import shapely.affinity
from exactextract import exact_extract

from tests.conftest import cell_feature

ALL_STATS = ["count", "sum", "mean", "min", "max", "stdev", "median", "majority", "minority",
             "variety", "quantile_25", "quantile_90"]
# exactextract's own spelling; it names quantile(q=0.25) 'quantile_25' and q=0.9 'quantile_90'.
EE_OP = {"quantile_25": "quantile(q=0.25)", "quantile_90": "quantile(q=0.9)"}
DEFINED_WHEN_EMPTY = {"count", "variety"}
REL = 1e-6
# Only for values that should be exactly 0 (stdev of a constant): both sides may carry
# round-off of a few 1e-15 there, which no relative tolerance accepts.
ABS = 1e-9


def reference(source: Any, cells: list[str] | set[str], stats: list[str] = ALL_STATS,
              features: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """exactextract on ``source``, one row per cell, with the empty-cell rule applied."""
    ops = ["count"] + [EE_OP.get(s, s) for s in stats if s != "count"]
    feats = features if features is not None else [cell_feature(c) for c in cells]
    out: dict[str, dict[str, Any]] = {}
    for f in exact_extract(source, feats, ops, include_cols=["cell"]):
        p = f["properties"]
        empty = p["count"] == 0
        out[p["cell"]] = {
            s: None if (empty and s not in DEFINED_WHEN_EMPTY)
            or (isinstance(p.get(s), float) and math.isnan(p[s])) else p.get(s)
            for s in stats
        }
    return out


def assert_same(actual: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]],
                stats: list[str] = ALL_STATS) -> None:
    assert set(actual) == set(expected)
    for cell, exp in expected.items():
        for s in stats:
            a, e = actual[cell][s], exp[s]
            if e is None:
                assert a is None, f"{cell} {s}: expected null, got {a}"
            else:
                assert a == pytest.approx(e, rel=REL, abs=ABS), f"{cell} {s}: {a} != {e}"


def cell_on_plane(cell: str) -> Any:
    """The cell as the plane holds it, built here from h3's vertices: cut at ±180, or, for
    the cell on a pole, the area between its ring and the pole."""
    pts = [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]
    lons = [x for x, _ in pts]
    if max(lons) - min(lons) <= 180:
        return shapely.Polygon(pts)
    res = h3.get_resolution(cell)
    for pole in (90.0, -90.0):
        if h3.latlng_to_cell(pole, 0.0, res) == cell:
            ring = sorted(pts)  # round the pole: by longitude, west to east
            (x1, y1), (xn, yn) = ring[0], ring[-1]
            at = yn + (180 - xn) / (x1 + 360 - xn) * (y1 - yn)  # where it meets ±180
            return shapely.Polygon([(-180, at), *ring, (180, at), (180, pole), (-180, pole)])
    east = shapely.Polygon([(x + 360 if x < 0 else x, y) for x, y in pts])
    west = shapely.affinity.translate(east.intersection(shapely.box(180, -90, 540, 90)), -360)
    return shapely.union_all([east.intersection(shapely.box(-180, -90, 180, 90)), west])
