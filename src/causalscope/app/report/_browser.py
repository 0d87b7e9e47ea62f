"""Headless-chromium helpers: render a saved report and check that its figures were drawn.

>>> from causalscope.app.report import find_chromium, check_report
>>> if find_chromium() is not None:                 # doctest: +SKIP
...     check_report("report/demo.html")
{'n_figures': 3, 'drawn': 3, 'js_errors': ''}

Only the standard library is used: chromium runs as a subprocess with ``--dump-dom`` and the
serialised DOM is parsed with :mod:`html.parser`.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

__all__ = ["find_chromium", "render_dom", "check_report"]

_CANDIDATES: tuple[str, ...] = (
    "/usr/bin/chromium",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)

# Environment variable that, when set to an executable, takes precedence over the search.
ENV_VAR = "CAUSALSCOPE_CHROMIUM"


def find_chromium() -> str | None:
    """Path of a chromium/chrome executable, or ``None`` when none is installed.

    >>> path = find_chromium()
    >>> path is None or os.path.exists(path)
    True

    ``$CAUSALSCOPE_CHROMIUM`` (a path or a name on ``$PATH``) is tried first; then
    ``/usr/bin/chromium``, ``chromium``, ``chromium-browser``, ``google-chrome`` and
    ``google-chrome-stable``.
    """
    override = os.environ.get(ENV_VAR)
    names = ((override,) if override else ()) + _CANDIDATES
    for name in names:
        if os.path.isabs(name):
            if os.path.isfile(name) and os.access(name, os.X_OK):
                return name
        else:
            found = shutil.which(name)
            if found:
                return found
    return None


def _tail(text: str, n: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def render_dom(path: str | os.PathLike[str], *, timeout_s: float = 60,
               window_size: tuple[int, int] | None = None) -> str:
    """Open a local HTML file in headless chromium and return the DOM after its scripts ran.

    >>> dom = render_dom("report/demo.html")             # doctest: +SKIP
    >>> "data-figures-drawn" in dom                       # doctest: +SKIP
    True

    Chromium gets a fresh throw-away profile and no network-related background services, and
    runs with a 15 s virtual-time budget (timers fast-forward when the page is idle, so this
    takes about a second of real time for a small report). ``window_size`` (width, height) in CSS
    pixels sets the browser window, so the page lays out at that width (Chromium's default otherwise;
    scrollbars are hidden, so the whole width is the page's). Raises ``FileNotFoundError`` when
    the file is missing and ``RuntimeError`` (with the tail of chromium's stderr) when chromium
    is missing, fails, times out, or prints no DOM.
    """
    file = pathlib.Path(path).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"no such report: {file}")
    exe = find_chromium()
    if exe is None:
        raise RuntimeError(
            "chromium not found: install Debian's `chromium` package (or set "
            f"${ENV_VAR} to a chrome/chromium executable)"
        )
    with tempfile.TemporaryDirectory(prefix="causalscope-chromium-", ignore_cleanup_errors=True) as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--mute-audio",
            f"--user-data-dir={profile}",
            *([f"--window-size={int(window_size[0])},{int(window_size[1])}", "--hide-scrollbars"]
              if window_size is not None else []),
            "--virtual-time-budget=15000",
            "--dump-dom",
            file.as_uri(),
        ]
        env = dict(os.environ)
        env.setdefault("HOME", profile)
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout_s,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else ""
            raise RuntimeError(
                f"chromium timed out after {timeout_s} s rendering {file}\n{_tail(err)}"
            ) from exc
        except OSError as exc:
            raise RuntimeError(f"could not start chromium ({exe}): {exc}") from exc
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0 or "<html" not in out.lower():
        raise RuntimeError(
            f"chromium failed rendering {file} (exit code {proc.returncode}, "
            f"{len(out)} chars of DOM)\n{_tail(err)}"
        )
    return out


class _ReportAttrs(HTMLParser):
    """Collect the report's data attributes on ``<html>`` and ``<body>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.html_attrs: dict[str, str] = {}
        self.body_attrs: dict[str, str] = {}
        self.n_figure_divs: int = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "html" and not self.html_attrs:
            self.html_attrs = d
        elif tag == "body" and not self.body_attrs:
            self.body_attrs = d
        elif tag == "div" and "cs-figure" in d.get("class", "").split():
            self.n_figure_divs += 1


def _parse(dom: str) -> _ReportAttrs:
    parser = _ReportAttrs()
    parser.feed(dom)
    parser.close()
    return parser


def _to_int(value: str | None, default: int = 0) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def check_report(path: str | os.PathLike[str], *, timeout_s: float = 60) -> dict[str, int | str]:
    """Render a saved report in headless chromium and say how many of its figures were drawn.

    >>> check_report("report/demo.html")                 # doctest: +SKIP
    {'n_figures': 3, 'drawn': 3, 'js_errors': ''}

    ``n_figures`` is the count the report declares (``<html data-n-figures>``), ``drawn`` is
    ``<body data-figures-drawn>`` as set by the report's own script (0 when it never ran) and
    ``js_errors`` the uncaught JavaScript errors it recorded ("" when none). A healthy report has
    ``drawn == n_figures`` and no errors.
    """
    dom = render_dom(path, timeout_s=timeout_s)
    parsed = _parse(dom)
    declared = parsed.html_attrs.get("data-n-figures")
    if declared is None:
        # Not a causalscope report (or chromium dropped the attribute): count the figure blocks.
        n_figures = parsed.n_figure_divs
    else:
        n_figures = _to_int(declared, parsed.n_figure_divs)
    return {
        "n_figures": n_figures,
        "drawn": _to_int(parsed.body_attrs.get("data-figures-drawn"), 0),
        "js_errors": parsed.body_attrs.get("data-js-errors", ""),
    }
