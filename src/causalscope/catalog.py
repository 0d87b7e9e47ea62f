"""What ships with causalscope, as plain data: the bundled models' names and descriptions and the tracr cases,
readable without importing torch (the command line's ``models`` and ``--help`` use it; ``zoo`` builds the models).

>>> sorted(describe())[:3]
['adder', 'adder-rotated', 'and-gate']
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

#: the bundled models but the tracr cases: name -> what it is
MODELS: dict[str, str] = {
    'tiny-gpt2': (
        'GPT-2 architecture, 4 layers, d=64, 4 heads, random weights (seed 0), word-level tokenizer: '
        'exercises the machinery'
    ),
    'tiny-neox': (
        'GPT-NeoX architecture, same size, random weights (seed 0)'
    ),
    'tiny-llama': (
        'Llama architecture (GQA), same size, random weights (seed 0)'
    ),
    'mlp': (
        'MLP 16-32-32-4 with ReLU, random weights (seed 0): a plain nn.Module'
    ),
    'adder': (
        "Linear(3,3)-Linear(3,3)-Linear(3,1) computing A+B+C (the causal-mediation tutorial's toy network; "
        'h12 = A, h13 = B+C, h22 = A+B+C, h23 dead)'
    ),
    'adder-rotated': (
        'the adder with layer 1 rotated by a random orthogonal matrix: no single neuron carries A (DAS)'
    ),
    'and-gate': (
        "Linear(2,1)+Sigmoid AND gate with the latent-circuits seed's trained weights (docs/patching.md)"
    ),
    'or-gate': (
        "Linear(2,1)+Sigmoid OR gate with the seed's trained weights"
    ),
    'digits-mlp': (
        "MLP 64-256-128-64-10 (ReLU; sites fc1..fc4, act1..act3), TRAINED on scikit-learn's 8x8 digits "
        '(cs.data.digits): 97.2% test accuracy (360 held-out images)'
    ),
    'facts-gpt': (
        'GPT-2, 8 layers, d=128, 4 heads, TRAINED on a synthetic knowledge corpus (200 invented people x 5 '
        'relations; docs/facts-model.md): for causal tracing'
    ),
}

TRACR_INDEX = Path(__file__).resolve().parent / "zoo" / "data" / "tracr" / "index.json"


@functools.lru_cache(maxsize=1)
def tracr_cases() -> dict[str, str]:
    """The shipped tracr cases: name -> description (empty where the data files are absent)."""
    if not TRACR_INDEX.is_file():
        return {}
    return dict(sorted(json.loads(TRACR_INDEX.read_text()).items()))


def tracr_description(case: str, desc: str) -> str:
    return f"tracr-compiled RASP program, exact weights and ground-truth circuit: {desc}"


SIIT_DATA = Path(__file__).resolve().parent / "zoo" / "data" / "siit"


def siit_cases() -> list[str]:
    """The tracr cases with a shipped SIIT-trained model."""
    return sorted(p.name for p in SIIT_DATA.iterdir() if (p / "siit.json").is_file()) if SIIT_DATA.is_dir() else []


def siit_description(case: str) -> str:
    return (f"transformer TRAINED with SIIT (InterpBench's method) so that the circuit of tracr case {case!r} "
            f"implements its program: circuits.load_case({case!r}, trained=True)")


def describe() -> dict[str, str]:
    """Every bundled model's name -> description, sorted by name."""
    out = dict(MODELS)
    out.update({f"tracr-{case}": tracr_description(case, d) for case, d in tracr_cases().items()})
    out.update({f"siit-{case}": siit_description(case) for case in siit_cases()})
    return dict(sorted(out.items()))
