"""The step graph, :class:`StepGraph`: a thin typed wrapper over ``networkx.DiGraph``.

Stages are the graph's topological generations. Every stage is a global barrier: no
task of stage N+1 starts before every task of stage N has finished.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from h3pipe.spec import StepSpec


class StepGraph:
    def __init__(self, steps: Iterable[StepSpec]) -> None:
        self._g: nx.DiGraph = nx.DiGraph()
        for step in steps:
            self._g.add_node(step.id)
        for step in steps:
            for up in step.upstream:
                self._g.add_edge(up, step.id)

    def cycles(self) -> list[list[str]]:
        """Each dependency loop once, as the list of its members in order."""
        return [list(c) for c in nx.simple_cycles(self._g)]

    def stages(self) -> list[list[str]]:
        return [sorted(gen) for gen in nx.topological_generations(self._g)]
