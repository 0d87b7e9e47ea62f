"""Circuit graphs of Hugging Face Llama-family (Llama, Mistral, Qwen2, Qwen3) and GPT-NeoX models, against the
models' own forwards: logits, per-head writes (the output projection's input split per head, captured with
plain hooks) and exact edge patching against a naive graph forward built from the models' own attention
modules (one receiver input at a time)."""
from __future__ import annotations

import warnings
from collections.abc import Collection, Iterator

import pytest
import torch
from torch import nn

import causalscope as cs
from causalscope import InputError, circuits
from causalscope.circuits import ComputeGraph
from causalscope.core.adapters._graph_parts_llama import LlamaParts, graph_parts_for
from causalscope.core.adapters._graph_parts_neox import NeoXParts
from model_state import assert_same, snapshot

tf = pytest.importorskip("transformers")

L, H, D, V, T = 2, 4, 32, 50, 6
SMALL = dict(vocab_size=V, hidden_size=D, intermediate_size=48, num_hidden_layers=L, num_attention_heads=H,
             max_position_embeddings=32, initializer_range=0.1)


def _configs() -> dict[str, tuple[type, object]]:
    return {
        # grouped-query attention (2 query heads per key / value head), biases everywhere (o_proj included)
        "llama": (tf.LlamaForCausalLM, tf.LlamaConfig(**SMALL, num_key_value_heads=2, attention_bias=True)),
        # multi-query attention and a sliding window shorter than the prompts
        "mistral": (tf.MistralForCausalLM, tf.MistralConfig(**SMALL, num_key_value_heads=1, sliding_window=3)),
        # q/k/v biases, no o_proj bias; layer 1 slides (max_window_layers=1), layer 0 does not
        "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config(**SMALL, num_key_value_heads=2, use_sliding_window=True,
                                                      sliding_window=3, max_window_layers=1)),
        # per-head q/k RMSNorm, head_dim (12) != hidden / heads (8)
        "qwen3": (tf.Qwen3ForCausalLM, tf.Qwen3Config(**SMALL, num_key_value_heads=2, head_dim=12)),
        # parallel attention + MLP, partial rotary
        "neox_parallel": (tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(**SMALL, use_parallel_residual=True,
                                                                 rotary_pct=0.5)),
        "neox_sequential": (tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(**SMALL, use_parallel_residual=False)),
    }


NAMES = list(_configs())


def build(name: str, seed: int = 0) -> nn.Module:
    cls, cfg = _configs()[name]
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():  # random biases and norm weights, so that every term of the graph is exercised
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname:
                p.add_(0.1 * torch.randn_like(p))
    return model


def toks(seed: int, n: int = 3) -> torch.Tensor:
    return torch.randint(0, V, (n, T), generator=torch.Generator().manual_seed(seed))


def parallel(model: nn.Module) -> bool:
    return bool(getattr(model.config, "use_parallel_residual", False))


# ------------------------------------------------------------------------------------------------------------
# the model's own modules, read with plain hooks
# ------------------------------------------------------------------------------------------------------------
def modules(model: nn.Module) -> tuple[nn.Module, nn.ModuleList, str, str]:
    """(base model, its layers, the attention attribute, the output projection attribute)."""
    if hasattr(model, "gpt_neox"):
        return model.gpt_neox, model.gpt_neox.layers, "attention", "dense"
    return model.model, model.model.layers, "self_attn", "o_proj"


def split_heads(z: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
    """Per-head writes (B, T, H, d): head h's slice of the projection input times its weight columns."""
    e = z.shape[-1] // H
    return torch.stack([z[..., h * e:(h + 1) * e] @ proj.weight[:, h * e:(h + 1) * e].T for h in range(H)], 2)


def own_run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's logits (use_cache=False) and every sender's output from that one run: the block-0 input,
    the output projection's input split per head, each MLP's output; plus each attention's output."""
    base, layers, attn, proj = modules(model)
    seen: dict[str, torch.Tensor] = {}
    handles = [layers[0].register_forward_pre_hook(
        lambda m, a, kw: seen.__setitem__("embed", kw["hidden_states"] if "hidden_states" in kw else a[0]),
        with_kwargs=True)]
    for layer, block in enumerate(layers):
        att = getattr(block, attn)
        handles.append(getattr(att, proj).register_forward_pre_hook(
            lambda m, a, layer=layer: seen.__setitem__(f"z{layer}", a[0])))
        handles.append(att.register_forward_hook(lambda m, a, o, layer=layer: seen.__setitem__(f"attn{layer}", o[0])))
        handles.append(block.mlp.register_forward_hook(lambda m, a, o, layer=layer: seen.__setitem__(f"m{layer}", o)))
    try:
        with torch.no_grad():
            logits = model(x, use_cache=False).logits
    finally:
        for hd in handles:
            hd.remove()
    out = {"embed": seen["embed"]}
    for layer, block in enumerate(layers):
        w = split_heads(seen[f"z{layer}"], getattr(getattr(block, attn), proj))
        out.update({f"a{layer}.h{h}": w[:, :, h] for h in range(H)})
        out[f"m{layer}"] = seen[f"m{layer}"]
        out[f"attn{layer}"] = seen[f"attn{layer}"]
    return logits, out


def window(model: nn.Module, layer: int) -> int | None:
    c = model.config
    if c.model_type == "mistral":
        return c.sliding_window
    types = getattr(c, "layer_types", None)
    return c.sliding_window if types is not None and types[layer] == "sliding_attention" else None


def own_head(model: nn.Module, layer: int, h: int, x: torch.Tensor) -> torch.Tensor:
    """Head ``h`` of ``layer`` on residual input ``x`` (B, T, d): the model's own attention module (its norm,
    rotary module, attention interface), its output projection's input captured with a hook, split per head."""
    base, layers, attn, proj = modules(model)
    block = layers[layer]
    att = getattr(block, attn)
    xn = block.input_layernorm(x)
    pos = torch.arange(x.shape[1])[None]
    cos_sin = base.rotary_emb(xn, pos)
    i = torch.arange(x.shape[1])
    hide = i[None, :] > i[:, None]
    w = window(model, layer)
    if w is not None:
        hide = hide | (i[None, :] <= i[:, None] - w)
    mask = torch.zeros(T, T).masked_fill(hide, torch.finfo(torch.float32).min)[None, None]
    seen = []
    hd = getattr(att, proj).register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        att(hidden_states=xn, attention_mask=mask, position_embeddings=cos_sin)
    finally:
        hd.remove()
    return split_heads(seen[0], getattr(att, proj))[:, :, h]


def own_bias(model: nn.Module, layer: int) -> torch.Tensor | float:
    _, layers, attn, proj = modules(model)
    b = getattr(getattr(layers[layer], attn), proj).bias
    return 0.0 if b is None else b


def naive(model: nn.Module, x: torch.Tensor, corrupt: dict | None = None,
          patched: Collection[tuple[str, str]] = ()) -> tuple[torch.Tensor, dict]:
    """The graph's semantics written out: receiver r's input = the attention biases before it + every upstream
    sender's output in this run, or in ``corrupt`` where (s, r) is patched. With parallel attention + MLP
    (GPT-NeoX use_parallel_residual) an MLP reads its block's input: the senders and biases of earlier layers."""
    base, layers, _, _ = modules(model)
    out = {"embed": base.embed_in(x) if hasattr(base, "embed_in") else base.embed_tokens(x)}
    senders: list[str] = ["embed"]
    bias: torch.Tensor | float = 0.0

    def inp(r: str, among: list[str], b: torch.Tensor | float) -> torch.Tensor:
        return b + sum(corrupt[s] if (s, r) in patched else out[s] for s in among)

    for layer, block in enumerate(layers):
        heads = [f"a{layer}.h{h}" for h in range(H)]
        before, b_before = list(senders), bias
        xs = [inp(r, before, b_before) for r in heads]
        for h, r in enumerate(heads):
            out[r] = own_head(model, layer, h, xs[h])
        senders += heads
        bias = bias + own_bias(model, layer)
        m = f"m{layer}"
        xm = inp(m, before, b_before) if parallel(model) else inp(m, senders, bias)
        out[m] = block.mlp(block.post_attention_layernorm(xm))
        senders.append(m)
    final = base.final_layer_norm if hasattr(base, "final_layer_norm") else base.norm
    return model.get_output_embeddings()(final(inp("logits", senders, bias))), out


# ------------------------------------------------------------------------------------------------------------
# ComputeGraph on these models: through HFCausalLMAdapter.graph_parts() once it returns these parts, until
# then through graph_parts_for (the adapter's method swapped for the test)
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture
def graphs() -> Iterator[None]:
    """The adapter's own graph_parts() gives these families' parts (checked, not assumed)."""
    assert isinstance(cs.load(build("llama")).adapter.graph_parts(), LlamaParts)
    yield


GRAPH_NAMES = NAMES


def test_a_parallel_block_has_no_edge_from_its_heads_into_its_own_mlp(graphs):
    g = ComputeGraph(build("neox_parallel"))
    assert ("a0.h0", "m0") not in g.edges and ("a0.h0", "m1") in g.edges and ("m0", "m1") in g.edges
    scores = circuits.node_patching(g.model, toks(0), toks(1))
    kept = scores.circuit(k=len(scores.names))
    assert not [e for e in kept.edges if e[0].startswith("a0.") and e[1] == "m0"]


def parts_of(model: nn.Module):
    return graph_parts_for(cs.load(model).adapter)


# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_parts_trace_reproduces_the_models_logits_and_writes(name):
    model = build(name)
    x = toks(0)
    parts = parts_of(model)
    assert isinstance(parts, NeoXParts if name.startswith("neox") else LlamaParts)
    assert (parts.n_layers, parts.n_heads) == (L, H) and bool(getattr(parts, "parallel_mlp", False)) == parallel(model)
    logits, ref = own_run(model, x)
    snap = snapshot(model)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resid = parts.embed(x)  # as ComputeGraph.trace: per-head copies in, writes summed plus the biases
        torch.testing.assert_close(resid, ref["embed"], atol=1e-6, rtol=1e-6)
        for layer in range(L):
            heads = parts.heads(layer, resid.unsqueeze(2).repeat(1, 1, H, 1))
            for h in range(H):
                torch.testing.assert_close(heads[:, :, h], ref[f"a{layer}.h{h}"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(heads.sum(2) + parts.attn_bias(layer), ref[f"attn{layer}"], atol=1e-5,
                                       rtol=1e-5)
            torch.testing.assert_close(parts.heads(layer, resid), heads, atol=1e-6, rtol=1e-6)  # (B, T, d) input
            after = resid + heads.sum(2) + parts.attn_bias(layer)
            mlp = parts.mlp(layer, resid if parallel(model) else after)
            torch.testing.assert_close(mlp, ref[f"m{layer}"], atol=1e-5, rtol=1e-5)
            resid = after + mlp
        torch.testing.assert_close(parts.logits(resid), logits, atol=1e-5, rtol=1e-5)
    assert not caught, [str(w.message) for w in caught]
    assert_same(model, snap)


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_graph_outputs_are_the_models_own(name, graphs):
    model = build(name, seed=1)
    x = toks(1)
    g = ComputeGraph(model)
    assert len(g.senders) == 1 + L * (H + 1) and g.receivers[-1] == "logits"
    assert (("a1.h2", "m1") in g.edges) is not parallel(model)
    out = g.outputs(x)
    logits, ref = own_run(model, x)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=1e-5)
    for s in g.senders:
        torch.testing.assert_close(out.senders[:, :, g.sender_index(s)], ref[s], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_each_head_reads_its_own_copy(name):
    """Query heads that share a key / value head still read their own residual copies: changing head 0's copy
    changes head 0's write only, and by what a whole-stream change does to head 0."""
    model = build(name, seed=2)
    parts = parts_of(model)
    with torch.no_grad():
        x = parts.embed(toks(2))
        other = parts.embed(toks(3))
        xh = x.unsqueeze(2).repeat(1, 1, H, 1)
        xh[:, :, 0] = other
        mixed = parts.heads(0, xh)
        torch.testing.assert_close(mixed[:, :, 1:], parts.heads(0, x)[:, :, 1:], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(mixed[:, :, 0], parts.heads(0, other)[:, :, 0], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(mixed[:, :, 0], parts.heads(0, x)[:, :, 0])
    # gradients per head: head 1's write does not depend on head 0's copy (same key / value head)
    xg = x.unsqueeze(2).repeat(1, 1, H, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(parts.heads(0, xg)[:, :, 1].sum(), xg)
    assert grad[:, :, 1].abs().sum() > 0 and grad[:, :, [0, 2, 3]].abs().sum() == 0
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["mistral", "qwen2"])
def test_sliding_windows_matter(name):
    """The windows of these configs change the logits (so the checks above would see a window ignored)."""
    model = build(name, seed=3)
    parts = parts_of(model)
    layer = 1
    assert parts.window(layer) == 3 and (parts.window(0) is None) is (name == "qwen2")
    with torch.no_grad():
        x = parts.embed(toks(4))
        windowed = parts.heads(layer, x)
        parts.window = lambda layer: None  # full attention instead
        assert (parts.heads(layer, x) - windowed).abs().max() > 1e-4


EDGES = [("embed", "a0.h1"), ("a0.h3", "a1.h0"), ("a0.h2", "m0"), ("m0", "a1.h3"), ("embed", "m1"),
         ("a1.h1", "logits"), ("m1", "logits")]


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_patched_edges_equal_the_naive_forward(name, graphs):
    model = build(name, seed=4)
    x, y = toks(5), toks(6)
    g = ComputeGraph(model)
    edges = [e for e in EDGES if e in g.edges]
    assert len(edges) == len(EDGES) - parallel(model)  # a0.h2 -> m0 is no edge of a parallel block
    clean, corrupted = g.outputs(x), g.outputs(y)
    configs = [set()] + [{e} for e in edges] + [set(edges)]
    patch = torch.stack([g.mask(sorted(c)).float() for c in configs])
    out = g.run(patch, clean, corrupted)
    with torch.no_grad():
        _, corr = naive(model, y)
        for c, patched in enumerate(configs):
            ref, _ = naive(model, x, corr, patched)
            torch.testing.assert_close(out[c], ref, atol=1e-5, rtol=1e-5)
    assert (out[1:] - out[0]).abs().amax((1, 2, 3)).min() > 1e-5  # every patch changes the output


@pytest.mark.parametrize("name", ["qwen2", "neox_parallel"])
def test_edge_patching_scores_equal_a_naive_loop(name, graphs):
    """circuits.edge_patching (KL to the clean output, positions 1..T-1, mean over rows) against the naive
    graph forward, one run per edge."""
    model = build(name, seed=5)
    x, y = toks(7), toks(8)
    r = circuits.edge_patching(model, x, y, metric="kl")
    g = ComputeGraph(model)
    assert r.names == g.edge_names()
    with torch.no_grad():
        clean, _ = naive(model, x)
        _, corr = naive(model, y)
        p = clean[:, 1:].double().log_softmax(-1)
        for e in [e for e in EDGES if e in g.edges] + [g.edges[0]]:
            patched, _ = naive(model, x, corr, {e})
            q = patched[:, 1:].double().log_softmax(-1)
            kl = (p.exp() * (p - q)).sum(-1).mean()
            torch.testing.assert_close(r.values[g.edge_index(e)].double(), kl, rtol=1e-4, atol=1e-10, msg=str(e))


@pytest.mark.parametrize("name", ["llama", "neox_parallel"])
def test_discovery_leaves_the_model_alone(name, graphs):
    model = build(name, seed=6)
    model.train()
    snap = snapshot(model)
    eap = circuits.edge_attribution_patching(model, toks(9, n=4), metric="logprob")
    g = ComputeGraph(model)
    assert eap.shape == (len(g.edges),) and torch.isfinite(eap.values).all() and eap.values.abs().max() > 0
    assert model.training and all(p.grad is None for p in model.parameters())
    assert_same(model, snap)


def test_other_models_have_no_llama_or_neox_parts():
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=V)).eval()
    assert graph_parts_for(cs.load(gpt2).adapter) is None
    with pytest.raises(InputError, match="Llama-family"):
        LlamaParts(gpt2)
    with pytest.raises(InputError, match="GPTNeoXForCausalLM"):
        NeoXParts(build("llama"))


@pytest.mark.parametrize("name", ["llama", "qwen2", "neox_parallel"])
def test_key_mask_masks_keys(name):
    """A key mask (False at left-padded positions) does what the model's own attention_mask does there."""
    model = build(name, seed=7)
    x = toks(10)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, :2] = False
    parts = parts_of(model)
    assert parts.key_mask(x) is None
    _, layers, attn, proj = modules(model)
    seen = []
    hd = getattr(getattr(layers[0], attn), proj).register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        with torch.no_grad():
            model(x, attention_mask=mask.long(), use_cache=False)
    finally:
        hd.remove()
    ref = split_heads(seen[0], getattr(getattr(layers[0], attn), proj))
    with torch.no_grad():
        resid = parts.embed(x)
        ours = parts.heads(0, resid.unsqueeze(2).repeat(1, 1, H, 1), key_mask=mask)
        unmasked = parts.heads(0, resid)
    real = mask[:, :, None, None].expand_as(ref)  # queries at padded positions are nobody's concern
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1:], unmasked[1:], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(ours[0], unmasked[0])
