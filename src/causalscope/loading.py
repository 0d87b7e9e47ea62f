"""``causalscope.load``: a bundled name, a local Hugging Face directory, an HF / TransformerLens model or any module."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from . import zoo
from .core import Model
from .core.adapters import adapter_for
from .errors import InputError


def load(model: Any, tokenizer: Any = None, *, name: str | None = None, generic: bool = False) -> Model:
    """Wrap a model for causal work. The model is used in place (never copied, never changed).

    >>> m = causalscope.load("tiny-gpt2")                       # a bundled model (no download)
    >>> m = causalscope.load("/models/my-llama")                # a local Hugging Face directory
    >>> m = causalscope.load(hf_model, tokenizer)               # an in-memory transformers model
    >>> m = causalscope.load(hooked_transformer)                # TransformerLens
    >>> m = causalscope.load(my_net)                            # any nn.Module: sites are module paths

    ``generic=True`` treats a transformer as a plain module (module paths only, no canonical names).
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        key = str(model)
        if key in zoo.REGISTRY:
            module, tok = zoo.REGISTRY[key][0]()
            return Model(adapter_for(module, tokenizer or tok, key, generic), key)
        path = Path(key).expanduser()
        if path.is_dir():
            return _load_hf_dir(path, tokenizer, name, generic)
        raise InputError(f"{key!r} is neither a bundled model ({', '.join(zoo.names())}) nor a local directory. "
                         f"causalscope never downloads: save the model with save_pretrained() and pass its folder.")
    if not isinstance(model, nn.Module):
        raise InputError(f"causalscope.load takes a bundled model name, a local Hugging Face directory or a "
                         f"torch.nn.Module; got {type(model).__name__}.")
    return Model(adapter_for(model, tokenizer, name, generic), name)


def _load_hf_dir(path: Path, tokenizer: Any, name: str | None, generic: bool) -> Model:
    if not (path / "config.json").is_file():
        raise InputError(f"{str(path)!r} has no config.json, so it is not a Hugging Face model directory.")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    module = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    if tokenizer is None and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                                                  "vocab.json", "tokenizer.model")):
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return Model(adapter_for(module, tokenizer, name or path.name, generic), name or path.name)
