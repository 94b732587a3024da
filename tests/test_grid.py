"""h3pipe.grid against h3-py, the reference implementation of H3, on the same cells."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import shapely

from h3pipe import grid


def _ids(cells):
    return np.array([h3.str_to_int(c) for c in cells], dtype=np.uint64)


def _some(res, n=3):
    return sorted(h3.grid_disk(h3.latlng_to_cell(-2.0, 29.0, res), n))


@pytest.mark.parametrize("res", [0, 4, 9, 15])
def test_strings_and_ids_round_trip(res):
    cells = _some(res)
    assert grid.strings(_ids(cells)).to_pylist() == cells
    assert grid.ids(cells).tolist() == _ids(cells).tolist()


@pytest.mark.parametrize("res, parent_res", [(8, 4), (9, 4), (5, 4), (15, 0), (4, 4)])
def test_parents_by_bit_arithmetic_match_h3(res, parent_res):
    cells = _some(res)
    got = grid.parents(_ids(cells), parent_res)
    assert [h3.int_to_str(int(g)) for g in got] == [h3.cell_to_parent(c, parent_res)
                                                    for c in cells]


def test_children_in_parent_order_each_sorted():
    parents = [h3.latlng_to_cell(-2.0, 29.5, 5), h3.latlng_to_cell(10.0, -3.0, 5),
               h3.get_pentagons(5)[0]]
    got = [h3.int_to_str(int(c)) for c in grid.children(_ids(parents), 7)]
    assert got == [c for p in parents for c in sorted(h3.cell_to_children(p, 7))]
    assert grid.children_count(_ids(parents), 7).tolist() == [
        h3.cell_to_children_size(p, 7) for p in parents]


@pytest.mark.parametrize("res", [0, 1, 5, 9, 15])
def test_pentagons_by_bit_arithmetic_match_h3(res):
    cells = h3.get_pentagons(res) + _some(res, 2) + [h3.cell_to_center_child(
        h3.get_pentagons(0)[3], res)]
    assert grid.is_pentagon(_ids(cells)).tolist() == [h3.is_pentagon(c) for c in cells]


def test_centres_and_outlines_match_h3():
    cells = _some(9) + [h3.get_pentagons(6)[1]]
    lng, lat = grid.centres(_ids(cells))
    xy, starts = grid.outlines(_ids(cells))
    for i, c in enumerate(cells):
        clat, clng = h3.cell_to_latlng(c)
        assert (lng[i], lat[i]) == pytest.approx((clng, clat), abs=1e-12)
        ring = [(x, y) for y, x in h3.cell_to_boundary(c)]
        assert np.allclose(xy[starts[i]:starts[i + 1]], ring + [ring[0]], rtol=0, atol=1e-12)


def _parents(seed: int, count: int, finest: int, latitude: float):
    """Random (resolution, parent) pairs up to ``latitude``, none across the antimeridian."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        res = int(rng.integers(0, finest + 1))
        parent = h3.latlng_to_cell(rng.uniform(-latitude, latitude), rng.uniform(-170, 170),
                                   res)
        ring = [lng for _, lng in h3.cell_to_boundary(parent)]
        if max(ring) - min(ring) <= 180:
            yield res, parent


def test_descendant_centres_lie_in_the_grown_outline():
    """What descendant_scale promises, on random parents of resolutions 0 to 7 up to 85
    degrees of latitude (with some room to spare: 1.3 for resolution 2 and finer)."""
    for res, parent in _parents(12, 150, 7, 85):
        grown = grid.shapes(_ids([parent]), grid.descendant_scale(res))[0]
        tight = grid.shapes(_ids([parent]), 1.3 if res >= 2 else 2.5)[0]
        for depth in (1, 3, 5):
            kids = grid.children(_ids([parent]), h3.get_resolution(parent) + depth)
            lng, lat = grid.centres(kids)
            assert shapely.contains_xy(tight, lng, lat).all()
            assert shapely.contains_xy(grown, lng, lat).all()


def test_descendant_boxes_lie_in_the_grown_box():
    """What descendant_box_scale promises (a partition's grown outline, and so its box,
    holds every feature centroid of its descendant cells), on random parents of
    resolutions 0 to 8 up to 88 degrees of latitude, with room to spare: 1.26 for
    resolution 2 and finer, the descendants' outlines from h3-py."""
    for res, parent in _parents(13, 200, 8, 88):
        grown = shapely.bounds(grid.shapes(_ids([parent]),
                                                    grid.descendant_box_scale(res))[0])
        tight = shapely.bounds(grid.shapes(_ids([parent]),
                                                    1.26 if res >= 2 else 2.5)[0])
        for depth in (1, 2, 4):
            kids = h3.cell_to_children(parent, res + depth)
            pts = np.array([p for k in kids for p in h3.cell_to_boundary(k)])
            lat, lng = pts[:, 0], pts[:, 1]
            for box in (grown, tight):
                assert (lng >= box[0]).all() and (lng <= box[2]).all()
                assert (lat >= box[1]).all() and (lat <= box[3]).all()
            # The grown outline itself holds them too up to 80 degrees (a batch's bins are
            # marked by it there; nearer the poles, by its box).
            if res >= 2 and abs(h3.cell_to_latlng(parent)[0]) <= 80:
                outline = grid.shapes(_ids([parent]), 1.26)[0]
                assert shapely.contains_xy(outline, lng, lat).all()


@pytest.mark.parametrize("res", [0, 6, 11, 15])
def test_cells_at_points_match_h3(res):
    rng = np.random.default_rng(res)
    lng, lat = rng.uniform(-180, 180, 500), rng.uniform(-89, 89, 500)
    expected = [h3.str_to_int(h3.latlng_to_cell(y, x, res)) for x, y in zip(lng, lat, strict=True)]
    assert grid.cells_at(lng, lat, res).tolist() == expected
    assert len(grid.cells_at(np.array([]), np.array([]), res)) == 0
