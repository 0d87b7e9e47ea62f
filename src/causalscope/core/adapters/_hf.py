"""Hugging Face causal LMs: canonical site names and a segmented forward on the model's own modules, for every
family of the architecture table (:data:`ARCHS`, in ``_archs.py``).

>>> a = HFCausalLMAdapter(LlamaForCausalLM(LlamaConfig(num_hidden_layers=2)), tokenizer)
>>> a.forward_from(a.embed(ids), layer=0)         # == model(ids).logits
"""
from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ...errors import InputError, SiteError
from .._sites import Site
from ._archs import ARCHS, Arch, Masks
from ._base import Adapter, Batch, Resolved, primary
from ._hf_calls import cache_kw, layer_types, mask_fn, params, resolved, takes
from ._segmented import KV
from ._tokens import is_id_list, one_length_ids, pad_id, padded, right_padded_lengths, token_lists

if TYPE_CHECKING:
    from ._graph_parts_hf import GPT2Parts
    from ._graph_parts_llama import LlamaParts
    from ._graph_parts_neox import NeoXParts

__all__ = ["ARCHS", "Arch", "HFCausalLMAdapter", "is_hf_causal_lm"]

_MLP_SITE = re.compile(r"layers\.\d+\.mlp")


class HFCausalLMAdapter(Adapter):
    """A Hugging Face ``*ForCausalLM`` of a family in :data:`ARCHS`; a :class:`SegmentedLM`.

    Canonical sites: ``embed`` (token embeddings, in the residual width: after OPT's ``project_in``),
    ``pos_embed`` (learned positions: GPT-2, GPT-Neo, OPT), ``layers.i`` (block output; ``io="input"`` is the
    block input), ``layers.i.attn`` / ``layers.i.mlp`` (the sublayer's write into the residual stream),
    ``layers.i.attn.z`` (per-head outputs: the input of the attention output projection, split into heads),
    ``final_norm``, ``unembed`` (the unembedding's output: the logits, before Gemma-2/3's final soft-capping).

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
        self.arch = resolved(ARCHS[mtype], self._modules)
        self.layers = cast(nn.ModuleList, self._modules[self.arch.layers])
        self.n_layers = len(self.layers)
        self.n_heads = int(getattr(config, self.arch.n_heads_attr))
        self.d_model = int(config.hidden_size)
        head = cast(Any, module).get_output_embeddings()  # a transformers model (is_hf_causal_lm)
        self.unembed_path = next((n for n, m in self._modules.items() if m is head), self.arch.unembed)
        self.base_path = self.arch.layers.rsplit(".", 1)[0]
        self.layer_types = layer_types(self.arch, config, self.n_layers)
        self._check_blocks()
        if self.arch.bias is not None:  # a family's bias hook refuses a configuration it cannot serve: ask it now
            p = next(iter(module.parameters()))
            self.arch.bias(self, torch.zeros(1, 1, self.d_model, dtype=p.dtype, device=p.device), 1, {})
        if getattr(config, "use_bidirectional_attention", False):
            raise InputError(f"{type(module).__name__} is configured with use_bidirectional_attention=True; "
                             f"causalscope's segmented forward is causal. Load it as a plain module "
                             f"(causalscope.load(model, generic=True)).")

    def _check_blocks(self) -> None:
        """Every argument a block requires is one the segmented forward gives (blocks of other transformers
        versions may want more, e.g. Gemma-3's two rotary tables in 4.x): else a clear error now."""
        given = {"hidden_states", "attention_mask", "position_ids", "use_cache", "cache_position",
                 "position_embeddings", "alibi"}
        for cls in {type(b) for b in self.layers}:
            ps = inspect.signature(cls.forward).parameters
            missing = [n for n, p in list(ps.items())[1:] if p.default is inspect.Parameter.empty
                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in given and n != cache_kw(cls)]
            if missing:
                import transformers

                raise InputError(f"{cls.__name__}.forward of transformers {transformers.__version__} requires "
                                 f"{', '.join(missing)}, which causalscope's segmented forward does not supply. "
                                 f"Upgrade transformers (the families are tested with 5.x), or load the model as a "
                                 f"plain module: causalscope.load(model, generic=True).")

    @property
    def base_module(self) -> nn.Module:
        """The decoder that holds the blocks (``model``, ``transformer``, ``gpt_neox``, ``model.decoder``)."""
        return self._modules[self.base_path]

    def _part(self, path: str | None) -> nn.Module | None:
        return None if path is None else self._modules.get(path)

    @functools.cached_property
    def _aliases(self) -> dict[str, tuple[str, str, int | None]]:
        a = self.arch
        # the token embeddings as they enter the residual stream: after OPT's project_in where it has one
        embed = a.project_in if self._part(a.project_in) is not None else a.embed
        out: dict[str, tuple[str, str, int | None]] = {"embed": (cast(str, embed), "output", None)}
        if a.pos_embed:
            out["pos_embed"] = (a.pos_embed, "output", None)
        for i in range(self.n_layers):
            base = f"{a.layers}.{i}"
            out[f"layers.{i}"] = (base, "output", None)
            out[f"layers.{i}.attn"] = (f"{base}.{a.attn}", "output", None)
            out[f"layers.{i}.attn.z"] = (f"{base}.{a.out_proj}", "input", self.n_heads)
            if a.mlp is not None:
                out[f"layers.{i}.mlp"] = (f"{base}.{a.mlp}", "output", None)
        if self._part(a.final_norm) is not None:
            out["final_norm"] = (cast(str, a.final_norm), "output", None)
        out["unembed"] = (self.unembed_path, "output", None)
        return out

    def aliases(self) -> Mapping[str, tuple[str, str, int | None]]:
        return self._aliases

    def resolve(self, site: Site) -> Resolved:
        if self.arch.mlp is None and _MLP_SITE.fullmatch(site.module):
            raise SiteError(f"{self.arch.family} has no site {site.module!r}: {self.arch.no_mlp}")
        return super().resolve(site)

    # -- inputs ------------------------------------------------------------------------------------
    def tokenize(self, text: str | Sequence[str]) -> torch.Tensor:
        return one_length_ids(self.tokenizer, text)

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
            inputs = token_lists(self.tokenizer, [inputs] if isinstance(inputs, str) else list(inputs))
        if isinstance(inputs, (list, tuple)) and inputs and all(is_id_list(x) for x in inputs):
            inputs = padded([[int(i) for i in x] for x in inputs], pad_id(self.tokenizer, self.config,
                                                                          self.config.vocab_size))
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
        most = self.max_positions
        if most is not None and ids.shape[1] > most:
            raise InputError(f"The input has {ids.shape[1]} tokens, but {self.name} has position embeddings for "
                             f"at most {most} ({self.arch.family}'s learned positions). Shorten the prompt (or keep "
                             f"its last {most} tokens).")
        lengths = right_padded_lengths(kwargs.get("attention_mask"), ids)
        kwargs["input_ids"] = ids.to(self.device)
        if "attention_mask" in kwargs and isinstance(kwargs["attention_mask"], torch.Tensor):
            kwargs["attention_mask"] = kwargs["attention_mask"].to(self.device)
        kwargs.setdefault("use_cache", False)
        return Batch((), kwargs, int(ids.shape[0]), int(ids.shape[1]), lengths=lengths)

    @property
    def max_positions(self) -> int | None:
        """The most tokens a prompt may have: the size of a learned position table (GPT-2, GPT-Neo, OPT); None
        where positions are computed (rotary, ALiBi) and any length runs.

        >>> cs.load("tiny-gpt2").adapter.max_positions
        64
        """
        table = self._part(self.arch.pos_embed)
        n = getattr(table, "num_embeddings", None)
        if not isinstance(n, int):
            return None
        return n - int(getattr(table, "offset", 0) or 0)  # OPT's table starts 2 rows in

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
        for i in ([layer] if takes(mask_fn("full_attention"), "layer_idx") else range(len(past))):
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
        kw, a = batch.kwargs, self.arch
        mlp = a.mlp_module or a.mlp
        if a.mlp_in_place or mlp is None or not kw.get("last_only") or kw.get("stop") not in (None, self.n_layers) \
                or int(kw["hidden"].shape[1]) < 2 or kw["layer"] >= self.n_layers:
            return []
        block = f"{a.layers}.{self.n_layers - 1}"
        return [(f"{block}.{mlp}", block)]

    def call(self, batch: Batch) -> Any:
        if "hidden" in batch.kwargs:
            kw = dict(batch.kwargs)
            return self.forward_from(kw.pop("hidden"), **kw)
        kwargs = batch.kwargs
        name = cache_kw(type(self.module))
        if kwargs.get("use_cache") and name is not None and kwargs.get(name) is None:
            # a plain cache keeps every position of every layer (a sliding-window layer of the model's own
            # cache keeps only its window, and keep_kv needs all of them); attention is the same either way
            from transformers import DynamicCache

            kwargs = {**kwargs, name: DynamicCache()}
        return self.module(*batch.args, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtypes(self) -> set[torch.dtype]:
        """The floating-point dtypes of the first block's weights (hidden states must be in one of them).

        >>> cs.load("tiny-gpt2").adapter.dtypes
        {torch.float32}
        """
        return {p.dtype for p in self.layers[0].parameters() if p.is_floating_point()}

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
                "family": self.arch.family, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "d_model": self.d_model}

    # -- segmented forward -------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """The input of block 0 for ``input_ids`` placed at positions ``start_pos, start_pos+1, ...``."""
        a = self.arch
        table = self._modules[a.embed]
        h = table(input_ids)
        if a.embed_sqrt_d and not hasattr(table, "embed_scale"):  # transformers 4.x scales in the model's forward
            h = h * torch.tensor(self.d_model**0.5, dtype=h.dtype)
        proj = self._part(a.project_in)
        if proj is not None:
            h = proj(h)
        if a.pos_embed:
            pos = torch.arange(start_pos, start_pos + input_ids.shape[1], device=input_ids.device)[None]
            where = self._modules[a.pos_embed]
            h = h + (a.positions(where, pos) if a.positions is not None else where(pos)).to(h.device)
        for part in (self._part(a.embed_norm), self._part(a.dropout)):
            if part is not None:
                h = part(h)
        return h

    def kv_cache(self, out: Any) -> KV:
        """Per-layer (keys, values), each (batch, kv_heads, tokens, d_head), from a run with use_cache=True."""
        fields = getattr(out, "__dataclass_fields__", {})
        cache = getattr(out, "cache", None) if "cache" in fields else getattr(out, "past_key_values", None)
        if cache is None:
            raise InputError("The output holds no key/value cache; run with use_cache=True.")
        layers = getattr(cache, "layers", None)
        if layers is None:
            return [(cache[i][0], cache[i][1]) for i in range(self.n_layers)]
        for i, layer in enumerate(layers[: self.n_layers]):
            seen = getattr(layer, "cumulative_length", None)
            if isinstance(seen, int) and layer.keys is not None and layer.keys.shape[-2] < seen:
                raise InputError(f"Layer {i} of this cache is a sliding window: it kept {layer.keys.shape[-2]} of "
                                 f"{seen} positions. Run with causalscope's keep_kv=True (m.run(..., keep_kv=True)), "
                                 f"or pass cache=transformers.DynamicCache() (no config) to the model.")
        return [(layer.keys, layer.values) for layer in layers[: self.n_layers]]

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits of final hidden states: final norm, (OPT's output projection,) unembedding and
        (Gemma-2/3) the final soft-capping, as the model's own forward applies them."""
        a = self.arch
        for part in (self._part(a.final_norm), self._part(a.project_out)):
            if part is not None:
                hidden = part(hidden)
        logits = self._modules[self.unembed_path](hidden)
        cap = getattr(self.config, a.softcap, None) if a.softcap else None
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward_from(self, hidden: torch.Tensor, layer: int = 0, pos: int = 0, past: KV | None = None,
                     stop: int | None = None, head: bool = True, last_only: bool = False) -> torch.Tensor:
        """Run blocks ``layer .. stop-1`` on ``hidden`` (the input of block ``layer`` at positions
        ``pos .. pos+len-1``) and, with ``head``, the final norm and unembedding. ``last_only`` returns
        the last position only (and lets the engine run the final block's MLP on that position alone).

        With ``pos > 0`` the positions before ``pos`` are not recomputed: their keys and values come
        from ``past`` (a :meth:`kv_cache` of a run over the whole prompt; only ``[..., :pos, :]`` is read).
        Hooks the engine registered on these modules fire as in a full forward. Each block gets what the
        model's own forward gives it: its layer type's attention mask (full or sliding window), position ids,
        rotary embeddings, ALiBi (BLOOM, Falcon).

        >>> full = model(ids, use_cache=True)
        >>> h3 = run.cache["layers.2"]                    # block 2 output = block 3 input
        >>> a.forward_from(h3[:, 4:], layer=3, pos=4, past=a.kv_cache(full))   # == full.logits[:, 4:]
        """
        if not isinstance(hidden, torch.Tensor) or not hidden.is_floating_point() or hidden.ndim != 3 \
                or hidden.shape[-1] != self.d_model:
            raise InputError(f"forward_from needs hidden states shaped (batch, tokens, {self.d_model}) (float); got "
                             f"{type(hidden).__name__} {tuple(getattr(hidden, 'shape', ()))} "
                             f"{getattr(hidden, 'dtype', '')}.")
        dtypes = self.dtypes
        if dtypes and hidden.dtype not in dtypes:
            want = sorted(str(d) for d in dtypes)[0]
            raise InputError(f"forward_from got hidden states of dtype {hidden.dtype}, but {self.name}'s blocks "
                             f"compute in {', '.join(sorted(str(d) for d in dtypes))}: convert them with "
                             f"hidden.to({want}).")
        for what, v in (("layer", layer), ("pos", pos), ("stop", stop)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise InputError(f"forward_from's {what} must be an int, got {type(v).__name__} {v!r}.")
        stop = self.n_layers if stop is None else stop
        if not 0 <= layer <= stop <= self.n_layers:
            raise SiteError(f"forward_from needs 0 <= layer <= stop <= {self.n_layers}; got layer={layer}, "
                            f"stop={stop}.")
        if pos < 0:
            raise SiteError(f"forward_from needs pos >= 0, got {pos}.")
        if pos > 0 and past is None:
            raise InputError(f"forward_from(pos={pos}) needs past=kv_cache(...) for the positions before {pos}.")
        if layer < stop:
            cache = self._prefilled(cast(KV, past), hidden, layer, stop, pos) if pos > 0 else None
            for i, kw in zip(range(layer, stop), self._block_kwargs(hidden, layer, stop, pos, cache)):
                hidden = primary(self.layers[i](hidden, **kw))
        if last_only:
            hidden = hidden[:, -1:]
        return self.head_logits(hidden) if head else hidden

    def _prefilled(self, past: KV, hidden: torch.Tensor, layer: int, stop: int, pos: int) -> Any:
        """A plain (config-less) cache holding ``past``'s keys / values before ``pos``, for blocks layer..stop-1.
        Plain layers keep every position, also for sliding-window blocks (their mask applies the window)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        # only the layers that run read the cache (older transformers size the mask from layer 0)
        for i in (range(layer, stop) if takes(mask_fn("full_attention"), "layer_idx") else range(len(past))):
            k, v = past[i]
            if k.shape[0] != hidden.shape[0]:
                raise InputError(f"past has batch {k.shape[0]} but hidden has batch {hidden.shape[0]}.")
            if k.shape[2] < pos:
                raise InputError(f"past covers {k.shape[2]} positions, fewer than pos={pos}.")
            cache.update(k[:, :, :pos], v[:, :, :pos], i)
        return cache

    def _block_kwargs(self, hidden: torch.Tensor, layer: int, stop: int, pos: int, cache: Any) -> list[dict]:
        """The keyword arguments of blocks layer..stop-1 on ``hidden`` at positions pos.. (the model's own)."""
        positions = torch.arange(pos, pos + hidden.shape[1], device=hidden.device)
        position_ids = positions[None]
        types = self.layer_types[layer:stop]
        masks: Masks = {}
        for kind in dict.fromkeys(types):
            fn = mask_fn(kind)  # (the argument names of transformers 4.5x differ; older ones need cache_position)
            kw: dict[str, Any] = {"config": self.config, "attention_mask": None, "position_ids": position_ids,
                                  "inputs_embeds" if takes(fn, "inputs_embeds") else "input_embeds": hidden,
                                  "cache" if takes(fn, "cache") else "past_key_values": cache}
            if takes(fn, "cache_position"):
                kw["cache_position"] = positions
            if takes(fn, "layer_idx"):
                kw["layer_idx"] = layer + types.index(kind)
            kw.update((k, v) for k, v in self.arch.mask_kwargs if takes(fn, k))
            masks[kind] = fn(**kw)
        extra: dict[str, Any] = {}
        if self.arch.bias is not None:
            masks, extra = self.arch.bias(self, hidden, pos + int(hidden.shape[1]), masks)
        rotary = self._part(f"{self.base_path}.rotary_emb")
        pe: dict[str, Any] = {}
        if rotary is not None:
            if takes(type(rotary).forward, "layer_type"):  # one rotary table per layer type (Gemma-3)
                pe = {kind: rotary(hidden, position_ids, kind) for kind in masks}
            else:
                shared = rotary(hidden, position_ids=position_ids)
                pe = dict.fromkeys(masks, shared)
        out = []
        for i, kind in zip(range(layer, stop), types):
            cls = type(self.layers[i])
            kw = {"attention_mask": masks[kind], "position_ids": position_ids, "use_cache": cache is not None,
                  **extra}
            name = cache_kw(cls)
            if name is not None:
                kw[name] = cache
            if rotary is not None:
                kw["position_embeddings"] = pe[kind]
            names, var_kw = params(cls.forward)
            if "cache_position" in names:  # transformers 4.5x
                kw["cache_position"] = positions
            out.append(kw if var_kw else {k: v for k, v in kw.items() if k in names})
        return out


def is_hf_causal_lm(obj: Any) -> bool:
    config = getattr(obj, "config", None)
    return isinstance(obj, nn.Module) and config is not None and hasattr(config, "model_type") and \
        hasattr(obj, "get_output_embeddings")
