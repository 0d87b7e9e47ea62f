"""The ``causalscope`` command line: the parser, assembled from one file per command group, and ``main``.

>>> from causalscope.app.cli import main
>>> main(["models"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _attribution, _basic, _circuits, _demo, _directions, _mediation, _tracing

#: the command groups, in the order ``causalscope --help`` lists their commands
GROUPS = (_demo, _basic, _tracing, _attribution, _mediation, _directions, _circuits)


def _parser() -> argparse.ArgumentParser:
    from ..._version import __version__

    p = argparse.ArgumentParser(prog="causalscope", description="Causal interpretability for PyTorch models.")
    p.add_argument("--version", action="version", version=f"causalscope {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ...errors import CausalScopeError

    try:
        return int(args.fn(args))
    except CausalScopeError as e:
        print(f"causalscope: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
