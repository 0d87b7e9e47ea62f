"""The shipped SIIT-trained models: small transformers trained (``causalscope.circuits.siit``) so that a tracr
case's circuit implements its program; read from package data, with the case's tokenizer.

>>> model, tok = load_siit_model("reverse")
>>> siit_names()
['frac-prevs', 'hist', 'ib3-frac-prevs', 'majority', 'pair-balance', 'reverse', 'sort']
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from ..errors import InputError
from .compiled import CompiledConfig, CompiledTransformer
from .tracr import CaseTokenizer, load_tracr_model

DATA = Path(__file__).resolve().parent / "data" / "siit"
FORMAT = "causalscope-siit/1"


def siit_names() -> list[str]:
    """The cases with a shipped SIIT-trained model, sorted."""
    return sorted(p.name for p in DATA.iterdir() if (p / "siit.json").is_file()) if DATA.is_dir() else []


def read_siit_folder(folder: str | Path) -> tuple[CompiledTransformer, dict[str, Any]]:
    """A trained model (eval mode, no gradients) and its ``siit.json`` header from a folder written by
    ``circuits.SIITModel.save``; anything else is refused with an InputError naming the file."""
    d = Path(folder)
    head_path, weights = d / "siit.json", d / "model.safetensors"
    if not head_path.is_file() or not weights.is_file():
        raise InputError(f"{d} is not a SIIT model folder: it needs siit.json and model.safetensors "
                         f"(written by circuits.SIITModel.save).")
    try:
        head = json.loads(head_path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{head_path} is not valid JSON ({e}); rewrite it with SIITModel.save.") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT or not isinstance(head.get("config"), dict):
        raise InputError(f"{head_path} is not a {FORMAT} header; rewrite it with SIITModel.save.")
    try:
        model = CompiledTransformer(CompiledConfig(**head["config"]))
        model.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as e:  # a wrong shape, a missing tensor, a truncated file
        raise InputError(f"{weights} does not hold the weights its siit.json describes ({e}).") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, head


def load_siit_model(name: str) -> tuple[CompiledTransformer, CaseTokenizer]:
    """One shipped SIIT-trained model (a new module each call) and its case's tokenizer."""
    if name not in siit_names():
        raise InputError(f"No SIIT-trained model for {name!r}; the shipped ones are {', '.join(siit_names())}.")
    model, _ = read_siit_folder(DATA / name)
    return model, load_tracr_model(name)[1]
