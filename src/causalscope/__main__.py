"""``python -m causalscope`` runs the command line.

>>> # python -m causalscope models
"""
import sys

from .app.cli import main

if __name__ == "__main__":
    sys.exit(main())
