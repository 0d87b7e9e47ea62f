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
Names load on first use (PEP 562): ``import causalscope`` costs almost nothing, so the command line starts
without importing torch for ``--help`` and ``models``; ``cs.load`` and friends import what they need.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: public name -> the module that defines it (relative to this package)
_EXPORTS: dict[str, str] = {
    "AbstractionResult": ".abstraction", "CausalGraph": ".abstraction", "CausalModel": ".abstraction",
    "CounterfactualDataset": ".abstraction", "DASResult": ".abstraction", "InterchangeDataset": ".abstraction",
    "MediationResult": ".abstraction", "abstraction_iia": ".abstraction", "adder_causal_model": ".abstraction",
    "alignment_search": ".abstraction", "counterfactuals": ".abstraction", "das": ".abstraction",
    "forward_graph": ".abstraction", "interchange_graph": ".abstraction", "mediation": ".abstraction",
    "NodeEffects": ".circuits", "node_effects": ".circuits", "subspace_effects": ".circuits",
    "ActivationCache": ".core", "Add": ".core",
    "ArchitectureWarning": ".core", "Intervention": ".core", "Mean": ".core", "Model": ".core",
    "Noise": ".core", "Patch": ".core", "Project": ".core", "Resample": ".core", "Rows": ".core", "Run": ".core",
    "Generation": ".core", "SteeringGeneration": ".generation", "steer_generation": ".generation",
    "SteeringMatrixGeneration": ".generation", "steering_matrix_generation": ".generation",
    "Scale": ".core", "Set": ".core", "Site": ".core", "Zero": ".core", "logit": ".core", "logit_diff": ".core",
    "output_value": ".core", "prob": ".core",
    "DirectionsResult": ".directions", "ProbeResult": ".directions", "RestorationResult": ".directions",
    "SimilarityMatrix": ".directions", "SteeringCheck": ".directions", "SteeringMatrix": ".directions",
    "SteeringResult": ".directions", "class_directions": ".directions", "corrupt": ".directions",
    "corrupt_and_restore": ".directions", "probe": ".directions", "probe_steering": ".directions",
    "steer": ".directions", "steering_matrix": ".directions",
    "CausalScopeError": ".errors", "CausalScopeWarning": ".errors", "InputError": ".errors",
    "InterventionError": ".errors", "PlanError": ".errors", "PrecisionWarning": ".errors", "SiteError": ".errors",
    "UnknownTokenWarning": ".errors",
    "load": ".loading",
    "AttentionPatterns": ".lenses", "LensComparison": ".lenses", "LensResult": ".lenses", "TunedLens": ".lenses",
    "attention_patterns": ".lenses", "attention_sites": ".lenses", "logit_lens": ".lenses", "tuned_lens": ".lenses",
    "AttributionPatchingResult": ".patching", "IGResult": ".patching", "LatentCircuits": ".patching",
    "PatchingResult": ".patching", "activation_patching": ".patching", "attribution_patching": ".patching",
    "integrated_gradients": ".patching", "latent_circuits": ".patching",
    "LabelledArray": ".results", "load_result": ".results",
    "TOKEN_CLASSES": ".tracing", "TraceAverage": ".tracing", "TraceResult": ".tracing", "causal_trace": ".tracing",
    "embedding_std": ".tracing", "subject_range": ".tracing", "token_classes": ".tracing",
    "trace_average": ".tracing", "rome_sites": ".tracing", "rome_window": ".tracing",
    "SAE": ".sae", "Transcoder": ".sae", "feature_attribution": ".sae", "load_sae": ".sae", "train_sae": ".sae",
    "ExecutionError": ".errors", "ModelSpec": ".loading",
    "InProcessExecutor": ".executors", "RayExecutor": ".executors", "sweep": ".executors",
}
_SUBPACKAGES = ("abstraction", "circuits", "core", "data", "directions", "executors", "generation", "lenses",
                "patching", "results", "sae", "tracing", "zoo")

if TYPE_CHECKING:  # the same names, for type checkers and editors
    from . import abstraction, circuits, core, data, directions, patching, results, tracing, zoo
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
        ArchitectureWarning,
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
        ExecutionError,
        InputError,
        InterventionError,
        PlanError,
        PrecisionWarning,
        SiteError,
        UnknownTokenWarning,
    )
    from .executors import InProcessExecutor, RayExecutor, sweep
    from .lenses import (
        AttentionPatterns,
        LensComparison,
        LensResult,
        TunedLens,
        attention_patterns,
        attention_sites,
        logit_lens,
        tuned_lens,
    )
    from .loading import ModelSpec, load
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
    from .sae import SAE, Transcoder, feature_attribution, load_sae, train_sae
    from .tracing import (
        TOKEN_CLASSES,
        TraceAverage,
        TraceResult,
        causal_trace,
        embedding_std,
        rome_sites,
        rome_window,
        subject_range,
        token_classes,
        trace_average,
    )


def __getattr__(name: str) -> Any:
    """Import a public name (or subpackage) on first use, then keep it as a module attribute."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'causalscope' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))


__all__ = [
    # core
    "ActivationCache", "Add", "ArchitectureWarning",
    "Intervention", "Mean", "Model", "Noise", "Patch", "Project", "Resample", "Rows",
    "Run", "Scale", "Set", "Site", "Zero", "logit", "logit_diff", "output_value", "prob", "Generation",
    "SteeringGeneration", "steer_generation", "generation", "SteeringMatrixGeneration", "steering_matrix_generation",
    "AttentionPatterns", "LensComparison", "LensResult", "TunedLens", "attention_patterns", "attention_sites",
    "logit_lens", "tuned_lens", "lenses", "sae",
    # errors, loading, results, bundled models and data
    "CausalScopeError", "CausalScopeWarning", "InputError", "InterventionError", "PlanError", "PrecisionWarning",
    "SiteError", "UnknownTokenWarning", "__version__", "load",
    "LabelledArray", "load_result", "zoo", "data",
    # families (each also importable as a subpackage: cs.tracing, cs.patching, ...)
    "core", "results", "tracing", "patching", "abstraction", "directions", "circuits",
    "TOKEN_CLASSES", "TraceAverage", "TraceResult", "causal_trace", "embedding_std", "subject_range",
    "token_classes", "trace_average", "rome_sites", "rome_window",
    "AttributionPatchingResult", "IGResult", "LatentCircuits", "PatchingResult", "activation_patching",
    "attribution_patching", "integrated_gradients", "latent_circuits",
    "AbstractionResult", "CausalGraph", "CausalModel", "CounterfactualDataset", "DASResult", "InterchangeDataset",
    "MediationResult", "abstraction_iia", "adder_causal_model", "alignment_search", "counterfactuals", "das",
    "forward_graph", "interchange_graph", "mediation",
    "DirectionsResult", "ProbeResult", "RestorationResult", "SimilarityMatrix", "SteeringCheck", "SteeringMatrix",
    "SteeringResult", "class_directions", "corrupt", "corrupt_and_restore", "probe", "probe_steering", "steer",
    "steering_matrix",
    "NodeEffects", "node_effects", "subspace_effects",
    "SAE", "Transcoder", "feature_attribution", "load_sae", "train_sae",
    # executors: where a method runs (in process, or sharded over Ray workers)
    "executors", "ExecutionError", "InProcessExecutor", "ModelSpec", "RayExecutor", "sweep",
]
