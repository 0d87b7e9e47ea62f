"""ROC ties within a tolerance (GPU rounding leaves ~1e-16 where a CPU gives exact zeros), and the matmul
form of the compiled transformers' per-head attention against the einsum form it replaced."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_circuits_graph import tiny, tokens

from causalscope import InputError, circuits
from causalscope.circuits import Circuit, CircuitScores, ComputeGraph
from causalscope.zoo.compiled import CompiledConfig, random_compiled

POS = [1, 2, 3, 4]
VALUES = (0.0, 0.0, 0.0, 0.25, 0.5, 1.5)  # many exact zeros: the edges with no effect


# ----------------------------------------------------------------------------------------------------------
# references written out by hand
# ----------------------------------------------------------------------------------------------------------
def hand_groups(scores: list[float], atol: float) -> list[list[float]]:
    """Sorted scores cut where the gap to the previous one exceeds ``atol``."""
    groups: list[list[float]] = []
    for v in sorted(scores):
        if groups and v - groups[-1][-1] <= atol:
            groups[-1].append(v)
        else:
            groups.append([v])
    return groups


def hand_roc(scores: list[float], positive: list[bool], atol: float) -> tuple[list[float], list[float], float]:
    """A loop over thresholds (each tie group's lowest score, highest first): predicted = score >= threshold."""
    P = sum(positive)
    N = len(positive) - P
    fpr, tpr = [0.0], [0.0]
    for t in sorted((g[0] for g in hand_groups(scores, atol)), reverse=True):
        pred = [s >= t for s in scores]
        tpr.append(sum(1 for p, q in zip(pred, positive) if p and q) / P)
        fpr.append(sum(1 for p, q in zip(pred, positive) if p and not q) / N)
    auc = sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(fpr) - 1))
    return fpr, tpr, auc


def mann_whitney(scores: list[float], positive: list[bool], atol: float) -> float:
    """P(random positive outscores random negative), pairs within ``atol`` counting 1/2 (valid without chains)."""
    wins, pairs = 0.0, 0
    for (a, pa), (b, pb) in itertools.product(zip(scores, positive), repeat=2):
        if pa and not pb:
            pairs += 1
            wins += 0.5 if abs(a - b) <= atol else 1.0 if a > b else 0.0
    return wins / pairs


def noisy_case(seed: int, scale: float = 1.0, noise: float = 1e-16):
    """Edge scores of the tiny graph drawn from VALUES (times ``scale``), a ground truth with positives and
    negatives among the zeros, and the same scores with GPU-like noise: every score moves by ~``noise``,
    and the zeros of positives rise, those of negatives fall (so exact ties would favour the positives)."""
    g = ComputeGraph(tiny())
    gen = torch.Generator().manual_seed(seed)
    E = len(g.edges)
    clean = torch.tensor(VALUES, dtype=torch.float64)[torch.randint(0, len(VALUES), (E,), generator=gen)] * scale
    positive = (torch.rand(E, generator=gen) < 0.4).tolist()
    zeros = [i for i in range(E) if clean[i] == 0]
    positive[zeros[0]], positive[zeros[1]] = True, False  # both kinds among the no-effect edges
    positive[int(clean.argmax())] = True
    sign = torch.tensor([1.0 if p else -1.0 for p in positive], dtype=torch.float64)
    jitter = noise * (1 + torch.rand(E, generator=gen, dtype=torch.float64))
    noisy = torch.where(clean == 0, sign * jitter, clean + jitter * torch.randn(E, generator=gen, dtype=torch.float64))
    edges = [e for e, p in zip(g.edges, positive) if p]
    truth = Circuit(sorted({x for e in edges for x in e}), edges)
    return g, clean, noisy, positive, truth


# ----------------------------------------------------------------------------------------------------------
# ROC with a tie tolerance
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", [1e-16, 5e-14])  # 5e-14: the largest an H100 left on a shipped case
@pytest.mark.parametrize("seed", range(5))
def test_noise_within_the_default_tolerance_leaves_the_roc_as_without_noise(seed, noise):
    g, clean, noisy, positive, truth = noisy_case(seed, noise=noise)
    names = g.edge_names()
    exact = circuits.roc(clean, truth, names=names)
    got = circuits.roc(noisy, truth, names=names)
    atol = 1e-12 * max(1.0, float(clean.abs().max()))
    assert got.meta["atol"] == pytest.approx(atol)
    fpr, tpr, auc = hand_roc(clean.tolist(), positive, 0.0)
    assert exact.auroc == pytest.approx(auc, abs=1e-12) == mann_whitney(clean.tolist(), positive, 0.0)
    # the noisy scores under the tolerance: the curve of the noise-free ones, point for point
    assert got.auroc == pytest.approx(auc, abs=1e-12)
    assert got.auroc == pytest.approx(mann_whitney(noisy.tolist(), positive, atol), abs=1e-12)
    hf, ht, hauc = hand_roc(noisy.tolist(), positive, atol)
    assert hauc == pytest.approx(auc, abs=1e-12)
    assert torch.allclose(got.fpr, torch.tensor(fpr, dtype=torch.float64))
    assert torch.allclose(got.tpr, torch.tensor(tpr, dtype=torch.float64))
    assert torch.equal(got.fpr, exact.fpr) and torch.equal(got.tpr, exact.tpr)
    assert len(got.thresholds) == len(torch.unique(clean))
    # a dict of the same scores: the same curve
    assert circuits.roc(dict(zip(names, noisy.tolist())), truth).auroc == got.auroc


@pytest.mark.parametrize("seed", range(5))
def test_atol_zero_keeps_exact_ties_only(seed):
    g, clean, noisy, positive, truth = noisy_case(seed)
    c = circuits.roc(noisy, truth, names=g.edge_names(), atol=0)
    fpr, tpr, auc = hand_roc(noisy.tolist(), positive, 0.0)
    assert c.meta["atol"] == 0.0
    assert c.auroc == pytest.approx(auc, abs=1e-12) == mann_whitney(noisy.tolist(), positive, 0.0)
    assert torch.allclose(c.tpr, torch.tensor(tpr, dtype=torch.float64))
    assert len(c.thresholds) == len(torch.unique(noisy))
    # the noise broke the positive / negative ties at 0 in the positives' favour: a higher AUROC
    assert c.auroc > circuits.roc(clean, truth, names=g.edge_names()).auroc


def test_default_tolerance_scales_with_the_largest_score():
    g, clean, noisy, positive, truth = noisy_case(3, scale=1e6, noise=1e-8)  # ~1e-14 relative
    got = circuits.roc(noisy, truth, names=g.edge_names())
    assert got.meta["atol"] == pytest.approx(1e-12 * 1.5e6)
    assert got.auroc == pytest.approx(hand_roc(clean.tolist(), positive, 0.0)[2], abs=1e-12)
    assert circuits.roc(noisy, truth, names=g.edge_names(), atol=0).auroc != got.auroc


def test_tie_groups_chain_consecutive_gaps_and_thresholds_are_group_minima():
    g = ComputeGraph(tiny())
    names = g.edge_names()[:6]
    truth = Circuit(sorted({x for n in names[:2] for x in n.split("->")}), [tuple(n.split("->")) for n in names[:2]])
    scores = [0.0, 0.8, 5.0, 1.6, 5.5, 9.0]  # gaps 0.8, 0.8 chain 0, 0.8, 1.6 into one group at atol=1
    t = torch.tensor(scores, dtype=torch.float64)
    c = circuits.roc(t, truth, names=names, atol=1.0)
    assert c.thresholds.tolist() == [9.0, 5.0, 0.0]
    positive = [True, True, False, False, False, False]
    fpr, tpr, auc = hand_roc(scores, positive, 1.0)
    assert c.fpr.tolist() == pytest.approx(fpr) and c.tpr.tolist() == pytest.approx(tpr)
    assert c.auroc == pytest.approx(auc)
    # atol=0 gives every distinct score its own threshold
    assert circuits.roc(t, truth, names=names, atol=0).thresholds.tolist() == sorted(scores)[::-1]


def test_infinite_scores_tie_with_each_other_and_leave_the_default_tolerance_finite():
    g = ComputeGraph(tiny())
    names = g.edge_names()[:5]
    truth = Circuit(sorted({x for x in names[0].split("->")}), [tuple(names[0].split("->"))])
    scores = [math.inf, math.inf, 2.0, 0.0, 1e-17]
    c = circuits.roc(torch.tensor(scores, dtype=torch.float64), truth, names=names)
    assert c.meta["atol"] == pytest.approx(2e-12)
    assert c.thresholds.tolist() == [math.inf, 2.0, 0.0]
    assert c.auroc == pytest.approx(hand_roc(scores, [True, False, False, False, False], 2e-12)[2])


@pytest.mark.parametrize("atol", [-1e-12, math.nan, math.inf, -math.inf, "small", True])
def test_bad_atol_is_an_input_error(atol):
    g, clean, noisy, positive, truth = noisy_case(0)
    with pytest.raises(InputError, match="atol"):
        circuits.roc(noisy, truth, names=g.edge_names(), atol=atol)


def test_faithfulness_curve_orders_near_ties_like_exact_ties():
    net = tiny(seed=15)
    x, y = tokens(n=5, seed=1), tokens(n=5, seed=2)
    g = ComputeGraph(net)
    E = len(g.edges)
    names = g.edge_names()
    base = torch.zeros(E, dtype=torch.float64)
    base[[3, 7, 11]] = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    # near-zero noise that, taken exactly, would order the no-effect edges last-index first
    noisy = base + (base == 0) * torch.arange(E, dtype=torch.float64) * 1e-17

    def as_scores(v: torch.Tensor) -> CircuitScores:
        return CircuitScores(v, ("edge",), {"edge": names}, {"method": "hand", "kept": None}, name="hand score")

    sizes = [0, 3, 5, 9, E]
    ref = circuits.faithfulness_curve(net, as_scores(base), sizes, x, y, positions=POS)
    got = circuits.faithfulness_curve(net, as_scores(noisy), sizes, x, y, positions=POS)
    assert got.sizes == ref.sizes and got.faithfulness == pytest.approx(ref.faithfulness, abs=1e-12)
    exact = circuits.faithfulness_curve(net, as_scores(noisy), sizes, x, y, positions=POS, atol=0)
    assert exact.faithfulness != pytest.approx(ref.faithfulness, abs=1e-9)
    with pytest.raises(InputError, match="atol"):
        circuits.faithfulness_curve(net, as_scores(base), sizes, x, y, positions=POS, atol=-1.0)


# ----------------------------------------------------------------------------------------------------------
# per-head attention: matmul form == the einsum form it replaced
# ----------------------------------------------------------------------------------------------------------
def einsum_heads(attn, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The previous implementation of HeadAttention.heads, verbatim (without the hooks)."""
    spec = "btd,hde->bthe" if x.ndim == 3 else "bthd,hde->bthe"
    q = torch.einsum(spec, x, attn.W_Q) + attn.b_Q
    k = torch.einsum(spec, x, attn.W_K) + attn.b_K
    v = torch.einsum(spec, x, attn.W_V) + attn.b_V
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(attn.cfg.d_head)
    if attn.cfg.causal:
        T = x.shape[1]
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], -1e30)
    pattern = torch.softmax(scores, dim=-1)
    z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
    return torch.einsum("bqhe,hed->bqhd", z, attn.W_O)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_matmul_heads_equal_the_einsum_form(causal, per_head, masked):
    cfg = CompiledConfig(n_layers=2, d_model=12, n_heads=3, d_head=5, d_mlp=8, d_vocab=7, d_vocab_out=4,
                         n_ctx=6, causal=causal)
    attn = random_compiled(cfg, seed=4).blocks[1].attn
    gen = torch.Generator().manual_seed(1)
    B, T, H, d = 7, 6, 3, 12
    x = torch.randn((B, T, H, d) if per_head else (B, T, d), generator=gen)
    mask = torch.rand(B, T, generator=gen) < 0.7 if masked else None
    if mask is not None:
        mask[:, 0] = True  # every query sees at least one key
    seen = {}
    handles = [getattr(attn, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
               for n in ("hook_pattern", "hook_z", "hook_result")]
    try:
        with torch.no_grad():
            got = attn.heads(x, mask)
            want = einsum_heads(attn, x, mask)
    finally:
        for h in handles:
            h.remove()
    assert got.shape == (B, T, H, d)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert seen["hook_pattern"].shape == (B, H, T, T)
    assert seen["hook_z"].shape == (B, T, H, cfg.d_head)
    assert seen["hook_result"].shape == (B, T, H, d) and torch.equal(seen["hook_result"], got)
    if causal:
        assert float(seen["hook_pattern"].triu(1).abs().max()) == 0.0
    if mask is not None:
        assert float(seen["hook_pattern"].masked_select(~mask[:, None, None, :]).abs().sum()) == 0.0
    # the shared input equals the same input copied to every head
    if not per_head:
        with torch.no_grad():
            assert torch.allclose(attn.heads(x.unsqueeze(2).expand(B, T, H, d), mask), got, atol=1e-6)


def test_hook_z_replacement_reaches_the_result():
    cfg = CompiledConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=4, d_vocab=5, d_vocab_out=3, n_ctx=5)
    attn = random_compiled(cfg, seed=2).blocks[0].attn
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    h = attn.hook_z.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    try:
        with torch.no_grad():
            out = attn.heads(x)
    finally:
        h.remove()
    assert float(out.abs().max()) == 0.0
