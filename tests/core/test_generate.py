"""Model.generate: greedy generation equals transformers' generate over a ragged batch; with edits it equals a
naive loop that re-runs each prompt's whole sequence (no cache) with a plain hook at every step; the KV cache
is used (one forward per new token); seeded sampling is reproducible; the model is left as it was."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from model_state import assert_same, snapshot
from plain_hooks import hook

PROMPTS = ["the cat sat on the mat", "a dog", "the old king saw a river near"]
N_NEW = 6


def hf_greedy(m: cs.Model, prompts: list[str], n: int) -> torch.Tensor:
    tok = m.tokenizer
    side, pad = tok.padding_side, tok.pad_token
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    try:
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = m.module.generate(**enc, max_new_tokens=n, do_sample=False, eos_token_id=None,
                                pad_token_id=tok.pad_token_id)
    finally:
        tok.padding_side, tok.pad_token = side, pad
    return out[:, enc["input_ids"].shape[1]:]


def naive_loop(m: cs.Model, prompt: str, site: str, fn, n: int, where: str) -> list[int]:
    """Re-run the full sequence at every step (no cache) with ``fn`` applied by a plain hook to the positions
    ``where`` says: all of them, the prompt's, or the generated tokens'."""
    ids = m.adapter.tokenize(prompt)[0].tolist()
    T = len(ids)
    res = m.adapter.resolve(cs.Site(site))
    new: list[int] = []
    for _ in range(n):
        def edit(x, T=T):
            x = x.clone()
            sl = slice(None) if where == "all" else slice(0, T) if where == "prompt" else slice(T, None)
            x[:, sl] = fn(x[:, sl])
            return x
        h = hook(res.module, res.io, edit)
        try:
            with torch.no_grad():
                logits = m.module(torch.tensor([ids + new])).logits
        finally:
            h.remove()
        new.append(int(logits[0, -1].argmax()))
    return new


def test_greedy_equals_transformers_generate_on_a_ragged_batch(lm):
    g = lm.generate(PROMPTS, max_new_tokens=N_NEW)
    assert torch.equal(g.ids, hf_greedy(lm, PROMPTS, N_NEW))
    assert g.meta["forwards"] == N_NEW                     # the KV cache: one forward per new token
    assert g.text[0] == lm.tokenizer.decode(g.ids[0].tolist())


@pytest.mark.parametrize("where", ["all", "prompt", "new"])
def test_steering_while_generating_equals_a_naive_rerun_loop(lm, where):
    torch.manual_seed(0)
    v = torch.randn(lm.module.config.hidden_size) * 3
    g = lm.generate(PROMPTS, {cs.Site("layers.1"): cs.Add(v, 2.0)}, max_new_tokens=N_NEW, positions=where)
    for i, p in enumerate(PROMPTS):
        ref = naive_loop(lm, p, "layers.1", lambda x: x + 2.0 * v, N_NEW, where)
        assert g.ids[i].tolist() == ref, (where, p)
    plain = lm.generate(PROMPTS, max_new_tokens=N_NEW)
    assert not torch.equal(g.ids, plain.ids)               # the edit changes what is written


def test_neuron_and_head_sites_while_generating(gpt2):
    g = gpt2.generate(PROMPTS, {cs.Site("layers.0.mlp", neurons=[1, 5, 9]): cs.Scale(0.0),
                                cs.Site("layers.1.attn.z", heads=[2]): cs.Zero()}, max_new_tokens=4)
    mlp, z = gpt2.adapter.resolve(cs.Site("layers.0.mlp")), gpt2.adapter.resolve(cs.Site("layers.1.attn.z"))
    d_head = gpt2.module.config.hidden_size // gpt2.module.config.n_head
    for i, p in enumerate(PROMPTS):
        ids = gpt2.adapter.tokenize(p)[0].tolist()
        new: list[int] = []
        for _ in range(4):
            def zero_neurons(x):
                x = x.clone()
                x[..., [1, 5, 9]] = 0
                return x

            def zero_head(x):
                x = x.clone()
                x[..., 2 * d_head:3 * d_head] = 0
                return x
            hs = [hook(mlp.module, mlp.io, zero_neurons), hook(z.module, z.io, zero_head)]
            try:
                with torch.no_grad():
                    new.append(int(gpt2.module(torch.tensor([ids + new])).logits[0, -1].argmax()))
            finally:
                for h in hs:
                    h.remove()
        assert g.ids[i].tolist() == new


def test_seeded_sampling_is_reproducible_and_the_model_unchanged(gpt2):
    snap = snapshot(gpt2.module)
    a = gpt2.generate(PROMPTS, max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, seed=3)
    b = gpt2.generate(PROMPTS, max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, seed=3)
    c = gpt2.generate(PROMPTS, max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, seed=4)
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    assert_same(gpt2.module, snap)


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    from causalscope.core._engine_generate import _choose

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(_choose(logits, True, 1.0, 0.7, g)) for _ in range(200)}
    assert draws == {0, 1}                                 # 0.5 + 0.3 reaches 0.7; 2 and 3 never drawn


def test_a_metric_per_step(gpt2):
    g = gpt2.generate(PROMPTS, max_new_tokens=3, metric=lambda logits: logits[:, 7])
    assert g.metric.shape == (3, 3)
    with torch.no_grad():
        first = gpt2.module(gpt2.adapter.tokenize(PROMPTS[1])).logits[0, -1, 7]
    assert float(g.metric[1, 0]) == pytest.approx(float(first), abs=1e-4)


@pytest.mark.parametrize("edits, kw, err, words", [
    ({"layers.1": cs.Patch("the cat")}, {}, cs.InterventionError, "reads another run"),
    ({"layers.1": cs.Noise(0.1)}, {}, cs.InterventionError, "same draw"),
    ({cs.Site("layers.1", positions=0): cs.Zero()}, {}, cs.SiteError, "without positions"),
    (None, {"max_new_tokens": 0}, cs.InputError, "max_new_tokens must be an int >= 1"),
    (None, {"positions": "middle"}, cs.InputError, "positions must be 'all'"),
    (None, {"temperature": 0}, cs.InputError, "temperature"),
    (None, {"top_p": 1.5}, cs.InputError, "top_p"),
    ("layers.1", {}, cs.InputError, "edits must be a dict"),
])
def test_bad_generation_input_is_refused(gpt2, edits, kw, err, words):
    snap = snapshot(gpt2.module)
    with pytest.raises(err, match=words):
        gpt2.generate(PROMPTS, edits, **kw)
    assert_same(gpt2.module, snap)


def test_models_without_a_kv_cache_are_refused(mlp):
    with pytest.raises(cs.InputError, match="Hugging Face causal LM"):
        mlp.generate("the cat")


def test_transformerlens_generation_equals_a_naive_rerun_loop():
    """A HookedTransformer generates with its own key/value cache, left padded; greedy and steered rows equal
    re-running each prompt's whole sequence (no cache, with a plain hook on the hook point for the edit)."""
    from conftest import hooked_transformer

    tl = hooked_transformer()
    m = cs.load(tl)
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(1, 50, (n,), generator=g).tolist() for n in (5, 3, 6)]
    v = torch.randn(32, generator=g)
    plain = m.generate(rows, max_new_tokens=5)
    steered = m.generate(rows, {"blocks.0.hook_resid_post": cs.Add(v, 3.0)}, max_new_tokens=5)
    assert plain.meta["forwards"] == 5
    for i, r in enumerate(rows):
        for out, add in ((plain, None), (steered, v)):
            ids = list(r)
            for _ in range(5):
                h = None if add is None else hook(tl.blocks[0].hook_resid_post, "output", lambda x: x + 3.0 * add)
                try:
                    with torch.no_grad():
                        ids.append(int(tl(torch.tensor([ids]))[0, -1].argmax()))
                finally:
                    if h is not None:
                        h.remove()
            assert out.ids[i].tolist() == ids[len(r):]
    assert not torch.equal(plain.ids, steered.ids)
