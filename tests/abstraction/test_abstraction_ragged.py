"""Causal abstraction and DAS on a language model over prompts of different lengths: IIA and DAS's loss equal a
plain-hook loop over the pairs, each prompt run alone; pairings that cannot line up raise before computing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import causalscope as cs
from plain_hooks import alone_act, alone_logits

SUBJECTS = ["cat", "the old dog", "a king", "river near the city"]   # 1 to 4 tokens
ENDINGS = ["sat", "ran"]


def encode(v: dict) -> list[str]:
    return [f"{SUBJECTS[a]} {ENDINGS[b]}" for a, b in zip(v["A"], v["B"])]


CM = cs.CausalModel({"A": [], "B": [], "O": ["A", "B"]}, {"O": lambda a, b: (a + b) % 2},
                    {"A": range(4), "B": range(2), "O": [0, 1]}, encode=encode, name="parity")


def read_last(y: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of tokens 0 and 1 at each prompt's last real token."""
    last = y[:, -1] if lengths is None else y[torch.arange(len(y)), lengths - 1]
    return last[:, :2]


def act(m: cs.Model, prompt: str) -> torch.Tensor:
    return alone_act(m, prompt, "layers.1")


def logits_with(m: cs.Model, prompt: str, write) -> torch.Tensor:
    return alone_logits(m, prompt, "layers.1", write)[:2]


def loop_hits(m: cs.Model, ds, variable: str, write_of) -> torch.Tensor:
    labels = CM.labels(ds.base_values, ds.source_values, variable)
    hits = []
    for i, (b, s) in enumerate(zip(ds.base, ds.source)):
        pred = logits_with(m, b, write_of(act(m, b), act(m, s))).argmax()
        hits.append(float(pred == labels[i]))
    return torch.tensor(hits)


def test_iia_at_each_prompts_last_token_equals_the_loop(lm):
    ds = CM.counterfactuals(n=24, seed=1)                      # independent base and source: lengths differ
    lens = [(len(lm.adapter.tokenize(b)[0]), len(lm.adapter.tokenize(s)[0])) for b, s in zip(ds.base, ds.source)]
    assert any(b != s for b, s in lens) and len({b for b, _ in lens}) > 1
    r = cs.abstraction_iia(lm, CM, {"A": cs.Site("layers.1", positions=-1)}, ds, metric=read_last, align="end")

    def write_of(xb, xs):
        def write(x):
            x[-1] = xs[-1]
        return write
    assert r.iia("A") == pytest.approx(float(loop_hits(lm, ds, "A", write_of).mean()))
    assert r.meta["align"] == "end"


def test_iia_of_every_position_between_equal_length_pairs_equals_the_loop(gpt2):
    ds = CM.counterfactuals(vary="B", n=24, seed=2)           # the subject (and so the length) stays
    r = cs.abstraction_iia(gpt2, CM, {"B": "layers.1"}, ds, metric=read_last)

    def write_of(xb, xs):
        def write(x):
            x[:] = xs
        return write
    assert r.iia("B") == pytest.approx(float(loop_hits(gpt2, ds, "B", write_of).mean()))


def test_das_loss_and_iia_over_ragged_pairs_equal_the_loop(gpt2):
    train, test = CM.counterfactuals(n=16, seed=3), CM.counterfactuals(n=12, seed=4)
    site = cs.Site("layers.1", positions=-1)
    r = cs.das(gpt2, CM, "A", site, k=2, data=train, test_data=test, epochs=2, batch_size=16, refine=0,
               metric=read_last, align="end", seed=5, n_boot=50)
    # the first step's loss: the seeded random rotation R0 (S = 0), every training pair in one batch
    q, rr = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    B0 = (q * torch.sign(torch.diagonal(rr)))[:, :2].float()
    labels = CM.labels(train.base_values, train.source_values, "A")
    losses = []
    for i, (b, s) in enumerate(zip(train.base, train.source)):
        xb, xs = act(gpt2, b)[-1], act(gpt2, s)[-1]

        def write(x, xb=xb, xs=xs):
            x[-1] = xb + ((xs - xb) @ B0) @ B0.T
        losses.append(F.cross_entropy(logits_with(gpt2, b, write)[None], labels[i:i + 1]))
    assert float(r.loss[0]) == pytest.approx(float(torch.stack(losses).mean()), abs=1e-5)

    def write_of(xb, xs):
        def write(x):
            x[-1] = xb[-1] + ((xs[-1] - xb[-1]) @ r.basis) @ r.basis.T
        return write
    assert r.test_iia == pytest.approx(float(loop_hits(gpt2, test, "A", write_of).mean()))


@pytest.mark.parametrize("site, align, words", [
    (cs.Site("layers.1", positions=-1), None, "align='end'"),
    ("layers.1", None, "covers every position"),
    ("layers.1", "end", "covers every position"),
])
def test_pairs_that_cannot_line_up_raise_before_computing(gpt2, site, align, words):
    ds = CM.counterfactuals(n=16, seed=1)
    with pytest.raises(cs.InputError, match=words):
        cs.abstraction_iia(gpt2, CM, {"A": site}, ds, metric=read_last, align=align)
    calls = []
    res = gpt2.adapter.resolve(cs.Site("layers.3"))
    h = res.module.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(cs.InputError, match=words):
            cs.das(gpt2, CM, "A", site, data=ds, test_data=ds, metric=read_last, align=align)
    finally:
        h.remove()
    assert not calls                                     # DAS refused before its first training step


def test_a_metric_that_reads_positions_without_lengths_raises(gpt2):
    ds = CM.counterfactuals(n=8, seed=1)
    with pytest.raises(cs.InputError, match="lengths"):
        cs.abstraction_iia(gpt2, CM, {"A": cs.Site("layers.1", positions=-1)}, ds,
                           metric=lambda y: y[:, -1, :2], align="end")
