"""Adapters map a model's own modules onto sites. Pick one with :func:`adapter_for`."""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

from ...errors import InputError, check_flag
from ._archs import ARCHS, Arch, ArchitectureWarning, unknown_architecture
from ._base import Adapter, Batch, Resolved, primary
from ._compiled import CompiledAdapter, is_compiled_transformer
from ._hf import HFCausalLMAdapter, is_hf_causal_lm
from ._segmented import KV, SegmentedLM, segmented
from ._tl import TransformerLensAdapter, is_hooked_transformer
from ._tokens import TokenizedAdapter


def adapter_for(model: Any, tokenizer: Any = None, name: str | None = None, generic: bool = False) -> Adapter:
    """The adapter that knows ``model`` best (HF causal LM of a known family, HookedTransformer, else any
    nn.Module). A Hugging Face LM of a family with no site map gets an :class:`ArchitectureWarning` naming
    what works and what does not (``generic=True`` asks for the plain adapter: no warning).

    >>> adapter_for(GPT2LMHeadModel(GPT2Config(n_layer=2)), tok).kind
    'hf-causal-lm'
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"causalscope works on torch.nn.Module objects; got {type(model).__name__}. "
                         f"Pass a model, a bundled model name or a local Hugging Face directory to causalscope.load.")
    check_flag(generic, "generic")
    if name is not None and not isinstance(name, str):
        raise InputError(f"name must be a string (the model's name in results), got {type(name).__name__} {name!r}.")
    if isinstance(tokenizer, (str, bytes, int, float, os.PathLike, Mapping, list, tuple)):
        raise InputError(f"tokenizer must be a tokenizer object (e.g. transformers' "
                         f"AutoTokenizer.from_pretrained(name)) or None; got {type(tokenizer).__name__} "
                         f"{tokenizer!r:.60}. A name or path is not loaded here: load the tokenizer yourself and "
                         f"pass it.")
    _check_materialised(model)
    if not generic and is_compiled_transformer(model):
        return CompiledAdapter(model, tokenizer, name)
    if not generic and is_hooked_transformer(model):
        return TransformerLensAdapter(model, tokenizer, name)
    if not generic and is_hf_causal_lm(model):
        if getattr(model.config, "model_type", None) in ARCHS:
            return HFCausalLMAdapter(model, tokenizer, name)
        warnings.warn(unknown_architecture(model), ArchitectureWarning, stacklevel=3)
    return TokenizedAdapter(model, tokenizer, name) if tokenizer is not None else Adapter(model, tokenizer, name)


def _check_materialised(model: nn.Module) -> None:
    """Refuse a model whose weights have no values (the ``meta`` device), unless accelerate loads them per forward
    (disk offload: a module with an ``_hf_hook``, or inside one, keeps its weights on ``meta`` between calls)."""
    hooked: list[str] = []
    for path, mod in model.named_modules():
        if getattr(mod, "_hf_hook", None) is not None:
            hooked.append(path)
        tensors = [*mod.parameters(recurse=False), *mod.buffers(recurse=False)]
        if not any(t.device.type == "meta" for t in tensors):
            continue
        if any(h == "" or path == h or path.startswith(h + ".") for h in hooked):
            continue
        raise InputError(f"The model's weights are on the meta device (module {path or type(model).__name__!r} has "
                         f"shapes but no values), so it cannot run. Load real weights first: e.g. "
                         f"from_pretrained(...) without device_map='meta', or model.to_empty(device='cpu') followed by "
                         f"model.load_state_dict(...).")


__all__ = ["ARCHS", "Adapter", "Arch", "ArchitectureWarning", "Batch", "Resolved", "CompiledAdapter",
           "HFCausalLMAdapter", "KV", "SegmentedLM", "TokenizedAdapter", "TransformerLensAdapter", "adapter_for",
           "primary", "segmented"]
