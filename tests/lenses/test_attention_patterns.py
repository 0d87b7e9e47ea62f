"""Attention patterns against transformers' own eager attention weights (``output_attentions=True``) and
TransformerLens's ``hook_pattern``, over a ragged batch."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_mlp, build_tiny_lm
from conftest import hooked_transformer
from model_state import assert_same, snapshot

PROMPTS = ["the cat sat on the mat", "a dog ran", "the old king saw a river by the tree"]


def eager(arch: str):
    model, tok = build_tiny_lm(arch)
    model.set_attn_implementation("eager")
    return model, tok


def hf_attentions(model, tok, prompt: str) -> torch.Tensor:
    """(layers, heads, T, T) from the model's eager attention, the prompt alone."""
    ids = torch.tensor(tok(prompt, add_special_tokens=False)["input_ids"])[None]
    with torch.no_grad():
        return torch.stack(model(ids, output_attentions=True).attentions)[:, 0]


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_equal_to_output_attentions(arch):
    model, tok = eager(arch)
    m = cs.load(model, tok)
    snap = snapshot(model)
    a = cs.attention_patterns(m, PROMPTS)
    assert_same(model, snap)
    assert a.dims == ("layer", "head", "query", "key", "prompt") and a.shape[:2] == (4, 4)
    for p, prompt in enumerate(PROMPTS):
        ref = hf_attentions(model, tok, prompt)
        n = ref.shape[-1]
        torch.testing.assert_close(a.values[:, :, :n, :n, p], ref, atol=1e-5, rtol=0)
        assert torch.isnan(a.values[:, :, n:, :, p]).all()               # padded queries
        if n < a.shape[3]:
            assert (a.values[:, :, :n, n:, p] == 0).all()                 # keys past the end get no weight


def test_the_default_attention_gives_the_same_patterns():
    """The model runs with its default (SDPA) attention; the patterns are still the eager ones."""
    model, tok = build_tiny_lm("llama")
    ref_model, _ = eager("llama")
    ref = hf_attentions(ref_model, tok, PROMPTS[2])
    a = cs.attention_patterns(cs.load(model, tok), PROMPTS[2], layers=[1, 3], heads=[0, 2])
    assert a.dims == ("layer", "head", "query", "key") and a.coords["layer"] == [1, 3] and a.coords["head"] == [0, 2]
    torch.testing.assert_close(a.values, ref[[1, 3]][:, [0, 2]], atol=1e-5, rtol=0)
    toks = [tok.decode([i]) for i in tok(PROMPTS[2], add_special_tokens=False)["input_ids"]]
    assert a.aux_coords["query_token"] == ("query", toks) and a.aux_coords["key_token"] == ("key", toks)


def test_transformer_lens_hook_pattern():
    ht = hooked_transformer()
    ids = [[1, 5, 7, 9, 3, 2], [4, 4, 8]]
    a = cs.attention_patterns(cs.load(ht), ids)
    for p, row in enumerate(ids):
        _, cache = ht.run_with_cache(torch.tensor([row]))
        for layer in range(2):
            torch.testing.assert_close(a.values[layer, :, : len(row), : len(row), p],
                                       cache[f"blocks.{layer}.attn.hook_pattern"][0], atol=1e-6, rtol=0)


def test_patterns_of_an_existing_run():
    model, tok = eager("gpt2")
    m = cs.load(model, tok)
    run = m.run(PROMPTS, cache=[*cs.attention_sites(m, [0, 2]), "layers.1"])
    a = cs.attention_patterns(m, PROMPTS, layers=[0, 2], run=run)
    b = cs.attention_patterns(m, PROMPTS, layers=[0, 2])
    assert torch.equal(a.values.nan_to_num(-1), b.values.nan_to_num(-1)) and a.meta["run"] == "given"
    with pytest.raises(cs.InputError, match="did not cache"):
        cs.attention_patterns(m, PROMPTS, layers=[1], run=run)
    with pytest.raises(cs.InputError, match="3 rows but 1 prompts"):
        cs.attention_patterns(m, PROMPTS[0], layers=[0], run=run)


def test_plots():
    model, tok = build_tiny_lm("gpt2")
    a = cs.attention_patterns(cs.load(model, tok), PROMPTS)
    fig = a.plot(layers=[0, 1], prompt=1)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 8 and panels[0].get_title() == "L0 H0"
    assert [t.get_text() for t in panels[-1].get_xticklabels()] == ["0: a", "1: dog", "2: ran"]
    one = a.plot(layers=[1], heads=[2])
    assert [t.get_text() for t in one.axes[0].get_yticklabels()][:2] == ["0: the", "1: cat"]
    web = a.plot(backend="plotly", layers=[3])
    assert len(web.data) == 4 and list(web.layout.yaxis.ticktext)[:2] == ["0: the", "1: cat"]
    with pytest.raises(cs.InputError, match="layers=7 is not in this result"):
        a.plot(layers=[7])


def test_unsupported_models_are_refused():
    with pytest.raises(cs.InputError, match="GPT-2, GPT-NeoX / Pythia and Llama-family"):
        cs.attention_patterns(cs.load(build_mlp()), torch.zeros(1, 16))
    model, tok = build_tiny_lm("gpt2")
    with pytest.raises(cs.InputError, match="heads holds 4"):
        cs.attention_patterns(cs.load(model, tok), "the cat", heads=[4])
