"""The ``causalscope`` command line: the parser, assembled from one file per command group, and ``main``.

>>> from causalscope.app.cli import main
>>> main(["models"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _attribution, _basic, _circuits, _demo, _directions, _mediation, _tracing
from ._progress import say

#: the command groups, in the order ``causalscope --help`` lists their commands
GROUPS = (_demo, _basic, _tracing, _attribution, _mediation, _directions, _circuits)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default, flags without a help text included."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not _unset(action.default) and "%(default)" not in text and "(default:" not in text \
                and (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)):
            text += " (default: %(default)s)"
        return text


class _Subparsers:
    """``add_parser`` with the defaults-showing help on every command (the groups call it as argparse's)."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    def add_parser(self, *args: Any, **kw: Any) -> argparse.ArgumentParser:
        kw.setdefault("formatter_class", _Help)
        p = self._sub.add_parser(*args, **kw)
        p.add_argument("--strict", action="store_true",
                       help="refuse prompts with words the tokenizer does not know (else: a warning)")
        real = p.add_subparsers

        def add_subparsers(**skw: Any) -> _Subparsers:  # nested commands (circuits ...) too
            return _Subparsers(real(**skw))
        p.add_subparsers = add_subparsers
        return p


def _parser() -> argparse.ArgumentParser:
    from ..._version import __version__

    p = argparse.ArgumentParser(prog="causalscope", description="Causal interpretability for PyTorch models.",
                                formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"causalscope {__version__}")
    sub = _Subparsers(p.add_subparsers(dest="command", required=True))
    for group in GROUPS:
        group.add_parsers(sub)
    _fill_help(p)
    return p


def _fill_help(p: argparse.ArgumentParser) -> None:
    """Give every option a help line (argparse shows defaults only for options that have one)."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _fill_help(child)
        elif action.help is None and action.option_strings:
            action.help = "(required)" if action.required else "" if _unset(action.default) else \
                "(default: %(default)s)"


def _unset(default: Any) -> bool:
    """No default worth showing: None, a store_true flag's False, an empty list, argparse's SUPPRESS."""
    return default is None or default is False or default == [] or default == argparse.SUPPRESS


def check_out(out: str | None) -> None:
    """Refuse an ``--out`` that cannot be written, before any computation: an unknown suffix, or a folder
    that is not writable (a missing folder is created when the figure is written)."""
    if not out:
        return
    from ...errors import InputError

    path = Path(out)
    known = (".html", ".png", ".svg", ".pdf", ".jpg", ".jpeg", ".json", ".csv")
    if path.suffix.lower() not in known:
        raise InputError(f"--out {out!r}: unknown file type {path.suffix or '(none)'!r}; use one of "
                         f"{', '.join(known)} (.html: interactive figure, images: static figure).")
    if path.is_dir():
        raise InputError(f"--out {out!r} is a folder; give a file name, e.g. {str(path / 'figure.html')!r}.")
    parent = next((q for q in [path.parent, *path.parent.parents] if q.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"--out {out!r}: {str(parent)!r} is not a writable folder.")


_SHOWN: set[str] = set()


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
              line: str | None = None) -> None:
    """A warning as one line on stderr (above a progress bar), each text once per command."""
    text = f"causalscope: warning: {message}"
    if text not in _SHOWN:
        _SHOWN.add(text)
        say(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 2 bad usage or input (one line on stderr, no traceback), 1 a
    failure while computing (one line; ``CAUSALSCOPE_DEBUG=1`` shows the traceback), 130 interrupted."""
    args = _parser().parse_args(argv)
    from ...errors import CausalScopeError, CausalScopeWarning, UnknownTokenWarning

    _SHOWN.clear()  # each warning once per command, and again in the next command (main called twice in a process)

    try:
        check_out(getattr(args, "out", None))
        with warnings.catch_warnings():
            warnings.showwarning = _one_line  # our warnings as one line each, not file:line plus source
            if getattr(args, "strict", False):
                warnings.simplefilter("error", UnknownTokenWarning)
            return int(args.fn(args))
    except (CausalScopeError, CausalScopeWarning) as e:  # a warning raised as an error: --strict
        print(f"causalscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("causalscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `causalscope sites ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence: one line, the fix if we know it
        if os.environ.get("CAUSALSCOPE_DEBUG"):
            raise
        print(f"causalscope: failed: {type(e).__name__}: {e} (set CAUSALSCOPE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
