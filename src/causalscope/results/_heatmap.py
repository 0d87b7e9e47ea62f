"""The one heatmap (matplotlib or plotly) behind every matrix plot: labelled arrays, similarity and steering maps.

>>> import numpy as np
>>> fig = heatmap(np.eye(3), ["a", "b", "c"], ["a", "b", "c"], title="identity", annotate=True)
>>> fig.axes[0].get_title()
'identity'
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._figures import resolve_backend

__all__ = ["heatmap", "set_ticks"]


def heatmap(data: np.ndarray, rows: Sequence[Any], cols: Sequence[Any], *, title: str = "", row_title: str = "",
            col_title: str = "", value_title: str = "", backend: str | None = None, ax: Any = None,
            vmin: float | None = None, vmax: float | None = None, cmap: str | None = None,
            colorscale: str | None = None, reverse: bool | None = None, annotate: bool = False,
            text_dark: Callable[[float], bool] = lambda v: v > 0.5, size: tuple[float, float] = (7, 6),
            plotly_size: tuple[int, int] | None = None, max_ticks: int | None = None, rotate_over: int = 10,
            title_size: float | None = 10, categorical: bool = True, **kw: Any) -> Any:
    """Heatmap of ``data`` (``rows`` down, ``cols`` across); a matplotlib Figure or, with ``backend="plotly"``,
    a plotly ``go.Figure``.

    >>> fig = heatmap(np.eye(2), ["x", "y"], ["p", "q"], value_title="v", backend="plotly")
    >>> fig.data[0].type
    'heatmap'

    Colours: ``vmin`` / ``vmax`` bound the scale, ``cmap`` (matplotlib) or ``colorscale`` (plotly, reversed
    with ``reverse``) name it; ``None`` leaves the library's default. ``annotate`` writes each value in its cell,
    white where ``text_dark(value)`` says the colour is dark. matplotlib: a new ``size`` figure unless ``ax`` is
    given; tick labels are drawn up to ``max_ticks`` per axis (all when ``None``), column labels turned upright
    past ``rotate_over`` columns; the title in ``title_size`` points (``None``: matplotlib's title size).
    plotly: ``plotly_size`` is (width, height) in pixels; ``categorical`` axes take the labels as categories,
    otherwise cells sit at positions 0, 1, ... with the labels as tick text (repeated or numeric labels stay
    apart). Extra keywords go to ``ax.imshow`` or ``go.Heatmap``.
    """
    if resolve_backend(backend) == "plotly":
        return _plotly(data, rows, cols, title=title, row_title=row_title, col_title=col_title,
                       value_title=value_title, vmin=vmin, vmax=vmax, colorscale=colorscale, reverse=reverse,
                       annotate=annotate, plotly_size=plotly_size, categorical=categorical, **kw)
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    image = ax.imshow(data, **{"cmap": cmap, "vmin": vmin, "vmax": vmax, "aspect": "auto",
                               "interpolation": "nearest", **kw})
    set_ticks(ax.set_xticks, ax.set_xticklabels, cols, max_ticks=max_ticks, rotate_over=rotate_over)
    set_ticks(ax.set_yticks, ax.set_yticklabels, rows, max_ticks=max_ticks, rotate_over=None)
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    if annotate:
        for i in range(len(rows)):
            for j in range(len(cols)):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if text_dark(float(data[i, j])) else "black")
    fig.colorbar(image, ax=ax, label=value_title)
    ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    return fig


def set_ticks(set_positions: Callable[..., Any], set_labels: Callable[..., Any], labels: Sequence[Any], *,
              max_ticks: int | None = None, rotate_over: int | None = None) -> None:
    """One tick per label (as text), none when there are more than ``max_ticks``; upright past ``rotate_over``.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().add_subplot()
    >>> set_ticks(ax.set_xticks, ax.set_xticklabels, ["a", "b"])
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['a', 'b']
    """
    if max_ticks is not None and len(labels) > max_ticks:
        return
    set_positions(range(len(labels)))
    upright = rotate_over is not None and len(labels) > rotate_over
    set_labels([str(x) for x in labels], rotation=90 if upright else 0)


def _plotly(data: np.ndarray, rows: Sequence[Any], cols: Sequence[Any], *, title: str, row_title: str,
            col_title: str, value_title: str, vmin: float | None, vmax: float | None, colorscale: str | None,
            reverse: bool | None, annotate: bool, plotly_size: tuple[int, int] | None, categorical: bool,
            **kw: Any) -> Any:
    import plotly.graph_objects as go

    if categorical:
        x, y = list(cols), list(rows)
        xaxis: dict[str, Any] = {"type": "category", "title_text": col_title}
        yaxis: dict[str, Any] = {"autorange": "reversed", "type": "category", "title_text": row_title}
    else:
        x, y = list(range(len(cols))), list(range(len(rows)))
        xaxis = {"title_text": col_title, "tickvals": x, "ticktext": [str(c) for c in cols]}
        yaxis = {"title_text": row_title, "tickvals": y, "ticktext": [str(r) for r in rows], "autorange": "reversed"}
    trace = {"z": data, "x": x, "y": y, "zmin": vmin, "zmax": vmax, "colorscale": colorscale,
             "reversescale": reverse, "text": np.round(data, 2) if annotate else None,
             "texttemplate": "%{text}" if annotate else None, "colorbar": {"title": {"text": value_title}}}
    fig = go.Figure(go.Heatmap(**{**trace, **kw}))
    if categorical:  # the same figure either way; this order keeps the JSON of each style as it always was
        fig.update_yaxes(**yaxis).update_xaxes(**xaxis)
    else:
        fig.update_xaxes(**xaxis).update_yaxes(**yaxis)
    fig.update_layout(title={"text": title})
    if plotly_size is not None:
        fig.update_layout(width=plotly_size[0], height=plotly_size[1])
    return fig
