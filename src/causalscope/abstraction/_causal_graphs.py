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

import html as _html
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..core import Model, Patch, Set, Site
from ..errors import InputError, close_names
from ..loading import load

if TYPE_CHECKING:  # pragma: no cover - typing only
    import plotly.graph_objects

__all__ = ["CausalGraph", "Edge", "Node", "Panel", "forward_graph", "interchange_graph"]

MAX_NODES = 1000
MAX_EDGES = 20000

# -- geometry (SVG user units = px) ------------------------------------------------------------------------
_R = 24          # node radius
_DX = 64         # distance between neighbouring nodes of a layer
_DY = 96         # distance between layers
_LEFT = 64       # room for the layer labels
_RIGHT = 20
_HEAD = 62       # room for a panel's title and subtitle
_BOTTOM = 52      # room for input patch links and the key line
_GAP = 40        # between panels
_CHAR_TITLE = 8.2  # rough width of a 14 px bold character, to make room for titles
_CHAR_SUB = 6.8    # ... of a 12 px one
_CHAR_KEY = 6.0    # ... of an 11 px one

# -- colours -----------------------------------------------------------------------------------------------
POS = "#2b6cb0"        # positive weight
NEG = "#c53030"        # negative weight
HIGHLIGHT = "#dd6b20"  # set / patched nodes and patch links
_FILL = {"input": "#edf2f7", "hidden": "#ffffff", "output": "#e9e4f7"}
_MARK_FILL = {"set": "#fbd38d", "patched": "#fbd38d", "patch-source": "#fefcbf"}
_STROKE = "#4a5568"
_TEXT = "#1a202c"
_MUTED = "#718096"
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


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
        io = "input" if self.kind == "input" else "output"
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


def fmt(value: float) -> str:
    """A node value as the tutorial prints it: rounded to 2 decimals.

    >>> fmt(10.889999389648438), fmt(6.000000953674316), fmt(-0.2709999978542328), fmt(-0.001)
    ('10.89', '6.0', '-0.27', '0.0')
    """
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    return str(round(v, 2) + 0.0)


def _short(value: float) -> str:
    """An input value for titles: ``1`` rather than ``1.0``.

    >>> _short(1.0), _short(2.5), _short(1 / 3)
    ('1', '2.5', '0.33')
    """
    return f"{round(float(value), 2) + 0.0:g}"


def _esc(text: Any) -> str:
    """Escape for SVG/XML text and attribute values.

    >>> _esc('<a & "b">')
    '&lt;a &amp; &quot;b&quot;&gt;'
    """
    return _html.escape(str(text), quote=True)


class CausalGraph:
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

    def _node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def panel(self, key: str) -> Panel:
        """The panel called ``key`` (``"forward"``, ``"base"`` or ``"source"``)."""
        for p in self.panels:
            if p.key == key:
                return p
        raise InputError(f"This graph has no panel {key!r}; panels: {[p.key for p in self.panels]}.")

    def __repr__(self) -> str:
        return (f"CausalGraph({self.kind}, {len(self.nodes)} nodes, {len(self.edges)} edges, "
                f"panels={[p.key for p in self.panels]})")

    # -- layout -------------------------------------------------------------------------------------------
    def _layout(self) -> tuple[float, float, list[float], dict[str, tuple[float, float]], list[float]]:
        """(width, height, x offset of each panel, node centre within a panel, y of each layer row)."""
        n_rows = max(n.layer for n in self.nodes) + 1
        per_layer: dict[int, list[Node]] = {}
        for n in self.nodes:
            per_layer.setdefault(n.layer, []).append(n)
        widest = max(len(v) for v in per_layer.values())
        text_w = max(max(len(p.title) * _CHAR_TITLE, len(p.subtitle) * _CHAR_SUB) for p in self.panels)
        grid_w = widest * _DX
        panel_w = max(_LEFT + grid_w + _RIGHT, 20 + text_w)
        cx = (_LEFT + panel_w - _RIGHT) / 2
        rows_y = [_HEAD + _R + 6 + (n_rows - 1 - layer) * _DY for layer in range(n_rows)]
        pos: dict[str, tuple[float, float]] = {}
        for layer, nodes in per_layer.items():
            for j, n in enumerate(nodes):
                pos[n.name] = (cx + (j - (len(nodes) - 1) / 2) * _DX, rows_y[layer])
        height = rows_y[0] + _R + _BOTTOM
        offsets = [i * (panel_w + _GAP) for i in range(len(self.panels))]
        width = max(offsets[-1] + panel_w, 20 + len(self._key()) * _CHAR_KEY)
        return width, height, offsets, pos, rows_y

    def _edge_style(self) -> tuple[float, list[float]]:
        big = max((abs(e.weight) for e in self.edges), default=1.0) or 1.0
        return big, [0.6 + 3.4 * abs(e.weight) / big for e in self.edges]

    @staticmethod
    def _link_path(x0: float, x1: float, y: float, k: int, below: bool) -> tuple[tuple[float, float], ...]:
        """Quadratic Bezier control points of the k-th patch link: an arc peaking halfway between its row
        and the next one up (or under the row, for the inputs at the bottom), clear of other nodes."""
        if below:
            end, lift = y + _R, 14 + 3 * k
            return (x0, end), ((x0 + x1) / 2, end + 2 * lift), (x1, end)
        end, lift = y - _R, (_DY / 2 - _R if y > _HEAD + _R + 6 else 12) + 3 * k  # low under the titles
        return (x0, end), ((x0 + x1) / 2, end - 2 * lift), (x1, end)

    def _key(self) -> str:
        """The one-line key under the picture."""
        text = "edges: nonzero weights (blue +, red \u2212, width ~ |weight|); values rounded to 2 decimals"
        kinds = {m for p in self.panels for m in p.marks.values()}
        if "set" in kinds:
            text += "; orange: set by the intervention"
        if "patched" in kinds:
            text += "; orange: patched (dashed arrow: from the source run)"
        return text

    def _node_style(self, node: Node, mark: str | None) -> tuple[str, str, float, str]:
        """(fill, stroke, stroke width, CSS classes)."""
        classes = f"cs-node cs-{node.kind}"
        if mark is None:
            return _FILL[node.kind], _STROKE, 1.5, classes
        return _MARK_FILL[mark], HIGHLIGHT, 3.0, f"{classes} cs-{mark}"

    # -- SVG ----------------------------------------------------------------------------------------------
    def svg(self) -> str:
        """The graph as one standalone SVG document (a string): layers bottom to top, inputs at the bottom.

        Marked nodes carry the class ``cs-set``, ``cs-patched`` or ``cs-patch-source`` and an orange
        (``#dd6b20``) outline; patch links are dashed orange arrows of class ``cs-patch-link``.
        """
        width, height, offsets, pos, rows_y = self._layout()
        big, widths = self._edge_style()
        out: list[str] = [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="cs-causal-graph" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" font-family="{_esc(_FONT)}">',
            "<defs>",
        ]
        for mid, colour in (("pos", POS), ("neg", NEG), ("patch", HIGHLIGHT)):
            size = 11 if mid == "patch" else 8
            out.append(f'<marker id="cs-arrow-{mid}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="{size}" '
                       f'markerHeight="{size}" markerUnits="userSpaceOnUse" orient="auto">'
                       f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>')
        out.append("</defs>")
        out.append(f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>')
        for p, ox in zip(self.panels, offsets):
            out.append(f'<g class="cs-panel" data-panel="{_esc(p.key)}">')
            out.append(f'<text x="{ox + 10:.1f}" y="20" font-size="14" font-weight="bold" fill="{_TEXT}">'
                       f'{_esc(p.title)}</text>')
            out.append(f'<text x="{ox + 10:.1f}" y="38" font-size="12" fill="{_MUTED}">{_esc(p.subtitle)}</text>')
            for layer, y in enumerate(rows_y):
                out.append(f'<text x="{ox + 8:.1f}" y="{y + 4:.1f}" font-size="11" fill="{_MUTED}">'
                           f'{_esc(self.layer_names[layer])}</text>')
            for e, w in zip(self.edges, widths):
                (x0, y0), (x1, y1) = pos[e.source], pos[e.target]
                dx, dy = x1 - x0, y1 - y0
                d = math.hypot(dx, dy) or 1.0
                ux, uy = dx / d, dy / d
                sign = "pos" if e.weight > 0 else "neg"
                colour = POS if e.weight > 0 else NEG
                out.append(
                    f'<line class="cs-edge cs-edge-{sign}" x1="{ox + x0 + ux * _R:.1f}" y1="{y0 + uy * _R:.1f}" '
                    f'x2="{ox + x1 - ux * (_R + 1):.1f}" y2="{y1 - uy * (_R + 1):.1f}" stroke="{colour}" '
                    f'stroke-width="{w:.2f}" stroke-opacity="0.75" marker-end="url(#cs-arrow-{sign})">'
                    f'<title>{_esc(e.source)} \u2192 {_esc(e.target)}: weight {e.weight:.4g}</title></line>')
            for n in self.nodes:
                x, y = pos[n.name]
                fill, stroke, sw, classes = self._node_style(n, p.marks.get(n.name))
                value = p.values[n.name]
                out.append(f'<g class="{classes}" data-node="{_esc(n.name)}">'
                           f'<title>{_esc(n.name)} = {value:.6g}</title>'
                           f'<circle cx="{ox + x:.1f}" cy="{y:.1f}" r="{_R}" fill="{fill}" stroke="{stroke}" '
                           f'stroke-width="{sw}"/>'
                           f'<text class="cs-node-name" x="{ox + x:.1f}" y="{y - 3:.1f}" font-size="12" '
                           f'font-weight="bold" text-anchor="middle" fill="{_TEXT}">{_esc(n.name)}</text>'
                           f'<text class="cs-node-value" x="{ox + x:.1f}" y="{y + 12:.1f}" font-size="11" '
                           f'text-anchor="middle" fill="{_TEXT}">{_esc(fmt(value))}</text></g>')
            out.append("</g>")
        for k, (src, dst, name) in enumerate(self.links):
            x, y = pos[name]
            below = self._node(name).layer == 0
            (ax, ay), (cx, cy), (bx, by) = self._link_path(offsets[src] + x, offsets[dst] + x, y, k, below)
            out.append(f'<path class="cs-patch-link" d="M{ax:.1f},{ay:.1f} Q{cx:.1f},{cy:.1f} {bx:.1f},{by:.1f}" '
                       f'fill="none" stroke="{HIGHLIGHT}" stroke-width="2.5" stroke-dasharray="7 5" '
                       f'marker-end="url(#cs-arrow-patch)"><title>{_esc(name)}: value from the '
                       f'{_esc(self.panels[src].key)} run</title></path>')
        out.append(f'<text class="cs-key" x="10" y="{height - 12:.0f}" font-size="11" fill="{_MUTED}">'
                   f'{_esc(self._key())}</text>')
        out.append("</svg>")
        return "\n".join(out)

    def _repr_svg_(self) -> str:
        return self.svg()

    def save(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write the picture to ``path``: ``.svg`` (the SVG) or ``.html`` (a small offline page holding it)."""
        out = pathlib.Path(path)
        suffix = out.suffix.lower()
        if suffix == ".svg":
            text = self.svg() + "\n"
        elif suffix in (".html", ".htm"):
            title = _esc(self.panels[0].title)
            text = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                    f"<title>{title}</title>\n</head>\n<body style=\"margin:16px;background:#fff\">\n"
                    f"{self.svg()}\n</body>\n</html>\n")
        else:
            raise InputError(f"CausalGraph.save writes .svg or .html files; got {str(out)!r}.")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        return out

    # -- plotly -------------------------------------------------------------------------------------------
    def plot(self, backend: str = "plotly") -> plotly.graph_objects.Figure:
        """The same picture as a plotly figure (node scatter, edge lines, annotations), e.g. for a
        :class:`causalscope.app.report.Report`. Node traces carry ``meta="nodes"``."""
        if backend != "plotly":
            raise InputError(f"CausalGraph.plot draws with backend='plotly' only; got {backend!r}. "
                             f"For a static picture use .svg() or .save('graph.svg').")
        import plotly.graph_objects as go

        width, height, offsets, pos, rows_y = self._layout()
        big, widths = self._edge_style()
        fig = go.Figure()
        annotations: list[dict[str, Any]] = []
        for p, ox in zip(self.panels, offsets):
            # edges: one trace per (sign, width bucket), segments separated by None
            buckets: dict[tuple[str, float], tuple[list, list]] = {}
            mid_x, mid_y, mid_text = [], [], []
            for e, w in zip(self.edges, widths):
                (x0, y0), (x1, y1) = pos[e.source], pos[e.target]
                key = (POS if e.weight > 0 else NEG, round(w * 2) / 2)
                xs, ys = buckets.setdefault(key, ([], []))
                xs += [ox + x0, ox + x1, None]
                ys += [y0, y1, None]
                mid_x.append(ox + (x0 + x1) / 2)
                mid_y.append((y0 + y1) / 2)
                mid_text.append(f"{e.source} \u2192 {e.target}: weight {e.weight:.4g}")
            for (colour, w), (xs, ys) in sorted(buckets.items(), key=lambda kv: kv[0][1]):
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=w),
                                         opacity=0.75, hoverinfo="skip", showlegend=False, meta="edges"))
            if mid_x:
                fig.add_trace(go.Scatter(x=mid_x, y=mid_y, mode="markers", marker=dict(size=8, opacity=0),
                                         hovertext=mid_text, hoverinfo="text", showlegend=False, meta="edge-hover"))
            fills, strokes, sws, labels, hover = [], [], [], [], []
            for n in self.nodes:
                fill, stroke, sw, _ = self._node_style(n, p.marks.get(n.name))
                fills.append(fill)
                strokes.append(stroke)
                sws.append(sw)
                labels.append(f"<b>{_esc(n.name)}</b><br>{_esc(fmt(p.values[n.name]))}")
                mark = p.marks.get(n.name)
                hover.append(f"{_esc(n.name)} = {p.values[n.name]:.6g}" + (f" ({mark})" if mark else ""))
            fig.add_trace(go.Scatter(
                x=[ox + pos[n.name][0] for n in self.nodes], y=[pos[n.name][1] for n in self.nodes],
                mode="markers+text", text=labels, textposition="middle center",
                textfont=dict(size=11, color=_TEXT),
                marker=dict(size=2 * _R, color=fills, line=dict(color=strokes, width=sws)),
                hovertext=hover, hoverinfo="text", name=f"{p.key} nodes", showlegend=False, meta="nodes"))
            annotations.append(dict(x=ox + 10, y=20, text=f"<b>{_esc(p.title)}</b>", showarrow=False,
                                    xanchor="left", yanchor="middle", font=dict(size=14, color=_TEXT)))
            annotations.append(dict(x=ox + 10, y=38, text=_esc(p.subtitle), showarrow=False,
                                    xanchor="left", yanchor="middle", font=dict(size=12, color=_MUTED)))
            for layer, y in enumerate(rows_y):
                annotations.append(dict(x=ox + 8, y=y, text=_esc(self.layer_names[layer]), showarrow=False,
                                        xanchor="left", yanchor="middle", font=dict(size=11, color=_MUTED)))
        for k, (src, dst, name) in enumerate(self.links):
            x, y = pos[name]
            below = self._node(name).layer == 0
            (ax, ay), (cx, cy), (bx, by) = self._link_path(offsets[src] + x, offsets[dst] + x, y, k, below)
            ts = [i / 24 for i in range(25)]
            xs = [(1 - t) ** 2 * ax + 2 * (1 - t) * t * cx + t * t * bx for t in ts]
            ys = [(1 - t) ** 2 * ay + 2 * (1 - t) * t * cy + t * t * by for t in ts]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=HIGHLIGHT, width=2.5, dash="dash"),
                                     hoverinfo="text", hovertext=f"{name}: value from the {self.panels[src].key} run",
                                     showlegend=False, meta="patch-link"))
            annotations.append(dict(x=bx, y=by, ax=xs[-3], ay=ys[-3], xref="x", yref="y", axref="x", ayref="y",
                                    text="", showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=2.5,
                                    arrowcolor=HIGHLIGHT))
        annotations.append(dict(x=10, y=height - 16, text=_esc(self._key()), showarrow=False, xanchor="left",
                                yanchor="middle", font=dict(size=11, color=_MUTED)))
        fig.update_layout(
            width=int(width) + 20, height=int(height) + 20, margin=dict(l=10, r=10, t=10, b=10),
            plot_bgcolor="#ffffff", paper_bgcolor="#ffffff", annotations=annotations, showlegend=False,
            xaxis=dict(visible=False, range=[0, width], fixedrange=True),
            yaxis=dict(visible=False, range=[height, 0], scaleanchor="x", scaleratio=1, fixedrange=True),
        )
        return fig


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
        self.cache = [Site(self.paths[0], io="input"), *self.paths]

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
