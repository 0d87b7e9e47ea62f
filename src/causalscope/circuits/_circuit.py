"""A circuit: nodes and edges of a transformer's computational graph, in one open JSON format.

Node names: ``embed`` (token + position embeddings), ``a{layer}.h{head}`` (one attention head's write into
the residual stream), ``m{layer}`` (an MLP), ``logits``. An edge ``(sender, receiver)`` is the part of the
receiver's input that the sender wrote into the residual stream.

>>> c = Circuit(nodes=["embed", "a0.h1", "m1", "logits"],
...             edges=[("embed", "a0.h1"), ("a0.h1", "m1"), ("m1", "logits")])
>>> Circuit.from_json(c.to_json()) == c
True
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

FORMAT = "causalscope-circuit/1"
_NODE = re.compile(r"^(embed|logits|m(\d+)|a(\d+)\.h(\d+))$")


def node_order(name: str) -> tuple[float, int, int]:
    """Sort key: the embedding first, then by layer (heads before the MLP), logits last.

    >>> sorted(["m0", "logits", "a1.h0", "embed", "a0.h1"], key=node_order)
    ['embed', 'a0.h1', 'm0', 'a1.h0', 'logits']
    """
    m = _NODE.match(name)
    if m is None:
        raise InputError(f"{name!r} is not a node name (embed, logits, m<layer>, a<layer>.h<head>).")
    if name == "embed":
        return (-1.0, 0, 0)
    if name == "logits":
        return (float("inf"), 0, 0)
    if m.group(2) is not None:
        return (float(m.group(2)), 1, 0)
    return (float(m.group(3)), 0, int(m.group(4)))


def node_layer(name: str) -> int | None:
    """The layer of a head or MLP node; None for ``embed`` and ``logits``."""
    key = node_order(name)[0]
    return None if key in (-1.0, float("inf")) else int(key)


def upstream(sender: str, receiver: str) -> bool:
    """True where ``sender`` writes into the residual stream before ``receiver`` reads it.

    >>> upstream("a0.h0", "m0"), upstream("a0.h0", "a0.h1"), upstream("m0", "a1.h0")
    (True, False, True)
    """
    s, r = node_order(sender), node_order(receiver)
    if sender == "logits" or receiver == "embed":
        return False
    return s[0] < r[0] or (s[0] == r[0] and s[1] == 0 and r[1] == 1)


@dataclass
class Circuit:
    """Nodes and directed edges; ``meta`` holds anything else (the program, labels of each node).

    >>> Circuit(["embed", "m0", "logits"], [("embed", "m0"), ("m0", "logits")]).edge_set()
    {('embed', 'm0'), ('m0', 'logits')}
    """

    nodes: list[str]
    edges: list[tuple[str, str]]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what, v in (("nodes", self.nodes), ("edges", self.edges)):
            if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, set, frozenset)):
                raise InputError(f"Circuit {what} must be a list ({what}: " + ("node names, e.g. ['embed', 'm0', "
                                 "'logits']" if what == "nodes" else "(sender, receiver) pairs") +
                                 f"), got {type(v).__name__} {v!r:.60}.")
        for e in self.edges:
            if isinstance(e, (str, bytes)) or not isinstance(e, (list, tuple)) or len(e) != 2:
                raise InputError(f"Circuit edges are (sender, receiver) pairs, got {e!r:.60}.")
        for n in self.nodes:
            if not isinstance(n, str):
                raise InputError(f"Circuit nodes are names (strings), got {type(n).__name__} {n!r:.60}.")
            node_order(n)
        self.nodes = sorted(dict.fromkeys(self.nodes), key=node_order)
        known = set(self.nodes)
        edges = []
        for e in self.edges:
            s, r = tuple(e)
            if s not in known or r not in known:
                raise InputError(f"Edge {s!r} -> {r!r} names a node that is not in the circuit "
                                 f"(nodes: {', '.join(self.nodes)}).")
            if not upstream(s, r):
                raise InputError(f"Edge {s!r} -> {r!r} does not run forward through the model.")
            edges.append((s, r))
        self.edges = sorted(dict.fromkeys(edges), key=lambda e: (node_order(e[1]), node_order(e[0])))

    def edge_set(self) -> set[tuple[str, str]]:
        return set(self.edges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Circuit) and self.nodes == other.nodes and self.edges == other.edges

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "nodes": self.nodes, "edges": [list(e) for e in self.edges], "meta": self.meta}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Circuit:
        if d.get("format") != FORMAT:
            raise InputError(f"Not a causalscope circuit (format {d.get('format')!r}; expected {FORMAT!r}).")
        return cls(list(d["nodes"]), [tuple(e) for e in d["edges"]], dict(d.get("meta", {})))

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> Circuit:
        s = str(text_or_path)
        text = Path(s).read_text() if not s.lstrip().startswith("{") else s
        return cls.from_dict(json.loads(text))
