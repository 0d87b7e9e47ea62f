"""Models spread over devices with accelerate (here CPU + disk offload: half the blocks' weights stay on disk and
are loaded per forward) give the same results as the model on one device, and come back as they were handed over."""
from __future__ import annotations

import copy

import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_tiny_lm

accelerate = pytest.importorskip("accelerate")  # a dependency of transformers' device_map loading

CLEAN, CORRUPTED = "the cat sat on the mat", "the dog sat on the mat"
FACT, SUBJECT = "the old king saw a big river near the capital city of", "old king"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    model, tok = build_tiny_lm("gpt2", init_std=0.3)
    twin = copy.deepcopy(model)
    L = model.config.n_layer
    device_map = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
                  "transformer.ln_f": "cpu", "lm_head": "cpu",
                  **{f"transformer.h.{i}": "cpu" if i < L // 2 else "disk" for i in range(L)}}
    spread = accelerate.dispatch_model(twin, device_map=device_map, offload_dir=str(tmp_path_factory.mktemp("off")))
    assert next(spread.transformer.h[L - 1].parameters()).device.type == "meta"  # really offloaded
    return cs.load(model, tok), cs.load(spread, tok)


def _state(module: torch.nn.Module) -> tuple:
    """What a run must leave as it was on an offloaded model: its modules, flags and hooks, and where each weight
    lives (accelerate itself swaps the offloaded weights' tensor objects on every forward, so not their ids)."""
    mods = list(module.named_modules())
    return ([(n, id(m), m.training, tuple(m._forward_hooks), tuple(m._forward_pre_hooks),
              getattr(m, "_hf_hook", None).__class__.__name__) for n, m in mods],
            [(n, p.device.type, tuple(p.shape)) for n, p in module.named_parameters()])


def test_run_patching_tracing_ig_and_mediation_equal_the_one_device_model(pair):
    one, spread = pair
    before = _state(spread.module)
    x = one.adapter.tokenize([CLEAN, CORRUPTED])
    torch.testing.assert_close(spread.run(x).output, one.run(x).output, atol=0, rtol=0)
    for schedule in ("floor", "batched"):
        a = cs.activation_patching(one, CLEAN, CORRUPTED, "resid_pre", cs.logit(5), schedule=schedule)
        b = cs.activation_patching(spread, CLEAN, CORRUPTED, "resid_pre", cs.logit(5), schedule=schedule)
        torch.testing.assert_close(b.values, a.values, atol=1e-6, rtol=1e-6)
    for kind in ("hidden", "mlp", "attn"):
        ta = cs.causal_trace(one, FACT, SUBJECT, kind=kind, samples=3, window=2)
        tb = cs.causal_trace(spread, FACT, SUBJECT, kind=kind, samples=3, window=2)
        torch.testing.assert_close(tb.values, ta.values, atol=1e-6, rtol=1e-6)
    ia = cs.integrated_gradients(one, CLEAN, CORRUPTED, "layers.1", target=5, steps=8)
    ib = cs.integrated_gradients(spread, CLEAN, CORRUPTED, "layers.1", target=5, steps=8)
    torch.testing.assert_close(ib.attributions, ia.attributions, atol=1e-6, rtol=1e-6)
    ma = cs.mediation(one, ([CLEAN], [CORRUPTED]), "resid_pre", metric=cs.logit(5), n_boot=10)
    mb = cs.mediation(spread, ([CLEAN], [CORRUPTED]), "resid_pre", metric=cs.logit(5), n_boot=10)
    torch.testing.assert_close(mb.values, ma.values, atol=1e-6, rtol=1e-6)
    assert _state(spread.module) == before  # accelerate's hooks and the offloaded weights are as they were


def test_offloading_keeps_fewer_weights_in_memory(pair):
    one, spread = pair

    def resident(m: cs.Model) -> int:
        return sum(p.numel() * p.element_size() for p in m.module.parameters() if p.device.type != "meta")
    assert resident(spread) < resident(one)
