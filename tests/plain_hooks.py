"""Plain torch hooks for the naive reference loops the tests compare against (never the engine's)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from causalscope import Site


def hook(module: nn.Module, io: str, fn):
    """fn(x) -> replacement or None, on the module's first positional input or its (first) output."""
    if io == "input":
        def pre(mod, args):
            new = fn(args[0])
            return None if new is None else (new, *args[1:])
        return module.register_forward_pre_hook(pre)

    def post(mod, args, out):
        x = out[0] if isinstance(out, tuple) else out
        new = fn(x)
        if new is None:
            return None
        return (new, *out[1:]) if isinstance(out, tuple) else new
    return module.register_forward_hook(post)


def alone_act(m, prompt: str, site: str) -> Any:
    """(T, d) activation of ``site`` for ``prompt`` alone, read with a plain hook."""
    res = m.adapter.resolve(Site(site))
    got: list[torch.Tensor] = []
    h = hook(res.module, res.io, lambda x: got.append(x[0].detach().clone()))
    try:
        with torch.no_grad():
            m.module(m.adapter.tokenize(prompt))
    finally:
        h.remove()
    return got[0]


def alone_logits(m, prompt: str, site: str, write) -> Any:
    """Last-token logits of ``prompt`` alone with ``write(x)`` (x: (T, d), edited in place) at ``site``."""
    res = m.adapter.resolve(Site(site))

    def fn(x: torch.Tensor) -> Any:
        x = x.clone()
        write(x[0])
        return x
    h = hook(res.module, res.io, fn)
    try:
        with torch.no_grad():
            return m.module(m.adapter.tokenize(prompt)).logits[0, -1]
    finally:
        h.remove()
