"""Auxiliary coordinates, and the tokens as a coordinate of every result with positions (causal traces, activation
and attribution patching, integrated gradients, mediation): checked against the tokenizer's own decoding."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

import causalscope as cs
from causalscope.results import LabelledArray, load_result

CLEAN = "the cat sat on the mat"
CORRUPT = "the dog sat on the mat"


def hf_tokens(m: cs.Model, text: str) -> list[str]:
    """The reference: the HF tokenizer's ids of the text, each decoded alone."""
    ids = m.tokenizer(text, add_special_tokens=False)["input_ids"]
    return [m.tokenizer.decode([i]) for i in ids]


def array() -> LabelledArray:
    return LabelledArray(torch.arange(12.0).reshape(3, 4), ("layer", "position"), coords={"layer": [0, 2, 4]},
                         meta={"method": "m"}, name="effect",
                         aux_coords={"token": ("position", ["a", "b", "c", ("d", 1)])})


# ---------------------------------------------------------------- the mechanism
def test_aux_coords_follow_selections_and_reductions():
    a = array()
    assert a.aux_coords == {"token": ("position", ["a", "b", "c", ("d", 1)])}
    assert a.isel(position=[3, 0]).aux_coords == {"token": ("position", [("d", 1), "a"])}
    assert a.isel(position=slice(1, 3)).aux_coords == {"token": ("position", ["b", "c"])}
    assert a.sel(layer=2).aux_coords == a.aux_coords and a.sel(layer=[4, 0]).aux_coords == a.aux_coords
    assert a.isel(position=1).aux_coords == {}  # the dim is gone, so is its coordinate
    assert a.mean("position").aux_coords == {} and a.sum("layer").aux_coords == a.aux_coords
    assert a.transpose().aux_coords == a.aux_coords
    assert type(a).from_array(a).aux_coords == a.aux_coords


def test_to_frame_puts_aux_coords_beside_their_dim():
    df = array().to_frame()
    assert list(df.columns) == ["layer", "position", "token", "effect"]
    want = pd.DataFrame([(layer, p, ["a", "b", "c", ("d", 1)][p], 4.0 * i + p)
                         for i, layer in enumerate([0, 2, 4]) for p in range(4)],
                        columns=["layer", "position", "token", "effect"])
    assert df["token"].tolist() == want["token"].tolist()
    assert df[["layer", "position", "effect"]].values.tolist() == want[["layer", "position", "effect"]].values.tolist()


def test_aux_coords_survive_save_and_load(tmp_path):
    a = array()
    b = load_result(a.save(tmp_path / "a.npz"))
    assert b.aux_coords == a.aux_coords and b.coords == a.coords and torch.equal(b.values, a.values)
    plain = LabelledArray(torch.zeros(2), ("x",))
    assert load_result(plain.save(tmp_path / "p.npz")).aux_coords == {}


@pytest.mark.parametrize("aux,words", [
    ({"layer": ("position", list("abcd"))}, "'layer' is a dim"),
    ({"effect": ("position", list("abcd"))}, "'effect' is the array's name"),
    ({"token": ("head", list("abcd"))}, "must be (dim, labels) with dim one of ('layer', 'position')"),
    ({"token": ("position", list("abc"))}, "has 3 labels but dim 'position' has size 4"),
    ({"token": ("position", "abcd")}, "needs a sequence of labels"),
    ({"token": ("position", [object()] * 4)}, "coordinate labels must be int, float, str"),
])
def test_bad_aux_coords_say_what_is_wrong(aux, words):
    with pytest.raises((ValueError, TypeError), match=re.escape(words)):
        LabelledArray(torch.zeros(3, 4), ("layer", "position"), aux_coords=aux, name="effect")


def test_with_tokens_reads_each_label_of_each_prompt():
    a = LabelledArray(torch.zeros(2, 3), ("layer", "position"), coords={"position": [0, -2, -1]})
    assert a.with_tokens(["x", "y", "z", "w"]).aux_coords["token"] == ("position", ["x", "z", "w"])
    both = a.with_tokens([["x", "y", "z", "w"], ["q", "z", "w"]])  # -2, -1 agree; 0 does not
    assert both.aux_coords["token"] == ("position", [None, "z", "w"])
    short = LabelledArray(torch.zeros(3), ("position",), coords={"position": [0, 1, 5]})
    assert short.with_tokens(["a", "b"]).aux_coords["token"] == ("position", ["a", "b", None])  # 5: no such token
    named = LabelledArray(torch.zeros(2), ("position",), coords={"position": ["p", "q"]})
    assert named.with_tokens(["a", "b"]).aux_coords["token"] == ("position", [None, None])  # not int positions
    no_pos = LabelledArray(torch.zeros(2), ("neuron",))
    assert no_pos.with_tokens(["a", "b"]) is no_pos and a.with_tokens(None) is a


# ---------------------------------------------------------------- the methods
@pytest.fixture(scope="module")
def m() -> cs.Model:
    return cs.load("tiny-gpt2")


def test_causal_trace_has_tokens_along_positions(m):
    r = cs.causal_trace(m, "the old king saw a river near the city", "old king", samples=2)
    want = hf_tokens(m, "the old king saw a river near the city")
    assert r.dims == ("position", "layer") and r.aux_coords == {"token": ("position", want)}
    df = r.to_frame()
    assert df["token"].tolist() == [want[p] for p in df["position"]]
    assert df.columns.tolist() == ["position", "token", "layer", "p(answer)"]


@pytest.mark.parametrize("method", ["activation_patching", "attribution_patching"])
def test_patching_has_the_clean_prompts_tokens(m, method):
    fn = getattr(cs, method)
    r = fn(m, CLEAN, CORRUPT, "resid_pre", cs.logit(3), direction="both")
    assert r.aux_coords == {"token": ("position", hf_tokens(m, CLEAN))}
    df = r.to_frame()
    assert df["token"].tolist() == [hf_tokens(m, CLEAN)[p] for p in df["position"]]
    assert r.denoise.aux_coords == r.aux_coords  # selections keep it
    if method == "activation_patching":
        assert r.asymmetry.aux_coords == r.aux_coords and r.raw.aux_coords == r.aux_coords
    sub = fn(m, CLEAN, CORRUPT, "mlp", cs.logit(3), positions=[1, -1])
    assert sub.coords["position"] == [1, 5] and sub.aux_coords["token"] == ("position", ["cat", "mat"])
    sites = fn(m, CLEAN, CORRUPT, ["layers.0", "layers.1"], cs.logit(3))
    assert sites.aux_coords == {}  # no positions, no tokens


def test_aligned_prompts_of_different_lengths_get_the_tokens_they_share(m):
    clean = ["the cat sat on the mat", "the dog ran by mat"]
    corrupt = ["the dog sat on the mat", "the cat ran by mat"]
    r = cs.activation_patching(m, clean, corrupt, "resid_pre", cs.logit(3), align="end", positions=[-3, -2, -1])
    ends = [hf_tokens(m, c) for c in clean]
    want = [ends[0][p] if ends[0][p] == ends[1][p] else None for p in [-3, -2, -1]]
    assert want == [None, None, "mat"]  # the two prompts end "on the mat" and "ran by mat"
    assert r.aux_coords == {"token": ("position", want)}
    start = cs.activation_patching(m, clean, corrupt, "resid_pre", cs.logit(3), align="start", positions=[0, 1])
    assert start.aux_coords["token"] == ("position", ["the", None])  # "the cat" / "the dog"


def test_integrated_gradients_has_tokens_along_positions(m):
    r = cs.integrated_gradients(m, CLEAN, CORRUPT, "layers.1", target=3, steps=4)
    assert r.dims == ("input", "position", "d") and r.aux_coords == {"token": ("position", hf_tokens(m, CLEAN))}
    last = cs.integrated_gradients(m, CLEAN, CORRUPT, cs.Site("layers.1", positions=[-1]), target=3, steps=4)
    assert last.coords["position"] == [5] and last.aux_coords["token"] == ("position", ["mat"])


def test_mediation_over_positions_has_the_base_prompts_tokens(m):
    r = cs.mediation(m, (CLEAN, CORRUPT), cs.Site("layers.1"), per="position", metric=cs.logit(3), n_boot=10)
    assert r.aux_coords == {"token": ("position", hf_tokens(m, CLEAN))}
    assert r.stat("NIE").aux_coords == r.aux_coords
    adder = cs.mediation("adder", cs.counterfactuals(vary="A", n=4, seed=0), "neurons", n_boot=10)
    assert adder.aux_coords == {}  # a model without tokens


@pytest.mark.parametrize("bad", [[1, 2], {"token": "x"}, {"token": ["position", "ab"]}, {"token": ["head", ["a"]]}])
def test_a_crafted_aux_header_is_refused(tmp_path, bad):
    path = LabelledArray(torch.zeros(2), ("position",)).with_tokens(["a", "b"]).save(tmp_path / "a.npz")
    with np.load(path) as z:
        header, values = json.loads(str(z["header"][()])), z["values"]
    np.savez_compressed(tmp_path / "b.npz", values=values, header=np.array(json.dumps({**header, "aux_coords": bad})))
    with pytest.raises(ValueError, match="is not a causalscope result file|needs a sequence of labels|dim one of"):
        load_result(tmp_path / "b.npz")
