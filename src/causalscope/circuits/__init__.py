"""Ground-truth circuits: compiled (tracr) benchmark models, node ablations, circuit discovery and scoring.

>>> from causalscope import circuits
>>> c = circuits.Circuit(["embed", "m0", "logits"], [("embed", "m0"), ("m0", "logits")])
"""
from __future__ import annotations

from ._ablation import DEFAULT_SCALES, node_effects, subspace_effects
from ._ablation_result import NodeEffects
from ._acdc import acdc
from ._cases import Case, CaseTokenizer, case_names, load_case
from ._circuit import Circuit, node_layer, node_order, upstream
from ._discover import discover
from ._discovery import GraphMetric, edge_patching, node_patching, resample
from ._discovery_result import CircuitScores
from ._eap import eap_ig, edge_attribution_patching
from ._graph import ComputeGraph, GraphOutputs
from ._interpbench import InterpBenchModel, load_interpbench, read_plain_pickle
from ._pca import PositionPCA, position_pca
from ._scoring import MIB_FRACTIONS, FaithfulnessCurve, RocCurve, faithfulness_curve, plot_faithfulness, plot_roc, roc
from ._siit import SIITModel, load_siit, read_siit, siit
from ._siit_eval import evaluate_siit, siit_accuracy, siit_iia

__all__ = ["Circuit", "node_layer", "node_order", "upstream",
           "DEFAULT_SCALES", "NodeEffects", "PositionPCA", "node_effects", "position_pca", "subspace_effects",
           "CircuitScores", "ComputeGraph", "FaithfulnessCurve", "GraphMetric", "GraphOutputs", "MIB_FRACTIONS",
           "RocCurve", "acdc", "discover", "eap_ig", "edge_attribution_patching", "edge_patching",
           "faithfulness_curve", "node_patching", "plot_faithfulness", "plot_roc", "resample", "roc",
           "Case", "CaseTokenizer", "case_names", "load_case",
           "InterpBenchModel", "load_interpbench", "read_plain_pickle",
           "SIITModel", "evaluate_siit", "load_siit", "read_siit", "siit", "siit_accuracy", "siit_iia"]
