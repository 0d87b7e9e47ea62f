"""How results look in Jupyter: a compact HTML table with the result's figure (``_repr_html_``), and the inline
display of the matplotlib figures ``plot()`` returns in a fresh kernel.

>>> import torch
>>> from causalscope.results import LabelledArray
>>> page = result_html(LabelledArray(torch.tensor([0.17, 2.0]), ("layer",), name="<effect>"), None)
>>> "&lt;effect&gt;" in page and "<effect>" not in page and "0.17" in page
True

Every piece of text a result holds (its name, dims, labels, settings) is escaped: results hold user strings.
"""
from __future__ import annotations

import base64
import io
import math
import sys
from html import escape
from typing import Any

import numpy as np

#: the most rows and columns of values shown; longer dims show their first and last ones around "…"
MAX_ROWS, MAX_COLS = 8, 10
#: the most labels of a dim listed in the coordinates summary, and the most characters of a setting
MAX_LABELS, MAX_CHARS = 8, 120
#: settings shown first, when the result has them
KEY_META = ("method", "model", "metric", "site", "sites", "kind", "direction")
_STYLE = ("font-family:var(--jp-content-font-family,sans-serif);font-size:12px;line-height:1.35;"
          "max-width:100%;overflow-x:auto")
_HEAD = "text-align:left"
_TEXT = "text-align:left;font-weight:normal"


def result_html(a: Any, figure: str | None = "matplotlib") -> str:
    """An HTML view of labelled array ``a``: dims, coordinates, key settings, a few values and its figure.

    ``figure``: the backend of ``a.plot()`` to show ("matplotlib": an inline PNG, "plotly": an interactive
    figure that loads plotly.js from its CDN) or None for no figure. A plot that fails shows why instead.
    """
    dims = ", ".join(f"{escape(d)}: {n}" for d, n in zip(a.dims, a.shape))
    dtype = str(a.values.dtype).removeprefix("torch.")
    head = (f"<div><b>{escape(type(a).__name__)}</b> <code>{escape(repr(a.name))}</code> "
            f"({dims}) {escape(dtype)}</div>")
    parts = [head, _settings(a.meta), _coords(a), _values(a), _figure(a, figure)]
    return f'<div class="causalscope-result" style="{_STYLE}">{"".join(parts)}</div>'


def show_figures_inline() -> bool:
    """In a Jupyter kernel, show the matplotlib figures that ``plot()`` returns as images without
    ``%matplotlib inline``; returns whether it registered the display.

    Jupyter shows a returned ``Figure`` only once a PNG printer is registered for the type, which
    ``matplotlib_inline`` does when pyplot is imported under the kernel's inline backend. causalscope draws
    without pyplot (figures are plain objects, never shown or closed behind your back), so it registers
    the same printer when none is there. A printer already registered (``%matplotlib inline``, another
    backend's) is left alone, and outside IPython nothing happens.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    formatters = getattr(getattr(shell, "display_formatter", None), "formatters", None)
    png = formatters.get("image/png") if isinstance(formatters, dict) else None
    if png is None or "matplotlib.figure.Figure" in png:
        return False
    png.for_type_by_name("matplotlib.figure", "Figure", _figure_png)
    return True


def _figure_png(fig: Any) -> bytes | None:
    """PNG bytes of a figure as the inline backend writes them (tight box); None for a figure without axes."""
    if not fig.axes:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _text(x: Any, limit: int = MAX_CHARS) -> str:
    s = x if isinstance(x, str) else repr(x)
    return escape(s if len(s) <= limit else s[: limit - 1] + "…")


def _settings(meta: dict[str, Any]) -> str:
    keys = [k for k in KEY_META if meta.get(k) is not None]
    if not keys:
        return ""
    rows = "".join(f'<tr><th style="{_HEAD}">{escape(k)}</th><td style="{_TEXT}">'
                   f"{_text(meta[k])}</td></tr>" for k in keys)
    rest = len([k for k in meta if k not in keys])
    more = f'<tr><td colspan="2" style="{_TEXT}">… {rest} more in <code>.meta</code></td></tr>'
    return f'<table style="margin:2px 0">{rows}{more if rest else ""}</table>'


def _labels(labels: list[Any]) -> str:
    shown = labels if len(labels) <= MAX_LABELS else labels[: MAX_LABELS // 2] + labels[-(MAX_LABELS // 2):]
    texts = [_text(repr(x), 24) for x in shown]  # quoted: a token "," or " " stays readable
    if len(labels) > MAX_LABELS:
        texts.insert(MAX_LABELS // 2, "…")
    return ", ".join(texts)


def _coords(a: Any) -> str:
    rows = [f'<tr><th style="{_HEAD}">{escape(d)}</th><td style="{_TEXT}">{len(a.coords[d])}'
            f'</td><td style="{_TEXT}">{_labels(a.coords[d])}</td></tr>' for d in a.dims]
    rows += [f'<tr><th style="{_HEAD}">{escape(k)} <i>({escape(d)})</i></th><td style="{_TEXT}">'
             f'{len(c)}</td><td style="{_TEXT}">{_labels(c)}</td></tr>'
             for k, (d, c) in a.aux_coords.items()]
    title = f'<tr><th style="{_HEAD}">coords</th><th></th><th></th></tr>'
    return f'<table style="margin:2px 0">{title}{"".join(rows)}</table>' if rows else ""


def _number(x: Any) -> str:
    """A value rounded to 4 significant digits (float32 noise such as 0.1700000017881393 reads 0.17)."""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (complex, np.complexfloating)):
        return f"{complex(x):.4g}"
    f = float(x)
    return "nan" if math.isnan(f) else f"{f:.4g}"


def _pick(n: int, most: int) -> list[int | None]:
    """Indices to show of a dim of ``n``: all, or the first and last ones around a None ("…")."""
    if n <= most:
        return list(range(n))
    half = most // 2
    return [*range(half), None, *range(n - (most - half), n)]


def _label(a: Any, dim: str, i: int | None) -> str:
    """The label of element ``i`` of ``dim`` in the values table, with its first auxiliary label (a token) if any."""
    if i is None:
        return "…"
    aux = [c[i] for d, c in a.aux_coords.values() if d == dim]
    extra = f"<br><small>{_text(repr(aux[0]), 16)}</small>" if aux and aux[0] is not None else ""
    return _text(a.coords[dim][i], 16) + extra


def _values(a: Any) -> str:
    full = data = a.numpy()
    if data.size == 0:
        return "<div>(no values)</div>"
    caption = ""
    if data.ndim > 2:  # the first slice along the leading dims
        lead = a.dims[:-2]
        caption = "at " + ", ".join(f"{escape(d)}={_text(a.coords[d][0], 24)}" for d in lead)
        data = data[(0,) * len(lead)]
    if data.ndim == 0:
        return f'<div style="margin:2px 0">value: <b>{_number(data[()])}</b></div>'
    grid = data.reshape(1, -1) if data.ndim == 1 else data
    row_dim = None if data.ndim == 1 else a.dims[-2]
    col_dim = a.dims[-1]
    rows, cols = _pick(grid.shape[0], MAX_ROWS), _pick(grid.shape[1], MAX_COLS)
    corner = f"{escape(row_dim)} \\ {escape(col_dim)}" if row_dim else escape(col_dim)
    head = "".join(f"<th>{_label(a, col_dim, j)}</th>" for j in cols)
    body = []
    for i in rows:
        label = _label(a, row_dim, i) if row_dim else escape(a.name)
        cells = "".join(f'<td>{"…" if i is None or j is None else _number(grid[i, j])}</td>'
                        for j in cols)
        body.append(f'<tr><th style="{_HEAD}">{label}</th>{cells}</tr>')
    stats = ""
    finite = full[np.isfinite(full)] if full.dtype.kind in "fiu" else full[:0]
    if finite.size:  # over every value, not only those shown
        stats = (f'<div style="margin:2px 0;color:#555">min {_number(finite.min())} · mean '
                 f"{_number(finite.astype(np.float64).mean())} · max {_number(finite.max())}</div>")
    cap = f'<caption style="text-align:left;color:#555">{caption}</caption>' if caption else ""
    return (f'<table style="margin:2px 0;border-collapse:collapse">{cap}<tr><th style="{_HEAD}">{corner}</th>'
            f"{head}</tr>{''.join(body)}</table>{stats}")


def _figure(a: Any, backend: str | None) -> str:
    if backend is None:
        return ""
    try:
        fig = a.plot(backend=backend)
        if backend == "plotly" and hasattr(fig, "to_html"):
            return str(fig.to_html(full_html=False, include_plotlyjs="cdn", default_width="100%"))
        png = _figure_png(fig) if hasattr(fig, "savefig") else None
    except Exception as exc:  # a repr never raises: say why there is no figure
        return f'<div style="color:#555">no figure: {_text(f"{type(exc).__name__}: {exc}", 200)}</div>'
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%;height:auto" alt="{_text(a.name)}"/>'
