"""Self-contained HTML reports: sections of prose, figures, tables and code in one offline file.

>>> import plotly.graph_objects as go
>>> rep = Report("Activation patching", meta={"model": "gpt2", "seed": 0})
>>> _ = rep.section("Effects", "Patching the residual stream at layer 3.")
>>> _ = rep.figure(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])), caption="logit difference")
>>> rep.n_figures
1
>>> "<script src" in rep.html()
False

The file inlines plotly.js once (``plotly.offline.get_plotlyjs()``, the minified bundle) and references
no CDN, font, stylesheet or any other network resource, so it opens on an air-gapped machine. Figures
follow the width of their card (no fixed widths); a table of contents lists the sections. After plotly
has drawn, an inline script records ``document.body.dataset.figuresDrawn`` (how many ``.cs-figure``
blocks hold an ``svg.main-svg`` or a loaded image) and ``document.body.dataset.jsErrors`` (any uncaught
error), which :func:`causalscope.app.report.check_report` reads back from a headless browser;
:func:`causalscope.app.report.check_layout` measures the layout at several window widths.
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

from ._assets import CSS, DRAWN_CHECK_JS, ERROR_HOOK_JS, PLOT_JS
from ._figure import is_matplotlib, matplotlib_img, plotly_spec, script_json

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas

__all__ = ["Report"]

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
    n_figures: int = 0


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
    ``<div class="cs-figure" id="figure-<i+1>" data-figure-index="i">`` around plotly's ``div#cs-fig-i``
    (or an ``img.cs-image``), numbered in its caption; the ``<html>`` element carries ``data-n-figures``.
    A table of contents links every titled section. Methods that add content return the report, so
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
        self._templates: list[str] = []  # plotly templates (JSON), each written once into the page
        #: sizes in bytes of the last :meth:`html`: ``total``, ``plotly_js``, ``figures`` and ``other``
        self.sizes: dict[str, int] = {}

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

    def figure(self, fig: Any, caption: str = "") -> Report:
        """Add a figure (rendered now, so later changes to ``fig`` do not show), numbered in its caption.

        >>> import plotly.graph_objects as go
        >>> Report("t").figure(go.Figure(go.Scatter(y=[1, 3, 2]))).n_figures
        1

        A plotly figure (a ``go.Figure`` or anything ``plotly.io.to_json`` accepts, e.g. a figure dict)
        is drawn as wide as its card: a fixed ``layout.width`` is dropped (``autosize`` and plotly's
        ``responsive`` config), the height is kept (450 px when none is set), floats are rounded to 6
        significant digits and numeric cell text to 3. A matplotlib figure becomes an inline PNG scaled
        to the card's width (never beyond its own size).
        """
        i = self._n_figures
        if is_matplotlib(fig):
            body = matplotlib_img(fig, alt=caption)
        else:
            spec = plotly_spec(fig)
            t = "null"
            if spec.template is not None:
                key = script_json(spec.template)
                if key not in self._templates:
                    self._templates.append(key)
                t = str(self._templates.index(key))
            body = (f'<div id="cs-fig-{i}" class="plotly-graph-div" style="height:{spec.height}px; width:100%;">'
                    f'</div>\n<script type="text/javascript">csPlot("cs-fig-{i}", {script_json(spec.data)}, '
                    f'{script_json(spec.layout)}, {t});</script>')
        no = f'<span class="cs-figno">Figure {i + 1}.</span>'
        cap = f'\n<div class="cs-caption">{no} {_esc(caption)}</div>'
        sec = self._current()
        sec.blocks.append(f'<div class="cs-figure" id="figure-{i + 1}" data-figure-index="{i}">\n{body}{cap}\n</div>')
        sec.n_figures += 1
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

    def _toc(self) -> str:
        """The table of contents: a link to every titled section, with its number of figures."""
        items = []
        for k, sec in enumerate(self._sections):
            if sec.heading is None:
                continue
            count = (f' <span class="cs-toc-count">({sec.n_figures} figure{"s" if sec.n_figures != 1 else ""})'
                     f'</span>' if sec.n_figures else "")
            items.append(f'<li><a href="#section-{k + 1}">{_esc(sec.heading)}</a>{count}</li>')
        if not items:
            return ""
        return ('<nav class="cs-toc" aria-label="Contents">\n<h2>Contents</h2>\n<ol>\n' + "\n".join(items)
                + "\n</ol>\n</nav>")

    def html(self) -> str:
        """Render the whole report as one HTML document (a string).

        >>> Report("t").html().startswith("<!DOCTYPE html>")
        True
        """
        import plotly.offline

        generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        parts: list[str] = []
        for k, sec in enumerate(self._sections):
            head = f"<h2>{_esc(sec.heading)}</h2>\n" if sec.heading is not None else ""
            parts.append(f'<section class="cs-section" id="section-{k + 1}">\n{head}' + "\n".join(sec.blocks)
                         + "\n</section>")
        plotly_js = (
            f'<script type="text/javascript" id="cs-plotlyjs">{_script_safe(plotly.offline.get_plotlyjs())}</script>\n'
            if self._n_figures
            else ""
        )
        helpers = (
            f'<script type="text/javascript" id="cs-plot">window.__csTemplates = [{",".join(self._templates)}];'
            f"{PLOT_JS}</script>\n"
            if self._n_figures
            else ""
        )
        doc = (
            "<!DOCTYPE html>\n"
            f'<html lang="en" data-n-figures="{self._n_figures}">\n<head>\n'
            '<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="causalscope {_esc(_causalscope_version())}">\n'
            f"<title>{_esc(self.title)}</title>\n"
            f"<style>{CSS}</style>\n"
            f'<script type="text/javascript" id="cs-error-hook">{ERROR_HOOK_JS}</script>\n'
            f"{plotly_js}{helpers}"
            '</head>\n<body>\n<div class="cs-page">\n'
            f"{self._header(generated)}\n{self._toc()}\n<main>\n"
            + "\n".join(parts)
            + "\n</main>\n</div>\n"
            f'<script type="text/javascript" id="cs-drawn-check">{DRAWN_CHECK_JS}</script>\n'
            "</body>\n</html>\n"
        )
        total, js = len(doc.encode("utf-8")), len(plotly_js.encode("utf-8"))
        figures = sum(len(b.encode("utf-8")) for sec in self._sections for b in sec.blocks
                      if b.startswith('<div class="cs-figure"'))
        self.sizes = {"total": total, "plotly_js": js, "figures": figures, "other": total - js - figures}
        return doc

    def size_summary(self) -> str:
        """One line on the size of the last rendered (or saved) report: plotly.js, the figures, the rest.

        >>> rep = Report("t")
        >>> _ = rep.html()
        >>> rep.size_summary().startswith("0 figures, ")
        True
        """
        if not self.sizes:
            self.html()
        mb = {k: v / 1e6 for k, v in self.sizes.items()}
        return (f"{self._n_figures} figures, {mb['total']:.2f} MB (plotly.js {mb['plotly_js']:.2f} MB, inlined once; "
                f"figures {mb['figures']:.2f} MB; text and tables {mb['other']:.2f} MB)")

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
