"""The step graph, :class:`StepGraph`: steps and what each needs, in the standard library's
``graphlib``; ``networkx`` enumerates the loops of a graph that has some.

Stages are the graph's topological generations. Every stage is a global barrier: no
task of stage N+1 starts before every task of stage N has finished.
"""

from __future__ import annotations

from collections.abc import Iterable
from graphlib import CycleError, TopologicalSorter

from h3pipe.spec import StepSpec


class StepGraph:
    def __init__(self, steps: Iterable[StepSpec]) -> None:
        # Every step and what it needs, in definition order (a step may name one that does
        # not exist: it is a node all the same, as validation reports it elsewhere).
        steps = list(steps)
        self._needs: dict[str, list[str]] = {step.id: [] for step in steps}
        for step in steps:
            for up in step.upstream:
                self._needs.setdefault(up, [])
                self._needs[step.id].append(up)

    def cycles(self) -> list[list[str]]:
        """Each dependency loop once, as the list of its members in order."""
        try:
            TopologicalSorter(self._needs).prepare()
            return []
        except CycleError:
            pass
        # Only a graph with a loop pays for networkx (a tenth of a second to import).
        import networkx as nx

        g: nx.DiGraph = nx.DiGraph()
        g.add_nodes_from(self._needs)
        g.add_edges_from((up, sid) for sid, ups in self._needs.items() for up in ups)
        return [list(c) for c in nx.simple_cycles(g)]

    def stages(self) -> list[list[str]]:
        order = TopologicalSorter(self._needs)
        order.prepare()
        out = []
        while order.is_active():
            ready = order.get_ready()
            out.append(sorted(ready))
            order.done(*ready)
        return out
