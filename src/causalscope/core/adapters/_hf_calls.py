"""How the Hugging Face adapter calls into transformers across versions: the keyword a forward takes its cache
by, the mask function of each attention type, each block's layer type, table paths with per-version alternatives.
Signatures are read once per function or class.

>>> cache_kw(LlamaDecoderLayer)           # 'cache' in transformers 5.x, 'past_key_values' before
'cache'
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

from torch import nn

from ...errors import InputError
from ._archs import Arch

#: the keyword a block / model forward takes its KV cache by, newest transformers first
_CACHE_KWS = ("cache", "past_key_values", "layer_past", "past_key_value")


#: fields of Arch that name a module inside a block (the rest are paths from the LM)
_IN_BLOCK = ("attn", "mlp", "out_proj", "mlp_module")


def resolved(arch: Arch, modules: Mapping[str, nn.Module]) -> Arch:
    """``arch`` with each ``"a|b"`` path replaced by the first alternative this model has."""
    def pick(name: str, value: str) -> str:
        alts = value.split("|")
        where = (lambda p: f"{arch.layers}.0.{p}") if name in _IN_BLOCK else (lambda p: p)
        return next((a for a in alts if where(a) in modules), alts[0])
    changes: dict[str, Any] = {f.name: pick(f.name, v) for f in dataclasses.fields(arch)
                               if isinstance(v := getattr(arch, f.name), str) and "|" in v}
    return dataclasses.replace(arch, **changes) if changes else arch


def layer_types(arch: Arch, config: Any, n_layers: int) -> list[str]:
    """Each block's attention type ("full_attention", "sliding_attention", ...), as the model picks its masks."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    if arch.masks == "types" and getattr(c, "layer_types", None) is not None:
        types = [str(t) for t in c.layer_types[:n_layers]]
    elif arch.masks == "window" and getattr(c, "sliding_window", None) is not None:
        types = ["sliding_attention"] * n_layers
    else:
        types = ["full_attention"] * n_layers
    bad = sorted(set(types) - set(_MASK_FNS))
    if bad:
        raise InputError(f"causalscope's segmented forward has no mask for attention type(s) {bad} of "
                         f"{type(config).__name__} (it knows {', '.join(_MASK_FNS)}). Load the model as a plain "
                         f"module: causalscope.load(model, generic=True).")
    return types


_MASK_FNS = {"full_attention": "create_causal_mask", "sliding_attention": "create_sliding_window_causal_mask",
             "chunked_attention": "create_chunked_causal_mask"}


@functools.cache
def mask_fn(kind: str) -> Callable[..., Any]:
    """transformers' mask function of an attention type (``create_causal_mask`` for "full_attention", ...)."""
    from transformers import masking_utils

    return cast(Callable[..., Any], getattr(masking_utils, _MASK_FNS[kind]))


@functools.cache
def params(fn: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    """A function's named parameters (the wrapped function's, through decorators) and whether it takes **kwargs."""
    try:
        ps = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return frozenset(), True
    return frozenset(ps), any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ps.values())


def takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` (by its signature, read once)."""
    return name in params(fn)[0]


_CACHE_KW: dict[type[nn.Module], str | None] = {}


def cache_kw(cls: type[nn.Module]) -> str | None:
    """The keyword ``cls.forward`` takes its KV cache by: ``cache`` in transformers >= 5.x (where
    ``past_key_values`` / ``layer_past`` are deprecated), else the older names."""
    if cls not in _CACHE_KW:
        names = params(cls.forward)[0]
        _CACHE_KW[cls] = next((k for k in _CACHE_KWS if k in names), None)
    return _CACHE_KW[cls]
