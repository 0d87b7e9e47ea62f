"""Pictures of a small feed-forward network as a causal graph (no graphviz): one forward pass, or an
interchange intervention drawn as base and source graphs side by side.

>>> import causalscope as cs
>>> g = cs.forward_graph("adder", [1, 2, 3])
>>> round(g.values["h12"], 2), round(g.values["y"], 2)
(8.1, 6.0)
>>> svg = g.svg()                                  # standalone SVG, written by hand
>>> fig = g.plot()                                 # the same picture as a plotly figure (for reports)
>>> round(cs.interchange_graph("adder", [1, 2, 3], [4, 2, 3], patch=["h12"]).outputs["intervened"]["y"], 2)
9.0

Nodes are the input units, every neuron of every ``nn.Linear`` layer and the outputs; edges are the
nonzero weights (width ~ |weight|, blue positive, red negative). Every value comes from a causalscope
engine run (``Model.run`` with ``cache=``, ``Set`` and ``Patch`` at ``Site(layer, neurons=j)``): this
module registers no hooks of its own.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core import Model, Patch, Set, Site
from ..errors import InputError, close_names
from ..loading import load
from ._graph_elements import Edge, Node, Panel
from ._graph_render import GraphDrawing, fmt

__all__ = ["CausalGraph", "Edge", "Node", "Panel", "forward_graph", "interchange_graph"]

MAX_NODES = 1000
MAX_EDGES = 20000


def _short(value: float) -> str:
    """An input value for titles: ``1`` rather than ``1.0``.

    >>> _short(1.0), _short(2.5), _short(1 / 3)
    ('1', '2.5', '0.33')
    """
    return f"{round(float(value), 2) + 0.0:g}"


class CausalGraph(GraphDrawing):
    """A network drawn as a causal graph. Made by :func:`forward_graph` and :func:`interchange_graph`.

    ``nodes`` / ``edges``: the structure (shared by every panel); ``panels``: one drawn copy per run
    (one for a forward pass; base, then source for an interchange), each with its values and marks;
    ``values`` / ``marks``: those of the first panel; ``links``: ``(from panel, to panel, node)`` dashed
    arrows (source to base for each patched node); ``outputs``: ``{run: {output name: value}}``.
    Draw it with :meth:`svg`, :meth:`plot` (plotly) or :meth:`save`; notebooks show the SVG.
    """

    def __init__(self, kind: str, nodes: list[Node], edges: list[Edge], panels: list[Panel],
                 links: list[tuple[int, int, str]], outputs: dict[str, dict[str, float]],
                 layer_names: list[str]) -> None:
        self.kind = kind
        self.nodes = nodes
        self.edges = edges
        self.panels = panels
        self.links = links
        self.outputs = outputs
        self.layer_names = layer_names

    # -- access -------------------------------------------------------------------------------------------
    @property
    def node_names(self) -> list[str]:
        """Node names, inputs first, then layer by layer."""
        return [n.name for n in self.nodes]

    @property
    def values(self) -> dict[str, float]:
        """Values of the first panel (the forward pass, or the intervened base run)."""
        return self.panels[0].values

    @property
    def marks(self) -> dict[str, str]:
        """Marked nodes of the first panel."""
        return self.panels[0].marks

    def panel(self, key: str) -> Panel:
        """The panel called ``key`` (``"forward"``, ``"base"`` or ``"source"``)."""
        for p in self.panels:
            if p.key == key:
                return p
        raise InputError(f"This graph has no panel {key!r}; panels: {[p.key for p in self.panels]}.")

    def __repr__(self) -> str:
        return (f"CausalGraph({self.kind}, {len(self.nodes)} nodes, {len(self.edges)} edges, "
                f"panels={[p.key for p in self.panels]})")


# -- the network ---------------------------------------------------------------------------------------------
class _Net:
    """A feed-forward stack of Linear layers of a wrapped model, with node names and sites."""

    def __init__(self, model: Any, layers: Sequence[str] | None, input_names: Sequence[str] | None,
                 what: str) -> None:
        self.model: Model = load(model)
        module = self.model.module
        if layers is None:
            found = [(n, c) for n, c in module.named_children() if isinstance(c, nn.Linear)]
            if not found:
                found = [(n, c) for n, c in module.named_modules() if n and isinstance(c, nn.Linear)]
            if not found:
                raise InputError(f"{what} draws stacks of nn.Linear layers, and {type(module).__name__} has none.")
        else:
            if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
                raise InputError(f"layers must be a non-empty list of module paths, e.g. ['l1', 'l2']; got {layers!r}.")
            paths = dict(module.named_modules())
            found = []
            for name in layers:
                if name not in paths or not name:
                    close = close_names(str(name), [p for p, c in paths.items() if isinstance(c, nn.Linear)])
                    hint = f" Linear layers close by: {', '.join(map(repr, close))}." if close else ""
                    raise InputError(f"layers names {name!r}, which is no module of the model.{hint}")
                if not isinstance(paths[name], nn.Linear):
                    raise InputError(f"layers names {name!r}, a {type(paths[name]).__name__}; "
                                     f"{what} draws nn.Linear layers only.")
                found.append((name, paths[name]))
        for (n0, a), (n1, b) in zip(found, found[1:]):
            if b.in_features != a.out_features:
                raise InputError(f"{n1!r} takes {b.in_features} inputs but {n0!r} gives {a.out_features}: "
                                 f"the layers do not form a chain; pick them with layers=[...].")
        self.paths = [n for n, _ in found]
        self.linears = [c for _, c in found]
        first_linear = next(n for n, c in module.named_modules() if isinstance(c, nn.Linear))
        self.at_input = self.paths[0] == first_linear  # else the graph starts inside the model
        n_in = self.linears[0].in_features
        n_nodes = n_in + sum(c.out_features for c in self.linears)
        if n_nodes > MAX_NODES:
            raise InputError(f"{what} would draw {n_nodes} nodes (at most {MAX_NODES} make a readable picture); "
                             f"pick a few small layers with layers=[...].")
        self.nodes: list[Node] = []
        if input_names is None:
            inputs = ([chr(ord("A") + i) for i in range(n_in)] if n_in <= 26 else [f"x{i}" for i in range(n_in)])
        else:
            inputs = [str(s) for s in input_names]
            if len(inputs) != n_in:
                raise InputError(f"input_names has {len(inputs)} names but {self.paths[0]!r} takes {n_in} inputs.")
        for i, name in enumerate(inputs):
            self.nodes.append(Node(name, 0, i, "input", self.paths[0]))
        n_hidden = len(self.linears) - 1
        compact = n_hidden <= 9 and all(c.out_features <= 9 for c in self.linears[:-1])
        for layer, (path, lin) in enumerate(zip(self.paths, self.linears), start=1):
            last = layer == len(self.linears)
            for j in range(lin.out_features):
                if last:
                    name = "y" if lin.out_features == 1 else f"y{j + 1}"
                else:
                    name = f"h{layer}{j + 1}" if compact else f"h{layer}_{j + 1}"
                self.nodes.append(Node(name, layer, j, "output" if last else "hidden", path))
        self.by_name = {n.name: n for n in self.nodes}
        if len(self.by_name) != len(self.nodes):
            dup = sorted({n.name for n in self.nodes if sum(m.name == n.name for m in self.nodes) > 1})
            raise InputError(f"Node names must be unique; {', '.join(map(repr, dup))} appear twice "
                             f"(input_names may not reuse the neuron names h.. / y).")
        self.edges: list[Edge] = []
        layer_nodes = [[n for n in self.nodes if n.layer == k] for k in range(len(self.linears) + 1)]
        for k, lin in enumerate(self.linears):
            w = lin.weight.detach().to("cpu", torch.float64)
            nz = torch.nonzero(w).tolist()
            if len(self.edges) + len(nz) > MAX_EDGES:
                raise InputError(f"{what} would draw more than {MAX_EDGES} edges; pick smaller layers with "
                                 f"layers=[...].")
            for out_j, in_i in nz:
                self.edges.append(Edge(layer_nodes[k][in_i].name, layer_nodes[k + 1][out_j].name,
                                       float(w[out_j, in_i])))
        self.layer_names = ["input" if self.at_input else f"{self.paths[0]} in"] + self.paths
        self.cache: list[Site | str] = [Site(self.paths[0], io="input"), *self.paths]

    def node(self, name: Any, what: str) -> Node:
        if not isinstance(name, str) or name not in self.by_name:
            close = close_names(str(name), list(self.by_name))
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InputError(f"{what} names an unknown node {name!r}.{hint} "
                             f"Nodes: {', '.join(self.by_name)}.")
        return self.by_name[name]

    def as_input(self, inputs: Any, what: str) -> torch.Tensor:
        n_in = self.linears[0].in_features
        names = ", ".join(n.name for n in self.nodes if n.kind == "input")
        if isinstance(inputs, torch.Tensor):
            t = inputs.detach()
            if t.ndim == 2 and t.shape[0] != 1 or t.ndim not in (1, 2):
                raise InputError(f"{what} takes one input: {n_in} numbers or a 1-row tensor; got a tensor "
                                 f"of shape {tuple(t.shape)}.")
            t = t.reshape(-1)
        elif isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
            vals = list(inputs)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) or
                       isinstance(v, torch.Tensor) and v.numel() == 1 for v in vals):
                raise InputError(f"{what} must be numbers ({names}); got {inputs!r}.")
            t = torch.tensor([float(v) for v in vals], dtype=torch.float64)
        else:
            raise InputError(f"{what} must be a list of {n_in} numbers ({names}) or a 1-row tensor; "
                             f"got {type(inputs).__name__}.")
        if self.at_input and t.numel() != n_in:
            raise InputError(f"{what} has {t.numel()} values but the network takes {n_in} ({names}).")
        if not torch.isfinite(t.double()).all():
            raise InputError(f"{what} holds a NaN or infinite value: {t.tolist()}.")
        w = self.linears[0].weight
        return t.to(dtype=w.dtype, device=w.device).reshape(1, -1)

    def run(self, x: torch.Tensor, edits: Any = None) -> Any:
        try:
            return self.model.run(x, edits, cache=self.cache)
        except RuntimeError as err:  # e.g. a shape mismatch inside the model
            raise InputError(f"The model failed on an input of shape {tuple(x.shape)} ({err}). The graph's "
                             f"inputs are the model's inputs: one row of numbers it accepts.") from err

    def values(self, run: Any, row: int) -> dict[str, float]:
        acts = [run.cache[s][row].detach().to("cpu", torch.float64) for s in self.cache]
        return {n.name: float(acts[n.layer][n.index]) for n in self.nodes}

    def group(self, names: Sequence[str]) -> dict[tuple[int, str], list[Node]]:
        """Nodes grouped by (layer, module) so each layer gets one site."""
        groups: dict[tuple[int, str], list[Node]] = {}
        for name in names:
            n = self.by_name[name]
            groups.setdefault((n.layer, n.module), []).append(n)
        return groups

    @staticmethod
    def site(nodes: list[Node]) -> Site:
        n0 = nodes[0]
        return Site(n0.module, io="input" if n0.kind == "input" else "output", neurons=[n.index for n in nodes])

    def outputs(self, values: Mapping[str, float]) -> dict[str, float]:
        return {n.name: values[n.name] for n in self.nodes if n.kind == "output"}

    def describe_inputs(self, x: torch.Tensor) -> str:
        vals = x.reshape(-1).tolist()
        if self.at_input:
            items = [f"{n.name}={_short(v)}" for n, v in zip(self.nodes, vals)]
        else:  # the model's own input: no node names
            items = [_short(v) for v in vals]
        return ", ".join(items[:8]) + (", \u2026" if len(items) > 8 else "")


def _out_text(outs: Mapping[str, float], limit: int = 4) -> str:
    items = [f"{k} = {fmt(v)}" for k, v in outs.items()]
    return ", ".join(items[:limit]) + (", \u2026" if len(items) > limit else "")


def _names(items: Any, what: str) -> list[str]:
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (Sequence, set, frozenset)) or not items:
        raise InputError(f"{what} must be a non-empty list of node names, e.g. ['h12']; got {items!r}.")
    return list(dict.fromkeys(items))  # drop repeats, keep order


def forward_graph(model: Any, inputs: Any, *, layers: Sequence[str] | None = None,
                  input_names: Sequence[str] | None = None,
                  interventions: Mapping[str, float] | None = None) -> CausalGraph:
    """One forward pass of a stack of Linear layers as a causal graph with the value of every unit.

    >>> g = forward_graph("adder", [1, 2, 3])
    >>> [round(g.values[f"h1{j}"], 2) for j in (1, 2, 3)]
    [10.89, 8.1, 12.3]
    >>> round(forward_graph("adder", [1, 2, 3], interventions={"h12": 12.1}).outputs["intervened"]["y"], 2)
    10.0

    ``model``: a bundled name, an ``nn.Module`` or a :class:`Model`. ``inputs``: one input, as a list of
    numbers or a 1-row tensor. ``layers``: module paths of the Linear layers, in order (default: the
    model's top-level ``nn.Linear`` children, else all its ``nn.Linear`` modules). Nodes are named A, B, C,
    ... (``x0, x1, ...`` beyond 26 inputs; or ``input_names``), ``h<layer><neuron>`` counting from 1
    (``h<layer>_<neuron>`` when a layer has 10 or more neurons) and ``y`` (``y1, y2, ...``). A neuron's
    value is its Linear layer's output (before any nonlinearity that follows). ``interventions``:
    ``{node: value}`` set with :class:`Set` at ``Site(layer, neurons=j)`` (inputs at the first layer's
    input); those nodes are marked, and ``outputs`` holds the output with and without them.
    """
    net = _Net(model, layers, input_names, "forward_graph")
    x = net.as_input(inputs, "inputs")
    edits: dict[Site, Set] = {}
    marks: dict[str, str] = {}
    if interventions is not None:
        if not isinstance(interventions, Mapping):
            raise InputError(f"interventions must be a dict {{node name: value}}, e.g. {{'h23': -100}}; "
                             f"got {type(interventions).__name__}.")
        for name, v in interventions.items():
            net.node(name, "interventions")
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = float(v)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(float(v)):
                raise InputError(f"interventions[{name!r}] must be a finite number; got {v!r}.")
            marks[name] = "set"
        w = net.linears[0].weight
        for nodes in net.group(list(interventions)).values():
            value = torch.tensor([float(interventions[n.name]) for n in nodes], dtype=w.dtype, device=w.device)
            edits[net.site(nodes)] = Set(value)
    rows = [{}, edits] if edits else None
    run = net.run(x, rows)
    values = net.values(run, run.n_rows - 1)
    outputs = {"forward": net.outputs(net.values(run, 0))}
    title = "forward pass"
    subtitle = f"{net.describe_inputs(x)} \u2192 {_out_text(outputs['forward'])}"
    if edits:
        outputs["intervened"] = net.outputs(values)
        assert interventions is not None
        title = "forward pass, " + ", ".join(f"{k} := {_short(v)}" for k, v in interventions.items())
        subtitle = (f"{net.describe_inputs(x)} \u2192 {_out_text(outputs['intervened'])} "
                    f"(without: {_out_text(outputs['forward'])})")
    panel = Panel("forward", title, subtitle, values, marks)
    return CausalGraph("forward", net.nodes, net.edges, [panel], [], outputs, net.layer_names)


def interchange_graph(model: Any, base: Any, source: Any, patch: Sequence[str], *,
                      layers: Sequence[str] | None = None,
                      input_names: Sequence[str] | None = None) -> CausalGraph:
    """An interchange intervention as two graphs side by side: the base run with the ``patch`` nodes taking
    their values from the source run (left), and the source run (right).

    >>> g = interchange_graph("adder", [1, 2, 3], [4, 2, 3], patch=["h12"])
    >>> {k: round(v["y"], 2) for k, v in g.outputs.items()}
    {'base': 6.0, 'source': 9.0, 'intervened': 9.0}

    The source run is cached, the base run gets ``Patch(source_run)`` at ``Site(layer, neurons=j)`` for each
    patched node (inputs at the first layer's input). Patched nodes are marked in both panels and linked by
    a dashed arrow from source to base. ``outputs`` holds the base, source and intervened outputs;
    ``panel("base").values`` / ``panel("source").values`` every unit's value. Nodes, ``layers`` and
    ``input_names`` as in :func:`forward_graph`.
    """
    net = _Net(model, layers, input_names, "interchange_graph")
    xb = net.as_input(base, "base")
    xs = net.as_input(source, "source")
    names = _names(patch, "patch")
    for name in names:
        net.node(name, "patch")
    src_run = net.run(xs)
    edits = {net.site(nodes): Patch(src_run) for nodes in net.group(names).values()}
    run = net.run(xb, [{}, edits])
    base_plain, inter, src = net.values(run, 0), net.values(run, 1), net.values(src_run, 0)
    outputs = {"base": net.outputs(base_plain), "source": net.outputs(src), "intervened": net.outputs(inter)}
    which = ", ".join(names) if len(names) <= 4 else f"{len(names)} nodes"
    base_panel = Panel("base", f"base ({net.describe_inputs(xb)}), {which} from source",
                       f"{_out_text(outputs['intervened'])} (base alone: {_out_text(outputs['base'])})",
                       inter, {n: "patched" for n in names})
    src_panel = Panel("source", f"source ({net.describe_inputs(xs)})", _out_text(outputs["source"]), src,
                      {n: "patch-source" for n in names})
    links = [(1, 0, n) for n in names]
    return CausalGraph("interchange", net.nodes, net.edges, [base_panel, src_panel], links, outputs,
                       net.layer_names)
