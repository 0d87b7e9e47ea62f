"""Circuit discovery methods against hand-written references: EAP as the gradient of edge interpolation
weights on a naive forward, ACDC as a sequential greedy loop with one forward per candidate, node patching
as a plain-hook loop; and the contracts (model unchanged, errors)."""
from __future__ import annotations

import pytest
import torch
from test_circuits_graph import naive_forward, tiny, tokens

import causalscope as cs
from causalscope import InputError, circuits
from causalscope.circuits import ComputeGraph
from model_state import assert_same, snapshot
from plain_hooks import hook

POS = [1, 2, 3, 4]


def logprob(logits, labels):
    """Mean over POS of the log-probability of each row's label: (rows,)."""
    lp = logits[:, POS].double().log_softmax(-1)
    return lp.gather(-1, labels[:, POS, None])[..., 0].mean(-1)


def kl(logits, clean_logits):
    p = clean_logits[:, POS].double().log_softmax(-1)
    q = logits[:, POS].double().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).mean(-1)


def pair(seed=0, n=5):
    """Clean and corrupted token rows (independent draws: with a permutation of the rows, a metric whose
    labels are the same for every row would have the same mean on both)."""
    return tokens(n=n, seed=seed), tokens(n=n, seed=seed + 100)


# ----------------------------------------------------------------------------------------------------------
def test_eap_is_the_gradient_of_edge_interpolation_weights():
    """First-order term by hand: input_r = sum_s out_s + alpha_sr (corrupt_s - out_s); EAP = dM/dalpha at 0."""
    net = tiny(seed=5)
    x, y = pair()
    with torch.no_grad():
        clean_logits, _ = naive_forward(net, x)
        _, corr = naive_forward(net, y)
    labels = clean_logits.argmax(-1)
    g = ComputeGraph(net)
    alpha = {e: torch.zeros((), dtype=torch.float32, requires_grad=True) for e in g.edges}
    logits, _ = naive_forward(net, x, corr, alpha=alpha)
    ref = torch.autograd.grad(logprob(logits, labels).mean(), [alpha[e] for e in g.edges])
    ref = torch.stack(ref).double()
    r = circuits.edge_attribution_patching(net, x, y, positions=POS)
    assert r.meta["metric"] == "logprob" and r.level == "edge"
    torch.testing.assert_close(r.values, ref, atol=2e-6, rtol=1e-4)
    assert ref.abs().max() > 1e-2
    # a user metric callable gives the same, and no parameter got a .grad
    r2 = circuits.edge_attribution_patching(net, x, y, positions=POS, metric=lambda lg: logprob(lg, labels))
    torch.testing.assert_close(r2.values, ref, atol=2e-6, rtol=1e-4)
    assert all(p.grad is None for p in net.parameters())


def test_eap_ig_with_one_step_is_eap_and_left_endpoint_is_the_corrupted_gradient():
    net = tiny(seed=6)
    x, y = pair(seed=1)
    eap = circuits.edge_attribution_patching(net, x, y)
    ig1 = circuits.eap_ig(net, x, y, steps=1)
    torch.testing.assert_close(ig1.values, eap.values, atol=1e-7, rtol=1e-5)  # corr + 1 * (clean - corr) ~ clean
    # left endpoint, one step: the gradient at the corrupted embeddings (hand-written as above)
    with torch.no_grad():
        clean_logits, clean = naive_forward(net, x)
        _, corr = naive_forward(net, y)
    labels = clean_logits.argmax(-1)
    g = ComputeGraph(net)
    # at the corrupted embedding every node's output is its corrupted one; the edge weight still scales
    # (corrupt_s - clean_s), as EAP-IG's activation difference does
    alpha = {e: torch.zeros((), requires_grad=True) for e in g.edges}
    shift = {s: corr[s] - clean[s] for s in g.senders}
    logits, _ = naive_forward(net, x, {s: corr[s] + shift[s] for s in g.senders}, alpha=alpha, embed=corr["embed"])
    # with embed = corrupted embed the run's outputs are corr, so corrupt - out = shift
    ref = torch.stack(torch.autograd.grad(logprob(logits, labels).mean(), [alpha[e] for e in g.edges])).double()
    left = circuits.eap_ig(net, x, y, steps=1, endpoints="left")
    torch.testing.assert_close(left.values, ref, atol=2e-6, rtol=1e-4)


def test_eap_ig_converges_to_exact_patching():
    """Completeness: the edges out of embed carry everything the corruption changes, so their EAP-IG scores sum
    to metric(corrupted) - metric(clean) as steps grow; on a near-linear model (small weights) every edge's
    EAP-IG score approaches its exact edge-patching effect."""
    net = tiny(seed=7)
    x, y = pair(seed=2)
    errs = []
    for steps in (1, 4, 64):
        r = circuits.eap_ig(net, x, y, steps=steps)
        out_of_embed = torch.tensor([n.startswith("embed->") for n in r.names])
        target = r.meta["corrupted_metric"] - r.meta["clean_metric"]
        errs.append(abs(float(r.values[out_of_embed].sum()) - target))
    assert errs[2] < errs[1] < errs[0] and errs[2] < 0.02 * abs(target)
    lin = tiny(seed=8, scale=0.15)
    x, y = pair(seed=3)
    exact = circuits.edge_patching(lin, x, y, metric="logprob")
    eap = circuits.edge_attribution_patching(lin, x, y)
    ig = circuits.eap_ig(lin, x, y, steps=32)
    err_eap = (eap.values - exact.values).abs().max()
    err_ig = (ig.values - exact.values).abs().max()
    assert err_ig < err_eap and err_ig < 0.05 * exact.values.abs().max()


def test_node_patching_equals_a_plain_hook_loop():
    net = tiny(seed=9)
    x, y = pair(seed=4)
    with torch.no_grad():
        clean_logits = net(x)
    caches = {}

    def grab(name):
        def fn(t):
            caches[name] = t.detach().clone()
        return fn

    mods = {"embed": net.hook_embed}
    for l in range(2):
        mods[f"a{l}"] = net.blocks[l].attn.hook_result
        mods[f"m{l}"] = net.blocks[l].mlp
    handles = [hook(m, "output", grab(k)) for k, m in mods.items()]
    with torch.no_grad():
        net(y)
    for h in handles:
        h.remove()
    ref = []
    base = float(kl(clean_logits, clean_logits).mean())
    for node in ComputeGraph(net).senders:
        if node.startswith("a"):
            layer, head = int(node[1]), int(node.split("h")[1])

            def fn(t, layer=layer, head=head):
                t = t.clone()
                t[:, :, head] = caches[f"a{layer}"][:, :, head]
                return t
            h = hook(mods[f"a{layer}"], "output", fn)
        else:
            h = hook(mods[node], "output", lambda t, node=node: caches[node])
        with torch.no_grad():
            ref.append(float(kl(net(x), clean_logits).mean()) - base)
        h.remove()
    r = circuits.node_patching(net, x, y, positions=POS)
    assert r.level == "node" and r.names[0] == "embed" and r.meta["metric"] == "kl"
    torch.testing.assert_close(r.values, torch.tensor(ref, dtype=torch.float64), atol=1e-6, rtol=1e-5)
    assert min(ref[1:]) > 0 and ref[0] == pytest.approx(float(kl(net(y).detach(), clean_logits).mean()), abs=1e-6)


def naive_acdc(net, x, y, threshold):
    """ACDC as a plain sequential loop: one naive forward per tried edge."""
    g = ComputeGraph(net)
    with torch.no_grad():
        clean_logits, _ = naive_forward(net, x)
        _, corr = naive_forward(net, y)

        def value(removed):
            return float(kl(naive_forward(net, x, corr, removed)[0], clean_logits).mean())

        removed, current, effect = set(), value(set()), {}
        for r in reversed(g.receivers):
            incoming = sorted([e for e in g.edges if e[1] == r], key=lambda e: -g.senders.index(e[0]))
            if r != "logits" and all(e in removed for e in g.edges if e[0] == r):
                removed |= set(incoming)
                continue
            for e in incoming:
                v = value(removed | {e})
                effect[e] = v - current
                if v - current < threshold:
                    removed.add(e)
                    current = v
    return [e not in removed for e in g.edges], effect


def test_acdc_equals_the_sequential_greedy_loop():
    net = tiny(seed=14)
    x, y = pair(seed=5, n=4)
    r = circuits.acdc(net, x, y, threshold=1e-3, positions=POS)
    kept_ref, effect_ref = naive_acdc(net, x, y, 1e-3)
    assert r.kept.tolist() == kept_ref
    assert 3 <= sum(kept_ref) <= len(kept_ref) - 3  # both decisions happen, so the test can fail
    for i, e in enumerate(ComputeGraph(net).edges):
        if e in effect_ref:
            assert float(r.values[i]) == pytest.approx(effect_ref[e], abs=1e-6)
    # the batching saved passes: fewer passes than tried edges
    assert r.meta["passes"] < len(effect_ref)
    assert r.circuit().edge_set() == {e for e, k in zip(ComputeGraph(net).edges, kept_ref) if k}
    # threshold 0 keeps every edge that makes the metric worse at all; a huge one removes everything
    assert circuits.acdc(net, x, y, threshold=1e9, positions=POS).kept.sum() == 0


def test_results_api_and_dispatch(tmp_path):
    net = tiny(seed=12)
    x = tokens(n=6, seed=6)
    r = circuits.discover(net, x, method="eap_ig", steps=3)
    direct = circuits.eap_ig(net, x, steps=3)
    torch.testing.assert_close(r.values, direct.values)
    top = r.top(4)
    assert list(top.columns) == ["edge", "score"] and len(top) == 4
    assert top["score"].abs().is_monotonic_decreasing
    c = r.circuit(k=4)
    assert len(c.edges) == 4 and {f"{s}->{t}" for s, t in c.edges} == set(top["edge"])
    thr = float(top["score"].abs().iloc[-1])
    assert r.circuit(threshold=thr).edge_set() == c.edge_set()
    with pytest.raises(InputError, match="threshold= .* or k="):
        r.circuit()
    node = circuits.node_patching(net, x)
    nc = node.circuit(k=2)
    assert "embed" in nc.nodes and "logits" in nc.nodes and len(nc.nodes) <= 4
    from matplotlib.figure import Figure
    assert isinstance(r.plot(), Figure) and isinstance(r.plot(kind="bar"), Figure)
    assert isinstance(node.plot(), Figure)
    assert r.plot(backend="plotly").data and r.plot(kind="bar", backend="plotly").data
    path = r.save(tmp_path / "eap_ig")
    loaded = cs.load_result(path)
    torch.testing.assert_close(loaded.values, r.values)
    assert loaded.meta["steps"] == 3 and loaded.meta["method"] == "eap_ig"
    # the default corruption is a seeded resample with no row paired with itself
    s0, s1 = circuits.resample(x, 0), circuits.resample(x, 1)
    assert torch.equal(s0, circuits.resample(x, 0)) and not torch.equal(s0, s1)
    assert sorted(s0.tolist()) == sorted(x.tolist())
    assert not (s0 == x).all(1).any() or len({tuple(t) for t in x.tolist()}) < len(x)


def test_errors():
    net = tiny()
    x = tokens()
    with pytest.raises(InputError, match="Unknown method 'magic'.*acdc"):
        circuits.discover(net, x, method="magic")
    with pytest.raises(InputError, match="No inputs"):
        circuits.eap_ig(net, torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(InputError, match=r"has 4 tokens and its clean prompt 5.*\(5, 4\) vs \(5, 5\)"):
        circuits.acdc(net, x, x[:, :4])
    with pytest.raises(InputError, match="Unknown metric 'acc'"):
        circuits.node_patching(net, x, metric="acc")
    with pytest.raises(InputError, match="steps must be"):
        circuits.eap_ig(net, x, steps=0)
    with pytest.raises(InputError, match="threshold must be"):
        circuits.acdc(net, x, threshold=-1.0)
    with pytest.raises(InputError, match="at least 2 input rows"):
        circuits.node_patching(net, x[:1])
    with pytest.raises(InputError, match="positions"):
        circuits.node_patching(net, x, positions=[7])
    with pytest.raises(InputError, match="graph_parts"):
        from causalscope.zoo import build_mlp
        circuits.acdc(build_mlp(), torch.zeros(2, 5, 16))


@pytest.mark.parametrize("method", ["node_patching", "edge_patching", "eap", "eap_ig", "acdc"])
def test_model_is_never_changed(method):
    net = tiny(seed=13)
    net.train()
    net.blocks[0].eval()
    net.blocks[1].attn.hook_z.register_forward_hook(lambda *a: None)
    net.W_E.requires_grad_(False)
    net.W_U.grad = torch.full_like(net.W_U, 0.5)
    x = tokens(seed=8)
    snap = snapshot(net)
    circuits.discover(cs.load(net), x, method=method)
    assert_same(net, snap)

    def boom(logits):
        raise RuntimeError("metric failed")
    with pytest.raises(RuntimeError, match="metric failed"):
        circuits.discover(net, x, method=method, metric=boom)
    assert_same(net, snap)
