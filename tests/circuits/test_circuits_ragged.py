"""Circuit discovery on Hugging Face and TransformerLens graphs over prompts of different lengths: every score
equals the mean of the same method run on each (clean, corrupted) pair alone, whose own equal-length path is
checked against naive loops elsewhere; pairings that cannot line up raise."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope import circuits
from conftest import hooked_transformer

g = torch.Generator().manual_seed(0)
CLEAN = [torch.randint(1, 50, (n,), generator=g).tolist() for n in (5, 3, 5, 4, 3, 4)]
CORRUPTED = [torch.randint(1, 50, (len(c),), generator=g).tolist() for c in CLEAN]
METHODS = [circuits.edge_patching, circuits.node_patching, circuits.edge_attribution_patching, circuits.eap_ig]


@pytest.fixture(scope="module")
def tl() -> cs.Model:
    return cs.load(hooked_transformer())


def per_pair_mean(model, fn, **kw) -> torch.Tensor:
    return torch.stack([fn(model, [c], [x], **kw).values for c, x in zip(CLEAN, CORRUPTED)]).mean(0)


@pytest.mark.parametrize("fn", METHODS, ids=lambda f: f.__name__)
def test_scores_over_ragged_pairs_equal_each_pair_alone(lm, fn):
    r = fn(lm, CLEAN, CORRUPTED)
    torch.testing.assert_close(r.values, per_pair_mean(lm, fn), atol=1e-6, rtol=1e-6)
    assert r.meta["lengths"] == {"3": 2, "4": 2, "5": 2} or r.meta["lengths"] == {3: 2, 4: 2, 5: 2}


@pytest.mark.parametrize("fn", METHODS, ids=lambda f: f.__name__)
def test_transformerlens_graph_over_ragged_pairs(tl, fn):
    torch.testing.assert_close(fn(tl, CLEAN, CORRUPTED).values, per_pair_mean(tl, fn), atol=1e-6, rtol=1e-6)


def test_metric_at_each_prompts_last_token(gpt2):
    r = circuits.edge_patching(gpt2, CLEAN, CORRUPTED, positions=[-1])
    torch.testing.assert_close(r.values, per_pair_mean(gpt2, circuits.edge_patching, positions=[-1]),
                               atol=1e-6, rtol=1e-6)


def test_a_metric_of_your_own_receives_the_lengths(gpt2):
    def last_logit(logits, lengths):
        return logits[torch.arange(len(logits)), lengths - 1, 7]
    r = circuits.edge_patching(gpt2, CLEAN, CORRUPTED, metric=last_logit)
    ref = torch.stack([circuits.edge_patching(gpt2, [c], [x], metric=lambda y: y[:, -1, 7]).values
                       for c, x in zip(CLEAN, CORRUPTED)]).mean(0)
    torch.testing.assert_close(r.values, ref, atol=1e-6, rtol=1e-6)


def test_resampling_pairs_prompts_of_equal_length():
    lengths = torch.tensor([5, 3, 5, 4, 3, 4, 5])
    src = circuits.resample(torch.arange(7)[:, None], seed=1, lengths=lengths)[:, 0]
    assert torch.equal(lengths[src], lengths) and bool((src != torch.arange(7)).all())
    assert sorted(src.tolist()) == list(range(7))


def test_resampled_corruption_over_ragged_prompts_equals_given_pairs(gpt2):
    lengths = torch.tensor([len(c) for c in CLEAN])
    src = circuits.resample(torch.arange(len(CLEAN))[:, None], seed=2, lengths=lengths)[:, 0]
    r = circuits.edge_patching(gpt2, CLEAN, seed=2)
    ref = circuits.edge_patching(gpt2, CLEAN, [CLEAN[int(i)] for i in src])
    torch.testing.assert_close(r.values, ref.values, atol=1e-9, rtol=0)


def naive_acdc_over_pairs(model, threshold):
    """ACDC as a plain sequential loop whose metric is the mean over pairs of each pair's own graph run (one
    single-pair, equal-length run per pair and tried edge: no padding anywhere)."""
    from causalscope.circuits._discovery import _EXACT_DEFAULT, setup

    setups = [setup(model, [c], [x], default_metric=_EXACT_DEFAULT) for c, x in zip(CLEAN, CORRUPTED)]
    g = setups[0].graph

    def value(state):
        return sum(float(s.value(g.run(state[None], s.clean, s.corrupted))[0]) for s in setups) / len(setups)

    E = len(g.edges)
    state, current = torch.zeros(E, dtype=torch.float64), value(torch.zeros(E, dtype=torch.float64))
    for r in reversed(g.receivers):
        incoming = sorted((i for i in range(E) if g.edges[i][1] == r), key=lambda i: -g.senders.index(g.edges[i][0]))
        if r != "logits" and all(state[i] == 1 for i in range(E) if g.edges[i][0] == r):
            state[incoming] = 1.0
            continue
        for i in incoming:
            trial = state.clone()
            trial[i] = 1.0
            v = value(trial)
            if v - current < threshold:  # KL: lower is better
                state, current = trial, v
    return (state == 0).tolist()


def test_acdc_over_ragged_prompts_equals_the_sequential_loop_over_pairs(gpt2):
    threshold = 2e-3
    r = circuits.acdc(gpt2, CLEAN, CORRUPTED, threshold=threshold)
    kept = naive_acdc_over_pairs(gpt2, threshold)
    assert r.kept.tolist() == kept
    assert 0 < sum(r.kept.tolist()) < len(kept)          # both decisions happen, so the test can fail


@pytest.mark.parametrize("corrupted, words", [
    ([c[:-1] or c for c in CORRUPTED], "has 4 tokens and its clean prompt 5"),
    (None, "the only one of"),
])
def test_pairs_that_cannot_line_up_raise(gpt2, corrupted, words):
    clean = CLEAN if corrupted is not None else CLEAN + [[1, 2, 3, 4, 5, 6]]
    with pytest.raises(cs.InputError, match=words):
        circuits.edge_patching(gpt2, clean, corrupted)


def test_positions_outside_a_shorter_prompt_raise(gpt2):
    with pytest.raises(cs.InputError, match="outside prompt 1 of 3 tokens"):
        circuits.edge_patching(gpt2, CLEAN, CORRUPTED, positions=[4])


def test_a_metric_without_lengths_raises(gpt2):
    with pytest.raises(cs.InputError, match="lengths"):
        circuits.edge_patching(gpt2, CLEAN, CORRUPTED, metric=lambda y: y[:, -1, 7])


def test_non_causal_graphs_refuse_ragged_prompts():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=16, d_head=4, n_heads=4, n_ctx=8, d_vocab=50, act_fn="gelu",
                                  normalization_type="LN", attention_dir="bidirectional", seed=0)
    with pytest.raises(cs.InputError, match="does not attend causally"):
        circuits.edge_patching(cs.load(HookedTransformer(cfg).eval()), CLEAN, CORRUPTED)
