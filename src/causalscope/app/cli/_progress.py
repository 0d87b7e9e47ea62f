"""The progress a command shows on stderr: one bar over its steps (load the model, compute, write the figure), the
current step named beside it, and the library's own bars (``progress=True``) for the long computations inside;
none with ``--json`` (the bars would only interleave with what a script reads).

>>> import argparse
>>> with Steps(argparse.Namespace(command="patch", json=True), 2) as step:  # --json: no bar
...     step("loading tiny-gpt2")
...     step.progress
False
"""
from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

__all__ = ["JSON_HELP", "Steps", "say"]

#: what ``--json`` does, in every command's help
JSON_HELP = "print the result as JSON on stdout (and no progress bars on stderr)"

#: seconds a command runs before its bar appears (quicker commands print none)
DELAY = 0.5
#: a step bar: how far, how long, and the step now running (a rate of steps of unequal length means nothing)
BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]"
#: the bars of the commands running now (the innermost last): lines printed meanwhile are drawn above them
_OPEN: list[Steps] = []


class Steps:
    """A bar over ``total`` steps of a command; ``step("what")`` starts the next one (the one before it is done).

    ``progress`` is what the command passes on as the library's ``progress=``: True unless ``--json``. The bar
    appears once the command has run for :data:`DELAY` seconds (a quick command, or a quick refusal, prints no
    bar), whether or not stderr is a terminal (a log shows it too); when the command fails, the bar is cleared
    so that its one-line error stands alone.
    """

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        self.progress = not getattr(args, "json", False)
        self._bar: Any = None
        self._timer: threading.Timer | None = None
        self._started = False
        if self.progress:
            from ...core import tqdm  # torch is imported by then: every command with steps loads a model

            name = " ".join(str(n) for n in (getattr(args, "command", None), getattr(args, "circuits_command", None))
                            if n)
            self._bar = tqdm(total=max(1, total), desc=f"causalscope {name}".rstrip(), unit="step", file=sys.stderr,
                             dynamic_ncols=True, bar_format=BAR, delay=DELAY)
            self._timer = threading.Timer(DELAY, self._draw)  # drawn then, even in the middle of a long step
            self._timer.daemon = True

    def __enter__(self) -> Steps:
        _OPEN.append(self)
        if self._timer is not None:
            self._timer.start()
        return self

    def __call__(self, what: str) -> None:
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(what, refresh=False)
        self._draw()

    def _draw(self) -> None:
        """Show the bar as it is now, once the command has run for DELAY seconds."""
        bar = self._bar
        if not bar.disable and bar._time() >= bar.start_t + DELAY:
            bar.refresh()
            bar.last_print_t, bar.last_print_n = bar._time(), bar.n  # tqdm's record that it drew the bar

    @property
    def shown(self) -> bool:
        """Whether the bar has been drawn (a line printed now goes above it)."""
        return self._bar is not None and self._bar.last_print_t >= self._bar.start_t + DELAY

    def __exit__(self, exc_type: type[BaseException] | None, *rest: Any) -> None:
        _OPEN.remove(self)
        if self._bar is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        if exc_type is None:
            self._bar.update(self._bar.total - self._bar.n)
            self._bar.set_postfix_str("done", refresh=False)
            self._draw()
        else:
            self._bar.leave = False
        self._bar.close()  # a bar never drawn prints nothing


def say(text: str) -> None:
    """``text`` as one line on stderr, above the bar of a running command (so the bar is not torn)."""
    bar = next((s._bar for s in reversed(_OPEN) if s.shown), None)
    if bar is not None:
        type(bar).write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)
