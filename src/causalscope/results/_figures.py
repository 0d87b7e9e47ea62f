"""The one backend switch (matplotlib or plotly) and the one way to write a figure to a file.

>>> resolve_backend(None), resolve_backend("plotly")
('matplotlib', 'plotly')
>>> backend_for("trace.png"), backend_for("report/roc.html")
('matplotlib', 'plotly')

``save_figure(fig, "out/effect.png")`` writes a matplotlib figure as an image and
``save_figure(fig, "out/effect.html")`` a plotly figure as an interactive page (parent folders are created).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "backend_for", "resolve_backend", "save_figure"]

#: the drawing libraries every ``plot(backend=...)`` accepts
BACKENDS = ("matplotlib", "plotly")
#: what ``plot()`` draws with when no backend is named
DEFAULT_BACKEND = "matplotlib"
#: suffixes written as interactive plotly pages; every other suffix is a matplotlib image
HTML_SUFFIXES = (".html", ".htm")


def resolve_backend(backend: str | None = None) -> str:
    """The backend to draw with: ``None`` gives the default (matplotlib); anything but the two is an error.

    >>> resolve_backend("bokeh")
    Traceback (most recent call last):
    ...
    causalscope.errors.InputError: backend must be 'matplotlib' or 'plotly', got 'bokeh'
    """
    if backend is None:
        return DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise InputError(f"backend must be 'matplotlib' or 'plotly', got {backend!r}")
    return backend


def backend_for(path: str | os.PathLike[str]) -> str:
    """The backend whose figure :func:`save_figure` can write to ``path``: plotly for ``.html``, else matplotlib.

    >>> backend_for("roc.HTM")
    'plotly'
    """
    return "plotly" if Path(path).suffix.lower() in HTML_SUFFIXES else "matplotlib"


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` and return the path; the suffix picks the format, parent folders are created.

    >>> from matplotlib.figure import Figure
    >>> save_figure(Figure(), "out/empty.png")  # doctest: +SKIP
    PosixPath('out/empty.png')

    A matplotlib figure is written as an image (``.png``, ``.svg``, ``.pdf`` or any other format matplotlib
    writes) with a tight bounding box at ``dpi``; a plotly figure as a self-contained ``.html`` page (plotly.js
    inlined, so it opens offline). Any other pairing is an :class:`~causalscope.errors.InputError` naming the
    fix; :func:`backend_for` gives the backend that suits a path.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if hasattr(fig, "write_html") and hasattr(fig, "to_plotly_json"):
        if suffix not in HTML_SUFFIXES:
            raise InputError(f"A plotly figure is written as an interactive .html page; got {str(p)!r}. For an "
                             f"image (.png, .svg, .pdf) draw the figure with backend='matplotlib'.")
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(str(p), include_plotlyjs=True)
        return p
    if hasattr(fig, "savefig") and hasattr(fig, "canvas"):
        formats = fig.canvas.get_supported_filetypes()
        if suffix in HTML_SUFFIXES:
            raise InputError(f"A matplotlib figure is written as an image (.png, .svg, .pdf); got {str(p)!r}. For "
                             f"an interactive .html page draw the figure with backend='plotly'.")
        if suffix.lstrip(".") not in formats:
            why = f"matplotlib writes no {suffix!r} files" if suffix else "it has no suffix to name the format"
            raise InputError(f"Cannot write a figure to {str(p)!r}: {why}. Use .png, .svg or .pdf (or another "
                             f"format matplotlib writes: {', '.join(sorted(formats))}), or .html for an interactive "
                             f"plotly page.")
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, bbox_inches="tight", dpi=dpi)
        return p
    raise InputError(f"save_figure takes a matplotlib Figure or a plotly Figure, got {type(fig).__name__}.")
