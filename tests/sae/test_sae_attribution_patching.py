"""cs.attribution_patching over SAE and transcoder latents, against (a) causalscope.sae.feature_attribution, (b) a
naive reference (one latent at a time: autograd through a plain hook that writes x + (f' - f) W_dec[j], times the
latent's difference), (c) exact patching (cs.activation_patching over one-latent sites) on a model whose metric is
linear in the latents; plus pairs of different lengths, shards, the refusals, and plain sites as before."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import causalscope as cs
from causalscope.core import Engine
from causalscope.sae import SAE, Transcoder, feature_attribution
from causalscope.zoo import build_tiny_lm
from model_state import assert_same, snapshot
from plain_hooks import hook

CLEAN = ["the cat sat on the mat", "a dog ran by the tree"]
CORRUPT = ["the dog sat on the mat", "a cat ran by the tree"]
ANSWER = 5
FEATS = [0, 3, 7, 11, 20]


@pytest.fixture(scope="module")
def m() -> cs.Model:
    model, tok = build_tiny_lm("gpt2", init_std=0.3)  # sharp enough that the logit moves by ~2 between the inputs
    return cs.load(model.double(), tok, name="sharp-gpt2-f64")


@pytest.fixture(scope="module")
def sae() -> SAE:
    s = SAE(64, 48, architecture="relu", seed=3, name="relu3").double()
    with torch.no_grad():
        s.b_enc.fill_(0.05)  # many active latents, so that most differences are not zero
    return s


@pytest.fixture(scope="module")
def tc() -> Transcoder:
    t = Transcoder(64, 40, seed=4, name="tc4").double()
    with torch.no_grad():
        t.b_enc.fill_(0.1)
    return t


def tokens(m: cs.Model, prompt: str) -> torch.Tensor:
    t = m.adapter.tokenize([prompt])
    return t["input_ids"] if isinstance(t, dict) else t


def logit(m: cs.Model, prompt: str) -> float:
    with torch.no_grad():
        return float(m.module(input_ids=tokens(m, prompt)).logits[0, -1, ANSWER])


def capture(m: cs.Model, prompt: str, module: nn.Module, io: str) -> torch.Tensor:
    kept = {}

    def keep(x):
        kept["x"] = x.detach().clone()
    h = hook(module, io, keep)
    try:
        with torch.no_grad():
            m.module(input_ids=tokens(m, prompt))
    finally:
        h.remove()
    return kept["x"][0]


def latent_grad(m: cs.Model, prompt: str, module: nn.Module, read_io: str, write_io: str, sae, j: int) -> torch.Tensor:
    """d logit / d f'_j at every position, through plain hooks: read f = encode(x) at ``read_io``, write
    ``y + (f'_j - f_j) W_dec[j]`` at ``write_io`` with f'_j = f_j a leaf."""
    kept = {}
    w = sae.W_dec.detach()[j]

    def read(x):
        kept["f"] = sae.encode(x).detach()[..., j]
        kept["fp"] = kept["f"].clone().requires_grad_(True)

    def write(y):
        return y + (kept["fp"] - kept["f"])[..., None] * w
    hs = [hook(module, read_io, read), hook(module, write_io, write)] if read_io != write_io else \
        [hook(module, write_io, lambda x: (read(x), write(x))[1])]
    try:
        out = m.module(input_ids=tokens(m, prompt)).logits[0, -1, ANSWER]
    finally:
        for h in hs:
            h.remove()
    (g,) = torch.autograd.grad(out, kept["fp"])
    return g[0]


def naive(m: cs.Model, module: nn.Module, read_io: str, write_io: str, sae, feats: list[int],
          clean: list[str], corrupt: list[str]) -> dict[str, torch.Tensor]:
    """Every pair's grad_f_j . (f_clean_j - f_corrupted_j), (T, k) per direction, averaged over the pairs; the
    gradient from the corrupted run (denoise) or the clean run (noise)."""
    out = {"denoise": 0.0, "noise": 0.0}
    for c, k in zip(clean, corrupt):
        diff = sae.encode(capture(m, c, module, read_io)).detach() - sae.encode(capture(m, k, module, read_io)).detach()
        for direction, base in (("denoise", k), ("noise", c)):
            g = torch.stack([latent_grad(m, base, module, read_io, write_io, sae, j) for j in feats], -1)
            out[direction] = out[direction] + g * diff[..., feats] / len(clean)
    return out


def span(m: cs.Model, clean: list[str], corrupt: list[str]) -> float:
    return (sum(logit(m, c) for c in clean) - sum(logit(m, k) for k in corrupt)) / len(clean)


# --------------------------------------------------------------------------- (a) feature_attribution, (b) naive

@pytest.mark.parametrize("kind", ["sae", "transcoder"])
def test_equals_feature_attribution_and_a_naive_reference(m, sae, tc, kind):
    if kind == "sae":
        site = cs.Site("layers.1", sae=sae, features=FEATS)
        module, read_io, write_io, feats, coder = m.module.transformer.h[1], "output", "output", FEATS, sae
    else:
        site = cs.Site("layers.0.mlp", sae=tc, features=[1, 4, 9, 33], positions=[2, -1])
        module, read_io, write_io, feats, coder = m.module.transformer.h[0].mlp, "input", "output", [1, 4, 9, 33], tc
    before = snapshot(m.module)
    r = cs.attribution_patching(m, CLEAN, CORRUPT, [site], cs.logit(ANSWER), direction="both")
    assert_same(m.module, before)  # the model comes back as it was
    assert all(p.grad is None for p in m.module.parameters())
    assert r.dims == ("direction", "site", "position", "feature")
    assert r.coords["site"] == [site.name] and r.coords["feature"] == feats
    s = span(m, CLEAN, CORRUPT)
    assert abs(r.meta["clean_metric"] - r.meta["corrupted_metric"] - s) < 1e-6 * abs(s)  # (metrics kept in float32)
    # (a) feature_attribution's estimate is the denoising one, before the division by the span
    fa = feature_attribution(m, CLEAN, CORRUPT, site, cs.logit(ANSWER))
    assert fa.coords["position"] == r.coords["position"] and fa.coords["feature"] == r.coords["feature"]
    denoise = r.sel(direction="denoise", site=site.name).values.double() * s
    torch.testing.assert_close(denoise, fa.values.double(), rtol=1e-5, atol=1e-7)
    # (b) one latent at a time through plain hooks, both directions
    want = naive(m, module, read_io, write_io, coder, feats, CLEAN, CORRUPT)
    rows = r.coords["position"]
    for direction in ("denoise", "noise"):
        w = want[direction][rows]
        assert w.abs().max() > 1e-4  # the check checks something
        got = r.sel(direction=direction, site=site.name).values.double() * s
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-7 * float(w.abs().max()))


def test_per_example_keeps_each_pairs_estimate(m, sae):
    site = cs.Site("layers.1", sae=sae, features=[3, 7], positions=[-1, 4])
    avg = cs.attribution_patching(m, CLEAN, CORRUPT, site, cs.logit(ANSWER), direction="both")
    each = cs.attribution_patching(m, CLEAN, CORRUPT, site, cs.logit(ANSWER), direction="both", per_example=True)
    assert each.dims == (*avg.dims, "example") and avg.coords["position"] == [5, 4]
    torch.testing.assert_close(each.values.mean(-1), avg.values, rtol=1e-5, atol=1e-6)
    s = span(m, CLEAN, CORRUPT)
    for i in range(2):  # pair i's estimate: its score less its own base metric's offset from the averaged one
        alone = feature_attribution(m, CLEAN[i], CORRUPT[i], site, cs.logit(ANSWER)).values.double()
        offset = logit(m, CORRUPT[i]) - avg.meta["corrupted_metric"]
        got = each.sel(direction="denoise", site=site.name, example=i).values.double() * s - offset
        torch.testing.assert_close(got, alone, rtol=1e-5, atol=1e-6)


def test_several_sae_sites_and_all_features(m, sae):
    other = SAE(64, 48, architecture="topk", k=8, seed=5, name="topk5").double()
    sites = [cs.Site("layers.0", sae=other), cs.Site("layers.1", sae=sae)]
    r = cs.attribution_patching(m, CLEAN, CORRUPT, sites, cs.logit(ANSWER))
    assert r.shape == (1, 2, 6, 48) and r.coords["feature"] == list(range(48))
    s = span(m, CLEAN, CORRUPT)
    for site in sites:
        fa = feature_attribution(m, CLEAN, CORRUPT, site, cs.logit(ANSWER))
        torch.testing.assert_close(r.sel(direction="denoise", site=site.name).values.double() * s,
                                   fa.values.double(), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- (c) exact where the metric is linear

def linear_after() -> cs.Model:
    """x -> tanh(W1 x) -> W2 . -> w3 . : the metric is linear in everything after the tanh, so in the latents of an
    SAE on the tanh's output and of a transcoder on the second linear layer."""
    torch.manual_seed(0)
    return cs.load(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.Linear(8, 1)).double(),
                   name="linear-after-tanh")


def test_exact_where_the_metric_is_linear_in_the_latents():
    m = linear_after()
    g = torch.Generator().manual_seed(1)
    clean, corrupt = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g,
                                                                                       dtype=torch.float64)
    sae = SAE(8, 12, architecture="relu", seed=2, name="s").double()
    tc = Transcoder(8, 10, seed=3, name="t").double()
    with torch.no_grad():
        sae.b_enc.fill_(0.2)
        tc.b_enc.fill_(0.2)
    metric = cs.output_value()
    for module, coder, feats in (("1", sae, [0, 2, 5, 7, 11]), ("2", tc, None)):
        site = cs.Site(module, sae=coder, features=feats)
        r = cs.attribution_patching(m, clean, corrupt, [site], metric, direction="both")
        listed = feats if feats is not None else list(range(10))
        assert r.dims == ("direction", "site", "feature") and r.coords["feature"] == listed
        one_each = [cs.Site(module, sae=coder, features=[j]) for j in listed]
        exact = cs.activation_patching(m, clean, corrupt, one_each, metric, direction="both")
        whole = cs.activation_patching(m, clean, corrupt, [site], metric, direction="both")
        for direction in ("denoise", "noise"):
            est = r.sel(direction=direction, site=site.name).values.double()
            want = exact.sel(direction=direction).values.double()
            assert want.abs().max() > 1e-2
            torch.testing.assert_close(est, want, rtol=0, atol=1e-5)
            # summed over a site's features: the estimate of patching the whole site, exact here too
            assert abs(float(est.sum()) - float(whole.sel(direction=direction).values[0])) < 1e-5


# --------------------------------------------------------------------------- lengths, shards

RAGGED_CLEAN = ["the cat sat on the mat", "a dog ran", "the old king saw a river near the city"]
RAGGED_CORRUPT = ["the dog sat on the mat", "a cat ran", "the old dog saw a river near the city"]


def test_pairs_of_different_lengths_each_as_alone(m, sae, tc):
    for site in (cs.Site("layers.1", sae=sae, features=[3, 7, 20], positions=[-2, -1]),
                 cs.Site("layers.0.mlp", sae=tc, features=[1, 9], positions=[0, 1])):
        r = cs.attribution_patching(m, RAGGED_CLEAN, RAGGED_CORRUPT, [site], cs.logit(ANSWER))
        assert r.coords["position"] == list(site.positions) and r.meta["lengths"]
        alone = sum(feature_attribution(m, c, k, site, cs.logit(ANSWER)).values.double()
                    for c, k in zip(RAGGED_CLEAN, RAGGED_CORRUPT)) / 3
        s = span(m, RAGGED_CLEAN, RAGGED_CORRUPT)
        torch.testing.assert_close(r.sel(direction="denoise", site=site.name).values.double() * s, alone,
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("clean,corrupt", [(CLEAN, CORRUPT), (RAGGED_CLEAN, RAGGED_CORRUPT)])
def test_shards_equal_one_call(m, sae, clean, corrupt):
    site = cs.Site("layers.1", sae=sae, features=[3, 7], positions=[-1, 1])
    pairs = (clean * 2, corrupt * 2)
    one = cs.attribution_patching(m, *pairs, [site], cs.logit(ANSWER), direction="both")
    sharded = cs.attribution_patching(m, *pairs, [site], cs.logit(ANSWER), direction="both", shards=3)
    assert sharded.dims == one.dims and sharded.coords == one.coords
    torch.testing.assert_close(sharded.values, one.values, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- refusals; plain sites unchanged

def test_refusals_name_the_problem_and_the_fix(m, sae, tc):
    site = cs.Site("layers.1", sae=sae, features=[1])
    with pytest.raises(cs.InputError, match="SAE sites and plain sites"):
        cs.attribution_patching(m, CLEAN, CORRUPT, [site, "layers.0"], cs.logit(ANSWER))
    with pytest.raises(cs.InputError, match="same features and positions"):
        cs.attribution_patching(m, CLEAN, CORRUPT, [site, cs.Site("layers.0", sae=sae, features=[2])], cs.logit(3))
    with pytest.raises(cs.InputError, match="same features and positions"):
        cs.attribution_patching(m, CLEAN, CORRUPT, [site, cs.Site("layers.0", sae=sae, features=[1], positions=[1])],
                                cs.logit(3))
    with pytest.raises(cs.InputError, match="appear twice"):
        cs.attribution_patching(m, CLEAN, CORRUPT, [site, site], cs.logit(3))
    with pytest.raises(cs.InputError, match="give one site per cell"):
        cs.attribution_patching(m, CLEAN, CORRUPT, site, cs.logit(3), per="position")
    for open_positions in (None, slice(-2, None)):
        coded = cs.Site("layers.1", sae=sae, features=[1], positions=open_positions)
        for shards in (None, 2):
            with pytest.raises(cs.InputError, match="different lengths"):
                cs.attribution_patching(m, RAGGED_CLEAN, RAGGED_CORRUPT, [coded], cs.logit(3), shards=shards)
    # the engine's view of a product that is no activation still refuses an SAE site
    res = m.adapter.resolve(site)
    with pytest.raises(cs.SiteError, match="mean nothing"):
        Engine._view(torch.zeros(1, 6, 64), site, res)


def test_plain_sites_as_before(m):
    """A plain-site call against grad . (a_clean - a_corrupted) summed over each site's selection, by plain hooks."""
    sites = ["layers.0", cs.Site("layers.1.mlp", positions=[2, 4]), cs.Site("layers.1", neurons=[3, 5])]
    r = cs.attribution_patching(m, CLEAN, CORRUPT, sites, cs.logit(ANSWER), direction="both")
    assert r.dims == ("direction", "site") and r.coords["site"] == ["layers.0", "layers.1.mlp[pos=2,4]",
                                                                    "layers.1[neurons=3,5]"]
    blocks = m.module.transformer.h
    picks = [(blocks[0], lambda a: a), (blocks[1].mlp, lambda a: a[[2, 4]]), (blocks[1], lambda a: a[:, [3, 5]])]
    s = span(m, CLEAN, CORRUPT)
    for j, (module, pick) in enumerate(picks):
        for direction in ("denoise", "noise"):
            total = 0.0
            for c, k in zip(CLEAN, CORRUPT):
                diff = capture(m, c, module, "output") - capture(m, k, module, "output")
                kept = {}

                def leaf(x):
                    kept["a"] = x.detach().clone().requires_grad_(True)
                    return kept["a"]
                h = hook(module, "output", leaf)
                try:
                    out = m.module(input_ids=tokens(m, k if direction == "denoise" else c)).logits[0, -1, ANSWER]
                finally:
                    h.remove()
                (g,) = torch.autograd.grad(out, kept["a"])
                total += float(pick(g[0] * diff).sum()) / len(CLEAN)
            assert abs(float(r.sel(direction=direction).values[j]) * s - total) < 1e-5 * max(1.0, abs(total))
    one = cs.attribution_patching(m, CLEAN, CORRUPT, cs.Site("layers.0"), cs.logit(ANSWER), direction="both")
    torch.testing.assert_close(one.values[:, 0], r.values[:, 0])  # one site alone, as in the list
    grid = cs.attribution_patching(m, CLEAN, CORRUPT, "resid_pre", cs.logit(ANSWER))
    assert grid.dims == ("direction", "layer", "position") and grid.shape == (1, 4, 6)


class _SAELensStyleTranscoder:
    """What a SAELens transcoder shows causalscope: encode, W_dec and a config with d_in and hook_name_out, but no
    is_transcoder flag."""

    def __init__(self, tc: Transcoder) -> None:
        from types import SimpleNamespace

        self._tc, self.W_dec = tc, tc.W_dec
        self.cfg = SimpleNamespace(d_in=tc.d_in, d_sae=tc.W_dec.shape[0], hook_name="blocks.0.ln2.hook_normalized",
                                   hook_name_out="blocks.0.hook_mlp_out")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._tc.encode(x)


def test_a_transcoder_known_only_by_its_config_is_attributed_where_it_writes(m, tc):
    """A SAELens transcoder (no is_transcoder flag) takes the gradient at the MLP's output, where it writes, in both
    feature_attribution and attribution_patching; reference: the naive plain-hook loop (read the MLP input, write
    its output). Taking it at the input, as for an SAE, would give other numbers silently."""
    lens_style = _SAELensStyleTranscoder(tc)
    assert not hasattr(lens_style, "is_transcoder")
    feats = [1, 4, 9, 33]
    site = cs.Site("layers.0.mlp", sae=lens_style, features=feats, positions=[2, -1])
    r = cs.attribution_patching(m, CLEAN, CORRUPT, [site], cs.logit(ANSWER), direction="denoise")
    fa = feature_attribution(m, CLEAN, CORRUPT, site, cs.logit(ANSWER))
    want = naive(m, m.module.transformer.h[0].mlp, "input", "output", tc, feats, CLEAN, CORRUPT)["denoise"]
    w = want[r.coords["position"]]
    assert w.abs().max() > 1e-4
    s = span(m, CLEAN, CORRUPT)
    torch.testing.assert_close(r.sel(direction="denoise", site=site.name).values.double() * s, w, rtol=1e-5,
                               atol=1e-7 * float(w.abs().max()))
    torch.testing.assert_close(fa.values.double(), w, rtol=1e-5, atol=1e-7 * float(w.abs().max()))
