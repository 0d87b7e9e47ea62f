"""trace_average equals a hand computation from individual causal traces; bootstrap CIs behave."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_tiny_lm

FACTS = [("the old king saw a river near the city", "old king"),
         ("a big red car ran by the house", "big red car"),
         ("the quick dog ran on the road", "quick dog"),
         ("one happy girl found the blue fish", "happy girl")]


@pytest.fixture(scope="module")
def model() -> cs.Model:
    return cs.load(*build_tiny_lm("gpt2", init_std=0.3), name="sharp-gpt2")


def test_token_classes_follow_rome():
    c = cs.token_classes(2, 5, 9)
    assert c == {"first subject token": [2], "middle subject tokens": [3], "last subject token": [4],
                 "first subsequent token": [5], "further tokens": [6, 7], "last token": [8]}
    assert cs.token_classes(0, 1, 3)["middle subject tokens"] == []


def test_average_equals_hand_computation_and_ci_brackets_mean(model):
    noise = 3 * cs.embedding_std(model, [s for _, s in FACTS])
    avg = cs.trace_average(model, FACTS, kinds=("hidden", "mlp"), samples=3, window=2, n_boot=200)
    assert avg.meta["noise_std"] == pytest.approx(noise)
    for kind in ("hidden", "mlp"):
        per_fact = []
        for prompt, subject in FACTS:
            r = cs.causal_trace(model, prompt, subject, kind=kind, samples=3, window=2, noise=noise)
            b, e = r.subject_range
            T = len(r.tokens)
            ie = r.scores - r.low_score
            per_fact.append({"last subject token": ie[e - 1], "further tokens": ie[e + 1:T - 1].mean(0),
                             "last token": ie[T - 1], "middle": ie[b + 1:e - 1].mean(0) if e - b > 2 else None})
        for cls in ("last subject token", "further tokens", "last token"):
            want = torch.stack([f[cls] for f in per_fact]).mean(0)
            got = avg.sel(kind=kind, token_class=cls, stat="mean").values
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        mids = [f["middle"] for f in per_fact if f["middle"] is not None]
        torch.testing.assert_close(avg.sel(kind=kind, token_class="middle subject tokens", stat="mean").values,
                                   torch.stack(mids).mean(0), rtol=0, atol=1e-6)
    assert avg.meta["n_facts_per_class"]["middle subject tokens"] == 1
    mean, lo, hi = (avg.sel(stat=s).values for s in ("mean", "ci_low", "ci_high"))
    assert torch.all(lo <= mean + 1e-7) and torch.all(mean <= hi + 1e-7)


def test_bootstrap_ci_covers_a_known_mean_at_about_the_nominal_rate():
    """Percentile bootstrap of a mean of 30 normal draws: 95% intervals cover the true mean ~95% of the time."""
    from causalscope.tracing import TOKEN_CLASSES  # noqa: F401
    g = torch.Generator().manual_seed(0)
    covered, trials = 0, 300
    for _ in range(trials):
        x = torch.randn(30, generator=g) + 1.0
        idx = torch.randint(30, (1000, 30), generator=g)
        lo, hi = torch.quantile(x[idx].mean(1), torch.tensor([0.025, 0.975]))
        covered += int(lo <= 1.0 <= hi)
    assert 0.89 <= covered / trials <= 0.99


def test_require_correct_skips_wrong_facts_and_errors_when_none_left(model):
    wrong = [(p, s, "zzz-not-a-token") for p, s in FACTS[:2]]
    with pytest.raises(cs.InputError, match="No fact was traced"):
        cs.trace_average(model, wrong, kinds=("hidden",), samples=2)
    right_answer = model.tokenizer.decode([int(model.run(FACTS[0][0]).output[0, -1].argmax())])
    avg = cs.trace_average(model, [(*FACTS[0], right_answer), (*FACTS[1], "zzz")], kinds=("hidden",), samples=2)
    assert avg.meta["n_facts"] == 1 and len(avg.meta["skipped"]) == 1


def test_plots(model):
    avg = cs.trace_average(model, FACTS[:2], kinds=("hidden", "attn"), samples=2, window=2, n_boot=50)
    fig = avg.plot()
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "layer"
    pf = avg.plot(backend="plotly")
    assert len(pf.data) == 2 * 6 * 2  # band + line per class per kind
