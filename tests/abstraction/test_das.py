"""DAS on the rotated adder: single neurons fail (naive hook loop), a learned 1-d subspace succeeds; its IIA is
reproduced by an engine subspace patch and by a naive hook loop; the learned direction is the one the rotation
put A on (from the zoo's construction); the model is left untouched; errors."""
from __future__ import annotations

import pytest
import torch
from test_abstraction import hand_label, naive_iia

import causalscope as cs
from causalscope.zoo import build_adder


@pytest.fixture(scope="module")
def cm() -> cs.CausalModel:
    return cs.adder_causal_model()


@pytest.fixture(scope="module")
def test_pairs(cm) -> cs.InterchangeDataset:
    return cm.counterfactuals(n=200, intervene="A", seed=123)


@pytest.fixture(scope="module")
def trained(cm, test_pairs):
    m = cs.load("adder-rotated")
    state = {k: v.clone() for k, v in m.module.state_dict().items()}
    m.module.train()   # the caller's mode is kept
    r = cs.das(m, cm, "A", "l1", k=1, test_data=test_pairs, seed=0)
    return m, state, r


def a_direction() -> torch.Tensor:
    """Where build_adder(rotated=True) puts h12 = A + 7.1: column 1 of its rotation (same recipe, seed 0)."""
    g = torch.Generator().manual_seed(0)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()[:, 1]


def hook_subspace_iia(B: torch.Tensor, base: torch.Tensor, source: torch.Tensor, labels: torch.Tensor) -> float:
    """x' = x + (x_src - x) B B^T at l1, one pair at a time with plain forward hooks."""
    net = build_adder(rotated=True)
    hits = 0
    for i in range(len(base)):
        saved = {}
        h = net.l1.register_forward_hook(lambda mod, a, out: saved.__setitem__("x", out.clone()))
        with torch.no_grad():
            net(source[i:i + 1])
        h.remove()
        h = net.l1.register_forward_hook(lambda mod, a, out: out + ((saved["x"] - out) @ B) @ B.T)
        with torch.no_grad():
            y = net(base[i:i + 1])
        h.remove()
        hits += int(abs(float(y) - float(labels[i])) <= 1e-3)
    return hits / len(base)


def test_no_single_neuron_carries_a(cm):
    net = build_adder(rotated=True)
    for ds in (cm.counterfactuals(n=60, seed=4), cm.counterfactuals(vary="A", n=60, seed=4)):
        labels = hand_label("A", ds.base, ds.source)
        for j in range(3):
            assert naive_iia(net, [("l1", [j])], ds.base, ds.source, labels) <= 0.6
    grid = cs.alignment_search("adder-rotated", cm, "A", layers=["l1"], n=100)   # the library's own grid agrees
    assert (grid.iia().values <= 0.6).all()


def test_das_finds_a(trained, cm, test_pairs):
    m, _, r = trained
    assert isinstance(r, cs.DASResult) and r.variable == "A" and r.k == 1
    assert r.test_iia >= 0.95 and r.train_iia >= 0.95
    B = r.basis
    assert B.shape == (3, 1)
    torch.testing.assert_close(B.T @ B, torch.eye(1), atol=1e-6, rtol=0)
    assert abs(float(B[:, 0] @ a_direction())) > 0.999          # the direction the rotation put A on
    assert r.loss[-1] < 1e-3 * r.loss[0]
    assert r.dims == ("step",) and len(r.loss) >= r.meta["adam_steps"] > 0


def test_engine_subspace_patch_reproduces_reported_iia(trained, test_pairs):
    m, _, r = trained
    site = r.site
    assert site == cs.Site("l1", basis=site.basis) and site.name == "l1[subspace=1]"
    src = m.run(test_pairs.source, cache=["l1"])
    out = m.run(test_pairs.base, {site: cs.Patch(src)}).output[:, 0]
    labels = hand_label("A", test_pairs.base, test_pairs.source)
    engine_iia = float(((out - labels).abs() <= 1e-3).float().mean())
    assert engine_iia == pytest.approx(r.test_iia, abs=1e-6)
    assert hook_subspace_iia(r.basis, test_pairs.base, test_pairs.source, labels) == pytest.approx(r.test_iia, abs=1e-6)
    # and through abstraction_iia, with the learned site as the alignment of A
    assert cs.abstraction_iia(m, cs.adder_causal_model(), {"A": site}, data=test_pairs).iia("A") == \
        pytest.approx(r.test_iia, abs=1e-6)


def test_model_untouched(trained):
    m, state, _ = trained
    assert all(torch.equal(state[k], v) for k, v in m.module.state_dict().items())
    assert all(p.grad is None for p in m.module.parameters())
    assert not any(x._forward_hooks or x._forward_pre_hooks for x in m.module.modules())
    assert m.module.training and all(x.training for x in m.module.modules())
    m.module.eval()


def test_deterministic_and_round_trip(trained, cm, test_pairs, tmp_path):
    m, _, r = trained
    again = cs.das("adder-rotated", cm, "A", "l1", k=1, test_data=test_pairs, seed=0)
    assert torch.equal(again.basis, r.basis) and torch.equal(again.loss, r.loss)
    assert again.test_iia == r.test_iia
    back = cs.DASResult.from_array(cs.load_result(r.save(tmp_path / "das")))
    assert torch.equal(back.basis, r.basis) and back.test_interval == r.test_interval
    assert back.site.name == r.site.name == "l1[subspace=1]" and r.site == r.site
    assert r.plot() is not None and r.plot(backend="plotly") is not None


def test_k_equal_d_is_full_interchange(cm):
    """k = d: the subspace is all of l1, so the interchange swaps the whole layer and the output is the
    source's (Y, not A, is what all of l1 carries): a check of the subspace algebra, not of learning."""
    r = cs.das("adder-rotated", cm, "A", "l1", k=3, n_train=64, n_test=64, epochs=1, refine=0, seed=1)
    torch.testing.assert_close(r.basis @ r.basis.T, torch.eye(3), atol=1e-5, rtol=0)
    whole = cs.abstraction_iia("adder-rotated", cm, {"Y": "l1"}, n=64, seed=1)
    assert whole.iia("Y") == 1.0
    assert r.test_iia < 0.5


def test_das_errors(cm):
    cases = [
        (dict(k=0), "k .* must be an int >= 1"),
        (dict(k=True), "k "),
        (dict(k=4), "k=4 exceeds the width of site 'l1' \\(d=3\\)"),
        (dict(variable="Z"), "Unknown variable 'Z'"),
        (dict(site=cs.Site("l1", basis=torch.eye(3)[:, :1])), "without basis"),
        (dict(lr=0), "lr"),
        (dict(epochs=0), "epochs"),
        (dict(refine=-1), "refine"),
        (dict(n_train=0), "n_train"),
    ]
    for kwargs, words in cases:
        args = dict(variable="A", site="l1", k=1, n_train=8, n_test=8, epochs=1, refine=0)
        args.update(kwargs)
        with pytest.raises(cs.InputError, match=words):
            cs.das("adder-rotated", cm, args.pop("variable"), args.pop("site"), **args)
    for where in ("l9", cs.Site("l1", neurons=7)):
        with pytest.raises(cs.InputError) as e:
            cs.das("adder-rotated", cm, "A", where, n_train=8, n_test=8, epochs=1, refine=0)
        assert isinstance(e.value, cs.SiteError)
    with pytest.raises(cs.InputError, match="causal_model must be"):
        cs.das("adder-rotated", None, "A", "l1")
