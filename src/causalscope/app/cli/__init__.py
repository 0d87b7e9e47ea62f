"""The ``causalscope`` command line: one file per command group.

>>> from causalscope.app.cli import main
>>> main(["sites", "--model", "tiny-gpt2", "--pattern", "layers.0.mlp"])  # doctest: +SKIP
"""
from ._main import main

__all__ = ["main"]
