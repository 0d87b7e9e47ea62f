"""Node ablations (scaled resample / mean / zero) and PCA-subspace ablations, against naive references.

The references run the model with plain forward hooks (tests/plain_hooks.py), one (base, source) pair or one
batch at a time, and count InterpBench's metric by hand; PCA directions come from scikit-learn.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import causalscope as cs
from causalscope import circuits
from causalscope.circuits import Circuit, node_effects, position_pca, subspace_effects
from causalscope.zoo.compiled import CompiledConfig, random_compiled
from model_state import assert_same, snapshot
from plain_hooks import hook

CFG = CompiledConfig(n_layers=2, d_model=12, n_heads=2, d_head=4, d_mlp=8, d_vocab=5, d_vocab_out=3, n_ctx=6)
NUM_CFG = CompiledConfig(n_layers=2, d_model=12, n_heads=2, d_head=4, d_mlp=8, d_vocab=5, d_vocab_out=1, n_ctx=6)
NODES = ["a0.h1", "m0", "a1.h0"]
SCALES = [0.0, 0.5, 1.0, 2.0]


def _net(cfg: CompiledConfig = CFG):
    return random_compiled(cfg, seed=1, scale=2.0)


def _inputs(n: int = 8, T: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CFG.d_vocab, (n, T), generator=torch.Generator().manual_seed(seed))


# -- the naive reference --------------------------------------------------------------------------------------------
def _module(net, node: str):
    layer = int(node[1:].split(".")[0])
    return net.blocks[layer].attn.hook_result if node.startswith("a") else net.blocks[layer].mlp


def _part(out: torch.Tensor, node: str) -> torch.Tensor:
    return out[:, :, int(node.split(".h")[1])] if node.startswith("a") else out


def _run(net, x: torch.Tensor, node: str | None = None, fn=None) -> torch.Tensor:
    """The model's output with ``fn(activation of node) -> new activation of node`` (plain hooks)."""
    if node is None:
        with torch.no_grad():
            return net(x)

    def edit(out):
        out = out.clone()
        if node.startswith("a"):
            out[:, :, int(node.split(".h")[1])] = fn(_part(out, node))
        else:
            out = fn(out)
        return out

    h = hook(_module(net, node), "output", edit)
    try:
        with torch.no_grad():
            return net(x)
    finally:
        h.remove()


def _capture(net, x: torch.Tensor, node: str) -> torch.Tensor:
    got = {}

    def keep(out):
        got["a"] = _part(out, node).clone()

    h = hook(_module(net, node), "output", keep)
    try:
        with torch.no_grad():
            net(x)
    finally:
        h.remove()
    return got["a"]


def _pred(out: torch.Tensor, categorical: bool) -> torch.Tensor:
    return out.argmax(-1) if categorical else out[..., 0]


def _miss(pred, label, categorical, atol=5e-2):
    return pred != label if categorical else (pred - label).abs() > atol


def naive_resample(net, X, node, scale, categorical=True, transform=None):
    """InterpBench's check_causal_effect (accuracy metric) over every (base, source) pair, one pair at a time.
    ``transform(base_act, source_act, scale) -> new act`` (default: ``scale * source``)."""
    labels = _pred(_run(net, X), categorical)
    valid = torch.ones_like(labels, dtype=torch.bool)
    valid[:, 0] = False
    num = den = 0
    for b, s in itertools.product(range(len(X)), repeat=2):
        src = _capture(net, X[s:s + 1], node)
        fn = (lambda a: scale * src) if transform is None else (lambda a: transform(a, src, scale))
        pred = _pred(_run(net, X[b:b + 1], node, fn), categorical)[0]
        differ = (labels[b] != labels[s]) & valid[b]
        num += int((differ & _miss(pred, labels[b], categorical)).sum())
        den += int(differ.sum())
    return num / den


def naive_mean_zero(net, X, node, scale, ablation, categorical=True):
    labels = _pred(_run(net, X), categorical)
    mean = _capture(net, X, node).mean(0, keepdim=True)
    fill = (lambda a: scale * mean.expand_as(a)) if ablation == "mean" else (lambda a: torch.zeros_like(a))
    pred = _pred(_run(net, X, node, fill), categorical)
    valid = torch.ones_like(labels, dtype=torch.bool)
    valid[:, 0] = False
    return int((_miss(pred, labels, categorical) & valid).sum()) / int(valid.sum())


# -- node effects ---------------------------------------------------------------------------------------------------
def test_resample_matches_naive_pair_loop():
    net, X = _net(), _inputs()
    r = node_effects(net, X, nodes=NODES, scales=SCALES)
    assert r.dims == ("node", "scale") and r.nodes == NODES and r.scales == SCALES
    for node, scale in itertools.product(NODES, SCALES):
        assert r.effect(node, scale) == pytest.approx(naive_resample(net, X, node, scale), abs=1e-12), (node, scale)
    assert r.values.max() > 0.3  # the random model does react


def test_numerical_resample_matches_naive():
    net, X = _net(NUM_CFG), _inputs()
    r = node_effects(net, X, nodes=["a0.h0", "m1"], scales=[0.0, 0.8], categorical=False)
    for node, scale in itertools.product(["a0.h0", "m1"], [0.0, 0.8]):
        assert r.effect(node, scale) == pytest.approx(naive_resample(net, X, node, scale, categorical=False), abs=1e-12)


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_mean_and_zero_match_naive(ablation):
    net, X = _net(), _inputs(12)
    r = node_effects(net, X, ablation=ablation, nodes=NODES, scales=SCALES)
    for node, scale in itertools.product(NODES, SCALES):
        assert r.effect(node, scale) == pytest.approx(naive_mean_zero(net, X, node, scale, ablation), abs=1e-12)
    if ablation == "zero":  # the scale changes nothing
        assert torch.equal(r.values, r.values[:, :1].expand_as(r.values))


def test_mean_at_scale_zero_is_zero_ablation():
    net, X = _net(), _inputs(12)
    mean = node_effects(net, X, ablation="mean", scales=[0.0, 1.0])
    zero = node_effects(net, X, ablation="zero", scales=[0.0])
    assert torch.equal(mean.values[:, 0], zero.values[:, 0])


def test_a_node_that_writes_nothing_has_no_effect():
    """A head whose output weights are zero (tracr's unused heads) writes 0: every ablation leaves the run as it
    was, so its effect is 0 at every scale; the other nodes do react."""
    net, X = _net(), _inputs()
    with torch.no_grad():
        net.blocks[0].attn.W_O[1] = 0
    for ablation in ("resample", "mean", "zero"):
        r = node_effects(net, X, ablation=ablation, nodes=["a0.h1", "m0"], scales=SCALES)
        assert r.values[0].abs().max() == 0 and r.values[1].max() > 0, ablation


def test_sampled_pairs_are_seeded_and_chunking_free():
    net, X = _net(), _inputs(10)
    a = node_effects(net, X, nodes=NODES, scales=[0.5, 2.0], pairs=25, seed=3)
    b = node_effects(net, X, nodes=NODES, scales=[0.5, 2.0], pairs=25, seed=3, chunk_size=7)
    assert a.meta["n_pairs"] == 25 and torch.equal(a.values, b.values)
    full = node_effects(net, X, nodes=NODES, scales=[0.5, 2.0])
    assert full.meta["n_pairs"] > 25


def test_circuit_status_table_plot_and_json(tmp_path):
    net, X = _net(), _inputs()
    c = Circuit(["embed", "a0.h1", "m1", "logits"], [("embed", "a0.h1"), ("a0.h1", "m1"), ("m1", "logits")])
    r = node_effects(net, X, circuit=c, scales=[0.0, 1.0])
    assert r.status == {"a0.h0": "not_in_circuit", "a0.h1": "in_circuit", "m0": "not_in_circuit",
                        "a1.h0": "not_in_circuit", "a1.h1": "not_in_circuit", "m1": "in_circuit"}
    t = r.table()
    assert list(t.columns) == ["node", "status", "scale 0", "scale 1"]
    assert list(t["node"][:2]) == ["a0.h1", "m1"] and set(t["status"][:2]) == {"in_circuit"}
    fig = r.plot()
    assert len(fig.axes[0].lines) == 6
    pfig = r.plot(backend="plotly")
    assert {tr.line.color for tr in pfig.data[:6]} == {"green", "orange"}
    back = circuits.NodeEffects.from_json(r.to_json(tmp_path / "r.json"))
    assert back.nodes == r.nodes and torch.allclose(back.values, r.values) and back.status == r.status
    meta = json.loads(r.to_json())["meta"]
    assert meta["ablation"] == "resample" and meta["pairs"] == "all" and meta["n_inputs"] == 8


# -- PCA subspaces --------------------------------------------------------------------------------------------------
def test_position_pca_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(40, 3, 6, generator=g) * torch.tensor([5.0, 3, 2, 1, 0.5, 0.1]) + torch.randn(6, generator=g)
    pca = position_pca(acts)
    for t in range(3):
        ref = PCA(n_components=2).fit(acts[:, t].numpy())
        np.testing.assert_allclose(pca.mean[t].numpy(), ref.mean_, atol=1e-5)
        np.testing.assert_allclose(pca.variance[t, :2].numpy(), ref.explained_variance_, rtol=1e-4)
        B = pca.basis(t, 2).numpy()
        np.testing.assert_allclose(np.abs(B.T), np.abs(ref.components_), atol=1e-4)  # up to sign
        np.testing.assert_allclose(B @ B.T, ref.components_.T @ ref.components_, atol=1e-4)
        C = pca.basis(t, 2, high_variance=False).numpy()
        np.testing.assert_allclose(np.hstack([B, C]).T @ np.hstack([B, C]), np.eye(6), atol=1e-5)


def _naive_subspace(net, X, node, scale, k, self_patch, high, center):
    """The four variants with sklearn PCA per position (positions 1..), one pair at a time."""
    acts = _capture(net, X, node)
    proj, mean = {}, {}
    for t in range(1, X.shape[1]):
        ref = PCA(n_components=k).fit(acts[:, t].numpy())
        P = torch.tensor(ref.components_.T @ ref.components_, dtype=torch.float32)
        proj[t] = P if high else torch.eye(P.shape[0]) - P
        mean[t] = torch.tensor(ref.mean_, dtype=torch.float32) if center else torch.zeros(P.shape[0])

    def transform(a, src, s):
        out = a.clone()
        for t, P in proj.items():
            x, mu = a[:, t], mean[t]
            new = (x - mu) @ P if self_patch else (src[:, t] - mu) @ P
            out[:, t] = x - (x - mu) @ P + s * new
        return out

    return naive_resample(net, X, node, scale, transform=transform)


@pytest.mark.parametrize("self_patch,high", [(True, True), (True, False), (False, True), (False, False)])
def test_subspace_variants_match_sklearn_reference(self_patch, high):
    net, X = _net(), _inputs(10)
    r = subspace_effects(net, X, k=2, self_patch=self_patch, ablate_high_variance=high, nodes=["a0.h1", "m0"],
                         scales=[0.0, 0.5, 2.0])
    for node, scale in itertools.product(["a0.h1", "m0"], [0.0, 0.5, 2.0]):
        want = _naive_subspace(net, X, node, scale, 2, self_patch, high, True)
        assert r.effect(node, scale) == pytest.approx(want, abs=1e-12), (node, scale)


def test_uncentred_subspace_matches_reference():
    net, X = _net(), _inputs(10)
    r = subspace_effects(net, X, k=3, ablate_high_variance=False, center=False, nodes=["a1.h1"], scales=[0.0, 0.5])
    for scale in [0.0, 0.5]:
        assert r.effect("a1.h1", scale) == pytest.approx(
            _naive_subspace(net, X, "a1.h1", scale, 3, False, False, False), abs=1e-12)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("high", [True, False])
def test_self_patch_at_scale_one_changes_nothing(center, high):
    net, X = _net(), _inputs()
    r = subspace_effects(net, X, k=2, self_patch=True, ablate_high_variance=high, center=center, scales=[1.0])
    assert r.values.abs().max() == 0


def test_full_space_high_variance_is_full_resample():
    """k = d: the top-k subspace is everything, so uncentred it is the full resample ablation at every scale,
    and centred it agrees at scale 1 (mu + 1 * (src - mu) = src)."""
    net, X = _net(), _inputs(10)
    pos = list(range(1, 5))
    full = node_effects(net, X, nodes=NODES, scales=SCALES, positions=pos)
    raw = subspace_effects(net, X, k=CFG.d_model, center=False, nodes=NODES, scales=SCALES)
    assert torch.allclose(raw.values, full.values, atol=1e-12)
    centred = subspace_effects(net, X, k=CFG.d_model, nodes=NODES, scales=[1.0])
    assert torch.allclose(centred.values[:, 0], full.values[:, SCALES.index(1.0)], atol=1e-12)
    none = subspace_effects(net, X, k=CFG.d_model, ablate_high_variance=False, nodes=NODES, scales=[0.0, 5.0])
    assert none.values.abs().max() == 0  # the complement of everything is nothing


# -- errors and the model contract ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"nodes": ["a0.h7"]}, "Unknown node 'a0.h7'.*Closest"),
    ({"nodes": ["embed"]}, "cannot be ablated"),
    ({"scales": []}, "scales is empty"),
    ({"scales": [1.0, float("nan")]}, "finite"),
    ({"scales": [1.0, 1.0]}, "repeat"),
    ({"ablation": "noise"}, "ablation must be"),
    ({"pairs": 0}, "pairs must be"),
    ({"labels": torch.zeros(3, 5, dtype=torch.long)}, "labels must be shaped"),
    ({"positions": [9]}, "positions"),
])
def test_node_effect_errors(kwargs, match):
    with pytest.raises(cs.InputError, match=match):
        node_effects(_net(), _inputs(), **kwargs)


@pytest.mark.parametrize("k", [0, CFG.d_model + 1, 1.5])
def test_k_out_of_range(k):
    net = _net()
    snap = snapshot(net)
    with pytest.raises(cs.InputError, match="k .*must be an int from 1 to 12"):
        subspace_effects(net, _inputs(), k=k)
    assert_same(net, snap)


def test_other_input_errors():
    with pytest.raises(cs.InputError, match="inputs are needed"):
        node_effects(_net())
    with pytest.raises(cs.InputError, match="at least 2 inputs"):
        node_effects(_net(), _inputs(1))
    with pytest.raises(cs.InputError, match="per-head residual writes"):
        node_effects(cs.zoo.build_mlp(), torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(cs.InputError, match="one output per position"):
        node_effects(_net(), _inputs(), categorical=False)
    same = torch.zeros(8, 5, dtype=torch.long)
    with pytest.raises(cs.InputError, match="No two inputs have different labels"):
        node_effects(_net(), _inputs(), labels=same)


def test_model_unchanged_and_no_hooks_leak():
    net, X = _net(), _inputs()
    net.train()
    snap = snapshot(net)
    node_effects(net, X, nodes=NODES, scales=[0.0, 0.5])
    node_effects(net, X, ablation="mean", scales=[0.5])
    subspace_effects(net, X, scales=[0.0, 0.5])
    assert_same(net, snap)
    assert net.training


# -- the shipped cases ----------------------------------------------------------------------------------------------
def _case_names() -> list[str]:
    fn = getattr(circuits, "case_names", None)
    return list(fn()) if fn is not None else []


#: Cases where some in-circuit node falls short of the issue's 0.9 at scale 0, and why (InterpBench's metric, a
#: tied argmax counting as no prediction; docs/node-ablations.md "Exact compiled models"). Scale 0 is a zero
#: ablation. Every node that writes a categorical value (one-hot) reaches >= 0.9: zeroed, it encodes no value at
#: all. A node that writes a number encodes a value even when zeroed (0; a zeroed SelectorWidth head reads as
#: the largest width), and on an exact compiled model that value is the right answer on some inputs.
SHORT_AT_ZERO = {
    "frac-prevs": "m0, a1.h0 at 0.56: zeroed, the output is 0, the right answer wherever no 'x' came yet",
    "majority": "m0, a1.h0, m1 at 0.50: zeroed, the output is 0, the right answer for half the triples",
    "pair-balance": "m0, m1 at 0.71; a1.h0, a1.h1 at 0.61: the zeroed output 0 (or -closes, +opens) is right on "
                    "balanced prefixes",
    "ib3-frac-prevs": "m0, a1.h0 at 0.48 (the seed's own case): zeroed, the output is 0, the right answer wherever "
                      "no 'x' came yet",
    "reverse": "a0.h0 at 0.21: a zeroed SelectorWidth head reads as length max_seq_len, right for full-length inputs",
}
#: the numerical cases' shortfall is tested in closed form below; on the SIIT-trained models of the same cases the
#: threshold is asserted instead (tests/circuits/test_siit.py); only the categorical cases keep the literal test here
NUMERICAL_CASES = {"frac-prevs", "ib3-frac-prevs", "majority", "pair-balance"}


def _effects_at_zero(name: str) -> tuple[dict[str, float], dict[str, float]]:
    r = node_effects(circuits.load_case(name), scales=[0.0])
    eff = dict(zip(r.nodes, r.values[:, 0].tolist()))
    return ({n: e for n, e in eff.items() if r.status[n] == "in_circuit"},
            {n: e for n, e in eff.items() if r.status[n] == "not_in_circuit"})


def _encoding(name: str, node: str) -> str:
    return circuits.load_case(name).circuit.meta["nodes"][node]["encoding"]


@pytest.mark.parametrize("name", _case_names())
def test_shipped_case_not_in_circuit_nodes_have_no_effect_at_scale_zero(name):
    """The issue's acceptance, second half: not-in-circuit nodes <= 0.05 at scale 0."""
    inside, outside = _effects_at_zero(name)
    assert inside, "the case's circuit names no head or MLP"
    assert max(outside.values(), default=0.0) <= 0.05, outside


@pytest.mark.parametrize("name", _case_names())
def test_shipped_case_categorical_in_circuit_nodes_at_scale_zero(name):
    """Every in-circuit node that writes a categorical value has effect >= 0.9 at scale 0 (zeroed, it writes no
    value at all, and what reads it has nothing to go on)."""
    inside, _ = _effects_at_zero(name)
    cat = {n: e for n, e in inside.items() if _encoding(name, n) == "categorical"}
    assert all(e >= 0.9 for e in cat.values()), cat


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=SHORT_AT_ZERO[n]))
                                  if n in SHORT_AT_ZERO else n for n in _case_names() if n not in NUMERICAL_CASES])
def test_shipped_case_in_circuit_nodes_at_scale_zero(name):
    """The issue's acceptance, first half, literally: every in-circuit node >= 0.9 at scale 0 (strict xfail where it
    does not hold, with the reason: a change in the cases or the metric that makes it hold shows up as an XPASS)."""
    inside, _ = _effects_at_zero(name)
    assert min(inside.values()) >= 0.9, inside


@pytest.mark.parametrize("name,nodes", [("frac-prevs", ["m0", "a1.h0"]), ("ib3-frac-prevs", ["m0", "a1.h0"]),
                                        ("majority", ["m0", "a1.h0", "m1"]),
                                        ("pair-balance", ["m0", "m1"])])
def test_numerical_shortfall_is_the_zero_label_fraction(name, nodes):
    """Why the numerical cases fall short, in closed form: zeroing any of these nodes makes the output exactly 0
    at every label position (checked with a plain hook), so the effect is the fraction of label-changing
    (base, source, position) triples whose base label is not 0 (counted here from the labels alone)."""
    case = circuits.load_case(name)
    lab, has = case.labels.double(), case.has_label
    differ = (lab[:, None] != lab[None]) & has[:, None] & has[None]      # (base, source, T)
    expected = float((differ & (lab.abs() > 5e-2)[:, None]).sum().double() / differ.sum().double())
    r = node_effects(case, scales=[0.0], nodes=nodes)
    for node in nodes:
        out = _run(case.model, case.inputs, node, torch.zeros_like)[..., 0]
        assert bool((out[has] == 0).all()), node
        assert r.effect(node, 0.0) == pytest.approx(expected, abs=1e-12), node


@pytest.mark.parametrize("name", _case_names())
def test_shipped_case_nodes_separate_over_the_scale_sweep(name):
    """Over the seed's scales every in-circuit node moves the output (max effect > 0.3) and no other node does."""
    r = node_effects(circuits.load_case(name), pairs=1500, seed=0)
    top = r.values.max(1).values
    for node, st, v in zip(r.nodes, r.meta["status"], top.tolist()):
        assert (v > 0.3) if st == "in_circuit" else (v == 0), (node, st, v)


@pytest.mark.parametrize("name,head", [("reverse", "a3.h0"), ("sort", "a2.h0")])
def test_tied_argmax_is_no_prediction(name, head):
    """Zeroing the head that writes the output leaves all-zero logits. Read as torch's first maximal id (as
    InterpBench does), that is "correct" whenever the label is output id 0; read as no prediction it misses
    every label, so the head's effect is 1."""
    case = circuits.load_case(name)
    tied = node_effects(case, scales=[0.0], nodes=[head])
    first = node_effects(case, scales=[0.0], nodes=[head], ties="first")
    zero_label = float((case.labels[case.has_label] == 0).double().mean())
    assert tied.effect(head, 0.0) == 1.0
    assert 0 < zero_label and first.effect(head, 0.0) < 1.0
    with pytest.raises(cs.InputError, match="ties must be"):
        node_effects(case, scales=[0.0], nodes=[head], ties="random")


def test_default_labels_skip_padding():
    """Without labels, the model's own predictions are the labels, at every position but BOS and PAD: the same
    effects as with the case's labels (which are -1 / NaN at PAD)."""
    case = circuits.load_case("sort")
    assert bool((case.inputs == case.model.cfg.pad_id).any())
    given = node_effects(case, scales=[0.0, 1.0], pairs=400)
    own = node_effects(case.model, case.inputs, circuit=case.circuit, scales=[0.0, 1.0], pairs=400)
    assert own.meta["denominator"] == given.meta["denominator"]
    assert torch.equal(own.values, given.values)
