"""Ground-truth circuits: compiled (tracr) benchmark models, node ablations, circuit discovery and scoring.

>>> from causalscope import circuits
>>> c = circuits.Circuit(["embed", "m0", "logits"], [("embed", "m0"), ("m0", "logits")])
"""
from __future__ import annotations

from ._circuit import Circuit, node_layer, node_order, upstream

__all__ = ["Circuit", "node_layer", "node_order", "upstream"]
from ._ablation import DEFAULT_SCALES, node_effects, subspace_effects
from ._ablation_result import NodeEffects
from ._pca import PositionPCA, position_pca

__all__ += ["DEFAULT_SCALES", "NodeEffects", "PositionPCA", "node_effects", "position_pca", "subspace_effects"]
from ._cases import Case, CaseTokenizer, case_names, load_case

__all__ += ["Case", "CaseTokenizer", "case_names", "load_case"]
