"""trace_average's grouped schedule (facts of one shape share every pass) equals a loop over causal_trace."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import causalscope as cs
import causalscope.tracing._grouped as grouped
from causalscope.zoo import build_tiny_lm

# 13 facts, 6 shapes (tokens, subject tokens): three share (9, 1..3), three (8, 1..4), three (7, 1..3), two
# (6, 3..4); one has its subject first, one its subject last
FACTS = [("the old king saw a river near the city", "old king"),
         ("a big red car ran by the house", "big red car"),
         ("the quick dog ran on the road", "quick dog"),
         ("the sad queen ate a fish near the house", "sad queen"),
         ("a small blue bird flew near the tree", "small blue bird"),
         ("the slow cat sat on the mat", "slow cat"),
         ("the capital of france is paris", "france"),
         ("the red car ran on the road by rome", "red car"),
         ("one happy old man slept in the house", "happy old man"),
         ("the old woman slept in the house", "old woman"),
         ("the capital of italy is rome", "italy"),
         ("paris is the capital of france", "paris"),
         ("the king saw the queen", "queen")]
SHAPES = 6
KINDS = ("hidden", "mlp", "attn")
SETTINGS: dict[str, Any] = {"samples": 3, "window": 2, "seed": 0}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request) -> cs.Model:
    return cs.load(*build_tiny_lm(request.param, init_std=0.1), name=f"tiny-{request.param}")


def reference(m: cs.Model, facts: list, kinds=KINDS, n_boot: int = 200, ci: float = 0.95, **kw: Any):
    """trace_average by hand: causal_trace per fact and kind, class means, a seeded percentile bootstrap."""
    noise = 3 * cs.embedding_std(m, [f[1] for f in facts])
    L = m.n_layers
    traces, per_kind = [], {k: [] for k in kinds}
    for f in facts:
        if len(f) == 3:
            pred = m.tokenizer.decode([int(m.run(f[0]).output[0, -1].argmax())]).strip()
            if pred != f[2]:
                continue
        for k in kinds:
            r = cs.causal_trace(m, f[0], f[1], kind=k, noise=noise, **SETTINGS, **kw)
            traces.append(r)
            b, e = r.subject_range
            ie = r.scores - r.low_score
            rows = [ie[idx].mean(0) if idx else torch.full((L,), float("nan"))
                    for idx in cs.token_classes(b, e, len(r.tokens)).values()]
            per_kind[k].append(torch.stack(rows))
    g = torch.Generator().manual_seed(SETTINGS["seed"])
    out = torch.zeros(len(kinds), len(cs.TOKEN_CLASSES), L, 3)
    for ki, k in enumerate(kinds):
        data = torch.stack(per_kind[k])
        for c in range(len(cs.TOKEN_CLASSES)):
            x = data[:, c]
            x = x[~torch.isnan(x[:, 0])]
            if x.shape[0] == 0:
                out[ki, c] = float("nan")
                continue
            boots = x[torch.randint(x.shape[0], (n_boot, x.shape[0]), generator=g)].mean(1)
            lo, hi = torch.quantile(boots, torch.tensor([(1 - ci) / 2, 1 - (1 - ci) / 2]), dim=0)
            out[ki, c, :, 0], out[ki, c, :, 1], out[ki, c, :, 2] = x.mean(0), lo, hi
    return out, traces


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=0, atol=1e-5)


def counting(m: cs.Model, fn: Callable[[], Any]) -> tuple[Any, int]:
    """fn() and how many engine runs (Model.run calls) it made."""
    calls = [0]
    plain = m.run

    def run(*a: Any, **kw: Any) -> Any:
        calls[0] += 1
        return plain(*a, **kw)

    m.run = run
    try:
        return fn(), calls[0]
    finally:
        del m.run


def test_grouped_average_equals_the_per_fact_loop_with_bootstrap_intervals(model):
    avg = cs.trace_average(model, FACTS, kinds=KINDS, n_boot=200, **SETTINGS)
    want, traces = reference(model, FACTS)
    assert avg.meta["schedule"] == "grouped" and avg.meta["n_facts"] == len(FACTS)
    assert_same(avg.values, want)  # mean, ci_low and ci_high of every kind, class and layer
    assert len(avg.traces) == len(traces)
    for got, ref in zip(avg.traces, traces):
        assert (got.kind, got.meta["prompt"], got.answer, got.subject_range) == \
            (ref.kind, ref.meta["prompt"], ref.answer, ref.subject_range)
        torch.testing.assert_close(got.scores, ref.scores, rtol=0, atol=1e-5)
        assert got.low_score == pytest.approx(ref.low_score, abs=1e-5)
        assert got.high_score == pytest.approx(ref.high_score, abs=1e-5)
        assert got.meta["token_layers"] == ref.meta["token_layers"]
    per_fact = cs.trace_average(model, FACTS, kinds=KINDS, n_boot=200, schedule="per_fact", **SETTINGS)
    assert per_fact.meta["schedule"] == "per_fact"
    assert_same(per_fact.values, want)


def test_facts_of_one_shape_share_every_pass(model):
    """All the facts of a shape cost the engine runs of one of them, the kinds share their passes, and the
    token-layers are the sum of the facts' own."""
    avg, runs = counting(model, lambda: cs.trace_average(model, FACTS, kinds=KINDS, n_boot=10, **SETTINGS))
    assert avg.meta["fact_groups"] == SHAPES
    shapes = {}
    for p, s in FACTS:
        shapes.setdefault((len(p.split()), cs.subject_range(model, p, s)), (p, s))
    assert len(shapes) == SHAPES
    one_each = sum(counting(model, lambda f=f: cs.trace_average(model, [f], kinds=KINDS, n_boot=10,
                                                                 **SETTINGS))[1] for f in shapes.values())
    assert runs == one_each
    # one fact: a clean and a corrupted pass, one attn entry pass per first restored layer of a window, and at
    # each token t >= b one call per block from block 1 on, for all three kinds together
    p, s = FACTS[0]
    b, _ = cs.subject_range(model, p, s)
    T, L = len(p.split()), model.n_layers
    firsts = {max(0, l - SETTINGS["window"] // 2) for l in range(L)}
    _, runs_one = counting(model, lambda: cs.trace_average(model, [FACTS[0]], kinds=KINDS, n_boot=10, **SETTINGS))
    assert runs_one == 2 + len(firsts) + (T - b) * (L - 1)
    per_fact, runs_per_fact = counting(model, lambda: cs.trace_average(model, FACTS, kinds=KINDS, n_boot=10,
                                                                       schedule="per_fact", **SETTINGS))
    assert runs * 2 < runs_per_fact and per_fact.meta["fact_groups"] == len(FACTS)
    assert avg.meta["token_layers"] == per_fact.meta["token_layers"] > 0


def test_wrong_facts_are_skipped_in_order_and_groups_split_by_size(model, monkeypatch):
    right = model.tokenizer.decode([int(model.run(FACTS[0][0]).output[0, -1].argmax())]).strip()
    facts = [(*FACTS[0], right), (*FACTS[3], "zzz"), *FACTS[6:9], (*FACTS[7], "zzz"), (*FACTS[10], right)]
    monkeypatch.setattr(grouped, "MAX_FLOATS", 2 * 3 * 9 * model.n_layers * 64)  # at most two facts per pass
    avg = cs.trace_average(model, facts, kinds=("hidden", "mlp"), n_boot=100, **SETTINGS)
    want, _ = reference(model, facts, kinds=("hidden", "mlp"), n_boot=100)
    assert_same(avg.values, want)
    ref = cs.trace_average(model, facts, kinds=("hidden", "mlp"), n_boot=100, schedule="per_fact", **SETTINGS)
    assert avg.meta["skipped"] == ref.meta["skipped"] and len(avg.meta["skipped"]) >= 2
    assert avg.meta["n_facts"] == ref.meta["n_facts"]
    assert max(r.meta["facts_per_pass"] for r in avg.traces) <= 2


def test_bad_settings_raise_clear_errors(model):
    with pytest.raises(cs.InputError, match="schedule must be"):
        cs.trace_average(model, FACTS[:2], schedule="fast")
    with pytest.raises(cs.InputError, match="window must be"):
        cs.trace_average(model, FACTS[:2], window=0)
    with pytest.raises(cs.InputError, match="kind must be"):
        cs.trace_average(model, FACTS[:2], kinds=("resid",))
    with pytest.raises(cs.InputError, match="not in the prompt"):
        cs.trace_average(model, [("the old king saw a river", "queen")])
    # a fact the model gets wrong is skipped before its subject is looked for, as in the per-fact loop
    right = model.tokenizer.decode([int(model.run(FACTS[0][0]).output[0, -1].argmax())]).strip()
    avg = cs.trace_average(model, [(*FACTS[0], right), ("the old king saw a river", "queen", "zzz")],
                           kinds=("hidden",), **SETTINGS)
    assert avg.meta["n_facts"] == 1 and avg.meta["skipped"][0]["answer"] == "zzz"
