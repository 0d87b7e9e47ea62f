"""Ground-truth circuits: compiled (tracr) benchmark models, node ablations, circuit discovery and scoring.

>>> from causalscope import circuits
>>> c = circuits.Circuit(["embed", "m0", "logits"], [("embed", "m0"), ("m0", "logits")])
"""
from __future__ import annotations

from ._circuit import Circuit, node_layer, node_order, upstream

__all__ = ["Circuit", "node_layer", "node_order", "upstream"]
