"""activation_patching equals a naive loop: one forward per cell, plain torch hooks, the source run's activation
written into the base run at the cell's selection. Also TransformerLens's own patching functions, the cost
of the staircase schedule in closed form, the model-unchanged contract, input errors and the result object."""
from __future__ import annotations

import functools
import itertools

import pytest
import torch
from torch import nn

import causalscope as cs
from causalscope.core import STEP_OVER_TOKEN_LAYER, TOKEN_LAYER_EXPONENT, segmented
from causalscope.zoo import build_mlp, build_tiny_lm

# two pairs of equal length; pair 0 differs at position 2 only, pair 1 at position 3 only (never the first token)
CLEAN = ["the old king saw a river near the city", "a big red car ran by the house near"]
CORRUPTED = ["the old dog saw a river near the city", "a big red cat ran by the house near"]
CORRECT, WRONG = [25, 26], [65, 33]  # per-prompt answer tokens; chosen so that |m_clean - m_corr| > 2 on all
# three models: scores (raw / span) are then no more sensitive to float32 rounding than the raw values


@functools.cache
def _lm(arch: str) -> tuple[nn.Module, object]:
    return build_tiny_lm(arch, init_std=0.3)


def sharp(arch: str) -> cs.Model:
    model, tok = _lm(arch)
    return cs.load(model, tok, name=f"sharp-{arch}")


def ids(m: cs.Model) -> tuple[torch.Tensor, torch.Tensor]:
    clean, corr = m.adapter.tokenize(CLEAN), m.adapter.tokenize(CORRUPTED)
    assert clean.shape == corr.shape == (2, 9)
    diff = (clean != corr).nonzero().tolist()
    assert diff == [[0, 2], [1, 3]], diff  # one token per pair, not the first
    return clean, corr


def ref_logit_diff(logits: torch.Tensor) -> torch.Tensor:
    """Logit of the right answer minus the wrong one at the last position, one answer pair per prompt."""
    rows = torch.arange(logits.shape[0])
    return logits[rows, -1, torch.tensor(CORRECT)] - logits[rows, -1, torch.tensor(WRONG)]


def other_positions(y: torch.Tensor) -> torch.Tensor:
    """A metric that reads positions other than the last (3 > first difference, and 1 < it)."""
    return y[:, 3, 39] - y[:, -1, 20] + 0.5 * y[:, 1, 2]


# ---------------------------------------------------------------------------------------------------------
# the naive reference
# ---------------------------------------------------------------------------------------------------------
from plain_hooks import hook  # noqa: E402  (plain torch hooks for the naive reference)


class Naive:
    """One forward per cell with plain hooks. ``forward(inp)`` returns the model's output tensor."""

    def __init__(self, model: nn.Module, forward, metric, clean, corrupted):
        self.model, self.forward, self.metric = model, forward, metric
        self.clean, self.corrupted = clean, corrupted
        self.m_clean, self.m_corr = self.value(clean), self.value(corrupted)
        # scores divide by the span: a span much smaller than the values would amplify float32 rounding
        assert abs(self.m_clean - self.m_corr) > 0.25 * max(abs(self.m_clean), abs(self.m_corr), 0.1)

    def value(self, inp, path: str | None = None, io: str = "output", edit=None) -> float:
        h = hook(self.model.get_submodule(path), io, edit) if path is not None else None
        try:
            with torch.no_grad():
                return float(self.metric(self.forward(inp)).double().mean())
        finally:
            if h is not None:
                h.remove()

    def capture(self, inp, path: str, io: str) -> torch.Tensor:
        box = {}

        def keep(x):
            box["x"] = x.detach().clone()
        self.value(inp, path, io, keep)
        return box["x"]

    def patched(self, direction: str, path: str, io: str, idx) -> float:
        """The metric of the base run with the source run's activation written at ``idx``."""
        base, source = (self.corrupted, self.clean) if direction == "denoise" else (self.clean, self.corrupted)
        src = self.capture(source, path, io)

        def write(x):
            y = x.clone()
            y[idx] = src[idx]
            return y
        return self.value(base, path, io, write)

    def cell(self, direction: str, path: str, io: str, idx) -> tuple[float, float]:
        """(raw, score) of one cell."""
        v = self.patched(direction, path, io, idx)
        span = self.m_clean - self.m_corr
        return v, ((v - self.m_corr) / span if direction == "denoise" else (self.m_clean - v) / span)


def naive_lm(m: cs.Model, metric, clean, corrupted) -> Naive:
    return Naive(m.module, lambda x: m.module(input_ids=x).logits, metric, clean, corrupted)


def heads_idx(width: int, n_heads: int, h: int, pos=slice(None)):
    dh = width // n_heads
    return (slice(None), pos, slice(h * dh, (h + 1) * dh))


def grid_cell(m: cs.Model, sweep: str, a: int, b: int) -> tuple[str, str, tuple]:
    """(module path, io, index) of cell (layer a, position-or-head b) of a sweep, from the adapter's aliases."""
    al = m.adapter.aliases()
    if sweep == "heads":
        path, io, n = al[f"layers.{a}.attn.z"]
        return path, io, heads_idx(64, n, b)  # d_model = n_heads * d_head = 64
    name = {"resid_pre": f"layers.{a}", "resid_post": f"layers.{a}", "attn": f"layers.{a}.attn",
            "mlp": f"layers.{a}.mlp"}[sweep]
    path, io, _ = al[name]
    return path, ("input" if sweep == "resid_pre" else io), (slice(None), b)


def naive_grid(m: cs.Model, naive: Naive, sweep: str, dirs, n_b: int):
    L = m.n_layers
    raw = torch.zeros(len(dirs), L, n_b, dtype=torch.float64)
    score = torch.zeros_like(raw)
    for k, d in enumerate(dirs):
        for a, b in itertools.product(range(L), range(n_b)):
            raw[k, a, b], score[k, a, b] = naive.cell(d, *grid_cell(m, sweep, a, b))
    return raw, score


def close(got, want, atol=1e-5):
    got = got.values if isinstance(got, cs.LabelledArray) else got
    torch.testing.assert_close(got.double(), torch.as_tensor(want).double(), atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# 1, 2: sweeps on Hugging Face LMs equal the naive loop
# ---------------------------------------------------------------------------------------------------------
ALIASES = {  # docs/sites.md: the module each canonical name maps to
    "gpt2": ("transformer.h.1", "transformer.h.1.attn", "transformer.h.1.mlp", "transformer.h.1.attn.c_proj"),
    "gpt_neox": ("gpt_neox.layers.1", "gpt_neox.layers.1.attention", "gpt_neox.layers.1.mlp",
                 "gpt_neox.layers.1.attention.dense"),
    "llama": ("model.layers.1", "model.layers.1.self_attn", "model.layers.1.mlp", "model.layers.1.self_attn.o_proj"),
}


@pytest.mark.parametrize("arch", list(ALIASES))
def test_aliases_used_by_the_reference(arch):
    al = sharp(arch).adapter.aliases()
    got = tuple(al[n][0] for n in ("layers.1", "layers.1.attn", "layers.1.mlp", "layers.1.attn.z"))
    assert got == ALIASES[arch]
    assert al["layers.1.attn.z"][1:] == ("input", 4)


SWEEPS = [("gpt2", s) for s in ("resid_pre", "resid_post", "attn", "mlp", "heads")] + \
         [(a, s) for a in ("gpt_neox", "llama") for s in ("resid_pre", "heads")]


@pytest.mark.parametrize("arch,sweep", SWEEPS)
def test_sweep_equals_naive_loop(arch, sweep):
    m = sharp(arch)
    clean, corr = ids(m)
    r = cs.activation_patching(m, clean, corr, sweep, cs.logit_diff(CORRECT, WRONG))
    L, T = 4, clean.shape[1]
    n_b = 4 if sweep == "heads" else T
    second = "head" if sweep == "heads" else "position"
    assert r.dims == ("direction", "layer", second)
    assert r.coords == {"direction": ["denoise", "noise"], "layer": list(range(L)), second: list(range(n_b))}
    naive = naive_lm(m, ref_logit_diff, clean, corr)
    raw, score = naive_grid(m, naive, sweep, ["denoise", "noise"], n_b)
    assert r.meta["clean_metric"] == pytest.approx(naive.m_clean, abs=1e-5)
    assert r.meta["corrupted_metric"] == pytest.approx(naive.m_corr, abs=1e-5)
    close(r, score)
    close(r.raw, raw)
    close(r.denoise, score[0])
    close(r.noise, score[1])
    close(r.asymmetry, score[1] - score[0])
    assert score.abs().max() > 0.05  # the reference is not trivially zero


@pytest.mark.parametrize("arch,sweep", [("gpt2", "resid_pre"), ("gpt2", "mlp"), ("llama", "resid_post"),
                                        ("gpt_neox", "heads")])
def test_metric_reading_other_positions_equals_naive_loop(arch, sweep):
    m = sharp(arch)
    clean, corr = ids(m)
    direction = "denoise" if sweep == "heads" else "both"
    dirs = ["denoise"] if direction == "denoise" else ["denoise", "noise"]
    r = cs.activation_patching(m, clean, corr, sweep, lambda y: y[:, 3, 39] - y[:, -1, 20] + 0.5 * y[:, 1, 2],
                               direction=direction)
    naive = naive_lm(m, other_positions, clean, corr)
    raw, score = naive_grid(m, naive, sweep, dirs, 4 if sweep == "heads" else clean.shape[1])
    close(r.raw, raw)
    close(r, score)


def test_positions_argument_restricts_the_sweep():
    m = sharp("gpt2")
    clean, corr = ids(m)
    r = cs.activation_patching(m, clean, corr, "attn", cs.logit_diff(CORRECT, WRONG), positions=[-1, 3, 0],
                               direction="noise")
    assert r.coords["position"] == [8, 3, 0]
    naive = naive_lm(m, ref_logit_diff, clean, corr)
    want = [[naive.cell("noise", *grid_cell(m, "attn", a, t))[1] for t in (8, 3, 0)] for a in range(4)]
    close(r.values[0], want)


# ---------------------------------------------------------------------------------------------------------
# 3: TransformerLens's own activation patching
# ---------------------------------------------------------------------------------------------------------
def test_transformer_lens_resid_pre_equals_get_act_patch_resid_pre():
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.patching import get_act_patch_resid_pre

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=50,
                                  act_fn="gelu", seed=0)
    model = HookedTransformer(cfg).eval()
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 50, (2, 7), generator=g)
    corr = clean.clone()
    corr[0, 2] = (clean[0, 2] + 1) % 50
    corr[1, 4] = (clean[1, 4] + 7) % 50
    metric = cs.logit_diff([5, 7], [9, 3])

    def patching_metric(logits):
        return metric(logits).mean()

    r = cs.activation_patching(model, clean, corr, "resid_pre", metric, direction="both")
    assert r.dims == ("direction", "layer", "position") and r.shape == (2, 2, 7)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        _, corr_cache = model.run_with_cache(corr)
        denoise = get_act_patch_resid_pre(model, corr, clean_cache, patching_metric)
        noise = get_act_patch_resid_pre(model, clean, corr_cache, patching_metric)
    close(r.raw.sel(direction="denoise"), denoise)
    close(r.raw.sel(direction="noise"), noise)
    with torch.no_grad():
        m_clean, m_corr = float(patching_metric(model(clean))), float(patching_metric(model(corr)))
    close(r.denoise, (denoise - m_corr) / (m_clean - m_corr))
    close(r.noise, (m_clean - noise) / (m_clean - m_corr))
    assert (denoise - m_corr).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------
# 4: lists of sites and single-site sweeps
# ---------------------------------------------------------------------------------------------------------
def test_list_of_sites_equals_naive_loop():
    m = sharp("gpt2")
    clean, corr = ids(m)
    al = m.adapter.aliases()
    sites = ["layers.0.mlp", cs.Site("layers.2.attn.z", heads=1), cs.Site("layers.1.attn", positions=[3, 5]),
             cs.Site("layers.3", io="input", positions=-1), cs.Site("layers.2.mlp", neurons=[1, 17, 40]),
             "transformer.h.0.ln_1"]
    r = cs.activation_patching(m, clean, corr, sites, cs.logit_diff(CORRECT, WRONG))
    assert r.dims == ("direction", "site") and r.shape == (2, len(sites))
    assert r.coords["site"] == ["layers.0.mlp", "layers.2.attn.z[heads=1]", "layers.1.attn[pos=3,5]",
                                "layers.3[input, pos=-1]", "layers.2.mlp[neurons=1,17,40]", "transformer.h.0.ln_1"]
    refs = [(al["layers.0.mlp"][0], "output", (...,)),
            (al["layers.2.attn.z"][0], "input", heads_idx(64, 4, 1)),
            (al["layers.1.attn"][0], "output", (slice(None), [3, 5])),
            (al["layers.3"][0], "input", (slice(None), -1)),
            (al["layers.2.mlp"][0], "output", (slice(None), slice(None), [1, 17, 40])),
            ("transformer.h.0.ln_1", "output", (...,))]
    naive = naive_lm(m, ref_logit_diff, clean, corr)
    for k, d in enumerate(["denoise", "noise"]):
        got = [naive.cell(d, *ref) for ref in refs]
        close(r.raw.values[k], [v for v, _ in got])
        close(r.values[k], [s for _, s in got])


def test_whole_block_output_restores_everything():
    m = sharp("gpt2")
    clean, corr = ids(m)
    r = cs.activation_patching(m, clean, corr, ["layers.1", "layers.3"], cs.logit_diff(CORRECT, WRONG))
    assert torch.equal(r.values, torch.ones(2, 2)), r.values
    close(r.raw.values[0], [r.meta["clean_metric"]] * 2)
    close(r.raw.values[1], [r.meta["corrupted_metric"]] * 2)


@pytest.mark.parametrize("site,per,refs", [
    (cs.Site("layers.1.mlp", positions=-1), "neuron",
     lambda al: [(al["layers.1.mlp"][0], "output", (slice(None), -1, n)) for n in range(64)]),
    (cs.Site("layers.0.attn.z", positions=[4], heads=2), "neuron",
     lambda al: [(al["layers.0.attn.z"][0], "input", (slice(None), 4, 32 + n)) for n in range(16)]),
    ("layers.2.attn", "position",
     lambda al: [(al["layers.2.attn"][0], "output", (slice(None), t)) for t in range(9)]),
    (cs.Site("layers.2", io="input"), "position",
     lambda al: [(al["layers.2"][0], "input", (slice(None), t)) for t in range(9)]),
    ("layers.1.attn.z", "head",
     lambda al: [(al["layers.1.attn.z"][0], "input", heads_idx(64, 4, h)) for h in range(4)]),
])
def test_single_site_sweep_equals_naive_loop(site, per, refs):
    m = sharp("gpt2")
    clean, corr = ids(m)
    r = cs.activation_patching(m, clean, corr, site, cs.logit_diff(CORRECT, WRONG), per=per)
    cells = refs(m.adapter.aliases())
    assert r.dims == ("direction", per) and r.coords[per] == list(range(len(cells)))
    naive = naive_lm(m, ref_logit_diff, clean, corr)
    for k, d in enumerate(["denoise", "noise"]):
        got = [naive.cell(d, *ref) for ref in cells]
        close(r.raw.values[k], [v for v, _ in got])
        close(r.values[k], [s for _, s in got])


# ---------------------------------------------------------------------------------------------------------
# 5: a plain nn.Module
# ---------------------------------------------------------------------------------------------------------
def _mlp_inputs(n=4, width=16):
    """Pairs that differ along one shared direction, so the metric moves the same way for every pair."""
    g = torch.Generator().manual_seed(4)
    x, v = torch.randn(n, width, generator=g), torch.randn(width, generator=g)
    return x + 2 * v, x - 2 * v


@pytest.mark.parametrize("sizes,metric", [((16, 32, 32, 1), None),
                                          ((16, 32, 32, 4), lambda y: y[:, 0] - 2 * y[:, 3])])
def test_plain_module_equals_naive_loop(sizes, metric):
    model = build_mlp(sizes=sizes)
    clean, corr = _mlp_inputs()
    sites = ["net.0", "net.1", cs.Site("net.2", neurons=[0, 5, 9]), cs.Site("net.3", io="input", neurons=3), "net.4"]
    r = cs.activation_patching(model, clean, corr, sites, metric)
    ref_metric = (lambda y: y[:, 0]) if metric is None else (lambda y: y[:, 0] - 2 * y[:, 3])
    naive = Naive(model, model, ref_metric, clean, corr)
    refs = [("net.0", "output", (...,)), ("net.1", "output", (...,)), ("net.2", "output", (slice(None), [0, 5, 9])),
            ("net.3", "input", (slice(None), 3)), ("net.4", "output", (...,))]
    for k, d in enumerate(["denoise", "noise"]):
        got = [naive.cell(d, *ref) for ref in refs]
        close(r.raw.values[k], [v for v, _ in got])
        close(r.values[k], [s for _, s in got])
    close(r.values[:, -1], [1.0, 1.0])  # the output itself carries everything
    assert r.meta["fast_path"] is False


def test_plain_module_per_neuron_equals_naive_loop():
    model = build_mlp()
    clean, corr = _mlp_inputs()
    r = cs.activation_patching(model, clean, corr, "net.2", lambda y: y[:, 1], per="neuron", direction="noise")
    naive = Naive(model, model, lambda y: y[:, 1], clean, corr)
    close(r.values[0], [naive.cell("noise", "net.2", "output", (slice(None), n))[1] for n in range(32)])


# ---------------------------------------------------------------------------------------------------------
# 6: cost of the staircase schedule
# ---------------------------------------------------------------------------------------------------------
def test_token_layers_closed_form():
    m = sharp("gpt2")
    clean, corr = ids(m)
    L, T, P = 4, clean.shape[1], clean.shape[0]
    d = int((clean != corr).any(0).nonzero()[0])  # first position where some pair differs
    assert d == 2
    r = cs.activation_patching(m, clean, corr, "resid_pre", cs.logit_diff(CORRECT, WRONG), schedule="floor")
    assert r.meta["fast_path"] is True and r.meta["first_difference"] == d
    starts = r.meta["schedule_costs"][0]["staircase_starts"]
    # the cells (l, t) of positions t >= d run in the staircase of the last start s <= t; its block j runs the
    # cells with layer <= j, P rows each, on the T - s positions from s
    group = {t: max(s for s in starts if s <= t) for t in range(d, T)}
    per_direction = sum((j + 1) * P * (T - group[t]) for t in range(d, T) for j in range(L))
    assert r.meta["token_layers"] == 2 * per_direction
    assert 2 * sum((j + 1) * P * (T - t) for t in range(d, T) for j in range(L)) <= r.meta["token_layers"]
    naive = 2 * (L * T) * P * (L * T)
    assert r.meta["token_layers"] < naive

    # the staircases are the cheapest contiguous grouping of positions: every grouping, priced here
    step = STEP_OVER_TOKEN_LAYER / (segmented(m.adapter).d_model / 128) ** TOKEN_LAYER_EXPONENT
    work = sum((L - l) * P for l in range(L))  # the L cells of one position

    def cost(group_starts: list[int]) -> float:
        ends = group_starts[1:] + [T]
        return sum((T - s) * work * (e - s) + L * step for s, e in zip(group_starts, ends))

    positions = list(range(d + 1, T))
    every = [[d, *(p for k, p in enumerate(positions) if mask >> k & 1)] for mask in range(2 ** len(positions))]
    assert cost(starts) == pytest.approx(min(cost(g) for g in every))

    # heads: every cell covers all positions, so one group, t = d
    h = cs.activation_patching(m, clean, corr, "heads", cs.logit_diff(CORRECT, WRONG), direction="denoise",
                               schedule="floor")
    assert h.meta["token_layers"] == sum((j + 1) * 4 * P * (T - d) for j in range(L))


# ---------------------------------------------------------------------------------------------------------
# 7: the model is unchanged
# ---------------------------------------------------------------------------------------------------------
def _state(model: nn.Module):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {n: mod.training for n, mod in model.named_modules()})


def _assert_unchanged(model: nn.Module, state):
    params, flags = state
    now = model.state_dict()
    assert now.keys() == params.keys()
    assert all(torch.equal(now[k], v) for k, v in params.items())
    assert {n: mod.training for n, mod in model.named_modules()} == flags
    for n, mod in model.named_modules():
        assert not (mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks
                    or mod._backward_pre_hooks), f"hook left on {n!r}"
    assert all(p.grad is None for p in model.parameters())


class _FailingMetric:
    """logit diff at the last position, raising on the n-th call (a metric the engine runs itself)."""

    last_only = True

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self, y):
        self.calls += 1
        if self.calls >= self.n:
            raise RuntimeError("metric failed on purpose")
        return y[:, -1, 5] - y[:, -1, 9]


@pytest.mark.parametrize("fail", [None, 3, 4])
def test_model_unchanged_lm(fail):
    model, tok = build_tiny_lm("gpt2", init_std=0.3)
    model.train()
    model.transformer.h[1].eval()  # a mixed state, to restore per module
    state = _state(model)
    m = cs.load(model, tok)
    clean, corr = ids(m)
    if fail is None:
        cs.activation_patching(m, clean, corr, "resid_pre", cs.logit_diff(CORRECT, WRONG))
        cs.activation_patching(m, clean, corr, ["layers.1", "transformer.h.0.ln_1"], lambda y: y[:, 3, 5])
    else:
        metric = _FailingMetric(fail)
        with pytest.raises(RuntimeError, match="on purpose"):
            cs.activation_patching(m, clean, corr, "heads", metric)
        assert metric.calls == fail
    _assert_unchanged(model, state)


def test_model_unchanged_plain_module_when_raising():
    model = build_mlp().train()
    state = _state(model)
    clean, corr = _mlp_inputs()
    calls = []

    def metric(y):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("metric failed on purpose")
        return y[:, 0]
    with pytest.raises(RuntimeError, match="on purpose"):
        cs.activation_patching(model, clean, corr, ["net.0", "net.2"], metric)
    _assert_unchanged(model, state)
    cs.activation_patching(model, clean, corr, ["net.0", "net.2"], lambda y: y[:, 0])
    _assert_unchanged(model, state)


# ---------------------------------------------------------------------------------------------------------
# 8: bad input
# ---------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    m = sharp("gpt2")
    clean, corr = ids(m)
    metric = cs.logit_diff(CORRECT, WRONG)
    with pytest.raises(cs.InputError, match=r"same shape.*\(2, 9\).*\(2, 8\)"):
        cs.activation_patching(m, clean, corr[:, :8], "resid_pre", metric)
    with pytest.raises(cs.InputError, match="same shape"):
        cs.activation_patching(m, "the cat sat on the mat", "the cat sat on the mat near", "resid_pre",
                               cs.logit(5))
    with pytest.raises(cs.InputError, match=r"direction.*'denoise', 'noise' or 'both'.*'sideways'"):
        cs.activation_patching(m, clean, corr, "resid_pre", metric, direction="sideways")
    with pytest.raises(cs.InputError, match=r"per must be .*'neuron'.*'neurons'"):
        cs.activation_patching(m, clean, corr, "layers.1.mlp", metric, per="neurons")
    with pytest.raises(cs.InputError, match="per= applies to a single site"):
        cs.activation_patching(m, clean, corr, "resid_pre", metric, per="neuron")
    with pytest.raises(cs.SiteError, match=r"Unknown site 'layers.1.mlpp'.*'layers.1.mlp'"):
        cs.activation_patching(m, clean, corr, ["layers.0", "layers.1.mlpp"], metric)
    with pytest.raises(cs.InputError, match="positions .* out of range"):
        cs.activation_patching(m, clean, corr, "resid_pre", metric, positions=[9])
    with pytest.raises(cs.InputError, match="metric must be a callable"):
        cs.activation_patching(m, clean, corr, "resid_pre", "logit_diff")
    # position 0 is the same token in every pair: a metric reading it cannot change
    with pytest.raises(cs.InputError, match="same on the clean and corrupted"):
        cs.activation_patching(m, clean, corr, "resid_pre", lambda y: y[:, 0, 5])


def test_unknown_sweep_name_says_what_the_sweeps_are():
    m = sharp("gpt2")
    clean, corr = ids(m)
    with pytest.raises(cs.CausalScopeError) as e:
        cs.activation_patching(m, clean, corr, "resid_mid", cs.logit_diff(CORRECT, WRONG))
    assert "resid_mid" in str(e.value)
    # a misspelt sweep is read as a module name; the message should still name the valid sweeps
    assert "resid_pre" in str(e.value), str(e.value)


def test_errors_leave_no_hooks():
    model, tok = _lm("gpt2")
    m = cs.load(model, tok)
    clean, corr = ids(m)
    state = _state(model)
    for bad in [dict(sites="resid_pre", direction="up"), dict(sites=["layers.9"]),
                dict(sites="layers.1", per="neurons")]:
        with pytest.raises(cs.CausalScopeError):
            cs.activation_patching(m, clean, corr, metric=cs.logit_diff(CORRECT, WRONG), **bad)
    _assert_unchanged(model, state)


# ---------------------------------------------------------------------------------------------------------
# 9: the result object
# ---------------------------------------------------------------------------------------------------------
@functools.cache
def _heads_result() -> cs.PatchingResult:
    m = sharp("gpt2")
    clean, corr = ids(m)
    return cs.activation_patching(m, clean, corr, "heads", cs.logit_diff(CORRECT, WRONG))


def test_plot_matplotlib_and_plotly():
    from matplotlib.figure import Figure

    r = _heads_result()
    fig = r.plot()
    assert isinstance(fig, Figure)
    titled = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in titled] == ["denoise", "noise", "asymmetry (noise - denoise)"]
    assert len(fig.axes) == 6  # 3 heatmaps + 3 colorbars
    for a, want in zip(titled, [r.denoise, r.noise, r.asymmetry]):
        img = a.get_images()[0].get_array()
        torch.testing.assert_close(torch.as_tensor(img.data, dtype=torch.float32), want.values.float())

    one = r.sel(direction=["denoise"])
    one = cs.PatchingResult.from_array(one)
    assert len([a for a in one.plot().axes if a.get_title()]) == 1

    import plotly.graph_objects as go
    pf = r.plot(backend="plotly")
    assert isinstance(pf, go.Figure) and len(pf.data) == 3
    torch.testing.assert_close(torch.as_tensor(pf.data[2].z, dtype=torch.float32), r.asymmetry.values.float())

    m = sharp("gpt2")
    clean, corr = ids(m)
    bars = cs.activation_patching(m, clean, corr, ["layers.0.mlp", "layers.2.attn"], cs.logit_diff(CORRECT, WRONG))
    assert len(bars.plot().axes) == 3  # bars: no colorbars


def test_explain_and_top():
    r = _heads_result()
    text = r.explain()
    assert "AND-like" in text and "OR-like" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("  layer=")]
    assert len(lines) == 5
    asym = r.asymmetry.values
    order = asym.flatten().abs().argsort(descending=True)[:5].tolist()
    for ln, i in zip(lines, order):
        l, h = divmod(i, 4)
        assert ln.startswith(f"  layer={l}, head={h}:")
        assert ln.endswith("(AND-like)" if asym[l, h] > 0 else "(OR-like)")
    top = r.top(3)
    assert len(top) == 6
    for name in ("denoise", "noise"):
        vals = r.sel(direction=name).values.flatten()
        want = vals.abs().argsort(descending=True)[:3]
        got = [t for t in top if t["direction"] == name]
        assert [t["score"] for t in got] == pytest.approx(vals[want].tolist())


def test_save_load_round_trip(tmp_path):
    r = _heads_result()
    path = r.save(tmp_path / "heads")
    back = cs.PatchingResult.from_array(cs.load_result(path))
    assert isinstance(back, cs.PatchingResult)
    assert back.dims == r.dims and back.coords == r.coords
    assert torch.equal(back.values, r.values)
    assert torch.equal(back.raw.values, r.raw.values)
    assert torch.equal(back.asymmetry.values, r.asymmetry.values)
    assert back.meta["token_layers"] == r.meta["token_layers"]
    with pytest.raises(ValueError, match="no 'noise' direction"):
        cs.PatchingResult.from_array(r.sel(direction=["denoise"])).noise
