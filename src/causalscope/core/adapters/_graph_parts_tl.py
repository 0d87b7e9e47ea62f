"""The parts a circuit graph runs, for a TransformerLens ``HookedTransformer`` (sequential, pre-norm blocks).

>>> parts = TransformerLensParts(hooked_transformer)
>>> x = parts.embed(tokens)                              # hook_embed + hook_pos_embed, (B, T, d)
>>> parts.heads(0, x).sum(2) + parts.attn_bias(0)       # == blocks.0.hook_attn_out
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import InputError

#: config flags (name, value that is fine) whose other values change the block in ways the graph cannot express
_PLAIN_FLAGS = (("parallel_attn_mlp", False), ("use_normalization_before_and_after", False),
                ("use_attention_sinks", False), ("post_embedding_ln", False), ("load_in_4bit", False),
                ("use_logn_attn", False), ("use_dynamic_ntk_rope", False))
_POSITIONS = ("standard", "rotary")


def check_supported(cfg: Any) -> None:
    """Raise :class:`InputError` where a HookedTransformer is not a sequential pre-norm transformer.

    >>> check_supported(model.cfg)              # None for GPT-2-style (and rotary, RMS-norm) models
    """
    bad = [f"{name}={getattr(cfg, name)!r}" for name, ok in _PLAIN_FLAGS if getattr(cfg, name, ok) != ok]
    pos = getattr(cfg, "positional_embedding_type", "standard")
    if pos not in _POSITIONS:
        bad.append(f"positional_embedding_type={pos!r}")
    kv = getattr(cfg, "n_key_value_heads", None)
    if kv not in (None, cfg.n_heads):
        bad.append(f"n_key_value_heads={kv} (grouped-query attention)")
    arch = str(getattr(cfg, "original_architecture", "") or "")
    if arch.startswith("Olmo"):
        bad.append(f"original_architecture={arch!r} (post-norm / QK-norm on full vectors)")
    if bad:
        raise InputError(f"Circuit discovery on a HookedTransformer needs sequential pre-norm blocks with one key "
                         f"and value per head and standard or rotary positions; this model has {', '.join(bad)}.")


class TransformerLensParts:
    """Embedding, per-head attention writes, MLPs and unembedding of a HookedTransformer as plain functions.

    >>> g = circuits.ComputeGraph(cs.load(hooked_transformer))    # uses TransformerLensAdapter.graph_parts()

    Each head's write is its ``z @ W_O`` (``blocks.l.attn.hook_result``) without ``b_O``; ``attn_bias(l)`` is
    ``b_O``. A per-head input (B, T, H, d) gets ``ln1`` per head copy, as with ``use_split_qkv_input``.
    The model is only read: no hooks are added and no weights change.
    """

    def __init__(self, model: nn.Module) -> None:
        ht: Any = model  # a transformer_lens HookedTransformer: its parts and ``cfg`` are not on nn.Module
        check_supported(ht.cfg)
        self.model = ht
        self.cfg = ht.cfg
        self.n_layers = int(self.cfg.n_layers)
        self.n_heads = int(self.cfg.n_heads)
        self.d_model = int(self.cfg.d_model)

    @property
    def embed_device(self) -> torch.device:
        """Where the embedding weights (and so the token ids) live."""
        return self.model.embed.W_E.device

    @property
    def causal(self) -> bool:
        """Whether every position attends only to itself and earlier ones (then prompts padded on the right run
        unmasked: no real position reads the padding)."""
        return all((getattr(b.attn, "_attention_dir_override", None) or self.cfg.attention_dir) == "causal"
                   for b in self.model.blocks)

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """None: a HookedTransformer takes unpadded token ids here (no attention mask)."""
        return None

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``hook_embed + hook_pos_embed`` (rotary models: ``hook_embed`` only)."""
        x = self.model.embed(tokens)
        if self.cfg.positional_embedding_type == "standard":
            x = x + self.model.pos_embed(tokens)
        return x

    def heads(self, layer: int, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head writes (B, T, H, d) for a residual input (B, T, d) or one copy per head (B, T, H, d)."""
        block = self.model.blocks[layer]
        attn = block.attn
        xn = block.ln1(x)
        spec = "btd,hde->bthe" if xn.ndim == 3 else "bthd,hde->bthe"
        q = torch.einsum(spec, xn, attn.W_Q) + attn.b_Q
        k = torch.einsum(spec, xn, attn.W_K) + attn.b_K
        v = torch.einsum(spec, xn, attn.W_V) + attn.b_V
        clip = getattr(self.cfg, "clip_qkv", None)
        if clip is not None:
            q, k, v = (t.clamp(-clip, clip) for t in (q, k, v))
        if getattr(self.cfg, "use_qk_norm", False):
            q, k = attn._apply_qk_norm(q, attn.q_norm), attn._apply_qk_norm(k, attn.k_norm)
        if self.cfg.positional_embedding_type == "rotary":
            q, k = attn.apply_rotary(q, 0, None), attn.apply_rotary(k, 0, None)
        scores = attn.calculate_attention_scores(q, k)  # (B, H, Tq, Tk): / attn_scale, soft cap
        if (getattr(attn, "_attention_dir_override", None) or self.cfg.attention_dir) == "causal":
            scores = attn.apply_causal_mask(scores, 0, None)  # local windows too
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :].to(scores.device),
                                        torch.finfo(scores.dtype).min)
        pattern = torch.softmax(scores, dim=-1)
        pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern).to(v.dtype)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        return torch.einsum("bqhe,hed->bqhd", z, attn.W_O)

    def attn_bias(self, layer: int) -> torch.Tensor:
        return self.model.blocks[layer].attn.b_O

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The MLP's write for residual input ``x`` (``ln2`` inside); zeros for attention-only models."""
        block = self.model.blocks[layer]
        if self.cfg.attn_only:
            return torch.zeros_like(x)
        return block.mlp(block.ln2(x))

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        """``ln_final`` then ``unembed`` (and the output soft cap, where the model has one)."""
        if self.cfg.normalization_type is not None:
            resid = self.model.ln_final(resid)
        out = self.model.unembed(resid)
        cap = float(getattr(self.cfg, "output_logits_soft_cap", -1.0) or -1.0)
        return cap * torch.tanh(out / cap) if cap > 0 else out
