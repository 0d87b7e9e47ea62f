"""Test helper: ``snapshot(module)`` and ``assert_same(module, snap)``, the check that a model comes back
exactly as it was handed over (parameters, buffers, hooks, training flags, config, global torch state).

>>> snap = snapshot(model); cs.load(model).run(x); assert_same(model, snap)
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.modules.module as torch_module
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# snapshot / assert_same
# ---------------------------------------------------------------------------------------------------------
#: hook dicts every nn.Module has (torch 2.x); the snapshot also picks up any other ``*hook*`` dict it finds
NAMED_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                    "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
                    "_forward_hooks_always_called", "_state_dict_hooks", "_state_dict_pre_hooks",
                    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _hooks_of(m: nn.Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, value in vars(m).items():
        if "hook" not in attr:
            continue
        if isinstance(value, dict):  # the count is len(); the ids also catch a hook swapped for another
            out[attr] = tuple((k, id(v)) for k, v in value.items())
        else:
            out[attr] = repr(value)
    return out


def _global_state() -> dict[str, Any]:
    hooks = {name: tuple((k, id(v)) for k, v in value.items()) for name, value in vars(torch_module).items()
             if name.startswith("_global") and "hook" in name and isinstance(value, dict)}
    return {"hooks": hooks, "grad_enabled": torch.is_grad_enabled(),
            "inference_mode": torch.is_inference_mode_enabled()}


def _tensor_state(t: torch.Tensor | None) -> Any:
    if t is None:
        return None
    return {"id": id(t), "value": t.detach().clone(), "dtype": t.dtype, "device": t.device,
            "shape": tuple(t.shape), "version": t._version, "requires_grad": t.requires_grad,
            "grad": None if t.grad is None else t.grad.detach().clone()}


def snapshot(module: nn.Module) -> dict[str, Any]:
    """Everything about ``module`` that causalscope promises not to change."""
    modules = list(module.named_modules(remove_duplicate=False))
    for attr in NAMED_HOOK_DICTS:
        assert isinstance(getattr(module, attr), dict), f"torch no longer has Module.{attr}"
    config = getattr(module, "config", None)
    return {
        "structure": [(name, id(m), type(m)) for name, m in modules],
        "training": {name: m.training for name, m in modules},
        "hooks": {name: _hooks_of(m) for name, m in modules},
        "attrs": {name: sorted(vars(m)) for name, m in modules},
        "params": {name: _tensor_state(p) for name, p in module.named_parameters(remove_duplicate=False)},
        "buffers": {name: _tensor_state(b) for name, b in module.named_buffers(remove_duplicate=False)},
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
        "global": _global_state(),
    }


def _assert_tensor_same(where: str, t: torch.Tensor | None, s: Any) -> None:
    if s is None:
        assert t is None, f"{where} appeared"
        return
    assert t is not None, f"{where} disappeared"
    assert id(t) == s["id"], f"{where} was replaced by another tensor object"
    assert (t.dtype, t.device, tuple(t.shape)) == (s["dtype"], s["device"], s["shape"]), f"{where} dtype/device/shape"
    assert torch.equal(t.detach(), s["value"]), f"{where} values changed"
    assert t._version == s["version"], f"{where} was written in place (version {s['version']} -> {t._version})"
    assert t.requires_grad == s["requires_grad"], f"{where} requires_grad changed"
    if s["grad"] is None:
        assert t.grad is None, f"{where} got a .grad"
    else:
        assert t.grad is not None and torch.equal(t.grad, s["grad"]), f"{where}.grad changed"


def assert_same(module: nn.Module, snap: dict[str, Any]) -> None:
    """``module`` is exactly as it was when ``snap = snapshot(module)`` was taken."""
    now = snapshot(module)
    assert now["structure"] == snap["structure"], "module tree changed"
    assert now["training"] == snap["training"], \
        f"training flags changed: {[k for k in snap['training'] if now['training'].get(k) != snap['training'][k]]}"
    bad = [k for k in snap["hooks"] if now["hooks"].get(k) != snap["hooks"][k]]
    assert not bad, f"hooks changed on {bad}: {[(now['hooks'][k], snap['hooks'][k]) for k in bad[:2]]}"
    bad = [k for k in snap["attrs"] if now["attrs"].get(k) != snap["attrs"][k]]
    assert not bad, f"module attributes added/removed on {bad}"
    assert now["params"].keys() == snap["params"].keys(), "parameter names changed"
    assert now["buffers"].keys() == snap["buffers"].keys(), "buffer names changed"
    params = dict(module.named_parameters(remove_duplicate=False))
    for name, s in snap["params"].items():
        _assert_tensor_same(f"parameter {name}", params[name], s)
    buffers = dict(module.named_buffers(remove_duplicate=False))
    for name, s in snap["buffers"].items():
        _assert_tensor_same(f"buffer {name}", buffers[name], s)
    assert now["config"] == snap["config"], "model config changed"
    assert now["global"]["hooks"] == snap["global"]["hooks"], "global module hooks changed"
    assert now["global"]["grad_enabled"] == snap["global"]["grad_enabled"], "global grad mode changed"
    assert now["global"]["inference_mode"] == snap["global"]["inference_mode"], "inference mode leaked"




def assert_refused(call: Any, modules: list[nn.Module], err: type, pattern: str) -> None:
    """``call()`` raises exactly ``err`` (a causalscope error, also a ValueError) with a message matching
    ``pattern``, and every module in ``modules`` is as it was before: the check of both bad-input tables."""
    import pytest

    from causalscope import CausalScopeError

    snaps = [snapshot(mod) for mod in modules]
    with pytest.raises(CausalScopeError) as info:
        call()
    assert type(info.value) is err, f"{type(info.value).__name__}: {info.value}"
    assert isinstance(info.value, ValueError)
    info.match(pattern)
    for mod, snap in zip(modules, snaps):
        assert_same(mod, snap)
