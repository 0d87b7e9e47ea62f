"""The figure of attention patterns: a grid of heads (a row per layer), queries down, keys across, tokens on the
axes. matplotlib or plotly.

>>> fig = plot_patterns(a, None, "matplotlib", layers=[0], heads=None, prompt=None)
>>> len(fig.axes)                      # one panel per head, plus the colour bar
5
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..errors import InputError
from ..results import axis_labels, heatmap, resolve_backend

#: more positions than this: panels in a grid get no tick labels (a single panel always has them)
MAX_TICKED = 30


def _pick(labels: list, want: Any, what: str) -> list[int]:
    """Indices of the labels ``want`` (None: all) along a dim."""
    if want is None:
        return list(range(len(labels)))
    items = [want] if isinstance(want, numbers.Integral) else list(want)
    out = []
    for w in items:
        if w not in labels:
            raise InputError(f"{what}={w!r} is not in this result; it has {what} {labels}.")
        out.append(labels.index(w))
    return out


def _prompt(a: Any, prompt: int | None) -> tuple[int, str]:
    n = len(a.meta["tokens"])
    if prompt is None:
        return 0, "" if n == 1 else f" (prompt 0 of {n}: plot(prompt=i) for another)"
    if isinstance(prompt, bool) or not isinstance(prompt, int) or not -n <= prompt < n:
        raise InputError(f"prompt must be an int from 0 to {n - 1}, got {prompt!r}.")
    return prompt % n, "" if n == 1 else f" (prompt {prompt % n})"


def plot_patterns(a: Any, ax: Any, backend: str, layers: Any, heads: Any, prompt: int | None, **kw: Any) -> Any:
    """See :meth:`AttentionPatterns.plot`."""
    backend = resolve_backend(backend)
    p, note = _prompt(a, prompt)
    n = a.lengths[p]
    values = a.values if "prompt" not in a.dims else a.values[..., p]
    rows = _pick(list(a.coords["layer"]), layers, "layers")
    cols = _pick(list(a.coords["head"]), heads, "heads")
    data = values[rows][:, cols][:, :, :n, :n].float().numpy()            # (rows, cols, n, n)
    toks = a.tokens[p]
    q_labels = axis_labels(list(range(n)), {"token": ("query", toks)}, "query")
    k_labels = axis_labels(list(range(n)), {"token": ("key", toks)}, "key")
    names = [[f"L{a.coords['layer'][r]} H{a.coords['head'][c]}" for c in cols] for r in rows]
    title = f"attention patterns{note}"
    if len(rows) == 1 and len(cols) == 1:
        return heatmap(data[0, 0], q_labels, k_labels, title=f"{names[0][0]}{note}", row_title="query",
                       col_title="key", value_title="attention", backend=backend, ax=ax, vmin=0.0, vmax=1.0,
                       cmap="Blues", colorscale="Blues", size=(max(4.0, 0.35 * n + 2), max(3.5, 0.3 * n + 1.5)),
                       rotate_over=4, title_size=None, categorical=False, **kw)
    if ax is not None:
        raise InputError("ax draws a single panel: pick one layer and one head (plot(layers=[l], heads=[h], ax=ax)), "
                         "or leave ax out for the grid.")
    if backend == "plotly":
        return _plotly(data, names, q_labels, k_labels, title, **kw)
    return _matplotlib(data, names, q_labels, k_labels, title, **kw)


def _matplotlib(data: np.ndarray, names: list[list[str]], q_labels: list[str], k_labels: list[str], title: str,
                **kw: Any) -> Any:
    from matplotlib.figure import Figure

    R, C, n = data.shape[0], data.shape[1], data.shape[2]
    side = max(1.6, 0.16 * n)
    fig = Figure(figsize=(side * C + 1.5, side * R + 1.0), layout="constrained")
    axes = fig.subplots(R, C, squeeze=False)
    ticked = n <= MAX_TICKED
    image: Any = None
    for r in range(R):
        for c in range(C):
            ax = axes[r][c]
            image = ax.imshow(data[r, c], **{"vmin": 0.0, "vmax": 1.0, "cmap": "Blues", "aspect": "equal",
                                            "interpolation": "nearest", **kw})
            ax.set_title(names[r][c], fontsize=8)
            ax.set_xticks(list(range(n)) if ticked and r == R - 1 else [])
            ax.set_yticks(list(range(n)) if ticked and c == 0 else [])
            if ticked and r == R - 1:
                ax.set_xticklabels(k_labels, rotation=90, fontsize=6)
            if ticked and c == 0:
                ax.set_yticklabels(q_labels, fontsize=6)
    fig.colorbar(image, ax=axes, label="attention", shrink=0.8)
    fig.suptitle(title)
    return fig


def _plotly(data: np.ndarray, names: list[list[str]], q_labels: list[str], k_labels: list[str], title: str,
            **kw: Any) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    R, C, n = data.shape[0], data.shape[1], data.shape[2]
    fig = make_subplots(rows=R, cols=C, subplot_titles=[x for row in names for x in row],
                        horizontal_spacing=min(0.04, 0.5 / max(C, 1)), vertical_spacing=min(0.08, 0.5 / max(R, 1)))
    custom = np.array([[f"{q} → {k}" for k in k_labels] for q in q_labels], dtype=object)
    for r in range(R):
        for c in range(C):
            fig.add_trace(go.Heatmap(**{"z": data[r, c], "x": list(range(n)), "y": list(range(n)),
                                        "coloraxis": "coloraxis", "customdata": custom,
                                        "hovertemplate": f"{names[r][c]}<br>%{{customdata}}: %{{z:.3f}}<extra></extra>",
                                        **kw}), r + 1, c + 1)
            fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=list(range(n)),
                             ticktext=q_labels if c == 0 else [""] * n, row=r + 1, col=c + 1)
            fig.update_xaxes(tickmode="array", tickvals=list(range(n)),
                             ticktext=k_labels if r == R - 1 else [""] * n, row=r + 1, col=c + 1)
    fig.update_layout(title={"text": title}, coloraxis={"colorscale": "Blues", "cmin": 0.0, "cmax": 1.0,
                                                        "colorbar": {"title": {"text": "attention"}}},
                      height=max(300, R * max(180, 18 * n) + 120))  # room for one token label per row
    fig.update_yaxes(tickfont={"size": 10})
    fig.update_xaxes(tickfont={"size": 10})
    return fig
