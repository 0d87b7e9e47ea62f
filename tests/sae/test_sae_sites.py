"""SAE and transcoder latents as sites, against naive plain-hook loops that encode / decode by hand."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.sae import SAE, Transcoder
from causalscope.zoo import build_tiny_lm
from plain_hooks import hook

PROMPTS = ["the cat sat on the mat", "a dog ran by the tree"]
CORRUPT = ["the dog sat on the mat", "a cat ran by the tree"]


@pytest.fixture(scope="module")
def m() -> cs.Model:
    model, tok = build_tiny_lm("gpt2")
    return cs.load(model, tok, name="tiny-gpt2")


def random_sae(arch: str, seed: int = 0, d: int = 64, n: int = 96) -> SAE:
    """A random SAE with non-trivial biases (and thresholds), so every term of the formulas matters."""
    sae = SAE(d, n, architecture=arch, k=12 if arch == "topk" else None, seed=seed, name=f"{arch}{seed}")
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(n, generator=g))
        sae.b_dec.copy_(0.1 * torch.randn(d, generator=g))
        if sae.threshold is not None:
            sae.threshold.copy_(0.05 + 0.1 * torch.rand(n, generator=g))
    return sae


def hand_encode(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """The SAELens formulas, written out: pre = (x - b_dec) W_enc + b_enc, then the architecture's activation."""
    W_enc, b_enc, b_dec = sae.W_enc.detach(), sae.b_enc.detach(), sae.b_dec.detach()
    pre = ((x - b_dec) if sae.apply_b_dec_to_input else x) @ W_enc + b_enc
    if sae.architecture == "relu":
        return pre.clamp(min=0)
    if sae.architecture == "jumprelu":
        return torch.where(pre > sae.threshold.detach(), pre, torch.zeros_like(pre)).clamp(min=0)
    flat, out = pre.reshape(-1, pre.shape[-1]), torch.zeros(pre.numel() // pre.shape[-1], pre.shape[-1])
    for i, row in enumerate(flat):  # one token at a time: its k largest pre-activations, through a ReLU
        keep = row.argsort(descending=True)[: sae.k]
        out[i, keep] = row[keep].clamp(min=0)
    return out.view(pre.shape)


def mlp_of(m: cs.Model, layer: int) -> torch.nn.Module:
    return m.module.transformer.h[layer].mlp


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
@pytest.mark.parametrize("features,positions", [(None, None), ([3, 50, 7], None), ([0, 1], [1, -1])])
def test_noop_edit_reproduces_the_model_bit_for_bit(m, arch, features, positions):
    sae = random_sae(arch)
    base = m.run(PROMPTS)
    site = cs.Site("layers.1", sae=sae, features=features, positions=positions)
    for iv in (cs.Scale(1.0), cs.Add(torch.zeros(len(features) if features else sae.n_latents))):
        assert torch.equal(m.run(PROMPTS, {site: iv}).output, base.output)
    tc = Transcoder(64, 80, seed=3)
    assert torch.equal(m.run(PROMPTS, {cs.Site("layers.0.mlp", sae=tc, features=features): cs.Scale(1.0)}).output,
                       base.output)


def test_noop_edit_on_a_ragged_batch(m):
    prompts = ["the cat sat on the mat", "a dog ran"]
    site = cs.Site("layers.1", sae=random_sae("topk"), features=[1, 2], positions=[-1])
    assert torch.equal(m.run(prompts, {site: cs.Scale(1.0)}).output, m.run(prompts).output)


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_zero_ablating_features_equals_a_plain_hook_loop(m, arch):
    sae = random_sae(arch, seed=1)
    pos = [1, 3]
    f_all = hand_encode(sae, capture(m, PROMPTS, m.module.transformer.h[1])[:, pos])
    feats = f_all.sum((0, 1)).argsort(descending=True)[:3].tolist()  # three features active there
    assert f_all[..., feats].sum() > 0
    got = m.run(PROMPTS, {cs.Site("layers.1", sae=sae, features=feats, positions=pos): cs.Zero()}).output
    W = sae.W_dec.detach()[feats]

    def edit(x):
        x = x.clone()
        f = hand_encode(sae, x[:, pos])[..., feats]
        x[:, pos] = x[:, pos] + (0 - f) @ W
        return x

    want = plain_logits(m, PROMPTS, m.module.transformer.h[1], edit)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - m.run(PROMPTS).output).abs().max() > 1e-3  # the ablation does something


def ids(m: cs.Model, prompts: list[str]) -> torch.Tensor:
    t = m.adapter.tokenize(prompts)
    return t["input_ids"] if isinstance(t, dict) else t


def plain_logits(m: cs.Model, prompts: list[str], module: torch.nn.Module | None = None, fn=None,
                 io: str = "output") -> torch.Tensor:
    handles = [] if module is None else [hook(module, io, fn)]
    try:
        with torch.no_grad():
            return m.module(input_ids=ids(m, prompts)).logits
    finally:
        for h in handles:
            h.remove()


def capture(m: cs.Model, prompts: list[str], module: torch.nn.Module, io: str = "output") -> torch.Tensor:
    kept = {}

    def keep(x):
        kept["x"] = x.detach().clone()
    plain_logits(m, prompts, module, keep, io)
    return kept["x"]


def test_feature_sweep_with_rows_equals_a_naive_loop(m):
    sae = random_sae("relu", seed=2)
    clean = m.run(PROMPTS, cache=["layers.1"])
    sweep = [cs.Rows({cs.Site("layers.1", sae=sae, features=[f], positions=[1]): cs.Patch(clean)}, [0, 1])
             for f in range(6)]
    got = m.run(CORRUPT, sweep).output.view(6, 2, *clean.cache["layers.1"].shape[1:2], -1)
    x_clean = capture(m, PROMPTS, m.module.transformer.h[1])
    W = sae.W_dec.detach()
    for f in range(6):
        def edit(x, f=f):
            x = x.clone()
            delta = hand_encode(sae, x_clean[:, 1])[:, [f]] - hand_encode(sae, x[:, 1])[:, [f]]
            x[:, 1] = x[:, 1] + delta @ W[[f]]
            return x
        want = plain_logits(m, CORRUPT, m.module.transformer.h[1], edit)
        torch.testing.assert_close(got[f], want, rtol=1e-5, atol=1e-5)
    assert (got - plain_logits(m, CORRUPT)).abs().amax() > 1e-3  # some patch changes something


@pytest.mark.parametrize("schedule", ["floor", "batched"])
def test_activation_patching_over_feature_sites_equals_a_naive_loop(m, schedule):
    sae = random_sae("topk", seed=4)
    sites = [cs.Site("layers.1", sae=sae, features=[f]) for f in range(4)] + \
        [cs.Site("layers.0", sae=random_sae("relu", seed=5), features=[0, 1])]
    metric = cs.logit(5)
    r = cs.activation_patching(m, PROMPTS[0], CORRUPT[0], sites, metric, direction="denoise", schedule=schedule)
    assert r.coords["site"] == [s.name for s in sites]
    raw = torch.tensor(r.meta["raw"]).flatten()
    assert r.meta["fast_path"] == (schedule == "floor")
    assert (raw - r.meta["corrupted_metric"]).abs().max() > 1e-3  # some patch changes the metric
    for i, s in enumerate(sites):
        layer = int(s.module.split(".")[1])
        block = m.module.transformer.h[layer]
        x_clean = capture(m, [PROMPTS[0]], block)
        W = s.sae.W_dec.detach()[list(s.features)]

        def edit(x, s=s, x_clean=x_clean, W=W):
            f = list(s.features)
            return x + (hand_encode(s.sae, x_clean)[..., f] - hand_encode(s.sae, x)[..., f]) @ W
        want = float(plain_logits(m, [CORRUPT[0]], block, edit)[0, -1, 5])
        assert abs(float(raw[i]) - want) < 1e-4, (s.name, float(raw[i]), want)


def test_mean_of_latents_equals_a_naive_mean(m):
    sae = random_sae("jumprelu", seed=6)
    ref_prompts = ["the old king saw a river", "a cat sat by the tree", "the dog ran on the mat"]
    ref = m.run(ref_prompts, cache=["layers.1"])
    feats = [1, 4, 8]
    got = m.run(PROMPTS, {cs.Site("layers.1", sae=sae, features=feats, positions=[2]): cs.Mean(ref)}).output
    x_ref = capture(m, ref_prompts, m.module.transformer.h[1])
    mean = hand_encode(sae, x_ref[:, 2])[:, feats].mean(0)  # the mean of the latents, not of the activation
    W = sae.W_dec.detach()[feats]

    def edit(x):
        x = x.clone()
        x[:, 2] = x[:, 2] + (mean - hand_encode(sae, x[:, 2])[:, feats]) @ W
        return x
    torch.testing.assert_close(got, plain_logits(m, PROMPTS, m.module.transformer.h[1], edit), rtol=1e-5, atol=1e-5)


def test_transcoder_reads_the_mlp_input_and_writes_its_output(m):
    tc = Transcoder(64, 80, seed=7, name="tc")
    with torch.no_grad():
        tc.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    feats = [0, 5, 11]
    site = cs.Site("layers.1.mlp", sae=tc, features=feats, positions=[2, 4])
    assert site.io == "input" and site.name == "layers.1.mlp[pos=2,4, transcoder=tc, features=0,5,11]"
    run = m.run(PROMPTS, {site: cs.Set(torch.tensor([1.0, 2.0, 0.0]))}, cache=[site])
    mlp_in = capture(m, PROMPTS, mlp_of(m, 1), "input")
    f = hand_encode(tc, mlp_in[:, [2, 4]])[..., feats]
    torch.testing.assert_close(run.cache[site], f, rtol=1e-6, atol=1e-6)  # cached: the latents of the input
    kept = {}

    def read(x):
        kept["f"] = hand_encode(tc, x[:, [2, 4]])[..., feats]

    def write(y):
        y = y.clone()
        y[:, [2, 4]] = y[:, [2, 4]] + (torch.tensor([1.0, 2.0, 0.0]) - kept["f"]) @ tc.W_dec.detach()[feats]
        return y
    h = hook(mlp_of(m, 1), "input", read)
    try:
        want = plain_logits(m, PROMPTS, mlp_of(m, 1), write)
    finally:
        h.remove()
    torch.testing.assert_close(run.output, want, rtol=1e-5, atol=1e-5)


def test_caching_an_sae_site_returns_its_latents(m):
    sae = random_sae("topk", seed=8)
    run = m.run(PROMPTS, cache=[cs.Site("layers.1", sae=sae), cs.Site("layers.1", sae=sae, features=[3, 1],
                                                                      positions=[-1])])
    x = capture(m, PROMPTS, m.module.transformer.h[1])
    torch.testing.assert_close(run.cache["layers.1[sae=topk8]"], hand_encode(sae, x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(run.cache["layers.1[pos=-1, sae=topk8, features=3,1]"],
                               hand_encode(sae, x[:, [-1]])[..., [3, 1]], rtol=1e-6, atol=1e-6)
    assert not run.cache["layers.1[sae=topk8]"].requires_grad


def test_gradients_flow_through_an_sae_edit(m):
    sae = random_sae("relu", seed=9)
    site = cs.Site("layers.1", sae=sae, features=[0, 2, 5])
    metric = cs.logit(7)
    run = m.run(PROMPTS, {site: cs.Zero()}, grads=["layers.0"], metric=metric)
    x0 = capture(m, PROMPTS, m.module.transformer.h[0]).requires_grad_(True)
    W = sae.W_dec.detach()[[0, 2, 5]]

    def at0(x):
        return x0

    def at1(x):
        return x + (0 - hand_encode(sae, x)[..., [0, 2, 5]]) @ W
    hs = [hook(m.module.transformer.h[0], "output", at0), hook(m.module.transformer.h[1], "output", at1)]
    try:
        logits = m.module(input_ids=ids(m, PROMPTS)).logits
    finally:
        for h in hs:
            h.remove()
    (g,) = torch.autograd.grad(logits[:, -1, 7].sum(), x0)
    torch.testing.assert_close(run.grads["layers.0"], g, rtol=1e-5, atol=1e-6)


def test_view_of_a_gradient_is_the_gradient_of_the_latents(m):
    from causalscope.core._engine_ops import view

    sae = random_sae("relu", seed=10)
    site = cs.Site("layers.1", sae=sae, features=[4, 6])
    run = m.run(PROMPTS, grads=["layers.1"], metric=cs.logit(3))
    got = view(run.grads["layers.1"], site, m.adapter.resolve(site), grad=True)
    x = capture(m, PROMPTS, m.module.transformer.h[1])
    f = hand_encode(sae, x)[..., [4, 6]]
    fp = f.clone().requires_grad_(True)
    W = sae.W_dec.detach()[[4, 6]]
    logits = plain_logits_grad(m, PROMPTS, m.module.transformer.h[1], lambda x: x + (fp - f) @ W)
    (want,) = torch.autograd.grad(logits[:, -1, 3].sum(), fp)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def plain_logits_grad(m, prompts, module, fn):
    h = hook(module, "output", fn)
    try:
        return m.module(input_ids=ids(m, prompts)).logits
    finally:
        h.remove()


def test_sae_sites_are_values_with_names(m):
    sae, other = random_sae("relu", seed=11), random_sae("relu", seed=11)
    a = cs.Site("layers.1", sae=sae, features=range(10))
    assert a.name == "layers.1[sae=relu11, features=0..9]"
    assert a == cs.Site("layers.1", sae=sae, features=list(range(10))) and hash(a) == hash(cs.Site(
        "layers.1", sae=sae, features=range(10)))
    assert a != cs.Site("layers.1", sae=other, features=range(10))  # same name, another SAE object
    assert a != cs.Site("layers.1", sae=sae, features=range(9))
    assert a.at(2) == cs.Site("layers.1", sae=sae, features=range(10), positions=2)
    unnamed = SAE(64, 8)
    assert cs.Site("layers.1", sae=unnamed).name.startswith("layers.1[sae=SAE@")


@pytest.mark.parametrize("kwargs,match", [
    (dict(features=[1]), "pass sae="),
    (dict(sae=object()), "lacks encode, W_dec, d_in"),
    (dict(sae=SAE(64, 8), neurons=[1]), "cannot also select neurons"),
    (dict(sae=SAE(64, 8), features=[8]), r"features \[8\] are out of range"),
    (dict(sae=SAE(64, 8), features=[1, 1]), "repeat an index"),
    (dict(sae=SAE(64, 8), features=slice(0, 2)), "not a slice"),
])
def test_bad_sae_sites_raise(kwargs, match):
    with pytest.raises(cs.SiteError, match=match):
        cs.Site("layers.1", **kwargs)


def test_sae_site_errors_at_run_time(m):
    with pytest.raises(cs.SiteError, match="the SAE reads 32 dimensions, but the activation there has 64"):
        m.run(PROMPTS, {cs.Site("layers.1", sae=SAE(32, 8)): cs.Zero()})
    with pytest.raises(cs.SiteError, match="names a site of SAE latents"):
        cs.Site.from_name("layers.1[sae=x, features=1]")
    with pytest.raises(cs.SiteError, match="sae.encode returned"):
        class Bad:
            d_in, W_dec = 64, torch.zeros(8, 64)

            def encode(self, x):
                return x
        m.run(PROMPTS, {cs.Site("layers.1", sae=Bad()): cs.Zero()})


def test_a_duck_typed_sae_works(m):
    class Mine:
        d_in, n_latents = 64, 16

        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.W_enc, self.W_dec = torch.randn(64, 16, generator=g), torch.randn(16, 64, generator=g)

        def encode(self, x):
            return torch.relu(x @ self.W_enc)
    sae = Mine()
    site = cs.Site("layers.1", sae=sae, features=[2])
    assert torch.equal(m.run(PROMPTS, {site: cs.Scale(1.0)}).output, m.run(PROMPTS).output)
    got = m.run(PROMPTS, {site: cs.Scale(2.0)}).output
    want = plain_logits(m, PROMPTS, m.module.transformer.h[1],
                        lambda x: x + (torch.relu(x @ sae.W_enc)[..., [2]]) @ sae.W_dec[[2]])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_mean_of_latents_over_a_ragged_source_leaves_padding_out(m):
    sae = random_sae("relu", seed=12)
    refs = ["the old king saw a river", "a cat ran", "the dog ran on the mat"]  # 6, 3 and 6 tokens
    ref = m.run(refs, cache=["layers.1"])
    got = m.run(PROMPTS, {cs.Site("layers.1", sae=sae, features=[0, 5]): cs.Mean(ref)}).output
    lat = [hand_encode(sae, capture(m, [p], m.module.transformer.h[1])[0])[:, [0, 5]] for p in refs]
    mean = torch.stack([torch.stack([f[t] for f in lat if len(f) > t]).mean(0) for t in range(6)])  # per position
    W = sae.W_dec.detach()[[0, 5]]
    want = plain_logits(m, PROMPTS, m.module.transformer.h[1],
                        lambda x: x + (mean - hand_encode(sae, x)[..., [0, 5]]) @ W)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_latents_encoded_in_slices_give_the_same_edits(m, monkeypatch):
    import causalscope.core._sae_sites as sae_sites

    sae = random_sae("topk", seed=13)
    prompts = PROMPTS + ["the old king saw a river"]
    ref = m.run(prompts, cache=["layers.1"])
    rows = [cs.Rows({cs.Site("layers.1", sae=sae, features=[f]): cs.Scale(3.0)}, [0, 1, 2]) for f in range(4)]
    mean = {cs.Site("layers.1", sae=sae): cs.Mean(ref)}
    whole = m.run(prompts, rows).output, m.run(prompts, mean).output
    monkeypatch.setattr(sae_sites, "LATENT_BUDGET", 100)  # one row at a time
    sliced = m.run(prompts, rows).output, m.run(prompts, mean).output
    for a, b in zip(whole, sliced):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_grads_at_an_sae_site_are_the_gradients_of_its_latents(m):
    """run.grads[sae_site] is dmetric/dlatents (the engine views a gradient through W_dec^T, not the encoder)."""
    sae = random_sae("relu", seed=11)
    site = cs.Site("layers.1", sae=sae, features=[2, 9])
    run = m.run(PROMPTS, grads=[site], metric=cs.logit(3))
    x = capture(m, PROMPTS, m.module.transformer.h[1])
    f = hand_encode(sae, x)[..., [2, 9]]
    fp = f.clone().requires_grad_(True)
    W = sae.W_dec.detach()[[2, 9]]
    logits = plain_logits_grad(m, PROMPTS, m.module.transformer.h[1], lambda x: x + (fp - f) @ W)
    (want,) = torch.autograd.grad(logits[:, -1, 3].sum(), fp)
    torch.testing.assert_close(run.grads[site.name], want, rtol=1e-5, atol=1e-6)


def test_sae_sites_with_positions_keep_their_sae_on_the_floor_schedule(m):
    """The segmented (floor) schedule restricts sites to the positions it recomputes; an SAE site stays one."""
    sae = random_sae("topk", seed=12)
    sites = [cs.Site("layers.1", sae=sae, features=[f], positions=[2, 3]) for f in range(3)]
    floor = cs.activation_patching(m, PROMPTS[0], CORRUPT[0], sites, cs.logit(5), schedule="floor")
    batched = cs.activation_patching(m, PROMPTS[0], CORRUPT[0], sites, cs.logit(5), schedule="batched")
    torch.testing.assert_close(torch.tensor(floor.meta["raw"]), torch.tensor(batched.meta["raw"]), rtol=0,
                               atol=1e-5)
    block = m.module.transformer.h[1]
    x_clean = capture(m, [PROMPTS[0]], block)
    for i, s in enumerate(sites):
        f = list(s.features)

        def edit(x, f=f):
            x = x.clone()
            x[:, 2:4] = x[:, 2:4] + (hand_encode(sae, x_clean[:, 2:4])[..., f] -
                                     hand_encode(sae, x[:, 2:4])[..., f]) @ sae.W_dec.detach()[f]
            return x
        want = float(plain_logits(m, [CORRUPT[0]], block, edit)[0, -1, 5])
        assert abs(float(torch.tensor(floor.meta["raw"]).flatten()[i]) - want) < 1e-4


def test_sweeps_that_would_drop_the_sae_refuse(m):
    sae = random_sae("relu", seed=13)
    site = cs.Site("layers.1", sae=sae, features=[0, 1])
    with pytest.raises(cs.InputError, match="selects SAE latents"):
        cs.activation_patching(m, PROMPTS[0], CORRUPT[0], site, cs.logit(5), per="position")
    cm = cs.CausalModel({"A": [], "O": ["A"]}, {"O": lambda a: a}, {"A": [0, 1], "O": [0, 1]},
                        encode=lambda v: [PROMPTS[0]] * len(v["A"]))
    with pytest.raises(cs.InputError, match="sae="):
        cs.das(m, cm, "A", site, n_train=4, n_test=4, metric=lambda y, lengths=None: y[:, -1, :2])
    with pytest.raises(cs.InputError, match="already selects"):
        cs.alignment_search(m, cm, "A", layers=[site], n=4, metric=lambda y, lengths=None: y[:, -1, :2])


def test_integrated_gradients_at_an_sae_site_is_complete_against_its_path_start():
    """IG over latents keeps the input's reconstruction error: the attributions sum to f(input) - f(path start),
    and the path start is the run with the baseline's latents written into the input's activation (by hand)."""
    from causalscope.sae import load_bundled

    fm, sae = cs.load("facts-gpt"), load_bundled("facts-gpt-layers.2")
    fact = "Thumtre Lesdurn , as we know , was born in the city of"
    other = "Bosrel Fazindlir , as we know , was born in the city of"
    ans = fm.tokenizer(" Lunmark", add_special_tokens=False)["input_ids"][0]
    r = cs.integrated_gradients(fm, fact, other, cs.Site("layers.2", sae=sae), metric=cs.logit(ans), steps=64)
    block = fm.module.transformer.h[2]
    x_b = capture(fm, [other], block)
    W = sae.W_dec.detach()
    start = plain_logits(fm, [fact], block, lambda x: x + (hand_encode(sae, x_b) - hand_encode(sae, x)) @ W)
    assert r.meta["f_path_start"][0] == pytest.approx(float(start[0, -1, ans]), abs=1e-3)
    assert float(r.values.sum()) == pytest.approx(r.meta["f_inputs"][0] - r.meta["f_path_start"][0], abs=1e-3)
