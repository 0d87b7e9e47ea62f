"""Issue 20: the shipped facts-gpt shows ROME's two sites (Meng et al. 2022, Fig. 2) when causal traces are averaged
over all 1,000 held-out facts with ROME's settings scaled to its depth: noise 3x the subject-embedding std, 10
samples, a window of ROME's 10 of 48 layers scaled up to the model's depth.

The reference for the numbers is the bootstrap over facts that ``trace_average`` reports (checked against a hand
computation in test_trace_average.py); here the test asserts where the effects peak and how the intervals lie.
"""
from __future__ import annotations

import pytest

import causalscope as cs
from causalscope.zoo.facts import facts


@pytest.mark.slow
def test_the_shipped_facts_model_shows_an_early_mlp_site_and_a_late_attention_site():
    m = cs.load("facts-gpt")
    L = m.n_layers
    assert 8 <= L <= 12  # deep enough for a lower and an upper part (issue 20)
    held = facts("heldout")
    assert len(held) == 1000
    avg = cs.trace_average(m, held, kinds=("mlp", "attn"), samples=10, noise="3x", window=cs.rome_window(L),
                           progress=False)
    assert avg.meta["n_facts"] >= 900  # the facts it knows (ROME traces known facts only)
    s = cs.rome_sites(avg)
    # the MLP effect at the last subject token peaks below the last third, and its interval there lies above the
    # first subject token's and the further tokens' intervals
    assert s["mlp_peak"] < 2 * L / 3, s
    for cls, (_, hi) in s["others"].items():
        assert s["mlp_ci"][0] > hi, (cls, s)
    # the attention effect at the last token peaks in the last half
    assert s["attn_peak"] >= L / 2, s


def test_rome_window_scales_romes_10_of_48_layers():
    assert [cs.rome_window(n) for n in (1, 4, 8, 12, 24, 48)] == [1, 1, 2, 3, 5, 10]
    with pytest.raises(cs.InputError, match="n_layers"):
        cs.rome_window(0)
