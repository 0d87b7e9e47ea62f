"""Circuit-discovery benchmark: every method on every shipped tracr case, scored against the ground truth.

    .venv/bin/python bench/circuits.py                    # all cases (~1 min on 2 CPU cores)
    .venv/bin/python bench/circuits.py --cases reverse,hist --json out.json

For each case (``causalscope.circuits.load_case``: all of its inputs; corrupted inputs = a seeded resample)
and each method, in one process:
- ``node_patching`` (exact, per node), ``edge_patching`` (exact, per edge), ``eap`` (edge attribution
  patching: one forward + one backward), ``eap_ig`` (5 steps, batched), ``acdc`` (threshold 1e-6, exact,
  batched) and ``acdc-zero`` (the same with zero ablation instead of resampling);
- wall time (median of ``--reps``), edge-level AUROC and node-level AUROC against ``case.circuit``
  (exact ROC, ties counting one half; scores within ``circuits.roc``'s default tolerance, 1e-12 for
  scores of order one, count as tied, so a CPU and a GPU give the same numbers; the exact-tie edge AUROC,
  ``atol=0``, is noted where it differs), and for ACDC the TPR / FPR of the edges it kept.

References, in the same run: exact edge patching as one graph forward per edge (what ACDC's and
EAP-IG's ``exact`` modes do), and ACDC as the sequential greedy loop, one graph forward per candidate
edge (ArthurConmy/Automatic-Circuit-Discovery's ``step``). Both must give the same numbers as ours (edge
scores allclose 1e-6, the same kept edges); the script prints the speedups.

Not every ground-truth edge is visible to resampling: edges that carry only what is the same on every
input (tracr's constant direction, positions, the length when all inputs are full length) change no
output when patched. The ``acdc-zero`` row shows the same search with zero ablation.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import causalscope as cs
from _common import finish, rule, start, timed
from causalscope import circuits as C
from causalscope.circuits._discovery import _EXACT_DEFAULT, setup

METHODS = ("node_patching", "edge_patching", "eap", "eap_ig", "acdc", "acdc-zero")
THRESHOLD = 1e-6


def run_method(case: Any, method: str) -> C.CircuitScores:
    if method == "acdc":
        return C.acdc(case, threshold=THRESHOLD, progress=False)
    if method == "acdc-zero":
        return C.acdc(case, None, "zero", threshold=THRESHOLD, progress=False)
    return C.discover(case, method=method, **({"steps": 5} if method == "eap_ig" else {}))


def tpr_fpr(res: C.CircuitScores, truth: C.Circuit) -> tuple[float, float]:
    kept = res.kept
    names = res.names
    pos = {f"{s}->{r}" for s, r in truth.edges}
    tp = sum(1 for n, k in zip(names, kept.tolist()) if k and n in pos)
    fp = sum(1 for n, k in zip(names, kept.tolist()) if k and n not in pos)
    n_pos, n_neg = len(pos), len(names) - len(pos)
    return tp / max(n_pos, 1), fp / max(n_neg, 1)


def naive_edge_patching(case: Any) -> torch.Tensor:
    """One full graph forward per edge (no batching; only the clean / corrupted runs are reused)."""
    s = setup(case, default_metric=_EXACT_DEFAULT)
    g = s.graph
    out = torch.empty(len(g.edges), dtype=torch.float64)
    for i in range(len(g.edges)):
        p = torch.zeros(1, len(g.edges), dtype=torch.float64)
        p[0, i] = 1
        out[i] = float(s.value(g.run(p, s.clean, s.corrupted))[0]) - float(s.meta["clean_metric"])
    return out


def naive_acdc(case: Any, threshold: float) -> list[bool]:
    """ACDC's greedy loop, one full graph forward per candidate: receivers from the logits back, senders
    latest first, an edge removed when the metric gets worse by less than ``threshold``; a node none of whose
    outgoing edges is left loses its incoming edges untried."""
    s = setup(case, default_metric=_EXACT_DEFAULT)
    g = s.graph
    E = len(g.edges)
    state = torch.zeros(E, dtype=torch.float64)
    tried = torch.zeros(E, dtype=torch.bool)
    current = float(s.meta["clean_metric"])
    for r in reversed(g.receivers):
        incoming = sorted((i for i in range(E) if g.edges[i][1] == r), key=lambda i: -g.senders.index(g.edges[i][0]))
        if r != "logits" and all(state[i] == 1 for i in range(E) if g.edges[i][0] == r):
            state[incoming] = 1.0
            continue
        for i in incoming:
            trial = state.clone()
            trial[i] = 1.0
            v = float(s.value(g.run(trial[None], s.clean, s.corrupted))[0])
            tried[i] = True
            if float(s.metric.worse(torch.tensor(v), current)) < threshold:
                state, current = trial, v
    return ((state == 0) & tried).tolist()


def _median(fn: Any, device: torch.device, reps: int) -> tuple[float, Any]:
    """The median time of ``reps`` calls (as ours is timed) and the last result."""
    times, out = [], None
    for _ in range(reps):
        dt, out = timed(fn, device)
        times.append(dt)
    return statistics.median(times), out


def bench_case(name: str, reps: int, device: torch.device) -> dict:
    case = C.load_case(name)
    truth = case.circuit
    rows: dict[str, dict] = {}
    for method in METHODS:
        times, res = [], None
        run_method(case, method)  # one untimed warm-up call (first-call costs: allocator, lazy imports, caches)
        for _ in range(reps):
            dt, res = timed(lambda: run_method(case, method), device)
            times.append(dt)
        assert res is not None
        row = {"seconds": statistics.median(times), "auroc_edge": None, "auroc_node": None}
        if res.level == "edge":
            row["auroc_edge"] = C.roc(res, truth).auroc
            row["auroc_edge_exact_ties"] = C.roc(res, truth, atol=0).auroc
        try:
            row["auroc_node"] = C.roc(res, truth, level="node").auroc
        except cs.InputError:  # every head / MLP is in the circuit (hist): no negatives, no ROC
            row["auroc_node"] = None
        if res.kept is not None:
            row["tpr"], row["fpr"] = tpr_fpr(res, truth)
            row["passes"] = res.meta.get("passes")
        rows[method] = row
        if method == "edge_patching":
            naive_edge_patching(case)  # warm-up, as for ours
            ref_s, ref = _median(lambda: naive_edge_patching(case), device, reps)
            row["reference_s"] = ref_s
            row["reference_max_abs_diff"] = float((res.values.double() - ref.double()).abs().max())
        if method == "acdc":
            naive_acdc(case, THRESHOLD)  # warm-up, as for ours
            ref_s, kept = _median(lambda: naive_acdc(case, THRESHOLD), device, reps)
            row["reference_s"] = ref_s
            row["reference_same_kept"] = kept == res.kept.tolist()
    return {"case": name, "inputs": int(case.inputs.shape[0]), "positions": int(case.inputs.shape[1]),
            "edges": len(C.ComputeGraph(case.model).edges), "truth_edges": len(truth.edges), "methods": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(C.case_names()), help="comma-separated shipped case names")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", default="auto", metavar="auto|default|K")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    device = torch.device("cpu")
    env = start(args.threads, device, False, args.reps)
    t0 = time.perf_counter()
    results, ok = [], True
    # the first seconds of the process run slow (the first case's edge patching measured 0.4x its later speed
    # whatever its order: thread pools and lazy imports settling); warm every method up on one case first
    warm = C.load_case(args.cases.split(",")[0].strip())
    for _ in range(3):
        for method in METHODS:
            run_method(warm, method)
    for name in args.cases.split(","):
        r = bench_case(name.strip(), args.reps, device)
        results.append(r)
        rule(f"{r['case']}: {r['inputs']} inputs x {r['positions']} positions, {r['edges']} edges "
             f"({r['truth_edges']} in the ground truth)")
        print(f"{'method':<16}{'seconds':>9}{'AUROC edge':>12}{'AUROC node':>12}   notes")
        for m, row in r["methods"].items():
            ae = "-" if row["auroc_edge"] is None else f"{row['auroc_edge']:.3f}"
            notes = ""
            if "tpr" in row:
                notes += f"kept edges: TPR {row['tpr']:.2f} FPR {row['fpr']:.2f}, {row['passes']} batched passes"
            if row.get("auroc_edge_exact_ties") not in (None, row["auroc_edge"]):
                notes += f"{'; ' if notes else ''}exact ties (atol=0): AUROC edge {row['auroc_edge_exact_ties']:.3f}"
            if "reference_s" in row:
                same = row.get("reference_same_kept", row.get("reference_max_abs_diff", 1) <= 1e-6)
                ok &= bool(same)
                notes += (f"{'; ' if notes else ''}reference loop {row['reference_s']:.3f} s -> "
                          f"{row['reference_s'] / row['seconds']:.2f}x, identical: {same}")
            an = "-" if row["auroc_node"] is None else f"{row['auroc_node']:.3f}"
            print(f"{m:<16}{row['seconds']:>9.3f}{ae:>12}{an:>12}   {notes}")
    rule("Summary: AUROC (edge level; node level for node_patching) per case")
    print(f"{'case':<14}" + "".join(f"{m:>14}" for m in METHODS))
    for r in results:
        vals = [r["methods"][m]["auroc_edge"] if r["methods"][m]["auroc_edge"] is not None
                else r["methods"][m]["auroc_node"] for m in METHODS]
        print(f"{r['case']:<14}" + "".join(f"{'-' if v is None else f'{v:.3f}':>14}" for v in vals))
    return finish({"cases": results, "env": env, "wall_s": time.perf_counter() - t0}, env, args.json, ok)


if __name__ == "__main__":
    sys.exit(main())
