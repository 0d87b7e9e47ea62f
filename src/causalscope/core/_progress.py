"""The progress bar every long computation shows: ``tqdm.auto`` (the widget bar in Jupyter, the console bar
elsewhere), imported without its "IProgress not found" warning where ipywidgets is missing (the console bar
is drawn then, as tqdm.auto does).

>>> for chunk in tqdm(range(3), desc="patching", disable=True): ...
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "IProgress not found")
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
