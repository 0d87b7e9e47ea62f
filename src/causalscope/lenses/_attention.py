"""Attention patterns per head, computed exactly from the queries and keys one cached pass records.

>>> import causalscope as cs
>>> a = cs.attention_patterns("tiny-gpt2", "the cat sat on the mat", layers=[0, 1])
>>> a.dims, a.shape
(('layer', 'head', 'query', 'key'), (2, 4, 6, 6))

Hugging Face models: the engine caches each layer's query / key projections (GPT-2's ``attn.c_attn``, GPT-NeoX's
``attention.query_key_value``, the Llama family's ``self_attn.q_proj`` / ``k_proj``, or Qwen3's ``q_norm`` /
``k_norm``); the pattern is then the model's eager attention arithmetic: rotary positions (the model's own
``rotary_emb``), ``q k^T * scaling``, the causal (sliding-window) mask, a float32 softmax. TransformerLens models
cache ``blocks.l.attn.hook_pattern`` itself.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core import Model, Run, input_setting
from ..core.adapters import HFCausalLMAdapter, TransformerLensAdapter
from ..errors import InputError
from ..loading import load
from ..results import LabelledArray
from ._attention_plot import plot_patterns
from ._inputs import check_chunk, check_layers, n_layers_of, prepared, token_texts

#: the families whose patterns causalscope computes, for error messages
SUPPORTED = ("Hugging Face GPT-2, GPT-NeoX / Pythia and Llama-family (llama, mistral, qwen2, qwen3) causal LMs, and "
             "TransformerLens HookedTransformer models")
LLAMA_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class _Reader:
    """Where one model keeps its queries and keys: the sites of each layer, and the pattern from their cache."""

    sites: Callable[[int], list[str]]
    pattern: Callable[[int, list[torch.Tensor]], torch.Tensor]   # (B, H, T, T)
    n_heads: int


def _reader(m: Model) -> _Reader:
    a = m.adapter
    if isinstance(a, TransformerLensAdapter):
        return _Reader(lambda i: [f"blocks.{i}.attn.hook_pattern"], lambda i, c: c[0], a.n_heads)
    if isinstance(a, HFCausalLMAdapter):
        mtype = a.config.model_type
        if mtype == "gpt2":
            return _gpt2(a)
        if mtype == "gpt_neox":
            return _neox(a)
        if mtype in LLAMA_TYPES:
            return _llama(a)
        raise InputError(f"attention_patterns supports {SUPPORTED}; {m.name} is a {a.arch.family} model (model_type "
                         f"{mtype!r}). Cache its attention inputs yourself with m.run(..., cache=[...]).")
    raise InputError(f"attention_patterns supports {SUPPORTED}; {m.name} has a {a.kind!r} adapter.")


def _attention_modules(a: HFCausalLMAdapter, attr: str) -> list[Any]:
    return [getattr(block, attr) for block in a.layers]


def _gpt2(a: HFCausalLMAdapter) -> _Reader:
    mods = _attention_modules(a, "attn")
    H, d = a.n_heads, a.d_model
    e = d // H
    c = a.config

    def scale(i: int) -> float:
        s = getattr(mods[i], "scaling", None)
        if s is not None:
            return float(s)
        s = e ** -0.5 if getattr(c, "scale_attn_weights", True) else 1.0
        return s / (i + 1) if getattr(c, "scale_attn_by_inverse_layer_idx", False) else s

    def pattern(i: int, cached: list[torch.Tensor]) -> torch.Tensor:
        q, k, _ = cached[0].split(d, dim=2)
        B, T = q.shape[:2]
        q, k = q.view(B, T, H, e).transpose(1, 2), k.view(B, T, H, e).transpose(1, 2)
        return _softmax(q, k, scale(i), None)

    return _Reader(lambda i: [f"{a.arch.layers}.{i}.attn.c_attn"], pattern, H)


def _neox(a: HFCausalLMAdapter) -> _Reader:
    mods = _attention_modules(a, "attention")
    H, d = a.n_heads, a.d_model
    e = d // H
    rotary = a.base_module.get_submodule("rotary_emb")

    def pattern(i: int, cached: list[torch.Tensor]) -> torch.Tensor:
        qkv = cached[0]
        B, T = qkv.shape[:2]
        q, k, _ = qkv.view(B, T, H, 3 * e).transpose(1, 2).chunk(3, dim=-1)
        q, k = _rotary(rotary, q, k)
        return _softmax(q, k, float(getattr(mods[i], "scaling", e ** -0.5)), None)

    return _Reader(lambda i: [f"{a.arch.layers}.{i}.attention.query_key_value"], pattern, H)


def _llama(a: HFCausalLMAdapter) -> _Reader:
    mods = _attention_modules(a, "self_attn")
    c = a.config
    H = a.n_heads
    kv = int(getattr(c, "num_key_value_heads", None) or H)
    e = int(getattr(mods[0], "head_dim", None) or a.d_model // H)
    rotary = a.base_module.get_submodule("rotary_emb")
    normed = hasattr(mods[0], "q_norm")

    def window(i: int) -> int | None:
        if c.model_type == "mistral":
            return getattr(c, "sliding_window", None)
        types = getattr(c, "layer_types", None)
        if types is not None and types[i] == "sliding_attention":
            return getattr(c, "sliding_window", None)
        return None

    def sites(i: int) -> list[str]:
        names = ("q_norm", "k_norm") if normed else ("q_proj", "k_proj")
        return [f"{a.arch.layers}.{i}.self_attn.{n}" for n in names]

    def pattern(i: int, cached: list[torch.Tensor]) -> torch.Tensor:
        q, k = cached
        B, T = q.shape[:2]
        q = q.reshape(B, T, H, e).transpose(1, 2)
        k = k.reshape(B, T, kv, e).transpose(1, 2)
        q, k = _rotary(rotary, q, k)
        k = k.repeat_interleave(H // kv, dim=1)  # query head h reads key head h // (H / kv), as repeat_kv does
        return _softmax(q, k, float(getattr(mods[i], "scaling", e ** -0.5)), window(i))

    return _Reader(sites, pattern, H)


def _rotary(rotary: Any, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's rotary embedding of positions 0..T-1 on (B, H, T, e) queries and keys (the first ``r`` dims
    rotate, ``rotate_half`` pairs i and i + r/2; the rest pass), as transformers' ``apply_rotary_pos_emb``."""
    T = q.shape[2]
    cos, sin = rotary(q, torch.arange(T, device=q.device)[None])
    cos, sin = cos[:, None], sin[:, None]
    r = cos.shape[-1]

    def turn(x: torch.Tensor) -> torch.Tensor:
        rot, rest = x[..., :r], x[..., r:]
        half = torch.cat((-rot[..., r // 2:], rot[..., : r // 2]), dim=-1)
        return torch.cat(((rot * cos) + (half * sin), rest), dim=-1)

    return turn(q), turn(k)


def _softmax(q: torch.Tensor, k: torch.Tensor, scale: float, window: int | None) -> torch.Tensor:
    """Causal attention weights (B, H, T, T): ``softmax(q k^T * scale)`` over keys at or before each query (and
    within ``window`` of it), in float32, returned in ``q``'s dtype (transformers' eager attention)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    T = q.shape[2]
    pos = torch.arange(T, device=q.device)
    hidden = pos[None, :] > pos[:, None]
    if window is not None:
        hidden = hidden | (pos[None, :] <= pos[:, None] - int(window))
    scores = scores.masked_fill(hidden, float("-inf"))
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)


def attention_sites(model: Any, layers: Any = None) -> list[str]:
    """The sites :func:`attention_patterns` caches for ``layers``: add them to a run's ``cache`` to get the
    patterns of that run (``attention_patterns(m, prompts, run=run)``) without another pass.

    >>> run = m.run(prompts, cache=[*cs.attention_sites(m), "layers.2"])
    >>> a = cs.attention_patterns(m, prompts, run=run)
    """
    m = load(model)
    reader = _reader(m)
    return [s for i in check_layers(layers, n_layers_of(m)) for s in reader.sites(i)]


def _heads(heads: Any, n_heads: int) -> list[int]:
    if heads is None:
        return list(range(n_heads))
    items = [heads] if isinstance(heads, numbers.Integral) else heads
    if isinstance(items, (torch.Tensor, np.ndarray)):
        items = items.tolist()
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise InputError(f"heads must be None (every head), a head index or a non-empty list of them; got {heads!r}.")
    out = []
    for h in items:
        if isinstance(h, bool) or not isinstance(h, numbers.Integral) or not -n_heads <= int(h) < n_heads:
            raise InputError(f"heads holds {h!r}, which is not a head of this model: give ints from 0 to "
                             f"{n_heads - 1}.")
        out.append(int(h) % n_heads)
    if len(set(out)) != len(out):
        raise InputError(f"heads names a head twice: {list(items)!r}.")
    return sorted(out)


class AttentionPatterns(LabelledArray):
    """Attention weights per head: dims ``("layer", "head", "query", "key")`` for one prompt, plus ``"prompt"``
    (last) for several. ``values[l, h, q, k]`` is how much head ``h`` of layer ``l`` at query position ``q``
    attends to key position ``k``; each real query row sums to 1.

    >>> a = cs.attention_patterns(m, "the cat sat on the mat")
    >>> a.sel(layer=1, head=2).values          # (query, key)
    >>> a.plot(layers=[1])                     # one row of heads, tokens on both axes

    The ``query_token`` / ``key_token`` auxiliary coordinates hold the token at each position (None where the
    prompts differ). Prompts of different lengths are padded on the right: rows of queries past a prompt's end
    hold NaN (their keys past the end are 0, as causal attention gives them no weight).
    """

    @property
    def tokens(self) -> list[list[str]]:
        return [list(t) for t in self.meta["tokens"]]

    @property
    def lengths(self) -> list[int]:
        return [int(n) for n in self.meta["lengths"]]

    def plot(self, ax: Any = None, backend: str = "matplotlib", layers: Any = None, heads: Any = None,
             prompt: int | None = None, **kw: Any) -> Any:
        """A grid of heatmaps: a row per layer, a column per head (``layers`` / ``heads``: labels to show, default
        all), queries down and keys across with the prompt's tokens on the axes. ``prompt``: which prompt
        (several prompts; default the first). ``ax``: draw a single (layer, head) into it."""
        return plot_patterns(self, ax, backend, layers, heads, prompt, **kw)


def attention_patterns(model: Any, prompts: Any, *, layers: Any = None, heads: Any = None,
                       chunk_size: int | None = None, run: Run | None = None) -> AttentionPatterns:
    """Every head's attention pattern on ``prompts``, with the tokens on both position axes.

    >>> a = cs.attention_patterns("tiny-gpt2", "the cat sat on the mat", layers=[0, 1], heads=[0, 3])
    >>> a.shape                              # (layer, head, query, key)
    (2, 2, 6, 6)
    >>> a.plot()

    ``prompts``: a prompt, a list of prompts (any lengths: padded on the right, positions are each prompt's own)
    or token ids. ``layers`` / ``heads``: indices (default: all). ``chunk_size``: prompts per pass. ``run``: a
    :class:`~causalscope.Run` of these prompts that cached :func:`attention_sites` (for example together with
    other sites, or with interventions): its queries and keys are read, and the model does not run again.

    Exact: the patterns equal ``model(ids, output_attentions=True).attentions`` of the model with eager attention
    (tested to 1e-5), whichever attention implementation it runs. Supported: Hugging Face GPT-2, GPT-NeoX /
    Pythia and the Llama family (llama, mistral, qwen2, qwen3), and TransformerLens models.
    """
    m = load(model)
    reader = _reader(m)
    L = n_layers_of(m)
    chosen = check_layers(layers, L)
    head_list = _heads(heads, reader.n_heads)
    chunk = check_chunk(chunk_size)
    batch, ids, single = prepared(m, prompts)
    sites = [s for i in chosen for s in reader.sites(i)]
    given = run is not None
    if run is None:
        run = m.run(batch, cache=sites, chunk_size=chunk, keep_output=False, progress=False)
    else:
        _check_run(run, sites, int(ids.shape[0]), m, batch, int(ids.shape[1]))
    B, T = int(ids.shape[0]), int(ids.shape[1])
    lengths = run.lengths.cpu().long() if run.lengths is not None else torch.full((B,), T, dtype=torch.long)
    index = torch.tensor(head_list)
    with torch.inference_mode():
        per_layer = [reader.pattern(i, [run.cache[s] for s in reader.sites(i)]).float().cpu()[:, index]
                     for i in chosen]
    values = torch.stack(per_layer)                                       # (L, B, H, T, T)
    real = torch.arange(T)[None] < lengths[:, None]                       # (B, T)
    values = values.masked_fill(~real[None, :, None, :, None], float("nan"))
    values = values.permute(0, 2, 3, 4, 1)                                # (L, H, T, T, B)
    tokens = token_texts(m, ids.cpu(), lengths)
    dims: tuple[str, ...] = ("layer", "head", "query", "key")
    coords: dict[str, list] = {"layer": chosen, "head": head_list, "query": list(range(T)), "key": list(range(T))}
    if single:
        values = values[..., 0]
    else:
        dims += ("prompt",)
        coords["prompt"] = list(range(B))
    meta = {"method": "attention_patterns", "model": m.name, "prompts": input_setting(prompts), "layers": chosen,
            "heads": head_list, "chunk_size": chunk_size, "run": "given" if given else None,
            "tokens": tokens, "lengths": lengths.tolist(), "title": "attention patterns"}
    out = AttentionPatterns(values, dims, coords, meta, name="attention")
    return out.with_tokens(tokens, dim="query", name="query_token").with_tokens(tokens, dim="key", name="key_token")


def _check_run(run: Any, sites: list[str], n: int, m: Model, batch: Any, T: int) -> None:
    """``run`` cached these sites for these prompts with this model (same rows, lengths and model)."""
    if not isinstance(run, Run):
        raise InputError(f"run must be a causalscope Run (what m.run returns), got {type(run).__name__}.")
    maker = run.made_by() if run.made_by is not None else None
    if maker is not None and maker is not m.module:
        raise InputError(f"The run was made by another model than {m.name}: pass a run of this model on these "
                         f"prompts (m.run(prompts, cache=cs.attention_sites(m))).")
    missing = [s for s in sites if s not in run.cache]
    if missing:
        raise InputError(f"The run did not cache {missing[:3]}{' ...' if len(missing) > 3 else ''}: run it with "
                         f"cache=cs.attention_sites(m, layers) (plus anything else you need).")
    if run.n_rows != n:
        raise InputError(f"The run has {run.n_rows} rows but {n} prompts were given: pass the prompts the run ran on "
                         f"(one row each).")
    theirs = run.lengths.tolist() if run.lengths is not None else None
    ours = batch.lengths.tolist() if getattr(batch, "lengths", None) is not None else None
    # tokens per cached activation: dim 1 of a projection (B, T, ...), the last dim of a pattern (B, H, T, T)
    widths = {int(run.cache[s].shape[-1 if s.endswith("hook_pattern") else 1]) for s in sites
              if run.cache[s].ndim >= 3}
    if theirs != ours or (widths and widths != {T}):
        raise InputError(f"The run's prompts have other lengths than these ({theirs or sorted(widths)} tokens, these "
                         f"{ours or T}): pass the prompts the run ran on.")
