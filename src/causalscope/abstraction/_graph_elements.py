"""The parts of a causal-graph picture: nodes (units of a network), edges (nonzero weights) and panels (one
drawn run with its values and marks).

>>> n = Node("h12", 1, 1, "hidden", "l1")
>>> n.site.module, n.site.io, n.site.neurons       # where the engine reads and writes it
('l1', 'output', (1,))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..core import Site

__all__ = ["Edge", "Node", "Panel"]


@dataclass(frozen=True)
class Node:
    """One causal variable: an input unit, a hidden neuron or an output.

    ``layer`` is 0 for inputs and i for the output of the i-th Linear layer; ``index`` is the unit's
    index in that layer (0-based; names count from 1 like the tutorial: ``h12`` is layer 1, index 1).
    ``module`` is the layer's module path; inputs live at the *input* of the first layer.
    """

    name: str
    layer: int
    index: int
    kind: str  # "input" | "hidden" | "output"
    module: str

    @property
    def site(self) -> Site:
        """Where the engine reads and writes this unit."""
        io: Literal["output", "input"] = "input" if self.kind == "input" else "output"
        return Site(self.module, io=io, neurons=self.index)


@dataclass(frozen=True)
class Edge:
    """A nonzero weight ``weight`` from ``source`` to ``target`` (node names)."""

    source: str
    target: str
    weight: float


@dataclass
class Panel:
    """One drawn copy of the graph: its values (full precision) and marked nodes.

    ``marks[name]`` is ``"set"`` (an intervention of :func:`forward_graph`), ``"patched"`` (the node takes
    its value from the source run) or ``"patch-source"`` (the source node a patch reads).
    """

    key: str
    title: str
    subtitle: str
    values: dict[str, float]
    marks: dict[str, str] = field(default_factory=dict)
