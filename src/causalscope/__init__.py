"""causalscope: causal interpretability for any PyTorch model.

>>> import causalscope as cs
>>> m = cs.load("tiny-gpt2")
>>> clean = m.run("the cat sat on the mat", cache=["layers.1"])
>>> clean.cache["layers.1"].shape
torch.Size([1, 6, 64])
>>> rows = [{cs.Site("layers.1", positions=t): cs.Patch(clean)} for t in range(6)]
>>> m.run("the dog sat on the mat", rows).output.shape       # 6 patch locations, one batched pass
torch.Size([6, 6, 72])

The package is layered (docs/decisions/0005-layout.md); imports run one way and tests/test_layout.py checks it:

    app  ->  families (tracing, patching, abstraction, directions, circuits)  ->  loading  ->  core, results
         ->  zoo, data  ->  errors

``core`` imports no family; a family imports another package only through its ``__init__`` (never a
``_private`` module or name of another package); only ``core/_engine*.py`` registers hooks.
"""
from . import abstraction, circuits, core, data, directions, patching, results, tracing, zoo
from ._version import __version__
from .abstraction import (
                   AbstractionResult,
                   CausalGraph,
                   CausalModel,
                   CounterfactualDataset,
                   DASResult,
                   InterchangeDataset,
                   MediationResult,
                   abstraction_iia,
                   adder_causal_model,
                   alignment_search,
                   counterfactuals,
                   das,
                   forward_graph,
                   interchange_graph,
                   mediation,
)
from .circuits import NodeEffects, node_effects, subspace_effects
from .core import (
                   ActivationCache,
                   Add,
                   Intervention,
                   Mean,
                   Model,
                   Noise,
                   Patch,
                   Project,
                   Resample,
                   Rows,
                   Run,
                   Scale,
                   Set,
                   Site,
                   Zero,
                   logit,
                   logit_diff,
                   output_value,
                   prob,
)
from .directions import (
                   DirectionsResult,
                   ProbeResult,
                   RestorationResult,
                   SimilarityMatrix,
                   SteeringCheck,
                   SteeringMatrix,
                   SteeringResult,
                   class_directions,
                   corrupt,
                   corrupt_and_restore,
                   probe,
                   probe_steering,
                   steer,
                   steering_matrix,
)
from .errors import (
    CausalScopeError,
    CausalScopeWarning,
    InputError,
    InterventionError,
    PlanError,
    PrecisionWarning,
    SiteError,
)
from .loading import load
from .patching import (
                   AttributionPatchingResult,
                   IGResult,
                   LatentCircuits,
                   PatchingResult,
                   activation_patching,
                   attribution_patching,
                   integrated_gradients,
                   latent_circuits,
)
from .results import LabelledArray, load_result
from .tracing import (
                   TOKEN_CLASSES,
                   TraceAverage,
                   TraceResult,
                   causal_trace,
                   embedding_std,
                   subject_range,
                   token_classes,
                   trace_average,
)

__all__ = [
    # core
    "ActivationCache", "Add", "Intervention", "Mean", "Model", "Noise", "Patch", "Project", "Resample", "Rows",
    "Run", "Scale", "Set", "Site", "Zero", "logit", "logit_diff", "output_value", "prob",
    # errors, loading, results, bundled models and data
    "CausalScopeError", "CausalScopeWarning", "InputError", "InterventionError", "PlanError", "PrecisionWarning",
    "SiteError", "__version__", "load",
    "LabelledArray", "load_result", "zoo", "data",
    # families (each also importable as a subpackage: cs.tracing, cs.patching, ...)
    "core", "results", "tracing", "patching", "abstraction", "directions", "circuits",
    "TOKEN_CLASSES", "TraceAverage", "TraceResult", "causal_trace", "embedding_std", "subject_range",
    "token_classes", "trace_average",
    "AttributionPatchingResult", "IGResult", "LatentCircuits", "PatchingResult", "activation_patching",
    "attribution_patching", "integrated_gradients", "latent_circuits",
    "AbstractionResult", "CausalGraph", "CausalModel", "CounterfactualDataset", "DASResult", "InterchangeDataset",
    "MediationResult", "abstraction_iia", "adder_causal_model", "alignment_search", "counterfactuals", "das",
    "forward_graph", "interchange_graph", "mediation",
    "DirectionsResult", "ProbeResult", "RestorationResult", "SimilarityMatrix", "SteeringCheck", "SteeringMatrix",
    "SteeringResult", "class_directions", "corrupt", "corrupt_and_restore", "probe", "probe_steering", "steer",
    "steering_matrix",
    "NodeEffects", "node_effects", "subspace_effects",
]
