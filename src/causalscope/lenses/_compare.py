"""Logit lens against tuned lens: the mean KL to the final layer per layer, and one prompt's two read-outs side by
side.

>>> c = lens.compare(heldout_prompts)        # LensComparison, dims ("lens", "layer")
>>> c.plot()                                 # two lines: KL per layer, logit lens and tuned lens
"""
from __future__ import annotations

from typing import Any

from ..results import LabelledArray, integer_axis, resolve_backend

_COLORS = {"logit lens": "#d62728", "tuned lens": "#1f77b4"}


class LensComparison(LabelledArray):
    """Mean KL(final layer || lens) over held-out tokens, dims ``("lens", "layer")`` with lenses ``"logit lens"``
    and ``"tuned lens"`` (Belrose et al. 2023, figure 2's measure).

    >>> c = lens.compare(heldout_prompts)
    >>> c.sel(lens="tuned lens").values, c.better          # KL per layer; where the tuned lens is lower
    >>> c.plot()
    """

    @property
    def better(self) -> list[bool]:
        """Per layer: the tuned lens's KL is below the logit lens's."""
        logit = self.sel(lens="logit lens").values
        tuned = self.sel(lens="tuned lens").values
        return [bool(t < g) for t, g in zip(tuned, logit)]

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """KL per layer, one line per lens (lower is closer to the model's output)."""
        backend = resolve_backend(backend)
        layers = list(self.coords["layer"])
        title = str(self.meta.get("title") or self.name)
        if backend == "plotly":
            import plotly.graph_objects as go

            fig = go.Figure()
            for i, lens in enumerate(self.coords["lens"]):
                fig.add_trace(go.Scatter(x=layers, y=self.values[i].tolist(), mode="lines+markers", name=str(lens),
                                         line={"color": _COLORS.get(str(lens))}, **kw))
            whole = integer_axis(layers)
            if whole is not None:
                fig.update_xaxes(**whole)
            fig.update_layout(title={"text": title}, xaxis_title="layer", yaxis_title=self.name)
            return fig
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        if ax is None:
            fig = Figure(figsize=(6, 3.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        for i, lens in enumerate(self.coords["lens"]):
            ax.plot(layers, self.values[i].numpy(), marker="o", label=str(lens), color=_COLORS.get(str(lens)), **kw)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel(self.name)
        ax.set_title(title)
        ax.legend()
        return fig


def side_by_side(logit: Any, tuned: Any, backend: str = "matplotlib") -> Any:
    """Two lens read-outs of one prompt (``LensResult``), left and right."""
    backend = resolve_backend(backend)
    if backend == "plotly":
        from plotly.subplots import make_subplots

        left, right = logit.plot(backend="plotly"), tuned.plot(backend="plotly")
        fig = make_subplots(rows=1, cols=2, subplot_titles=["logit lens", "tuned lens"], horizontal_spacing=0.08)
        for col, part in ((1, left), (2, right)):
            trace = part.data[0]
            trace.update(showscale=col == 2)
            fig.add_trace(trace, 1, col)
            fig.update_xaxes(part.layout.xaxis, row=1, col=col)
            fig.update_yaxes(part.layout.yaxis, row=1, col=col)
        fig.update_layout(title={"text": f"logit lens vs tuned lens: {logit.name}"})
        return fig
    from matplotlib.figure import Figure

    n = logit.lengths[0]
    rows = len(logit.coords["layer"])
    fig = Figure(figsize=(max(9.0, 1.3 * n + 4), max(3.0, 0.4 * rows + 1.8)), layout="constrained")
    a, b = fig.subplots(1, 2)
    logit.plot(ax=a)
    tuned.plot(ax=b)
    return fig
