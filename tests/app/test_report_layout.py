"""The report's layout: responsive figures, a table of contents, and the layout check in headless Chromium.

The browser tests render at 1000 px and 1600 px. A clean report passes; a report with planted broken figures
(a fixed 2000 px plotly figure, a legend on a colour bar, squeezed panels, overlapping tick labels, a page that
scrolls sideways, a JavaScript error) fails, each problem named with its figure. The rules themselves are also
tested on hand-made measurements, without a browser.
"""
from __future__ import annotations

import json
import pathlib
import re
import time

import numpy as np
import plotly.graph_objects as go
import pytest
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from causalscope.app.report import WIDTHS, Report, check_layout, check_report, find_chromium, layout_problems

BROWSER_BUDGET_S = 40.0  # both widths, one report


@pytest.fixture()
def chromium() -> str:
    exe = find_chromium()
    if exe is None:
        pytest.fail("chromium is required for the layout tests (apt-get install chromium; `make chromium`).")
    return exe


def _heatmap() -> go.Figure:
    z = np.array([[0.1700000017881393, 0.5, 0.9], [0.3, -0.2, 0.0]], dtype=np.float32)
    return go.Figure(go.Heatmap(z=z, text=np.round(z, 2), texttemplate="%{text}", colorscale="RdBu"),
                     layout={"title": {"text": "a heatmap"}, "width": 1260, "height": 360})


def _mpl() -> Figure:
    fig = Figure(figsize=(6, 3), layout="constrained")
    fig.add_subplot().plot([0, 1, 2], [1, 0, 2])
    return fig


def _clean_report() -> Report:
    return (Report("Layout", meta={"seed": 0})
            .section("Plotly", "A heatmap made 1260 px wide by its author.")
            .figure(_heatmap(), caption="a heatmap")
            .figure(go.Figure(go.Scatter(x=[0, 1, 2, 3], y=[0.0, 0.4, 0.35, 0.8], name="effect"),
                              layout={"showlegend": True}), caption="a line")
            .section("Matplotlib")
            .figure(_mpl(), caption="an image")
            .section("Numbers")
            .table({"layer": [0, 1], "effect": [0.1, 0.2]}))


def _plotly_calls(html: str) -> list[tuple[dict, dict]]:
    """The (data, layout) JSON of every figure in a saved report."""
    out = []
    for m in re.finditer(r'csPlot\("cs-fig-\d+", (.*?)\);</script>', html):
        data, layout, _ = json.loads("[" + m.group(1) + "]")
        out.append((data, layout))
    return out


# -- static: what the page holds ---------------------------------------------------------------------------------------
def test_figures_follow_the_card_width_and_read_as_rounded_numbers():
    html = _clean_report().html()
    calls = _plotly_calls(html)
    assert len(calls) == 2
    for _, layout in calls:
        assert "width" not in layout and layout["autosize"] is True and "template" not in layout
    assert calls[0][1]["height"] == 360 and calls[1][1]["height"] == 450  # kept, or plotly's default
    assert calls[0][0][0]["text"] == [["0.17", "0.5", "0.9"], ["0.3", "-0.2", "0"]]  # not 0.1700000017881393
    assert "0.1700000017881393" not in html
    assert html.count('"responsive": true') == 1 and html.count("plotly.js v") == 1
    assert html.count("window.__csTemplates = [") == 1  # the shared plotly template, written once
    assert re.search(r'<img class="cs-image" src="data:image/png;base64,[A-Za-z0-9+/=]+" width="\d+" height="\d+" '
                     r'style="max-width:\d+px" alt="an image">', html)


def test_table_of_contents_and_numbered_figures():
    rep = _clean_report()
    html = rep.html()
    toc = re.search(r'(?s)<nav class="cs-toc" aria-label="Contents">(.*?)</nav>', html)
    assert toc is not None
    links = re.findall(r'<li><a href="#(section-\d+)">([^<]+)</a>', toc.group(1))
    assert [t for _, t in links] == ["Plotly", "Matplotlib", "Numbers"]
    for anchor, _ in links:
        assert f'<section class="cs-section" id="{anchor}">' in html
    assert "(2 figures)" in toc.group(1) and "(1 figure)" in toc.group(1)
    assert [int(n) for n in re.findall(r'<span class="cs-figno">Figure (\d+)\.</span>', html)] == [1, 2, 3]
    assert 'id="figure-3" data-figure-index="2"' in html
    assert "cs-toc" not in Report("no sections").text("prose only").html().split("<body>")[1]


def test_size_summary_splits_plotly_js_from_the_figures(tmp_path):
    rep = _clean_report()
    path = rep.save(tmp_path / "r.html")
    sizes = rep.sizes
    assert sizes["total"] == path.stat().st_size
    assert sizes["plotly_js"] > 3_000_000 and sizes["figures"] < 200_000
    assert sizes["total"] == sizes["plotly_js"] + sizes["figures"] + sizes["other"]
    assert rep.size_summary().startswith("3 figures, ") and "plotly.js" in rep.size_summary()


# -- the rules, on hand-made measurements (no browser) ----------------------------------------------------------------
def _measured(**figure) -> dict:
    base = {"index": 0, "card": [28, 0, 972, 500], "inner": [35, 0, 965, 500], "scroll_overflow": 0,
            "drawn": [{"kind": "svg", "box": [35, 0, 965, 450]}], "legends": [], "colorbars": [],
            "plots": [{"name": "xy", "box": [100, 50, 800, 400]}], "titles": [], "annotations": [],
            "axis_titles": [], "ticks": []}
    return {"viewport": [1000, 900], "client_width": 1000, "scroll_width": 1000, "n_figures": 1, "drawn": 1,
            "figures": [{**base, **figure}]}


def test_rules_on_measurements():
    assert layout_problems(_measured()) == []
    wide = layout_problems(_measured(drawn=[{"kind": "div", "box": [35, 0, 2035, 450]}], scroll_overflow=1070))
    assert any("figure 0 is wider than its card" in p for p in wide)
    assert any("scrolls sideways by 1070 px" in p for p in wide)
    on_bar = layout_problems(_measured(legends=[{"box": [880, 60, 960, 120], "items": ["a"]}],
                                       colorbars=[{"box": [900, 50, 950, 400]}]))
    assert on_bar == ["figure 0: a legend overlaps a colour bar (2679 px²)"]
    touching = _measured(legends=[{"box": [880, 60, 900, 120], "items": ["a"]}],
                         colorbars=[{"box": [900, 50, 950, 400]}])
    assert layout_problems(touching) == []  # boxes that only touch do not overlap
    assert "squeezed to 18 x 240 px" in layout_problems(_measured(plots=[{"name": "xy", "box": [100, 0, 118, 240]}]))[0]
    titles = [{"text": "noise", "box": [100, 10, 160, 30]}, {"text": "zero", "box": [150, 10, 200, 30]}]
    assert "the annotation 'noise' overlaps the annotation 'zero'" in layout_problems(_measured(annotations=titles))[0]
    cut = layout_problems(_measured(titles=[{"text": "a very long title", "box": [40, 5, 1200, 25]}]))
    assert "cut off at the figure's edge" in cut[0]
    flat = [{"text": str(i), "box": [100 + 20 * i, 410, 130 + 20 * i, 424], "angle": 0, "height": 14,
             "anchor": [115 + 20 * i, 420]} for i in range(5)]
    assert "4 of 5 tick labels on axis xy:x overlap" in layout_problems(_measured(ticks=[
        {"axis": "xy:x", "dir": "x", "labels": flat}]))[0]
    slanted = [dict(t, angle=30, box=[100 + 60 * i, 410, 180 + 60 * i, 460], anchor=[100 + 60 * i, 410])
               for i, t in enumerate(flat)]  # 60 px apart at 30 degrees: 30 px across the text, 14 px tall
    assert layout_problems(_measured(ticks=[{"axis": "xy:x", "dir": "x", "labels": slanted}])) == []
    halves = [{"text": t, "box": [100 + 50 * i, 410, 120 + 50 * i, 424]} for i, t in enumerate(["\u22120.5", "0", "0.5"])]
    assert layout_problems(_measured(ticks=[{"axis": "xy:x", "dir": "x", "title": "single restored layer",
                                             "labels": halves}])) == [
        "figure 0: the layer axis xy:x ('single restored layer') has ticks between layers (\u22120.5, 0.5)"]
    assert layout_problems(_measured(ticks=[{"axis": "xy:x", "dir": "x", "title": "strength", "labels": halves}])) == []
    page = layout_problems({**_measured(), "scroll_width": 1300}, js_errors="Uncaught Error: boom")
    assert page[0] == "the page scrolls sideways: 1300 px of content in a 1000 px window"
    assert page[1] == "JavaScript errors: Uncaught Error: boom"


# -- in the browser ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_browser_clean_report_fits_at_both_widths(chromium, tmp_path):
    path = _clean_report().save(tmp_path / "clean.html")
    t0 = time.monotonic()
    res = check_layout(path)
    assert time.monotonic() - t0 < BROWSER_BUDGET_S
    assert res["ok"] and res["problems"] == [], res["problems"]
    assert sorted(res["widths"]) == sorted(WIDTHS) == [1000, 1600]
    for width, one in res["widths"].items():
        s = one["summary"]
        assert s["viewport"][0] == width and s["scroll_width"] <= s["client_width"]
        cards = [f["card_width"] for f in s["figures"]]
        assert len(cards) == 3 and len(set(cards)) == 1
        plotly_figs = s["figures"][:2]
        # the heatmap its author made 1260 px wide fills its card instead, at both widths
        assert all(abs(f["figure_width"] - f["card_width"]) <= 1 for f in plotly_figs), s["figures"]
        assert s["figures"][2]["figure_width"] <= s["figures"][2]["card_width"]  # the matplotlib image
    assert check_report(path) == {"n_figures": 3, "drawn": 3, "js_errors": ""}


def _broken_report(tmp_path: pathlib.Path) -> pathlib.Path:
    """Figure 0 is fine; 1 has its legend on its colour bar (plotly puts both at x = 1.02 by default); 2 has
    twelve panels in one row; 3 has sixty long upright tick labels; 4 is a plotly figure fixed at 2000 px,
    written straight into the page (a Report drops fixed widths); then an element that makes the page scroll
    sideways and a script that throws."""
    legend_on_bar = go.Figure([go.Heatmap(z=[[0, 1], [1, 0]]), go.Scatter(y=[0, 1], name="first series"),
                               go.Scatter(y=[1, 0], name="second series")])
    squeezed = make_subplots(rows=1, cols=12, subplot_titles=[f"corruption number {i}" for i in range(12)])
    for i in range(12):
        squeezed.add_trace(go.Scatter(y=[0, 1]), 1, i + 1)
    crowded = go.Figure(go.Bar(x=[f"site.{i}.mlp.out" for i in range(60)], y=list(range(60))))
    crowded.update_xaxes(tickangle=0)
    html = (Report("Broken").section("Figures").figure(_heatmap()).figure(legend_on_bar).figure(squeezed)
            .figure(crowded).html())
    planted = ('<div class="cs-figure" id="figure-5" data-figure-index="4">'
               '<div id="cs-wide" class="plotly-graph-div" style="height:300px; width:2000px;"></div>'
               '<script>Plotly.newPlot("cs-wide", [{"type": "bar", "y": [1, 2]}], {"width": 2000, "height": 300});'
               "</script></div>\n"
               '<div style="width:2400px; height:10px"></div>\n'
               '<script>throw new Error("planted error");</script>\n</main>')
    html = html.replace('data-n-figures="4"', 'data-n-figures="5"', 1).replace("</main>", planted, 1)
    path = tmp_path / "broken.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.mark.slow
def test_browser_check_fails_on_planted_broken_figures(chromium, tmp_path):
    path = _broken_report(tmp_path)
    t0 = time.monotonic()
    res = check_layout(path)
    assert time.monotonic() - t0 < BROWSER_BUDGET_S
    assert not res["ok"]
    for width in WIDTHS:
        problems = res["widths"][width]["problems"]
        text = "\n".join(problems)
        assert not any(p.startswith("figure 0") for p in problems), text  # the control figure is fine
        assert "figure 1: a legend overlaps a colour bar" in text
        assert re.search(r"figure 2: a plot area is squeezed to \d+ x \d+ px", text)
        assert "figure 2: the annotation 'corruption number 0' overlaps the annotation 'corruption number 1'" in text
        assert re.search(r"figure 3: \d+ of \d+ tick labels on axis xy:x overlap their neighbour", text)
        assert re.search(r"figure 4 is wider than its card: its div spans \d+-\d+ px", text)
        assert "the page scrolls sideways: " in text
        assert "JavaScript errors: Uncaught Error: planted error" in text
        assert all(f"{width} px: {p}" in res["problems"] for p in problems)
    assert check_report(path)["drawn"] == 5  # every figure drew: only the layout check sees these problems
