"""``discover``: one entry point that runs any circuit-discovery method by name.

>>> r = circuits.discover(case, method="acdc", threshold=1e-4)

It sits above the methods (``_discovery``: node / edge patching; ``_eap``; ``_acdc``) so that none of them
imports it back.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InputError
from ._acdc import acdc
from ._discovery import edge_patching, node_patching
from ._discovery_result import CircuitScores
from ._eap import eap_ig, edge_attribution_patching


def discover(model: Any, clean: Any = None, corrupted: Any = None, *, method: str = "eap_ig",
             **kwargs: Any) -> CircuitScores:
    """Run one discovery method by name: ``node_patching``, ``edge_patching``, ``eap``, ``eap_ig``, ``acdc``.

    >>> r = circuits.discover(case, method="acdc", threshold=1e-4)
    """
    methods: dict[str, Callable[..., CircuitScores]] = {
        "node_patching": node_patching, "edge_patching": edge_patching, "eap": edge_attribution_patching,
        "edge_attribution_patching": edge_attribution_patching, "eap_ig": eap_ig, "acdc": acdc}
    if method not in methods:
        raise InputError(f"Unknown method {method!r}: use one of {', '.join(methods)}.")
    return methods[method](model, clean, corrupted, **kwargs)
