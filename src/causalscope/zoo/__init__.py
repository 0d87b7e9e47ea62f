"""Models that ship with causalscope (no downloads). ``causalscope.load(name)`` builds them.

>>> causalscope.zoo.names()
['adder', 'adder-rotated', 'and-gate', 'digits-mlp', 'facts-gpt', 'mlp', 'or-gate', 'tiny-gpt2', 'tiny-llama',
 'tiny-neox', 'tracr-frac-prevs', 'tracr-hist', 'tracr-majority', 'tracr-pair-balance', 'tracr-reverse', 'tracr-sort']

``tracr-<case>`` are RASP programs compiled by tracr into a CompiledTransformer, with ground-truth circuits
(``causalscope.circuits.load_case``; docs/tracr-cases.md).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ._tiny import build_mlp, build_tiny_lm, word_tokenizer
from .adder import build_adder
from .digits_mlp import DigitsMLP, build_digits_mlp
from .facts import load_facts_gpt
from .gates import build_gate, train_gate
from .tracr import load_tracr_model, tracr_index

REGISTRY: dict[str, tuple[Callable[[], tuple[Any, Any]], str]] = {
    "tiny-gpt2": (lambda: build_tiny_lm("gpt2"), "GPT-2 architecture, 4 layers, d=64, 4 heads, random weights "
                                                 "(seed 0), word-level tokenizer: exercises the machinery"),
    "tiny-neox": (lambda: build_tiny_lm("gpt_neox"), "GPT-NeoX architecture, same size, random weights (seed 0)"),
    "tiny-llama": (lambda: build_tiny_lm("llama"), "Llama architecture (GQA), same size, random weights (seed 0)"),
    "mlp": (lambda: (build_mlp(), None), "MLP 16-32-32-4 with ReLU, random weights (seed 0): a plain nn.Module"),
    "adder": (lambda: (build_adder(), None), "Linear(3,3)-Linear(3,3)-Linear(3,1) computing A+B+C (the "
                                             "causal-mediation tutorial's toy network; h12 = A, h13 = B+C, "
                                             "h22 = A+B+C, h23 dead)"),
    "adder-rotated": (lambda: (build_adder(rotated=True), None), "the adder with layer 1 rotated by a random "
                                                                 "orthogonal matrix: no single neuron carries A (DAS)"),
    "and-gate": (lambda: (build_gate("and"), None), "Linear(2,1)+Sigmoid AND gate with the latent-circuits "
                                                     "seed's trained weights (docs/patching.md)"),
    "or-gate": (lambda: (build_gate("or"), None), "Linear(2,1)+Sigmoid OR gate with the seed's trained weights"),
    "digits-mlp": (lambda: (build_digits_mlp(), None), "MLP 64-256-128-64-10 (ReLU; sites fc1..fc4, act1..act3), "
                                                       "TRAINED on scikit-learn's 8x8 digits (cs.data.digits): "
                                                       "97.2% test accuracy (360 held-out images)"),
    "facts-gpt": (load_facts_gpt, "GPT-2, 4 layers, d=128, 4 heads, TRAINED on a synthetic knowledge corpus "
                                  "(200 invented people x 5 relations; docs/facts-model.md): for causal tracing"),
}


REGISTRY.update({f"tracr-{case}": (functools.partial(load_tracr_model, case), "tracr-compiled RASP program, exact "
                                    f"weights and ground-truth circuit: {desc}")
                 for case, desc in tracr_index().items()})


def names() -> list[str]:
    return sorted(REGISTRY)


def describe() -> dict[str, str]:
    return {k: REGISTRY[k][1] for k in names()}


__all__ = ["names", "describe", "build_tiny_lm", "build_mlp", "word_tokenizer", "build_gate", "train_gate",
           "build_adder"]
__all__ += ["DigitsMLP", "build_digits_mlp"]
