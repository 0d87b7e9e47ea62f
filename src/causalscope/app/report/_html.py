"""Self-contained HTML reports: sections of prose, plotly figures, tables and code in one offline file.

>>> import plotly.graph_objects as go
>>> rep = Report("Activation patching", meta={"model": "gpt2", "seed": 0})
>>> _ = rep.section("Effects", "Patching the residual stream at layer 3.")
>>> _ = rep.figure(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])), caption="logit difference")
>>> rep.n_figures
1
>>> "<script src" in rep.html()
False

The file inlines plotly.js once (``plotly.offline.get_plotlyjs()``) and references no CDN, font,
stylesheet or any other network resource, so it opens on an air-gapped machine. After plotly has
drawn, an inline script records ``document.body.dataset.figuresDrawn`` (how many ``.cs-figure``
blocks hold an ``svg.main-svg``) and ``document.body.dataset.jsErrors`` (any uncaught error), which
:func:`causalscope.app.report.check_report` reads back from a headless browser.
"""

from __future__ import annotations

import datetime as _dt
import html as _html
import importlib.metadata as _md
import os
import pathlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas
    import plotly.graph_objects

__all__ = ["Report"]

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7f9; color: #1f2328;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 64px; background: #fff; min-height: 100vh; }
header.cs-header { border-bottom: 2px solid #d0d7de; margin-bottom: 20px; padding-bottom: 12px; }
header.cs-header h1 { margin: 0 0 6px; font-size: 1.7em; }
.cs-provenance { color: #57606a; font-size: 0.88em; margin: 0 0 8px; }
.cs-provenance span { margin-right: 1.4em; white-space: nowrap; }
section.cs-section { margin: 28px 0; }
section.cs-section h2 { font-size: 1.3em; border-bottom: 1px solid #eaeef2; padding-bottom: 4px; }
p.cs-text { margin: 8px 0; }
.cs-figure { margin: 16px 0; border: 1px solid #eaeef2; border-radius: 6px; padding: 6px; }
.cs-figure .plotly-graph-div { min-height: 360px; }
.cs-caption, figcaption { color: #57606a; font-size: 0.9em; margin: 4px 6px; }
.cs-table-wrap { overflow-x: auto; margin: 14px 0; }
table.cs-table, table.cs-meta { border-collapse: collapse; font-size: 0.88em;
  font-variant-numeric: tabular-nums; }
table.cs-table th, table.cs-table td, table.cs-meta th, table.cs-meta td {
  border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; vertical-align: top; }
table.cs-table thead th, table.cs-meta th { background: #f6f8fa; }
table.cs-meta th, table.cs-meta td { text-align: left; }
pre.cs-code { background: #f6f8fa; border: 1px solid #eaeef2; border-radius: 6px; padding: 10px 12px;
  overflow-x: auto; font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
"""

# Installed before any other script so that errors in plotly.js or a figure are recorded.
_ERROR_HOOK_JS = """
(function () {
  function record(msg) {
    var body = document.body;
    if (!body) { (window.__csEarlyErrors = window.__csEarlyErrors || []).push(msg); return; }
    var prev = body.dataset.jsErrors;
    body.dataset.jsErrors = prev ? prev + " | " + msg : msg;
  }
  window.__csRecordError = record;
  window.onerror = function (message, source, line, col, error) {
    var where = source ? " @ " + String(source).slice(-80) + ":" + line + ":" + col : "";
    record(String(message) + where);
    return false;
  };
  window.addEventListener("unhandledrejection", function (ev) {
    var r = ev && ev.reason;
    record("unhandled rejection: " + (r && r.message ? r.message : String(r)));
  });
})();
"""

# Runs after the window 'load' event, then polls until every .cs-figure holds an svg.main-svg
# (or 5 s pass) and waits for any Plotly.newPlot promises before publishing the count.
_DRAWN_CHECK_JS = """
(function () {
  var body = document.body;
  if (window.__csEarlyErrors) {
    for (var k = 0; k < window.__csEarlyErrors.length; k++) { window.__csRecordError(window.__csEarlyErrors[k]); }
  }
  var t0 = Date.now();
  function count() {
    var divs = document.querySelectorAll(".cs-figure");
    var n = 0;
    for (var i = 0; i < divs.length; i++) { if (divs[i].querySelector("svg.main-svg")) { n++; } }
    return [n, divs.length];
  }
  function publish(state) {
    var c = count();
    body.dataset.figuresDrawn = String(c[0]);
    body.dataset.figuresCheck = state;
  }
  function tick() {
    var c = count();
    if (c[0] >= c[1] || Date.now() - t0 > 5000) {
      var pending = [];
      var gds = document.querySelectorAll(".cs-figure .plotly-graph-div");
      for (var i = 0; i < gds.length; i++) {
        var p = gds[i]._promises;
        if (p && p.length) { pending = pending.concat(p); }
      }
      var state = c[0] >= c[1] ? "done" : "timeout";
      if (pending.length && window.Promise) {
        Promise.all(pending).then(function () { publish(state); }, function (e) {
          window.__csRecordError("plotly promise rejected: " + (e && e.message ? e.message : String(e)));
          publish(state);
        });
      } else {
        publish(state);
      }
      return;
    }
    setTimeout(tick, 50);
  }
  if (document.readyState === "complete") { setTimeout(tick, 0); }
  else { window.addEventListener("load", function () { setTimeout(tick, 0); }); }
})();
"""


def _esc(value: Any) -> str:
    """Escape any value for HTML text or attribute context.

    >>> _esc('<b> & "x"')
    '&lt;b&gt; &amp; &quot;x&quot;'
    """
    return _html.escape(str(value), quote=True)


def _paragraphs(text: str, css_class: str = "cs-text") -> str:
    """Escape prose and split it into ``<p>`` blocks on blank lines; single newlines become ``<br>``.

    >>> _paragraphs("a < b\\n\\nsecond")
    '<p class="cs-text">a &lt; b</p>\\n<p class="cs-text">second</p>'
    """
    blocks = [b.strip() for b in str(text).replace("\r\n", "\n").split("\n\n")]
    out = []
    for block in blocks:
        if block:
            body = "<br>\n".join(_esc(line) for line in block.split("\n"))
            out.append(f'<p class="{css_class}">{body}</p>')
    return "\n".join(out)


def _script_safe(js: str) -> str:
    """Make JavaScript safe to inline in a ``<script>`` element (no premature ``</script>``).

    >>> _script_safe('var s = "</script>";')
    'var s = "<\\\\/script>";'
    """
    return js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def _torch_version() -> str:
    """Version of torch without importing it when it is not loaded yet.

    >>> isinstance(_torch_version(), str)
    True
    """
    mod = sys.modules.get("torch")
    if mod is not None and hasattr(mod, "__version__"):
        return str(mod.__version__)
    try:
        return _md.version("torch")
    except _md.PackageNotFoundError:
        return "not installed"


def _causalscope_version() -> str:
    """The package version from ``causalscope._version``.

    >>> _causalscope_version() != ""
    True
    """
    try:
        from causalscope._version import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - broken install
        return "unknown"


@dataclass
class _Section:
    heading: str | None
    blocks: list[str] = field(default_factory=list)


class Report:
    """Build one self-contained HTML report from sections, plotly figures, tables, prose and code.

    >>> import plotly.graph_objects as go
    >>> import pandas as pd
    >>> rep = (Report("Demo", meta={"model": "toy-mlp"})
    ...        .section("Results", "Effect of patching each layer.")
    ...        .figure(go.Figure(go.Bar(x=["a", "b"], y=[1, 2])), caption="effect per layer")
    ...        .table(pd.DataFrame({"layer": [0, 1], "effect": [0.1, 0.7]}))
    ...        .code("cs.patch(model, ...)"))
    >>> rep.n_figures
    1
    >>> 'data-n-figures="1"' in rep.html()
    True

    Save with ``rep.save("report/demo.html")``; the file opens offline: plotly.js is inlined once,
    nothing is loaded from a CDN and there is no external CSS or font. Every figure sits in
    ``<div class="cs-figure" data-figure-index="i">`` around plotly's ``div#cs-fig-i``; the
    ``<html>`` element carries ``data-n-figures``. Methods that add content return the report, so
    calls chain. Content added before the first :meth:`section` goes in an untitled section.
    """

    def __init__(self, title: str, meta: Mapping[str, Any] | None = None) -> None:
        """Start an empty report.

        >>> Report("t", meta={"seed": 1}).meta
        {'seed': 1}
        """
        self.title: str = str(title)
        self.meta: dict[str, Any] = dict(meta) if meta is not None else {}
        self._sections: list[_Section] = []
        self._n_figures: int = 0

    # -- building -----------------------------------------------------------------------------
    def _current(self) -> _Section:
        if not self._sections:
            self._sections.append(_Section(heading=None))
        return self._sections[-1]

    def section(self, heading: str, text: str = "") -> Report:
        """Start a new section: an ``<h2>`` heading and optional escaped prose.

        >>> "<h2>Setup</h2>" in Report("t").section("Setup", "x < y").html()
        True
        """
        sec = _Section(heading=str(heading))
        if text:
            sec.blocks.append(_paragraphs(text))
        self._sections.append(sec)
        return self

    def text(self, text: str) -> Report:
        """Add escaped prose to the current section (blank lines separate paragraphs).

        >>> "a &amp; b" in Report("t").text("a & b").html()
        True
        """
        block = _paragraphs(text)
        if block:
            self._current().blocks.append(block)
        return self

    def code(self, text: str) -> Report:
        """Add a preformatted, escaped code block (``<pre>``) to the current section.

        >>> '<pre class="cs-code">x &lt; 1</pre>' in Report("t").code("x < 1").html()
        True
        """
        self._current().blocks.append(f'<pre class="cs-code">{_esc(text)}</pre>')
        return self

    def figure(self, fig: plotly.graph_objects.Figure, caption: str = "") -> Report:
        """Add a plotly figure (rendered now, so later changes to ``fig`` do not show).

        >>> import plotly.graph_objects as go
        >>> Report("t").figure(go.Figure(go.Scatter(y=[1, 3, 2]))).n_figures
        1

        Accepts a ``plotly.graph_objects.Figure`` or anything ``plotly.io.to_html`` accepts
        (e.g. a figure dict).
        """
        import plotly.io as pio

        i = self._n_figures
        div = pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            div_id=f"cs-fig-{i}",
            config={"responsive": True},
        )
        cap = f'\n<div class="cs-caption">{_esc(caption)}</div>' if caption else ""
        self._current().blocks.append(
            f'<div class="cs-figure" data-figure-index="{i}">\n{div}{cap}\n</div>'
        )
        self._n_figures += 1
        return self

    def table(self, frame: pandas.DataFrame, caption: str = "", max_rows: int = 50) -> Report:
        """Add a table of the first ``max_rows`` rows of a DataFrame (cells are escaped).

        >>> import pandas as pd
        >>> "showing 2 of 5 rows" in Report("t").table(pd.DataFrame({"a": range(5)}), max_rows=2).html()
        True

        Anything ``pandas.DataFrame(...)`` accepts (a Series, a dict of columns) works too.
        """
        import pandas as pd

        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        elif not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(frame)
        if max_rows < 0:
            raise ValueError(f"max_rows must be >= 0, got {max_rows}")
        n = len(frame)
        shown = frame.head(max_rows)
        body = shown.to_html(
            classes="cs-table", border=0, escape=True, float_format=lambda v: f"{v:.4g}"
        )
        notes = []
        if caption:
            notes.append(_esc(caption))
        if n > max_rows:
            notes.append(f"showing {max_rows} of {n} rows")
        cap = f'\n<div class="cs-caption">{" — ".join(notes)}</div>' if notes else ""
        self._current().blocks.append(f'<div class="cs-table-wrap">\n{body}{cap}\n</div>')
        return self

    # -- output -------------------------------------------------------------------------------
    @property
    def n_figures(self) -> int:
        """How many figures the report holds.

        >>> Report("t").n_figures
        0
        """
        return self._n_figures

    def _header(self, generated: str) -> str:
        prov = (
            f"<span>generated {_esc(generated)}</span>"
            f"<span>causalscope {_esc(_causalscope_version())}</span>"
            f"<span>torch {_esc(_torch_version())}</span>"
        )
        meta = ""
        if self.meta:
            rows = "\n".join(
                f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in self.meta.items()
            )
            meta = f'\n<table class="cs-meta">\n<tbody>\n{rows}\n</tbody>\n</table>'
        return (
            f'<header class="cs-header">\n<h1>{_esc(self.title)}</h1>\n'
            f'<p class="cs-provenance">{prov}</p>{meta}\n</header>'
        )

    def html(self) -> str:
        """Render the whole report as one HTML document (a string).

        >>> Report("t").html().startswith("<!DOCTYPE html>")
        True
        """
        import plotly.offline

        generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        parts: list[str] = []
        for sec in self._sections:
            head = f"<h2>{_esc(sec.heading)}</h2>\n" if sec.heading is not None else ""
            parts.append(f'<section class="cs-section">\n{head}' + "\n".join(sec.blocks) + "\n</section>")
        plotly_js = (
            f'<script type="text/javascript" id="cs-plotlyjs">{_script_safe(plotly.offline.get_plotlyjs())}</script>\n'
            if self._n_figures
            else ""
        )
        return (
            "<!DOCTYPE html>\n"
            f'<html lang="en" data-n-figures="{self._n_figures}">\n<head>\n'
            '<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="causalscope {_esc(_causalscope_version())}">\n'
            f"<title>{_esc(self.title)}</title>\n"
            f"<style>{_CSS}</style>\n"
            f'<script type="text/javascript" id="cs-error-hook">{_ERROR_HOOK_JS}</script>\n'
            f"{plotly_js}"
            "</head>\n<body>\n<main>\n"
            f"{self._header(generated)}\n"
            + "\n".join(parts)
            + "\n</main>\n"
            f'<script type="text/javascript" id="cs-drawn-check">{_DRAWN_CHECK_JS}</script>\n'
            "</body>\n</html>\n"
        )

    def save(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write the report as UTF-8, creating parent directories; returns the path.

        >>> import tempfile, pathlib
        >>> p = Report("t").save(pathlib.Path(tempfile.mkdtemp()) / "sub" / "r.html")
        >>> p.exists()
        True
        """
        out = pathlib.Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.html(), encoding="utf-8")
        return out
