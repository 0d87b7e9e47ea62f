"""The model's own readout of the residual stream: final norm and unembedding as one function, for lenses.

>>> head = unembed_fn(cs.load("tiny-gpt2").adapter)
>>> run = m.run("the cat sat", cache=["layers.3"])
>>> torch.equal(head(run.cache["layers.3"]), run.output)     # the last block's output gives the model's logits
True

Hugging Face causal LMs of every family in the architecture table use the adapter's ``head_logits`` (final
norm, OPT's output projection, unembedding, Gemma-2/3's final soft-capping, as the model's forward applies them).
TransformerLens ``HookedTransformer`` models use ``ln_final`` (where the model has one), ``unembed`` and the
output soft cap. Other models have no residual stream to read and raise :class:`~causalscope.InputError`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import InputError
from .adapters import Adapter, HFCausalLMAdapter, TransformerLensAdapter

__all__ = ["unembed_fn"]

#: what :func:`unembed_fn` serves, for error messages
UNEMBED_MODELS = ("Hugging Face causal LMs of a family causalscope maps (GPT-2, GPT-NeoX / Pythia, the Llama family "
                  "and the other families of causalscope.core.adapters.ARCHS) and TransformerLens HookedTransformer "
                  "models")


def unembed_fn(adapter: Adapter) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function ``resid -> logits`` that the model applies to the residual stream after its last block.

    >>> head = unembed_fn(m.adapter)
    >>> head(run.cache[f"layers.{m.n_layers - 1}"])          # == the model's logits
    >>> head(run.cache["layers.1"])                          # the logit lens at layer 1

    ``resid`` is shaped ``(..., d_model)``; the function runs the model's own modules (no copy, no hooks), so
    gradients flow through it to ``resid`` (and to the weights: ask ``torch.autograd.grad`` for the tensors you
    want rather than calling ``backward``, which would fill the parameters' ``.grad``).
    """
    if isinstance(adapter, HFCausalLMAdapter):
        return adapter.head_logits
    if isinstance(adapter, TransformerLensAdapter):
        return _tl_head(adapter.module)
    raise InputError(f"The logit readout (final norm + unembedding) needs a transformer language model: "
                     f"{UNEMBED_MODELS}. This model has a {adapter.kind!r} adapter ({adapter.name}), which has no "
                     f"residual stream or unembedding causalscope knows.")


def _tl_head(model: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``ln_final`` (unless the model has no final norm), ``unembed``, and the output soft cap where there is one."""
    cfg = model.cfg
    norm = model.ln_final if getattr(cfg, "normalization_type", None) is not None else None
    cap = float(getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0)

    def head(resid: torch.Tensor) -> torch.Tensor:
        x = norm(resid) if norm is not None else resid
        out = model.unembed(x)
        return cap * torch.tanh(out / cap) if cap > 0 else out

    return head
