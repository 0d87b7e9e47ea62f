"""Results carry the settings that made them: the call's arguments are in ``meta`` (issue 16, item 2)."""
from __future__ import annotations

import causalscope as cs
from causalscope.core import Site

CLEAN, CORRUPTED = "the cat sat on the mat", "the dog sat on the mat"


def test_activation_patching_records_its_arguments(gpt2):
    r = cs.activation_patching(gpt2, CLEAN, CORRUPTED, "resid_pre", cs.logit(5), positions=[1, 2], chunk_size=4,
                               schedule="batched", direction="noise")
    m = r.meta
    assert (m["sites"], m["positions"], m["chunk_size"], m["requested_schedule"], m["direction"], m["per"],
            m["per_example"], m["align"]) == ("resid_pre", [1, 2], 4, "batched", "noise", None, False, None)


def test_attribution_patching_records_its_sites_and_positions(gpt2):
    r = cs.attribution_patching(gpt2, CLEAN, CORRUPTED, [Site("layers.1", io="input"), "layers.2.mlp"],
                                cs.logit(5), chunk_size=3)
    assert r.meta["sites"] == ["layers.1[input]", "layers.2.mlp"]
    assert (r.meta["positions"], r.meta["chunk_size"], r.meta["per_example"]) == (None, 3, False)
    g = cs.attribution_patching(gpt2, CLEAN, CORRUPTED, "resid_pre", cs.logit(5), positions=[0, 3])
    assert (g.meta["sites"], g.meta["positions"]) == ("resid_pre", [0, 3])


def test_mediation_records_its_sites_and_sweep():
    ds = cs.counterfactuals(vary="A", n=20, seed=0)
    r = cs.mediation("adder", ds, "l1", per="neuron", n_boot=10, chunk_size=7)
    assert (r.meta["sites"], r.meta["per"], r.meta["chunk_size"], r.meta["n_boot"]) == ("l1", "neuron", 7, 10)
    s = cs.mediation("adder", ds, ["l1", "l2"], n_boot=10)
    assert (s.meta["sites"], s.meta["per"], s.meta["positions"]) == (["l1", "l2"], None, None)
