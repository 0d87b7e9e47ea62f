"""attribution_patching equals the exact linearisation of activation patching, computed here with
torch.func.jvp through a plain hook: for a cell with selection S,
    f(alpha) = mean over prompts of metric(base run with act[S] = a_base[S] + alpha * (a_source[S] - a_base[S]))
and the estimate is f'(0) (denoise: base = corrupted, source = clean; noise: base = clean, source = corrupted,
score = (m_clean - (m_clean + f'(0))) / span). On a model that is linear downstream of the site it equals exact
patching. Plus disagreement / agreement, and the model-unchanged contract (no parameter .grad)."""
from __future__ import annotations

import functools
import itertools
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import causalscope as cs
from causalscope.zoo import build_mlp, build_tiny_lm

CLEAN = ["the old king saw a river near the city", "a big red car ran by the house near"]
CORRUPTED = ["the old dog saw a river near the city", "a big red cat ran by the house near"]
CORRECT, WRONG = [25, 26], [65, 33]  # |m_clean - m_corr| > 2 on the init_std=0.3 models


@functools.cache
def _lm(arch: str):
    return build_tiny_lm(arch, init_std=0.3)


def sharp(arch: str = "gpt2") -> cs.Model:
    return cs.load(*_lm(arch), name=f"sharp-{arch}")


def ids(m: cs.Model):
    clean, corr = m.adapter.tokenize(CLEAN), m.adapter.tokenize(CORRUPTED)
    assert (clean != corr).nonzero().tolist() == [[0, 2], [1, 3]]
    return clean, corr


def ref_logit_diff(logits: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(logits.shape[0])
    return logits[rows, -1, torch.tensor(CORRECT)] - logits[rows, -1, torch.tensor(WRONG)]


from plain_hooks import hook  # noqa: E402  (plain torch hooks for the naive reference)


class Linearised:
    """f'(0) by forward-mode AD (torch.func.jvp) through one plain hook; one jvp per cell."""

    def __init__(self, model: nn.Module, forward, metric, clean, corrupted):
        self.model, self.forward, self.metric = model, forward, metric
        self.inputs = {"clean": clean, "corrupted": corrupted}
        with torch.no_grad():
            self.m_clean = float(metric(forward(clean)).double().mean())
            self.m_corr = float(metric(forward(corrupted)).double().mean())
        self.span = self.m_clean - self.m_corr
        self._cache: dict = {}

    def capture(self, which: str, path: str, io: str) -> torch.Tensor:
        if (which, path, io) not in self._cache:
            self._cache[which, path, io] = self._capture(self.inputs[which], path, io)
        return self._cache[which, path, io]

    def _capture(self, inp, path, io):
        box = {}

        def keep(x):
            box["x"] = x.detach().clone()
        h = hook(self.model.get_submodule(path), io, keep)
        try:
            with torch.no_grad():
                self.forward(inp)
        finally:
            h.remove()
        return box["x"]

    def derivative(self, direction: str, path: str, io: str, idx) -> float:
        base, source = ("corrupted", "clean") if direction == "denoise" else ("clean", "corrupted")
        a_base, a_src = self.capture(base, path, io), self.capture(source, path, io)
        mask = torch.zeros_like(a_base, dtype=torch.bool)
        mask[idx] = True
        module = self.model.get_submodule(path)

        def f(alpha):
            h = hook(module, io, lambda x: torch.where(mask, a_base + alpha * (a_src - a_base), x))
            try:
                return self.metric(self.forward(self.inputs[base])).mean()
            finally:
                h.remove()
        # the flash SDPA kernel has no forward-mode derivative; the math kernel computes the same attention
        with sdpa_kernel(SDPBackend.MATH):
            value, tangent = torch.func.jvp(f, (torch.tensor(0.0),), (torch.tensor(1.0),))
        base_metric = self.m_corr if direction == "denoise" else self.m_clean
        assert float(value.detach()) == pytest.approx(base_metric, abs=1e-4)  # alpha = 0 is the base run
        return float(tangent.detach())

    def score(self, direction: str, path: str, io: str, idx) -> float:
        """What attribution patching estimates, normalised like activation patching."""
        d = self.derivative(direction, path, io, idx)
        approx = (self.m_corr if direction == "denoise" else self.m_clean) + d
        return (approx - self.m_corr) / self.span if direction == "denoise" else (self.m_clean - approx) / self.span


def check(got: torch.Tensor, want, rel=1e-4):
    want = torch.as_tensor(want, dtype=torch.float64)
    torch.testing.assert_close(got.double(), want, rtol=rel, atol=rel * float(want.abs().max()))


# ---------------------------------------------------------------------------------------------------------
# 1: the estimate is the exact linearisation
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,sweep", [("gpt2", "resid_pre"), ("gpt2", "heads"), ("llama", "heads")])
def test_lm_estimate_equals_jvp(arch, sweep):
    m = sharp(arch)
    clean, corr = ids(m)
    al = m.adapter.aliases()
    atp = cs.attribution_patching(m, clean, corr, sweep, cs.logit_diff(CORRECT, WRONG), direction="both")
    ref = Linearised(m.module, lambda x: m.module(input_ids=x).logits, ref_logit_diff, clean, corr)
    assert abs(ref.span) > 2
    assert atp.meta["clean_metric"] == pytest.approx(ref.m_clean, abs=1e-5)
    assert atp.meta["corrupted_metric"] == pytest.approx(ref.m_corr, abs=1e-5)
    if sweep == "resid_pre":
        assert atp.dims == ("direction", "layer", "position") and atp.shape == (2, 4, 9)
        cells = [(l, t) for l in (0, 2, 3) for t in range(2, 9)]  # positions < 2 are identical: tested below

        def where(l, t):
            return al[f"layers.{l}"][0], "input", (slice(None), t)
        assert torch.equal(atp.values[:, :, :2], torch.zeros(2, 4, 2))  # no difference at positions 0, 1
    else:
        assert atp.dims == ("direction", "layer", "head") and atp.shape == (2, 4, 4)
        cells = list(itertools.product(range(4), range(4)))

        def where(l, h):
            return al[f"layers.{l}.attn.z"][0], "input", (slice(None), slice(None), slice(16 * h, 16 * h + 16))
    for k, direction in enumerate(["denoise", "noise"]):
        want = [ref.score(direction, *where(a, b)) for a, b in cells]
        got = torch.stack([atp.values[k, a, b] for a, b in cells])
        check(got, want)
        # raw = the base metric plus the first-order change
        raw = torch.tensor(atp.meta["raw"])[k]
        got_raw = torch.stack([raw[a, b] for a, b in cells])
        shift = [ref.derivative(direction, *where(a, b)) for a, b in cells[:4]]
        base = ref.m_corr if direction == "denoise" else ref.m_clean
        check(got_raw[:4] - base, shift)
    assert atp.values.abs().max() > 0.05


def test_mlp_estimate_equals_jvp():
    model = build_mlp()
    g = torch.Generator().manual_seed(4)
    x, v = torch.randn(4, 16, generator=g), torch.randn(16, generator=g)
    clean, corr = x + 2 * v, x - 2 * v
    sites = ["net.0", "net.1", cs.Site("net.2", neurons=[0, 5, 9]), cs.Site("net.3", io="input", neurons=3), "net.4"]
    metric = lambda y: y[:, 0] - 2 * y[:, 3]  # noqa: E731
    atp = cs.attribution_patching(model, clean, corr, sites, metric, direction="both")
    ref = Linearised(model, model, metric, clean, corr)
    refs = [("net.0", "output", (...,)), ("net.1", "output", (...,)), ("net.2", "output", (slice(None), [0, 5, 9])),
            ("net.3", "input", (slice(None), 3)), ("net.4", "output", (...,))]
    for k, direction in enumerate(["denoise", "noise"]):
        check(atp.values[k], [ref.score(direction, *r) for r in refs])
    # the output site is the metric itself, a linear function of it: the estimate is exact, 1 in both directions
    torch.testing.assert_close(atp.values[:, -1], torch.ones(2), atol=1e-5, rtol=0)

    per = cs.attribution_patching(model, clean, corr, "net.2", metric, per="neuron", direction="noise")
    check(per.values[0], [ref.score("noise", "net.2", "output", (slice(None), n)) for n in range(32)])


def test_default_direction_is_denoise_only():
    m = sharp()
    clean, corr = ids(m)
    atp = cs.attribution_patching(m, clean, corr, ["layers.1.mlp"], cs.logit_diff(CORRECT, WRONG))
    assert atp.coords["direction"] == ["denoise"]
    with pytest.raises(ValueError, match="no 'noise' direction"):
        atp.noise


# ---------------------------------------------------------------------------------------------------------
# 2: a model linear downstream of the site: estimate == exact patching
# ---------------------------------------------------------------------------------------------------------
def _linear_net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(12, 24), nn.Linear(24, 16), nn.Linear(16, 1)).eval()


@pytest.mark.parametrize("sites,per", [
    (["0", "1", cs.Site("1", neurons=[2, 7]), cs.Site("2", io="input", neurons=[0, 3, 15]), "2"], None),
    ("0", "neuron"),
])
def test_linear_model_estimate_equals_exact_patching(sites, per):
    model = _linear_net()
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(5, 12, generator=g), torch.randn(12, generator=g)
    clean, corr = x + v, x - v
    atp = cs.attribution_patching(model, clean, corr, sites, per=per, direction="both")
    exact = cs.activation_patching(model, clean, corr, sites, per=per, direction="both")
    assert atp.dims == exact.dims and atp.coords == exact.coords
    assert exact.values.abs().max() > 0.01
    torch.testing.assert_close(atp.values, exact.values, atol=1e-5, rtol=0)
    torch.testing.assert_close(atp.raw.values, exact.raw.values, atol=1e-5, rtol=0)
    if per is None:  # everything passes through each full layer: 1 in both directions
        torch.testing.assert_close(atp.values[:, [0, 1, 4]], torch.ones(2, 3), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# 3: disagreement and agreement
# ---------------------------------------------------------------------------------------------------------
@functools.cache
def _pair():
    m = sharp()
    clean, corr = ids(m)
    metric = cs.logit_diff(CORRECT, WRONG)
    return (cs.attribution_patching(m, clean, corr, "resid_pre", metric, direction="both"),
            cs.activation_patching(m, clean, corr, "resid_pre", metric, direction="both"))


def test_disagreement_sorted_with_correct_numbers():
    atp, exact = _pair()
    rows = atp.disagreement(exact, k=6)
    assert len(rows) == 12
    for k, direction in enumerate(["denoise", "noise"]):
        mine = [r for r in rows if r["direction"] == direction]
        assert len(mine) == 6
        diff = atp.values[k] - exact.values[k]
        want = diff.flatten().abs().sort(descending=True).values[:6]
        assert [abs(r["error"]) for r in mine] == pytest.approx(want.tolist(), abs=1e-7)
        for r in mine:
            l, t = map(int, re.fullmatch(r"layer=(\d+), position=(\d+)", r["cell"]).groups())
            assert r["estimate"] == pytest.approx(float(atp.values[k, l, t]), abs=1e-7)
            assert r["exact"] == pytest.approx(float(exact.values[k, l, t]), abs=1e-7)
            assert r["error"] == pytest.approx(r["estimate"] - r["exact"], abs=1e-6)
        assert abs(mine[0]["error"]) == pytest.approx(float(diff.abs().max()), abs=1e-7)
    assert len(atp.disagreement(exact)) == 20  # k=10 per direction by default


def test_disagreement_shape_mismatch():
    atp, exact = _pair()
    m = sharp()
    clean, corr = ids(m)
    heads = cs.activation_patching(m, clean, corr, "heads", cs.logit_diff(CORRECT, WRONG))
    with pytest.raises(cs.InputError, match="same sweep"):
        atp.disagreement(heads)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank (the definition of Spearman's rho with ties)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def test_agreement_pearson_and_spearman():
    atp, exact = _pair()
    got = atp.agreement(exact)
    assert set(got) == {"denoise pearson", "denoise spearman", "noise pearson", "noise spearman"}
    for k, direction in enumerate(["denoise", "noise"]):
        a, e = atp.values[k].flatten().double().numpy(), exact.values[k].flatten().double().numpy()
        assert -1 <= got[f"{direction} pearson"] <= 1 and -1 <= got[f"{direction} spearman"] <= 1
        assert got[f"{direction} pearson"] == pytest.approx(np.corrcoef(a, e)[0, 1], abs=1e-9)
    for k, direction in enumerate(["denoise", "noise"]):
        a, e = atp.values[k].flatten().double().numpy(), exact.values[k].flatten().double().numpy()
        # the positions before the first difference give tied scores (0) in both: Spearman uses average ranks
        want = np.corrcoef(_average_ranks(a), _average_ranks(e))[0, 1]
        assert got[f"{direction} spearman"] == pytest.approx(want, abs=1e-9)


def test_agreement_spearman_with_ties_small():
    """Exact ties, where ordinal ranks and average ranks differ: a = [0, 0, 1], e = [1, 0, 2]."""
    a = cs.LabelledArray(torch.tensor([[0.0, 0.0, 1.0]]), ("direction", "site"),
                         {"direction": ["denoise"], "site": ["a", "b", "c"]}, {})
    e = cs.LabelledArray(torch.tensor([[1.0, 0.0, 2.0]]), ("direction", "site"),
                         {"direction": ["denoise"], "site": ["a", "b", "c"]}, {})
    atp = cs.AttributionPatchingResult(a.values, a.dims, a.coords, {}, "x")
    got = atp.agreement(cs.PatchingResult.from_array(e))["denoise spearman"]
    # average ranks: a -> [0.5, 0.5, 2], e -> [1, 0, 2]: rho = 0.866; ordinal ranks would give 1.0 or 0.5
    assert got == pytest.approx(np.corrcoef([0.5, 0.5, 2], [1, 0, 2])[0, 1], abs=1e-9)


def test_plot_against():
    from matplotlib.figure import Figure

    atp, exact = _pair()
    fig = atp.plot_against(exact)
    assert isinstance(fig, Figure) and [a.get_title() for a in fig.axes] == ["denoise", "noise"]
    pts = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(pts[:, 0], exact.values[0].flatten().numpy(), atol=1e-6)
    np.testing.assert_allclose(pts[:, 1], atp.values[0].flatten().numpy(), atol=1e-6)
    assert len(atp.plot_against(exact, backend="plotly").data) == 2


# ---------------------------------------------------------------------------------------------------------
# 4: the model is unchanged, no parameter gradients
# ---------------------------------------------------------------------------------------------------------
def _state(model: nn.Module):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {n: mod.training for n, mod in model.named_modules()},
            {n: (p.requires_grad, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()})


def _assert_unchanged(model: nn.Module, state):
    params, flags, grads = state
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in params.items())
    assert {n: mod.training for n, mod in model.named_modules()} == flags
    for n, p in model.named_parameters():
        req, grad = grads[n]
        assert p.requires_grad == req, n
        assert (p.grad is None) if grad is None else torch.equal(p.grad, grad), f".grad of {n} changed"
    for n, mod in model.named_modules():
        assert not (mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks
                    or mod._backward_pre_hooks), f"hook left on {n!r}"
    assert torch.is_grad_enabled()


def test_lm_unchanged_and_no_parameter_grads():
    model, tok = build_tiny_lm("gpt2", init_std=0.3)
    model.train()
    model.transformer.h[2].eval()
    model.transformer.h[1].mlp.c_fc.weight.requires_grad_(False)
    state = _state(model)
    m = cs.load(model, tok)
    clean, corr = ids(m)
    cs.attribution_patching(m, clean, corr, "resid_pre", cs.logit_diff(CORRECT, WRONG), direction="both")
    cs.attribution_patching(m, clean, corr, "heads", lambda y: y[:, 3, 39] - y[:, -1, 20], direction="noise")
    _assert_unchanged(model, state)
    assert all(p.grad is None for p in model.parameters())


def test_mlp_unchanged_existing_grad_kept_and_on_error():
    model = build_mlp().train()
    model.net[0].weight.grad = torch.full_like(model.net[0].weight, 0.5)
    state = _state(model)
    g = torch.Generator().manual_seed(4)
    clean, corr = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    cs.attribution_patching(model, clean, corr, ["net.0", "net.2"], lambda y: y[:, 0], direction="both")
    _assert_unchanged(model, state)
    calls = []

    def failing(y):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("metric failed on purpose")
        return y[:, 0]
    with pytest.raises(RuntimeError, match="on purpose"):
        cs.attribution_patching(model, clean, corr, ["net.0", "net.2"], failing, direction="both")
    _assert_unchanged(model, state)


def test_bad_inputs():
    m = sharp()
    clean, corr = ids(m)
    metric = cs.logit_diff(CORRECT, WRONG)
    with pytest.raises(cs.InputError, match="direction"):
        cs.attribution_patching(m, clean, corr, "resid_pre", metric, direction="forward")
    with pytest.raises(cs.InputError, match="same shape"):
        cs.attribution_patching(m, clean, corr[:, :7], "resid_pre", metric)
    with pytest.raises(cs.InputError, match="same on the clean and corrupted"):
        cs.attribution_patching(m, clean, corr, "resid_pre", lambda y: y[:, 1, 5])
    with pytest.raises(cs.SiteError, match="Unknown site"):
        cs.attribution_patching(m, clean, corr, ["layers.1.mlpp"], metric)
