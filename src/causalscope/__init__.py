"""causalscope: causal interpretability for any PyTorch model.

>>> import causalscope as cs
>>> m = cs.load("tiny-gpt2")
>>> clean = m.run("the cat sat on the mat", cache=["layers.1"])
>>> clean.cache["layers.1"].shape
torch.Size([1, 6, 64])
>>> rows = [{cs.Site("layers.1", positions=t): cs.Patch(clean)} for t in range(6)]
>>> m.run("the dog sat on the mat", rows).output.shape       # 6 patch locations, one batched pass
torch.Size([6, 6, 72])
"""
from . import zoo
from ._engine import ActivationCache, Run
from ._errors import CausalScopeError, InputError, InterventionError, PlanError, SiteError
from ._interventions import Add, Intervention, Mean, Noise, Patch, Project, Resample, Scale, Set, Zero
from ._load import load
from ._model import Model
from ._results import LabelledArray, load_result
from ._sites import Site
from ._version import __version__

__all__ = [
    "ActivationCache", "Add", "CausalScopeError", "InputError", "Intervention", "InterventionError",
    "LabelledArray", "Mean", "Model", "Noise", "Patch", "PlanError", "Project", "Resample", "Run", "Scale",
    "Set", "Site", "SiteError", "Zero", "__version__", "load", "load_result", "zoo",
]
from ._tracing import TraceResult, causal_trace, embedding_std, subject_range

__all__ += ["TraceResult", "causal_trace", "embedding_std", "subject_range"]
from ._trace_average import TOKEN_CLASSES, TraceAverage, token_classes, trace_average

__all__ += ["TOKEN_CLASSES", "TraceAverage", "token_classes", "trace_average"]
from ._metrics import logit, logit_diff, output_value, prob
from ._patching import activation_patching
from ._patching_result import PatchingResult

__all__ += ["PatchingResult", "activation_patching", "logit", "logit_diff", "output_value", "prob"]
from ._attribution_patching import AttributionPatchingResult, attribution_patching

__all__ += ["AttributionPatchingResult", "attribution_patching"]
from ._integrated_gradients import IGResult, integrated_gradients
__all__ += ["IGResult", "integrated_gradients"]
from ._latent_circuits import LatentCircuits, latent_circuits

__all__ += ["LatentCircuits", "latent_circuits"]
from ._counterfactuals import CounterfactualDataset, counterfactuals
from ._mediation import MediationResult, mediation

__all__ += ["CounterfactualDataset", "MediationResult", "counterfactuals", "mediation"]
from ._graphs import CausalGraph, forward_graph, interchange_graph
__all__ += ["CausalGraph", "forward_graph", "interchange_graph"]
from ._abstraction import (AbstractionResult, CausalModel, InterchangeDataset, abstraction_iia, adder_causal_model,
                           alignment_search)
from ._das import DASResult, das

__all__ += ["AbstractionResult", "CausalModel", "DASResult", "InterchangeDataset", "abstraction_iia",
            "adder_causal_model", "alignment_search", "das"]
from . import data

__all__ += ["data"]
from ._probes import ProbeResult, SteeringCheck, probe, probe_steering

__all__ += ["ProbeResult", "SteeringCheck", "probe", "probe_steering"]
from ._directions import DirectionsResult, SimilarityMatrix, class_directions
from ._restoration import RestorationResult, corrupt, corrupt_and_restore
from ._steering import SteeringMatrix, SteeringResult, steer, steering_matrix

__all__ += ["DirectionsResult", "RestorationResult", "SimilarityMatrix", "SteeringMatrix", "SteeringResult",
            "class_directions", "corrupt", "corrupt_and_restore", "steer", "steering_matrix"]
from .circuits import NodeEffects, node_effects, subspace_effects

__all__ += ["NodeEffects", "node_effects", "subspace_effects"]
