"""Models that ship with causalscope (no downloads). ``causalscope.load(name)`` builds them.

>>> causalscope.zoo.names()
['adder', 'adder-rotated', 'and-gate', 'digits-mlp', 'facts-gpt', 'mlp', 'or-gate', 'siit-frac-prevs', 'siit-hist',
 'siit-ib3-frac-prevs', 'siit-majority', 'siit-pair-balance', 'siit-reverse', 'siit-sort', 'tiny-gpt2', 'tiny-llama',
 'tiny-neox', 'tracr-frac-prevs', 'tracr-hist', 'tracr-ib3-frac-prevs', 'tracr-majority', 'tracr-pair-balance',
 'tracr-reverse', 'tracr-sort']

``tracr-<case>`` are RASP programs compiled by tracr into a CompiledTransformer, with ground-truth circuits
(``causalscope.circuits.load_case``; docs/tracr-cases.md). ``siit-<case>`` are small transformers TRAINED with
SIIT so that the same circuit implements the case's program (``circuits.load_case(case, trained=True)``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..catalog import MODELS, siit_description, tracr_description
from ._tiny import build_mlp, build_tiny_lm, word_tokenizer
from .adder import build_adder
from .digits_mlp import DigitsMLP, build_digits_mlp
from .facts import load_facts_gpt
from .gates import build_gate, train_gate
from .siit import load_siit_model, siit_names
from .tracr import load_tracr_model, tracr_index

_BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "tiny-gpt2": lambda: build_tiny_lm("gpt2"),
    "tiny-neox": lambda: build_tiny_lm("gpt_neox"),
    "tiny-llama": lambda: build_tiny_lm("llama"),
    "mlp": lambda: (build_mlp(), None),
    "adder": lambda: (build_adder(), None),
    "adder-rotated": lambda: (build_adder(rotated=True), None),
    "and-gate": lambda: (build_gate("and"), None),
    "or-gate": lambda: (build_gate("or"), None),
    "digits-mlp": lambda: (build_digits_mlp(), None),
    "facts-gpt": load_facts_gpt,
}
REGISTRY: dict[str, tuple[Callable[[], tuple[Any, Any]], str]] = {k: (f, MODELS[k]) for k, f in _BUILDERS.items()}


REGISTRY.update({f"tracr-{case}": (functools.partial(load_tracr_model, case), tracr_description(case, desc))
                 for case, desc in tracr_index().items()})
REGISTRY.update({f"siit-{case}": (functools.partial(load_siit_model, case), siit_description(case))
                 for case in siit_names()})


def names() -> list[str]:
    return sorted(REGISTRY)


def describe() -> dict[str, str]:
    return {k: REGISTRY[k][1] for k in names()}


__all__ = ["names", "describe", "build_tiny_lm", "build_mlp", "word_tokenizer", "build_gate", "train_gate",
           "build_adder"]
__all__ += ["DigitsMLP", "build_digits_mlp"]
