"""Issue 20: the shipped facts-gpt shows ROME's two sites (Meng et al. 2022, Fig. 2) when causal traces are averaged
over all 1,000 held-out facts with ROME's settings scaled to its depth: noise 3x the subject-embedding std, 10
samples, a window of ROME's 10 of 48 layers scaled up to the model's depth.

The reference for the numbers is the bootstrap over facts that ``trace_average`` reports (checked against a hand
computation in test_trace_average.py); here the test asserts where the effects peak and how the intervals lie.
"""
from __future__ import annotations

import pytest
import torch

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


def _average(mlp_last: list[float], attn_last: list[float], first_hi: float, further_hi: float) -> cs.TraceAverage:
    """A TraceAverage with chosen numbers: every cell 0 with a +-0.01 interval, except the rows given."""
    kinds, classes, L = ["mlp", "attn"], list(cs.TOKEN_CLASSES), len(mlp_last)
    v = torch.zeros(len(kinds), len(classes), L, 3)
    v[..., 1], v[..., 2] = -0.01, 0.01
    last_s, last, first, further = (classes.index(c) for c in ("last subject token", "last token",
                                                               "first subject token", "further tokens"))
    for row, (k, c) in ((mlp_last, (0, last_s)), (attn_last, (1, last))):
        t = torch.tensor(row)
        v[k, c, :, 0], v[k, c, :, 1], v[k, c, :, 2] = t, t - 0.02, t + 0.02
    v[0, first, :, 2], v[0, further, :, 2] = first_hi, further_hi
    return cs.TraceAverage(v, ("kind", "token_class", "layer", "stat"),
                           {"kind": kinds, "token_class": classes, "layer": list(range(L)),
                            "stat": ["mean", "ci_low", "ci_high"]}, {})


def test_rome_sites_reads_the_peaks_and_intervals_as_a_hand_computation():
    mlp = [0.05, 0.20, 0.10, 0.02, 0.01, 0.0, 0.0, 0.0]
    attn = [0.0, 0.01, 0.02, 0.05, 0.08, 0.12, 0.30, 0.22]
    s = cs.rome_sites(_average(mlp, attn, first_hi=0.15, further_hi=0.05))
    assert s["layers"] == 8 and s["mlp_peak"] == 1 and s["attn_peak"] == 6   # argmax by hand
    assert s["mlp_mean"] == pytest.approx(0.20) and s["attn_mean"] == pytest.approx(0.30)
    assert s["mlp_ci"] == (pytest.approx(0.18), pytest.approx(0.22))
    assert s["others"]["first subject token"][1] == pytest.approx(0.15)
    assert s["mlp_early"] and s["mlp_above"] and s["attn_late"]              # 0.18 > 0.15 and 0.05; 6 >= 4
    late = cs.rome_sites(_average(mlp[::-1], attn[::-1], first_hi=0.19, further_hi=0.05))
    assert late["mlp_peak"] == 6 and not late["mlp_early"]                   # 6 >= 2 * 8 / 3
    assert not late["mlp_above"]                                             # 0.18 < 0.19
    assert late["attn_peak"] == 1 and not late["attn_late"]


def test_rome_sites_refuses_what_it_cannot_read():
    avg = _average([0.1] * 4, [0.1] * 4, 0.0, 0.0)
    with pytest.raises(cs.InputError, match="kinds 'mlp' and 'attn'"):
        cs.rome_sites(avg.sel(kind=["mlp"]))
    nan = _average([0.1, float("nan"), 0.2, 0.0], [0.1] * 4, 0.0, 0.0)
    with pytest.raises(cs.InputError, match="finite means"):
        cs.rome_sites(nan)
