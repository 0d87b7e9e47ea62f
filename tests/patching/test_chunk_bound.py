"""``chunk_size`` bounds every block call, the segmented staircase included, and results do not depend on it.

The rows of each block call are counted with a plain forward pre-hook on the blocks (not the engine's), so the
bound is checked where the memory is spent.
"""
from __future__ import annotations

import pytest
import torch

import causalscope as cs

CLEAN = ["the old king saw a river near the city", "a big red car ran by the old house"]
CORRUPT = ["the old dog saw a river near the city", "a big red cat ran by the old house"]


def block_rows(m: cs.Model) -> tuple[list[int], list]:
    """Rows of every call of every transformer block, recorded by plain pre-hooks (and their handles)."""
    seen: list[int] = []
    blocks = m.module.transformer.h
    handles = [b.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(
        int((args[0] if args else kwargs["hidden_states"]).shape[0])), with_kwargs=True) for b in blocks]
    return seen, handles


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_activation_patching_staircase_respects_chunk_size(gpt2, chunk):
    clean, corrupt = gpt2.adapter.tokenize(CLEAN), gpt2.adapter.tokenize(CORRUPT)
    metric = cs.logit_diff([5, 6], [9, 3])
    ref = cs.activation_patching(gpt2, clean, corrupt, "resid_pre", metric, schedule="floor")
    assert ref.meta["fast_path"]
    seen, handles = block_rows(gpt2)
    try:
        r = cs.activation_patching(gpt2, clean, corrupt, "resid_pre", metric, chunk_size=chunk, schedule="floor")
    finally:
        for h in handles:
            h.remove()
    assert r.meta["fast_path"] and seen and max(seen) <= chunk, (max(seen), chunk)
    # the raw metric agrees to float32 rounding of different batch shapes; scores are raw / (clean - corrupted)
    torch.testing.assert_close(torch.tensor(r.meta["raw"]), torch.tensor(ref.meta["raw"]), atol=1e-6, rtol=0)
    span = abs(ref.meta["clean_metric"] - ref.meta["corrupted_metric"])
    torch.testing.assert_close(r.values, ref.values, atol=2e-6 / span, rtol=0)


def test_the_unbounded_staircase_stacks_more_rows_than_the_bound(gpt2):
    """Without chunk_size the staircase stacks many cells into one block call: the bound above is a real cut."""
    clean, corrupt = gpt2.adapter.tokenize(CLEAN), gpt2.adapter.tokenize(CORRUPT)
    seen, handles = block_rows(gpt2)
    try:
        cs.activation_patching(gpt2, clean, corrupt, "resid_pre", cs.logit_diff([5, 6], [9, 3]), schedule="floor")
    finally:
        for h in handles:
            h.remove()
    assert max(seen) > 5


def test_mediation_staircase_respects_chunk_size(gpt2):
    base, src = gpt2.adapter.tokenize(CLEAN), gpt2.adapter.tokenize(CORRUPT)
    metric = cs.logit_diff([5, 6], [9, 3])
    ref = cs.mediation(gpt2, (base, src), "resid_pre", metric=metric, n_boot=20, schedule="floor")
    seen, handles = block_rows(gpt2)
    try:
        r = cs.mediation(gpt2, (base, src), "resid_pre", metric=metric, n_boot=20, chunk_size=3, schedule="floor")
    finally:
        for h in handles:
            h.remove()
    assert r.meta["fast_path"] and seen and max(seen) <= 3
    torch.testing.assert_close(r.values, ref.values, atol=1e-6, rtol=0)
