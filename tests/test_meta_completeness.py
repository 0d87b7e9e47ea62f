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
# where a method runs does not change its numbers (tests/executors); a sharded run records it in meta["executor"]
NOT_SETTINGS = {"model", "model_or_case", "progress", "executor", "out", "shards"}
#: the object a method is called on (Model.generate, TunedLens.apply): its identity is meta["model"] / meta["training"]
NOT_SETTINGS |= {"self"}
#: parameters recorded by the method they pass through to (discover's keyword arguments)
PASSED_ON = {"kwargs"}
FACT, SUBJECT = "Thumtre Lesdurn , as we know , was born in the city of", "Thumtre Lesdurn"   # a held-out fact
X, Y = cs.data.digits("test")
X, Y = X[:120], Y[:120]


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
        "causal_trace": (cs.causal_trace,
                         lambda: cs.causal_trace("facts-gpt", FACT, SUBJECT, kind="mlp", samples=2, window=2,
                                                 seed=4),
                         {"kind": "mlp", "samples": 2, "window": 2, "seed": 4}),
        "trace_average": (cs.trace_average,
                          lambda: cs.trace_average("facts-gpt", [(FACT, SUBJECT)], kinds=("hidden",), samples=2,
                                                   window=2, n_boot=9, noise="2x", require_correct=False),
                          {"kinds": ["hidden"], "samples": 2, "n_boot": 9, "noise": "2x", "require_correct": False}),
        "activation_patching": (cs.activation_patching,
                                lambda: cs.activation_patching("tiny-gpt2", "the cat sat", "the dog sat", "resid_pre",
                                                               cs.logit(5), direction="noise", chunk_size=7),
                                {"clean": "the cat sat", "corrupted": "the dog sat", "direction": "noise",
                                 "chunk_size": 7}),
        "attribution_patching": (cs.attribution_patching,
                                 lambda: cs.attribution_patching("tiny-gpt2", ["the cat sat", "a dog ran"],
                                                                 ["the dog sat", "a cat ran"], "resid_pre",
                                                                 cs.logit(5)),
                                 {"clean": ["the cat sat", "a dog ran"], "corrupted": ["the dog sat", "a cat ran"]}),
        "integrated_gradients": (cs.integrated_gradients,
                                 lambda: cs.integrated_gradients("tiny-gpt2", "the cat sat", "the dog ran", "layers.1",
                                                                 metric=cs.logit(3), steps=4),
                                 {"inputs": "the cat sat", "steps": 4}),
        "mediation": (cs.mediation, lambda: cs.mediation("adder", cs.counterfactuals(vary="A", n=10), "l1", n_boot=9),
                      {"n_boot": 9}),
        "class_directions": (cs.class_directions, lambda: cs.class_directions("digits-mlp", (X, Y), "act2"), {}),
        "corrupt_and_restore": (cs.corrupt_and_restore,
                                lambda: cs.corrupt_and_restore("digits-mlp", X[:20], ["noise"], ["act2"], scale=0.3,
                                                               all_sites=False),
                                {"scale": 0.3, "all_sites": False, "corruption": ["noise"]}),
        "probe": (cs.probe, lambda: cs.probe("digits-mlp", (X, Y), ["act2"], test_size=0.3), {"test_size": 0.3}),
        "probe_steering": (cs.probe_steering,
                           lambda: cs.probe_steering("digits-mlp", (X, Y), "act2", 3, 8, [0.0, 1.0], n_random=1,
                                                     max_inputs=5),
                           {"strengths": [0.0, 1.0], "max_inputs": 5, "n_random": 1}),
        "steer": (cs.steer, lambda: cs.steer("digits-mlp", X[:10], "act2", torch.ones(128), [0.0, 2.0], target=3),
                  {"strengths": [0.0, 2.0], "target": 3}),
        "steering_matrix": (cs.steering_matrix,
                            lambda: cs.steering_matrix("digits-mlp", (X, Y), "act2",
                                                       cs.class_directions("digits-mlp", (X, Y), "act2"),
                                                       baseline=False),
                            {"baseline": False}),
        "logit_lens": (cs.logit_lens, lambda: cs.logit_lens("facts-gpt", FACT, answer="Lunmark", k=3, layers=[0, 2]),
                       {"k": 3, "layers": [0, 2]}),
        "attention_patterns": (cs.attention_patterns,
                               lambda: cs.attention_patterns("tiny-gpt2", "the cat sat", layers=[1], heads=[0, 2]),
                               {"layers": [1], "heads": [0, 2]}),
        "steer_generation": (cs.steer_generation,
                             lambda: cs.steer_generation("facts-gpt", [FACT], "layers.2", torch.ones(128), [0.0, 1.0],
                                                         target="Lunmark", max_new_tokens=2),
                             {"strengths": [0.0, 1.0], "target": "Lunmark", "max_new_tokens": 2}),
        "generate": (cs.Model.generate,
                     lambda: cs.load("tiny-gpt2").generate(["the cat sat", "a dog"], {"layers.1": cs.Scale(0.5)},
                                                           max_new_tokens=2, do_sample=True, temperature=0.7,
                                                           top_p=0.9, seed=5, positions="new",
                                                           metric=lambda lg: lg[:, 3]),
                     {"prompts": ["the cat sat", "a dog"], "max_new_tokens": 2, "do_sample": True,
                      "temperature": 0.7, "top_p": 0.9, "seed": 5, "positions": "new", "metric": "<lambda>"}),
        "tuned_lens": (cs.tuned_lens,
                       lambda: cs.tuned_lens("tiny-gpt2", LM_PROMPTS, layers=[0, 1], steps=2, lr=0.01, batch_size=8,
                                             seed=3, chunk_size=1, progress=False),
                       {"prompts": LM_PROMPTS, "layers": [0, 1], "steps": 2, "lr": 0.01, "batch_size": 8, "seed": 3,
                        "chunk_size": 1}),
        "tuned_lens.apply": (cs.TunedLens.apply,
                             lambda: _lens().apply("the cat sat on the mat", layers=[0, 3], answer="mat", k=2,
                                                   chunk_size=1),
                             {"prompts": "the cat sat on the mat", "layers": [0, 3], "answer": "mat", "k": 2,
                              "chunk_size": 1}),
        "tuned_lens.compare": (cs.TunedLens.compare, lambda: _lens().compare(LM_PROMPTS, layers=[1], chunk_size=1),
                               {"prompts": LM_PROMPTS, "layers": [1], "chunk_size": 1}),
        "feature_attribution": (cs.feature_attribution,
                                lambda: cs.feature_attribution("tiny-gpt2", "the cat sat", "the dog sat",
                                                               cs.Site("layers.1", sae=cs.SAE(64, 16, name="s")),
                                                               cs.logit(3)),
                                {"clean": "the cat sat", "corrupted": "the dog sat", "site": "layers.1[sae=s]"}),
        "sweep": (cs.sweep, lambda: cs.sweep(_double, [1, 2, 3], model="tiny-gpt2", seed=4),
                  {"items": [1, 2, 3], "seed": 4, "fn": f"{__name__}._double"}),
        "latent_circuits": (cs.latent_circuits, lambda: cs.latent_circuits(steps=5), {"steps": 5}),
        "subspace_effects": (cs.subspace_effects, lambda: cs.subspace_effects(case, case.inputs[:20], k=1),
                             {"k": 1}),
        "roc": (circuits.roc, lambda: circuits.roc(circuits.edge_attribution_patching(case), case.circuit), {}),
        "faithfulness_curve": (circuits.faithfulness_curve,
                               lambda: circuits.faithfulness_curve(case, circuits.edge_attribution_patching(case),
                                                                   sizes=[0.1, 1.0]),
                               {"sizes": [0.1, 1.0]}),
        "steering_matrix_generation": (cs.steering_matrix_generation,
                                       lambda: cs.steering_matrix_generation("facts-gpt", [FACT], "layers.2",
                                                                             {"Lunmark": torch.ones(128)}, 2.0,
                                                                             max_new_tokens=2, baseline=False),
                                       {"strength": 2.0, "baseline": False, "max_new_tokens": 2}),
    }


NAMES = ["generate", "tuned_lens", "tuned_lens.apply", "tuned_lens.compare", "feature_attribution", "sweep",
         "latent_circuits", "steer_generation", "steering_matrix_generation", "logit_lens", "attention_patterns", "causal_trace", "trace_average", "activation_patching", "attribution_patching", "integrated_gradients",
         "mediation", "class_directions", "corrupt_and_restore", "probe", "probe_steering", "steer",
         "steering_matrix", "edge_patching", "node_patching", "edge_attribution_patching", "eap_ig", "acdc", "discover",
         "node_effects", "abstraction_iia", "alignment_search", "das", "subspace_effects", "roc", "faithfulness_curve"]


GAPS: dict[str, str] = {}  # methods whose meta still lacks arguments: name -> the gap and the file
LM_PROMPTS = ["the cat sat on the mat", "a dog ran by the tree"]


def _double(m: Any, x: int) -> int:
    return 2 * x


def _lens() -> cs.TunedLens:
    return cs.tuned_lens("tiny-gpt2", LM_PROMPTS, steps=2, progress=False)


@pytest.mark.parametrize("name", NAMES + [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=why))
                                          for n, why in GAPS.items()])
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
