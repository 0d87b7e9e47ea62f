"""One annotated heatmap (matplotlib or plotly), shared by the result types that draw matrices."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def annotated_heatmap(data: np.ndarray, rows: Sequence[str], cols: Sequence[str], *, title: str, row_title: str,
                      col_title: str, value_title: str, vmin: float, vmax: float, cmap: str, colorscale: str,
                      reverse: bool = False, text_dark: Callable[[float], bool] = lambda v: v > 0.5,
                      annotate: bool = True, backend: str = "matplotlib", ax: Any = None,
                      size: tuple[float, float] = (7, 6), plotly_size: tuple[int, int] = (600, 520),
                      **kw: Any) -> Any:
    """Heatmap of ``data`` (rows down, cols across) with each value written in its cell when ``annotate``.

    >>> fig = annotated_heatmap(np.eye(3), ["a", "b", "c"], ["a", "b", "c"], title="t", row_title="r",
    ...                         col_title="c", value_title="v", vmin=0, vmax=1, cmap="viridis", colorscale="Viridis")

    ``text_dark(value)`` says which cells get white text (on a dark colour).
    """
    if backend == "plotly":
        import plotly.graph_objects as go

        fig = go.Figure(go.Heatmap(z=data, x=list(cols), y=list(rows), zmin=vmin, zmax=vmax, colorscale=colorscale,
                                   reversescale=reverse, text=np.round(data, 2) if annotate else None,
                                   texttemplate="%{text}" if annotate else None,
                                   colorbar={"title": {"text": value_title}}, **kw))
        fig.update_yaxes(autorange="reversed", type="category", title_text=row_title)
        fig.update_xaxes(type="category", title_text=col_title)
        fig.update_layout(title=title, width=plotly_size[0], height=plotly_size[1])
        return fig
    if backend != "matplotlib":
        raise ValueError(f"backend must be 'matplotlib' or 'plotly', got {backend!r}")
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    im = ax.imshow(data, cmap=kw.pop("cmap", cmap), vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest", **kw)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(list(cols), rotation=90 if len(cols) > 10 else 0)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(list(rows))
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    if annotate:
        for i in range(len(rows)):
            for j in range(len(cols)):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if text_dark(float(data[i, j])) else "black")
    fig.colorbar(im, ax=ax, label=value_title)
    ax.set_title(title, fontsize=10)
    return fig
