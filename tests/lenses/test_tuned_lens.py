"""The tuned lens: translators read as ``head(h + W h + b)`` (checked by hand), training that beats the logit lens
on held-out facts (Belrose et al. 2023's headline result, small), seeding, files, and the model left alone."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.zoo.facts import facts
from model_state import assert_same, snapshot


@pytest.fixture(scope="module")
def facts_gpt() -> cs.Model:
    return cs.load("facts-gpt")


@pytest.fixture(scope="module")
def lens(facts_gpt) -> cs.TunedLens:
    train = [f.prompt for f in facts("train")[::20]]               # 400 prompts of every relation and template
    return cs.tuned_lens(facts_gpt, train, steps=60, lr=1e-2, batch_size=1024, seed=0, progress=False)


def test_beats_the_logit_lens_on_heldout_facts(lens):
    heldout = [f.prompt for f in facts("heldout")[::10]]            # 100 prompts, a template never trained on
    c = lens.compare(heldout)
    logit, tuned = c.sel(lens="logit lens").values, c.sel(lens="tuned lens").values
    L = lens.model.n_layers
    assert c.dims == ("lens", "layer") and c.coords["layer"] == list(range(L))
    assert c.better == [True] * (L - 1) + [False]
    assert (tuned[:-1] < 0.8 * logit[:-1]).all(), (logit, tuned)
    assert logit[-1] == 0 and tuned[-1] == 0                        # the last block is the model's output


def test_compare_equals_a_hand_written_kl(lens, facts_gpt):
    prompts = ["Stailu Heilpes was born in the city of", "Stailu Heilpes works as a"]
    c = lens.compare(prompts)
    tok = facts_gpt.tokenizer
    head_norm, unembed = facts_gpt.module.transformer.ln_f, facts_gpt.module.lm_head
    L = facts_gpt.n_layers
    sums = torch.zeros(2, L, dtype=torch.float64)
    count = 0
    for p in prompts:
        ids = torch.tensor(tok(p, add_special_tokens=False)["input_ids"])[None]
        with torch.no_grad():
            out = facts_gpt.module(ids, output_hidden_states=True)
            final = out.logits[0].log_softmax(-1)
            for layer in range(L):
                h = out.hidden_states[layer + 1][0]
                if layer < L - 1:
                    w, b = lens.translators[layer]
                    tuned = unembed(head_norm(h + h @ w.T + b)).log_softmax(-1)
                    plain = unembed(head_norm(h)).log_softmax(-1)
                else:
                    tuned = plain = final
                for i, lp in enumerate((plain, tuned)):
                    sums[i, layer] += (final.exp() * (final - lp)).sum(-1).double().sum()
        count += ids.shape[1]
    torch.testing.assert_close(c.values, sums / count, atol=1e-5, rtol=1e-5)


def test_apply_is_a_lens_result_and_zero_translators_give_the_logit_lens(lens, facts_gpt):
    prompt = "Stailu Heilpes , as we know , was born in the city of"
    r = lens.apply(prompt, answer="Arvena")
    assert isinstance(r, cs.LensResult) and r.meta["method"] == "tuned_lens" and r.lens == "tuned lens"
    L = facts_gpt.n_layers
    assert r.dims == ("layer", "position") and r.coords["layer"] == list(range(L))
    logit = cs.logit_lens(facts_gpt, prompt, answer="Arvena")
    torch.testing.assert_close(r.values[-1], logit.values[-1], atol=0, rtol=0)
    zero = cs.TunedLens(facts_gpt, {i: (torch.zeros(128, 128), torch.zeros(128)) for i in range(L - 1)}, {})
    same = zero.apply(prompt, answer="Arvena")
    torch.testing.assert_close(same.values, logit.values, atol=1e-6, rtol=0)
    assert torch.equal(same.top_ids, logit.top_ids)


def test_seeded_and_the_model_is_left_alone(facts_gpt):
    prompts = [f.prompt for f in facts("train")[:40]]
    snap = snapshot(facts_gpt.module)
    a = cs.tuned_lens(facts_gpt, prompts, layers=[1, 2], steps=3, batch_size=64, seed=5, progress=False)
    assert_same(facts_gpt.module, snap)
    assert all(p.grad is None for p in facts_gpt.module.parameters())
    b = cs.tuned_lens(facts_gpt, prompts, layers=[1, 2], steps=3, batch_size=64, seed=5, progress=False)
    c = cs.tuned_lens(facts_gpt, prompts, layers=[1, 2], steps=3, batch_size=64, seed=6, progress=False)
    assert sorted(a.translators) == [1, 2] and a.layers == [1, 2, facts_gpt.n_layers - 1]
    assert all(torch.equal(a.translators[i][0], b.translators[i][0]) for i in (1, 2))
    assert not torch.equal(a.translators[1][0], c.translators[1][0])
    assert a.meta["seed"] == 5 and a.meta["steps"] == 3 and len(a.meta["final_kl"]) == 2
    with pytest.raises(cs.InputError, match="no translator for"):
        a.apply(prompts[0], layers=[0])


def test_save_and_load(lens, facts_gpt, tmp_path):
    path = lens.save(tmp_path / "facts")
    assert path.suffix == ".safetensors"
    back = cs.TunedLens.load(path, facts_gpt)
    assert sorted(back.translators) == sorted(lens.translators) and back.meta == lens.meta
    for i, (w, b) in lens.translators.items():
        assert torch.equal(back.translators[i][0], w) and torch.equal(back.translators[i][1], b)
    prompt = "Stailu Heilpes works as a"
    assert torch.equal(back.apply(prompt).values, lens.apply(prompt).values)
    other = cs.load("tiny-gpt2")
    with pytest.raises(cs.InputError, match=f"trained on a model with {facts_gpt.n_layers} layers of width 128"):
        cs.TunedLens.load(path, other)
    (tmp_path / "junk.safetensors").write_bytes(b"not a lens")
    with pytest.raises(cs.InputError, match="not a tuned lens file"):
        cs.TunedLens.load(tmp_path / "junk.safetensors", facts_gpt)
    with pytest.raises(cs.InputError, match="No tuned lens file"):
        cs.TunedLens.load(tmp_path / "missing", facts_gpt)


def test_plots(lens):
    fig = lens.plot("Stailu Heilpes works as a")
    assert len([a for a in fig.axes if a.get_title()]) == 2      # logit lens and tuned lens, side by side
    web = lens.plot("Stailu Heilpes works as a", backend="plotly")
    assert len(web.data) == 2
    c = lens.compare(["Stailu Heilpes works as a"])
    assert [line.get_label() for line in c.plot().axes[0].lines] == ["logit lens", "tuned lens"]
    assert len(c.plot(backend="plotly").data) == 2


def test_bad_settings(facts_gpt):
    for kw, msg in (({"steps": 0}, "steps must be an int >= 1"), ({"lr": -1.0}, "lr must be"),
                    ({"seed": "a"}, "seed must be an int"), ({"batch_size": 0}, "batch_size must be")):
        with pytest.raises(cs.InputError, match=msg):
            cs.tuned_lens(facts_gpt, ["Stailu Heilpes works as a"], progress=False, **kw)
