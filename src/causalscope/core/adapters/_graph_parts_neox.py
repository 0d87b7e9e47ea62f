"""The parts a circuit graph runs, for Hugging Face GPT-NeoX causal LMs (``GPTNeoXForCausalLM``, Pythia).

>>> parts = NeoXParts(GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, ...)))
>>> x = parts.embed(ids)                                 # embed_in, (B, T, d)
>>> parts.heads(0, x).sum(2) + parts.attn_bias(0)       # == gpt_neox.layers.0.attention output

With ``use_parallel_residual=True`` (Pythia's default) a block computes ``x + attn(ln1(x)) + mlp(ln2(x))``:
the MLP reads the block input, not the stream after the heads. ``parallel_mlp`` says so, and the graph then
has no edge from a layer's heads into its own MLP (nor adds that layer's attention bias to the MLP's input).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ._graph_attention import attend, out_proj, positions, project, rotate, zero_bias


def check_supported(model: nn.Module) -> None:
    """Raise :class:`InputError` unless ``model`` is a GPT-NeoX causal LM (``gpt_neox.layers``, ``embed_out``).

    >>> check_supported(GPTNeoXForCausalLM(GPTNeoXConfig()))        # None
    """
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    base: Any = getattr(model, "gpt_neox", None)
    ok = mtype == "gpt_neox" and base is not None and \
        all(hasattr(base, a) for a in ("embed_in", "layers", "final_layer_norm", "rotary_emb"))
    if ok:
        ok = all(isinstance(getattr(getattr(layer, "attention", None), p, None), nn.Linear)
                 for layer in base.layers for p in ("query_key_value", "dense")) \
            and all(hasattr(layer, n) for layer in base.layers for n in ("mlp", "input_layernorm",
                                                                          "post_attention_layernorm"))
    if not ok or getattr(model, "get_output_embeddings", lambda: None)() is None:
        raise InputError(f"GPT-NeoX graph parts need a transformers GPTNeoXForCausalLM (gpt_neox.embed_in, "
                         f"gpt_neox.layers with attention.query_key_value / dense, final_layer_norm, rotary_emb, "
                         f"embed_out); {type(model).__name__} (model_type {mtype!r}) is not one.")


class NeoXParts:
    """Embedding, per-head attention writes, MLPs and unembedding of a GPT-NeoX LM as plain functions.

    >>> g = circuits.ComputeGraph(cs.load(pythia_like_model))     # through HFCausalLMAdapter.graph_parts()

    Head ``h``'s write is its slice of the ``dense`` input (``z_h``) times its columns of ``dense.weight``;
    ``attn_bias(l)`` is ``dense.bias``. ``query_key_value`` lays out each head's query, key and value side by
    side (``[q_h | k_h | v_h]`` per head); partial rotary (``rotary_pct`` < 1) rotates a head's first dims only.
    A per-head input (B, T, H, d) gets ``input_layernorm`` per head copy. Eval-mode arithmetic (no dropout).
    The model is only read: no hooks, no weight changes.
    """

    #: every position attends only to itself and earlier ones: prompts padded on the right run unmasked
    causal = True

    def __init__(self, model: nn.Module) -> None:
        check_supported(model)
        lm: Any = model  # a transformers GPT-NeoX LM (check_supported): its parts are not on nn.Module
        self.model = lm
        self.config: Any = lm.config
        base = lm.gpt_neox
        self.embed_in, self.blocks, self.ln_f, self.rotary = base.embed_in, base.layers, base.final_layer_norm, \
            base.rotary_emb
        self.lm_head = lm.get_output_embeddings()
        self.n_layers = len(self.blocks)
        self.n_heads = int(self.config.num_attention_heads)
        self.d_model = int(self.config.hidden_size)
        if self.d_model % self.n_heads:
            raise InputError(f"hidden_size {self.d_model} does not split into {self.n_heads} heads.")
        self.d_head = self.d_model // self.n_heads
        #: the MLP reads the block input (``use_parallel_residual``), not the stream after this layer's heads
        self.parallel_mlp = bool(getattr(self.config, "use_parallel_residual", True))

    @property
    def embed_device(self) -> torch.device:
        """Where the token embedding (and so the token ids) lives."""
        return self.embed_in.weight.device

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """None: the graph runs unpadded token ids (no attention mask)."""
        return None

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``embed_in`` (the input of layer 0, without dropout; positions are rotary, inside attention)."""
        return self.embed_in(tokens)

    def heads(self, layer: int, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head writes (B, T, H, d) for a residual input (B, T, d) or one copy per head (B, T, H, d)."""
        block = self.blocks[layer]
        attn = block.attention
        H, e = self.n_heads, self.d_head
        xn = block.input_layernorm(x)
        w = attn.query_key_value.weight.view(H, 3, e, -1)
        b = attn.query_key_value.bias
        bias = None if b is None else b.view(H, 3, e)
        q, k, v = (project(xn, w[:, i], None if bias is None else bias[:, i]) for i in range(3))
        cos, sin = positions(self.rotary, x)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        scale = float(getattr(attn, "scaling", e ** -0.5))
        return out_proj(attend(q, k, v, scale, key_mask), attn.dense.weight)

    def attn_bias(self, layer: int) -> torch.Tensor:
        return zero_bias(self.blocks[layer].attention.dense)

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The MLP's write for residual input ``x`` (``post_attention_layernorm`` inside); with
        ``parallel_mlp`` ``x`` is the block input."""
        block = self.blocks[layer]
        return block.mlp(block.post_attention_layernorm(x))

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        """``final_layer_norm`` then ``embed_out``."""
        return self.lm_head(self.ln_f(resid))
