"""Tests for the self-contained HTML report and its headless-browser check.

>>> # run with:  PYTHONPATH=src .venv/bin/python -m pytest tests/app/test_report.py -q
"""

from __future__ import annotations

import pathlib
import re
import time

import pandas as pd
import plotly.graph_objects as go
import pytest

from causalscope.app.report import Report, _browser, check_report, find_chromium, render_dom

BROWSER_TEST_BUDGET_S = 20.0


def _three_figure_report() -> Report:
    """A report with a heatmap, a line and a bar figure plus a table.

    >>> _three_figure_report().n_figures
    3
    """
    heat = go.Figure(go.Heatmap(z=[[0.1, 0.5, 0.9], [0.3, -0.2, 0.0]], colorscale="RdBu"))
    line = go.Figure(go.Scatter(x=[0, 1, 2, 3], y=[0.0, 0.4, 0.35, 0.8], mode="lines+markers"))
    bar = go.Figure(go.Bar(x=["L0", "L1", "L2"], y=[0.2, 0.7, 0.1]))
    frame = pd.DataFrame({"layer": range(80), "effect": [i / 80 for i in range(80)]})
    return (
        Report("Patching <demo> & friends", meta={"model": "toy-mlp", "seed": 0, "note": "<i>x</i>"})
        .section("Heatmap", "Effect of patching each (layer, position).\n\nSecond paragraph & more.")
        .figure(heat, caption="logit difference recovered")
        .section("Curves")
        .figure(line, caption="effect by layer")
        .text("a < b")
        .figure(bar)
        .section("Table")
        .table(frame, caption="per-layer effect", max_rows=10)
        .code("def f(x):\n    return x < 1  # <not a tag>")
    )


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return _three_figure_report().save(tmp_path_factory.mktemp("report") / "nested" / "dir" / "r.html")


@pytest.fixture()
def chromium() -> str:
    exe = find_chromium()
    if exe is None:
        pytest.fail(
            "chromium is required for the browser tests of the HTML report (none of "
            "/usr/bin/chromium, chromium, chromium-browser, google-chrome found; set "
            "$CAUSALSCOPE_CHROMIUM to override). `make test` installs it "
            "(Debian: apt-get install chromium)."
        )
    return exe


# -- static checks (no browser) ---------------------------------------------------------------
def test_save_creates_parent_dirs_and_returns_path(report_path: pathlib.Path) -> None:
    assert isinstance(report_path, pathlib.Path)
    assert report_path.is_file()
    assert report_path.parent.name == "dir"
    report_path.read_bytes().decode("utf-8")  # valid UTF-8


def test_report_is_self_contained(report_path: pathlib.Path) -> None:
    html = report_path.read_text(encoding="utf-8")
    lower = html.lower()
    assert "<script src" not in lower
    assert not re.search(r"<script[^>]*\ssrc\s*=", lower)
    assert "<link" not in lower
    assert "@import" not in lower and "@font-face" not in lower
    # plotly.js inlined exactly once
    assert html.count("plotly.js v") == 1
    assert html.count('id="cs-plotlyjs"') == 1
    # declares and holds three figures, each wrapped and indexed
    assert '<html lang="en" data-n-figures="3">' in html
    assert html.count('class="cs-figure"') == 3
    for i in range(3):
        assert f'data-figure-index="{i}"' in html
        assert f'id="cs-fig-{i}"' in html
    assert '"responsive": true' in html


def test_report_header_and_escaping(report_path: pathlib.Path) -> None:
    import causalscope._version as v

    html = report_path.read_text(encoding="utf-8")
    assert "<title>Patching &lt;demo&gt; &amp; friends</title>" in html
    assert f"causalscope {v.__version__}" in html
    assert "torch " in html and "generated " in html
    assert "<th>model</th><td>toy-mlp</td>" in html
    assert "&lt;i&gt;x&lt;/i&gt;" in html and "<i>x</i>" not in html
    assert "<h2>Heatmap</h2>" in html and "<h2>Curves</h2>" in html
    assert "Second paragraph &amp; more." in html
    assert "a &lt; b" in html
    assert "&lt;not a tag&gt;" in html and '<pre class="cs-code">' in html
    assert "showing 10 of 80 rows" in html and "per-layer effect" in html
    assert html.count("<tr>") >= 10  # table rows were written


def test_report_api_basics(tmp_path: pathlib.Path) -> None:
    rep = Report("empty")
    assert rep.n_figures == 0
    html = rep.html()
    assert 'data-n-figures="0"' in html
    assert "plotly.js v" not in html  # nothing to draw -> no 4.8 MB of plotly.js
    # content before the first section lands in an untitled section; calls chain
    assert rep.text("intro").code("x = 1").section("S").figure(go.Figure()) is rep
    assert rep.n_figures == 1
    # a title containing a closing script tag cannot break out of plotly's script
    rep.figure(go.Figure(layout_title_text="</script><script>alert(1)</script>"))
    html = rep.html()
    assert html.lower().count("</script>") == html.lower().count("<script")
    p = rep.save(str(tmp_path / "a" / "b.html"))
    assert p == tmp_path / "a" / "b.html" and p.is_file()
    assert 'data-n-figures="2"' in p.read_text(encoding="utf-8")
    with pytest.raises(ValueError):
        Report("t").table(pd.DataFrame({"a": [1]}), max_rows=-1)
    assert "<th>a</th>" in Report("t").table({"a": [1, 2]}).html()  # dict -> DataFrame
    assert "showing" not in Report("t").table(pd.Series([1, 2], name="s")).html()


# -- _browser helpers that need no browser ----------------------------------------------------
def test_check_report_parses_dumped_dom(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    dom = (
        '<html lang="en" data-n-figures="3"><head></head>'
        '<body data-figures-drawn="2" data-js-errors="ReferenceError: Plotly &amp; co">'
        '<div class="cs-figure" data-figure-index="0"></div></body></html>'
    )
    monkeypatch.setattr(_browser, "render_dom", lambda path, timeout_s=60: dom)
    assert check_report(tmp_path / "x.html") == {
        "n_figures": 3,
        "drawn": 2,
        "js_errors": "ReferenceError: Plotly & co",
    }
    monkeypatch.setattr(_browser, "render_dom", lambda path, timeout_s=60: "<html><body></body></html>")
    assert check_report(tmp_path / "x.html") == {"n_figures": 0, "drawn": 0, "js_errors": ""}


def test_find_chromium_env_override_and_failures(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    fake = tmp_path / "fake-chrome"
    fake.write_text("#!/bin/sh\necho 'boom: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv(_browser.ENV_VAR, str(fake))
    assert find_chromium() == str(fake)
    page = Report("t").save(tmp_path / "p.html")
    with pytest.raises(RuntimeError, match=r"(?s)exit code 3.*boom: cannot start"):
        render_dom(page)
    with pytest.raises(FileNotFoundError):
        render_dom(tmp_path / "missing.html")


# -- browser tests ----------------------------------------------------------------------------
@pytest.mark.slow
def test_browser_draws_all_figures(chromium: str, report_path: pathlib.Path) -> None:
    t0 = time.monotonic()
    result = check_report(report_path)
    elapsed = time.monotonic() - t0
    assert result == {"n_figures": 3, "drawn": 3, "js_errors": ""}, result
    assert elapsed < BROWSER_TEST_BUDGET_S, f"browser check took {elapsed:.1f} s"
    dom = render_dom(report_path)
    assert 'data-figures-check="done"' in dom
    assert len(re.findall(r'<svg[^>]*class="main-svg"', dom)) >= 3


@pytest.mark.slow
def test_browser_negative_control_without_plotlyjs(
    chromium: str, report_path: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    html = report_path.read_text(encoding="utf-8")
    stripped, n = re.subn(r'(?s)<script type="text/javascript" id="cs-plotlyjs">.*?</script>\n', "", html, count=1)
    assert n == 1 and "plotly.js v" not in stripped
    broken = tmp_path / "no-plotlyjs.html"
    broken.write_text(stripped, encoding="utf-8")
    t0 = time.monotonic()
    result = check_report(broken)
    assert time.monotonic() - t0 < BROWSER_TEST_BUDGET_S
    assert result["n_figures"] == 3
    assert result["drawn"] < result["n_figures"]
    assert result["drawn"] == 0
    assert "Plotly" in result["js_errors"], result


@pytest.mark.slow
def test_browser_negative_control_broken_figure(
    chromium: str, report_path: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    html = report_path.read_text(encoding="utf-8")
    bad_figure = (
        '<div class="cs-figure" data-figure-index="3">'
        '<div id="cs-fig-3" class="plotly-graph-div"></div>'
        '<script>Plotly.newPlot("cs-fig-3", [{"type": "bar", "y": [1, 2,</script>'
        "</div>\n</main>"
    )
    html = html.replace('data-n-figures="3"', 'data-n-figures="4"', 1).replace("</main>", bad_figure, 1)
    broken = tmp_path / "broken-figure.html"
    broken.write_text(html, encoding="utf-8")
    t0 = time.monotonic()
    result = check_report(broken)
    assert time.monotonic() - t0 < BROWSER_TEST_BUDGET_S
    assert result["n_figures"] == 4
    assert result["drawn"] == 3 < result["n_figures"], result
    assert "SyntaxError" in result["js_errors"], result
