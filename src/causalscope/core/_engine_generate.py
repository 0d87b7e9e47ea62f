"""Generation with interventions: KV-cached, batched over prompts of different lengths (padded on the left),
the same sites and interventions as :meth:`Model.run` applied at every step.

>>> g = m.generate(["the cat sat on", "a dog"], {cs.Site("layers.1"): cs.Add(v, 4.0)}, max_new_tokens=5)
>>> g.text                       # the continuations; g.ids (prompts, new tokens) their ids
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..errors import InputError, InterventionError, SiteError, check_flag, check_int, check_number, check_seed
from ._engine_ops import select, write
from ._guard import preserved
from ._interventions import ApplyContext, Intervention, Noise, as_intervention
from ._sae_sites import check_width, known_width
from ._settings import callable_setting, input_setting
from ._sites import Site, as_site, check_shape
from .adapters import Adapter, Resolved, primary
from .adapters._hf_calls import cache_kw

Where = Literal["all", "prompt", "new"]
_WHERE = ("all", "prompt", "new")


@dataclass
class Generation:
    """What :func:`generate` returns.

    ``ids``: the new tokens (prompts, steps); ``text``: each continuation decoded; ``prompts``: each prompt's
    token ids; ``metric``: ``metric(step logits)`` per prompt and step (prompts, steps) if a metric was given;
    ``meta``: the settings (model, edits, sampling, positions, forwards: one per step thanks to the KV cache).

    >>> g = m.generate("the cat sat on", max_new_tokens=3)
    >>> g.ids.shape, g.text[0], g.full_text[0]
    """

    ids: torch.Tensor
    text: list[str]
    prompts: list[list[int]]
    metric: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> list[str]:
        """Each prompt followed by its continuation."""
        return list(self.meta.get("full_text", []))


def generate(adapter: Adapter, prompts: Any, edits: Mapping[Any, Any] | None = None, *, max_new_tokens: int = 20,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             positions: Where = "all", metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
             model_name: str = "") -> Generation:
    """Generate ``max_new_tokens`` tokens per prompt, with ``edits`` applied at every step (see
    :meth:`Model.generate`, which calls this)."""
    _check_settings(max_new_tokens, do_sample, temperature, top_p, positions, metric)
    seed = check_seed(seed)
    module = adapter.module
    tok = adapter.tokenizer
    tl = adapter.kind == "transformer-lens"
    if not tl and not _is_causal_lm(module):
        raise InputError(f"generate needs a Hugging Face causal LM (a model whose forward takes input_ids, "
                         f"attention_mask and a KV cache) or a TransformerLens HookedTransformer; {adapter.kind} "
                         f"models have no KV-cached generation here. Load the model through transformers "
                         f"(cs.load('gpt2'), a local folder, or a PreTrainedModel).")
    if tok is None and (isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts
                                                     and isinstance(prompts[0], str))):
        raise InputError("generate needs the model's tokenizer (load the model with it) to read text prompts; "
                         "give token ids otherwise.")
    rows = _prompt_ids(adapter, prompts)
    ops = _edits(adapter, edits)
    ids, mask = _left_padded(rows, _pad_id(tok) if tok is not None else 0)
    most = getattr(adapter, "max_positions", None)
    if tl:
        n_ctx = getattr(getattr(module, "cfg", None), "n_ctx", None)
        most = n_ctx if isinstance(n_ctx, int) else None
    if isinstance(most, int) and ids.shape[1] + max_new_tokens > most:
        raise InputError(f"The longest prompt has {ids.shape[1]} tokens; with max_new_tokens={max_new_tokens} the "
                         f"sequence would pass the model's {most} learned positions. Generate at most "
                         f"{max(most - ids.shape[1], 0)} tokens, or shorten the prompts.")
    dev = _device(module)
    ids, mask = ids.to(dev), mask.to(dev)
    takes_positions = not tl and "position_ids" in inspect.signature(module.forward).parameters
    kw = "past_kv_cache" if tl else cache_kw(type(module)) or "past_key_values"
    g = torch.Generator(device="cpu").manual_seed(seed)
    B = len(rows)
    state = {"step": 0}
    new_tokens, values = [], []
    forwards = 0
    with preserved(module) as handles, torch.inference_mode():
        for res, site, iv in ops:
            handles.append(_register(res, site, iv, state, positions, B))
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": True}
        if takes_positions:
            kwargs["position_ids"] = pos
        past = None
        if tl:  # TransformerLens keeps the mask of the cached positions in its own cache
            past = _tl_cache(module, B, dev)
            kwargs = {"input": ids, "attention_mask": mask}
        for step in range(max_new_tokens):
            state["step"] = step
            out = module(**kwargs) if past is None else module(**kwargs, **{kw: past})
            forwards += 1
            logits = primary(out)[:, -1].float()
            if metric is not None:
                values.append(_step_metric(metric, logits, B, step))
            nxt = _choose(logits, do_sample, temperature, top_p, g)
            new_tokens.append(nxt)
            if tl:  # the cache object fills itself; the new token's mask is appended to the cached one
                kwargs = {"input": nxt[:, None].to(dev), "attention_mask": torch.ones(B, 1, dtype=mask.dtype,
                                                                                       device=dev)}
                continue
            past = next((c for c in (getattr(out, name, None) for name in ("cache", "past_key_values"))
                         if c is not None), None)
            if past is None:
                raise InputError(f"{type(module).__name__} returned no KV cache with use_cache=True: generate "
                                 f"needs one.")
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=dev)], 1)
            pos = pos[:, -1:] + 1
            kwargs = {"input_ids": nxt[:, None].to(dev), "attention_mask": mask, "use_cache": True}
            if takes_positions:
                kwargs["position_ids"] = pos
    new = torch.stack(new_tokens, 1).cpu() if new_tokens else torch.empty(B, 0, dtype=torch.long)
    text = [tok.decode(r.tolist()) if tok is not None else " ".join(map(str, r.tolist())) for r in new]
    full = [tok.decode(list(p) + r.tolist()) if tok is not None else " ".join(map(str, list(p) + r.tolist()))
            for p, r in zip(rows, new)]
    meta = {"method": "generate", "model": model_name, "prompts": input_setting(prompts),
            "metric": callable_setting(metric), "max_new_tokens": max_new_tokens, "do_sample": do_sample,
            "temperature": temperature, "top_p": top_p, "seed": seed, "positions": positions,
            "edits": [f"{site.name}: {type(iv).__name__}" for _, site, iv in ops], "forwards": forwards,
            "padding": "left", "full_text": full}
    return Generation(new, text, [list(r) for r in rows], torch.stack(values, 1) if values else None, meta)


def _check_settings(max_new_tokens: Any, do_sample: Any, temperature: Any, top_p: Any, positions: Any,
                    metric: Any) -> None:
    check_int(max_new_tokens, "max_new_tokens", low=1)
    check_flag(do_sample, "do_sample")
    check_number(temperature, "temperature", low=0, open_low=True)
    check_number(top_p, "top_p", low=0, high=1, open_low=True)
    if positions not in _WHERE:
        raise InputError(f"positions must be 'all' (the prompt and every new token), 'prompt' or 'new', got "
                         f"{positions!r}.")
    if metric is not None and not callable(metric):
        raise InputError(f"metric must be a function of the step's logits (prompts, vocab) -> (prompts,), got "
                         f"{type(metric).__name__}.")


def _step_metric(metric: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, B: int,
                 step: int) -> torch.Tensor:
    """``metric(logits)`` as a (B,) float tensor on the CPU; InputError when it is not one number per prompt."""
    value = metric(logits)
    t: torch.Tensor | None = None
    if not isinstance(value, (str, bytes)):
        try:  # a tensor, a number (one prompt), a list or a numpy array of numbers
            t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            t = None
    if t is None or t.numel() != B or t.is_complex():
        got = tuple(t.shape) if t is not None else f"a {type(value).__name__}"
        raise InputError(f"metric must map a step's logits ({B}, vocab) to one number per prompt, shape ({B},); at "
                         f"step {step} it returned {got}. Reduce it, e.g. metric=lambda logits: logits[:, 5].")
    return t.detach().reshape(B).float().cpu()


def _tl_cache(module: nn.Module, B: int, dev: torch.device) -> Any:
    """An empty TransformerLens key/value cache for ``B`` rows."""
    try:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    except ImportError:  # TransformerLens 2.x
        from transformer_lens.past_key_value_caching import (  # type: ignore[no-redef]
            HookedTransformerKeyValueCache as TransformerLensKeyValueCache,
        )
    cfg: Any = getattr(module, "cfg")  # noqa: B009 (a HookedTransformerConfig)
    return TransformerLensKeyValueCache.init_cache(cfg, dev, B)


def _is_causal_lm(module: nn.Module) -> bool:
    params = inspect.signature(module.forward).parameters
    return all(p in params for p in ("input_ids", "attention_mask")) and cache_kw(type(module)) is not None


def _prompt_ids(adapter: Adapter, prompts: Any) -> list[list[int]]:
    """Each prompt's token ids (no padding), from text, lists of ids or an ids tensor (checked: integer ids of the
    vocabulary, one or two dims, at least one token)."""
    if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
                                    and not isinstance(prompts[0], bool)):
        prompts = [prompts]
    if isinstance(prompts, torch.Tensor):
        if prompts.is_floating_point() or prompts.is_complex() or prompts.dtype == torch.bool:
            raise InputError(f"Token ids must be an integer tensor (torch.long); got dtype {prompts.dtype}. Convert "
                             f"them with ids.long(), or give the prompts as text.")
        if prompts.ndim not in (1, 2) or prompts.shape[-1] == 0 or prompts.numel() == 0:
            raise InputError(f"Token ids must be shaped (tokens,) or (prompts, tokens) with at least one token; got "
                             f"{tuple(prompts.shape)}.")
        adapter.prepare(prompts)  # the model's own checks: ids inside the vocabulary, length within its positions
        prompts = prompts[None] if prompts.ndim == 1 else prompts
        return [[int(t) for t in r] for r in prompts.tolist()]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise InputError(f"prompts must be a string, a list of strings or token ids; got {type(prompts).__name__} "
                         f"{prompts!r:.60}.")
    blank = [p for p in prompts if isinstance(p, str) and not p.strip()]
    if blank:
        raise InputError(f"prompts holds an empty prompt {blank[0]!r}: each prompt needs at least one token to "
                         f"continue from. Drop it, or give it some text.")
    batch = adapter.prepare(list(prompts))
    ids = batch.kwargs.get("input_ids") if batch.kwargs else (batch.args[0] if batch.args else None)
    if not isinstance(ids, torch.Tensor):
        raise InputError("generate could not tokenize the prompts into input_ids.")
    lengths = batch.lengths.tolist() if batch.lengths is not None else [ids.shape[1]] * ids.shape[0]
    return [ids[i, :n].tolist() for i, n in enumerate(lengths)]


def _pad_id(tok: Any) -> int:
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tok, name, None)
        if isinstance(v, int):
            return v
    return 0


def _left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts padded on the left (as transformers' batched generation): every prompt ends at the last column,
    so each step appends one column for all of them."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, T - len(r):] = torch.tensor(r)
            mask[i, T - len(r):] = 1
    if bool((mask.sum(1) == 0).any()):
        raise InputError("A prompt has no tokens: give each prompt at least one token.")
    return ids, mask


def _device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _edits(adapter: Adapter, edits: Mapping[Any, Any] | None) -> list[tuple[Resolved, Site, Intervention]]:
    if edits is None:
        return []
    if not isinstance(edits, Mapping):
        raise InputError(f"edits must be a dict {{site: intervention}} applied at every step, got "
                         f"{type(edits).__name__}.")
    out = []
    for raw_site, raw_iv in edits.items():
        site, iv = as_site(raw_site), as_intervention(raw_iv)
        if site.positions is not None:
            raise SiteError(f"Site {site.name!r}: generation edits every position a step runs; choose which with "
                            f"positions='all' | 'prompt' | 'new', and give the site without positions=.")
        if iv.source_mode is not None:
            raise InterventionError(f"{type(iv).__name__} reads another run, which has no positions for the tokens "
                                    f"being generated; generate with interventions that need no source (Add, "
                                    f"Scale, Set, Zero, Project), or pass the activation itself with cs.Set(...).")
        if isinstance(iv, Noise):
            raise InterventionError("Noise draws one sample per prompt for a whole run; generation runs one step at "
                                    "a time, so each new token would get the same draw. Use Add with a seeded "
                                    "tensor of your own, or run the noised forward with Model.run.")
        res = adapter.resolve(site)
        width = known_width(adapter, res) if site.sae is not None else None
        if width is not None:  # an SAE of another width: refused before the model runs
            check_width(site, width)
        out.append((res, site, iv))
    return out


def _register(res: Resolved, site: Site, iv: Intervention, state: dict[str, int], where: str, B: int) -> Any:
    """A hook on the site's module that applies ``iv`` to the site's part of the activation at the steps
    ``where`` says (step 0 runs the prompts, every later step one new token)."""
    rows = torch.arange(B)
    ctx = ApplyContext(rows, site.name)

    def apply(act: torch.Tensor) -> torch.Tensor:
        step = state["step"]
        if (step == 0 and where == "new") or (step > 0 and where == "prompt"):
            return act
        if act.ndim == 0 or act.shape[0] != B:
            raise SiteError(f"The activation at {res.path!r} ({res.io}) is {tuple(act.shape)}, whose dim 0 is not "
                            f"the batch of {B} prompts.")
        check_shape(act, site, res.n_heads, None)  # neurons / heads out of range, an SAE of another width
        act = act.clone()
        r = rows.to(act.device)
        x = select(act, r, None, site, res.n_heads)
        new = iv(x, None, ctx)
        if not isinstance(new, torch.Tensor) or new.shape != x.shape:
            raise InterventionError(f"{type(iv).__name__} at {site.name!r} returned shape "
                                    f"{tuple(getattr(new, 'shape', ()))}; expected {tuple(x.shape)}.")
        if not bool(torch.isfinite(new).all()):
            raise InterventionError(f"{type(iv).__name__} at {site.name!r} produced NaN or inf values.")
        write(act, r, None, site, res.n_heads, new)
        return act

    if res.io == "output":
        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            if isinstance(output, torch.Tensor):
                return apply(output)
            if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                return (apply(output[0]), *output[1:])
            raise SiteError(f"Cannot write the output of {res.path!r} ({type(output).__name__}).")
        return res.module.register_forward_hook(hook)

    def pre_hook(module: nn.Module, args: tuple) -> Any:
        if args and isinstance(args[0], torch.Tensor):
            return (apply(args[0]), *args[1:])
        raise SiteError(f"The input of {res.path!r} holds no tensor to edit.")
    return res.module.register_forward_pre_hook(pre_hook)


def _choose(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float,
            g: torch.Generator) -> torch.Tensor:
    """The next token of each row: the argmax, or a seeded sample (temperature, nucleus ``top_p``)."""
    if not do_sample:
        return logits.argmax(-1)
    probs = (logits.double().cpu() / float(temperature)).softmax(-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # the smallest set whose mass reaches top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=g)[:, 0].to(logits.device)
