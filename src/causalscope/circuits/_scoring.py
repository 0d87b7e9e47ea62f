"""Scoring discovered circuits: ROC / AUROC against a ground-truth circuit, faithfulness curves (CPR, CMD).

>>> rocs = {name: circuits.roc(r, case.circuit) for name, r in results.items()}
>>> circuits.plot_roc(rocs)
>>> f = circuits.faithfulness_curve(case, results["eap_ig"]); f.cpr, f.cmd
>>> circuits.plot_faithfulness({"eap_ig": f})
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..errors import InputError
from ..results import resolve_backend
from ._circuit import Circuit
from ._discovery import _EXACT_DEFAULT, setup
from ._discovery_result import CircuitScores

#: MIB's circuit sizes, as fractions of the edges (MIB_circuit_track/evaluation.py, evaluate_area_under_curve)
MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class RocCurve:
    """TPR and FPR at every threshold (descending: each tie group's lowest score, see :func:`roc`), from
    (0, 0) to (1, 1), and the AUROC. ``meta["atol"]``: the tie tolerance used.

    >>> c = circuits.roc(result, case.circuit); c.auroc, c.tpr[-1]
    """

    fpr: torch.Tensor
    tpr: torch.Tensor
    thresholds: torch.Tensor
    auroc: float
    n_positive: int
    n_negative: int
    meta: dict[str, Any] = field(default_factory=dict)

    def plot(self, ax: Any = None, label: str | None = None, backend: str = "matplotlib") -> Any:
        return plot_roc({label or self.meta.get("method", "scores"): self}, ax=ax, backend=backend)


#: Default tie tolerance, relative to ``max(1, max |score|)``: see :func:`roc`.
TIE_RTOL = 1e-12


def _tie_atol(values: torch.Tensor, atol: float | None) -> float:
    """The tie tolerance for ``values``: ``atol`` checked, or the default ``TIE_RTOL * max(1, max |finite score|)``."""
    if atol is None:
        finite = values[torch.isfinite(values)]
        top = float(finite.abs().max()) if finite.numel() else 0.0
        return TIE_RTOL * max(1.0, top)
    try:
        tol = float(atol)
    except (TypeError, ValueError):
        tol = math.nan
    if isinstance(atol, bool) or not math.isfinite(tol) or tol < 0:
        raise InputError(f"atol must be a finite number >= 0 (0: exact ties only), got {atol!r}.")
    return tol


def _tie_groups(values: torch.Tensor, atol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Tie groups of ``values`` (1-D float64): sorted ascending, consecutive values whose gap is <= ``atol``
    share a group. Returns each value's group index (0 = lowest group) and each group's lowest value."""
    order = values.argsort(stable=True)
    s = values[order]
    new = s.diff() > atol  # inf - inf is NaN: equal infinities compare False and stay in one group
    first = torch.cat([torch.ones(1, dtype=torch.bool, device=s.device), new])
    gid = torch.empty(len(s), dtype=torch.long, device=s.device)
    gid[order] = first.long().cumsum(0) - 1
    return gid, s[first]


def _snap_ties(values: torch.Tensor, atol: float) -> torch.Tensor:
    """``values`` with every tie group (see :func:`_tie_groups`) set to its lowest value: a stable sort of
    the result orders near-tied items by position, as exactly tied ones are."""
    gid, low = _tie_groups(values, atol)
    return low[gid]


def roc(scores: CircuitScores | torch.Tensor | Mapping[str, float], truth: Circuit, *,
        level: Literal["edge", "node"] | None = None, names: Sequence[str] | None = None,
        atol: float | None = None) -> RocCurve:
    """ROC of ``scores`` (higher: more likely in the circuit) against the ground truth, ties (scores within
    ``atol``) handled exactly.

    >>> c = circuits.roc(eap_result, case.circuit)             # edges, ranked by |score|
    >>> c = circuits.roc(eap_result, case.circuit, level="node")   # nodes: max |score| of their edges
    >>> c = circuits.roc(torch.tensor([...]), truth, names=["embed->m0", ...])

    A :class:`CircuitScores` is ranked by :meth:`CircuitScores.ranking` (``|score|``; ACDC: kept edges first).
    Every item scored is a positive (in ``truth``) or a negative. At each distinct score (tie group, below),
    all items tied at it enter together, so the curve has one point per tie group and AUROC (trapezoids) equals the
    Mann-Whitney probability that a random positive outscores a random negative, ties counting one half.
    Node level leaves out ``logits`` (always in a circuit). MIB's ``area_under_roc`` (MIB_circuit_track/
    evaluation.py) instead samples MIB's circuit sizes; every threshold here is the exact curve.

    ``atol``: scores this close count as tied. The scores are sorted and consecutive ones whose gap is at
    most ``atol`` form one tie group (so a run of values each within ``atol`` of the next is one group even
    if its ends lie further apart); each group enters the curve at once, and ``thresholds`` holds each
    group's lowest score (the items at or above it are the predicted circuit). ``atol=0``: exact ties
    only. Default ``1e-12 * max(1, max |score|)`` over the finite scores (``TIE_RTOL``). Why: an edge with
    no effect scores exactly 0 on a CPU, but a GPU (other kernels, other summation orders) leaves the
    square of float32 rounding in KL / MSE metrics, up to 5e-14 on the shipped cases on an H100 (sort,
    edge patching: 0.962 instead of 0.875 with exact ties; hist, ACDC: 1.0 instead of 0.875), and
    gradient methods leave scores of 1e-14 to 1e-11 on edges whose effect float32 cannot resolve
    (through a saturated softmax), which change several-fold between two implementations equal up to
    rounding (reverse, EAP: 0.889 with exact ties on the CPU, 0.833 on the H100 at 1e-13, 0.778 on both
    at 1e-12). 1e-12 was the smallest tolerance (tried: 1e-16 ... 1e-12, 1e-9) with which every method on
    every shipped case gave the same edge- and node-level AUROC on the CPU and on an H100; 1e-9 would
    also tie real EAP scores of 1e-11 (sort). It lies five orders below float32's resolution of the
    metric (~1e-7 of it), so effects a float32 forward resolves are never tied. The floor of 1 keeps the
    default absolute for metrics of order one; give ``atol`` where scores are much smaller or noisier (a
    metric linear in the logits can leave ~1e-7 of the metric).
    """
    if not isinstance(truth, Circuit):
        raise InputError(f"truth must be a circuits.Circuit (e.g. case.circuit), got {type(truth).__name__}.")
    if isinstance(scores, CircuitScores):
        res = scores
        if level == "node" or (level is None and res.level == "node"):
            res = res.node_scores()  # type: ignore[assignment]
        lvl = res.level if isinstance(res, CircuitScores) else "node"
        item_names = [str(x) for x in res.coords[res.dims[0]]]
        values = res.ranking() if isinstance(res, CircuitScores) else res.values.double()
        meta = {"method": scores.meta.get("method"), "level": lvl}
    elif isinstance(scores, Mapping):
        item_names = [str(k) for k in scores]
        values = torch.tensor([float(v) for v in scores.values()], dtype=torch.float64)
        lvl = level or ("edge" if all("->" in n for n in item_names) else "node")
        meta = {"level": lvl}
    else:
        values = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
        if names is None or len(names) != values.numel():
            raise InputError(f"A tensor of {values.numel()} scores needs names= with one edge or node name each.")
        item_names = [str(n) for n in names]
        lvl = level or ("edge" if all("->" in n for n in item_names) else "node")
        meta = {"level": lvl}
    if lvl == "edge":
        positives = {f"{s}->{r}" for s, r in truth.edges}
    else:
        keep = [i for i, n in enumerate(item_names) if n != "logits"]
        item_names, values = [item_names[i] for i in keep], values[keep]
        positives = set(truth.nodes) - {"logits"}
    missing = sorted(positives - set(item_names))
    if missing:
        raise InputError(f"The ground truth has {lvl}s the scores do not cover: {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}. Score the same model the circuit describes.")
    if torch.isnan(values).any():
        raise InputError("Scores contain NaN; rank them first (e.g. replace NaN by 0).")
    label = torch.tensor([n in positives for n in item_names])
    P, Nn = int(label.sum()), int((~label).sum())
    if P == 0 or Nn == 0:
        raise InputError(f"ROC needs both positives and negatives; got {P} in the circuit and {Nn} outside it.")
    tol = _tie_atol(values, atol)
    meta["atol"] = tol
    meta["atol_given"] = atol
    meta["scores"] = (f"{type(scores).__name__} of {len(item_names)} {lvl}s" +
                      (f" ({meta['method']})" if meta.get("method") else ""))
    meta["truth"] = {"nodes": len(truth.nodes), "edges": len(truth.edges)}
    meta["names"] = "given" if names is not None else None
    inv, thr = _tie_groups(values, tol)
    pos_at = torch.zeros(len(thr), dtype=torch.float64).index_add_(0, inv, label.double())
    neg_at = torch.zeros(len(thr), dtype=torch.float64).index_add_(0, inv, (~label).double())
    tp = pos_at.flip(0).cumsum(0)
    fp = neg_at.flip(0).cumsum(0)
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tp / P])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fp / Nn])
    auroc = float(torch.trapezoid(tpr, fpr))
    return RocCurve(fpr, tpr, thr.flip(0), auroc, P, Nn, meta)


@dataclass
class FaithfulnessCurve:
    """Faithfulness of the top-k circuits at several sizes, with MIB's areas (CPR, CMD).

    >>> f = circuits.faithfulness_curve(case, result); f.sizes, f.faithfulness, f.cpr, f.cmd
    """

    sizes: list[int]
    fractions: list[float]
    faithfulness: list[float]
    metric: list[float]
    cpr: float
    cmd: float
    meta: dict[str, Any] = field(default_factory=dict)

    def plot(self, ax: Any = None, label: str | None = None, backend: str = "matplotlib") -> Any:
        return plot_faithfulness({label or self.meta.get("method", "scores"): self}, ax=ax, backend=backend)


def faithfulness_curve(model: Any, scores: CircuitScores, sizes: Sequence[float] = MIB_FRACTIONS,
                       clean: Any = None, corrupted: Any = None, *, metric: Any = None, labels: Any = None,
                       positions: Sequence[int] | None = None, categorical: bool | None = None, seed: int = 0,
                       log_scale: bool = False, atol: float | None = None) -> FaithfulnessCurve:
    """Faithfulness of the circuits made of the top-k edges of ``scores``: every edge outside the circuit
    carries the corrupted run's value, as in MIB's circuit-localization track (Mueller et al. 2025).

    >>> f = circuits.faithfulness_curve(case, circuits.eap_ig(case))
    >>> f.cpr, f.cmd

    ``sizes``: fractions of the edges (floats in (0, 1], default MIB's 0.1% ... 100%) or edge counts (ints).
    Faithfulness ``(m(circuit) - m(empty)) / (m(full) - m(empty))``, with ``m(full)`` the clean model and
    ``m(empty)`` every edge patched (the corrupted run). The x-axis is the fraction of edges that remain on a
    path from ``embed`` to ``logits`` (MIB prunes the rest: they cannot change the output). CPR: area under
    faithfulness vs that fraction; CMD: area under ``|1 - faithfulness|`` (trapezoids, as MIB's
    ``evaluate_area_under_curve`` in MIB_circuit_track/evaluation.py; ``log_scale`` integrates over the log
    of the edge count as its option does). All sizes are evaluated in one batched pass. The default metric
    is KL to the clean output (categorical) or MSE to it (numerical); give the discovery method's metric to
    score with that one instead. ``atol``: scores this close count as tied, as in :func:`roc` (same default);
    tied edges enter the circuit in edge order, so near-ties from GPU rounding pick the same top-k edges as
    the exact ties of a CPU run.
    """
    if not isinstance(scores, CircuitScores) or scores.level != "edge":
        raise InputError("faithfulness_curve needs edge scores (a CircuitScores from an edge method).")
    rank = scores.ranking()
    order = _snap_ties(rank, _tie_atol(rank, atol)).argsort(descending=True, stable=True)
    s = setup(model, clean, corrupted, metric=metric, labels=labels, positions=positions, categorical=categorical,
              seed=seed, default_metric=_EXACT_DEFAULT)
    g = s.graph
    E = len(g.edges)
    if scores.names != g.edge_names():
        raise InputError(f"The scores are for {len(scores.names)} edges that are not this model's {E} edges.")
    if not sizes:
        raise InputError("Give at least one circuit size.")
    ks = []
    for x in sizes:
        if isinstance(x, float):
            if not 0.0 <= x <= 1.0:
                raise InputError(f"Fractional sizes must lie in [0, 1]; got {x}.")
            ks.append(int(x * E))
        else:
            if not 0 <= int(x) <= E:
                raise InputError(f"Edge counts must lie in [0, {E}]; got {x}.")
            ks.append(int(x))
    kept = torch.zeros(len(ks), E, dtype=torch.bool)
    for i, k in enumerate(ks):
        kept[i, order[:k]] = True
    counts = [int(g.connected(kk).sum()) for kk in kept]
    values = s.value(g.run((~kept).double(), s.clean, s.corrupted)).tolist()
    full, empty = s.meta["clean_metric"], s.meta["corrupted_metric"]
    span = full - empty
    if abs(span) < 1e-12:
        raise InputError(f"The metric is the same with every edge clean and every edge corrupted ({full:.6g}): "
                         f"faithfulness is undefined. Use other corrupted inputs or another metric.")
    faith = [(v - empty) / span for v in values]
    xs = [math.log(max(c, 1)) if log_scale else c / E for c in counts]
    cpr = sum((xs[i + 1] - xs[i]) * (faith[i] + faith[i + 1]) / 2 for i in range(len(xs) - 1))
    cmd = sum((xs[i + 1] - xs[i]) * (abs(1 - faith[i]) + abs(1 - faith[i + 1])) / 2 for i in range(len(xs) - 1))
    meta = {**s.meta, "method": scores.meta.get("method"), "log_scale": log_scale, "requested": ks,
            "scores": f"CircuitScores of {E} edges ({scores.meta.get('method')})",
            "sizes": [float(x) if isinstance(x, float) else int(x) for x in sizes], "atol": atol}
    return FaithfulnessCurve(counts, [c / E for c in counts], faith, values, float(cpr), float(cmd), meta)


def _lines(series: list[tuple[str, list[float], list[float]]], *, title: str, xlabel: str, ylabel: str,
           diagonal: bool, hline: float | None, log_x: bool, size: tuple[float, float], ax: Any,
           backend: str) -> Any:
    """Several named (x, y) curves on one axes (matplotlib, or a plotly figure)."""
    if resolve_backend(backend) == "plotly":
        import plotly.graph_objects as go

        fig = go.Figure([go.Scatter(x=x, y=y, mode="lines+markers", name=name) for name, x, y in series])
        if diagonal:
            fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"},
                                     showlegend=False))
        if hline is not None:
            fig.add_hline(y=hline, line_dash="dot", line_color="grey")
        fig.update_xaxes(type="log" if log_x else "linear", title_text=xlabel,
                         exponentformat="power")  # 10^-4 on a log axis, not plotly's SI "100μ"
        fig.update_layout(title=title, yaxis_title=ylabel)
        return fig
    from matplotlib.figure import Figure

    fig = ax.figure if ax is not None else Figure(figsize=size, layout="constrained")
    ax = ax or fig.add_subplot()
    for name, x, y in series:
        ax.plot(x, y, marker=".", label=name)
    if diagonal:
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
    if hline is not None:
        ax.axhline(hline, color="grey", ls=":")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def plot_roc(curves: Mapping[str, RocCurve], ax: Any = None, backend: str = "matplotlib") -> Any:
    """ROC curves of several methods on one axes, AUROC in the legend.

    >>> circuits.plot_roc({"eap": circuits.roc(eap, truth), "acdc": circuits.roc(acdc, truth)})
    """
    if not curves:
        raise InputError("No ROC curves to plot.")
    series = [(f"{n} (AUROC {c.auroc:.3f})", c.fpr.tolist(), c.tpr.tolist()) for n, c in curves.items()]
    return _lines(series, title="ROC against the ground-truth circuit", xlabel="false positive rate",
                  ylabel="true positive rate", diagonal=True, hline=None, log_x=False, size=(4.8, 4.5), ax=ax,
                  backend=backend)


def plot_faithfulness(curves: Mapping[str, FaithfulnessCurve], ax: Any = None, backend: str = "matplotlib") -> Any:
    """Faithfulness against circuit size (fraction of edges, log axis) for several methods, CPR / CMD in the legend.

    >>> circuits.plot_faithfulness({"eap": circuits.faithfulness_curve(case, eap)})
    """
    if not curves:
        raise InputError("No faithfulness curves to plot.")
    series = [(f"{n} (CPR {c.cpr:.2f}, CMD {c.cmd:.2f})", [max(x, 1e-4) for x in c.fractions], list(c.faithfulness))
              for n, c in curves.items()]
    return _lines(series, title="Faithfulness vs circuit size", xlabel="fraction of edges in the circuit",
                  ylabel="faithfulness", diagonal=False, hline=1.0, log_x=True, size=(5.5, 4), ax=ax,
                  backend=backend)
