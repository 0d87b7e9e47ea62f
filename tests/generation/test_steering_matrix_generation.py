"""steering_matrix_generation: one batched generation over (direction, prompt) rows equals one Model.generate per
direction with cs.Add(vector, strength); the fractions are counted from those texts by hand."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs

PROMPTS = ["Thumtre Lesdurn was born in the city of", "The profession of Thumtre Lesdurn is",
           "Bosrel Fazindlir , as we know , was born in the city of"]


@pytest.fixture(scope="module")
def facts() -> cs.Model:
    return cs.load("facts-gpt")


def test_equals_one_generate_per_direction(facts):
    g = torch.Generator().manual_seed(1)
    dirs = {"Estrova": torch.randn(128, generator=g), "Arvena": torch.randn(128, generator=g)}
    M = cs.steering_matrix_generation(facts, PROMPTS, "layers.2", dirs, 6.0, words=["Estrova", "Arvena", "Lunmark"],
                                      max_new_tokens=2)
    assert M.dims == ("direction", "word") and list(M.coords["direction"]) == ["none", "Estrova", "Arvena"]
    for i, name in enumerate(M.coords["direction"]):
        edits = None if name == "none" else {cs.Site("layers.2"): cs.Add(dirs[name], 6.0)}
        ref = facts.generate(PROMPTS, edits, max_new_tokens=2)
        assert M.texts(name) == ref.text
        want = [sum(w in t for t in ref.text) / len(PROMPTS) for w in ["Estrova", "Arvena", "Lunmark"]]
        assert M.values[i].tolist() == pytest.approx(want)
    assert M.meta["forwards"] == 2 and M.plot() is not None


def test_bad_directions(facts):
    with pytest.raises(cs.InputError, match="non-empty dict"):
        cs.steering_matrix_generation(facts, PROMPTS, "layers.2", {}, 1.0)
    with pytest.raises(cs.InputError, match="differ in width"):
        cs.steering_matrix_generation(facts, PROMPTS, "layers.2", {"a": torch.zeros(128), "b": torch.zeros(64)})
