"""Exact coverage-weighted moments of a raster window per polygon: :func:`polygon_moments`;
the covered area per class or bin: :func:`polygon_bins`.

The fast path of ``zonal_stats`` for count, sum, mean, min, max, stdev, coverage, class
fractions and histograms. Each pixel is
weighted by the exact fraction of its area inside the polygon, as exactextract does, but
the work per polygon is one pass over its bounding box plus O(1) per edge and row:

* The winding number of a point is the signed count of polygon edges to its right. So the
  area of polygon ∩ pixel is the sum, over edges, of the signed area of the part of the
  pixel lying left of the edge within the edge's vertical span.
* Within one pixel row an edge covers wholly every pixel to the left of the columns it
  crosses (a constant, added once and spread by a running sum from the right) and partly
  only the one or two pixels it crosses (an exact integral of a clamped linear function).

Pixels wholly inside a polygon therefore cost one addition each, and only pixels cut by an
edge need geometry. Polygons may be non-convex and have holes. Nothing here reads files:
the caller passes a window of values with NaN wherever there is no data.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Column order of the array returned by polygon_moments: the six weighted moments, then
# the plain covered fraction of valid pixels (``VALID``, in pixels, whatever the weights).
COUNT, SUM, MEAN, MIN, MAX, STDEV, VALID = range(7)


@njit(cache=True, nogil=True)
def _clamped_integral(t: float) -> float:
    """Antiderivative of clamp(s, 0, 1) at t."""
    if t <= 0.0:
        return 0.0
    if t < 1.0:
        return 0.5 * t * t
    return t - 0.5


@njit(cache=True, nogil=True)
def _add_ring(u: np.ndarray, v: np.ndarray, sign: float, r0: int, c0: int,
              partial: np.ndarray, full: np.ndarray) -> None:
    """Add one closed ring's signed coverage to ``partial`` and the row markers ``full``."""
    nrows, ncols = partial.shape
    n = u.shape[0]
    for k in range(n - 1):
        ua0, va0, ub0, vb0 = u[k], v[k], u[k + 1], v[k + 1]
        if va0 == vb0:
            continue
        s = sign if vb0 > va0 else -sign
        if va0 < vb0:
            vlo, vhi, ulo_v, uhi_v = va0, vb0, ua0, ub0
        else:
            vlo, vhi, ulo_v, uhi_v = vb0, va0, ub0, ua0
        slope = (uhi_v - ulo_v) / (vhi - vlo)
        first = max(int(math.floor(vlo)), r0)
        last = min(int(math.ceil(vhi)), r0 + nrows)
        for r in range(first, last):
            a = max(vlo, float(r))
            b = min(vhi, float(r + 1))
            h = b - a
            if h <= 0.0:
                continue
            ua = ulo_v + slope * (a - vlo)
            ub = ulo_v + slope * (b - vlo)
            lo = min(ua, ub)
            hi = max(ua, ub)
            clo = int(math.floor(lo))
            chi = int(math.floor(hi))
            row = r - r0
            du = ub - ua
            for c in range(max(clo, c0), min(chi + 1, c0 + ncols)):
                # Within one column the covered part is the mean of a linear function: the
                # value at the middle, exactly. Across columns the integral is divided by
                # du; for a nearly vertical edge that division would turn rounding into
                # errors of 1e-16/du (2e-5 of a pixel for a building edge 5e-12 pixel off
                # vertical), so below 3e-8 the middle is used there too (error under du/8).
                if clo == chi or abs(du) < 3e-8:
                    part = h * min(max(0.5 * (ua + ub) - c, 0.0), 1.0)
                else:
                    part = h / du * (_clamped_integral(ub - c) - _clamped_integral(ua - c))
                partial[row, c - c0] += s * part
            # Every column left of the crossed ones is covered over the full height h.
            if clo > c0:
                mark = min(clo, c0 + ncols) - 1 - c0
                full[row, mark] += s * h


@njit(cache=True, nogil=True)
def polygon_moments(values: np.ndarray, u: np.ndarray, v: np.ndarray,
                    ring_starts: np.ndarray, poly_starts: np.ndarray,
                    row_weights: np.ndarray) -> np.ndarray:
    """Moments per polygon of ``values`` (rows x cols, NaN = no data).

    Vertices are in pixel coordinates of ``values`` (``u`` = column, ``v`` = row, both
    growing away from the top-left corner). Ring ``i`` is ``u[ring_starts[i]:ring_starts[i+1]]``
    (closed: last vertex repeats the first); polygon ``p`` owns rings
    ``poly_starts[p]:poly_starts[p+1]``, its exterior first. Each pixel weighs its covered
    fraction times the weight of its row (``row_weights``: ones, or each row's pixel area).
    Returns one row per polygon: count, sum, mean, min, max, stdev (population, weighted),
    valid (covered fraction of valid pixels, unweighted); NaN where the polygon covers no
    valid pixel (count 0).
    """
    nrows, ncols = values.shape
    npoly = poly_starts.shape[0] - 1
    out = np.full((npoly, 7), np.nan)
    for p in range(npoly):
        out[p, COUNT] = 0.0
        out[p, SUM] = 0.0
        out[p, VALID] = 0.0
        window = _window(u, v, ring_starts, poly_starts[p], nrows, ncols)
        r0, c0, r1, c1 = window
        if c0 >= c1 or r0 >= r1:
            continue
        coverage = _local_coverage(u, v, ring_starts, poly_starts[p], poly_starts[p + 1],
                                   r0, c0, r1 - r0, c1 - c0)
        _weighted_moments(values, coverage, r0, c0, row_weights, out[p])
    return out


@njit(cache=True, nogil=True)
def polygon_bins(bins: np.ndarray, nbins: int, u: np.ndarray, v: np.ndarray,
                 ring_starts: np.ndarray, poly_starts: np.ndarray,
                 row_weights: np.ndarray) -> np.ndarray:
    """Covered area per bin and polygon (``npoly x nbins``): each pixel adds its covered
    fraction times its row's weight to its bin, ``bins`` (rows x cols, the bin of each
    pixel, -1 for none: no data, or a value in no bin). Polygons as for
    :func:`polygon_moments`; a pixel counts when its float32 coverage is positive."""
    nrows, ncols = bins.shape
    npoly = poly_starts.shape[0] - 1
    out = np.zeros((npoly, nbins))
    for p in range(npoly):
        r0, c0, r1, c1 = _window(u, v, ring_starts, poly_starts[p], nrows, ncols)
        if c0 >= c1 or r0 >= r1:
            continue
        coverage = _local_coverage(u, v, ring_starts, poly_starts[p], poly_starts[p + 1],
                                   r0, c0, r1 - r0, c1 - c0)
        for r in range(r1 - r0):
            for c in range(c1 - c0):
                b = bins[r0 + r, c0 + c]
                w = np.float64(np.float32(min(coverage[r, c], 1.0)))
                if b >= 0 and w > 0.0:
                    out[p, b] += w * row_weights[r0 + r]
    return out


@njit(cache=True, nogil=True)
def _window(u: np.ndarray, v: np.ndarray, ring_starts: np.ndarray, ring: int, nrows: int,
            ncols: int) -> tuple[int, int, int, int]:
    """Rows and columns (r0, c0, r1, c1) of the window that exterior ``ring`` touches."""
    ext0, ext1 = ring_starts[ring], ring_starts[ring + 1]
    c0 = max(int(math.floor(np.min(u[ext0:ext1]))), 0)
    c1 = min(int(math.ceil(np.max(u[ext0:ext1]))), ncols)
    r0 = max(int(math.floor(np.min(v[ext0:ext1]))), 0)
    r1 = min(int(math.ceil(np.max(v[ext0:ext1]))), nrows)
    return r0, c0, r1, c1


@njit(cache=True, nogil=True)
def _local_coverage(u: np.ndarray, v: np.ndarray, ring_starts: np.ndarray, ring0: int,
                    ring1: int, r0: int, c0: int, nrows: int, ncols: int) -> np.ndarray:
    """:func:`_coverage` with the polygon's vertices moved to its own window's corner (by
    whole pixels: exact), so its arithmetic, and its float32 fractions, are the same
    whichever larger window holds the polygon (a run of several resolutions reads other
    windows than a run of one)."""
    a, b = ring_starts[ring0], ring_starts[ring1]
    starts = ring_starts[ring0:ring1 + 1] - a
    return _coverage(u[a:b] - c0, v[a:b] - r0, starts, 0, ring1 - ring0, 0, 0, nrows, ncols)


@njit(cache=True, nogil=True)
def _coverage(u: np.ndarray, v: np.ndarray, ring_starts: np.ndarray, ring0: int, ring1: int,
              r0: int, c0: int, nrows: int, ncols: int) -> np.ndarray:
    """Fraction of each pixel of the window at ``r0, c0`` covered by the polygon made of
    rings ``ring0:ring1`` (its exterior first)."""
    partial = np.zeros((nrows, ncols))
    full = np.zeros((nrows, ncols))
    for ring in range(ring0, ring1):
        a, b = ring_starts[ring], ring_starts[ring + 1]
        # Green: the coverage of a ring sums to its signed area; orient exteriors to
        # add and holes to subtract, whatever order their vertices come in.
        area = 0.0
        for k in range(a, b - 1):
            area += u[k] * v[k + 1] - u[k + 1] * v[k]
        if area == 0.0:
            continue
        sign = 1.0 if area > 0 else -1.0
        if ring != ring0:
            sign = -sign
        _add_ring(u[a:b], v[a:b], sign, r0, c0, partial, full)
    # Coverage = partial + running sum of the row markers from the right.
    for r in range(nrows):
        running = 0.0
        for c in range(ncols - 1, -1, -1):
            running += full[r, c]
            partial[r, c] += running
    return partial


@njit(cache=True, nogil=True)
def _weighted_moments(values: np.ndarray, coverage: np.ndarray, r0: int, c0: int,
                      row_weights: np.ndarray, out: np.ndarray) -> None:
    """Count, sum, mean, min, max and stdev of the window at ``r0, c0`` weighted by
    ``coverage`` times ``row_weights``, and the unweighted valid coverage, into ``out``
    (mean, min, max and stdev left alone when count is 0).

    In exactextract's order (row by row, left to right), with its float32 coverage
    fractions and West's incremental weighted variance, so that both give the same
    numbers rather than merely close ones.
    """
    count = 0.0
    valid = 0.0
    total = 0.0
    lo = np.inf
    hi = -np.inf
    mean = 0.0
    t = 0.0
    nrows, ncols = coverage.shape
    for r in range(nrows):
        a = row_weights[r0 + r]
        for c in range(ncols):
            x = np.float64(values[r0 + r, c0 + c])
            # A pixel counts when its float32 coverage is positive, exactly as in
            # exactextract: even a sliver of 1e-15 of a pixel decides min and max.
            f = np.float64(np.float32(min(coverage[r, c], 1.0)))
            if f <= 0.0 or math.isnan(x):
                continue
            valid += f
            w = f * a
            count += w
            total += w * x
            lo = min(lo, x)
            hi = max(hi, x)
            previous = mean
            mean += (w / count) * (x - previous)
            t += w * (x - previous) * (x - mean)
    out[COUNT] = count
    out[SUM] = total
    out[VALID] = valid
    if count > 0.0:
        out[MEAN] = total / count
        out[MIN] = lo
        out[MAX] = hi
        out[STDEV] = math.sqrt(t / count)
