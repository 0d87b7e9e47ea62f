"""Causal abstraction: the high-level model against hand computations, IIA against a naive hook loop (one pair
at a time, plain forward hooks on the module, hand-computed high-level labels), and the errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import causalscope as cs
from causalscope.zoo import build_adder

TUTORIAL = {"A": cs.Site("l1", neurons=1), "BC": cs.Site("l1", neurons=2), "Y": cs.Site("l2", neurons=1)}


@pytest.fixture(scope="module")
def cm() -> cs.CausalModel:
    return cs.adder_causal_model()


def hand_label(var: str, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Y after interchanging ``var`` from source rows s into base rows b, computed by hand (columns A, B, C)."""
    A, BC = (b[:, 0], b[:, 1] + b[:, 2])
    if var == "A":
        A = s[:, 0]
    elif var == "BC":
        BC = s[:, 1] + s[:, 2]
    elif var == "Y":
        return s.sum(1)
    elif var in ("B", "C"):
        j = "ABC".index(var)
        BC = BC - b[:, j] + s[:, j]
    return A + BC


def naive_iia(net: nn.Module, cells: list[tuple[str, list[int]]], base: torch.Tensor, source: torch.Tensor,
              labels: torch.Tensor, tol: float = 1e-3, classes: bool = False) -> float:
    """Patch the listed (module, neurons) of one pair at a time with plain forward hooks; fraction of hits."""
    mods = dict(net.named_modules())
    hits = 0
    for i in range(len(base)):
        saved: dict[str, torch.Tensor] = {}
        hs = [mods[name].register_forward_hook(lambda mod, a, out, name=name: saved.__setitem__(name, out.clone()))
              for name, _ in cells]
        with torch.no_grad():
            net(source[i:i + 1])
        for h in hs:
            h.remove()

        def patch(name: str, idx: list[int]):
            def hook(mod, a, out):
                out = out.clone()
                out[:, idx] = saved[name][:, idx]
                return out
            return hook
        hs = [mods[name].register_forward_hook(patch(name, idx)) for name, idx in cells]
        with torch.no_grad():
            y = net(base[i:i + 1])
        for h in hs:
            h.remove()
        if classes:
            hits += int(int(y.argmax(-1)) == int(labels[i]))
        else:
            hits += int(abs(float(y.reshape(())) - float(labels[i])) <= tol)
    return hits / len(base)


# -- the high-level model ----------------------------------------------------------------------------------------------
def test_run_and_interchange_equal_hand_computation(cm):
    assert cm.inputs == ("A", "B", "C") and cm.output == "Y"
    assert cm.run({"A": 1, "B": 2, "C": 3}) == {"A": 1, "B": 2, "C": 3, "BC": 5, "Y": 6}
    base, src = {"A": 1, "B": 2, "C": 3}, {"A": 4, "B": 5, "C": 6}
    assert cm.interchange(base, {"A": src}) == {"A": 4, "B": 2, "C": 3, "BC": 5, "Y": 4 + 2 + 3}
    assert cm.interchange(base, {"BC": src}) == {"A": 1, "B": 2, "C": 3, "BC": 11, "Y": 1 + 5 + 6}
    assert cm.interchange(base, {"Y": src})["Y"] == 15
    assert cm.interchange(base, {"B": src}) == {"A": 1, "B": 5, "C": 3, "BC": 8, "Y": 9}
    # two variables from two sources; BC fixed means B's change below it does not propagate
    two = cm.interchange(base, {"A": {"A": 9, "B": 0, "C": 0}, "BC": {"A": 0, "B": 7, "C": 1}})
    assert two == {"A": 9, "B": 2, "C": 3, "BC": 8, "Y": 17}
    assert cm.interchange(base, {"B": src, "BC": base})["Y"] == 6
    assert cm.run(base, do={"BC": 0})["Y"] == 1
    assert cm.descendants("B") == ["BC", "Y"] and cm.descendants("Y") == []
    assert "BC <- B+C" in repr(cm)


def test_counterfactuals_labels_equal_hand_computation(cm):
    for var in ("A", "BC", "Y", "B"):
        ds = cm.counterfactuals(n=300, intervene=var, seed=3)
        assert isinstance(ds, cs.CounterfactualDataset) and ds.base.shape == (300, 3)
        assert ds.variables == ("A", "B", "C")
        torch.testing.assert_close(ds.labels, hand_label(var, ds.base, ds.source), rtol=0, atol=0)
        for j, v in enumerate("ABC"):
            assert ds.base[:, j].tolist() == ds.base_values[v]
    ds = cm.counterfactuals(vary="A", n=200, seed=1)          # the tutorial's "only A changes" pairs
    assert (ds.base[:, 0] != ds.source[:, 0]).all() and torch.equal(ds.base[:, 1:], ds.source[:, 1:])
    torch.testing.assert_close(ds.labels, ds.source.sum(1), rtol=0, atol=0)   # = the source's output
    again = cm.counterfactuals(vary="A", n=200, seed=1)
    assert torch.equal(again.base, ds.base) and torch.equal(again.source, ds.source)
    assert cm.counterfactuals(n=5).labels is None


# -- abstraction IIA ---------------------------------------------------------------------------------------------------
def test_tutorial_alignment_is_exact_and_wrong_one_is_not(cm):
    r = cs.abstraction_iia("adder", cm, TUTORIAL, n=200, seed=0)
    assert isinstance(r, cs.AbstractionResult) and r.dims == ("variable", "value")
    assert r.coords["variable"] == ["A", "BC", "Y"]
    assert r.iia().values.tolist() == [1.0, 1.0, 1.0]
    assert r.interval("BC") == (1.0, 1.0)
    wrong = cs.abstraction_iia("adder", cm, {"A": cs.Site("l1", neurons=0), "BC": "l2", "Y": cs.Site("l1", neurons=1)})
    assert wrong.iia("A") < 0.5 and wrong.iia("Y") < 0.5
    assert wrong.iia("BC") < 0.5            # all of l2 carries Y, not BC
    assert r.meta["alignment"] == {"A": ["l1[neurons=1]"], "BC": ["l1[neurons=2]"], "Y": ["l2[neurons=1]"]}


@pytest.mark.parametrize("model", ["adder", "adder-rotated"])
def test_iia_equals_naive_hook_loop(cm, model):
    ds = cm.counterfactuals(n=60, seed=5)
    net = build_adder(rotated=model == "adder-rotated")
    alignments = {"A": [("l1", [1])], "BC": [("l1", [2])], "Y": [("l2", [1])], "B": [("l1", [0, 2])],
                  "C": [("l1", [2]), ("l2", [0])]}
    sites = {v: [cs.Site(name, neurons=idx) for name, idx in cells] for v, cells in alignments.items()}
    r = cs.abstraction_iia(model, cm, sites, data=ds, n_boot=10)
    for v, cells in alignments.items():
        ref = naive_iia(net, cells, ds.base, ds.source, hand_label(v, ds.base, ds.source))
        assert r.iia(v) == pytest.approx(ref, abs=1e-6), (model, v)


def test_plain_counterfactual_dataset_and_mediation_agree(cm):
    """On pairs that vary only A, the IIA of an A alignment is the tutorial's (and mediation's) IIA."""
    ds = cs.counterfactuals(vary="A", n=50, seed=42)
    grid = cs.alignment_search("adder", cm, "A", data=ds)
    assert grid.dims == ("layer", "neuron", "value") and grid.coords["layer"] == ["l1", "l2"]
    assert grid.iia().values.tolist() == [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    site, best = grid.best()
    assert site == cs.Site("l1", neurons=1) and best == 1.0
    med = cs.mediation("adder", ds, "neurons")
    assert torch.equal(grid.iia().values, med.iia().values)


def test_alignment_search_equals_naive_grid(cm):
    ds = cm.counterfactuals(n=40, seed=2)
    for var in ("A", "BC"):
        g = cs.alignment_search("adder-rotated", cm, var, layers=["l1", "l2"], data=ds, n_boot=10)
        net = build_adder(rotated=True)
        ref = [[naive_iia(net, [(lay, [j])], ds.base, ds.source, hand_label(var, ds.base, ds.source))
                for j in range(3)] for lay in ("l1", "l2")]
        torch.testing.assert_close(g.iia().values, torch.tensor(ref), rtol=0, atol=1e-6)


def test_categorical_output_against_naive_loop():
    class Cls(nn.Module):   # the adder with a 2-class head: logits of (A + B + C >= 14)
        def __init__(self):
            super().__init__()
            self.adder = build_adder()
            self.head = nn.Linear(1, 2)
            with torch.no_grad():
                self.head.weight.copy_(torch.tensor([[-2.0], [2.0]]))
                self.head.bias.copy_(torch.tensor([27.0, -27.0]))

        def forward(self, x):
            return self.head(self.adder(x))

    cm = cs.CausalModel(parents={"A": [], "B": [], "C": [], "BC": ["B", "C"], "Y": ["A", "BC"]},
                        mechanisms={"BC": lambda b, c: b + c, "Y": lambda a, bc: a + bc >= 14},
                        values={"A": range(10), "B": range(10), "C": range(10), "Y": [False, True]})
    assert cm.categorical
    net = Cls().eval()
    ds = cm.counterfactuals(n=50, intervene="BC", seed=0)
    assert ds.labels.dtype == torch.long
    torch.testing.assert_close(ds.labels, (hand_label("BC", ds.base, ds.source) >= 14).long(), rtol=0, atol=0)
    r = cs.abstraction_iia(net, cm, {"BC": cs.Site("adder.l1", neurons=0), "A": cs.Site("adder.l1", neurons=1)},
                           data=ds, n_boot=10)
    for v, j in (("BC", 0), ("A", 1)):
        ref = naive_iia(net, [("adder.l1", [j])], ds.base, ds.source,
                        (hand_label(v, ds.base, ds.source) >= 14).long(), classes=True)
        assert r.iia(v) == pytest.approx(ref, abs=1e-6)


def test_model_unchanged_and_result_round_trip(cm, tmp_path):
    m = cs.load("adder")
    state = {k: v.clone() for k, v in m.module.state_dict().items()}
    m.module.train()
    r = cs.abstraction_iia(m, cm, TUTORIAL, n=30)
    assert m.module.training and all(torch.equal(state[k], v) for k, v in m.module.state_dict().items())
    assert not any(x._forward_hooks or x._forward_pre_hooks for x in m.module.modules())
    assert all(p.grad is None for p in m.module.parameters())
    back = cs.AbstractionResult.from_array(cs.load_result(r.save(tmp_path / "iia")))
    assert torch.equal(back.values, r.values) and back.iia("BC") == 1.0
    assert r.plot() is not None and cs.alignment_search("adder", cm, "A", n=20).plot() is not None
    again = cs.abstraction_iia(m, cm, TUTORIAL, n=30)
    assert torch.equal(again.values, r.values)


# -- errors ------------------------------------------------------------------------------------------------------------
def test_causal_model_errors():
    ok = dict(parents={"X": [], "Y": ["X"]}, mechanisms={"Y": lambda x: x}, values={"X": [0, 1]})
    bad = [
        (dict(ok, parents={"X": [], "Y": ["Z"]}), "unknown parent"),
        (dict(ok, parents={"X": ["Y"], "Y": ["X"], "Z": []}, mechanisms={"X": abs, "Y": abs}, values={"Z": [0]}),
         "cycle"),
        (dict(ok, mechanisms={}), "no mechanism"),
        (dict(ok, mechanisms={"Y": lambda x, y: x}), "cannot take"),
        (dict(ok, mechanisms={"Y": lambda x: x, "X": lambda: 0}), "is an input"),
        (dict(ok, values={}), "need a value set"),
        (dict(ok, values={"X": []}), "empty"),
        (dict(ok, output="Q"), "not a variable"),
        (dict(ok, parents={"X": [], "Y": ["X"], "Z": ["X"]}, mechanisms={"Y": abs, "Z": abs}), "output"),
    ]
    for kwargs, words in bad:
        with pytest.raises(cs.InputError, match=words):
            cs.CausalModel(**kwargs)
    cm = cs.CausalModel(**ok)
    with pytest.raises(cs.InputError, match="Missing input"):
        cm.run({})
    with pytest.raises(cs.InputError, match="not inputs"):
        cm.run({"X": 1, "Y": 2})
    with pytest.raises(cs.InputError, match="Unknown variable 'Q'"):
        cm.interchange({"X": 0}, {"Q": {"X": 1}})
    with pytest.raises(cs.InputError, match="only inputs can be varied"):
        cm.counterfactuals(vary="Y")
    with pytest.raises(cs.InputError, match="positive int"):
        cm.counterfactuals(n=0)


def test_abstraction_errors(cm):
    cases = [
        (dict(alignment={"AA": "l1"}), "Unknown variable in the alignment 'AA'.*Did you mean 'A'"),
        (dict(alignment={}), "non-empty dict"),
        (dict(alignment={"A": 3}), "must be a Site"),
        (dict(alignment={"A": "l1"}, data="pairs"), "data must be a CounterfactualDataset"),
        (dict(alignment={"A": "l1"}, data=cs.counterfactuals(vary="P", n=5, variables=("P", "Q", "R"))),
         "do not cover"),
        (dict(alignment={"A": "l1"}, tol=-1), "tol"),
        (dict(alignment={"A": "l1"}, ci=1.5), "ci"),
    ]
    for kwargs, words in cases:
        with pytest.raises(cs.InputError, match=words):
            cs.abstraction_iia("adder", cm, n=10, **kwargs)
    for where in ("l7", cs.Site("l1", neurons=5)):   # unknown site, neuron out of range: both kinds of error
        with pytest.raises(cs.InputError) as e:
            cs.abstraction_iia("adder", cm, {"A": where}, n=10)
        assert isinstance(e.value, cs.SiteError) and ("l1" in str(e.value))
    with pytest.raises(cs.InputError, match="causal_model must be"):
        cs.abstraction_iia("adder", {"A": []}, {"A": "l1"})
    with pytest.raises(cs.InputError, match="Unknown variable"):
        cs.alignment_search("adder", cm, "Q")
    with pytest.raises(cs.InputError, match="whole sites"):
        cs.alignment_search("adder", cm, "A", layers=[cs.Site("l1", neurons=0)], n=5)
