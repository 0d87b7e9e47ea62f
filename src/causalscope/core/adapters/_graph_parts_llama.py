"""The parts a circuit graph runs, for Hugging Face Llama-family causal LMs (Llama, Mistral, Qwen2, Qwen3).

>>> parts = LlamaParts(LlamaForCausalLM(LlamaConfig(num_attention_heads=4, num_key_value_heads=2, ...)))
>>> x = parts.embed(ids)                                 # embed_tokens, (B, T, d)
>>> parts.heads(0, x).sum(2) + parts.attn_bias(0)       # == model.layers.0.self_attn output

Grouped-query attention: query head ``h`` reads key / value head ``h // (heads / key-value heads)``, as
``repeat_kv`` does; with one residual copy per query head (B, T, H, d) each head computes its own keys and
values from its own copy, so gradients and patches stay per head. :func:`graph_parts_for` picks the parts
class (this one, or :class:`~._graph_parts_neox.NeoXParts`) for an ``HFCausalLMAdapter``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ._graph_attention import attend, out_proj, positions, project, rotate, zero_bias
from ._graph_parts_neox import NeoXParts

#: Hugging Face model_type values of the Llama family whose graph parts causalscope builds
LLAMA_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def graph_parts_for(adapter: Any) -> LlamaParts | NeoXParts | None:
    """The circuit-graph parts of an ``HFCausalLMAdapter``'s model: :class:`LlamaParts` (Llama, Mistral, Qwen2,
    Qwen3), :class:`~._graph_parts_neox.NeoXParts` (GPT-NeoX / Pythia), or None for other model types.

    >>> graph_parts_for(cs.load(LlamaForCausalLM(cfg)).adapter).n_heads      # query heads
    4
    """
    mtype = getattr(getattr(adapter, "config", None), "model_type", None)
    if mtype in LLAMA_MODEL_TYPES:
        return LlamaParts(adapter.module)
    if mtype == "gpt_neox":
        return NeoXParts(adapter.module)
    return None


# ------------------------------------------------------------------------------------------------------------
def check_supported(model: nn.Module) -> None:
    """Raise :class:`InputError` unless ``model`` is a Llama-family causal LM (``model.layers``, ``lm_head``).

    >>> check_supported(LlamaForCausalLM(LlamaConfig()))        # None
    """
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    base: Any = getattr(model, "model", None)
    ok = mtype in LLAMA_MODEL_TYPES and base is not None and \
        all(hasattr(base, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb"))
    if ok:
        attn = [getattr(layer, "self_attn", None) for layer in base.layers]
        ok = all(a is not None and all(isinstance(getattr(a, p, None), nn.Linear) for p in _ATTN) for a in attn) \
            and all(hasattr(layer, n) for layer in base.layers for n in ("mlp", "input_layernorm",
                                                                          "post_attention_layernorm"))
    if not ok or getattr(model, "get_output_embeddings", lambda: None)() is None:
        raise InputError(f"Llama-family graph parts need a transformers *ForCausalLM of model_type "
                         f"{', '.join(LLAMA_MODEL_TYPES)} (model.embed_tokens, model.layers with "
                         f"self_attn.q/k/v/o_proj, model.norm, model.rotary_emb, lm_head); {type(model).__name__} "
                         f"(model_type {mtype!r}) is not one.")


class LlamaParts:
    """Embedding, per-head attention writes, MLPs and unembedding of a Llama-family LM as plain functions.

    >>> g = circuits.ComputeGraph(cs.load(llama_for_causal_lm))     # through HFCausalLMAdapter.graph_parts()

    Head ``h``'s write is its slice of the ``o_proj`` input (``z_h``) times its columns of ``o_proj.weight``;
    ``attn_bias(l)`` is ``o_proj.bias`` (zeros where there is none). ``input_layernorm`` (RMSNorm) runs per
    head copy; Qwen3's ``q_norm`` / ``k_norm`` per head; rotary positions come from the model's own
    ``rotary_emb``; Mistral's and Qwen2/3's sliding windows are kept. Eval-mode arithmetic (no dropout). The
    model is only read: no hooks, no weight changes.
    """

    #: every position attends only to itself and earlier ones: prompts padded on the right run unmasked
    causal = True

    #: the MLP reads the residual stream after this layer's heads (sequential block)
    parallel_mlp = False

    def __init__(self, model: nn.Module) -> None:
        check_supported(model)
        lm: Any = model  # a transformers Llama-family LM (check_supported): its parts are not on nn.Module
        self.model = lm
        self.config: Any = lm.config
        base = lm.model
        self.embed_tokens, self.blocks, self.norm, self.rotary = base.embed_tokens, base.layers, base.norm, \
            base.rotary_emb
        self.lm_head = lm.get_output_embeddings()
        self.n_layers = len(self.blocks)
        c = self.config
        self.n_heads = int(c.num_attention_heads)
        self.n_kv_heads = int(getattr(c, "num_key_value_heads", None) or self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise InputError(f"{self.n_heads} attention heads do not split into {self.n_kv_heads} key-value groups.")
        self.d_model = int(c.hidden_size)
        attn = self.blocks[0].self_attn
        self.d_head = int(getattr(attn, "head_dim", None) or self.d_model // self.n_heads)
        if getattr(c, "pretraining_tp", 1) not in (None, 1):
            raise InputError(f"pretraining_tp={c.pretraining_tp} splits the projections in a way the graph does "
                             f"not reproduce; set config.pretraining_tp = 1 (the same model, computed whole).")

    @property
    def embed_device(self) -> torch.device:
        """Where the token embedding (and so the token ids) lives."""
        return self.embed_tokens.weight.device

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """None: the graph runs unpadded token ids (no attention mask)."""
        return None

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``embed_tokens`` (the input of layer 0; positions enter as rotary embeddings inside attention)."""
        return self.embed_tokens(tokens)

    def window(self, layer: int) -> int | None:
        """The sliding window of ``layer``'s attention (None: full causal attention)."""
        c = self.config
        if c.model_type == "mistral":
            return getattr(c, "sliding_window", None)
        types = getattr(c, "layer_types", None)
        if types is not None and types[layer] == "sliding_attention":
            return getattr(c, "sliding_window", None)
        return None

    def _weights(self, layer: int) -> tuple[Any, ...]:
        """(H, e, d) query, key and value weights per query head (key / value heads repeated per group)."""
        a = self.blocks[layer].self_attn
        H, e, g = self.n_heads, self.d_head, self.n_heads // self.n_kv_heads
        out: list[Any] = [a.q_proj.weight.view(H, e, -1), None if a.q_proj.bias is None else a.q_proj.bias.view(H, e)]
        for lin in (a.k_proj, a.v_proj):
            out.append(lin.weight.view(self.n_kv_heads, e, -1).repeat_interleave(g, 0))
            out.append(None if lin.bias is None else lin.bias.view(self.n_kv_heads, e).repeat_interleave(g, 0))
        return tuple(out)

    def heads(self, layer: int, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head writes (B, T, H, d) for a residual input (B, T, d) or one copy per head (B, T, H, d)."""
        block = self.blocks[layer]
        attn = block.self_attn
        xn = block.input_layernorm(x)
        wq, bq, wk, bk, wv, bv = self._weights(layer)
        q, k, v = project(xn, wq, bq), project(xn, wk, bk), project(xn, wv, bv)
        if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head's query / key
            q, k = attn.q_norm(q), attn.k_norm(k)
        cos, sin = positions(self.rotary, x)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        scale = float(getattr(attn, "scaling", self.d_head ** -0.5))
        z = attend(q, k, v, scale, key_mask, self.window(layer))
        return out_proj(z, attn.o_proj.weight)

    def attn_bias(self, layer: int) -> torch.Tensor:
        return zero_bias(self.blocks[layer].self_attn.o_proj)

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The MLP's write for residual input ``x`` (``post_attention_layernorm`` inside)."""
        block = self.blocks[layer]
        return block.mlp(block.post_attention_layernorm(x))

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        """``model.norm`` then ``lm_head``."""
        return self.lm_head(self.norm(resid))
