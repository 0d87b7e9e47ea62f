"""ComputeGraph: nodes, edges and graph-mode runs, against a naive forward written from the weights."""
from __future__ import annotations

import math

import pytest
import torch

import causalscope as cs
from causalscope import InputError
from causalscope.circuits import ComputeGraph, _graph, upstream
from causalscope.zoo import build_mlp
from causalscope.zoo.compiled import CompiledConfig, random_compiled

CFG = CompiledConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, d_mlp=8, d_vocab=5, d_vocab_out=3, n_ctx=6)


def tiny(seed: int = 1, causal: bool = False, scale: float = 0.5):
    cfg = CompiledConfig(**{**CFG.to_dict(), "causal": causal})
    return random_compiled(cfg, seed=seed, scale=scale)


def tokens(n: int = 5, T: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CFG.d_vocab, (n, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------
# the reference: a forward pass written out from the parameters, one receiver and one sender at a time
# ----------------------------------------------------------------------------------------------------------
def _head(net, layer: int, h: int, x: torch.Tensor) -> torch.Tensor:
    a = net.blocks[layer].attn
    q = x @ a.W_Q[h] + a.b_Q[h]
    k = x @ a.W_K[h] + a.b_K[h]
    v = x @ a.W_V[h] + a.b_V[h]
    s = q @ k.transpose(-1, -2) / math.sqrt(net.cfg.d_head)
    if net.cfg.causal:
        T = x.shape[1]
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1) @ v @ a.W_O[h]


def _mlp(net, layer: int, x: torch.Tensor) -> torch.Tensor:
    m = net.blocks[layer].mlp
    return torch.relu(x @ m.W_in + m.b_in) @ m.W_out + m.b_out


def naive_forward(net, toks, corrupt=None, patched=(), alpha=None, embed=None):
    """Logits and every sender's output. Receiver r's input = biases + sum over upstream senders s of
    s's output in this run, or in ``corrupt`` (a dict from a previous call) where (s, r) is in ``patched``;
    with ``alpha`` (edge -> scalar), ``out_s + alpha * (corrupt_s - out_s)`` instead."""
    L, H = net.cfg.n_layers, net.cfg.n_heads
    patched = set(patched)
    out = {"embed": net.W_E[toks] + net.W_pos[: toks.shape[1]] if embed is None else embed}
    senders, bias = ["embed"], 0.0

    def inp(r):
        total = bias
        for s in senders:
            if alpha is not None:
                total = total + out[s] + alpha[(s, r)] * (corrupt[s] - out[s])
            elif (s, r) in patched:
                total = total + corrupt[s]
            else:
                total = total + out[s]
        return total

    for layer in range(L):
        heads = [f"a{layer}.h{h}" for h in range(H)]
        xs = [inp(r) for r in heads]
        for h, r in enumerate(heads):
            out[r] = _head(net, layer, h, xs[h])
        senders += heads
        bias = bias + net.blocks[layer].attn.b_O
        out[f"m{layer}"] = _mlp(net, layer, inp(f"m{layer}"))
        senders.append(f"m{layer}")
    return inp("logits") @ net.W_U, out


# ----------------------------------------------------------------------------------------------------------
def test_nodes_and_edges():
    g = ComputeGraph(tiny())
    assert g.senders == ["embed", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1"]
    assert g.receivers == ["a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"]
    every = {(s, r) for s in g.senders for r in g.receivers if upstream(s, r)}
    assert set(g.edges) == every and len(g.edges) == len(every) == 26
    assert ("embed", "logits") in g.edges and ("a0.h0", "a0.h1") not in g.edges and ("a1.h0", "m1") in g.edges
    assert g.edge_index("a0.h1->m1") == g.edges.index(("a0.h1", "m1"))
    with pytest.raises(InputError, match="not an edge"):
        g.edge_index("m1->a0.h0")


@pytest.mark.parametrize("causal", [False, True])
def test_unpatched_graph_run_is_the_plain_forward(causal):
    net = tiny(causal=causal)
    x = tokens()
    g = ComputeGraph(cs.load(net))
    clean, corrupted = g.outputs(x), g.outputs(x.flip(0))
    with torch.no_grad():
        plain = net(x)
    torch.testing.assert_close(clean.logits, plain, atol=1e-6, rtol=1e-5)
    out = g.run(torch.zeros(2, len(g.edges)), clean, corrupted)
    torch.testing.assert_close(out, plain.expand(2, *plain.shape), atol=1e-6, rtol=1e-5)
    # the sender outputs are the model's own: embeddings, per-head writes, MLP outputs
    with torch.no_grad():
        _, ref = naive_forward(net, x)
    for i, name in enumerate(g.senders):
        torch.testing.assert_close(clean.senders[:, :, i], ref[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_patched_edges_equal_the_naive_loop(causal):
    net = tiny(seed=3, causal=causal)
    x, y = tokens(seed=0), tokens(seed=1)
    g = ComputeGraph(net)
    clean, corrupted = g.outputs(x), g.outputs(y)
    gen = torch.Generator().manual_seed(0)
    configs = [set()] + [{g.edges[i]} for i in range(len(g.edges))]
    configs += [{e for e in g.edges if torch.rand((), generator=gen) < 0.3} for _ in range(6)]
    patch = torch.stack([g.mask(sorted(c)).double() for c in configs])
    out = g.run(patch, clean, corrupted)
    with torch.no_grad():
        _, corr = naive_forward(net, y)
        for c, cfg in enumerate(configs):
            ref, _ = naive_forward(net, x, corr, cfg)
            torch.testing.assert_close(out[c], ref, atol=1e-5, rtol=1e-5)
    # patching changes the output at all (else the comparison above proves little)
    assert (out[1:] - out[0]).abs().max() > 1e-2


def test_patching_every_edge_into_logits_gives_the_corrupted_output():
    net = tiny(seed=2)
    x, y = tokens(seed=0), tokens(seed=5)
    g = ComputeGraph(net)
    clean, corrupted = g.outputs(x), g.outputs(y)
    into_logits = g.mask([e for e in g.edges if e[1] == "logits"]).double()
    almost = into_logits.clone()
    almost[g.edge_index("m1->logits")] = 0
    out = g.run(torch.stack([into_logits, torch.ones(len(g.edges)), almost]), clean, corrupted)
    torch.testing.assert_close(out[0], corrupted.logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[1], corrupted.logits, atol=1e-6, rtol=1e-5)
    assert (out[2] - corrupted.logits).abs().max() > 1e-3


def test_runs_from_a_cached_base_and_any_chunk_size(monkeypatch):
    net = tiny(seed=4)
    x, y = tokens(seed=0), tokens(seed=7)
    g = ComputeGraph(net)
    clean, corrupted = g.outputs(x), g.outputs(y)
    base_patch = g.mask(["embed->a0.h0", "a0.h1->m1"]).double()
    _, senders = g.run(base_patch, clean, corrupted, return_outputs=True)
    base = _graph.GraphOutputs(x, senders[0], g.run(base_patch, clean, corrupted)[0])
    later = torch.stack([base_patch.clone() for _ in range(4)])
    for i, e in enumerate(["m1->logits", "a1.h0->m1", "embed->logits", "m0->a1.h1"]):
        later[i, g.edge_index(e)] = 1
    from_clean = g.run(later, clean, corrupted)
    from_base = g.run(later, clean, corrupted, base=base, base_patch=base_patch)
    torch.testing.assert_close(from_base, from_clean, atol=1e-6, rtol=1e-5)
    monkeypatch.setattr(_graph, "_MAX_ELEMENTS", 1)  # one configuration per chunk
    # equal up to float rounding: a BLAS product may sum in another order for one row than for four
    torch.testing.assert_close(g.run(later, clean, corrupted), from_clean, atol=1e-6, rtol=1e-5)


def test_connected_keeps_only_edges_on_a_path_from_embed_to_logits():
    g = ComputeGraph(tiny())
    kept = g.mask(["embed->a0.h0", "a0.h0->m1", "m1->logits", "a0.h1->m0", "embed->a1.h1"])
    assert {g.edges[i] for i in g.connected(kept).nonzero().ravel().tolist()} == {
        ("embed", "a0.h0"), ("a0.h0", "m1"), ("m1", "logits")}


def test_errors():
    with pytest.raises(InputError, match="graph_parts"):
        ComputeGraph(build_mlp())
    g = ComputeGraph(tiny())
    x = tokens()
    clean = g.outputs(x)
    with pytest.raises(InputError, match="patch must be"):
        g.run(torch.zeros(2, 3), clean, clean)
    with pytest.raises(InputError, match="No inputs"):
        g.outputs(torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(InputError, match="differ in shape"):
        g.run(torch.zeros(1, len(g.edges)), clean, g.outputs(x[:2]))
    with pytest.raises(InputError, match="n_ctx"):
        g.outputs(torch.zeros(1, 9, dtype=torch.long))
