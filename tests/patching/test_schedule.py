"""Activation patching picks its schedule from a cost model (the segmented floor or one batched pass), says which
ran in meta, and both give the same numbers. The cost model's token-layer counts are the counts each schedule
then executes."""
from __future__ import annotations

import pytest
import torch
import transformers as tf

import causalscope as cs

METRIC = cs.logit_diff(5, 9)


def gpt2(L: int, d: int, H: int) -> cs.Model:
    cfg = tf.GPT2Config(n_layer=L, n_embd=d, n_head=H, vocab_size=100, n_positions=32, bos_token_id=0,
                        eos_token_id=0)
    torch.manual_seed(0)
    return cs.load(tf.GPT2LMHeadModel(cfg).eval(), name=f"gpt2-{L}x{d}")


def pair(P: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.randint(0, 100, (P, T), generator=torch.Generator().manual_seed(1))
    k = c.clone()
    k[:, 2] = (k[:, 2] + 1) % 100
    return c, k


@pytest.mark.parametrize("sites", ["resid_pre", "heads", ["layers.1", "layers.2.mlp"]])
def test_both_schedules_agree_and_the_cost_model_counts_what_runs(sites):
    m = gpt2(3, 32, 4)
    c, k = pair(2, 7)
    floor = cs.activation_patching(m, c, k, sites, METRIC, schedule="floor")
    batched = cs.activation_patching(m, c, k, sites, METRIC, schedule="batched")
    torch.testing.assert_close(floor.values, batched.values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(floor.meta["raw"]), torch.tensor(batched.meta["raw"]), atol=1e-5, rtol=0)
    assert (floor.meta["schedule"], batched.meta["schedule"]) == ("floor", "batched")
    est = floor.meta["schedule_costs"][0]
    assert floor.meta["token_layers"] == 2 * est["floor_token_layers"]      # two directions
    assert batched.meta["token_layers"] == 2 * est["batched_token_layers"]


def test_auto_takes_one_batched_pass_on_a_tiny_model_and_the_floor_when_it_saves_compute():
    tiny = gpt2(2, 16, 2)
    c, k = pair(1, 6)
    r = cs.activation_patching(tiny, c, k, "resid_pre", METRIC)
    assert r.meta["schedule"] == "batched" and r.meta["fast_path"] is False
    costs = r.meta["schedule_costs"][0]
    assert costs["batched"] < costs["floor"]
    wide = gpt2(4, 256, 4)
    c, k = pair(6, 12)
    r = cs.activation_patching(wide, c, k, "resid_pre", METRIC, direction="denoise")
    costs = r.meta["schedule_costs"][0]
    assert r.meta["schedule"] == "floor" and costs["floor"] < costs["batched"]


def test_schedule_errors():
    m = cs.load("and-gate")
    with pytest.raises(cs.InputError, match="schedule='floor' needs a transformer LM"):
        cs.activation_patching(m, torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.0]]), ["model.0"],
                               cs.output_value(), schedule="floor")
    with pytest.raises(cs.InputError, match="schedule must be 'auto', 'floor' or 'batched'"):
        cs.activation_patching(m, torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.0]]), ["model.0"],
                               cs.output_value(), schedule="fast")


def test_mediation_schedules_agree():
    m = gpt2(3, 32, 4)
    c, k = pair(3, 7)
    floor = cs.mediation(m, (c, k), "resid_pre", metric=METRIC, n_boot=30, schedule="floor")
    batched = cs.mediation(m, (c, k), "resid_pre", metric=METRIC, n_boot=30, schedule="batched")
    assert (floor.meta["schedule"], batched.meta["schedule"]) == ("floor", "batched")
    torch.testing.assert_close(floor.values, batched.values, atol=1e-4, rtol=0)
    assert cs.mediation(m, (c, k), "resid_pre", metric=METRIC, n_boot=30).meta["schedule"] in ("floor", "batched")
