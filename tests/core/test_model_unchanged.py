"""The contract: causalscope never changes the user's model.

Every public operation (and every operation made to fail half-way) must leave the wrapped module with
bit-identical parameters and buffers (same objects, same version counters, same ``.grad``), the same
hooks of every kind on every submodule, the same per-module ``training`` flags, the same
``requires_grad`` flags, and the same global torch grad mode.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import causalscope as cs
from causalscope import (
    Add,
    Intervention,
    InterventionError,
    Mean,
    Noise,
    Patch,
    PlanError,
    Project,
    Resample,
    Scale,
    Set,
    Site,
    SiteError,
    Zero,
)
from causalscope.zoo import build_mlp, build_tiny_lm
from conftest import PROMPTS, hooked_transformer
from model_state import assert_same, snapshot

# ---------------------------------------------------------------------------------------------------------
# Models under test
# ---------------------------------------------------------------------------------------------------------
KINDS = ["gpt2", "gpt_neox", "llama", "mlp", "hooked"]


@functools.cache
def _prototype(kind: str) -> tuple[nn.Module, Any]:
    if kind == "mlp":
        return build_mlp(), None
    if kind == "hooked":
        return hooked_transformer(), None
    return build_tiny_lm(kind)


@dataclass
class Env:
    kind: str
    m: cs.Model
    module: nn.Module
    x: Any  # 2 input rows
    x_other: Any  # 2 other rows of the same shape
    early: str  # runs before `late` in the forward
    late: str
    resid: str
    d: int  # last dim of resid, early and late
    heads: Site
    metric: Callable[[torch.Tensor], torch.Tensor]

    @property
    def hf(self) -> bool:
        return self.kind in ("gpt2", "gpt_neox", "llama")


def _noop_hook(*args, **kwargs):
    return None


def make_env(kind: str, mode: str) -> Env:
    """A fresh copy of a ``kind`` model, put in ``mode`` ('eval' or 'mixed': train mode with one eval child),
    carrying hooks of the user's own that must survive every call."""
    proto, tok = _prototype(kind)
    module = copy.deepcopy(proto)
    if mode == "mixed":
        module.train()
        next(iter(module.children())).eval()
    children = [c for c in module.modules() if c is not module]
    children[len(children) // 2].register_forward_hook(_noop_hook)
    module.register_forward_pre_hook(_noop_hook, with_kwargs=True)
    children[-1].register_forward_hook(_noop_hook, always_call=True)
    # a frozen parameter and a user-held gradient must stay exactly as they are
    params = list(module.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.full_like(params[-1], 0.25)
    g = torch.Generator().manual_seed(0)
    if kind == "mlp":
        x, x_other = torch.randn(2, 5, 16, generator=g), torch.randn(2, 5, 16, generator=g)
        return Env(kind, cs.load(module), module, x, x_other, "net.0", "net.2", "net.2", 32,
                   Site("net.2", heads=[1, 3], n_heads=4), lambda y: y[:, -1, 0])
    if kind == "hooked":
        x, x_other = torch.randint(0, 50, (2, 6), generator=g), torch.randint(0, 50, (2, 6), generator=g)
        return Env(kind, cs.load(module), module, x, x_other, "layers.0", "layers.1.mlp", "layers.1", 32,
                   Site("layers.1.attn.z", heads=[1, 3]), lambda y: y[:, -1, 0])
    return Env(kind, cs.load(module, tok), module, PROMPTS[:2], [PROMPTS[2], PROMPTS[0]], "layers.0",
               "layers.2.mlp", "layers.1", 64, Site("layers.1.attn.z", heads=[0, 2]), lambda y: y[:, -1, 7])


def qr(d: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed))).Q


# ---------------------------------------------------------------------------------------------------------
# Every public operation
# ---------------------------------------------------------------------------------------------------------
def op_load(e: Env) -> None:
    cs.load(e.module, e.m.tokenizer)
    e.m.site_names()
    e.m.site_names("layers.*")
    if e.hf:
        e.m.tokens(PROMPTS[0])


def op_plain(e: Env) -> None:
    r = e.m.run(e.x)
    assert r.output is not None and r.output.shape[0] == 2


def op_set(e: Env) -> None:
    e.m.run(e.x, {Site(e.resid, positions=[1, 3]): Set(torch.zeros(e.d))})


def op_patch(e: Env) -> None:
    src = e.m.run(e.x_other, cache=[e.resid])
    e.m.run(e.x, {Site(e.resid, positions=[2]): Patch(src)})
    e.m.run(e.x, [{Site(e.resid, positions=t): Patch(e.x_other, row=1)} for t in range(3)],  # raw-input source
            input_index=[0, 1, 0])


def op_add(e: Env) -> None:
    e.m.run(e.x, {e.resid: Add(torch.ones(e.d), strength=3.0)})


def op_scale(e: Env) -> None:
    e.m.run(e.x, {Site(e.late, neurons=[0, 5]): Scale(10.0)})


def op_zero(e: Env) -> None:
    e.m.run(e.x, {e.late: Zero()})


def op_mean(e: Env) -> None:
    e.m.run(e.x, {e.resid: Mean(e.m.run([*e.x, *e.x_other] if e.hf else torch.cat([e.x, e.x_other]),
                                        cache=[e.resid]))})


def op_resample(e: Env) -> None:
    e.m.run(e.x, {Site(e.resid, positions=-1): Resample(e.m.run(e.x_other, cache=[e.resid]), seed=3)})


def op_noise(e: Env) -> None:
    e.m.run(e.x, {e.early: Noise(0.5, seed=1)})


def op_project(e: Env) -> None:
    e.m.run(e.x, {e.resid: Project(torch.randn(e.d, 2), keep="off")})
    e.m.run(e.x, {e.resid: Project(torch.randn(e.d, 1), keep="onto")})


def op_subspace(e: Env) -> None:
    src = e.m.run(e.x_other, cache=[e.resid])
    site = Site(e.resid, basis=qr(e.d, 3))
    e.m.run(e.x, {site: Patch(src)}, cache=[site])
    e.m.run(e.x, {site: Zero()})


def op_heads(e: Env) -> None:
    e.m.run(e.x, {e.heads: Zero()}, cache=[e.heads])
    e.m.run(e.x, {e.heads: Scale(2.0)}, grads=[e.heads], metric=e.metric)


def op_every_intervention_one_plan(e: Env) -> None:
    src = e.m.run(e.x_other, cache=[e.resid, e.late])
    rows = [{e.resid: Set(torch.zeros(e.d))}, {e.resid: Patch(src)}, {e.resid: Add(torch.ones(e.d))},
            {e.late: Scale(0.5)}, {e.late: Zero()}, {e.resid: Mean(src)}, {e.late: Resample(src, seed=1)},
            {e.early: Noise(0.1, seed=2)}, {e.resid: Project(qr(e.d, 2))}, {e.heads: Zero()},
            {Site(e.resid, basis=qr(e.d, 2)): Patch(src), e.early: Scale(1.5)}]
    r = e.m.run(e.x, rows, input_index=[i % 2 for i in range(len(rows))], cache=[e.resid])
    assert r.output.shape[0] == len(rows)


def op_cache(e: Env) -> None:
    r = e.m.run(e.x, cache=[e.early, e.resid, e.late, e.heads, Site(e.resid, io="input")])
    assert r.cache[e.resid].shape[0] == 2


def op_grads(e: Env) -> None:
    r = e.m.run(e.x, {e.late: Scale(0.5)}, grads=[e.early, e.resid], cache=[e.resid], metric=e.metric)
    assert r.grads[e.early].abs().sum() > 0
    # parameters never get a .grad (the user's existing one is untouched; assert_same checks it bit-for-bit)
    assert [n for n, p in e.module.named_parameters() if p.grad is not None] == [list(dict(
        e.module.named_parameters()))[-1]]


def op_keep_kv(e: Env) -> None:
    if not e.hf:
        with pytest.raises(PlanError, match="keep_kv"):
            e.m.run(e.x, keep_kv=True)
        return
    r = e.m.run(e.x, keep_kv=True)
    assert r.kv is not None and len(r.kv) == e.m.n_layers


def op_forward_from(e: Env) -> None:
    if not e.hf:
        with pytest.raises(TypeError, match="no segmented forward"):
            e.m.forward_from(torch.zeros(1, 2, e.d))
        return
    full = e.m.run(e.x, cache=[e.resid], keep_kv=True)
    h = full.cache[e.resid]  # output of block 1 = input of block 2
    out = e.m.forward_from(h[:, 3:], layer=2, pos=3, past=full.kv)
    torch.testing.assert_close(out, full.output[:, 3:], atol=1e-4, rtol=1e-4)
    out0 = e.m.forward_from(h, layer=2)
    torch.testing.assert_close(out0, full.output, atol=1e-4, rtol=1e-4)


def op_chunked(e: Env) -> None:
    src = e.m.run(e.x_other, cache=[e.resid])
    rows = [{Site(e.resid, positions=t): Patch(src)} for t in range(4)] + [{e.late: Zero()}]
    kw = dict(input_index=[0, 1, 0, 1, 0], cache=[e.resid], grads=[e.early], metric=e.metric)
    a = e.m.run(e.x, rows, chunk_size=2, **kw)
    b = e.m.run(e.x, rows, chunk_size=5, **kw)
    torch.testing.assert_close(a.metric, b.metric)


OPS = {f.__name__[3:]: f for f in (op_load, op_plain, op_set, op_patch, op_add, op_scale, op_zero, op_mean,
                                   op_resample, op_noise, op_project, op_subspace, op_heads,
                                   op_every_intervention_one_plan, op_cache, op_grads, op_keep_kv,
                                   op_forward_from, op_chunked)}


@pytest.mark.parametrize("mode", ["eval", "mixed"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("kind", KINDS)
def test_operation_leaves_model_unchanged(kind, op, mode):
    e = make_env(kind, mode)
    snap = snapshot(e.module)
    OPS[op](e)
    assert_same(e.module, snap)
    OPS[op](e)  # twice: nothing accumulates across calls
    assert_same(e.module, snap)


# ---------------------------------------------------------------------------------------------------------
# Runs happen in eval mode; the mode is restored
# ---------------------------------------------------------------------------------------------------------
class Spy(Intervention):
    """Identity intervention that records what it sees while the engine's hooks are live."""

    def __init__(self, module: nn.Module, fail_at: int | None = None) -> None:
        self.module, self.fail_at, self.calls = module, fail_at, 0
        self.any_training: list[bool] = []
        self.n_hooks: list[int] = []

    def __call__(self, x, src, ctx):
        self.calls += 1
        self.any_training.append(any(m.training for m in self.module.modules()))
        self.n_hooks.append(sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in self.module.modules()))
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise UserBoom(f"intervention failed at call {self.calls}")
        return x


class UserBoom(Exception):
    pass


def _n_hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("kind", KINDS)
def test_runs_in_eval_mode_and_restores_mixed_modes(kind):
    e = make_env(kind, "mixed")
    snap = snapshot(e.module)
    assert any(snap["training"].values()) and not all(snap["training"].values())
    spy = Spy(e.module)
    e.m.run(e.x, {e.early: spy}, grads=[e.resid], metric=e.metric)
    assert spy.any_training == [False]  # every module was in eval mode during the run
    assert spy.n_hooks[0] > _n_hooks(e.module)  # the engine's hooks were live, and are gone now
    assert_same(e.module, snap)


class DropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(16, 64), nn.Dropout(p=0.5), nn.Linear(64, 4)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def test_dropout_model_in_train_mode_runs_deterministically_in_eval():
    torch.manual_seed(0)
    net = DropNet().train()
    x = torch.randn(8, 16)
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))  # dropout is live in train mode
        net.eval()
        expected = net(x)
        net.train()
    snap = snapshot(net)
    m = cs.load(net)
    outs = [m.run(x).output, m.run(x).output, m.run(x, {"drop": Scale(1.0)}).output,
            m.run(x, grads=["fc1"], metric=lambda y: y[:, 0], keep_output=True).output]
    for out in outs:
        assert torch.equal(out, expected)
    # chunks of 3 rows change BLAS blocking (1-ulp differences); live dropout would change values by O(1)
    torch.testing.assert_close(m.run(x, chunk_size=3).output, expected, atol=1e-6, rtol=0)
    assert net.training and net.drop.training
    assert_same(net, snap)


def test_hf_dropout_model_in_train_mode_runs_in_eval():
    import transformers as tf

    from causalscope.zoo import word_tokenizer
    from causalscope.zoo._tiny import lm_config

    tok = word_tokenizer()
    cfg = lm_config("gpt2", len(tok), n_layers=2)
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.5
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(cfg).train()
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        model.eval()
        expected = model(ids).logits
        model.train()
    snap = snapshot(model)
    m = cs.load(model, tok)
    assert torch.equal(m.run(ids).output, expected)
    full = m.run(ids, cache=["layers.0"], keep_kv=True)
    assert torch.equal(full.output, expected)
    torch.testing.assert_close(m.forward_from(full.cache["layers.0"], layer=1), expected, atol=1e-5, rtol=1e-5)
    assert all(mod.training for mod in model.modules())
    assert_same(model, snap)


# ---------------------------------------------------------------------------------------------------------
# Calls that raise leave the model unchanged too
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["eval", "mixed"])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_site_mid_plan_after_hooks_registered(kind, mode):
    e = make_env(kind, mode)
    snap = snapshot(e.module)
    spy = Spy(e.module)
    edits = [{e.early: spy, Site(e.late, neurons=[999]): Zero()}, {e.resid: Scale(2.0)}]
    with pytest.raises(SiteError, match=r"neurons \[999\] out of range"):
        e.m.run(e.x, edits, cache=[e.resid], grads=[e.early], metric=e.metric)
    assert spy.calls == 1 and spy.n_hooks[0] > _n_hooks(e.module)  # it failed after hooks were live
    assert_same(e.module, snap)
    spy2 = Spy(e.module)
    with pytest.raises(InterventionError, match=r"Set value has shape \(3,\)"):
        e.m.run(e.x, {e.early: spy2, e.late: Set(torch.zeros(3))})
    assert spy2.calls == 1
    assert_same(e.module, snap)


@pytest.mark.parametrize("with_grads", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_metric_that_raises(kind, with_grads):
    e = make_env(kind, "mixed")
    snap = snapshot(e.module)

    def metric(y):
        raise UserBoom("metric failed")

    with pytest.raises(UserBoom, match="metric failed"):
        e.m.run(e.x, {e.late: Zero()}, cache=[e.resid], grads=[e.early] if with_grads else [], metric=metric)
    assert_same(e.module, snap)


@pytest.mark.parametrize("with_grads", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_intervention_failing_at_chunk_two(kind, with_grads):
    e = make_env(kind, "mixed")
    snap = snapshot(e.module)
    spy = Spy(e.module, fail_at=2)
    rows = [{e.early: spy, e.late: Zero()}] * 3
    with pytest.raises(UserBoom, match="intervention failed at call 2"):
        e.m.run(e.x, rows, input_index=[0, 1, 0], chunk_size=1, cache=[e.resid],
                grads=[e.early] if with_grads else [], metric=e.metric)
    assert spy.calls == 2 and spy.any_training == [False, False]  # chunk 1 completed, chunk 2 failed
    assert_same(e.module, snap)
    # and a causalscope error in chunk 2: draws cover only input 0, chunk 2 runs input 1
    with pytest.raises(InterventionError, match="Noise draws cover 1 inputs"):
        e.m.run(e.x, {e.early: Noise(1.0, draws=torch.zeros(1, *e.m.run(e.x, cache=[e.early])
                                                             .cache[e.early].shape[1:]))}, chunk_size=1)
    assert_same(e.module, snap)


def test_forward_from_that_raises_leaves_model_unchanged():
    e = make_env("llama", "mixed")
    snap = snapshot(e.module)
    with pytest.raises(SiteError, match="forward_from needs 0 <= layer"):
        e.m.forward_from(torch.zeros(1, 3, 64), layer=7)
    with pytest.raises(cs.InputError, match="forward_from needs hidden states"):
        e.m.forward_from(torch.zeros(1, 3, 32), layer=1)
    assert_same(e.module, snap)


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        self.fc2(self.fc1(x))
        raise UserBoom("forward failed")


def test_user_forward_that_raises_leaves_model_unchanged():
    net = Exploding().train()
    snap = snapshot(net)
    with pytest.raises(UserBoom, match="forward failed"):
        cs.load(net).run(torch.zeros(3, 4), [{"fc1": Zero()}, {"fc2": Scale(2.0)}, {}], cache=["fc1"],
                         grads=["fc1"], metric=lambda y: y[:, 0], chunk_size=2)
    assert_same(net, snap)


def _in_place_noop(p: torch.Tensor) -> None:
    with torch.no_grad():
        p.add_(0.0)


def test_snapshot_detects_changes():
    """The checker itself catches each kind of change it is meant to catch."""
    def fresh():
        net = build_mlp()
        return net, snapshot(net)

    changes: list[Callable[[nn.Module], Any]] = [
        lambda n: _in_place_noop(n.net[0].weight),  # in-place write, same values: version counter
        lambda n: n.net[0].weight.data.__setitem__((0, 0), 1.0),
        lambda n: n.net[2].register_forward_hook(_noop_hook),
        lambda n: n.net[2].register_forward_pre_hook(_noop_hook),
        lambda n: n.net[2].register_full_backward_hook(_noop_hook),
        lambda n: n.net[2].register_forward_hook(_noop_hook, with_kwargs=True),
        lambda n: n.net[1].train(),
        lambda n: n.net[0].bias.requires_grad_(False),
        lambda n: setattr(n.net[0].bias, "grad", torch.zeros(32)),
        lambda n: n.register_buffer("extra", torch.zeros(1)),
        lambda n: setattr(n.net[0], "cached_thing", 1),
        lambda n: torch.set_grad_enabled(False),
    ]
    for i, change in enumerate(changes):
        net, snap = fresh()
        try:
            change(net)
            with pytest.raises(AssertionError):
                assert_same(net, snap)
                print(f"change {i} went unnoticed")
        finally:
            torch.set_grad_enabled(True)
    net, snap = fresh()
    assert_same(net, snap)
