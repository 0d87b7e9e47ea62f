"""The line plot (matplotlib or plotly) of a 1-D result: against its coordinates, or against tick labels.

>>> import numpy as np
>>> fig = line(np.array([1.0, 3.0, 2.0]), [0, 1, 2], None, x_title="layer", name="effect", title="t")
>>> [float(v) for v in fig.axes[0].xaxis.get_major_locator().tick_values(0, 2)]
[0.0, 1.0, 2.0]
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._figures import resolve_backend
from ._heatmap import _every, integer_axis, set_ticks

__all__ = ["line"]


def line(values: np.ndarray, coords: Sequence[Any], ticks: Sequence[str] | None, *, x_title: str, name: str,
         title: str, backend: str | None = None, ax: Any = None, max_ticks: int | None = None, **kw: Any) -> Any:
    """``values`` against ``coords``: numbers are x values (integers tick at whole numbers only); other labels,
    or any coords when ``ticks`` (tick texts, e.g. with tokens) are given, sit at 0, 1, ... with the labels as
    tick text, at most ``max_ticks`` of them. A matplotlib Figure (drawn into ``ax`` when given) or, with
    ``backend="plotly"``, a plotly ``go.Figure``; extra keywords go to ``ax.plot`` or ``go.Scatter``."""
    numeric = ticks is None and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in coords)
    texts = [str(x) for x in coords] if ticks is None else list(ticks)
    if resolve_backend(backend) == "plotly":
        return _plotly(values, coords, texts, numeric, x_title=x_title, name=name, title=title, max_ticks=max_ticks,
                       **kw)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        fig = Figure(figsize=(7, 3.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    if numeric:
        ax.plot(list(coords), values, **kw)
        if integer_axis(coords) is not None:  # layers: no ticks at 0.5
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.plot(range(len(texts)), values, **kw)
        set_ticks(ax.set_xticks, ax.set_xticklabels, texts, max_ticks=max_ticks, rotate_over=8)
    ax.set_xlabel(x_title)
    ax.set_ylabel(name)
    ax.set_title(title)
    return fig


def _plotly(values: np.ndarray, coords: Sequence[Any], texts: list[str], numeric: bool, *, x_title: str, name: str,
            title: str, max_ticks: int | None, **kw: Any) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    if numeric:
        fig.add_trace(go.Scatter(x=list(coords), y=values, mode="lines+markers", name=name, **kw))
        whole = integer_axis(coords)
        if whole is not None:  # layers: no ticks at 0.5
            fig.update_xaxes(**whole)
    else:
        fig.add_trace(go.Scatter(x=list(range(len(texts))), y=values, mode="lines+markers", name=name, text=texts,
                                 **kw))
        shown = _every(len(texts), max_ticks)
        fig.update_xaxes(tickmode="array", tickvals=shown, ticktext=[texts[i] for i in shown])
    fig.update_layout(xaxis_title=x_title, yaxis_title=name)
    fig.update_layout(title={"text": title})
    return fig
