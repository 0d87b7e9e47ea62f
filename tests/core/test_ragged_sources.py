"""Patch / Resample / Mean between prompts of different lengths: every row equals a plain-hook loop that runs
the base prompt alone and writes the source prompt's activation (run alone) by hand; every ambiguous case
raises instead of reading another token or padding."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from plain_hooks import alone_act, alone_logits

BASE = ["the cat sat on the mat", "a dog ran", "the old king saw a river near the city"]
SOURCE = ["the old king", "a cat sat on the big mat", "the mat"]          # lengths differ from BASE's
ATOL = 1e-5


def test_patch_align_end_reads_each_sources_own_last_tokens(lm):
    src = lm.run(SOURCE, cache=["layers.1"])
    run = lm.run(BASE, {cs.Site("layers.1", positions=[-2, -1]): cs.Patch(src, align="end")}, keep_output=True,
                 metric=cs.logit(3))
    for i, (b, s) in enumerate(zip(BASE, SOURCE)):
        a = alone_act(lm, s, "layers.1")

        def write(x, a=a):
            x[-2:] = a[-2:]
        ref = alone_logits(lm, b, "layers.1", write)
        torch.testing.assert_close(run.metric[i], ref[3], atol=ATOL, rtol=0)


def test_patch_positions_from_the_start_read_the_same_positions(lm):
    src = lm.run(SOURCE, cache=["layers.2"])
    run = lm.run(BASE, {cs.Site("layers.2", positions=[0, 1]): cs.Patch(src)}, metric=cs.logit(4))
    for i, (b, s) in enumerate(zip(BASE, SOURCE)):
        a = alone_act(lm, s, "layers.2")

        def write(x, a=a):
            x[:2] = a[:2]
        torch.testing.assert_close(run.metric[i], alone_logits(lm, b, "layers.2", write)[4], atol=ATOL, rtol=0)


def test_resample_align_end_equals_the_drawn_rows_by_hand(gpt2):
    src = gpt2.run(SOURCE, cache=["layers.1"])
    iv = cs.Resample(src, seed=3, align="end")
    run = gpt2.run(BASE, {cs.Site("layers.1", positions=-1): iv}, metric=cs.logit(2))
    drawn = torch.randint(len(SOURCE), (len(BASE),), generator=torch.Generator().manual_seed(3))
    for i, b in enumerate(BASE):
        a = alone_act(gpt2, SOURCE[int(drawn[i])], "layers.1")

        def write(x, a=a):
            x[-1] = a[-1]
        torch.testing.assert_close(run.metric[i], alone_logits(gpt2, b, "layers.1", write)[2], atol=ATOL, rtol=0)


def test_mean_over_a_ragged_source_leaves_its_padding_out(lm):
    """At each position, the mean over the source prompts that have that position (a masked mean)."""
    src = lm.run(SOURCE + ["the cat sat on the mat a dog ran by"], cache=["layers.1"])
    acts = [alone_act(lm, s, "layers.1") for s in SOURCE + ["the cat sat on the mat a dog ran by"]]
    for site in (cs.Site("layers.1"), cs.Site("layers.1", positions=[0, -1])):
        run = lm.run(BASE, {site: cs.Mean(src)}, metric=cs.logit(1))
        for i, b in enumerate(BASE):
            T = len(lm.adapter.tokenize(b)[0])
            where = range(T) if site.positions is None else [0, T - 1]

            def write(x, where=where):
                for t in where:
                    x[t] = torch.stack([a[t] for a in acts if len(a) > t]).mean(0)
            torch.testing.assert_close(run.metric[i], alone_logits(lm, b, "layers.1", write)[1], atol=ATOL, rtol=0)


def test_whole_sequence_patch_between_equal_length_pairs_of_different_lengths(gpt2):
    """Pairs may differ in length from each other; within a pair, equal lengths patch every position."""
    base = ["the cat sat on the mat", "a dog ran"]
    source = ["a dog ran by the tree", "the old king"]
    src = gpt2.run(source, cache=["layers.1"])
    run = gpt2.run(base, {cs.Site("layers.1"): cs.Patch(src)}, metric=cs.logit(6))
    for i, (b, s) in enumerate(zip(base, source)):
        a = alone_act(gpt2, s, "layers.1")

        def write(x, a=a):
            x[:] = a
        torch.testing.assert_close(run.metric[i], alone_logits(gpt2, b, "layers.1", write)[6], atol=ATOL, rtol=0)


@pytest.mark.parametrize("site, iv, words", [
    (cs.Site("layers.1"), "patch", "replaces every position"),
    (cs.Site("layers.1", positions=-1), "patch", "align='end'"),
    (cs.Site("layers.1", positions=[5]), "patch", "past the end of a source prompt"),
    (cs.Site("layers.1", positions=-1), "resample", "align='end'"),
])
def test_ambiguous_sources_raise(gpt2, site, iv, words):
    src = gpt2.run(SOURCE, cache=["layers.1"])
    edit = cs.Patch(src) if iv == "patch" else cs.Resample(src)
    base = ["the cat sat on the mat", "a dog ran by the tree", "the old king saw a river near the city"]
    with pytest.raises(cs.InterventionError, match=words.replace("(", r"\(")):
        gpt2.run(base, {site: edit})


def test_mean_at_a_position_no_source_prompt_has_raises(gpt2):
    src = gpt2.run(["the cat", "a dog ran"], cache=["layers.1"])
    with pytest.raises(cs.InterventionError, match="no source prompt has position 3"):
        gpt2.run(BASE, {cs.Site("layers.1"): cs.Mean(src)})


def test_align_is_checked():
    with pytest.raises(cs.InterventionError, match="align must be 'end'"):
        cs.Patch(None, align="start")  # type: ignore[arg-type]
