"""Every public method's result records every argument of the call in ``meta`` (issue 16, item 2): the test
reads each method's signature, calls it with non-default values where it matters, and checks that each
parameter (but the model itself and ``progress``) is a key of ``meta``, and that the non-default values
given are the ones recorded."""
from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import pytest
import torch

import causalscope as cs
from causalscope import circuits

#: parameters that name the model (recorded as meta["model"]) or only change what is shown while running
NOT_SETTINGS = {"model", "model_or_case", "progress"}
#: parameters recorded by the method they pass through to (discover's keyword arguments)
PASSED_ON = {"kwargs"}


@pytest.fixture(scope="module")
def case() -> circuits.Case:
    return circuits.load_case("hist")


def _calls(case: circuits.Case) -> dict[str, tuple[Callable[..., Any], Callable[[], Any], dict[str, Any]]]:
    """name -> (the function, a call, the non-default settings that call gives and meta must show)."""
    cm = cs.adder_causal_model()
    ids = case.inputs[:40]
    return {
        "edge_patching": (circuits.edge_patching,
                          lambda: circuits.edge_patching(case, ids, seed=3, positions=[1, 2], categorical=True),
                          {"seed": 3, "positions": [1, 2], "categorical": True}),
        "node_patching": (circuits.node_patching, lambda: circuits.node_patching(case, metric="kl"),
                          {"metric": "kl"}),
        "edge_attribution_patching": (circuits.edge_attribution_patching,
                                      lambda: circuits.edge_attribution_patching(case, corrupted="zero"),
                                      {"corrupted": "zero"}),
        "eap_ig": (circuits.eap_ig, lambda: circuits.eap_ig(case, steps=3), {"steps": 3}),
        "acdc": (circuits.acdc, lambda: circuits.acdc(case, threshold=0.01, absolute=True),
                 {"threshold": 0.01, "absolute": True}),
        "discover": (circuits.discover, lambda: circuits.discover(case, method="eap"), {}),
        "node_effects": (circuits.node_effects,
                         lambda: circuits.node_effects(case, ablation="mean", scales=[0.0, 1.0], ties="first",
                                                       chunk_size=64),
                         {"ablation": "mean", "scales": [0.0, 1.0], "ties": "first", "chunk_size": 64}),
        "abstraction_iia": (cs.abstraction_iia,
                            lambda: cs.abstraction_iia("adder", cm, {"A": cs.Site("l1", neurons=1)}, n=12, n_boot=9,
                                                       tol=0.01, chunk_size=5),
                            {"n_boot": 9, "tol": 0.01, "chunk_size": 5}),
        "alignment_search": (cs.alignment_search, lambda: cs.alignment_search("adder", cm, "A", n=12, n_boot=9),
                             {"n_boot": 9}),
        "das": (cs.das, lambda: cs.das("adder-rotated", cm, "A", "l1", n_train=16, n_test=8, epochs=1, refine=0,
                                       n_boot=9, lr=0.1),
                {"n_boot": 9, "lr": 0.1, "epochs": 1, "refine": 0}),
    }


NAMES = ["edge_patching", "node_patching", "edge_attribution_patching", "eap_ig", "acdc", "discover",
         "node_effects", "abstraction_iia", "alignment_search", "das"]


@pytest.mark.parametrize("name", NAMES)
def test_meta_records_every_argument(case, name):
    fn, call, given = _calls(case)[name]
    r = call()
    params = [p for p in inspect.signature(fn).parameters if p not in NOT_SETTINGS | PASSED_ON]
    missing = [p for p in params if p not in r.meta]
    assert not missing, f"{name}: meta lacks {missing}"
    for k, v in given.items():
        assert r.meta[k] == v, (name, k, r.meta[k], v)
    json.dumps(r.meta)  # plain JSON, so save / load_result keep it


def test_data_arguments_are_described_not_copied(case):
    r = circuits.edge_patching(case, case.inputs)
    assert r.meta["clean"] == {"tensor": list(case.inputs.shape), "dtype": "int64"}
    small = circuits.edge_patching(case, case.inputs[:3])
    assert small.meta["clean"] == case.inputs[:3].tolist()
    assert circuits.edge_patching(case).meta["clean"] == "the case's inputs"
    assert torch.equal(torch.tensor(small.meta["clean"]), case.inputs[:3])
