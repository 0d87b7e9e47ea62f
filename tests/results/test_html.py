"""How results look in Jupyter: ``_repr_html_`` (well-formed, user text escaped, values rounded, the figure
inline) and the display of the figures ``plot()`` returns in a kernel without ``%matplotlib inline``."""
from __future__ import annotations

import base64
import io
import re
import struct
import sys
from html.parser import HTMLParser
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch
from matplotlib.figure import Figure

from causalscope.results import LabelledArray
from causalscope.results._html import MAX_COLS, MAX_ROWS, show_figures_inline

VOID = {"br", "img"}
ALLOWED = {"div", "b", "code", "table", "caption", "tr", "th", "td", "i", "small", "br", "img"}
USER = {"name": "<i>score</i> & co", "method": "<b>m</b>", "model": "x & 'y'", "metric": "<script>alert(1)</script>",
        "tokens": ["<a", "b>", '"&c"']}


class Page(HTMLParser):
    """Records the tags (checking that every one is closed, in order) and the text a browser would show."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    assert not p.stack, f"unclosed tags {p.stack}"
    assert page.startswith('<div class="causalscope-result"') and page.endswith("</div>")
    return p


def user_array() -> LabelledArray:
    return LabelledArray(torch.tensor([[0.17, 1 / 3, 2.0], [-1.5, 0.0, 12345.678]]), ("layer", "position"),
                         coords={"layer": [0, 1]},
                         meta={k: USER[k] for k in ("method", "model", "metric")}, name=USER["name"]
                         ).with_tokens(USER["tokens"])


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # the IHDR chunk: width, height


def test_html_is_well_formed_and_user_text_is_text_not_markup():
    page = user_array()._repr_html_()
    p = parse(page)
    assert {t for t, _ in p.tags} <= ALLOWED  # no <script>, <i> only our own label markup
    assert all(not k.startswith("on") for _, attrs in p.tags for k in attrs)
    shown = "".join(p.text)
    for raw in [USER["name"], USER["method"], USER["model"], USER["metric"]]:
        assert raw in shown  # as text...
    assert "<script>" not in page and "<b>m</b>" not in page and "& co" not in page  # ...never as markup
    for tok in USER["tokens"]:
        assert repr(tok) in shown  # the token coordinate, quoted
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_html_shows_key_settings_coords_and_rounded_values():
    a = user_array()
    shown = "".join(parse(a._repr_html_()).text)
    for key in ("method", "model", "metric", "layer", "position", "token"):
        assert key in shown
    cells = re.findall(r"<td>([^<]*)</td>", a._repr_html_())
    assert cells == ["0.17", "0.3333", "2", "-1.5", "0", "1.235e+04"]  # float32 noise does not show
    assert "0.1700000" not in a._repr_html_()
    assert "min -1.5 · mean 2058 · max 1.235e+04" in shown  # over every value: (0.17+1/3+2-1.5+0+12345.678)/6 = 2057.8


def test_html_holds_the_default_plot_as_png():
    a = user_array()
    page = a._repr_html_()
    imgs = [attrs for tag, attrs in parse(page).tags if tag == "img"]
    assert len(imgs) == 1
    src = imgs[0]["src"]
    assert src is not None and src.startswith("data:image/png;base64,")
    got = base64.b64decode(src.split(",", 1)[1])
    ref = io.BytesIO()
    a.plot().savefig(ref, format="png", bbox_inches="tight")  # the result's default figure, written directly
    assert png_size(got) == png_size(ref.getvalue())


def test_html_of_large_arrays_shows_a_few_values():
    values = torch.arange(100 * 50, dtype=torch.float32).reshape(100, 50)
    a = LabelledArray(values, ("row", "col"))
    page = a._repr_html_()
    parse(page)
    cells = re.findall(r"<td>([^<]*)</td>", page)
    assert len(cells) == (MAX_ROWS + 1) * (MAX_COLS + 1)  # shown rows and columns, plus the "…" ones
    assert cells[0] == "0" and cells[MAX_COLS] == "49" and cells[-1] == "4999" and "…" in cells
    assert "min 0 · mean 2500 · max 4999" in page  # np.arange(5000).mean() == 2499.5, 4 digits


def test_html_without_a_plot_says_why_and_shows_slices():
    scalar = LabelledArray(torch.tensor(2.5), (), name="total")
    page = scalar._repr_html_()
    assert "value: <b>2.5</b>" in page and "no figure: ValueError: nothing to plot" in page
    cube = LabelledArray(torch.arange(24.0).reshape(2, 3, 4), ("a", "b", "c"), coords={"a": ["x<", "y"]})
    page = cube._repr_html_()
    parse(page)
    assert "at a=&#x27;x&lt;&#x27;" not in page and "at a=x&lt;" in page  # the first slice, labelled
    assert re.findall(r"<td>([^<]*)</td>", page)[:4] == ["0", "1", "2", "3"]
    assert "no figure: ValueError: can plot only 1-D or 2-D arrays" in page


class Failing(LabelledArray):
    def plot(self, ax=None, backend="matplotlib", **kw):
        raise RuntimeError("<bad> plot")


def test_a_failing_plot_never_breaks_the_repr():
    page = Failing(torch.zeros(3), ("x",))._repr_html_()
    parse(page)
    assert "<b>Failing</b>" in page and "no figure: RuntimeError: &lt;bad&gt; plot" in page


def test_figure_backend_is_a_class_setting(monkeypatch):
    a = user_array()
    monkeypatch.setattr(LabelledArray, "html_figure", None)
    assert "<img" not in a._repr_html_()
    monkeypatch.setattr(LabelledArray, "html_figure", "plotly")
    page = a._repr_html_()
    assert "plotly-graph-div" in page and "cdn.plot.ly" in page and "<img" not in page
    assert "<script>alert(1)</script>" not in page and "<i>score</i>" not in page  # plotly's JSON escapes "<"


# ---------------------------------------------------------------- figures in a kernel without %matplotlib inline
def fake_ipython(monkeypatch, png_formatter):
    shell = SimpleNamespace(display_formatter=SimpleNamespace(formatters={"image/png": png_formatter}))
    monkeypatch.setitem(sys.modules, "IPython", SimpleNamespace(get_ipython=lambda: shell))


def test_figures_get_a_png_printer_in_ipython(monkeypatch):
    from IPython.core.formatters import PNGFormatter

    fmt = PNGFormatter()
    fake_ipython(monkeypatch, fmt)
    assert show_figures_inline() is True
    fig = LabelledArray(torch.rand(3, 4), ("layer", "position")).plot()
    data = fmt(fig)
    ref = io.BytesIO()
    fig.savefig(ref, format="png", bbox_inches="tight")
    assert png_size(data) == png_size(ref.getvalue())
    assert fmt(Figure()) is None  # an empty figure shows nothing, as under the inline backend
    assert show_figures_inline() is False  # once


def test_a_printer_already_there_is_kept(monkeypatch):
    from IPython.core.formatters import PNGFormatter

    fmt = PNGFormatter()
    mine = lambda fig: b"mine"  # noqa: E731
    fmt.for_type(Figure, mine)  # what %matplotlib inline registers
    fake_ipython(monkeypatch, fmt)
    assert show_figures_inline() is False
    assert fmt.lookup_by_type(Figure) is mine


def test_outside_ipython_nothing_is_registered(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert show_figures_inline() is False
    monkeypatch.setitem(sys.modules, "IPython", SimpleNamespace(get_ipython=lambda: None))  # plain python
    assert show_figures_inline() is False


def test_values_table_rounds_like_the_text():
    a = LabelledArray(np.array([1, 2, 3], dtype=np.int64), ("x",))
    assert re.findall(r"<td>([^<]*)</td>", a._repr_html_()) == ["1", "2", "3"]
    b = LabelledArray(torch.tensor([True, False]), ("x",))
    assert re.findall(r"<td>([^<]*)</td>", b._repr_html_()) == ["True", "False"]
    c = LabelledArray(torch.tensor([float("nan"), 1.0]), ("x",))
    assert re.findall(r"<td>([^<]*)</td>", c._repr_html_()) == ["nan", "1"]
