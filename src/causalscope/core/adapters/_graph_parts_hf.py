"""The parts a circuit graph runs, for a Hugging Face GPT-2-style causal LM (``GPT2LMHeadModel``).

>>> parts = GPT2Parts(GPT2LMHeadModel(GPT2Config(n_layer=2)))
>>> x = parts.embed(ids)                                 # wte + wpe, (B, T, d)
>>> parts.heads(0, x).sum(2) + parts.attn_bias(0)       # == transformer.h.0.attn output
"""
from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from ...errors import InputError

#: Hugging Face model_type values whose graph parts causalscope can build
GRAPH_MODEL_TYPES = ("gpt2",)


def check_supported(model: nn.Module) -> None:
    """Raise :class:`InputError` unless ``model`` is a GPT-2-style causal LM (``transformer.h``, ``lm_head``).

    >>> check_supported(GPT2LMHeadModel(GPT2Config()))        # None
    """
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    tr = getattr(model, "transformer", None)
    if mtype not in GRAPH_MODEL_TYPES or tr is None or not all(hasattr(tr, a) for a in ("wte", "wpe", "h", "ln_f")) \
            or cast(Any, model).get_output_embeddings() is None:  # a transformers model here
        raise InputError(f"Circuit discovery on Hugging Face models supports GPT-2 (model_type "
                         f"{', '.join(GRAPH_MODEL_TYPES)}), the Llama family (llama, mistral, qwen2, qwen3) and "
                         f"GPT-NeoX; {type(model).__name__} (model_type {mtype!r}) has no graph parts. Convert it to "
                         f"a TransformerLens HookedTransformer, whose adapter has them.")


class GPT2Parts:
    """Embedding, per-head attention writes, MLPs and unembedding of a GPT-2 LM as plain functions.

    >>> g = circuits.ComputeGraph(cs.load(gpt2_lm_head_model))     # uses HFCausalLMAdapter.graph_parts()

    Head ``h``'s write is its slice of the ``c_proj`` input (``z_h``) times its rows of ``c_proj.weight``;
    ``attn_bias(l)`` is ``c_proj.bias``. A per-head input (B, T, H, d) gets ``ln_1`` per head copy. Eval-mode
    arithmetic (no dropout), eager attention. The model is only read: no hooks, no weight changes.
    """

    #: every position attends only to itself and earlier ones: prompts padded on the right run unmasked
    causal = True

    def __init__(self, model: nn.Module) -> None:
        check_supported(model)
        lm: Any = model  # a GPT-2-style transformers LM (check_supported): its parts are not on nn.Module
        self.model = lm
        self.config: Any = lm.config
        tr = lm.transformer
        self.wte, self.wpe, self.blocks, self.ln_f = tr.wte, tr.wpe, tr.h, tr.ln_f
        self.lm_head = lm.get_output_embeddings()
        self.n_layers = len(self.blocks)
        self.n_heads = int(self.config.n_head)
        self.d_model = int(self.config.n_embd)
        self.d_head = self.d_model // self.n_heads

    @property
    def embed_device(self) -> torch.device:
        """Where the token embedding (and so the token ids) lives."""
        return self.wte.weight.device

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """None: the graph runs unpadded token ids (no attention mask)."""
        return None

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token plus position embedding (the input of block 0, without dropout)."""
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        return self.wte(tokens) + self.wpe(pos)[None]

    def _scale(self, layer: int) -> float:
        c = self.config
        s = self.d_head ** -0.5 if getattr(c, "scale_attn_weights", True) else 1.0
        return s / (layer + 1) if getattr(c, "scale_attn_by_inverse_layer_idx", False) else s

    def heads(self, layer: int, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head writes (B, T, H, d) for a residual input (B, T, d) or one copy per head (B, T, H, d)."""
        block = self.blocks[layer]
        attn = block.attn
        H, e, d = self.n_heads, self.d_head, self.d_model
        xn = block.ln_1(x)
        w = attn.c_attn.weight.view(d, 3, H, e)  # Conv1D: (in, out); out = [q | k | v], each heads x d_head
        b = attn.c_attn.bias.view(3, H, e)
        spec = "btd,dhe->bthe" if xn.ndim == 3 else "bthd,dhe->bthe"
        q, k, v = (torch.einsum(spec, xn, w[:, i]) + b[i] for i in range(3))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self._scale(layer)
        if getattr(self.config, "reorder_and_upcast_attn", False):
            scores = scores.float()
        T = x.shape[1]
        low = torch.finfo(scores.dtype).min
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=scores.device).triu(1), low)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :].to(scores.device), low)
        pattern = torch.softmax(scores, dim=-1).to(v.dtype)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        return torch.einsum("bqhe,hed->bqhd", z, attn.c_proj.weight.view(H, e, d))

    def attn_bias(self, layer: int) -> torch.Tensor:
        return self.blocks[layer].attn.c_proj.bias

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The MLP's write for residual input ``x`` (``ln_2`` inside)."""
        block = self.blocks[layer]
        return block.mlp(block.ln_2(x))

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        """``ln_f`` then ``lm_head``."""
        return self.lm_head(self.ln_f(resid))
