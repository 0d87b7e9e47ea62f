"""steer_generation: one batched generation over (strength, prompt) rows equals one Model.generate per strength
with cs.Add(direction, strength); the target count is read off the texts by hand."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs

PROMPTS = ["Thumtre Lesdurn was born in the city of", "The profession of Thumtre Lesdurn is"]


@pytest.fixture(scope="module")
def facts() -> cs.Model:
    return cs.load("facts-gpt")


def test_equals_one_generate_per_strength(facts):
    v = torch.randn(facts.module.config.hidden_size, generator=torch.Generator().manual_seed(0))
    ks = [0.0, 4.0, 8.0]
    r = cs.steer_generation(facts, PROMPTS, "layers.1", v, ks, target="Harrowgate", max_new_tokens=3)
    for i, k in enumerate(ks):
        ref = facts.generate(PROMPTS, {cs.Site("layers.1"): cs.Add(v, k)}, max_new_tokens=3)
        assert r.texts(k) == ref.text
        assert r.values[i].tolist() == [float("Harrowgate" in t) for t in ref.text]
    assert r.fraction().values.tolist() == r.values.mean(1).tolist()
    assert r.meta["forwards"] == 3 and r.dims == ("strength", "prompt")
    assert r.plot() is not None


@pytest.mark.parametrize("kw, words", [
    ({"target": ""}, "target must be a word"),
    ({"strengths": "big"}, "strengths must be a non-empty list"),
    ({"direction": [1.0, 2.0]}, "direction must be a 1-D float tensor"),
])
def test_bad_input(facts, kw, words):
    args = {"target": "x", "strengths": [0.0], "direction": torch.zeros(128), **kw}
    with pytest.raises(cs.InputError, match=words):
        cs.steer_generation(facts, PROMPTS, "layers.1", args["direction"], args["strengths"], target=args["target"])
