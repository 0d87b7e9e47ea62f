"""Every family of the Hugging Face architecture table, each from a tiny random config (2 layers, d 64, vocab 96,
8-token prompts), against references written here: the module each canonical site must be (a table of this
test, not the adapter's) and what it must hold (block output - block input = attention write + MLP write); the
segmented forward equals the model's own logits; causal_trace (hidden, mlp, attn; both schedules) equals a naive
ROME loop (plain torch hooks, one forward per cell); the resid_pre activation-patching map equals a naive hook
loop; integrated gradients equal captum's LayerIntegratedGradients. Sliding windows (Mistral, Phi-3, Qwen2,
Gemma-2/3) are shorter than the prompt, so the windowed masks matter; ALiBi (BLOOM, Falcon), parallel attention
(GPT-J, NeoX, Phi, Falcon), post-norms and soft-capping (Gemma-2/3, OLMo-2) and mixtures of experts (Mixtral,
Qwen2-MoE) are all in."""
from __future__ import annotations

import copy
import functools
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import transformers as tf
from torch import nn

import causalscope as cs
from causalscope.core.adapters import ARCHS, ArchitectureWarning
from causalscope.zoo import word_tokenizer
from plain_hooks import hook

D, V, L = 64, 96, 2
PROMPT, SUBJECT = "the old king saw a river near the", "old king"            # 8 tokens, subject = tokens 1..2
CLEAN = ["the old king saw a river near the", "a big red car ran by the house"]
CORRUPTED = ["the old dog saw a river near the", "a big red cat ran by the house"]
IDS = dict(vocab_size=V, bos_token_id=0, eos_token_id=0, pad_token_id=0)
LLAMA = dict(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=L, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32, **IDS)


@dataclass(frozen=True)
class Case:
    """A family's tiny model and where its canonical sites must be (module paths; block parts per block)."""

    model: str                     # transformers *ForCausalLM class
    config: Callable[[], Any]
    blocks: str
    attn: str                      # the attention write into the residual stream
    mlp: str | None                # the MLP write (None: OPT has no MLP module)
    z: str                         # per-head outputs = this module's input
    embed: str
    final_norm: str


def _llama_like(model: str, config: Callable[[], Any], attn: str = "self_attn", mlp: str = "mlp") -> Case:
    return Case(model, config, "model.layers", attn, mlp, "self_attn.o_proj", "model.embed_tokens", "model.norm")


POST = dict(attn="post_attention_layernorm", mlp="post_feedforward_layernorm")
CASES: dict[str, Case] = {
    "gpt2": Case("GPT2LMHeadModel", lambda: tf.GPT2Config(n_layer=L, n_embd=D, n_head=4, n_positions=32, **IDS),
                 "transformer.h", "attn", "mlp", "attn.c_proj", "transformer.wte", "transformer.ln_f"),
    "gpt_neo": Case("GPTNeoForCausalLM", lambda: tf.GPTNeoConfig(
        num_layers=L, attention_types=[[["global", "local"], 1]], hidden_size=D, num_heads=4, window_size=4,
        max_position_embeddings=32, **IDS), "transformer.h", "attn", "mlp", "attn.attention.out_proj",
        "transformer.wte", "transformer.ln_f"),
    "gptj": Case("GPTJForCausalLM", lambda: tf.GPTJConfig(n_layer=L, n_embd=D, n_head=4, rotary_dim=8, n_positions=32,
                                                          **IDS),
                 "transformer.h", "attn", "mlp", "attn.out_proj", "transformer.wte", "transformer.ln_f"),
    "gpt_neox": Case("GPTNeoXForCausalLM", lambda: tf.GPTNeoXConfig(
        hidden_size=D, num_hidden_layers=L, num_attention_heads=4, intermediate_size=2 * D, max_position_embeddings=32,
        rotary_pct=0.5, **IDS), "gpt_neox.layers", "attention", "mlp", "attention.dense", "gpt_neox.embed_in",
        "gpt_neox.final_layer_norm"),
    "gpt_neox-sequential": Case("GPTNeoXForCausalLM", lambda: tf.GPTNeoXConfig(
        hidden_size=D, num_hidden_layers=L, num_attention_heads=4, intermediate_size=2 * D, max_position_embeddings=32,
        use_parallel_residual=False, **IDS), "gpt_neox.layers", "attention", "mlp", "attention.dense",
        "gpt_neox.embed_in", "gpt_neox.final_layer_norm"),
    "opt": Case("OPTForCausalLM", lambda: tf.OPTConfig(hidden_size=D, num_hidden_layers=L, ffn_dim=2 * D,
                                                       num_attention_heads=4, max_position_embeddings=32,
                                                       word_embed_proj_dim=D, **IDS),
                "model.decoder.layers", "self_attn", None, "self_attn.out_proj", "model.decoder.embed_tokens",
                "model.decoder.final_layer_norm"),
    "opt-project-in": Case("OPTForCausalLM", lambda: tf.OPTConfig(  # embeddings narrower than the residual (350m)
        hidden_size=D, num_hidden_layers=L, ffn_dim=2 * D, num_attention_heads=4, max_position_embeddings=32,
        word_embed_proj_dim=D // 2, **IDS), "model.decoder.layers", "self_attn", None, "self_attn.out_proj",
        "model.decoder.project_in", "model.decoder.final_layer_norm"),
    "bloom": Case("BloomForCausalLM", lambda: tf.BloomConfig(hidden_size=D, n_layer=L, n_head=4, **IDS),
                  "transformer.h", "self_attention.dense", "mlp.dense_4h_to_h", "self_attention.dense",
                  "transformer.word_embeddings", "transformer.ln_f"),
    "falcon": Case("FalconForCausalLM", lambda: tf.FalconConfig(hidden_size=D, num_hidden_layers=L,
                                                                num_attention_heads=4, parallel_attn=True, **IDS),
                   "transformer.h", "self_attention", "mlp", "self_attention.dense", "transformer.word_embeddings",
                   "transformer.ln_f"),
    "falcon-alibi": Case("FalconForCausalLM", lambda: tf.FalconConfig(
        hidden_size=D, num_hidden_layers=L, num_attention_heads=4, alibi=True, parallel_attn=False, **IDS),
        "transformer.h", "self_attention", "mlp", "self_attention.dense", "transformer.word_embeddings",
        "transformer.ln_f"),
    "falcon-new-decoder": Case("FalconForCausalLM", lambda: tf.FalconConfig(  # Falcon-40B style: GQA, two norms
        hidden_size=D, num_hidden_layers=L, num_attention_heads=4, new_decoder_architecture=True, num_kv_heads=2,
        **IDS), "transformer.h", "self_attention", "mlp", "self_attention.dense", "transformer.word_embeddings",
        "transformer.ln_f"),
    "phi": Case("PhiForCausalLM", lambda: tf.PhiConfig(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=L,
                                                       num_attention_heads=4, partial_rotary_factor=0.5,
                                                       max_position_embeddings=32, **IDS),
                "model.layers", "self_attn", "mlp", "self_attn.dense", "model.embed_tokens", "model.final_layernorm"),
    "phi3": _llama_like("Phi3ForCausalLM", lambda: tf.Phi3Config(sliding_window=4, **LLAMA)),
    "llama": _llama_like("LlamaForCausalLM", lambda: tf.LlamaConfig(**LLAMA)),
    "mistral": _llama_like("MistralForCausalLM", lambda: tf.MistralConfig(sliding_window=4, **LLAMA)),
    "mixtral": _llama_like("MixtralForCausalLM", lambda: tf.MixtralConfig(num_local_experts=4, num_experts_per_tok=2,
                                                                          **LLAMA), mlp="mlp|block_sparse_moe"),
    "qwen2_moe": _llama_like("Qwen2MoeForCausalLM", lambda: tf.Qwen2MoeConfig(
        moe_intermediate_size=32, shared_expert_intermediate_size=64, num_experts=4, num_experts_per_tok=2, **LLAMA)),
    "qwen2": _llama_like("Qwen2ForCausalLM", lambda: tf.Qwen2Config(use_sliding_window=True, sliding_window=4,
                                                                    max_window_layers=1, **LLAMA)),
    "qwen3": _llama_like("Qwen3ForCausalLM", lambda: tf.Qwen3Config(head_dim=16, **LLAMA)),
    "gemma": _llama_like("GemmaForCausalLM", lambda: tf.GemmaConfig(head_dim=16, **LLAMA)),
    "gemma2": _llama_like("Gemma2ForCausalLM", lambda: tf.Gemma2Config(
        head_dim=16, sliding_window=4, attn_logit_softcapping=20.0, final_logit_softcapping=10.0, **LLAMA), **POST),
    "gemma3": _llama_like("Gemma3ForCausalLM", lambda: tf.Gemma3TextConfig(
        head_dim=16, sliding_window=4, final_logit_softcapping=10.0, layer_types=["sliding_attention", "full_attention"],
        **LLAMA), **POST),
    "olmo": _llama_like("OlmoForCausalLM", lambda: tf.OlmoConfig(**LLAMA)),
    "olmo2": _llama_like("Olmo2ForCausalLM", lambda: tf.Olmo2Config(**LLAMA), **POST),
    "stablelm": _llama_like("StableLmForCausalLM", lambda: tf.StableLmConfig(partial_rotary_factor=0.25, **LLAMA)),
}
ARCH_NAMES = list(CASES)


@functools.cache
def _model(arch: str) -> tuple[nn.Module, Any]:
    """The tiny model with seeded weights of std 0.3 (matrices; norms and biases as initialised), so that the
    prediction depends visibly on the subject, and the word tokenizer."""
    case = CASES[arch]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = getattr(tf, case.model)(case.config()).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model, word_tokenizer()


def load(arch: str) -> tuple[cs.Model, nn.Module]:
    model, tok = _model(arch)
    try:
        return cs.load(model, tok, name=f"tiny-{arch}"), model
    except cs.InputError as e:  # an older transformers whose blocks of this family want other arguments
        if "segmented forward does not supply" in str(e) or "Falcon with alibi=True: the blocks" in str(e):
            pytest.skip(f"transformers {tf.__version__}: {e}")
        raise


def path(case: Case, site: str, layer: int, model: nn.Module | None = None) -> str:
    """The module path of a site; ``"a|b"`` names that differ across transformers versions pick the one
    ``model`` has."""
    part = {"hidden": None, "attn": case.attn, "mlp": case.mlp, "z": case.z}[site]
    alts = [f"{case.blocks}.{layer}" + (f".{p}" if p else "") for p in (part or "").split("|")]
    names = dict(model.named_modules()) if model is not None else {}
    return next((a for a in alts if a in names), alts[0])


def test_every_table_family_is_tested():
    assert {_model(arch)[0].config.model_type for arch in CASES} == set(ARCHS)


# ---------------------------------------------------------------------------------------------------- sites
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_canonical_sites_are_the_right_modules(arch):
    m, model = load(arch)
    case, al = CASES[arch], m.adapter.aliases()
    n_heads = model.config.num_attention_heads
    for i in range(L):
        assert al[f"layers.{i}"] == (path(case, "hidden", i, model), "output", None)
        assert al[f"layers.{i}.attn"] == (path(case, "attn", i, model), "output", None)
        assert al[f"layers.{i}.attn.z"] == (path(case, "z", i, model), "input", n_heads)
        if case.mlp is None:
            with pytest.raises(cs.SiteError, match=r"OPT has no site 'layers.1.mlp'.*fc1 / fc2"):
                m.run(PROMPT, cache=["layers.1.mlp"])
        else:
            assert al[f"layers.{i}.mlp"] == (path(case, "mlp", i, model), "output", None)
    head = next(n for n, mod in model.named_modules() if mod is model.get_output_embeddings())
    assert al["embed"][0] == case.embed and al["final_norm"][0] == case.final_norm and al["unembed"][0] == head
    assert set(al) <= set(m.site_names())

    # what they hold: each block adds its attention and MLP writes to the residual stream; the heads split z;
    # the logits are the unembedding's output (soft-capped for Gemma-2/3)
    sites = ["embed", "final_norm", "unembed"] + [f"layers.{i}{s}" for i in range(L)
                                                  for s in ("", ".attn", ".attn.z") + ((".mlp",) if case.mlp else ())]
    run = m.run(PROMPT, cache=sites + [cs.Site("layers.0", io="input")])
    T = 8
    assert run.cache["layers.0.attn.z"].shape[:2] == (1, T) and run.cache["layers.0.attn.z"].shape[-1] % n_heads == 0
    for i in range(L) if case.mlp else ():
        before = run.cache[cs.Site("layers.0", io="input").name] if i == 0 else run.cache[f"layers.{i - 1}"]
        torch.testing.assert_close(run.cache[f"layers.{i}"] - before,
                                   run.cache[f"layers.{i}.attn"] + run.cache[f"layers.{i}.mlp"], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        logits = model(input_ids=m.adapter.tokenize(PROMPT)).logits
    cap = getattr(model.config, "final_logit_softcapping", None)
    want = run.cache["unembed"] if cap is None else torch.tanh(run.cache["unembed"] / cap) * cap
    torch.testing.assert_close(want, logits, rtol=0, atol=1e-5)
    assert m.adapter.describe()["family"] == ARCHS[model.config.model_type].family


# ---------------------------------------------------------------------------------------------------- segments
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_segmented_forward_equals_the_model(arch):
    m, model = load(arch)
    ids = m.adapter.tokenize(CLEAN)
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits
    a = m.adapter
    torch.testing.assert_close(a.forward_from(a.embed(ids), layer=0), want, rtol=1e-5, atol=1e-5)
    run = m.run(ids, cache=["layers.0"], keep_kv=True)
    for layer, pos in [(0, 3), (0, 6), (1, 2), (1, 5)]:  # positions past the window of 4 read keys outside it
        h = a.embed(ids[:, pos:], start_pos=pos) if layer == 0 else run.cache["layers.0"][:, pos:]
        # (against cached keys / values: float32 rounding of logits up to ~10, as in the model's own cached runs)
        torch.testing.assert_close(a.forward_from(h, layer=layer, pos=pos, past=run.kv), want[:, pos:], rtol=1e-5,
                                   atol=5e-5)
        last = a.forward_from(h, layer=layer, pos=pos, past=run.kv, last_only=True)
        torch.testing.assert_close(last[:, 0], want[:, -1], rtol=1e-5, atol=5e-5)


# ---------------------------------------------------------------------------------------------------- tracing
def naive_trace(model: nn.Module, case: Case, ids: torch.Tensor, b: int, e: int, draws: torch.Tensor, kind: str,
                window: int) -> tuple[torch.Tensor, float, float]:
    """ROME's calculate_hidden_flow, plainly: N+1 rows (row 0 clean, rows 1.. noised subject embeddings), one
    forward per (token, layer) cell restoring row 0's value at that token in the rows 1.."""
    N, T = draws.shape[0], ids.shape[1]
    inp = ids.expand(N + 1, -1)

    def noise(x):
        x = x.clone()
        x[1:, b:e] += draws.to(x.dtype)
        return x

    def run(restore: list[str], t: int = 0) -> torch.Tensor:
        def put(x):
            x = x.clone()
            x[1:, t] = x[0, t]
            return x
        handles = []
        try:
            handles.append(hook(model.get_submodule(case.embed), "output", noise))
            handles += [hook(model.get_submodule(p), "output", put) for p in restore]
            with torch.no_grad():
                return model(input_ids=inp, use_cache=False).logits[:, -1]
        finally:
            for h in handles:
                h.remove()

    clean = run([])
    answer = int(clean[0].argmax())
    score = lambda lg: float(lg[1:].softmax(-1).mean(0)[answer])  # noqa: E731
    table = torch.zeros(T, L)
    for t, layer in itertools.product(range(T), range(L)):
        if kind == "hidden":
            restore = [path(case, "hidden", layer, model)]
        else:
            restore = [path(case, kind, j, model) for j in range(max(0, layer - window // 2), min(L, layer - (-window // 2)))]
        table[t, layer] = score(run(restore, t))
    return table, score(clean), float(clean[0].softmax(-1)[answer])


@pytest.mark.parametrize("kind", ["hidden", "mlp", "attn"])
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_causal_trace_equals_naive_rome_loop(arch, kind):
    m, model = load(arch)
    case = CASES[arch]
    draws = 2.0 * torch.randn(3, 2, D, generator=torch.Generator().manual_seed(2))
    if kind == "mlp" and case.mlp is None:
        with pytest.raises(cs.SiteError, match="OPT has no site"):
            cs.causal_trace(m, PROMPT, SUBJECT, kind=kind, window=2, noise=draws)
        return
    b, e = cs.subject_range(m, PROMPT, SUBJECT)
    assert (b, e) == (1, 3)
    ref, low, high = naive_trace(model, case, m.adapter.tokenize(PROMPT), b, e, draws, kind, window=2)
    for schedule in ("floor", "batched"):
        r = cs.causal_trace(m, PROMPT, SUBJECT, kind=kind, window=2, noise=draws, schedule=schedule)
        assert r.low_score == pytest.approx(low, abs=1e-6) and r.high_score == pytest.approx(high, abs=1e-6)
        torch.testing.assert_close(r.scores, ref, rtol=0, atol=1e-5, msg=f"{arch} {kind} {schedule}")
    assert (ref - low).abs().max() > 1e-3  # the trace is not flat: the comparison can fail


# ---------------------------------------------------------------------------------------------------- patching
def naive_resid_pre(model: nn.Module, case: Case, clean: torch.Tensor, corrupted: torch.Tensor,
                    metric: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(direction, layer, position) mean metric: the base run with one position of block l's input taken from
    the source run (plain pre-hooks), one forward per cell; directions denoise (base corrupted), noise."""
    def value(inp, layer=None, edit=None):
        h = hook(model.get_submodule(path(case, "hidden", layer, model)), "input", edit) if edit else None
        try:
            with torch.no_grad():
                return float(metric(model(input_ids=inp, use_cache=False).logits).double().mean())
        finally:
            if h is not None:
                h.remove()

    def captured(inp, layer):
        box = {}

        def keep(x):
            box["x"] = x.detach().clone()
        value(inp, layer, keep)
        return box["x"]

    T = clean.shape[1]
    out = torch.zeros(2, L, T, dtype=torch.float64)
    for k, (base, source) in enumerate([(corrupted, clean), (clean, corrupted)]):
        for layer in range(L):
            src = captured(source, layer)
            for t in range(T):
                def write(x, t=t):
                    x = x.clone()
                    x[:, t] = src[:, t]
                    return x
                out[k, layer, t] = value(base, layer, write)
    return out


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_resid_pre_patching_equals_naive_loop(arch):
    m, model = load(arch)
    clean, corrupted = m.adapter.tokenize(CLEAN), m.adapter.tokenize(CORRUPTED)
    correct, wrong = [5, 7], [9, 11]
    rows = torch.arange(2)
    ref_metric = lambda y: y[rows, -1, torch.tensor(correct)] - y[rows, -1, torch.tensor(wrong)]  # noqa: E731
    ref = naive_resid_pre(model, CASES[arch], clean, corrupted, ref_metric)
    for schedule in ("floor", "batched"):
        r = cs.activation_patching(m, clean, corrupted, "resid_pre", cs.logit_diff(correct, wrong), schedule=schedule)
        assert r.dims == ("direction", "layer", "position")
        torch.testing.assert_close(r.raw.values.double(), ref, rtol=0, atol=1e-4, msg=f"{arch} {schedule}")
    assert (ref[:, :, 2:4] - ref[:, :, :1]).abs().max() > 1e-2  # the differing tokens matter


# ---------------------------------------------------------------------------------------------------- IG
class _Tap(nn.Module):
    """``inner`` with an ``nn.Identity`` on its main output, for captum to hook where ``inner`` returns a tuple
    (the mixture-of-experts blocks of transformers 4.x return (hidden, router logits), and captum attributes to
    every tensor of a tuple)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.tap = inner, nn.Identity()

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        return (self.tap(out[0]), *out[1:]) if isinstance(out, tuple) else self.tap(out)


def _captum_layer(model: nn.Module, module: str) -> tuple[nn.Module, nn.Module]:
    """(the model captum runs, the layer it hooks): ``model`` itself, or a copy with a tuple-returning module tapped."""
    with torch.no_grad():
        box: dict = {}
        h = model.get_submodule(module).register_forward_hook(lambda mod, a, out: box.setdefault("out", out))
        try:
            model(input_ids=torch.tensor([[1, 2]]), use_cache=False)
        finally:
            h.remove()
    if not isinstance(box["out"], tuple):
        return model, model.get_submodule(module)
    ref = copy.deepcopy(model)
    parent, _, name = module.rpartition(".")
    tapped = _Tap(ref.get_submodule(module))
    setattr(ref.get_submodule(parent), name, tapped)
    return ref, tapped.tap


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_integrated_gradients_equal_captum(arch):
    captum_attr = pytest.importorskip("captum.attr")
    m, model = load(arch)
    case = CASES[arch]
    ids, baseline = m.adapter.tokenize(CLEAN), m.adapter.tokenize(CORRUPTED)
    # (site, its module, whether captum reads the module's input): per-head outputs are the input of the output
    # projection; block 1's input is block 0's output
    sites: list[tuple[Any, str, bool]] = [("layers.0.attn.z", path(case, "z", 0, model), True)]
    c = model.config
    if c.model_type == "falcon" and (c.parallel_attn or c.new_decoder_architecture):
        # parallel attention adds to the MLP output in place, where captum's leaf fails: a naive IG instead
        _falcon_mlp_ig_equals_a_naive_loop(m, model, case, ids, baseline)
        sites.append((cs.Site("layers.1", io="input"), path(case, "hidden", 1, model), True))
    elif case.mlp:
        sites.append(("layers.1.mlp", path(case, "mlp", 1, model), False))
    for site, module, to_input in sites:
        r = cs.integrated_gradients(m, ids, baseline, site, target=5, steps=8)
        ref, layer = _captum_layer(model, module) if not to_input else (model, model.get_submodule(module))
        forward = lambda i: ref(input_ids=i, use_cache=False).logits[:, -1]  # noqa: E731
        lig = captum_attr.LayerIntegratedGradients(forward, layer, multiply_by_inputs=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # captum's own deprecation noise
            attr, delta = lig.attribute(ids, baseline, target=5, n_steps=8, return_convergence_delta=True,
                                        attribute_to_layer_input=to_input)
        attr = attr[0] if isinstance(attr, (tuple, list)) else attr
        assert r.meta["segment"] is not None  # the grad rows ran the segmented forward
        torch.testing.assert_close(r.attributions.reshape(attr.shape), attr.detach(), rtol=0, atol=1e-4,
                                   msg=f"{arch} {site}")
        torch.testing.assert_close(r.delta, delta.detach().double(), rtol=0, atol=1e-4)
        assert attr.abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------- the rest
def test_keys_and_values_of_sliding_window_layers_cover_every_position():
    """keep_kv keeps every position of a sliding-window layer (the model's own cache keeps only the window, and
    kv_cache refuses such a cache instead of reading it as the first positions)."""
    m, model = load("mistral")
    ids = m.adapter.tokenize(PROMPT)
    run = m.run(ids, keep_kv=True)
    assert all(k.shape[2] == 8 and v.shape[2] == 8 for k, v in run.kv)
    with torch.no_grad():
        own = model(input_ids=ids, use_cache=True)
    with pytest.raises(cs.InputError, match="Layer 0 of this cache is a sliding window: it kept 3 of 8 positions"):
        m.adapter.kv_cache(own)


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
def test_mixture_of_experts_sites(arch):
    """The MoE block is layers.i.mlp; experts are fused (one module, 3-D weights, tokens flattened): no per-expert
    sub-site, and the experts module is refused as a site with the reason."""
    m, model = load(arch)
    moe = path(CASES[arch], "mlp", 0, model)
    assert "fused" in (ARCHS[model.config.model_type].experts or "")
    with pytest.raises(cs.SiteError, match="Unknown site 'layers.0.mlp.experts.0'"):
        m.run(PROMPT, cache=["layers.0.mlp.experts.0"])
    experts = model.get_submodule(f"{moe}.experts")
    if not isinstance(experts, nn.ModuleList):  # transformers 5: one module, (experts, d, d_expert) weights
        assert isinstance(experts.down_proj, nn.Parameter) and experts.down_proj.ndim == 3
        with pytest.raises(cs.SiteError, match=rf"'{moe}.experts' \(output\) is \(8, 64\), whose dim 0 is not"):
            m.run(PROMPT, cache=[f"{moe}.experts"])
    assert m.run(PROMPT, cache=["layers.0.mlp"]).cache["layers.0.mlp"].shape == (1, 8, D)


def test_unknown_architecture_warns_and_still_takes_prompts():
    """A causal LM with no table entry: a visible warning naming its module paths and what does not work; the
    plain adapter still tokenizes prompts (different lengths padded on the right, each row as alone)."""
    tok = word_tokenizer()
    cfg = tf.GraniteConfig(**LLAMA)
    assert cfg.model_type not in ARCHS
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = tf.GraniteForCausalLM(cfg).eval()
    with pytest.warns(ArchitectureWarning, match=r"model_type 'granite'.*blocks 'model.layers.0' .. 'model.layers.1' .*'self_attn', "
                                                  r"'mlp'.*What does not: the canonical names.*causal_trace"):
        m = cs.load(model, tok)
    assert m.adapter.kind == "module" and issubclass(ArchitectureWarning, UserWarning)
    prompts = ["the cat sat on the mat", "a dog ran"]
    out = m.run(prompts).output
    for i, p in enumerate(prompts):
        ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            alone = model(input_ids=ids, use_cache=False).logits[0]
        torch.testing.assert_close(out[i, : ids.shape[1]], alone, rtol=0, atol=1e-5)
    run = m.run("the cat sat", cache=["model.layers.0"])
    assert run.cache["model.layers.0"].shape == (1, 3, D)
    with pytest.raises(cs.InputError, match="causal tracing needs"):
        cs.causal_trace(m, "the cat sat on the mat", "cat", samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchitectureWarning)
        assert cs.load(model, tok, generic=True).adapter.kind == "module"  # asked for: no warning
    with pytest.raises(cs.InputError, match="Cannot feed str to GraniteForCausalLM.*Prompts need a tokenizer"):
        cs.load(model, generic=True).run("the cat")


def _falcon_mlp_ig_equals_a_naive_loop(m: cs.Model, model: nn.Module, case: Any, ids: torch.Tensor,
                                       baseline: torch.Tensor, steps: int = 6) -> None:
    """IG at the MLP output of a block that adds to it in place, against a plain-hook loop (right Riemann sum):
    each path point is a gradient leaf, and the block gets a copy of it to change."""
    module = model.get_submodule(path(case, "mlp", 1, model))
    acts = {}
    for name, x in (("x", ids), ("b", baseline)):
        h = module.register_forward_hook(lambda mod, inp, out, name=name: acts.__setitem__(name, out.detach().clone()))
        with torch.no_grad():
            model(input_ids=x, use_cache=False)
        h.remove()
    total = torch.zeros_like(acts["x"])
    for k in range(1, steps + 1):
        point = (acts["b"] + k / steps * (acts["x"] - acts["b"])).requires_grad_(True)
        h = module.register_forward_hook(lambda mod, inp, out: point.clone())
        try:
            y = model(input_ids=ids, use_cache=False).logits[:, -1, 5].sum()
            total += torch.autograd.grad(y, point)[0] / steps
        finally:
            h.remove()
    expected = (acts["x"] - acts["b"]) * total
    r = cs.integrated_gradients(m, ids, baseline, "layers.1.mlp", target=5, steps=steps, method="riemann_right")
    torch.testing.assert_close(r.attributions.to(expected.dtype), expected, atol=1e-5, rtol=1e-4)
