"""Hugging Face causal LMs: canonical site names and a segmented forward on the model's own modules."""
from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ...errors import InputError, SiteError
from ._base import Adapter, Batch, primary
from ._segmented import KV

if TYPE_CHECKING:
    from ._graph_parts_hf import GPT2Parts
    from ._graph_parts_llama import LlamaParts
    from ._graph_parts_neox import NeoXParts


@dataclass(frozen=True)
class Arch:
    """Where one architecture keeps its parts (module paths relative to the LM)."""

    embed: str
    layers: str
    attn: str
    mlp: str
    out_proj: str  # per-head outputs are this module's input
    final_norm: str
    unembed: str
    pos_embed: str | None = None
    rotary: str | None = None
    dropout: str | None = None
    past_kw: str = "past_key_values"
    n_heads_attr: str = "num_attention_heads"


_LLAMA = Arch("model.embed_tokens", "model.layers", "self_attn", "mlp", "self_attn.o_proj", "model.norm", "lm_head",
              rotary="model.rotary_emb")
ARCHS: dict[str, Arch] = {
    "gpt2": Arch("transformer.wte", "transformer.h", "attn", "mlp", "attn.c_proj", "transformer.ln_f", "lm_head",
                 pos_embed="transformer.wpe", dropout="transformer.drop", n_heads_attr="n_head"),
    "gpt_neox": Arch("gpt_neox.embed_in", "gpt_neox.layers", "attention", "mlp", "attention.dense",
                     "gpt_neox.final_layer_norm", "embed_out", rotary="gpt_neox.rotary_emb",
                     dropout="gpt_neox.emb_dropout", past_kw="layer_past"),
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA,
}


class HFCausalLMAdapter(Adapter):
    """A Hugging Face ``*ForCausalLM`` (GPT-2, GPT-NeoX, Llama, Mistral, Qwen2/3); a :class:`SegmentedLM`.

    Canonical sites: ``embed``, ``pos_embed`` (GPT-2), ``layers.i`` (block output; ``io="input"`` is the
    block input), ``layers.i.attn``, ``layers.i.mlp``, ``layers.i.attn.z`` (per-head outputs, the input
    of the output projection, split into heads), ``final_norm``, ``unembed`` (logits).

    >>> a = HFCausalLMAdapter(GPT2LMHeadModel(GPT2Config(n_layer=2)), tokenizer)
    >>> h = a.embed(ids)                             # input of block 0
    >>> logits = a.forward_from(h, layer=0)          # equals model(ids).logits
    """

    kind = "hf-causal-lm"

    def __init__(self, module: nn.Module, tokenizer: Any = None, name: str | None = None) -> None:
        super().__init__(module, tokenizer, name or getattr(getattr(module, "config", None), "_name_or_path", None)
                         or type(module).__name__)
        config: Any = getattr(module, "config", None)  # a transformers config, or None (then mtype is None)
        mtype = getattr(config, "model_type", None)
        if mtype not in ARCHS:
            raise InputError(f"causalscope has no canonical site map for Hugging Face model_type {mtype!r} "
                             f"(known: {', '.join(sorted(ARCHS))}). Wrap it as a plain module instead: "
                             f"causalscope.load(model, generic=True), and name sites by module path.")
        self.config = config
        self.arch = ARCHS[mtype]
        self.layers = cast(nn.ModuleList, self._modules[self.arch.layers])
        self.n_layers = len(self.layers)
        self.n_heads = int(getattr(config, self.arch.n_heads_attr))
        self.d_model = int(config.hidden_size)
        head = cast(Any, module).get_output_embeddings()  # a transformers model (is_hf_causal_lm)
        self.unembed_path = next((n for n, m in self._modules.items() if m is head), self.arch.unembed)

    @functools.cached_property
    def _full_attention_only(self) -> bool:
        """No layer uses sliding-window (or other non-full) attention, so the KV cache needs no config."""
        c = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        types = getattr(c, "layer_types", None)
        if types is not None:
            return all(t == "full_attention" for t in types)
        return not getattr(c, "sliding_window", None) or getattr(c, "use_sliding_window", True) is False

    def _part(self, path: str | None) -> nn.Module | None:
        return None if path is None else self._modules[path]

    @functools.cached_property
    def _aliases(self) -> dict[str, tuple[str, str, int | None]]:
        a = self.arch
        out: dict[str, tuple[str, str, int | None]] = {"embed": (a.embed, "output", None)}
        if a.pos_embed:
            out["pos_embed"] = (a.pos_embed, "output", None)
        for i in range(self.n_layers):
            base = f"{a.layers}.{i}"
            out[f"layers.{i}"] = (base, "output", None)
            out[f"layers.{i}.attn"] = (f"{base}.{a.attn}", "output", None)
            out[f"layers.{i}.attn.z"] = (f"{base}.{a.out_proj}", "input", self.n_heads)
            out[f"layers.{i}.mlp"] = (f"{base}.{a.mlp}", "output", None)
        out["final_norm"] = (a.final_norm, "output", None)
        out["unembed"] = (self.unembed_path, "output", None)
        return out

    def aliases(self) -> Mapping[str, tuple[str, str, int | None]]:
        return self._aliases

    # -- inputs ------------------------------------------------------------------------------------
    def tokenize(self, text: str | Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise InputError("This model has no tokenizer: pass token ids (a LongTensor), or load it with "
                             "causalscope.load(model, tokenizer=...).")
        texts = [text] if isinstance(text, str) else list(text)
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        lengths = sorted({len(i) for i in ids})
        if len(lengths) > 1:
            raise InputError(f"The prompts tokenize to different lengths {lengths}; this method needs prompts of "
                             f"one length for now (Model.run takes prompts of any lengths). Group them by length, "
                             f"or run them separately.")
        if lengths[0] == 0:
            raise InputError(f"Prompt {texts[0]!r} tokenizes to no tokens.")
        return torch.tensor(ids, dtype=torch.long)

    def prepare(self, inputs: Any) -> Batch:
        """A model call for a prompt, a list of prompts (of any lengths), token ids (a tensor, or lists of ids
        of any lengths) or a dict of model kwargs (``input_ids`` and e.g. an ``attention_mask``).

        Prompts of different lengths are padded on the right with an attention mask, and the batch records
        each row's real length: with causal attention every real token then computes exactly what it does
        alone, and positions stay each prompt's own (0 = its first token).

        >>> adapter.prepare(["the cat sat", "a dog"]).lengths
        tensor([3, 2])
        """
        if isinstance(inputs, Batch):
            return inputs
        if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and
                                       all(isinstance(s, str) for s in inputs)):
            inputs = self._token_lists([inputs] if isinstance(inputs, str) else list(inputs))
        if isinstance(inputs, (list, tuple)) and inputs and all(_is_id_list(x) for x in inputs):
            inputs = _padded([[int(i) for i in x] for x in inputs], self._pad_id())
        if isinstance(inputs, Mapping):
            kwargs = dict(inputs)
            ids = kwargs.get("input_ids")
        else:
            ids, kwargs = inputs, {}
        if not isinstance(ids, torch.Tensor):
            raise InputError(f"Expected a prompt, a list of prompts or token ids for {self.name}; "
                             f"got {type(inputs).__name__}.")
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise InputError(f"Token ids must be an integer tensor; got dtype {ids.dtype}.")
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise InputError(f"Token ids must be shaped (batch, tokens); got {tuple(ids.shape)}.")
        vocab = self.config.vocab_size
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise InputError(f"Token ids must lie in [0, {vocab}); got values from {int(ids.min())} "
                             f"to {int(ids.max())}.")
        lengths = _right_padded_lengths(kwargs.get("attention_mask"), ids)
        kwargs["input_ids"] = ids.to(self.device)
        if "attention_mask" in kwargs and isinstance(kwargs["attention_mask"], torch.Tensor):
            kwargs["attention_mask"] = kwargs["attention_mask"].to(self.device)
        kwargs.setdefault("use_cache", False)
        return Batch((), kwargs, int(ids.shape[0]), int(ids.shape[1]), lengths=lengths)

    def _token_lists(self, texts: list[str]) -> Any:
        """Token ids of each text: a (B, T) tensor when all have one length, else padded ids and a mask."""
        if self.tokenizer is None:
            raise InputError("This model has no tokenizer: pass token ids (a LongTensor), or load it with "
                             "causalscope.load(model, tokenizer=...).")
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        empty = [t for t, i in zip(texts, ids) if not i]
        if empty:
            raise InputError(f"Prompt {empty[0]!r} tokenizes to no tokens.")
        if len({len(i) for i in ids}) == 1:
            return torch.tensor(ids, dtype=torch.long)
        return _padded(ids, self._pad_id())

    def _pad_id(self) -> int:
        """The token that fills padding (never read: padding follows every real token, and is masked)."""
        tok = self.tokenizer
        for cand in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None),
                     getattr(self.config, "pad_token_id", None), getattr(self.config, "eos_token_id", None)):
            if isinstance(cand, int) and 0 <= cand < self.config.vocab_size:
                return cand
        return 0

    def segment(self, hidden: torch.Tensor, layer: int = 0, pos: int = 0, past: KV | None = None,
                stop: int | None = None, last_only: bool = False, head: bool = True) -> Batch:
        """A batch that makes the engine run :meth:`forward_from` instead of the full model.

        >>> m.run(adapter.segment(h, layer=3, pos=4, past=kv), edits)   # site positions stay absolute
        """
        if not isinstance(hidden, torch.Tensor) or hidden.ndim != 3 or hidden.shape[-1] != self.d_model:
            raise InputError(f"segment() needs hidden states shaped (batch, positions, {self.d_model}); "
                             f"got {tuple(getattr(hidden, 'shape', ()))}.")
        if past is not None:
            past = [(k, v) for k, v in past]
            first = past[min(layer, len(past) - 1)][0]
            if first.shape[0] != hidden.shape[0]:
                raise InputError(f"past has batch {first.shape[0]} but hidden has batch {hidden.shape[0]}.")
        kw = {"hidden": hidden, "past": past, "layer": layer, "pos": pos, "stop": stop, "last_only": last_only,
              "head": head}
        return Batch((), kw, int(hidden.shape[0]), pos + int(hidden.shape[1]), pos)

    def stacked_past(self, kv: KV, layer: int, groups: int, pos: int) -> KV:
        """``kv``'s keys / values before ``pos``, repeated for ``groups`` stacked copies of its rows, for a
        segment that runs block ``layer`` alone (only that layer is copied where transformers sizes the
        mask from it).

        >>> seg = a.segment(torch.cat(states), layer=j, stop=j + 1, pos=t, past=a.stacked_past(kv, j, len(states), t))
        """
        past = list(kv)
        for i in ([layer] if _mask_takes_layer_idx() else range(len(past))):
            k, v = past[i]
            past[i] = (k[:, :, :pos].repeat(groups, 1, 1, 1), v[:, :, :pos].repeat(groups, 1, 1, 1))
        return past

    def token_layers(self, batch: Batch) -> int | None:
        kw = batch.kwargs
        if "hidden" in kw:
            stop = self.n_layers if kw.get("stop") is None else kw["stop"]
            return (stop - kw["layer"]) * int(kw["hidden"].shape[1]) * batch.size
        return self.n_layers * int(batch.seq_len or 0) * batch.size

    def last_position_cuts(self, batch: Batch) -> list[tuple[str, str]]:
        kw = batch.kwargs
        if not kw.get("last_only") or kw.get("stop") not in (None, self.n_layers) \
                or int(kw["hidden"].shape[1]) < 2 or kw["layer"] >= self.n_layers:
            return []
        block = f"{self.arch.layers}.{self.n_layers - 1}"
        return [(f"{block}.{self.arch.mlp}", block)]

    def call(self, batch: Batch) -> Any:
        if "hidden" in batch.kwargs:
            kw = dict(batch.kwargs)
            return self.forward_from(kw.pop("hidden"), **kw)
        return self.module(*batch.args, **batch.kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def graph_parts(self) -> GPT2Parts | LlamaParts | NeoXParts:
        """The pieces a circuit graph runs (``causalscope.circuits.ComputeGraph``): GPT-2, the Llama family
        (Llama, Mistral, Qwen2, Qwen3) and GPT-NeoX; others raise :class:`InputError`.

        >>> circuits.ComputeGraph(cs.load(GPT2LMHeadModel(GPT2Config(n_layer=2)))).receivers[-1]
        'logits'
        """
        from ._graph_parts_hf import GPT2Parts
        from ._graph_parts_llama import graph_parts_for

        return graph_parts_for(self) or GPT2Parts(self.module)

    def describe(self) -> dict[str, Any]:
        return {"adapter": self.kind, "model": self.name, "model_type": self.config.model_type,
                "n_layers": self.n_layers, "n_heads": self.n_heads, "d_model": self.d_model}

    # -- segmented forward -------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """The input of block 0 for ``input_ids`` placed at positions ``start_pos, start_pos+1, ...``."""
        h = self._modules[self.arch.embed](input_ids)
        if self.arch.pos_embed:
            pos = torch.arange(start_pos, start_pos + input_ids.shape[1], device=input_ids.device)[None]
            h = h + self._modules[self.arch.pos_embed](pos)
        drop = self._part(self.arch.dropout)
        return drop(h) if drop is not None else h

    def kv_cache(self, out: Any) -> KV:
        """Per-layer (keys, values), each (batch, kv_heads, tokens, d_head), from a run with use_cache=True."""
        cache = getattr(out, "past_key_values", None)
        if cache is None:
            raise InputError("The output holds no key/value cache; run with use_cache=True.")
        layers = getattr(cache, "layers", None)
        if layers is not None:
            return [(layer.keys, layer.values) for layer in layers[: self.n_layers]]
        return [(cache[i][0], cache[i][1]) for i in range(self.n_layers)]

    def forward_from(self, hidden: torch.Tensor, layer: int = 0, pos: int = 0, past: KV | None = None,
                     stop: int | None = None, head: bool = True, last_only: bool = False) -> torch.Tensor:
        """Run blocks ``layer .. stop-1`` on ``hidden`` (the input of block ``layer`` at positions
        ``pos .. pos+len-1``) and, with ``head``, the final norm and unembedding. ``last_only`` returns
        the last position only (and lets the engine run the final block's MLP on that position alone).

        With ``pos > 0`` the positions before ``pos`` are not recomputed: their keys and values come
        from ``past`` (a :meth:`kv_cache` of a run over the whole prompt; only ``[..., :pos, :]`` is read).
        Hooks the engine registered on these modules fire as in a full forward.

        >>> full = model(ids, use_cache=True)
        >>> h3 = run.cache["layers.2"]                    # block 2 output = block 3 input
        >>> a.forward_from(h3[:, 4:], layer=3, pos=4, past=a.kv_cache(full))   # == full.logits[:, 4:]
        """
        if not isinstance(hidden, torch.Tensor) or not hidden.is_floating_point() or hidden.ndim != 3 \
                or hidden.shape[-1] != self.d_model:
            raise InputError(f"forward_from needs hidden states shaped (batch, tokens, {self.d_model}) (float); got "
                             f"{type(hidden).__name__} {tuple(getattr(hidden, 'shape', ()))} "
                             f"{getattr(hidden, 'dtype', '')}.")
        stop = self.n_layers if stop is None else stop
        if not 0 <= layer <= stop <= self.n_layers:
            raise SiteError(f"forward_from needs 0 <= layer <= stop <= {self.n_layers}; got layer={layer}, "
                            f"stop={stop}.")
        if pos < 0:
            raise SiteError(f"forward_from needs pos >= 0, got {pos}.")
        if pos > 0 and past is None:
            raise InputError(f"forward_from(pos={pos}) needs past=kv_cache(...) for the positions before {pos}.")
        from transformers import DynamicCache
        from transformers.masking_utils import create_causal_mask

        cache = None
        if pos > 0:
            assert past is not None
            # a config-less cache grows plain layers on demand; only sliding-window models need the config
            cache = DynamicCache() if self._full_attention_only else DynamicCache(config=self.config)
            # only the layers that run read the cache (older transformers size the mask from layer 0)
            for i in (range(layer, stop) if _mask_takes_layer_idx() else range(len(past))):
                k, v = past[i]
                if k.shape[0] != hidden.shape[0]:
                    raise InputError(f"past has batch {k.shape[0]} but hidden has batch {hidden.shape[0]}.")
                if k.shape[2] < pos:
                    raise InputError(f"past covers {k.shape[2]} positions, fewer than pos={pos}.")
                cache.update(k[:, :, :pos], v[:, :, :pos], i)
        position_ids = torch.arange(pos, pos + hidden.shape[1], device=hidden.device)[None]
        extra = {"layer_idx": min(layer, self.n_layers - 1)} if _mask_takes_layer_idx() else {}
        mask = create_causal_mask(config=self.config, inputs_embeds=hidden, attention_mask=None,
                                  past_key_values=cache, position_ids=position_ids, **extra)
        kw: dict[str, Any] = {"attention_mask": mask, "position_ids": position_ids, self.arch.past_kw: cache,
                              "use_cache": cache is not None}
        rotary = self._part(self.arch.rotary)
        if rotary is not None:
            kw["position_embeddings"] = rotary(hidden, position_ids=position_ids)
        for i in range(layer, stop):
            hidden = primary(self.layers[i](hidden, **kw))
        if last_only:
            hidden = hidden[:, -1:]
        if not head:
            return hidden
        return self._modules[self.unembed_path](self._modules[self.arch.final_norm](hidden))


def _is_id_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(i, int) and not isinstance(i, bool)
                                                               for i in x)


def _padded(ids: list[list[int]], pad: int) -> Any:
    """Token id lists as a (B, T) tensor, or, when their lengths differ, right-padded ids and their mask."""
    T = max(len(i) for i in ids)
    if all(len(i) == T for i in ids):
        return torch.tensor(ids, dtype=torch.long)
    return {"input_ids": torch.tensor([i + [pad] * (T - len(i)) for i in ids], dtype=torch.long),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids], dtype=torch.long)}


def _right_padded_lengths(mask: Any, ids: torch.Tensor) -> torch.Tensor | None:
    """Each row's real length from an attention mask that pads on the right; None when nothing is padded.
    Any other mask (left padding, holes) raises: positions would not be each prompt's own."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(ids.shape):
        raise InputError(f"attention_mask must be a tensor shaped like input_ids {tuple(ids.shape)}; got "
                         f"{tuple(getattr(mask, 'shape', ()))}.")
    m = mask.cpu()
    if bool(((m != 0) & (m != 1)).any()):
        raise InputError("attention_mask must hold 0 (padding) and 1 (real tokens).")
    lengths = m.long().sum(1)
    if bool((lengths == ids.shape[1]).all()):
        return None
    if bool((lengths == 0).any()):
        raise InputError("A row of attention_mask is all padding (a prompt with no tokens).")
    if not torch.equal(m.long(), (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()):
        raise InputError("causalscope pads on the right (real tokens first, then padding): this attention_mask "
                         "pads on the left or has holes. Re-pad on the right (tokenizer.padding_side = 'right'), "
                         "or pass the prompts as a list of strings.")
    return lengths


@functools.lru_cache(maxsize=1)
def _mask_takes_layer_idx() -> bool:
    from transformers.masking_utils import create_causal_mask

    return "layer_idx" in inspect.signature(create_causal_mask).parameters


def is_hf_causal_lm(obj: Any) -> bool:
    config = getattr(obj, "config", None)
    return isinstance(obj, nn.Module) and config is not None and hasattr(config, "model_type") and \
        hasattr(obj, "get_output_embeddings")
