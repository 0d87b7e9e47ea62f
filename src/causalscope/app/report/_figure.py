"""How a report holds a figure: a plotly figure as JSON drawn by ``csPlot`` at its card's width, a matplotlib
figure as an inline PNG scaled to the card.

>>> import plotly.graph_objects as go
>>> spec = plotly_spec(go.Figure(go.Bar(y=[0.1700000017881393, 2.0]), layout_width=2000, layout_height=300))
>>> spec.layout["autosize"], "width" in spec.layout, spec.height, spec.data[0]["y"]
(True, False, 300, [0.17, 2.0])
"""
from __future__ import annotations

import base64
import io
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_HEIGHT", "PlotlySpec", "is_matplotlib", "matplotlib_img", "plotly_spec", "script_json"]

#: height (px) of a plotly figure that names none (plotly's own default)
DEFAULT_HEIGHT = 450
#: significant digits kept of every float written into a figure (hover and cell text read as rounded numbers)
SIGNIFICANT = 6
#: significant digits of numbers shown as text in cells (``text`` arrays)
TEXT_DIGITS = 3
#: resolution of a matplotlib figure's PNG; it is shown at 96 px per inch, so it stays sharp on dense screens
PNG_DPI = 144


@dataclass
class PlotlySpec:
    """A plotly figure ready for the page: ``data`` and ``layout`` (no width, no template) and its height."""

    data: list[Any]
    layout: dict[str, Any]
    template: Any
    height: int


def _round(v: float, digits: int = SIGNIFICANT) -> float:
    """``v`` to ``digits`` significant digits (float32 noise gone: 0.1700000017881393 -> 0.17).

    >>> _round(0.1700000017881393), _round(123456789.0), _round(float("nan")) != _round(float("nan"))
    (0.17, 123457000.0, True)
    """
    if not math.isfinite(v) or v == 0:
        return v
    return float(f"{v:.{digits}g}")


def _tidy(obj: Any) -> Any:
    """Round every float in a JSON tree (typed arrays, ``{"dtype", "bdata"}``, are left as they are).

    >>> _tidy({"a": [0.30000001192092896, 1, True, "x"]})
    {'a': [0.3, 1, True, 'x']}
    """
    if isinstance(obj, float):
        return _round(obj)
    if isinstance(obj, list):
        return [_tidy(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _tidy(v) for k, v in obj.items()}
    return obj


def _text(v: Any) -> str:
    """A number as cell text: ``TEXT_DIGITS`` significant digits, no exponent for ordinary sizes.

    >>> [_text(x) for x in (0.1700000017881393, 1234.5, -0.000123456, 3.0, True)]
    ['0.17', '1230', '-0.000123', '3', 'True']
    """
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        return str(v)
    x = float(v)
    if not math.isfinite(x):
        return str(x)
    if x != 0 and not 1e-4 <= abs(x) < 1e6:
        return f"{x:.{TEXT_DIGITS}g}"
    return str(np.format_float_positional(x, precision=TEXT_DIGITS, unique=True, fractional=False, trim="-"))


def _typed(obj: Any) -> np.ndarray | None:
    """Decode plotly's typed-array JSON (``{"dtype": "f4", "bdata": ..., "shape": "2, 3"}``), else ``None``."""
    if not (isinstance(obj, dict) and "bdata" in obj and "dtype" in obj):
        return None
    arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
    if obj.get("shape"):
        arr = arr.reshape([int(n) for n in str(obj["shape"]).split(",")])
    return arr


def _text_cells(text: Any) -> Any:
    """A trace's ``text``: numbers (a typed array or nested lists) become rounded strings; strings stay."""
    arr = _typed(text)
    if arr is not None:
        text = arr.tolist()
    if isinstance(text, list):
        return [_text_cells(t) if isinstance(t, list) else _text(t) for t in text]
    return text


def plotly_spec(fig: Any) -> PlotlySpec:
    """The figure's JSON for the page: fixed width dropped (``autosize``), height kept (450 px when none),
    template split off (the page writes it once), floats rounded and numeric cell text formatted."""
    import plotly.io as pio

    spec = json.loads(pio.to_json(fig, validate=True, remove_uids=True))
    layout: dict[str, Any] = spec.get("layout") or {}
    template = layout.pop("template", None)
    layout.pop("width", None)
    layout["autosize"] = True
    height = int(layout.get("height") or DEFAULT_HEIGHT)
    layout["height"] = height
    data = spec.get("data") or []
    for trace in data:
        if "text" in trace:
            trace["text"] = _text_cells(trace["text"])
    return PlotlySpec(data=_tidy(data), layout=_tidy(layout), template=template, height=height)


def script_json(obj: Any) -> str:
    """Compact JSON that is safe inside an inline ``<script>``: every ``<`` is written ``\\u003c``, so no
    ``</script>`` or ``<!--`` in a title can end the script early.

    >>> script_json({"t": "</script>"})
    '{"t":"\\\\u003c/script>"}'
    """
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c")


def is_matplotlib(fig: Any) -> bool:
    """Whether ``fig`` is a matplotlib Figure (or SubFigure's parent figure).

    >>> from matplotlib.figure import Figure
    >>> is_matplotlib(Figure()), is_matplotlib({"data": []})
    (True, False)
    """
    return hasattr(fig, "savefig") and hasattr(fig, "canvas")


def matplotlib_img(fig: Any, alt: str = "") -> str:
    """An ``<img class="cs-image">`` holding the figure as an inline PNG: as wide as the card, never wider
    than its own size at 96 px per inch, and the height following the width.

    >>> from matplotlib.figure import Figure
    >>> matplotlib_img(Figure(figsize=(2, 1))).startswith('<img class="cs-image"')
    True
    """
    import html

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI, bbox_inches="tight")
    png = buf.getvalue()
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    css_w = round(width * 96 / PNG_DPI)
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f'<img class="cs-image" src="{src}" width="{width}" height="{height}" '
            f'style="max-width:{css_w}px" alt="{html.escape(alt, quote=True)}">')
