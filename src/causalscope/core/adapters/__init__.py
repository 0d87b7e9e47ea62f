"""Adapters map a model's own modules onto sites. Pick one with :func:`adapter_for`."""
from __future__ import annotations

from typing import Any

from torch import nn

from ...errors import InputError
from ._base import Adapter, Batch, Resolved, primary
from ._compiled import CompiledAdapter, is_compiled_transformer
from ._hf import ARCHS, HFCausalLMAdapter, is_hf_causal_lm
from ._segmented import KV, SegmentedLM, segmented
from ._tl import TransformerLensAdapter, is_hooked_transformer


def adapter_for(model: Any, tokenizer: Any = None, name: str | None = None, generic: bool = False) -> Adapter:
    """The adapter that knows ``model`` best (HF causal LM, HookedTransformer, else any nn.Module)."""
    if not isinstance(model, nn.Module):
        raise InputError(f"causalscope works on torch.nn.Module objects; got {type(model).__name__}. "
                         f"Pass a model, a bundled model name or a local Hugging Face directory to causalscope.load.")
    if not generic and is_compiled_transformer(model):
        return CompiledAdapter(model, tokenizer, name)
    if not generic and is_hooked_transformer(model):
        return TransformerLensAdapter(model, tokenizer, name)
    if not generic and is_hf_causal_lm(model) and getattr(model.config, "model_type", None) in ARCHS:
        return HFCausalLMAdapter(model, tokenizer, name)
    return Adapter(model, tokenizer, name)


__all__ = ["Adapter", "Batch", "Resolved", "CompiledAdapter", "HFCausalLMAdapter", "KV", "SegmentedLM",
           "TransformerLensAdapter", "adapter_for", "primary", "segmented"]
