"""Activation patching over prompt pairs of different lengths (each pair one length) equals the per-pair
computation averaged: the reference runs activation_patching on every pair alone and combines the raw
metric values by hand."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs

CLEAN = ["the cat sat on the mat", "a dog ran", "the old king saw a river near the city", "the dog sat on the rug"]
CORRUPT = ["the dog sat on the mat", "a cat ran", "the old queen saw a river near the city", "the cat sat on the rug"]
METRIC = cs.logit_diff(5, 9)


def per_pair(m, sites, **kw):
    """Every pair alone: its raw metric per (direction, cell) and its clean / corrupted metric values."""
    out = []
    for c, k in zip(CLEAN, CORRUPT):
        T = m.adapter.tokenize(c).shape[1]
        pos = kw.pop("positions_of", None)
        extra = {} if pos is None else {"positions": pos(T)}
        r = cs.activation_patching(m, c, k, sites, METRIC, **kw, **extra)
        kw["positions_of"] = pos
        out.append((torch.tensor(r.meta["raw"]), r.meta["clean_metric"], r.meta["corrupted_metric"]))
    return out


def combined(pairs, dirs=("denoise", "noise")):
    raw = torch.stack([r for r, _, _ in pairs]).mean(0)
    clean = sum(c for _, c, _ in pairs) / len(pairs)
    corr = sum(k for _, _, k in pairs) / len(pairs)
    span = clean - corr
    return torch.stack([(raw[i] - corr) / span if d == "denoise" else (clean - raw[i]) / span
                        for i, d in enumerate(dirs)]), raw


def test_a_site_list_over_ragged_pairs_equals_the_pairs_alone(lm):
    sites = ["layers.0.mlp", cs.Site("layers.1", positions=-1), "layers.2.attn", cs.Site("layers.3", positions=0)]
    r = cs.activation_patching(lm, CLEAN, CORRUPT, sites, METRIC)
    want, raw = combined(per_pair(lm, sites))
    torch.testing.assert_close(torch.tensor(r.meta["raw"]), raw, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.values, want, atol=1e-4, rtol=1e-4)
    assert r.meta["lengths"] == {"6": 2, "3": 1, "9": 1} and r.meta["n_prompts"] == 4


def test_a_position_grid_aligned_at_the_end(gpt2):
    r = cs.activation_patching(gpt2, CLEAN, CORRUPT, "resid_pre", METRIC, align="end")
    assert r.coords["position"] == [-3, -2, -1]
    want, raw = combined(per_pair(gpt2, "resid_pre", positions_of=lambda T: [T - 3, T - 2, T - 1]))
    torch.testing.assert_close(torch.tensor(r.meta["raw"]), raw, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.values, want, atol=1e-4, rtol=1e-4)


def test_a_position_grid_aligned_at_the_start_with_chosen_positions(gpt2):
    r = cs.activation_patching(gpt2, CLEAN, CORRUPT, "mlp", METRIC, align="start", positions=[0, 2],
                               direction="denoise")
    assert r.coords["position"] == [0, 2]
    want, _ = combined(per_pair(gpt2, "mlp", direction="denoise", positions_of=lambda T: [0, 2]), dirs=("denoise",))
    torch.testing.assert_close(r.values, want, atol=1e-4, rtol=1e-4)


def test_per_example_keeps_each_pair_and_averages_to_the_default(gpt2):
    sites = ["layers.1", "layers.2.mlp"]
    r = cs.activation_patching(gpt2, CLEAN, CORRUPT, sites, METRIC)
    e = cs.activation_patching(gpt2, CLEAN, CORRUPT, sites, METRIC, per_example=True)
    assert e.dims == ("direction", "site", "example") and e.coords["example"] == [0, 1, 2, 3]
    torch.testing.assert_close(e.mean("example").values, r.values, atol=1e-5, rtol=0)
    raws = per_pair(gpt2, sites)
    for p, (raw, _, _) in enumerate(raws):
        torch.testing.assert_close(torch.tensor(e.meta["raw"])[..., p], raw, atol=1e-5, rtol=0)
    e.plot()  # drawn as the mean over examples


def test_ragged_pairs_need_an_alignment_and_one_length_per_pair(gpt2):
    with pytest.raises(cs.InputError, match="different lengths .* align='end'"):
        cs.activation_patching(gpt2, CLEAN, CORRUPT, "resid_pre", METRIC)
    with pytest.raises(cs.InputError, match=r"positions \[-4\] with align='end' must lie in -3 \.\. -1"):
        cs.activation_patching(gpt2, CLEAN, CORRUPT, "resid_pre", METRIC, align="end", positions=[-4])
    with pytest.raises(cs.InputError, match="Pair 1: the clean prompt has 3 tokens and the corrupted one 4"):
        cs.activation_patching(gpt2, CLEAN, [CORRUPT[0], "a big cat ran", *CORRUPT[2:]], ["layers.1"], METRIC)
    with pytest.raises(cs.InputError, match="4 clean prompts and 3 corrupted"):
        cs.activation_patching(gpt2, CLEAN, CORRUPT[:3], ["layers.1"], METRIC)


def test_one_answer_per_pair_reads_each_pairs_own_answer(lm):
    """The IOI setup: a metric with one answer per pair, over pairs of different lengths."""
    correct, wrong = [5, 11, 7, 2], [9, 3, 14, 6]
    r = cs.activation_patching(lm, CLEAN, CORRUPT, ["layers.1", "layers.2.mlp"], cs.logit_diff(correct, wrong))
    pairs = []
    for p, (c, k) in enumerate(zip(CLEAN, CORRUPT)):
        a = cs.activation_patching(lm, c, k, ["layers.1", "layers.2.mlp"], cs.logit_diff(correct[p], wrong[p]))
        pairs.append((torch.tensor(a.meta["raw"]), a.meta["clean_metric"], a.meta["corrupted_metric"]))
    want, raw = combined(pairs)
    torch.testing.assert_close(torch.tensor(r.meta["raw"]), raw, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.values, want, atol=1e-4, rtol=1e-4)
