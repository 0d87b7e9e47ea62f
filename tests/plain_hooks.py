"""Plain torch hooks for the naive reference loops the tests compare against (never the engine's)."""
from __future__ import annotations

from torch import nn


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
