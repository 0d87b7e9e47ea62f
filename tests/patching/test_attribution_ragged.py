"""Attribution patching over prompt pairs of different lengths (each pair one length) equals the per-pair
computation averaged: the reference runs attribution_patching on every pair alone, turns each score back into
that pair's first-order change (score x the pair's own span) and combines the changes by hand, normalised by
the averaged clean / corrupted metric as activation_patching normalises its averaged raw values."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs

CLEAN = ["the cat sat on the mat", "a dog ran", "the old king saw a river near the city", "the dog sat on the rug"]
CORRUPT = ["the dog sat on the mat", "a cat ran", "the old queen saw a river near the city", "the cat sat on the rug"]
METRIC = cs.logit_diff(5, 9)


def per_pair(m, sites, positions_of=None, **kw):
    """Every pair alone: its first-order change per (direction, cell), raw values and its two metric ends."""
    out = []
    for c, k in zip(CLEAN, CORRUPT):
        extra = {} if positions_of is None else {"positions": positions_of(m.adapter.tokenize(c).shape[1])}
        r = cs.attribution_patching(m, c, k, sites, METRIC, **kw, **extra)
        clean, corr = r.meta["clean_metric"], r.meta["corrupted_metric"]
        out.append((r.values.double() * (clean - corr), torch.tensor(r.meta["raw"]), clean, corr))
    return out


def combined(pairs):
    """The scores and raw values of all pairs together: changes averaged, over the averaged span."""
    change = torch.stack([e for e, _, _, _ in pairs]).mean(0)
    clean = sum(c for _, _, c, _ in pairs) / len(pairs)
    corr = sum(k for _, _, _, k in pairs) / len(pairs)
    return (change / (clean - corr)).float(), torch.stack([r for _, r, _, _ in pairs]).mean(0)


def test_a_site_list_over_ragged_pairs_equals_the_pairs_alone(lm):
    sites = ["layers.0.mlp", cs.Site("layers.1", positions=-1), "layers.2.attn", cs.Site("layers.3", positions=0)]
    r = cs.attribution_patching(lm, CLEAN, CORRUPT, sites, METRIC, direction="both")
    want, raw = combined(per_pair(lm, sites, direction="both"))
    assert r.dims == ("direction", "site") and r.coords["direction"] == ["denoise", "noise"]
    torch.testing.assert_close(r.values, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(r.meta["raw"]), raw, atol=1e-5, rtol=0)
    assert r.meta["lengths"] == {"6": 2, "3": 1, "9": 1} and r.meta["n_prompts"] == 4 and r.meta["align"] is None
    assert r.values.abs().max() > 1e-3


def test_a_position_grid_aligned_at_the_end(lm):
    r = cs.attribution_patching(lm, CLEAN, CORRUPT, "resid_pre", METRIC, align="end", direction="both")
    assert r.dims == ("direction", "layer", "position") and r.coords["position"] == [-3, -2, -1]
    want, raw = combined(per_pair(lm, "resid_pre", lambda T: [T - 3, T - 2, T - 1], direction="both"))
    torch.testing.assert_close(r.values, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(r.meta["raw"]), raw, atol=1e-5, rtol=0)
    assert r.meta["align"] == "end"


def test_a_grid_aligned_at_the_start_and_a_head_sweep(gpt2):
    r = cs.attribution_patching(gpt2, CLEAN, CORRUPT, "mlp", METRIC, align="start", positions=[0, 2])
    assert r.coords["position"] == [0, 2] and r.coords["direction"] == ["denoise"]
    want, _ = combined(per_pair(gpt2, "mlp", lambda T: [0, 2]))
    torch.testing.assert_close(r.values, want, atol=1e-4, rtol=1e-4)
    heads = cs.attribution_patching(gpt2, CLEAN, CORRUPT, "heads", METRIC, direction="noise")  # no positions
    want, _ = combined(per_pair(gpt2, "heads", direction="noise"))
    torch.testing.assert_close(heads.values, want, atol=1e-4, rtol=1e-4)


def test_per_example_keeps_each_pair_and_averages_to_the_default(gpt2):
    sites = ["layers.1", "layers.2.mlp", cs.Site("layers.3", positions=-1)]
    r = cs.attribution_patching(gpt2, CLEAN, CORRUPT, sites, METRIC, direction="both")
    e = cs.attribution_patching(gpt2, CLEAN, CORRUPT, sites, METRIC, direction="both", per_example=True)
    assert e.dims == ("direction", "site", "example") and e.coords["example"] == [0, 1, 2, 3]
    torch.testing.assert_close(e.mean("example").values, r.values, atol=1e-5, rtol=0)
    raw = torch.tensor(e.meta["raw"])
    m_clean, m_corr = r.meta["clean_metric"], r.meta["corrupted_metric"]
    span = m_clean - m_corr
    for p, (_, raw_p, _, _) in enumerate(per_pair(gpt2, sites, direction="both")):
        torch.testing.assert_close(raw[..., p], raw_p, atol=1e-5, rtol=0)  # the pair's estimated patched metric
        # scored against the averaged ends, as activation_patching's per_example scores its raw values
        torch.testing.assert_close(e.values[0, :, p], ((raw_p[0] - m_corr) / span).float(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(e.values[1, :, p], ((m_clean - raw_p[1]) / span).float(), atol=1e-4, rtol=1e-4)
    e.plot()  # drawn as the mean over examples


def test_per_example_compares_with_exact_patching_cell_by_cell(gpt2):
    sites = ["layers.1", "layers.2.mlp"]
    atp = cs.attribution_patching(gpt2, CLEAN, CORRUPT, sites, METRIC, direction="both", per_example=True)
    exact = cs.activation_patching(gpt2, CLEAN, CORRUPT, sites, METRIC, per_example=True)
    assert atp.dims == exact.dims and atp.coords == exact.coords
    assert atp.meta["clean_metric"] == pytest.approx(exact.meta["clean_metric"], abs=1e-5)
    assert atp.meta["corrupted_metric"] == pytest.approx(exact.meta["corrupted_metric"], abs=1e-5)
    assert len(atp.disagreement(exact, k=2)) == 4
    grid = cs.attribution_patching(gpt2, CLEAN, CORRUPT, "resid_pre", METRIC, direction="both", align="end")
    assert set(grid.agreement(cs.activation_patching(gpt2, CLEAN, CORRUPT, "resid_pre", METRIC, align="end"))) == {
        "denoise pearson", "denoise spearman", "noise pearson", "noise spearman"}


def test_same_length_lists_are_one_batch_and_per_example_averages_to_it(gpt2):
    clean, corrupt = [CLEAN[0], CLEAN[3]], [CORRUPT[0], CORRUPT[3]]
    r = cs.attribution_patching(gpt2, clean, corrupt, "resid_pre", METRIC)
    assert "lengths" not in r.meta and r.coords["position"] == list(range(6))
    want, _ = combined([per_pair(gpt2, "resid_pre")[i] for i in (0, 3)])
    torch.testing.assert_close(r.values, want, atol=1e-4, rtol=1e-4)
    e = cs.attribution_patching(gpt2, clean, corrupt, "resid_pre", METRIC, per_example=True)
    torch.testing.assert_close(e.mean("example").values, r.values, atol=1e-5, rtol=0)


def test_ragged_pairs_need_an_alignment_and_one_length_per_pair(gpt2):
    with pytest.raises(cs.InputError, match="different lengths .* align='end'"):
        cs.attribution_patching(gpt2, CLEAN, CORRUPT, "resid_pre", METRIC)
    with pytest.raises(cs.InputError, match="different lengths .* align='end'"):
        cs.attribution_patching(gpt2, CLEAN, CORRUPT, "layers.1.mlp", METRIC, per="position")
    with pytest.raises(cs.InputError, match=r"positions \[-4\] with align='end' must lie in -3 \.\. -1"):
        cs.attribution_patching(gpt2, CLEAN, CORRUPT, "resid_pre", METRIC, align="end", positions=[-4])
    with pytest.raises(cs.InputError, match="align must be 'start' or 'end'"):
        cs.attribution_patching(gpt2, CLEAN, CORRUPT, "resid_pre", METRIC, align="middle")
    with pytest.raises(cs.InputError, match="Pair 1: the clean prompt has 3 tokens and the corrupted one 4"):
        cs.attribution_patching(gpt2, CLEAN, [CORRUPT[0], "a big cat ran", *CORRUPT[2:]], ["layers.1"], METRIC)
    with pytest.raises(cs.InputError, match="4 clean prompts and 3 corrupted"):
        cs.attribution_patching(gpt2, CLEAN, CORRUPT[:3], ["layers.1"], METRIC)
