"""The result of every circuit-discovery method: one score per edge (or per node), with the settings."""
from __future__ import annotations

from typing import Any, cast

import torch

from ..errors import InputError
from ..results import LabelledArray, resolve_backend
from ._circuit import Circuit, node_order, upstream


class CircuitScores(LabelledArray):
    """Scores of a circuit-discovery method, one per edge (dim ``edge``, labels ``"a0.h1->m1"``) or per node.

    >>> r = circuits.edge_attribution_patching(case)
    >>> r.top(5)                          # DataFrame: the 5 edges of largest |score|
    >>> r.circuit(k=10)                   # Circuit of the top 10 edges (or threshold=...: |score| >= threshold)
    >>> r.plot()                          # the graph, edge width and colour by score (kind="bar": bar chart)

    A score estimates (or, for exact methods, is) the change of the metric when the edge (node) carries the
    corrupted run's value: ``metric(patched) - metric(clean)``, averaged over inputs. ACDC's scores are its
    effect sizes (how much worse the metric got when the edge was tried), and ``meta["kept"]`` says which
    edges its greedy pruning kept; its :meth:`circuit` is those edges. ``meta`` holds every setting.
    """

    @property
    def level(self) -> str:
        return self.dims[0]

    @property
    def names(self) -> list[str]:
        return [str(x) for x in self.coords[self.level]]

    @property
    def kept(self) -> torch.Tensor | None:
        """ACDC: which edges its greedy pruning kept (None for scoring methods)."""
        k = self.meta.get("kept")
        return None if k is None else torch.tensor(k, dtype=torch.bool)

    def ranking(self) -> torch.Tensor:
        """Scores to rank by (higher = more likely in the circuit): ``|score|``; for ACDC, kept edges above
        removed ones, then ``|score|`` within each group."""
        a = self.values.double().abs().nan_to_num(0.0)
        kept = self.kept
        if kept is None:
            return a
        return kept.double() * (1.0 + float(a.max()) if a.numel() else 1.0) + a

    def top(self, k: int = 10) -> Any:
        """The ``k`` items of highest rank as a DataFrame (columns: the level, score, rank)."""
        import pandas as pd

        order = self.ranking().argsort(descending=True, stable=True)[: max(0, int(k))].tolist()
        return pd.DataFrame({self.level: [self.names[i] for i in order],
                             "score": [float(self.values[i]) for i in order]},
                            index=pd.RangeIndex(1, len(order) + 1, name="rank"))

    def selected(self, threshold: float | None = None, k: int | None = None) -> torch.Tensor:
        """Boolean mask of the items a circuit keeps: top ``k``, ``|score| >= threshold``, or ACDC's kept set."""
        if threshold is not None and k is not None:
            raise InputError("Give threshold or k, not both.")
        rank = self.ranking()
        if k is not None:
            if k < 0:
                raise InputError(f"k must be >= 0, got {k}.")
            out = torch.zeros(len(rank), dtype=torch.bool)
            out[rank.argsort(descending=True, stable=True)[: int(k)]] = True
            return out
        if threshold is not None:
            return self.values.double().abs() >= threshold
        if self.kept is not None:
            return self.kept
        raise InputError(f"Give threshold= (keep |score| >= threshold) or k= (keep the top k) to pick a circuit "
                         f"from {self.meta.get('method', 'these')} scores.")

    def circuit(self, threshold: float | None = None, k: int | None = None) -> Circuit:
        """The circuit of the selected edges (nodes: their endpoints); for node scores, the selected nodes
        plus ``embed`` and ``logits`` and every edge among them."""
        mask = self.selected(threshold, k)
        names = [n for n, m in zip(self.names, mask.tolist()) if m]
        meta = {"method": self.meta.get("method"), "threshold": threshold, "k": k}
        if self.level == "edge":
            edges = [cast("tuple[str, str]", tuple(n.split("->"))) for n in names]
            nodes = sorted({x for e in edges for x in e}, key=node_order)
            return Circuit(nodes, edges, meta)
        nodes = sorted(set(names) | {"embed", "logits"}, key=node_order)
        edges = [(s, r) for r in nodes for s in nodes if upstream(s, r)]
        if self.meta.get("parallel_mlp"):  # an MLP reads its block's input: no edge from its own layer's heads
            edges = [(s, r) for s, r in edges
                     if not (r.startswith("m") and s.startswith("a") and s[1:].split(".")[0] == r[1:])]
        return Circuit(nodes, edges, meta)

    def node_scores(self) -> LabelledArray:
        """Per node: the largest |score| of an edge into or out of it (node results are returned as they are)."""
        if self.level == "node":
            return self
        best: dict[str, float] = {}
        for n, v in zip(self.names, self.ranking().tolist()):
            for x in n.split("->"):
                best[x] = max(best.get(x, 0.0), v)
        nodes = sorted(best, key=node_order)
        return CircuitScores(torch.tensor([best[n] for n in nodes]), ("node",), {"node": nodes},
                             {**self.meta, "kept": None, "aggregated_from": "edge"}, name=self.name)

    # ------------------------------------------------------------------ plots
    def plot(self, ax: Any = None, backend: str = "matplotlib", kind: str = "graph", k: int = 20,
             **kw: Any) -> Any:
        """``kind="graph"``: the model's graph (embed at the bottom, logits on top), the top ``k`` edges drawn
        with width by |score| (red: the metric rises when patched, blue: it falls); ``kind="bar"``: the top
        ``k`` scores as bars. matplotlib Figure, or plotly with ``backend="plotly"``."""
        if kind not in ("graph", "bar"):
            raise InputError(f"kind must be 'graph' or 'bar', got {kind!r}.")
        backend = resolve_backend(backend)
        if kind == "bar" or self.level == "node" and backend == "plotly":
            return self._bars(ax, backend, k)
        return self._graph(ax, backend, k)

    def _bars(self, ax: Any, backend: str, k: int) -> Any:
        top = self.top(k)
        labels, vals = list(top[self.level])[::-1], list(top["score"])[::-1]
        title = f"{self.meta.get('method', 'scores')}: top {len(labels)} {self.level}s"
        if backend == "plotly":
            import plotly.graph_objects as go

            fig = go.Figure(go.Bar(x=vals, y=labels, orientation="h"))
            fig.update_layout(title=title, xaxis_title=self.name, height=120 + 18 * len(labels))
            return fig
        from matplotlib.figure import Figure

        fig = ax.figure if ax is not None else Figure(figsize=(6, 1 + 0.25 * len(labels)), layout="constrained")
        ax = ax or fig.add_subplot()
        ax.barh(range(len(labels)), vals, color=["tab:red" if v > 0 else "tab:blue" for v in vals])
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel(self.name)
        ax.set_title(title)
        return fig

    def _layout(self) -> dict[str, tuple[float, float]]:
        nodes = self.meta.get("nodes") or sorted({x for n in self.names for x in n.split("->")}, key=node_order)
        rows: dict[float, list[str]] = {}
        for n in nodes:
            key = node_order(n)
            y = -1.0 if n == "embed" else (1e9 if n == "logits" else 2 * key[0] + key[1])
            rows.setdefault(y, []).append(n)
        ys = sorted(rows)
        pos = {}
        for level, y in enumerate(ys):
            row = rows[y]
            for i, n in enumerate(row):
                pos[n] = ((i + 1) / (len(row) + 1), float(level))
        return pos

    def _graph(self, ax: Any, backend: str, k: int) -> Any:
        pos = self._layout()
        mask = self.selected(k=k)
        vals = self.values.double()
        big = float(vals.abs().max()) or 1.0
        segs = [(n.split("->"), float(vals[i])) for i, n in enumerate(self.names) if mask[i] and "->" in n]
        node_val = ({n: float(v) for n, v in zip(self.names, vals.tolist())} if self.level == "node" else {})
        title = f"{self.meta.get('method', 'scores')}: top {int(mask.sum())} {self.level}s"
        if backend == "plotly":
            import plotly.graph_objects as go

            fig = go.Figure()
            for (s, r), v in segs:
                fig.add_trace(go.Scatter(x=[pos[s][0], pos[r][0]], y=[pos[s][1], pos[r][1]], mode="lines",
                                         line={"width": 0.5 + 5 * abs(v) / big,
                                               "color": "crimson" if v > 0 else "royalblue"},
                                         hovertext=f"{s}->{r}: {v:.4g}", showlegend=False))
            fig.add_trace(go.Scatter(x=[p[0] for p in pos.values()], y=[p[1] for p in pos.values()],
                                     mode="markers+text", text=list(pos), textposition="top center",
                                     marker={"size": 10, "color": "lightgrey"}, showlegend=False))
            fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False)
            return fig
        from matplotlib.figure import Figure

        fig = ax.figure if ax is not None else Figure(figsize=(7, 1.2 + 0.9 * len({p[1] for p in pos.values()})),
                                                      layout="constrained")
        ax = ax or fig.add_subplot()
        for (s, r), v in segs:
            ax.plot([pos[s][0], pos[r][0]], [pos[s][1], pos[r][1]], color="tab:red" if v > 0 else "tab:blue",
                    lw=0.5 + 4 * abs(v) / big, alpha=0.8, zorder=1)
        for n, (x, y) in pos.items():
            nv = node_val.get(n)
            face = "lightgrey" if nv is None else ("tab:red" if nv > 0 else "tab:blue")
            ax.scatter([x], [y], s=120 if nv is None else 40 + 300 * abs(nv) / big, color=face, zorder=2,
                       edgecolor="k", lw=0.5)
            ax.annotate(n, (x, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=7)
        ax.set_axis_off()
        ax.set_title(title)
        return fig
