"""Drawing a causal graph by hand (no graphviz): the layout, a standalone SVG, an HTML page and a plotly figure.

>>> g = cs.forward_graph("adder", [1, 2, 3])
>>> g.svg().startswith("<svg")
True
>>> fmt(10.889999389648438)
'10.89'

:class:`GraphDrawing` is the drawing half of :class:`CausalGraph` (which inherits it); it reads only the
graph's ``nodes``, ``edges``, ``panels``, ``links`` and ``layer_names``.
"""
from __future__ import annotations

import html as _html
import math
import os
import pathlib
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ._graph_elements import Edge, Node, Panel

if TYPE_CHECKING:  # pragma: no cover - typing only
    import plotly.graph_objects

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


def fmt(value: float) -> str:
    """A node value as the tutorial prints it: rounded to 2 decimals.

    >>> fmt(10.889999389648438), fmt(6.000000953674316), fmt(-0.2709999978542328), fmt(-0.001)
    ('10.89', '6.0', '-0.27', '0.0')
    """
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    return str(round(v, 2) + 0.0)


def _esc(text: Any) -> str:
    """Escape for SVG/XML text and attribute values.

    >>> _esc('<a & "b">')
    '&lt;a &amp; &quot;b&quot;&gt;'
    """
    return _html.escape(str(text), quote=True)


class GraphDrawing:
    """How a :class:`CausalGraph` is drawn: layers bottom to top, one panel per run, patch links between panels.

    >>> g = cs.interchange_graph("adder", [1, 2, 3], [4, 2, 3], patch=["h12"])
    >>> fig = g.plot()                      # plotly; g.svg() is the SVG text, g.save("graph.svg") or .html a file

    A mixin: it holds no data of its own and uses the attributes below, which :class:`CausalGraph` sets.
    """

    nodes: list[Node]
    edges: list[Edge]
    panels: list[Panel]
    links: list[tuple[int, int, str]]
    layer_names: list[str]

    def _node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

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
        rows_y: list[float] = [_HEAD + _R + 6 + (n_rows - 1 - layer) * _DY for layer in range(n_rows)]
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
        end: float
        lift: float
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
        :class:`causalscope.app.report.Report`; it has no fixed width (it is centred in its container at
        its own scale). Node traces carry ``meta="nodes"``."""
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
        # no fixed width: the figure follows its container; the height fixes the scale (1 unit = 1 px, the
        # y range is the picture's height and x is anchored to it), so the picture keeps its size and centres
        fig.update_layout(
            height=int(height) + 20, margin=dict(l=10, r=10, t=10, b=10),
            plot_bgcolor="#ffffff", paper_bgcolor="#ffffff", annotations=annotations, showlegend=False,
            xaxis=dict(visible=False, range=[0, width], fixedrange=True),
            yaxis=dict(visible=False, range=[height, 0], scaleanchor="x", scaleratio=1, fixedrange=True),
        )
        return fig
