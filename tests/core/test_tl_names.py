"""TransformerLens hook names resolve on Hugging Face models (and canonical names on TransformerLens models):
each name is checked against the HF module it must mean, through plain hooks on that module."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.core import Site, Zero
from conftest import hooked_transformer
from plain_hooks import hook


def _capture(module: torch.nn.Module, io: str, run) -> torch.Tensor:
    got: dict[str, torch.Tensor] = {}

    def keep(x: torch.Tensor) -> None:
        got["x"] = x.detach().clone()
    h = hook(module, io, keep)
    try:
        run()
    finally:
        h.remove()
    return got["x"]


@pytest.mark.parametrize(("tl_name", "canonical", "io"), [
    ("hook_embed", "embed", "output"), ("blocks.1.hook_resid_pre", "layers.1", "input"),
    ("blocks.1.hook_resid_post", "layers.1", "output"), ("blocks.0.hook_attn_out", "layers.0.attn", "output"),
    ("blocks.1.hook_mlp_out", "layers.1.mlp", "output"), ("ln_final.hook_normalized", "final_norm", "output"),
])
def test_tl_names_cache_what_the_hf_module_computes(lm, tl_name, canonical, io):
    ids = torch.randint(0, 60, (2, 7), generator=torch.Generator().manual_seed(0))
    run = lm.run(ids, cache=[tl_name])
    res = lm.adapter.resolve(Site(canonical, io=io))
    expected = _capture(res.module, io, lambda: lm.module(ids))
    torch.testing.assert_close(run.cache[tl_name], expected)


def test_tl_head_and_resid_pre_names_patch_like_the_canonical_sites(gpt2):
    ids = torch.randint(0, 60, (1, 7), generator=torch.Generator().manual_seed(1))
    a = gpt2.run(ids, {Site("blocks.1.attn.hook_z", heads=[2]): Zero(), "blocks.0.hook_resid_pre": Zero()}).output
    b = gpt2.run(ids, {Site("layers.1.attn.z", heads=[2]): Zero(), Site("layers.0", io="input"): Zero()}).output
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    r = cs.activation_patching(gpt2, "the cat sat on the mat", "the dog sat on the mat",
                               ["blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"], cs.logit(5))
    s = cs.activation_patching(gpt2, "the cat sat on the mat", "the dog sat on the mat",
                               [Site("layers.1", io="input"), "layers.1.mlp"], cs.logit(5))
    torch.testing.assert_close(r.values, s.values)


def test_tl_names_without_a_module_say_what_to_use(gpt2):
    ids = torch.randint(0, 60, (1, 5), generator=torch.Generator().manual_seed(2))
    with pytest.raises(cs.SiteError, match="TransformerLens name.*layers.1.attn.z"):
        gpt2.run(ids, cache=["blocks.1.attn.hook_pattern"])
    with pytest.raises(cs.SiteError, match="Unknown site 'blocks.9.hook_resid_pre'"):
        gpt2.run(ids, cache=["blocks.9.hook_resid_pre"])  # no block 9: the usual unknown-site error


def test_canonical_names_on_a_transformer_lens_model_are_its_hooks():
    tl = cs.load(hooked_transformer())
    ids = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(3))
    run = tl.run(ids, cache=["layers.1", "blocks.1.hook_resid_post", "layers.0.attn.z", "blocks.0.attn.hook_z"])
    torch.testing.assert_close(run.cache["layers.1"], run.cache["blocks.1.hook_resid_post"], atol=0, rtol=0)
    torch.testing.assert_close(run.cache["layers.0.attn.z"], run.cache["blocks.0.attn.hook_z"], atol=0, rtol=0)
    _, tl_cache = tl.module.run_with_cache(ids)
    torch.testing.assert_close(run.cache["layers.1"], tl_cache["blocks.1.hook_resid_post"])
