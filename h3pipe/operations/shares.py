"""Class shares and histograms of a zone: :class:`Bins`.

``fractions`` gives, per class of a categorical raster, the share of the zone's valid
covered area holding that class (``frac_<name>``); ``histogram`` gives, per bin of a
continuous raster, the share in ``[lo, hi)`` (the last bin includes ``hi``; column
``hist_<lo>_<hi>``, with ``.`` written ``p`` and ``-`` written ``m``). Values in no class
or bin count toward the zone's valid area but no column, so shares may sum below 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Bins:
    """What each pixel value falls in: listed class values, or bin edges."""

    names: tuple[str, ...]  # one per bin: the column suffix
    values: tuple[float, ...] = ()  # classes: the value of each bin
    edges: tuple[float, ...] = ()  # histogram: len(names) + 1 increasing edges

    @classmethod
    def of_classes(cls, classes: list[dict[str, Any]]) -> Bins:
        return cls(tuple(f"frac_{c['name']}" for c in classes),
                   values=tuple(float(c["value"]) for c in classes))

    @classmethod
    def of_edges(cls, edges: list[float]) -> Bins:
        names = tuple(f"hist_{_number(a)}_{_number(b)}"
                      for a, b in zip(edges[:-1], edges[1:], strict=True))
        return cls(names, edges=tuple(float(e) for e in edges))

    def index(self, values: np.ndarray) -> np.ndarray:
        """The bin of each pixel (int32, -1: no data or no bin)."""
        out = np.full(values.shape, -1, dtype=np.int32)
        valid = ~np.isnan(values)
        if self.values:
            order = np.argsort(self.values)
            known = np.asarray(self.values)[order]
            at = np.clip(np.searchsorted(known, values[valid]), 0, len(known) - 1)
            hit = known[at] == values[valid]
            out[valid] = np.where(hit, order[at], -1)
            return out
        edges = np.asarray(self.edges)
        at = np.searchsorted(edges, values[valid], side="right") - 1
        at[values[valid] == edges[-1]] = len(edges) - 2  # the last bin is closed
        out[valid] = np.where((at >= 0) & (at < len(edges) - 1), at, -1)
        return out


def _number(x: float) -> str:
    text = f"{x:g}"
    return text.replace("-", "m").replace(".", "p").replace("+", "")


def class_problems(classes: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Repeated values or names among ``classes``."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    seen_v: set[float] = set()
    seen_n: set[str] = set()
    for i, c in enumerate(classes or []):
        if float(c["value"]) in seen_v:
            found.append((("classes", i, "value"), f"class value {c['value']} is listed twice"))
        if c["name"] in seen_n:
            found.append((("classes", i, "name"), f"class name '{c['name']}' is listed twice"))
        seen_v.add(float(c["value"]))
        seen_n.add(c["name"])
    return found


def edge_problems(edges: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Bin edges that do not increase."""
    bad = [i for i in range(1, len(edges or [])) if not edges[i] > edges[i - 1]]
    return [(("bins", i), f"bin edge {edges[i]} does not exceed the one before it "
             f"({edges[i - 1]}); edges must increase") for i in bad[:1]]


__all__ = ["Bins", "class_problems", "edge_problems"]
