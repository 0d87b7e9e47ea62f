"""The one way a command writes its figure: the results' ``save_figure``, the backend picked by the suffix.

>>> from causalscope.app.cli._figures import write_plot
>>> write_plot(lambda backend: result.plot(backend=backend), "out/effect.png")  # doctest: +SKIP
plot written: out/effect.png
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ._progress import say


def write_plot(make: Callable[[str], Any], out: str | os.PathLike[str] | None) -> None:
    """Write the figure ``make(backend)`` to ``out`` (nothing when ``out`` is empty) and note the path on stderr.

    ``.html`` gets the interactive plotly figure, any image suffix (``.png``, ``.svg``, ``.pdf``, ...) the
    matplotlib one; parent folders are created. The note names ``out`` as given.
    """
    if not out:
        return
    from ...results import backend_for, save_figure

    save_figure(make(backend_for(out)), out)
    say(f"plot written: {out}")


def plot_of(result: Any) -> Callable[[str], Any]:
    """``make`` for :func:`write_plot` that draws ``result``, bound now (for loops over results).

    >>> write_plot(plot_of(result), "out/effect.html")  # doctest: +SKIP
    """
    return lambda backend: result.plot(backend=backend)
