"""The suite's warning filters (pyproject.toml, [tool.pytest.ini_options] filterwarnings) turn causalscope's own
deprecated calls into transformers into errors and leave third-party deprecation noise alone; and causalscope
makes no deprecated call: the segmented forward passes ``cache=`` (not ``past_key_values=`` / ``layer_past=``).

transformers' ``deprecate_kwarg`` warns with ``stacklevel=2``: the warning names the caller of the decorated
function. For a function we call directly (``create_causal_mask``) that is our module; for a module's
``forward`` it is torch's ``nn.Module`` call machinery (``torch.nn.modules.module``), whoever called the module.
"""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from _pytest.config import parse_warning_filter

import causalscope as cs
from causalscope.zoo import word_tokenizer

PROMPT = "the old king saw a river near the city"


def _cache_is_the_new_name() -> bool:
    from transformers.masking_utils import create_causal_mask

    return "cache" in inspect.signature(create_causal_mask).parameters


#: transformers releases before the rename take past_key_values as the current name: nothing is deprecated there
renamed = pytest.mark.skipif(not _cache_is_the_new_name(), reason="this transformers has no `cache` keyword yet "
                                                                   "(past_key_values is not deprecated)")


def _suite_filters(config) -> warnings.catch_warnings:
    """A warnings context holding exactly the suite's configured filters (not any -W given on the command line)."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for arg in config.getini("filterwarnings"):
        warnings.filterwarnings(*parse_warning_filter(arg, escape=False))
    return ctx


def _qwen2() -> tuple[torch.nn.Module, object]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = word_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      use_sliding_window=True, sliding_window=4, max_window_layers=1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Qwen2ForCausalLM(cfg).eval(), tok


def _run_as(module_name: str, code: str, namespace: dict) -> None:
    """Run ``code`` as if it were written in module ``module_name`` (warnings are attributed to that name)."""
    exec(compile(code, f"<{module_name}>", "exec"), {"__name__": module_name, **namespace})  # noqa: S102


@renamed
def test_deprecated_call_from_causalscope_is_an_error_and_from_elsewhere_is_not(request):
    from transformers.masking_utils import create_causal_mask

    model, _ = _qwen2()
    ns = {"f": create_causal_mask, "config": model.config, "x": torch.zeros(1, 3, 32)}
    call = "f(config=config, inputs_embeds=x, attention_mask=None, past_key_values=None)"
    ctx = _suite_filters(request.config)
    try:
        with pytest.raises(FutureWarning, match="`past_key_values` is deprecated"):
            _run_as("causalscope.core.adapters._hf", call, ns)
        _run_as("some_library.internals", call, ns)  # third-party noise: ignored, no error
        _run_as("causalscope_docs_page", call, ns)   # a module whose name merely starts with "causalscope"
        _run_as("causalscope.core.adapters._hf", call.replace("past_key_values", "cache"), ns)  # the new form
    finally:
        ctx.__exit__(None, None, None)


@renamed
def test_deprecated_keyword_to_a_module_forward_is_an_error(request):
    """A block, an attention module or the model called with ``past_key_values=``: the warning names the code
    that dispatches forward (transformers' checkpointing layer, hub kernels, torch's nn.Module), not the caller,
    so the filter matches its message there."""
    model, _ = _qwen2()
    block, x, ids = model.model.layers[0], torch.zeros(1, 3, 32), torch.tensor([[1, 2, 3]])
    pe = model.model.rotary_emb(x, position_ids=torch.arange(3)[None])
    calls = {"Qwen2DecoderLayer": lambda **kw: block(x, position_embeddings=pe, **kw),
             "Qwen2Attention": lambda **kw: block.self_attn(x, position_embeddings=pe, attention_mask=None, **kw),
             "Qwen2ForCausalLM": lambda **kw: model(ids, **kw)}
    seen = set()
    ctx = _suite_filters(request.config)
    try:
        for cls, call in calls.items():
            with pytest.raises(FutureWarning, match=f"`past_key_values` is deprecated .* for `{cls}.forward`"):
                call(past_key_values=None)
            call(cache=None)  # the current form: no warning
            with warnings.catch_warnings(record=True) as w:  # where the warning is attributed
                warnings.simplefilter("always")
                call(past_key_values=None)
            seen |= {m.filename.rsplit("site-packages/", 1)[-1].split("/")[0] for m in w}
    finally:
        ctx.__exit__(None, None, None)
    assert seen <= {"torch", "transformers", "kernels"} and "transformers" in seen, seen


def test_causalscope_makes_no_deprecated_call_into_transformers():
    """Causal tracing, patching, IG and keep_kv runs on a Qwen2 (sliding window) and a GPT-NeoX model (whose blocks
    took ``layer_past``) with every FutureWarning an error."""
    from causalscope.zoo import build_tiny_lm

    for model, tok in (_qwen2(), build_tiny_lm("gpt_neox")):
        m = cs.load(model, tok)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            r = cs.causal_trace(m, PROMPT, "old king", samples=2, noise=1.0, kind="mlp", window=2)
            cs.causal_trace(m, PROMPT, "old king", samples=2, noise=1.0, schedule="batched")
            run = m.run(PROMPT, keep_kv=True)
            ids = m.adapter.tokenize(PROMPT)
            m.forward_from(m.adapter.embed(ids[:, 3:], start_pos=3), layer=0, pos=3, past=run.kv)
            corrupted = m.adapter.tokenize("the old dog saw a river near the city")
            cs.activation_patching(m, ids, corrupted, "resid_pre", cs.logit_diff([3], [4]))
            cs.integrated_gradients(m, ids, corrupted, "layers.0", target=3, steps=2)
        assert r.scores.shape == (9, 2 if "qwen" in type(model).__name__.lower() else 4)
