"""Causal mediation (total, direct, indirect effects; IIA), counterfactual data, causal abstraction and DAS,
and the feed-forward causal-graph pictures.

>>> import causalscope as cs
>>> res = cs.mediation("adder", cs.abstraction.counterfactuals(vary="A", n=20), "neurons")  # doctest: +SKIP
"""
from ._abstraction import AbstractionResult, abstraction_iia, alignment_search
from ._causal_model import CausalModel, InterchangeDataset, adder_causal_model
from ._counterfactuals import CounterfactualDataset, counterfactuals
from ._das import DASResult, das
from ._effects import STATS, MediationResult, mediation
from ._graph_model import CausalGraph, forward_graph, interchange_graph
from ._iia_common import AlignmentSiteError

__all__ = ["STATS", "AbstractionResult", "AlignmentSiteError", "CausalGraph", "CausalModel", "CounterfactualDataset",
           "DASResult", "InterchangeDataset", "MediationResult", "abstraction_iia", "adder_causal_model",
           "alignment_search", "counterfactuals", "das", "forward_graph", "interchange_graph", "mediation"]
