"""The application on top of the library: the command line (``causalscope`` / ``python -m causalscope``),
the demo and the offline HTML report. Nothing in the library imports it.

>>> from causalscope.app.cli import main
>>> main(["models"])  # doctest: +SKIP
"""
