"""SIIT-trained models (issue 19): the shipped weights meet InterpBench's thresholds against the compiled (HL)
models, measured here afresh on the held-out inputs; the training pieces equal plain-hook references; a small case
retrains from scratch (slow).

References: the compiled model's own outputs (accuracy), a plain-hook interchange loop written here (IIA, the
training pass's per-row replacements), and ``node_effects``' resample ablation (the seed's metric).
"""
from __future__ import annotations

import json

import pytest
import torch

from causalscope import InputError, circuits
from causalscope.circuits._ablation_inputs import predict
from causalscope.circuits._siit import node_forward
from causalscope.circuits._siit_eval import label_mask
from causalscope.zoo.siit import siit_names
from model_state import assert_same, snapshot

TRAINED = siit_names()


def _held_out(case: circuits.Case) -> torch.Tensor:
    rec = case.training or {}
    perm = torch.randperm(len(case.inputs), generator=torch.Generator().manual_seed(int(rec["split_seed"])))
    idx = perm[:int(round(float(rec["holdout"]) * len(case.inputs)))].sort().values  # the split, written out
    assert torch.equal(idx, case.held_out)
    return idx


def _hook_module(model, node):
    if node.startswith("a"):
        layer, head = node[1:].split(".h")
        return model.blocks[int(layer)].attn.hook_result, int(head)
    return model.blocks[int(node[1:])].mlp, None


def _plain_patch(model, base, source, node):
    """Reference interchange: cache ``node`` on ``source`` with a plain hook, write it into ``base``'s run."""
    mod, head = _hook_module(model, node)
    store = {}
    h = mod.register_forward_hook(lambda m, i, o: store.__setitem__("v", (o if head is None else o[:, :, head]).clone()))
    with torch.no_grad():
        model(source)
    h.remove()

    def write(m, i, o):
        o = o.clone()
        if head is None:
            return store["v"]
        o[:, :, head] = store["v"]
        return o
    h = mod.register_forward_hook(write)
    with torch.no_grad():
        y = model(base)
    h.remove()
    return y


def test_every_case_has_a_trained_model_with_its_correspondence():
    assert set(TRAINED) == set(circuits.case_names())
    assert "ib3-frac-prevs" in TRAINED  # the seed's own case (InterpBench case 3)
    for name in TRAINED:
        c = circuits.load_case(name, trained=True)
        hl = circuits.load_case(name)
        inside = [n for n in hl.circuit.nodes if n not in ("embed", "logits")]
        assert c.correspondence == {n: n for n in inside}
        assert c.training["seed"] == 0 and c.training["steps"] >= 1000 and c.training["train_seconds"] > 0
        assert c.model.cfg.d_model != hl.model.cfg.d_model or c.model.cfg.d_mlp != hl.model.cfg.d_mlp
        assert not torch.equal(c.inputs, torch.empty(0)) and torch.equal(c.inputs, hl.inputs)


@pytest.mark.parametrize("name", TRAINED)
def test_accuracy_against_the_compiled_model_on_held_out_inputs(name):
    c, hl = circuits.load_case(name, trained=True), circuits.load_case(name)
    te = hl.inputs[_held_out(c)]
    with torch.no_grad():
        y_ll, y_hl = c.model(te), hl.model(te)
    mask = label_mask(te, hl.model.cfg.pad_id)
    p_hl = predict(y_hl, hl.categorical, "no_prediction")
    if hl.categorical:
        counted = mask & (p_hl >= 0)
        good = y_ll.argmax(-1) == p_hl
    else:
        counted = mask
        good = (y_ll[..., 0] - p_hl).abs() <= 0.05
    acc = float((good & counted).sum() / counted.sum())
    assert acc >= 0.99
    assert circuits.siit_accuracy(c.model, hl, te) == pytest.approx(acc)


@pytest.mark.parametrize("name", TRAINED)
def test_iia_at_every_aligned_node_equals_a_plain_hook_loop_and_is_at_least_095(name):
    c, hl = circuits.load_case(name, trained=True), circuits.load_case(name)
    te = hl.inputs[_held_out(c)]
    n = len(te)
    base, source = te.repeat_interleave(n, 0), te.repeat(n, 1)
    mask = label_mask(base, hl.model.cfg.pad_id)
    ours = circuits.siit_iia(c.model, hl, c.correspondence, te)
    for hl_node, ll_node in c.correspondence.items():
        p_ll = predict(_plain_patch(c.model, base, source, ll_node), hl.categorical, "first")
        p_hl = predict(_plain_patch(hl.model, base, source, hl_node), hl.categorical, "no_prediction")
        if hl.categorical:
            counted, good = mask & (p_hl >= 0), p_ll == p_hl
        else:
            counted, good = mask, (p_ll - p_hl).abs() <= 0.05
        ref = float((good & counted).sum() / counted.sum())
        assert ours[hl_node] == pytest.approx(ref, abs=1e-4)
        assert ref >= 0.95, (hl_node, ref)


@pytest.mark.parametrize("name", TRAINED)
def test_nodes_outside_the_circuit_have_no_effect_at_scale_0_and_1(name):
    c = circuits.load_case(name, trained=True)
    idx = _held_out(c)
    r = circuits.node_effects(c.model, c.inputs[idx], circuit=c.circuit, labels=c.labels[idx],
                              categorical=c.categorical, scales=[0.0, 1.0], progress=False)
    outside = [n for n in r.nodes if r.status[n] == "not_in_circuit"]
    for n in outside:
        assert r.effect(n, 0.0) <= 0.05 and r.effect(n, 1.0) <= 0.05, (n, r.effect(n, 0.0), r.effect(n, 1.0))



#: where the seed's headline (every in-circuit node >= 0.9 at scale 0) does not hold on the shipped trained models,
#: measured on the held-out inputs (docs/siit.md "What holds and what does not"; issue 19 is blocked on this point)
SHORT_AT_ZERO = {
    "majority": "a1.h0 at 0.82, m1 at 0.79 (numerical; the compiled model: 0.50)",
    "pair-balance": "a1.h1 at 0.83 (numerical; m0 0.90, a1.h0 1.0, m1 1.0)",
    "hist": "a0.h0 at 0.78, m0 at 0.67 (categorical: a zeroed node decodes to a common count)",
    "reverse": "0.26-0.61 (categorical: a zeroed node decodes to the commonest length, 4)",
    "sort": "0.50-0.73 (categorical: a zeroed node decodes to a common position)",
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=SHORT_AT_ZERO[n]))
                                  if n in SHORT_AT_ZERO else n for n in TRAINED])
def test_in_circuit_nodes_reach_the_seeds_09_at_scale_0(name):
    """The seed's headline on trained models: zeroing an in-circuit node changes >= 90% of outputs whose labels
    differ. It holds on frac-prevs and the seed's own case (the compiled models miss it there: a zeroed numerical
    node still encodes a value, tests/circuits/test_circuits_ablation.py); strict xfails name the others."""
    c = circuits.load_case(name, trained=True)
    idx = _held_out(c)
    r = circuits.node_effects(c.model, c.inputs[idx], circuit=c.circuit, labels=c.labels[idx],
                              categorical=c.categorical, scales=[0.0], progress=False)
    for n in r.nodes:
        if r.status[n] == "in_circuit":
            assert r.effect(n, 0.0) >= 0.9, (n, r.effect(n, 0.0))


def test_the_training_pass_replacements_equal_plain_hooks():
    hl = circuits.load_case("reverse")
    g = torch.Generator().manual_seed(0)
    b = hl.inputs[torch.randint(len(hl.inputs), (6,), generator=g)]
    s = hl.inputs[torch.randint(len(hl.inputs), (6,), generator=g)]
    _, src = node_forward(hl.model, s, grab=["a3.h0", "m1"])
    rows_a, rows_m = torch.tensor([0, 2]), torch.tensor([3, 5])
    y = node_forward(hl.model, b, {"a3.h0": (rows_a, src["a3.h0"][rows_a]), "m1": (rows_m, src["m1"][rows_m])})[0]
    ref_a = _plain_patch(hl.model, b, s, "a3.h0")
    ref_m = _plain_patch(hl.model, b, s, "m1")
    with torch.no_grad():
        plain = hl.model(b)
    torch.testing.assert_close(y[rows_a], ref_a[rows_a])
    torch.testing.assert_close(y[rows_m], ref_m[rows_m])
    rest = torch.tensor([1, 4])
    torch.testing.assert_close(y[rest], plain[rest])


def test_training_is_seeded_leaves_the_case_alone_and_saves_and_reads_back(tmp_path):
    hl = circuits.load_case("frac-prevs")
    snap = snapshot(hl.model)
    a = circuits.siit(hl, steps=30, batch_size=32, evaluate=False, progress=False)
    b = circuits.siit("frac-prevs", steps=30, batch_size=32, evaluate=False, progress=False)
    assert_same(hl.model, snap)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), k
    folder = a.save(tmp_path / "fp")
    back = circuits.read_siit(folder)
    assert back.correspondence == a.correspondence and back.record["steps"] == 30
    x = hl.inputs[:10]
    assert torch.equal(back.model(x), a.model(x))
    head = json.loads((folder / "siit.json").read_text())
    assert head["format"] == "causalscope-siit/1" and head["case"] == "frac-prevs"


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(InputError, match="steps"):
        circuits.siit("frac-prevs", steps=0)
    with pytest.raises(InputError, match="correspondence"):
        circuits.siit("frac-prevs", correspondence={"m0": "m0"})
    with pytest.raises(InputError, match="correspondence"):
        circuits.siit("frac-prevs", correspondence={"m0": "m0", "a1.h0": "m0"})
    with pytest.raises(InputError, match="weights"):
        circuits.siit("frac-prevs", weights=(1.0, 1.0))
    with pytest.raises(InputError, match="not a SIIT model folder"):
        circuits.read_siit(tmp_path)
    (tmp_path / "siit.json").write_text("{broken")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match="not valid JSON"):
        circuits.read_siit(tmp_path)
    with pytest.raises(InputError, match="trained"):
        circuits.load_case("reverse", trained="yes")


@pytest.mark.slow
def test_retraining_frac_prevs_from_scratch_reaches_the_thresholds():
    t = circuits.siit("frac-prevs", progress=False)  # the shipped settings: 3000 steps, seed 0 (~1-2 min)
    r = t.record
    assert r["accuracy"] >= 0.99 and min(r["iia"].values()) >= 0.95
    for n, e in r["node_effects"].items():
        if e["status"] == "in_circuit":
            assert e["0.0"] >= 0.9, (n, e)
        else:
            assert e["0.0"] <= 0.05 and e["1.0"] <= 0.05, (n, e)
