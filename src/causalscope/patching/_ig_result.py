"""The result of :func:`causalscope.integrated_gradients`: attributions shaped like the site's activation."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..results import LabelledArray, resolve_backend


class IGResult(LabelledArray):
    """Integrated-gradients attributions at one site, shaped like the site's activation.

    >>> r = causalscope.integrated_gradients("mlp", x, baseline, "net.2", target=1)
    >>> r.attributions.shape                  # (inputs, neurons): the activation of net.2
    >>> r.attributions.sum(1) - (r.f_inputs - r.f_baseline)   # == r.delta (completeness error)
    >>> r.plot()                              # bars per neuron, one group per input

    Dims: ``("input", "neuron")`` for a 2-D activation, ``("input", "position", "d")`` for a 3-D one
    (``("input", "position", "head", "d")`` with heads). ``meta`` holds every setting (site, target,
    steps, approximation, alphas, weights, ...), the metric values and the executed token-layers.
    """

    @property
    def attributions(self) -> torch.Tensor:
        """(inputs, *activation): ``(a_x - a_b) * sum_k w_k grad_k``."""
        return self.values

    @property
    def delta(self) -> torch.Tensor:
        """Per input: ``attributions.sum() - (f_inputs - f_baseline)`` (captum's convergence delta)."""
        return torch.tensor(self.meta["delta"], dtype=torch.float64)

    @property
    def f_inputs(self) -> torch.Tensor:
        """The metric on each input."""
        return torch.tensor(self.meta["f_inputs"], dtype=torch.float64)

    @property
    def f_baseline(self) -> torch.Tensor:
        """The metric on each input's baseline (the baseline input run through the whole model)."""
        return torch.tensor(self.meta["f_baseline"], dtype=torch.float64)

    @property
    def f_path_start(self) -> torch.Tensor:
        """The metric on each input with only the site set to its baseline activation (alpha = 0).

        The path integral gives ``attributions.sum() ~ f_inputs - f_path_start`` at any site; this equals
        ``f_baseline`` when the site carries everything the baseline changes (e.g. a whole residual stream).
        """
        return torch.tensor(self.meta["f_path_start"], dtype=torch.float64)

    @property
    def path_delta(self) -> torch.Tensor:
        """Per input: ``attributions.sum() - (f_inputs - f_path_start)`` (the quadrature error alone)."""
        return torch.tensor(self.meta["path_delta"], dtype=torch.float64)

    @property
    def site(self) -> str:
        return str(self.meta["site"])

    def per_position(self) -> LabelledArray:
        """Attributions summed over every axis after the second: (input, position) or (input, neuron)."""
        if self.ndim <= 2:
            return LabelledArray(self.values, self.dims, self.coords, self.meta, self.name)
        return self.sum(list(self.dims[2:]))

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """Bar chart of the attributions summed over the last dims, per position (or per neuron), one bar
        group per input. Returns a matplotlib ``Figure`` or, with ``backend="plotly"``, a plotly figure."""
        backend = resolve_backend(backend)
        per = self.per_position()
        data = per.numpy().reshape(self.shape[0], -1)
        axis = per.dims[1] if per.ndim > 1 else "input"
        labels = [str(c) for c in per.coords[axis]] if per.ndim > 1 else ["total"]
        tokens = self.meta.get("tokens")
        if tokens and axis == "position" and data.shape[0] == 1 and len(tokens[0]) == self.meta["seq_len"]:
            labels = [f"{tokens[0][int(p)]}" for p in per.coords[axis]]
        what = "sum over " + ", ".join(self.dims[2:]) if self.ndim > 2 else ""
        ylabel = f"attribution{f' ({what})' if what else ''}"
        title = str(self.meta.get("title") or self.name)
        names = [f"input {i}" for i in range(data.shape[0])]
        if backend == "plotly":
            import plotly.graph_objects as go

            fig = go.Figure()
            for i, row in enumerate(data):
                fig.add_trace(go.Bar(x=list(range(len(labels))), y=row, name=names[i], **kw))
            fig.update_xaxes(title_text=axis, tickvals=list(range(len(labels))), ticktext=labels)
            fig.update_layout(barmode="group", title={"text": title}, yaxis_title=ylabel)
            return fig
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(max(5.0, 0.35 * len(labels) * max(1, data.shape[0]) + 2), 3.5),
                         layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        width = 0.8 / data.shape[0]
        x = np.arange(len(labels))
        for i, row in enumerate(data):
            ax.bar(x + (i - (data.shape[0] - 1) / 2) * width, row, width, label=names[i], **kw)
        ax.axhline(0.0, color="black", linewidth=0.6)
        if len(labels) <= 40:
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=90 if len(labels) > 8 else 0)
        ax.set_xlabel(axis)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if data.shape[0] > 1:
            ax.legend(fontsize=8)
        return fig
