"""The result of node ablations: causal effect per (node, scale), each node marked in or not in the circuit."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..results import LabelledArray, resolve_backend

COLORS = {"in_circuit": "green", "not_in_circuit": "orange", "unknown": "gray"}


class NodeEffects(LabelledArray):
    """Causal effect of ablating each node at each scale, dims ``("node", "scale")``.

    >>> r = circuits.node_effects(case)                 # resample ablation, scales 0 .. 10
    >>> r.table()                                       # node, status, one column per scale (the seed's table)
    >>> r.sel(scale=0.0).values                         # effect of each node at scale 0
    >>> r.status["a1.h0"]                               # 'in_circuit' / 'not_in_circuit' / 'unknown'
    >>> fig = r.plot(); text = r.to_json()

    ``meta`` holds every setting (``ablation``, ``pairs``, ``seed``, ``atol``, ``metric`` ...) and
    ``meta["status"]``, one entry per node; ``meta["denominator"]`` is the number of (base, source,
    position) triples (or (base, position) pairs for mean / zero) each effect is a fraction of.
    """

    @property
    def nodes(self) -> list[str]:
        return [str(n) for n in self.coords["node"]]

    @property
    def scales(self) -> list[float]:
        return [float(s) for s in self.coords["scale"]]

    @property
    def status(self) -> dict[str, str]:
        """``{node: "in_circuit" | "not_in_circuit" | "unknown"}`` (unknown: no circuit was given)."""
        return dict(zip(self.nodes, self.meta["status"]))

    def effect(self, node: str, scale: float) -> float:
        """The effect of one node at one scale."""
        if node not in self.nodes:
            raise InputError(f"No node {node!r} in this result; nodes: {', '.join(self.nodes)}.")
        if float(scale) not in self.scales:
            raise InputError(f"No scale {scale!r} in this result; scales: {self.scales}.")
        return float(self.values[self.nodes.index(node), self.scales.index(float(scale))])

    def table(self) -> Any:
        """The seed's table: a pandas DataFrame with columns ``node``, ``status`` and ``scale <s>`` per scale,
        in-circuit nodes first (each group in model order)."""
        import pandas as pd

        cols = {"node": self.nodes, "status": self.meta["status"]}
        for j, s in enumerate(self.scales):
            cols[f"scale {s:g}"] = self.values[:, j].tolist()
        df = pd.DataFrame(cols)
        order = {"in_circuit": 0, "not_in_circuit": 1, "unknown": 2}
        return df.sort_values("status", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "causalscope-node-effects/1", "nodes": self.nodes, "status": self.meta["status"],
                "scales": self.scales, "effects": self.values.tolist(), "meta": self.meta}

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (and a file when ``path`` is given): nodes, status, scales, effects and the settings."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> NodeEffects:
        s = str(text_or_path)
        d = json.loads(s if s.lstrip().startswith("{") else Path(s).read_text())
        if d.get("format") != "causalscope-node-effects/1":
            raise InputError(f"Not a causalscope node-effects file (format {d.get('format')!r}).")
        return cls(torch.tensor(d["effects"], dtype=torch.float64), ("node", "scale"),
                   {"node": d["nodes"], "scale": d["scales"]}, d["meta"], name="causal effect")

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """The seed's figure: effect against scale, one line per node, green in circuit, orange not.

        ``backend="plotly"`` gives an interactive figure (hover names the node)."""
        backend = resolve_backend(backend)
        x, data = self.scales, self.numpy()
        title = self.meta.get("title", "node ablations")
        if backend == "plotly":
            import plotly.graph_objects as go

            fig = go.Figure()
            plain = {st: st.replace("_", " ") for st in self.meta["status"]}  # "in circuit", not "in_circuit"
            for name, st, y in zip(self.nodes, self.meta["status"], data):
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", line={"color": COLORS[st]}, showlegend=False,
                                         name=name, hovertemplate=f"node {name} ({plain[st]})<br>scale %{{x}}: "
                                                                  f"%{{y:.3f}}<extra></extra>"))
            for st in dict.fromkeys(self.meta["status"]):
                fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker={"color": COLORS[st]},
                                         name=plain[st]))
            fig.update_layout(template="plotly_white", xaxis_title="scale", yaxis_title="causal effect",
                              title=title, **kw)
            return fig
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(8, 4), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        seen: set[str] = set()
        for _name, st, y in zip(self.nodes, self.meta["status"], data):
            ax.plot(x, y, marker="o", ms=3, color=COLORS[st], alpha=0.8, label=None if st in seen else st, **kw)
            seen.add(st)
        ax.set_xlabel("scale")
        ax.set_ylabel("causal effect")
        ax.set_ylim(-0.03, 1.03)
        ax.legend(frameon=False)
        ax.set_title(title, fontsize=10)
        return fig
