"""Scenario sweeps of a source: :class:`Dimensions` (what a source's ``dimensions:`` and
``combinations:`` declare), :class:`Scenario` (one combination, with its canonical id) and
the ``{name}`` templates that a combination fills in.

A source such as FATHOM flood hazard has dimensions (flood type, year, SSP) and files for
some combinations of their values only (the 2020 baseline has no SSP). One scheme names
every combination, so ids are spelled one way everywhere: the values in the order the
dimensions are declared, joined by '-', an absent dimension left out
(``fluvial_defended-2020``, ``pluvial_defended-2050-ssp245``). Values hold no '-', so an
id reads back unambiguously.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

VALUE = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# What a template may name besides the dimensions.
SCENARIO = "scenario"


@dataclass(frozen=True)
class Scenario:
    """One combination: each dimension's value, or None where the combination lacks it."""

    values: tuple[tuple[str, str | None], ...]

    @property
    def id(self) -> str:
        return "-".join(v for _, v in self.values if v is not None)

    def as_dict(self) -> dict[str, str | None]:
        return dict(self.values)

    def keys(self) -> dict[str, str | None]:
        """The key columns a row of this combination carries: its id, then each value."""
        return {SCENARIO: self.id, **self.as_dict()}

    def fill(self, template: str) -> str:
        """``template`` with ``{dimension}`` and ``{scenario}`` replaced (an absent value by
        nothing); other braces are left alone."""
        known = self.as_dict()

        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name == SCENARIO:
                return self.id
            if name in known:
                return known[name] or ""
            return m.group(0)

        return _PLACEHOLDER.sub(one, template)

    def fill_all(self, value: Any) -> Any:
        """:meth:`fill` applied to every string inside ``value`` (a STAC query)."""
        if isinstance(value, str):
            return self.fill(value)
        if isinstance(value, list):
            return [self.fill_all(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill_all(v) for k, v in value.items()}
        return value


@dataclass(frozen=True)
class Dimensions:
    """A source's dimensions (name -> values, in declared order) and the groups of
    combinations that exist (each a product; a dimension set to None is absent there)."""

    values: tuple[tuple[str, tuple[str, ...]], ...]
    groups: tuple[tuple[tuple[str, tuple[str, ...] | None], ...], ...] = ()

    @classmethod
    def parse(cls, dimensions: Mapping[str, Iterable[Any]],
              combinations: Iterable[Mapping[str, Any]] | None = None) -> Dimensions:
        """From a validated document's ``dimensions`` and ``combinations``."""
        values = tuple((name, tuple(str(v) for v in vals)) for name, vals in dimensions.items())
        declared = dict(values)
        groups = tuple(tuple((name, _group_values(group, name, declared[name]))
                             for name, _ in values)
                       for group in combinations or [{}])
        return cls(values, groups)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.values)

    def scenarios(self) -> list[Scenario]:
        """Every combination that exists, once each, in declared order."""
        seen: dict[str, Scenario] = {}
        for group in self.groups:
            axes = [[(name, v) for v in vals] if vals is not None else [(name, None)]
                    for name, vals in group]
            for combo in itertools.product(*axes):
                sc = Scenario(tuple(combo))
                seen.setdefault(sc.id, sc)
        return list(seen.values())

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Values that are not ids, and combinations naming values the dimension lacks."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        declared = dict(self.values)
        for name, vals in self.values:
            for j, v in enumerate(vals):
                if not VALUE.match(v):
                    out.append((("dimensions", name, j), f"value '{v}' may hold only letters, "
                                "digits, '_' and '.' (it becomes part of scenario ids)"))
            if len(set(vals)) != len(vals):
                out.append((("dimensions", name), "values repeat"))
        for i, group in enumerate(self.groups):
            for name, chosen in group:
                for v in chosen or ():
                    if v not in declared[name]:
                        out.append((("combinations", i, name), f"'{v}' is not a value of "
                                    f"dimension '{name}' ({', '.join(declared[name])})"))
        return out

    def select(self, wanted: Mapping[str, Iterable[str]]) -> list[Scenario]:
        """The combinations whose value of each dimension in ``wanted`` is one of those
        listed (a dimension not named: any value)."""
        sets = {name: {str(v) for v in vals} for name, vals in wanted.items()}
        return [sc for sc in self.scenarios()
                if all(sc.as_dict().get(name) in vals for name, vals in sets.items())]


def _group_values(group: Mapping[str, Any], name: str, every: tuple[str, ...]
                  ) -> tuple[str, ...] | None:
    """One dimension's values in a group of ``combinations``: every value when the group
    does not name it, None when it sets it to null (absent)."""
    if name not in group:
        return every
    return None if group[name] is None else tuple(str(v) for v in group[name])


def placeholders(template: str) -> set[str]:
    """The ``{name}`` placeholders of a template."""
    return set(_PLACEHOLDER.findall(template))


def key_columns(dims: Dimensions | None) -> list[str]:
    """The key columns rows of a sweep over ``dims`` carry: the scenario id, then each
    dimension."""
    return [] if dims is None else [SCENARIO, *dims.names]


__all__ = ["SCENARIO", "Dimensions", "Scenario", "key_columns", "placeholders"]
