"""The one heatmap (matplotlib or plotly) behind every matrix plot: labelled arrays, similarity and steering maps.

>>> import numpy as np
>>> fig = heatmap(np.eye(3), ["a", "b", "c"], ["a", "b", "c"], title="identity", annotate=True)
>>> fig.axes[0].get_title()
'identity'
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._figures import resolve_backend

__all__ = ["MAX_LABEL", "MAX_TICK_TEXT", "heatmap", "integer_axis", "set_ticks", "short_label"]

#: tick labels longer than this (characters) are shortened in plotly heatmaps
MAX_LABEL = 24
#: matplotlib tick labels longer than this (characters) are shortened
MAX_TICK_TEXT = 40


def index_runs(text: str) -> str:
    """Comma lists of integers in ``text`` with runs written ``a-b`` (two in a row stay ``a,b``).

    >>> index_runs("act1[neurons=0,1,2,3,7,8]")
    'act1[neurons=0-3,7,8]'
    """
    import re

    def runs(m: re.Match[str]) -> str:
        nums = [int(x) for x in m.group(0).split(",")]
        out, start = [], 0
        for i in range(1, len(nums) + 1):
            if i == len(nums) or nums[i] != nums[i - 1] + 1:
                a, b = nums[start], nums[i - 1]
                out.append(str(a) if a == b else f"{a},{b}" if b == a + 1 else f"{a}-{b}")
                start = i
        return ",".join(out)

    return re.sub(r"\d+(?:,\d+)+", runs, text)


def short_label(label: Any, limit: int = MAX_LABEL) -> str:
    """``label`` as text of at most ``limit`` characters: runs of consecutive integers in it are written
    ``a-b`` first, then the middle is cut (``…``).

    >>> short_label("act1[neurons=0,1,2,3,4,5,6,7,8,9,10]")
    'act1[neurons=0-10]'
    >>> short_label("a.very.long.module.path.with.many.parts.mlp")
    'a.very.long…ny.parts.mlp'
    """
    text = str(label)
    if len(text) <= limit:
        return text

    text = index_runs(text)
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def heatmap(data: np.ndarray, rows: Sequence[Any], cols: Sequence[Any], *, title: str = "", row_title: str = "",
            col_title: str = "", value_title: str = "", backend: str | None = None, ax: Any = None,
            vmin: float | None = None, vmax: float | None = None, cmap: str | None = None,
            colorscale: str | None = None, reverse: bool | None = None, annotate: bool = False,
            text_dark: Callable[[float], bool] = lambda v: v > 0.5, size: tuple[float, float] = (7, 6),
            plotly_size: tuple[int | None, int] | None = None, max_ticks: int | None = None, rotate_over: int = 10,
            title_size: float | None = 10, categorical: bool = True, **kw: Any) -> Any:
    """Heatmap of ``data`` (``rows`` down, ``cols`` across); a matplotlib Figure or, with ``backend="plotly"``,
    a plotly ``go.Figure``.

    >>> fig = heatmap(np.eye(2), ["x", "y"], ["p", "q"], value_title="v", backend="plotly")
    >>> fig.data[0].type
    'heatmap'

    Colours: ``vmin`` / ``vmax`` bound the scale, ``cmap`` (matplotlib) or ``colorscale`` (plotly, reversed
    with ``reverse``) name it; ``None`` leaves the library's default. ``annotate`` writes each value in its cell,
    white where ``text_dark(value)`` says the colour is dark. matplotlib: a new ``size`` figure unless ``ax`` is
    given; a tick per cell, or every k-th one so that at most ``max_ticks`` per axis are drawn (all when ``None``),
    always at whole cells; column labels turned upright past ``rotate_over`` columns, labels past
    :data:`MAX_TICK_TEXT` characters shortened; the title in ``title_size`` points (``None``: matplotlib's).
    plotly: the figure has no fixed width (it follows its container); ``plotly_size`` is (width, height) in
    pixels, of which only the height is used (the width, ``None`` or a number, is ignored). ``categorical`` axes take
    the labels as categories, otherwise cells sit at positions 0, 1, ... with the labels as tick text
    (repeated or numeric labels stay apart; at most ``max_ticks`` ticks). Tick labels longer than
    :data:`MAX_LABEL` characters are shortened in the middle (the hover shows them whole); cell text and hover
    values are rounded to 2 and 4 significant decimals. Extra keywords go to ``ax.imshow`` or ``go.Heatmap``.
    """
    if resolve_backend(backend) == "plotly":
        return _plotly(data, rows, cols, title=title, row_title=row_title, col_title=col_title,
                       value_title=value_title, vmin=vmin, vmax=vmax, colorscale=colorscale, reverse=reverse,
                       annotate=annotate, plotly_size=plotly_size, categorical=categorical, max_ticks=max_ticks,
                       **kw)
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
              max_ticks: int | None = None, rotate_over: int | None = None, limit: int = MAX_TICK_TEXT) -> None:
    """A tick per label (as text, shortened past ``limit`` characters) at 0, 1, ...; past ``max_ticks`` labels
    every k-th one (k as small as keeps them within ``max_ticks``); upright past ``rotate_over`` ticks.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().add_subplot()
    >>> set_ticks(ax.set_xticks, ax.set_xticklabels, ["a", "b"])
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['a', 'b']
    >>> set_ticks(ax.set_xticks, ax.set_xticklabels, [f"t{i}" for i in range(10)], max_ticks=4)
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['t0', 't3', 't6', 't9']
    """
    shown = _every(len(labels), max_ticks)
    set_positions(shown)
    upright = rotate_over is not None and len(shown) > rotate_over
    set_labels([short_label(labels[i], limit) for i in shown], rotation=90 if upright else 0)


def _every(n: int, most: int | None) -> list[int]:
    """0 .. n-1, or every k-th of them with k the smallest step that shows at most ``most``."""
    step = 1 if most is None or n <= most else math.ceil(n / max(1, most))
    return list(range(0, n, step))


def integer_axis(values: Sequence[Any], most: int = 10) -> dict[str, Any] | None:
    """Plotly axis settings that tick whole numbers only, for an axis whose ``values`` are all integers (None
    otherwise): ticks 1 apart, or a whole step that shows about ``most`` of them.

    >>> integer_axis([0, 1, 2, 3])
    {'tickmode': 'linear', 'tick0': 0, 'dtick': 1}
    >>> integer_axis([0, 12, 24, 47]), integer_axis([0.5, 1.0])
    ({'tickmode': 'linear', 'tick0': 0, 'dtick': 5}, None)

    (plotly's own ticks on a short integer axis fall at 0, 0.5, 1, ...; matplotlib's ``MaxNLocator(integer=True)``
    does the same job there.)
    """
    nums = [v for v in values if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)]
    if len(nums) != len(values) or not nums or not all(math.isfinite(v) and float(v) == int(v) for v in nums):
        return None
    lo, hi = int(min(nums)), int(max(nums))
    return {"tickmode": "linear", "tick0": lo, "dtick": max(1, math.ceil((hi - lo) / max(1, most)))}


def _plotly(data: np.ndarray, rows: Sequence[Any], cols: Sequence[Any], *, title: str, row_title: str,
            col_title: str, value_title: str, vmin: float | None, vmax: float | None, colorscale: str | None,
            reverse: bool | None, annotate: bool, plotly_size: tuple[int | None, int] | None, categorical: bool,
            max_ticks: int | None = None, **kw: Any) -> Any:
    import plotly.graph_objects as go

    short = any(len(str(c)) > MAX_LABEL for c in list(cols) + list(rows))
    if categorical and not short:
        x, y = list(cols), list(rows)
        xaxis: dict[str, Any] = {"type": "category", "title_text": col_title}
        yaxis: dict[str, Any] = {"autorange": "reversed", "type": "category", "title_text": row_title}
    else:  # cells at 0, 1, ...: tick text may be shortened (and repeat) without merging cells
        x, y = list(range(len(cols))), list(range(len(rows)))
        xs, ys = _every(len(cols), max_ticks), _every(len(rows), max_ticks)
        xaxis = {"title_text": col_title, "tickmode": "array", "tickvals": xs,
                 "ticktext": [short_label(cols[i]) for i in xs]}
        yaxis = {"title_text": row_title, "tickmode": "array", "tickvals": ys,
                 "ticktext": [short_label(rows[i]) for i in ys], "autorange": "reversed"}
    # hover: the full labels and the value to 4 decimals; cells: the value to 2 decimals, as text (a float32
    # rounded by numpy and printed by JavaScript reads 0.1700000017881393)
    full = np.array([[f"{r}, {c}" for c in cols] for r in rows], dtype=object)
    trace = {"z": data, "x": x, "y": y, "zmin": vmin, "zmax": vmax, "colorscale": colorscale,
             "reversescale": reverse, "text": [[f"{v:.2f}" for v in row] for row in np.asarray(data, dtype=float)]
             if annotate else None, "customdata": full,
             "hovertemplate": f"%{{customdata}}<br>{value_title or 'value'}: %{{z:.4~g}}<extra></extra>",
             "texttemplate": "%{text}" if annotate else None, "colorbar": {"title": {"text": value_title}}}
    fig = go.Figure(go.Heatmap(**{**trace, **kw}))
    if categorical:  # the same figure either way; this order keeps the JSON of each style as it always was
        fig.update_yaxes(**yaxis).update_xaxes(**xaxis)
    else:
        fig.update_xaxes(**xaxis).update_yaxes(**yaxis)
    fig.update_layout(title={"text": title})
    if plotly_size is not None:
        fig.update_layout(height=plotly_size[1])
    return fig
