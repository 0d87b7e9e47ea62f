"""The logit lens against a hand-written read-out: each block's output (transformers' ``output_hidden_states``)
through the model's own final norm and unembedding, one prompt at a time."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.results import load_result
from causalscope.zoo import build_mlp, build_tiny_lm
from conftest import PROMPTS, hooked_transformer
from model_state import assert_same, snapshot

HEADS = {  # model_type -> (final norm, unembedding) as attribute paths of the LM
    "gpt2": ("transformer.ln_f", "lm_head"),
    "gpt_neox": ("gpt_neox.final_layer_norm", "lm_head"),
    "llama": ("model.norm", "lm_head"),
}


def reference(model, ids: torch.Tensor) -> torch.Tensor:
    """(layers, T, vocab) log-probabilities: block l's output through final norm + unembedding, by hand."""
    norm, unembed = (model.get_submodule(p) for p in HEADS[model.config.model_type])
    with torch.no_grad():
        out = model(ids[None], output_hidden_states=True)
        hs = out.hidden_states  # embeddings, then each block's output (the last one after the final norm)
        L = len(hs) - 1
        rows = [unembed(norm(hs[i + 1][0])) for i in range(L - 1)] + [out.logits[0]]
    return torch.stack(rows).log_softmax(-1)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_cells_equal_a_hand_written_readout(arch):
    model, tok = build_tiny_lm(arch)
    m = cs.load(model, tok)
    snap = snapshot(model)
    prompt = PROMPTS[0]
    ids = torch.tensor(tok(prompt, add_special_tokens=False)["input_ids"])
    r = cs.logit_lens(m, prompt, answer="mat", k=4)
    assert_same(model, snap)
    ref = reference(model, ids)                                      # (L, T, V)
    top = ref.topk(4, dim=-1)
    assert r.dims == ("layer", "position") and r.shape == (4, len(ids))
    assert torch.equal(r.top_ids, top.indices)
    torch.testing.assert_close(r.top_probs, top.values.exp(), atol=1e-5, rtol=0)
    torch.testing.assert_close(r.values, top.values[..., 0].exp(), atol=1e-5, rtol=0)
    final = ref[-1]
    kl = (final.exp() * (final - ref)).sum(-1)
    torch.testing.assert_close(r.kl.values, kl, atol=1e-5, rtol=0)
    assert torch.equal(r.kl.values[-1], torch.zeros(len(ids)))     # the last layer is the model's output
    mat = tok("mat", add_special_tokens=False)["input_ids"][0]
    torch.testing.assert_close(r.answer_prob.values, ref[..., mat].exp(), atol=1e-5, rtol=0)
    rank = 1 + (ref > ref[..., mat : mat + 1]).sum(-1)
    assert torch.equal(r.answer_rank.values, rank)
    assert r.top_tokens[2][1] == [tok.decode([int(i)]) for i in top.indices[2, 1]]
    assert r.aux_coords["token"][1] == [tok.decode([int(i)]) for i in ids]


def test_last_layer_equals_the_models_logits(lm):
    """The read-out of the last block is the model's own output distribution (full vocabulary, to 1e-5)."""
    vocab = lm.module.config.vocab_size
    r = cs.logit_lens(lm, PROMPTS[1], layers=[-1], k=vocab)
    ids = torch.tensor(lm.tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"])[None]
    with torch.no_grad():
        probs = lm.module(ids).logits[0].softmax(-1)
    got = torch.zeros_like(probs).scatter(-1, r.top_ids[0], r.top_probs[0])
    torch.testing.assert_close(got, probs, atol=1e-5, rtol=0)
    head = cs.core.unembed_fn(lm.adapter)
    run = lm.run(ids, cache=[f"layers.{lm.n_layers - 1}"])
    with torch.no_grad():
        torch.testing.assert_close(head(run.cache[f"layers.{lm.n_layers - 1}"]), lm.module(ids).logits,
                                   atol=1e-5, rtol=0)


def test_transformer_lens_model():
    ht = hooked_transformer()
    m = cs.load(ht)
    ids = [[1, 5, 7, 9, 3, 2], [4, 4, 8, 1]]
    r = cs.logit_lens(m, ids, answer=[3, 8])
    for p, row in enumerate(ids):
        with torch.no_grad():
            _, cache = ht.run_with_cache(torch.tensor([row]))
            logits = ht(torch.tensor([row]))[0]
        for layer in range(2):
            resid = cache[f"blocks.{layer}.hook_resid_post"][0]
            want = (ht.unembed(ht.ln_final(resid[None]))[0] if layer == 0 else logits).log_softmax(-1)
            got = r.top_probs[layer, : len(row), p]
            torch.testing.assert_close(got, want.topk(5, -1).values.exp(), atol=1e-5, rtol=0)
            torch.testing.assert_close(r.answer_prob.values[layer, : len(row), p],
                                       want[:, [3, 8][p]].exp(), atol=1e-5, rtol=0)


def test_ragged_batch_equals_each_prompt_alone(gpt2):
    prompts = ["the cat sat on the mat", "a dog", "the old king saw a river"]
    both = cs.logit_lens(gpt2, prompts, answer=["mat", "ran", "river"])
    assert both.dims == ("layer", "position", "prompt") and both.lengths == [6, 2, 6]
    for p, (prompt, answer) in enumerate(zip(prompts, ["mat", "ran", "river"])):
        alone = cs.logit_lens(gpt2, prompt, answer=answer)
        n = alone.shape[1]
        torch.testing.assert_close(both.values[:, :n, p], alone.values, atol=1e-6, rtol=0)
        torch.testing.assert_close(both.kl.values[:, :n, p], alone.kl.values, atol=1e-5, rtol=0)
        assert torch.equal(both.top_ids[:, :n, p], alone.top_ids)
        assert torch.equal(both.answer_rank.values[:, :n, p], alone.answer_rank.values)
        assert torch.isnan(both.values[:, n:, p]).all() and (both.top_ids[:, n:, p] == -1).all()
    assert both.aux_coords["token"][1][:2] == [None, None]        # the prompts' first tokens differ
    assert torch.allclose(both.kl_per_layer().values[-1], torch.zeros((), dtype=torch.float64))


def test_save_load_keeps_the_cells(gpt2, tmp_path):
    r = cs.logit_lens(gpt2, ["the cat sat", "a dog ran by the tree"], answer="the", k=3)
    back = cs.LensResult.from_array(load_result(r.save(tmp_path / "lens")))
    assert torch.equal(back.top_ids, r.top_ids) and back.top_tokens == r.top_tokens
    assert torch.equal(back.values.nan_to_num(-1), r.values.nan_to_num(-1))
    assert torch.equal(back.answer_rank.values, r.answer_rank.values)
    assert back.meta["k"] == 3 and back.meta["method"] == "logit_lens"


def test_plots_label_tokens(gpt2):
    r = cs.logit_lens(gpt2, ["the cat sat on the mat", "a dog"])
    fig = r.plot(prompt=1)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0: a", "1: dog"]
    assert any(t.get_text() for t in ax.texts)                      # the top token written in the cells
    web = r.plot(backend="plotly")
    assert list(web.layout.xaxis.ticktext)[:2] == ["0: the", "1: cat"]


def test_bad_inputs_name_the_problem(gpt2):
    with pytest.raises(cs.InputError, match="layers holds 9"):
        cs.logit_lens(gpt2, "the cat", layers=[9])
    with pytest.raises(cs.InputError, match="k .* must be an int"):
        cs.logit_lens(gpt2, "the cat", k=0)
    with pytest.raises(cs.InputError, match="not one token"):
        cs.logit_lens(gpt2, "the cat", answer="the cat")
    with pytest.raises(cs.InputError, match="one per prompt"):
        cs.logit_lens(gpt2, ["the cat", "a dog"], answer=["mat"])
    with pytest.raises(cs.InputError, match="needs a transformer language model"):
        cs.logit_lens(cs.load(build_mlp()), torch.zeros(1, 16))
    with pytest.raises(cs.InputError, match="no answer_prob|pass answer"):
        _ = cs.logit_lens(gpt2, "the cat").answer_prob


def test_results_do_not_depend_on_chunk_size(gpt2):
    prompts = ["the cat sat on the mat", "a dog", "the old king saw a river"]
    whole = cs.logit_lens(gpt2, prompts, answer="the")
    one = cs.logit_lens(gpt2, prompts, answer="the", chunk_size=1)
    torch.testing.assert_close(one.values, whole.values, atol=1e-6, rtol=0, equal_nan=True)
    torch.testing.assert_close(one.kl.values, whole.kl.values, atol=1e-5, rtol=0, equal_nan=True)
    assert torch.equal(one.top_ids, whole.top_ids) and one.meta["chunk_size"] == 1


def test_public_names():
    import causalscope.lenses as lenses

    assert cs.logit_lens is lenses.logit_lens and cs.tuned_lens is lenses.tuned_lens and cs.lenses is lenses
    assert cs.attention_patterns is lenses.attention_patterns and cs.TunedLens is lenses.TunedLens
    assert cs.core.unembed_fn is not None
