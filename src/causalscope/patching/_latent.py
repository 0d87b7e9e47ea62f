"""The latent-circuits experiment: AND / OR gates, patching in both directions vs integrated gradients."""
from __future__ import annotations

from typing import Any, Literal

import torch

from ..core import Site
from ..results import LabelledArray, resolve_backend

METHODS = ("denoise (clean into corrupted)", "noise (corrupted into clean)", "IG (input clean, baseline corrupted)",
           "IG (input corrupted, baseline clean)", "IG (zero baseline, clean input)")


class LatentCircuits(LabelledArray):
    """Scores of the two gate inputs by each method, for the AND and the OR gate; see :func:`latent_circuits`.

    >>> r = cs.latent_circuits()
    >>> print(r.table()); print(r.conclusion()); fig = r.plot()
    """

    def table(self) -> str:
        """The seed notebook's table: one line per gate and method, the score of inputs A and B."""
        lines = [f"{'gate':5s} {'method':40s} {'A':>8s} {'B':>8s}"]
        for g in self.coords["gate"]:
            for meth in self.coords["method"]:
                a, b = self.sel(gate=g, method=meth).values.tolist()
                lines.append(f"{g:5s} {meth:40s} {a:+8.4f} {b:+8.4f}")
        return "\n".join(lines)

    def conclusion(self) -> str:
        """What the numbers show, computed from them (not a fixed text)."""
        out = []
        for g in self.coords["gate"]:
            den = self.sel(gate=g, method=METHODS[0]).values
            noi = self.sel(gate=g, method=METHODS[1]).values
            ig = self.sel(gate=g, method=METHODS[2]).values
            span = float(self.meta["outputs"][g]["clean"] - self.meta["outputs"][g]["corrupted"])
            share = (ig / span).tolist()
            missed = [n for n, v in (("denoising", den), ("noising", noi)) if float(v.max()) < 0.5]
            found = "both inputs" if all(0.3 < s < 0.7 for s in share) else "not both inputs equally"
            out.append(f"{g.upper()}: denoising scores A, B = {den[0]:.2f}, {den[1]:.2f}; noising = {noi[0]:.2f}, "
                       f"{noi[1]:.2f}. " + (f"{' and '.join(missed).capitalize()} alone would call both inputs "
                                            f"unimportant. " if missed else "") +
                       f"IG with the corrupted baseline gives each input {share[0]:.0%} / {share[1]:.0%} of the "
                       f"output change: it credits {found}.")
        out.append("Activation patching in one direction misses half of a latent circuit (denoising misses AND "
                   "components, noising misses OR components); integrated gradients with the corrupted input as "
                   "baseline finds both. Patch in both directions, or use IG, before calling a component unimportant.")
        return "\n".join(out)

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """Grouped bars: one panel per gate, a group per method, a bar per input."""
        backend = resolve_backend(backend)
        gates, methods = self.coords["gate"], self.coords["method"]
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            # one row per gate, so that each method's label (2-3 short lines) gets a fifth of the full width
            fig = make_subplots(rows=len(gates), cols=1, shared_xaxes=True, vertical_spacing=0.1,
                                subplot_titles=[f"{g.upper()} gate" for g in gates])
            labels = [m.replace(" (", "<br>(", 1).replace(", ", ",<br>") for m in methods]  # 2-3 short lines
            for k, g in enumerate(gates, start=1):
                for i, name in enumerate(self.coords["input"]):
                    fig.add_trace(go.Bar(x=labels, y=self.sel(gate=g).values[:, i].tolist(), name=f"input {name}",
                                         showlegend=k == 1, marker_color=["#4477aa", "#ee6677"][i],
                                         hovertemplate="%{y:.3f}<extra>input " + str(name) + "</extra>"), k, 1)
                fig.update_yaxes(title_text="score", row=k, col=1)
            fig.update_xaxes(tickangle=0, row=len(gates), col=1)
            fig.update_layout(barmode="group", title="Latent circuits: patching directions vs integrated gradients",
                              height=260 * len(gates) + 140,
                              legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"})
            return fig
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6 * len(gates), 4), layout="constrained")
        for a, g in zip(fig.subplots(1, len(gates), squeeze=False)[0], gates):
            vals = self.sel(gate=g).values
            x = torch.arange(len(methods)).float()
            for i, name in enumerate(self.coords["input"]):
                a.bar((x + (i - 0.5) * 0.38).tolist(), vals[:, i].tolist(), width=0.38, label=f"input {name}")
            a.set_xticks(x.tolist())
            a.set_xticklabels([m.replace(" (", "\n(") for m in methods], fontsize=7)
            a.axhline(0, color="k", lw=0.5)
            a.set_title(f"{g.upper()} gate")
            a.legend(fontsize=8)
        return fig


def latent_circuits(weights: Literal["seed", "trained"] = "seed", steps: int = 50,
                    method: str = "gausslegendre") -> LatentCircuits:
    """Reproduce the latent-circuits notebook: AND and OR gates, inputs A and B, clean (1, 1) vs corrupted (0, 0).

    >>> r = cs.latent_circuits()
    >>> r.sel(gate="and", method="denoise (clean into corrupted)").values    # ~ [0.18, 0.18]

    For each gate (``causalscope.zoo.build_gate``, the seed's trained weights by default) the two inputs
    are scored by activation patching in both directions (per input neuron of ``model.0``) and by layer
    integrated gradients attributed to the input of ``model.0`` with the corrupted input as baseline
    (both ways round) and with a zero baseline. Patching scores are fractions of the clean-corrupted
    output gap; IG scores are attributions (they sum to the output change).
    """
    from ..loading import load
    from ..zoo.gates import build_gate
    from ._activation import activation_patching
    from ._ig import integrated_gradients

    clean, corrupted = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.0]])
    site = Site("model.0", io="input")
    values, outputs = [], {}
    for g in ("and", "or"):
        m = load(build_gate(g, weights=weights), name=f"{g}-gate")
        p = activation_patching(m, clean, corrupted, site, per="neuron")
        ig = [integrated_gradients(m, x, b, "model.0", attribute_to="input", steps=steps, method=method).values[0]
              for x, b in ((clean, corrupted), (corrupted, clean), (clean, torch.zeros_like(clean)))]
        values.append(torch.stack([p.denoise.values, p.noise.values, *ig]))
        outputs[g] = {"clean": p.meta["clean_metric"], "corrupted": p.meta["corrupted_metric"]}
    meta = {"method": "latent_circuits", "weights": weights, "steps": steps, "ig_method": method,
            "outputs": outputs, "clean": [1.0, 1.0], "corrupted": [0.0, 0.0],
            "title": "Latent circuits: patching directions vs integrated gradients"}
    return LatentCircuits(torch.stack(values), ("gate", "method", "input"),
                          {"gate": ["and", "or"], "method": list(METHODS), "input": ["A", "B"]}, meta, name="score")
