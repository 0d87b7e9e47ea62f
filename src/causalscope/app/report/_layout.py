"""The layout check: open a report in headless Chromium at given window widths and measure what was drawn.

>>> from causalscope.app.report import check_layout
>>> res = check_layout("report/causalscope-report.html")          # doctest: +SKIP
>>> res["ok"], res["problems"]                                      # doctest: +SKIP
(True, [])

At each width the page is rendered with an injected measuring script (:data:`LAYOUT_JS`) and these rules are
applied to the bounding boxes of the rendered elements (CSS pixels, a tolerance of :data:`TOLERANCE_PX`):

- the page does not scroll sideways (``scrollWidth`` of the document <= its ``clientWidth``);
- every figure drew and no JavaScript error was recorded (the report's own drawn-check);
- no figure is wider than its card: the plotly div, its SVGs and any image lie inside the card's content box,
  and the card does not scroll sideways;
- no legend overlaps a colour bar or another legend, no colour bar overlaps another or a plot area, and every
  legend and colour bar lies inside the figure;
- every plot area is at least :data:`MIN_PLOT_PX` wide and high (panels are not squeezed);
- titles, subplot titles and axis titles do not overlap one another, and no title or legend is cut off at
  the figure's edge;
- neighbouring tick labels of one axis do not overlap (unreadable labels), and none is cut off;
- an axis titled with "layer" ticks at whole layers only (no 0.5).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from . import _browser
from ._layout_js import LAYOUT_JS

__all__ = ["check_layout", "layout_problems", "WIDTHS"]

#: window widths (CSS px) the report must fit: a small laptop and a wide desktop
WIDTHS: tuple[int, ...] = (1000, 1600)
#: window height used for the measurement (only the width matters to the layout)
HEIGHT = 900
#: boxes may touch or overlap by this much (antialiasing, borders) before it counts
TOLERANCE_PX = 1.5
#: the narrowest (and lowest) plot area that still reads
MIN_PLOT_PX = 80.0

Box = Sequence[float]


def _overlap(a: Box, b: Box, tol: float = TOLERANCE_PX) -> float:
    """Area of the intersection of two [left, top, right, bottom] boxes, each shrunk by ``tol`` first.

    >>> _overlap([0, 0, 10, 10], [5, 5, 20, 20], tol=0)
    25.0
    >>> _overlap([0, 0, 10, 10], [10, 0, 20, 10], tol=0)
    0.0
    """
    w = min(a[2], b[2]) - max(a[0], b[0]) - 2 * tol
    h = min(a[3], b[3]) - max(a[1], b[1]) - 2 * tol
    return float(max(w, 0.0) * max(h, 0.0))


def _inside(inner: Box, outer: Box, tol: float = TOLERANCE_PX) -> bool:
    """Whether ``inner`` lies within ``outer`` horizontally (give or take ``tol``).

    >>> _inside([5, 0, 95, 9], [0, 0, 100, 10]), _inside([5, 0, 120, 9], [0, 0, 100, 10])
    (True, False)
    """
    return inner[0] >= outer[0] - tol and inner[2] <= outer[2] + tol


def _width(b: Box) -> float:
    return float(b[2] - b[0])


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _figure_problems(f: dict[str, Any]) -> list[str]:
    """The rules applied to one measured figure card (see the module docstring)."""
    out: list[str] = []
    name = f"figure {f['index']}"
    inner = f["inner"]
    widest = max((d["box"] for d in f["drawn"]), key=_width, default=None)
    for d in f["drawn"]:
        if not _inside(d["box"], inner):
            out.append(f"{name} is wider than its card: its {d['kind']} spans {d['box'][0]:.0f}-{d['box'][2]:.0f} px, "
                       f"the card's content {inner[0]:.0f}-{inner[2]:.0f} px")
            break
    if f["scroll_overflow"] > TOLERANCE_PX:
        out.append(f"{name}'s card scrolls sideways by {f['scroll_overflow']:.0f} px")
    frame = widest if widest is not None else inner
    boxes = [("legend", g["box"]) for g in f["legends"]] + [("colour bar", c["box"]) for c in f["colorbars"]]
    for i, (ka, a) in enumerate(boxes):
        if not _inside(a, frame) or not _inside(a, inner):
            out.append(f"{name}: a {ka} lies outside the figure ({a[0]:.0f}-{a[2]:.0f} px, figure "
                       f"{frame[0]:.0f}-{frame[2]:.0f} px, card {inner[0]:.0f}-{inner[2]:.0f} px)")
        for kb, b in boxes[i + 1:]:
            area = _overlap(a, b)
            if area > 0:
                out.append(f"{name}: a {ka} overlaps a {kb} ({area:.0f} px²)")
    for p in f["plots"]:
        w, h = _width(p["box"]), p["box"][3] - p["box"][1]
        if w < MIN_PLOT_PX or h < MIN_PLOT_PX:
            out.append(f"{name}: a plot area is squeezed to {w:.0f} x {h:.0f} px (at least {MIN_PLOT_PX:.0f} each)")
        for c in f["colorbars"]:
            if _overlap(p["box"], c["box"]) > 0:
                out.append(f"{name}: a colour bar overlaps a plot area")
    labels = ([("title", t) for t in f["titles"]] + [("annotation", t) for t in f["annotations"]]
              + [("axis title", t) for t in f["axis_titles"]])
    for (ka, a), (kb, b) in _label_pairs(labels):
        if _overlap(a["box"], b["box"]) > 0:
            out.append(f"{name}: the {ka} {_short(a['text'])!r} overlaps the {kb} {_short(b['text'])!r}")
    legend_text = [("legend entry", {"text": t, "box": g["box"]}) for g in f["legends"] for t in g["items"][:1]]
    for kind, t in labels + legend_text:
        if not _inside(t["box"], frame):
            out.append(f"{name}: the {kind} {_short(t['text'])!r} is cut off at the figure's edge "
                       f"({t['box'][0]:.0f}-{t['box'][2]:.0f} px, figure {frame[0]:.0f}-{frame[2]:.0f} px)")
    for axis in f["ticks"]:
        cut = [t for t in axis["labels"] if not _inside(t["box"], frame)]
        if cut:
            out.append(f"{name}: {len(cut)} tick labels on axis {axis['axis']} are cut off at the figure's edge "
                       f"(e.g. {_short(cut[0]['text'], 30)!r})")
        fractions = [t["text"] for t in axis["labels"] if _fractional(t["text"])]
        if "layer" in str(axis.get("title", "")).lower() and fractions:
            out.append(f"{name}: the layer axis {axis['axis']} ({_short(axis['title'], 30)!r}) has ticks between "
                       f"layers ({', '.join(fractions[:3])})")
        n = _tick_overlaps(axis["labels"], axis["dir"])
        if n:
            out.append(f"{name}: {n} of {len(axis['labels'])} tick labels on axis {axis['axis']} overlap their "
                       f"neighbour (e.g. {_short(axis['labels'][0]['text'], 30)!r})")
    return out


def _label_pairs(labels: list[tuple[str, dict[str, Any]]]) -> Iterable[tuple[tuple[str, dict[str, Any]],
                                                                          tuple[str, dict[str, Any]]]]:
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            yield a, b


def _fractional(text: str) -> bool:
    """Whether a tick label is a number that is not whole (plotly writes minus as U+2212).

    >>> [_fractional(t) for t in ("0.5", "\u22120.5", "2", "1e3", "l1", "")]
    [True, True, False, False, False, False]
    """
    try:
        v = float(text.replace("\u2212", "-"))
    except ValueError:
        return False
    return math.isfinite(v) and v != int(v)


def _tick_overlaps(labels: list[dict[str, Any]], direction: str) -> int:
    """How many neighbouring tick labels (sorted along the axis) overlap.

    >>> flat = [{"box": [0, 0, 30, 10]}, {"box": [20, 0, 50, 10]}, {"box": [60, 0, 90, 10]}]
    >>> _tick_overlaps(flat, "x")
    1

    Upright labels overlap when their boxes do. Rotated labels (``angle``, degrees) are parallel strips
    ``height`` thick: neighbours whose anchors lie ``d`` apart along the axis are ``d |sin angle|`` apart
    across the text, and overlap when that is less than the text's height.

    >>> slanted = [{"box": [0, 0, 80, 50], "angle": 30, "height": 14, "anchor": [x, 0]} for x in (0, 20, 40)]
    >>> _tick_overlaps(slanted, "x"), _tick_overlaps([dict(t, anchor=[3 * t["anchor"][0], 0]) for t in slanted], "x")
    (2, 0)
    """
    key = 0 if direction == "x" else 1
    ordered = sorted(labels, key=lambda lab: float((lab.get("anchor") or lab["box"])[key]))
    n = 0
    for a, b in zip(ordered, ordered[1:]):
        angle = math.radians(float(a.get("angle", 0.0)))
        if abs(math.sin(angle)) < 0.1 or direction != "x" or not a.get("height"):
            n += _overlap(a["box"], b["box"], tol=0.5) > 0
        else:
            d = abs(b["anchor"][0] - a["anchor"][0])
            n += d * abs(math.sin(angle)) < 0.8 * float(a["height"])
    return n


def layout_problems(measured: dict[str, Any], js_errors: str = "") -> list[str]:
    """The problems in one width's measurement (the ``data-cs-layout`` JSON); ``[]`` when the page is fine.

    >>> layout_problems({"viewport": [1000, 900], "client_width": 1000, "scroll_width": 1300, "n_figures": 0,
    ...                  "drawn": 0, "figures": []})
    ['the page scrolls sideways: 1300 px of content in a 1000 px window']
    """
    out: list[str] = []
    if measured["scroll_width"] > measured["client_width"] + TOLERANCE_PX:
        out.append(f"the page scrolls sideways: {measured['scroll_width']} px of content in a "
                   f"{measured['client_width']} px window")
    if measured.get("drawn") is not None and measured["drawn"] < measured["n_figures"]:
        out.append(f"only {measured['drawn']} of {measured['n_figures']} figures drew")
    if js_errors:
        out.append(f"JavaScript errors: {js_errors}")
    for f in measured["figures"]:
        out.extend(_figure_problems(f))
    return out


def _summary(measured: dict[str, Any]) -> dict[str, Any]:
    """Per-figure numbers worth reporting: card and figure width, narrowest plot area, legends, colour bars."""
    figs = []
    for f in measured["figures"]:
        drawn = [_width(d["box"]) for d in f["drawn"]]
        plots = [_width(p["box"]) for p in f["plots"]]
        figs.append({"index": f["index"], "card_width": round(_width(f["inner"]), 1),
                     "figure_width": round(max(drawn), 1) if drawn else 0.0,
                     "min_plot_width": round(min(plots), 1) if plots else None,
                     "legends": len(f["legends"]), "colorbars": len(f["colorbars"])})
    return {"viewport": measured["viewport"], "client_width": measured["client_width"],
            "scroll_width": measured["scroll_width"], "figures": figs}


def check_layout(path: str | os.PathLike[str], widths: Sequence[int] = WIDTHS, *,
                 timeout_s: float = 60) -> dict[str, Any]:
    """Render a report at each window width in headless Chromium and check its layout.

    >>> res = check_layout("report/causalscope-report.html")        # doctest: +SKIP
    >>> res["ok"], sorted(res["widths"])                             # doctest: +SKIP
    (True, [1000, 1600])

    Returns ``{"ok": bool, "problems": [str, ...], "widths": {width: {...}}}``; each width holds the
    ``summary`` numbers (viewport, page scroll width, per figure its card width, drawn width and narrowest
    plot area), its ``problems``, the report's ``js_errors`` and the raw ``measured`` boxes. Problems are
    prefixed with the width. Raises like :func:`~causalscope.app.report.render_dom` (no browser, a missing
    file) and ``RuntimeError`` when the measuring script published nothing.
    """
    src = pathlib.Path(path).resolve()
    if not src.is_file():
        raise FileNotFoundError(f"no such report: {src}")
    html = src.read_text(encoding="utf-8")
    script = f'<script type="text/javascript" id="cs-layout-check">{LAYOUT_JS}</script>\n'
    ends = [m.start() for m in re.finditer(r"</body\s*>", html, flags=re.IGNORECASE)]
    probed = html[:ends[-1]] + script + html[ends[-1]:] if ends else html + script
    result: dict[str, Any] = {"ok": True, "problems": [], "widths": {}}
    with tempfile.TemporaryDirectory(prefix="causalscope-layout-") as tmp:
        copy = pathlib.Path(tmp) / src.name
        copy.write_text(probed, encoding="utf-8")
        for width in widths:
            dom = _browser.render_dom(copy, timeout_s=timeout_s, window_size=(int(width), HEIGHT))
            attrs = _browser._parse(dom).body_attrs
            raw = attrs.get("data-cs-layout")
            if not raw:
                raise RuntimeError(f"the layout check published nothing at {width} px for {src} (the page's "
                                   f"scripts did not finish within chromium's time budget)")
            measured = json.loads(raw)
            errors = attrs.get("data-js-errors", "")
            problems = layout_problems(measured, errors)
            result["widths"][int(width)] = {"summary": _summary(measured), "problems": problems,
                                            "js_errors": errors, "measured": measured}
            result["problems"].extend(f"{width} px: {p}" for p in problems)
    result["ok"] = not result["problems"]
    return result
