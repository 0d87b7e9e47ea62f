"""The Hugging Face architecture table: one :class:`Arch` per family (keyed by ``config.model_type``) says where
the family keeps its parts and what its blocks need in the segmented forward. Everything family-specific of
:class:`HFCausalLMAdapter` lives here; the adapter itself is generic.

>>> ARCHS["gemma2"].mlp                      # the MLP's write into the residual stream (after Gemma-2's post-norm)
'post_feedforward_layernorm'
>>> ARCHS["falcon"].family, ARCHS["bloom"].bias is not None
('Falcon', True)
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import CausalScopeWarning, InputError

#: per layer type, the attention masks of one segmented call
Masks = dict[str, Any]
#: (the adapter, hidden states, key length, masks) -> (masks, extra block keyword arguments)
Bias = Callable[[Any, torch.Tensor, int, Masks], tuple[Masks, dict[str, Any]]]


class ArchitectureWarning(CausalScopeWarning):
    """A model causalscope has no site map for: it runs as a plain module (module paths only).

    >>> import warnings; warnings.simplefilter("error", ArchitectureWarning)   # make it an error
    """


@dataclass(frozen=True)
class Arch:
    """Where one family keeps its parts: module paths relative to the LM (``embed``, ``layers``, ...) or to one
    block (``attn``, ``mlp``, ``out_proj``, ``mlp_module``). A path may list alternatives ``"a|b"`` (names
    differ across transformers versions); the adapter takes the first the model has.

    ``attn`` / ``mlp`` are the module whose output is that sublayer's write into the residual stream (the
    canonical ``layers.i.attn`` / ``layers.i.mlp``): the attention / MLP module itself for most families, the
    post-norm after it for Gemma-2/3 and OLMo-2, the output projection for BLOOM (whose attention and MLP
    modules add the residual themselves). ``mlp=None``: the family has no such module (OPT: ``fc1`` / ``fc2``
    see tokens flattened to ``(batch*tokens, d)``), ``no_mlp`` says so.
    """

    family: str
    embed: str
    layers: str
    attn: str
    mlp: str | None
    out_proj: str          # per-head outputs (layers.i.attn.z) are this module's input
    final_norm: str | None
    unembed: str = "lm_head"
    n_heads_attr: str = "num_attention_heads"
    pos_embed: str | None = None       # learned absolute positions, added to the token embeddings
    #: the position embeddings of ``position_ids`` (1, T) from the ``pos_embed`` module (default: module(ids))
    positions: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    dropout: str | None = None         # the embedding dropout (a no-op in eval mode)
    embed_norm: str | None = None      # a norm on the embeddings (BLOOM)
    #: Gemma scales the token embeddings by sqrt(hidden_size): inside the embedding module in transformers 5, in
    #: the model's forward before (then the segmented forward's ``embed`` does it)
    embed_sqrt_d: bool = False
    project_in: str | None = None      # embeddings -> hidden size (OPT when word_embed_proj_dim != hidden_size)
    project_out: str | None = None     # hidden size -> embedding size before the unembedding (OPT)
    mlp_module: str | None = None      # the MLP module when ``mlp`` names another one (its input is cut to the
    # last position where only that position is read); None: ``mlp`` itself
    #: the block adds to the MLP output in place (Falcon with parallel attention): its input is never cut to the
    #: last position (the engine hands gradient sites a copy, so IG there works)
    mlp_in_place: bool = False
    #: which attention mask each block gets: "causal" (all full), "window" (all sliding when
    #: config.sliding_window is set, as Mistral does), "types" (config.layer_types[i], as Gemma-2 / Qwen2 do)
    masks: str = "causal"
    mask_kwargs: tuple[tuple[str, Any], ...] = ()   # extra arguments of transformers' create_*_mask
    bias: Bias | None = None           # position biases (ALiBi): folded into the masks or passed to the blocks
    softcap: str | None = None         # config attribute of the final logit soft-capping, applied after unembed
    no_mlp: str | None = None          # why the family has no layers.i.mlp site
    experts: str | None = None         # how a mixture-of-experts MLP is stored (what is a site)


def _opt_positions(module: nn.Module, position_ids: torch.Tensor) -> torch.Tensor:
    return module(None, 0, position_ids=position_ids)  # OPTLearnedPositionalEmbedding adds its offset of 2


def _bloom_alibi(lm: Any, hidden: torch.Tensor, kv_len: int, masks: Masks) -> tuple[Masks, dict]:
    """BLOOM's ALiBi for keys 0..kv_len-1, as BloomModel.forward builds it (an all-ones mask: no padding)."""
    base: Any = lm.base_module
    ones = torch.ones(hidden.shape[0], kv_len, dtype=torch.long, device=hidden.device)
    return masks, {"alibi": base.build_alibi_tensor(ones, lm.n_heads, dtype=hidden.dtype)}


def _falcon_alibi(lm: Any, hidden: torch.Tensor, kv_len: int, masks: Masks) -> tuple[Masks, dict]:
    """Falcon with ``alibi=True`` folds the ALiBi bias into the attention mask (FalconModel.forward does the same).
    Blocks of transformers 4.x take an ``alibi`` argument instead (None without ALiBi)."""
    old_blocks = "alibi" in inspect.signature(type(lm.layers[0]).forward).parameters
    if not getattr(lm.config, "alibi", False):
        return masks, ({"alibi": None} if old_blocks else {})
    if old_blocks:
        raise InputError("Falcon with alibi=True: the blocks of this transformers version build their ALiBi mask in "
                         "a model-private method causalscope does not call. Upgrade transformers (5.x folds it into "
                         "the mask), or load the model with causalscope.load(model, generic=True).")
    from transformers.models.falcon.modeling_falcon import build_alibi_tensor

    B, H = hidden.shape[0], lm.n_heads
    ones = torch.ones(B, kv_len, dtype=torch.long, device=hidden.device)
    alibi = build_alibi_tensor(ones, H, dtype=hidden.dtype)
    alibi = alibi.reshape(B, -1, *alibi.shape[1:]) / math.sqrt(lm.config.hidden_size // H)
    low = torch.finfo(hidden.dtype).min
    out: Masks = {}
    for kind, mask in masks.items():
        if mask.dtype == torch.bool:
            mask = torch.where(mask, torch.full((), 0.0, device=mask.device, dtype=hidden.dtype), low)
        out[kind] = torch.masked_fill(alibi, mask < -1, low)
    return out, {}


_MOE = ("fused: `layers.i.mlp` is the whole mixture-of-experts block (router, experts{shared}, weighted sum). "
        "The routed experts are one module (`{layers}.i.mlp.experts`) holding 3-D weights, run on tokens flattened "
        "to (batch*tokens, d) and only on the tokens routed to each expert: no module outputs one expert's "
        "(batch, tokens, d) contribution, so per-expert sub-sites (layers.i.mlp.experts.k) do not exist, and the "
        "experts / router modules are refused as sites (dim 0 is not the batch)")


def _llama_like(family: str, **kw: Any) -> Arch:
    return Arch(family, "model.embed_tokens", "model.layers", kw.pop("attn", "self_attn"), kw.pop("mlp", "mlp"),
                "self_attn.o_proj", "model.norm", **kw)


_POST_NORMS: dict[str, Any] = dict(attn="post_attention_layernorm", mlp="post_feedforward_layernorm",
                                   mlp_module="mlp")

ARCHS: dict[str, Arch] = {
    "gpt2": Arch("GPT-2", "transformer.wte", "transformer.h", "attn", "mlp", "attn.c_proj", "transformer.ln_f",
                 pos_embed="transformer.wpe", dropout="transformer.drop", n_heads_attr="n_head"),
    "gpt_neo": Arch("GPT-Neo", "transformer.wte", "transformer.h", "attn", "mlp", "attn.attention.out_proj",
                    "transformer.ln_f", pos_embed="transformer.wpe", dropout="transformer.drop",
                    n_heads_attr="num_heads"),
    "gptj": Arch("GPT-J", "transformer.wte", "transformer.h", "attn", "mlp", "attn.out_proj", "transformer.ln_f",
                 dropout="transformer.drop", n_heads_attr="n_head"),
    "gpt_neox": Arch("GPT-NeoX / Pythia", "gpt_neox.embed_in", "gpt_neox.layers", "attention", "mlp",
                     "attention.dense", "gpt_neox.final_layer_norm", unembed="embed_out",
                     dropout="gpt_neox.emb_dropout"),
    "opt": Arch("OPT", "model.decoder.embed_tokens", "model.decoder.layers", "self_attn", None, "self_attn.out_proj",
                "model.decoder.final_layer_norm", pos_embed="model.decoder.embed_positions", positions=_opt_positions,
                project_in="model.decoder.project_in", project_out="model.decoder.project_out",
                no_mlp="OPT's MLP is no module: its blocks run fc1 / fc2 on tokens flattened to (batch*tokens, d), so "
                       "there is no (batch, tokens, d) MLP output to name. Use layers.i (block output) or "
                       "layers.i.attn; the module paths model.decoder.layers.i.fc2 etc. are flattened."),
    "bloom": Arch("BLOOM", "transformer.word_embeddings", "transformer.h", "self_attention.dense", "mlp.dense_4h_to_h",
                  "self_attention.dense", "transformer.ln_f", embed_norm="transformer.word_embeddings_layernorm",
                  mlp_module="mlp", n_heads_attr="n_head", bias=_bloom_alibi),
    "falcon": Arch("Falcon", "transformer.word_embeddings", "transformer.h", "self_attention", "mlp",
                   "self_attention.dense", "transformer.ln_f", mlp_in_place=True,
                   mask_kwargs=(("allow_is_causal_skip", False),), bias=_falcon_alibi),
    "phi": Arch("Phi", "model.embed_tokens", "model.layers", "self_attn", "mlp", "self_attn.dense",
                "model.final_layernorm", dropout="model.embed_dropout"),
    "phi3": _llama_like("Phi-3", masks="window"),
    "llama": _llama_like("Llama"),
    "mistral": _llama_like("Mistral", masks="window"),
    "mixtral": _llama_like("Mixtral", mlp="mlp|block_sparse_moe", masks="window",
                           experts=_MOE.format(shared="", layers="model.layers")),
    "qwen2_moe": _llama_like("Qwen2-MoE", masks="types",
                             experts=_MOE.format(shared=", the gated shared expert", layers="model.layers")),
    "qwen2": _llama_like("Qwen2", masks="types"),
    "qwen3": _llama_like("Qwen3", masks="types"),
    "gemma": _llama_like("Gemma", embed_sqrt_d=True),
    "gemma2": _llama_like("Gemma-2", masks="types", softcap="final_logit_softcapping", embed_sqrt_d=True,
                          **_POST_NORMS),
    "gemma3_text": _llama_like("Gemma-3", masks="types", softcap="final_logit_softcapping", embed_sqrt_d=True,
                               **_POST_NORMS),
    "olmo": _llama_like("OLMo"),
    "olmo2": _llama_like("OLMo-2", **_POST_NORMS),
    "stablelm": _llama_like("StableLM"),
}


def block_list(module: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The longest ``nn.ModuleList`` of one repeated module class (a transformer's blocks), with its path."""
    best: tuple[str, nn.ModuleList] | None = None
    for path, mod in module.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) and len({type(m) for m in mod}) == 1:
            if best is None or len(mod) > len(best[1]):
                best = (path, mod)
    return best


def unknown_architecture(module: nn.Module) -> str:
    """The warning for a Hugging Face LM with no table entry: what works (module paths) and what does not."""
    config = getattr(module, "config", None)
    mtype = getattr(config, "model_type", None)
    parts: list[str] = []
    blocks = block_list(module)
    named = {id(m): p for p, m in module.named_modules()}
    get_in, get_out = getattr(module, "get_input_embeddings", None), getattr(module, "get_output_embeddings", None)
    emb = get_in() if callable(get_in) else None
    head = get_out() if callable(get_out) else None
    if emb is not None and id(emb) in named:
        parts.append(f"token embeddings {named[id(emb)]!r}")
    if blocks is not None:
        path, mods = blocks
        inside = [n for n, _ in mods[0].named_children()]
        parts.append(f"blocks '{path}.0' .. '{path}.{len(mods) - 1}' (each with "
                     f"{', '.join(repr(n) for n in inside)})")
    if head is not None and id(head) in named:
        parts.append(f"unembedding {named[id(head)]!r}")
    where = "; ".join(parts) if parts else "see m.site_names()"
    return (f"causalscope has no site map for Hugging Face model_type {mtype!r} ({type(module).__name__}), so it "
            f"runs as a plain module. What works: sites named by module path ({where}); run, cache, interventions, "
            f"activation patching (batched schedule) and integrated gradients on them; prompts when loaded with "
            f"a tokenizer. What does not: the canonical names (embed, layers.i, layers.i.attn, layers.i.mlp, "
            f"layers.i.attn.z, final_norm, unembed) and the 'resid_pre' / 'heads' sweeps, the segmented forward "
            f"(forward_from, keep_kv, the floor schedule) and causal_trace. Known model types: "
            f"{', '.join(sorted(ARCHS))}. causalscope.load(model, generic=True) asks for the plain adapter "
            f"(no warning).")
