"""The engine's last-position cut: when a segment's caller reads only the last position, the final block's
MLP runs on that position alone, and the result still equals the full forward."""
from __future__ import annotations

import torch

import causalscope as cs
from causalscope import Site

PROMPT = "the old king saw a river near the city"


def _mlp_input_lengths(m: cs.Model) -> tuple[list[int], object]:
    seen: list[int] = []
    last_mlp = m.module.get_submodule(m.adapter.aliases()[f"layers.{m.n_layers - 1}.mlp"][0])
    # a forward hook fires after every pre-hook, so it sees the input the MLP really ran on
    return seen, last_mlp.register_forward_hook(lambda mod, a, out: seen.append(a[0].shape[1]))


def _segment(m: cs.Model, layer: int, pos: int):
    ids = m.adapter.tokenize(PROMPT)
    base = m.run(ids, cache=[f"layers.{i}" for i in range(m.n_layers)], keep_kv=True)
    h = base.cache[f"layers.{layer - 1}"][:, pos:]
    return base, m.adapter.segment(h, layer=layer, pos=pos, past=base.kv, last_only=True)


def test_cut_runs_one_position_and_equals_the_full_forward(lm):
    base, seg = _segment(lm, layer=1, pos=2)
    seen, handle = _mlp_input_lengths(lm)
    try:
        run = lm.run(seg)
    finally:
        handle.remove()
    assert seen == [1]  # the final MLP saw the last position only
    torch.testing.assert_close(run.output[:, -1], base.output[:, -1], rtol=0, atol=1e-5)
    edited = lm.run(seg, {Site("layers.1", positions=5): cs.Zero()}).output[:, -1]
    ref = lm.run(lm.adapter.tokenize(PROMPT), {Site("layers.1", positions=5): cs.Zero()}).output[:, -1]
    torch.testing.assert_close(edited, ref, rtol=0, atol=1e-5)


def test_no_cut_when_a_site_lies_in_the_final_block(gpt2):
    L = gpt2.n_layers
    base, seg = _segment(gpt2, layer=1, pos=2)
    for site in (f"layers.{L - 1}", f"layers.{L - 1}.mlp", f"layers.{L - 1}.attn"):
        seen, handle = _mlp_input_lengths(gpt2)
        try:
            run = gpt2.run(seg, cache=[site])
        finally:
            handle.remove()
        assert seen == [seg.kwargs["hidden"].shape[1]], site
        torch.testing.assert_close(run.cache[site], base.cache[site][:, 2:] if site == f"layers.{L - 1}" else
                                   gpt2.run(gpt2.adapter.tokenize(PROMPT), cache=[site]).cache[site][:, 2:],
                                   rtol=0, atol=1e-5)


def test_no_cut_without_last_only_or_short_of_the_last_layer(gpt2):
    ids = gpt2.adapter.tokenize(PROMPT)
    base = gpt2.run(ids, cache=["layers.0"], keep_kv=True)
    for kw in ({"last_only": False}, {"last_only": True, "stop": gpt2.n_layers - 1, "head": False}):
        seg = gpt2.adapter.segment(base.cache["layers.0"][:, 3:], layer=1, pos=3, past=base.kv, **kw)
        seen, handle = _mlp_input_lengths(gpt2)
        try:
            gpt2.run(seg)
        finally:
            handle.remove()
        assert seen in ([], [ids.shape[1] - 3]), kw
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in gpt2.module.modules())
