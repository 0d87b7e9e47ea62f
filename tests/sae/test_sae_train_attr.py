"""train_sae (against hand-computed metrics) and feature_attribution (against autograd through plain hooks and
finite differences)."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.sae import SAE, Transcoder, evaluate, feature_attribution, train_sae
from causalscope.zoo import build_tiny_lm
from model_state import assert_same, snapshot
from plain_hooks import hook

PROMPTS = ["the cat sat on the mat", "a dog ran by the tree", "the old king saw a river", "a cat ran"]


@pytest.fixture(scope="module")
def m() -> cs.Model:
    model, tok = build_tiny_lm("gpt2")
    return cs.load(model, tok, name="tiny-gpt2")


def tokens(m: cs.Model, prompts: list[str]) -> torch.Tensor:
    t = m.adapter.tokenize(prompts)
    return t["input_ids"] if isinstance(t, dict) else t


def activations(m: cs.Model, layer: int) -> torch.Tensor:
    """Every real token's output of block ``layer``, one prompt at a time through a plain hook."""
    out = []
    for p in PROMPTS:
        kept = {}

        def keep(x):
            kept["x"] = x.detach()
        h = hook(m.module.transformer.h[layer], "output", keep)
        try:
            with torch.no_grad():
                m.module(input_ids=tokens(m, [p]))
        finally:
            h.remove()
        out.append(kept["x"][0])
    return torch.cat(out)


def test_train_sae_reports_and_is_seeded(m, capsys):
    before = snapshot(m.module)
    sae = train_sae(m, PROMPTS, "layers.1", 32, k=4, steps=40, batch_size=16, lr=3e-3, seed=1, log_every=20)
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.startswith("step ")]
    assert len(lines) == 2 and all("explained variance" in x and "L0 4.0" in x for x in lines)
    assert_same(m.module, before)  # the model is left unchanged
    x = activations(m, 1)
    assert sae.info["tokens"] == len(x) == 6 + 6 + 6 + 3  # every real token, padding left out
    f = sae.encode(x)
    err = ((f @ sae.W_dec + sae.b_dec) - x) ** 2
    want = {"mse": float(err.mean()), "explained_variance": 1 - float(err.sum() / ((x - x.mean(0)) ** 2).sum()),
            "l0": float((f != 0).sum(-1).float().mean())}
    got = evaluate(sae, x)
    assert got["l0"] == want["l0"] == 4.0
    assert abs(got["mse"] - want["mse"]) < 1e-5 and abs(got["explained_variance"] - want["explained_variance"]) < 1e-4
    assert sae.info["history"][-1]["mse"] < sae.info["history"][0]["mse"] * 1.01
    again = train_sae(m, PROMPTS, "layers.1", 32, k=4, steps=40, batch_size=16, lr=3e-3, seed=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(sae.state_dict().values(), again.state_dict().values()))
    assert not any(p.requires_grad for p in sae.parameters())
    relu = train_sae(m, PROMPTS, cs.Site("layers.1"), 32, l1=1e-3, steps=20, batch_size=16, progress=False)
    assert relu.architecture == "relu" and relu.info["l1"] == 1e-3


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=2, l1=0.1), "exactly one of k="), (dict(), "exactly one of k="),
    (dict(k=2, site=cs.Site("layers.1", neurons=[1])), "selects a part of it"),
    (dict(k=2, steps=0), "steps must be an int >= 1"), (dict(k=2, lr=0.0), "lr must be a finite number > 0"),
])
def test_train_sae_bad_inputs(m, kwargs, match):
    site = kwargs.pop("site", "layers.1")
    with pytest.raises(cs.InputError, match=match):
        train_sae(m, PROMPTS, site, 8, progress=False, **kwargs)


def double_lm() -> cs.Model:
    model, tok = build_tiny_lm("gpt2")
    return cs.load(model.double(), tok, name="tiny-gpt2-f64")


def reference_grads(m: cs.Model, prompt: str, module: torch.nn.Module, read_io: str, write_io: str, sae, feats,
                    answer: int, shift: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain hooks: read the latents f at ``module``'s ``read_io``, write x + (f' - f) @ W_dec[feats] at its
    ``write_io`` with f' = f (+ shift) a leaf; returns (metric, d metric / d f')."""
    kept = {}
    W = sae.W_dec.detach()[feats]

    def read(x):
        kept["f"] = sae.encode(x).detach()[..., feats]
        kept["fp"] = (kept["f"] + (0 if shift is None else shift)).requires_grad_(True)

    def write(y):
        return y + (kept["fp"] - kept["f"]) @ W
    hs = [hook(module, read_io, read), hook(module, write_io, write)] if read_io != write_io else \
        [hook(module, write_io, lambda x: (read(x), write(x))[1])]
    try:
        logit = m.module(input_ids=tokens(m, [prompt])).logits[0, -1, answer]
    finally:
        for h in hs:
            h.remove()
    (g,) = torch.autograd.grad(logit, kept["fp"])
    return logit.detach(), g[0]


def test_feature_attribution_equals_autograd_and_finite_differences():
    m = double_lm()
    sae = SAE(64, 48, architecture="relu", seed=3).double()
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    feats = [0, 3, 7, 11, 20]
    clean, corrupted = ["the cat sat on the mat", "a dog ran by the tree"], ["the dog sat on the mat",
                                                                              "a cat ran by the tree"]
    site = cs.Site("layers.1", sae=sae, features=feats)
    a = feature_attribution(m, clean, corrupted, site, cs.logit(5))
    assert a.dims == ("position", "feature") and a.coords["feature"] == feats
    block = m.module.transformer.h[1]
    want = torch.zeros(6, len(feats), dtype=torch.float64)
    for c, k in zip(clean, corrupted):
        _, g = reference_grads(m, k, block, "output", "output", sae, feats, 5)
        f_clean = sae.encode(activations_of(m, c, block)).detach()[..., feats]
        f_corr = sae.encode(activations_of(m, k, block)).detach()[..., feats]
        want += g * (f_clean - f_corr) / len(clean)
    assert want.abs().max() > 1e-4
    torch.testing.assert_close(a.values.double(), want, rtol=1e-6, atol=1e-9)
    # the gradient itself against a central finite difference in one latent
    _, g = reference_grads(m, corrupted[0], block, "output", "output", sae, feats, 5)
    eps = 1e-5
    e = torch.zeros(6, len(feats), dtype=torch.float64)
    e[4, 1] = eps
    up, _ = reference_grads(m, corrupted[0], block, "output", "output", sae, feats, 5, e)
    down, _ = reference_grads(m, corrupted[0], block, "output", "output", sae, feats, 5, -e)
    assert abs(float((up - down) / (2 * eps)) - float(g[4, 1])) < 1e-6


def activations_of(m: cs.Model, prompt: str, module: torch.nn.Module, io: str = "output") -> torch.Tensor:
    kept = {}

    def keep(x):
        kept["x"] = x.detach()
    h = hook(module, io, keep)
    try:
        with torch.no_grad():
            m.module(input_ids=tokens(m, [prompt]))
    finally:
        h.remove()
    return kept["x"][0]


def test_feature_attribution_of_a_transcoder():
    m = double_lm()
    tc = Transcoder(64, 40, seed=4).double()
    with torch.no_grad():
        tc.b_enc.fill_(0.1)
    mlp = m.module.transformer.h[0].mlp
    site = cs.Site("layers.0.mlp", sae=tc, positions=[2, 5])
    a = feature_attribution(m, "the cat sat on the mat", "the dog sat on the mat", site, cs.logit(9))
    assert a.coords["position"] == [2, 5] and a.values.shape == (2, 40)
    _, g = reference_grads(m, "the dog sat on the mat", mlp, "input", "output", tc, list(range(40)), 9)
    f_c = tc.encode(activations_of(m, "the cat sat on the mat", mlp, "input")).detach()
    f_k = tc.encode(activations_of(m, "the dog sat on the mat", mlp, "input")).detach()
    want = (g * (f_c - f_k))[[2, 5]]
    assert want.abs().max() > 1e-5
    torch.testing.assert_close(a.values.double(), want, rtol=1e-6, atol=1e-9)


def test_feature_attribution_needs_an_sae_site(m):
    with pytest.raises(cs.InputError, match="give a site with sae="):
        feature_attribution(m, PROMPTS[0], PROMPTS[0], cs.Site("layers.1"), cs.logit(3))
