"""Adapters map a model's own modules onto sites. Pick one with :func:`adapter_for`."""
from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ...errors import InputError
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
    if not generic and is_compiled_transformer(model):
        return CompiledAdapter(model, tokenizer, name)
    if not generic and is_hooked_transformer(model):
        return TransformerLensAdapter(model, tokenizer, name)
    if not generic and is_hf_causal_lm(model):
        if getattr(model.config, "model_type", None) in ARCHS:
            return HFCausalLMAdapter(model, tokenizer, name)
        warnings.warn(unknown_architecture(model), ArchitectureWarning, stacklevel=3)
    return TokenizedAdapter(model, tokenizer, name) if tokenizer is not None else Adapter(model, tokenizer, name)


__all__ = ["ARCHS", "Adapter", "Arch", "ArchitectureWarning", "Batch", "Resolved", "CompiledAdapter",
           "HFCausalLMAdapter", "KV", "SegmentedLM", "TokenizedAdapter", "TransformerLensAdapter", "adapter_for",
           "primary", "segmented"]
