"""Activation patching in both directions, attribution patching, integrated gradients, the latent-circuits seed.

>>> import causalscope as cs
>>> r = cs.patching.activation_patching("and-gate", [1.0, 1.0], [0.0, 0.0], ["model.0"], cs.output_value(),
...                                     io="input", per="neuron")  # doctest: +SKIP
"""
from ._activation import activation_patching
from ._attribution import AttributionPatchingResult, attribution_patching
from ._ig import approximation, integrated_gradients
from ._ig_result import IGResult
from ._latent import METHODS as LATENT_METHODS
from ._latent import LatentCircuits, latent_circuits
from ._result import PatchingResult

__all__ = ["LATENT_METHODS", "AttributionPatchingResult", "IGResult", "LatentCircuits", "PatchingResult",
           "activation_patching", "approximation", "attribution_patching", "integrated_gradients", "latent_circuits"]
