"""Prompts of different lengths in one run: padded on the right, positions each prompt's own, every row equal
to that prompt run alone (the reference: the same call on each prompt by itself)."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from conftest import hooked_transformer

PROMPTS = ["the cat sat on the mat", "a dog ran", "the old king saw a river near the city", "the mat"]
ATOL = 1e-5


def alone(m: cs.Model, prompt, edits=None, **kw) -> cs.Run:
    return m.run(prompt, edits, **kw)


def test_a_ragged_batch_equals_each_prompt_alone(lm):
    cache = ["layers.1", cs.Site("layers.2.mlp", positions=[0, -1]), cs.Site("layers.0.attn.z", positions=-1,
                                                                              heads=1)]
    run = lm.run(PROMPTS, cache=cache, metric=cs.logit(5), keep_output=True)
    lengths = [len(lm.adapter.tokenize(p)[0]) for p in PROMPTS]
    assert run.lengths.tolist() == lengths and len(set(lengths)) > 1
    assert run.output.shape[1] == max(lengths)
    for i, p in enumerate(PROMPTS):
        ref = alone(lm, p, cache=cache, metric=cs.logit(5), keep_output=True)
        n = lengths[i]
        torch.testing.assert_close(run.output[i, :n], ref.output[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(run.metric[i], ref.metric[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(run.cache["layers.1"][i, :n], ref.cache["layers.1"][0], atol=ATOL, rtol=0)
        for s in cache[1:]:
            torch.testing.assert_close(run.cache[s.name][i], ref.cache[s.name][0], atol=ATOL, rtol=0)


def test_edits_at_each_prompts_own_positions(lm):
    """Positive positions count from each prompt's first token, negative ones back from its own last."""
    edits = {cs.Site("layers.1", positions=[0, -1]): cs.Zero(), cs.Site("layers.2.mlp", positions=-2): cs.Scale(3.0)}
    run = lm.run(PROMPTS, edits, metric=cs.logit_diff(5, 7))
    for i, p in enumerate(PROMPTS):
        torch.testing.assert_close(run.metric[i], alone(lm, p, edits, metric=cs.logit_diff(5, 7)).metric[0],
                                   atol=ATOL, rtol=0)


def test_patching_between_ragged_runs_of_matching_lengths(gpt2):
    clean = ["the cat sat on the mat", "a dog ran", "the old king saw a river"]
    corrupt = ["the dog sat on the mat", "a cat ran", "the old queen saw a river"]
    src = gpt2.run(clean, cache=["layers.1"])
    rows = [{cs.Site("layers.1", positions=-1): cs.Patch(src)}, {cs.Site("layers.1", positions=1): cs.Patch(src)}]
    for k, row in enumerate(rows):
        run = gpt2.run(corrupt, [row] * 3, metric=cs.logit(5))
        for i in range(3):
            ref_src = gpt2.run(clean[i], cache=["layers.1"])
            ref_row = {s: cs.Patch(ref_src) for s in row}
            want = gpt2.run(corrupt[i], ref_row, metric=cs.logit(5)).metric[0]
            torch.testing.assert_close(run.metric[i], want, atol=ATOL, rtol=0, msg=f"row kind {k}, prompt {i}")


def test_positions_from_the_end_across_prompts_of_different_lengths_raise(gpt2):
    src = gpt2.run(["the cat sat on the mat", "a dog ran"], cache=["layers.1"])
    with pytest.raises(cs.InterventionError, match="count from the end, but a base prompt has 3 tokens and its "
                                                   "source prompt 6"):
        gpt2.run(["a cat ran", "the dog sat on the rug"],
                 [{cs.Site("layers.1", positions=-1): cs.Patch(src, row=0)}] * 2)


def test_positions_outside_a_shorter_prompt_raise(gpt2):
    with pytest.raises(cs.SiteError, match=r"positions \[5\] lie outside a prompt of 3 tokens"):
        gpt2.run(PROMPTS, {cs.Site("layers.1", positions=5): cs.Zero()})
    with pytest.raises(cs.SiteError, match="lie outside a prompt of 2 tokens"):
        gpt2.run(PROMPTS, cache=[cs.Site("layers.1", positions=-3)])
    with pytest.raises(cs.SiteError, match="negative bounds"):
        gpt2.run(PROMPTS, {cs.Site("layers.1", positions=slice(-2, None)): cs.Zero()})


def test_metrics_read_each_prompts_last_token_and_custom_metrics_must_say_so(gpt2):
    run = gpt2.run(PROMPTS, keep_output=True)
    last = torch.stack([run.output[i, n - 1] for i, n in enumerate(run.lengths.tolist())])
    torch.testing.assert_close(gpt2.run(PROMPTS, metric=cs.prob(3)).metric, last.softmax(-1)[:, 3], atol=1e-6,
                               rtol=0)
    with pytest.raises(cs.InputError, match="different lengths.*would read padding"):
        gpt2.run(PROMPTS, metric=lambda y: y[:, -1, 5])
    # a metric with a `lengths` parameter gets each row's real length
    got = gpt2.run(PROMPTS, metric=lambda y, lengths: y[torch.arange(len(y)), lengths - 1, 5]).metric
    torch.testing.assert_close(got, last[:, 5], atol=1e-6, rtol=0)


def test_ragged_results_do_not_depend_on_chunk_size(gpt2):
    edits = [{cs.Site("layers.1", positions=-1): cs.Zero()}, {}, {cs.Site("layers.0", positions=0): cs.Scale(2.0)}]
    rows = edits * 4
    idx = [i % 4 for i in range(12)]
    ref = gpt2.run(PROMPTS, rows, input_index=idx, metric=cs.logit(5), cache=[cs.Site("layers.2", positions=-1)])
    for c in (1, 5):
        run = gpt2.run(PROMPTS, rows, input_index=idx, metric=cs.logit(5), chunk_size=c,
                       cache=[cs.Site("layers.2", positions=-1)])
        torch.testing.assert_close(run.metric, ref.metric, atol=ATOL, rtol=0)
        torch.testing.assert_close(run.cache["layers.2[pos=-1]"], ref.cache["layers.2[pos=-1]"], atol=ATOL, rtol=0)
    assert ref.lengths.tolist() == [len(gpt2.adapter.tokenize(PROMPTS[i])[0]) for i in idx]


def test_token_id_lists_and_right_padded_dicts_equal_prompts(gpt2):
    ids = [gpt2.adapter.tokenize(p)[0].tolist() for p in PROMPTS]
    a = gpt2.run(PROMPTS, metric=cs.logit(5)).metric
    torch.testing.assert_close(gpt2.run(ids, metric=cs.logit(5)).metric, a, atol=0, rtol=0)
    T = max(map(len, ids))
    padded = {"input_ids": torch.tensor([i + [0] * (T - len(i)) for i in ids]),
              "attention_mask": torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids])}
    torch.testing.assert_close(gpt2.run(padded, metric=cs.logit(5)).metric, a, atol=ATOL, rtol=0)
    left = {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"].flip(1)}
    with pytest.raises(cs.InputError, match="pads on the left or has holes"):
        gpt2.run(left)


def test_transformer_lens_ragged_token_lists():
    ht = hooked_transformer()
    m = cs.load(ht)
    ids = [[1, 5, 7, 9, 2], [3, 4], [8, 8, 8]]
    run = m.run(ids, {cs.Site("blocks.0.hook_resid_post", positions=-1): cs.Scale(0.5)}, metric=cs.logit(3),
                cache=["blocks.1.hook_resid_pre"])
    assert run.lengths.tolist() == [5, 2, 3]
    for i, row in enumerate(ids):
        ref = m.run(torch.tensor([row]), {cs.Site("blocks.0.hook_resid_post", positions=-1): cs.Scale(0.5)},
                    metric=cs.logit(3), cache=["blocks.1.hook_resid_pre"])
        torch.testing.assert_close(run.metric[i], ref.metric[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(run.cache["blocks.1.hook_resid_pre"][i, :len(row)],
                                   ref.cache["blocks.1.hook_resid_pre"][0], atol=ATOL, rtol=0)
