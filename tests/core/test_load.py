"""causalscope.load: bundled names, local HF directories, in-memory models; outputs equal the originals."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_tiny_lm
from conftest import LM_ARCHS, hooked_transformer


@pytest.mark.parametrize("arch", LM_ARCHS)
def test_local_hf_directory_loads_with_tokenizer_and_same_outputs(tmp_path, arch):
    model, tok = build_tiny_lm(arch, seed=3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    m = cs.load(tmp_path / "m")
    assert m.adapter.kind == "hf-causal-lm" and m.tokenizer is not None
    ids = tok("the cat sat on the mat", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    torch.testing.assert_close(m.run("the cat sat on the mat").output, ref, rtol=0, atol=0)


def test_in_memory_hf_model_and_tokenizer_are_used_in_place():
    model, tok = build_tiny_lm("gpt2")
    m = cs.load(model, tok)
    assert m.module is model and m.tokenizer is tok
    assert "layers.3.attn.z" in m.site_names()


def test_bundled_names_and_generic_modules():
    assert set(cs.zoo.names()) >= {"tiny-gpt2", "tiny-neox", "tiny-llama", "mlp"}
    for name in cs.zoo.names():
        m = cs.load(name)
        assert m.name == name
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    m = cs.load(net)
    assert m.adapter.kind == "module" and m.site_names() == ["0", "1"]
    assert cs.load(m) is m


def test_hooked_transformer_gets_its_adapter_and_generic_flag_overrides():
    ht = hooked_transformer()
    assert cs.load(ht).adapter.kind == "transformer-lens"
    model, tok = build_tiny_lm("llama")
    assert cs.load(model, tok, generic=True).adapter.kind == "module"


def test_load_errors_name_the_fix(tmp_path):
    with pytest.raises(cs.InputError, match="bundled model"):
        cs.load("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(cs.InputError, match="config.json"):
        cs.load(tmp_path / "empty")
    with pytest.raises(cs.InputError, match="nn.Module"):
        cs.load(3.14)
