"""Scoring against ground truth: ROC / AUROC (ties), faithfulness curves (MIB's CPR / CMD), and discovery on
the shipped tracr cases."""
from __future__ import annotations

import itertools

import pytest
import torch
from test_circuits_graph import naive_forward, tiny, tokens

from causalscope import InputError, circuits
from causalscope.circuits import Circuit, ComputeGraph

POS = [1, 2, 3, 4]


def brute_auroc(scores: list[float], positive: list[bool]) -> float:
    """P(random positive outscores random negative), ties 1/2, by counting every pair."""
    wins = 0.0
    pairs = 0
    for (a, pa), (b, pb) in itertools.product(zip(scores, positive), repeat=2):
        if pa and not pb:
            pairs += 1
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / pairs


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_pair_counting_with_ties(seed):
    g = ComputeGraph(tiny())
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (len(g.edges),), generator=gen).double()  # few values: many ties
    truth_edges = [e for e in g.edges if torch.rand((), generator=gen) < 0.3] or [g.edges[0]]
    truth = Circuit(sorted({x for e in truth_edges for x in e}), truth_edges)
    c = circuits.roc(scores, truth, names=g.edge_names())
    positive = [e in set(truth_edges) for e in g.edges]
    assert c.auroc == pytest.approx(brute_auroc(scores.tolist(), positive), abs=1e-12)
    assert c.fpr[0] == c.tpr[0] == 0 and c.fpr[-1] == c.tpr[-1] == 1
    assert bool((c.fpr.diff() >= 0).all() and (c.tpr.diff() >= 0).all())
    assert len(c.thresholds) == len(torch.unique(scores))
    # a dict of scores gives the same curve
    d = dict(zip(g.edge_names(), scores.tolist()))
    assert circuits.roc(d, truth).auroc == c.auroc


def test_roc_of_results_ranks_by_magnitude_and_acdc_kept_first():
    net = tiny(seed=14)
    x, y = tokens(n=4, seed=5), tokens(n=4, seed=105)
    g = ComputeGraph(net)
    exact = circuits.edge_patching(net, x, y, positions=POS)
    # the truth: the 6 edges of largest |effect| -> a perfect ranking, AUROC 1; the smallest 6 -> AUROC 0
    order = exact.values.abs().argsort(descending=True).tolist()
    for pick, want in ((order[:6], 1.0), (order[-6:], 0.0)):
        edges = [g.edges[i] for i in pick]
        truth = Circuit(sorted({x for e in edges for x in e}), edges)
        assert circuits.roc(exact, truth).auroc == pytest.approx(want)
    r = circuits.acdc(net, x, y, threshold=1e-3, positions=POS)
    kept = [g.edges[i] for i in r.kept.nonzero().ravel().tolist()]
    truth = Circuit(sorted({x for e in kept for x in e}), kept)
    c = circuits.roc(r, truth)
    assert c.auroc == 1.0 and c.n_positive == len(kept)
    small = Circuit(["embed", "m1", "logits"], [("embed", "m1"), ("m1", "logits")])
    node = circuits.roc(r, small, level="node")
    assert node.meta["level"] == "node" and node.n_positive == 2 and node.n_negative == len(g.senders) - 2
    with pytest.raises(InputError, match="both positives and negatives"):
        circuits.roc(exact, Circuit(g.nodes, g.edges))
    with pytest.raises(InputError, match="names="):
        circuits.roc(torch.zeros(3), truth)


def test_faithfulness_curve_matches_a_naive_evaluation():
    net = tiny(seed=15)
    x, y = tokens(n=5, seed=1), tokens(n=5, seed=2)
    g = ComputeGraph(net)
    scores = circuits.edge_attribution_patching(net, x, y, positions=POS)
    sizes = [0, 3, 8, 15, len(g.edges)]
    f = circuits.faithfulness_curve(net, scores, sizes, x, y, positions=POS)
    assert f.faithfulness[0] == pytest.approx(0.0, abs=1e-6) and f.faithfulness[-1] == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        clean_logits, _ = naive_forward(net, x)
        _, corr = naive_forward(net, y)

        def kl(logits):
            p = clean_logits[:, POS].double().log_softmax(-1)
            return float((p.exp() * (p - logits[:, POS].double().log_softmax(-1))).sum(-1).mean())
        order = scores.values.abs().argsort(descending=True, stable=True).tolist()
        full, empty = 0.0, kl(naive_forward(net, x, corr, set(g.edges))[0])
        for k, got, count in zip(sizes, f.faithfulness, f.sizes):
            keep = {g.edges[i] for i in order[:k]}
            value = kl(naive_forward(net, x, corr, set(g.edges) - keep)[0])
            assert got == pytest.approx((value - empty) / (full - empty), abs=1e-5)
            assert count == int(g.connected(g.mask(sorted(keep))).sum())
    xs = [c / len(g.edges) for c in f.sizes]
    cpr = sum((xs[i + 1] - xs[i]) * (f.faithfulness[i] + f.faithfulness[i + 1]) / 2 for i in range(4))
    cmd = sum((xs[i + 1] - xs[i]) * (abs(1 - f.faithfulness[i]) + abs(1 - f.faithfulness[i + 1])) / 2
              for i in range(4))
    assert f.cpr == pytest.approx(cpr) and f.cmd == pytest.approx(cmd)
    # fractions are MIB's default sizes
    mib = circuits.faithfulness_curve(net, scores, clean=x, corrupted=y, positions=POS)
    assert mib.meta["requested"] == [int(p * len(g.edges)) for p in circuits.MIB_FRACTIONS]
    with pytest.raises(InputError, match="edge scores"):
        circuits.faithfulness_curve(net, circuits.node_patching(net, x, y), clean=x, corrupted=y)
    with pytest.raises(InputError, match="Edge counts"):
        circuits.faithfulness_curve(net, scores, [999], x, y)


def test_plots():
    from matplotlib.figure import Figure

    net = tiny(seed=16)
    x = tokens(n=6, seed=3)
    g = ComputeGraph(net)
    truth = Circuit(["embed", "m1", "logits"], [("embed", "m1"), ("m1", "logits")])
    rs = {"eap": circuits.edge_attribution_patching(net, x), "acdc": circuits.acdc(net, x, threshold=1e-3)}
    rocs = {k: circuits.roc(r, truth) for k, r in rs.items()}
    fig = circuits.plot_roc(rocs)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 3
    assert circuits.plot_roc(rocs, backend="plotly").data
    curves = {k: circuits.faithfulness_curve(net, r, [1, 5, len(g.edges)], x) for k, r in rs.items()}
    assert isinstance(circuits.plot_faithfulness(curves), Figure)
    assert circuits.plot_faithfulness(curves, backend="plotly").data
    assert isinstance(rocs["eap"].plot(), Figure) and isinstance(curves["eap"].plot(), Figure)


# ----------------------------------------------------------------------------------------------------------
# the shipped tracr cases
# ----------------------------------------------------------------------------------------------------------
CASES = circuits.case_names() if hasattr(circuits, "case_names") else []
@pytest.mark.parametrize("name", CASES)
def test_acdc_recovers_the_ground_truth_of_each_case(name):
    case = circuits.load_case(name)
    truth = case.circuit.edge_set()
    g = ComputeGraph(case.model)
    # resample ablation (the default): no false positives; every missed edge carries only information that is
    # the same on every input (positions, the constant direction, or the length), so patching it alone from
    # the clean run changes no logit
    r = circuits.acdc(case, threshold=1e-6)
    kept = r.circuit().edge_set()
    assert kept <= truth
    missed = sorted(truth - kept)
    from causalscope.circuits._discovery import _EXACT_DEFAULT, setup
    s = setup(case, default_metric=_EXACT_DEFAULT)
    if missed:
        out = g.run(g.mask(missed).double().diag_embed()[[g.edge_index(e) for e in missed]], s.clean, s.corrupted)
        assert float((out - s.clean.logits).abs().max()) < 1e-5
    # zero ablation sees constant directions too: every ground-truth edge and nothing else (TPR 1, FPR 0)
    z = circuits.acdc(case, corrupted="zero", threshold=1e-6).circuit().edge_set()
    assert z == truth


@pytest.mark.parametrize("name", CASES[:2])
def test_every_edge_method_ranks_ground_truth_edges_above_chance_on_a_case(name):
    case = circuits.load_case(name)
    for method in ("edge_patching", "eap", "eap_ig", "acdc"):
        r = circuits.discover(case, corrupted="zero", method=method)
        assert circuits.roc(r, case.circuit).auroc >= 0.75, method
