"""Mediation over base / source pairs of different lengths (each pair one length) equals the per-pair computation:
the references run cs.mediation on every pair alone (and on every length group alone) and combine the per-pair
TE / NIE / NDE / IIA values by hand; the bootstrap intervals are recomputed by hand from those values with the
resampling the equal-length path uses (checked against that path first)."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs

BASE = ["the cat sat on the mat", "a dog ran", "the old king saw a river near the city", "the dog sat on the rug"]
SOURCE = ["the dog sat on the mat", "a cat ran", "the old queen saw a river near the city", "the cat sat on the rug"]
METRIC = cs.logit_diff(5, 9)
SITES = ["layers.0.mlp", cs.Site("layers.1", positions=-1), "layers.2.attn", cs.Site("layers.3", positions=0)]


def alone(m, sites, metric_of=lambda i: METRIC, positions_of=None, pairs=(BASE, SOURCE), **kw):
    """Each pair alone (pair i with metric_of(i)), per_example: its (*sweep, stat) values, on a last pair dim."""
    out = []
    for i, (b, s) in enumerate(zip(*pairs)):
        extra = {} if positions_of is None else {"positions": positions_of(m.adapter.tokenize(b).shape[1])}
        r = cs.mediation(m, ([b], [s]), sites, metric=metric_of(i), per_example=True, **kw, **extra)
        out.append(r.values[..., 0])
    return torch.stack(out, -1)


def hand_bootstrap(per_pair: torch.Tensor, n_boot: int, ci: float, seed: int) -> torch.Tensor:
    """Mean, lo, hi over the last (pair) dim: pairs resampled with the seeded generator, as one batch of P pairs."""
    P = per_pair.shape[-1]
    idx = torch.randint(P, (n_boot, P), generator=torch.Generator().manual_seed(seed))
    boot = per_pair[..., idx].mean(-1)
    lo_hi = torch.quantile(boot, torch.tensor([(1 - ci) / 2, 1 - (1 - ci) / 2]), dim=-1)
    return torch.stack([per_pair.mean(-1), lo_hi[0], lo_hi[1]], -1)


def test_a_site_list_over_ragged_pairs_equals_each_pair_alone(lm):
    e = cs.mediation(lm, (BASE, SOURCE), SITES, metric=METRIC, per_example=True, schedule="floor")
    assert e.dims == ("site", "stat", "example") and e.coords["example"] == [0, 1, 2, 3]
    assert e.meta["lengths"] == {"6": 2, "3": 1, "9": 1} and e.meta["n_pairs"] == 4 and e.meta["fast_path"]
    torch.testing.assert_close(e.values, alone(lm, SITES), atol=1e-5, rtol=0)
    r = cs.mediation(lm, (BASE, SOURCE), SITES, metric=METRIC, n_boot=50)
    assert r.dims == ("site", "stat", "value")
    torch.testing.assert_close(r.sel(value="mean").values, e.values.mean(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(e.stat("NIE").values, r.stat("NIE").values, atol=1e-6, rtol=0)


def test_each_length_group_alone_gives_its_pairs_values(gpt2):
    e = cs.mediation(gpt2, (BASE, SOURCE), SITES, metric=METRIC, per_example=True)
    for idx in ([0, 3], [1], [2]):
        g = cs.mediation(gpt2, ([BASE[i] for i in idx], [SOURCE[i] for i in idx]), SITES, metric=METRIC,
                         per_example=True)
        torch.testing.assert_close(e.values[..., idx], g.values, atol=1e-5, rtol=0)


def test_a_position_grid_aligned_at_the_end(gpt2):
    e = cs.mediation(gpt2, (BASE, SOURCE), "resid_pre", metric=METRIC, align="end", per_example=True)
    assert e.dims == ("layer", "position", "stat", "example") and e.coords["position"] == [-3, -2, -1]
    want = alone(gpt2, "resid_pre", positions_of=lambda T: [T - 3, T - 2, T - 1])
    torch.testing.assert_close(e.values, want, atol=1e-5, rtol=0)
    r = cs.mediation(gpt2, (BASE, SOURCE), "resid_pre", metric=METRIC, align="end", n_boot=40, seed=3)
    assert r.coords["position"] == [-3, -2, -1] and r.meta["align"] == "end"
    torch.testing.assert_close(r.sel(value="mean").values, want.mean(-1), atol=1e-5, rtol=0)
    assert float(r.sel(layer=2, position=-1, stat="NIE", value="mean").values) == pytest.approx(
        float(want[2, 2, 1].mean()), abs=1e-5)


def test_positions_aligned_at_the_start(gpt2):
    e = cs.mediation(gpt2, (BASE, SOURCE), "mlp", metric=METRIC, align="start", positions=[0, 2], per_example=True)
    assert e.coords["position"] == [0, 2]
    torch.testing.assert_close(e.values, alone(gpt2, "mlp", positions_of=lambda T: [0, 2]), atol=1e-5, rtol=0)
    p = cs.mediation(gpt2, (BASE, SOURCE), cs.Site("layers.1"), per="position", metric=METRIC, align="end",
                     per_example=True)
    assert p.coords["position"] == [-3, -2, -1]
    want = alone(gpt2, cs.Site("layers.1"), per="position", positions_of=lambda T: [T - 3, T - 2, T - 1])
    torch.testing.assert_close(p.values, want, atol=1e-5, rtol=0)


def test_one_answer_per_pair_reads_each_pairs_own_answer(lm):
    correct, wrong = [5, 11, 7, 2], [9, 3, 14, 6]
    e = cs.mediation(lm, (BASE, SOURCE), SITES, metric=cs.logit_diff(correct, wrong), per_example=True)
    want = alone(lm, SITES, metric_of=lambda i: cs.logit_diff(correct[i], wrong[i]))
    torch.testing.assert_close(e.values, want, atol=1e-5, rtol=0)


def test_iia_hits_per_pair_when_some_sources_change_the_top_token(gpt2):
    source = ["the cat sat on the rug", "a cat ran", "the old king saw a river near the king", "the cat sat on the rug"]
    e = cs.mediation(gpt2, (BASE, source), "resid_pre", metric=METRIC, align="end", per_example=True)
    want = alone(gpt2, "resid_pre", positions_of=lambda T: [T - 3, T - 2, T - 1], pairs=(BASE, source))
    torch.testing.assert_close(e.values, want, atol=1e-5, rtol=0)
    hits = e.sel(stat="IIA").values
    assert 0 < float(hits.mean()) < 1 and hits[..., -1, :].eq(1).all()  # the last position carries the answer
    assert not hits[0, 0].eq(hits[0, 0, 0]).all()                      # pairs differ in the same cell
    r = cs.mediation(gpt2, (BASE, source), "resid_pre", metric=METRIC, align="end", n_boot=300, seed=1)
    torch.testing.assert_close(r.values, hand_bootstrap(want, 300, 0.95, 1), atol=1e-5, rtol=0)


def test_token_id_lists_equal_prompts(gpt2):
    ids = lambda xs: [gpt2.adapter.tokenize(x)[0].tolist() for x in xs]  # noqa: E731
    a = cs.mediation(gpt2, (BASE, SOURCE), SITES, metric=METRIC, per_example=True)
    b = cs.mediation(gpt2, (ids(BASE), ids(SOURCE)), SITES, metric=METRIC, per_example=True)
    torch.testing.assert_close(a.values, b.values, atol=0, rtol=0)


def test_the_bootstrap_resamples_pairs_as_one_batch(gpt2):
    # the hand bootstrap is the equal-length path: pairs 0 and 3 have one length
    same = (["the cat sat on the mat", "the dog sat on the rug"], ["the dog sat on the mat", "the cat sat on the rug"])
    one = cs.mediation(gpt2, same, SITES, metric=METRIC, n_boot=200, ci=0.9, seed=7)
    each = cs.mediation(gpt2, same, SITES, metric=METRIC, per_example=True)
    torch.testing.assert_close(one.values, hand_bootstrap(each.values, 200, 0.9, 7), atol=1e-6, rtol=0)
    # ragged pairs: the same bootstrap over every pair's own values, pairs in their order
    r = cs.mediation(gpt2, (BASE, SOURCE), SITES, metric=METRIC, n_boot=200, ci=0.9, seed=7)
    torch.testing.assert_close(r.values, hand_bootstrap(alone(gpt2, SITES), 200, 0.9, 7), atol=1e-5, rtol=0)
    assert r.meta["n_boot"] == 200 and r.meta["seed"] == 7


def test_ragged_pairs_need_an_alignment_and_one_length_per_pair(gpt2):
    with pytest.raises(cs.InputError, match="different lengths .* align='end'"):
        cs.mediation(gpt2, (BASE, SOURCE), "resid_pre", metric=METRIC)
    with pytest.raises(cs.InputError, match="different lengths .* align='end'"):
        cs.mediation(gpt2, (BASE, SOURCE), cs.Site("layers.1"), per="position", metric=METRIC)
    with pytest.raises(cs.InputError, match=r"positions \[-4\] with align='end' must lie in -3 \.\. -1"):
        cs.mediation(gpt2, (BASE, SOURCE), "resid_pre", metric=METRIC, align="end", positions=[-4])
    with pytest.raises(cs.InputError, match=r"positions \[3\] with align='start' must lie in 0 \.\. 2"):
        cs.mediation(gpt2, (BASE, SOURCE), "attn", metric=METRIC, align="start", positions=[3])
    with pytest.raises(cs.InputError, match="Pair 1: the base prompt has 3 tokens and the source one 4"):
        cs.mediation(gpt2, (BASE, [SOURCE[0], "a big cat ran", *SOURCE[2:]]), ["layers.1"], metric=METRIC)
    with pytest.raises(cs.InputError, match="4 base prompts and 3 source ones"):
        cs.mediation(gpt2, (BASE, SOURCE[:3]), ["layers.1"], metric=METRIC)
    with pytest.raises(cs.InputError, match="align must be 'start' or 'end'"):
        cs.mediation(gpt2, (BASE, SOURCE), "resid_pre", metric=METRIC, align="middle")
    e = cs.mediation(gpt2, (BASE, SOURCE), ["layers.1"], metric=METRIC, per_example=True)
    with pytest.raises(cs.InputError, match="no 'lo'"):
        e.stat("NIE", "lo")
    assert e.plot() is not None  # drawn as the mean over examples
