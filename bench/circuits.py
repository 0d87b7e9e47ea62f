"""Circuit-discovery benchmark: every method on every shipped tracr case, on the tracr-compiled model and on the
SIIT-trained one, scored against the ground truth; then the seed's node ablations on both.

    .venv/bin/python bench/circuits.py                    # all cases, both models (~2 min on 2 CPU cores)
    .venv/bin/python bench/circuits.py --quick            # two cases, fewer scales and pairs: seconds
    .venv/bin/python bench/circuits.py --cases reverse,hist --models trained --json out.json

For each case (``causalscope.circuits.load_case``: all of its inputs; corrupted inputs = a seeded resample),
each model (``--models``: ``compiled``, tracr's exact weights; ``trained``, ``load_case(name, trained=True)``,
a transformer trained with SIIT so that the same circuit implements the program, on the same inputs) and each
method, in one process:
- ``node_patching`` (exact, per node), ``edge_patching`` (exact, per edge), ``eap`` (edge attribution
  patching: one forward + one backward), ``eap_ig`` (5 steps, batched), ``acdc`` (threshold 1e-6, exact,
  batched) and ``acdc-zero`` (the same with zero ablation instead of resampling);
- wall time (median of ``--reps``), edge-level AUROC and node-level AUROC against ``case.circuit``
  (exact ROC, ties counting one half; scores within ``circuits.roc``'s default tolerance, 1e-12 for
  scores of order one, count as tied, so a CPU and a GPU give the same numbers; the exact-tie edge AUROC,
  ``atol=0``, is noted where it differs), and for ACDC the TPR / FPR of the edges it kept.

References, in the same run and for both models: exact edge patching as one graph forward per edge (what
ACDC's and EAP-IG's ``exact`` modes do), and ACDC as the sequential greedy loop, one graph forward per
candidate edge (ArthurConmy/Automatic-Circuit-Discovery's ``step``). Both must give the same numbers as ours
(edge scores allclose 1e-6, the same kept edges); the script prints the speedups.

At the end: one AUROC table (compiled and trained side by side, mean over cases per method) with InterpBench's
published means for reference, then the seed's node ablations (``circuits.node_effects``, resample, scales
``circuits.DEFAULT_SCALES``) and its four PCA-subspace variants (``circuits.subspace_effects``, k=2) on each
case's held-out inputs (the inputs the trained model was not trained on; the compiled model gets the same).

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
    assert res.kept is not None
    kept = [bool(k) for k in res.kept.tolist()]
    names = res.names
    pos = {f"{s}->{r}" for s, r in truth.edges}
    tp = sum(k and n in pos for n, k in zip(names, kept))
    fp = sum(k and n not in pos for n, k in zip(names, kept))
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


def load(name: str, model: str) -> C.Case:
    return C.load_case(name, trained=model == "trained")


def bench_case(name: str, model: str, reps: int, device: torch.device) -> dict:
    case = load(name, model)
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
    cfg = case.model.cfg
    return {"case": name, "model": model, "inputs": int(case.inputs.shape[0]), "positions": int(case.inputs.shape[1]),
            "edges": len(C.ComputeGraph(case.model).edges), "truth_edges": len(truth.edges),
            "widths": {"d_model": cfg.d_model, "d_head": cfg.d_head, "d_mlp": cfg.d_mlp}, "methods": rows}


def print_case(r: dict) -> bool:
    """One case and model's rows; returns whether ours equals the reference loops."""
    ok = True
    rule(f"{r['case']} ({r['model']}): {r['inputs']} inputs x {r['positions']} positions, {r['edges']} edges "
         f"({r['truth_edges']} in the ground truth)")
    print(f"{'method':<16}{'seconds':>9}{'AUROC edge':>12}{'AUROC node':>12}   notes")
    for m, row in r["methods"].items():
        ae = _f(row["auroc_edge"])
        notes = ""
        if "tpr" in row:
            notes += f"kept edges: TPR {row['tpr']:.2f} FPR {row['fpr']:.2f}, {row['passes']} batched passes"
        exact = row.get("auroc_edge_exact_ties")
        if exact is not None and f"{exact:.3f}" != f"{row['auroc_edge']:.3f}":
            notes += f"{'; ' if notes else ''}exact ties (atol=0): AUROC edge {row['auroc_edge_exact_ties']:.3f}"
        if "reference_s" in row:
            same = row.get("reference_same_kept", row.get("reference_max_abs_diff", 1) <= 1e-6)
            ok &= bool(same)
            notes += (f"{'; ' if notes else ''}reference loop {row['reference_s']:.3f} s -> "
                      f"{row['reference_s'] / row['seconds']:.2f}x, identical: {same}")
        print(f"{m:<16}{row['seconds']:>9.3f}{ae:>12}{_f(row['auroc_node']):>12}   {notes}")
    return ok


def _f(v: float | None, width: int = 0) -> str:
    return f"{'-' if v is None else f'{v:.3f}':>{width}}"


def _mean(vals: list[float | None]) -> tuple[float | None, int]:
    got = [v for v in vals if v is not None]
    return (sum(got) / len(got) if got else None), len(got)


#: InterpBench's means (research/features.md R7): computed from the outputs of notebooks/paper-experiments.ipynb on
#: branch cybershiptrooper/new_experiments of FlyingPumba/InterpBench (16 SIIT cases; EAP-IG with 10 steps)
INTERPBENCH = {"acdc": 0.877, "eap_ig": 0.852}
INTERPBENCH_SOURCE = ("research/features.md R7: means computed from the outputs of notebooks/paper-experiments.ipynb, "
                      "branch cybershiptrooper/new_experiments of FlyingPumba/InterpBench (EAP-IG there: 10 steps); "
                      "the paper's final table may differ")


def auroc_table(results: list[dict], models: list[str]) -> dict:
    """The AUROC table: methods x cases, edge and node level, each model side by side; returns the means."""
    by = {(r["case"], r["model"]): r for r in results}
    cases = list(dict.fromkeys(r["case"] for r in results))
    cols = [(level, m) for level in ("edge", "node") for m in models]
    rule("AUROC against the ground truth, compiled and trained side by side (all inputs of each case)")
    print(f"{'method':<15}{'case':<22}" + "".join(f"{level + ' ' + m:>16}" for level, m in cols))
    means: dict[str, dict[str, float | None]] = {}
    short: set[str] = set()
    for method in METHODS:
        vals = {c: [by[(case, c[1])]["methods"][method][f"auroc_{c[0]}"] for case in cases] for c in cols}
        for i, case in enumerate(cases):
            print(f"{method if i == 0 else '':<15}{case:<22}" + "".join(_f(vals[c][i], 16) for c in cols))
        row = {c: _mean(vals[c]) for c in cols}
        cells = ""
        for c in cols:
            mean, n = row[c]
            star = "*" if 0 < n < len(cases) else ""
            short |= {case for case, v in zip(cases, vals[c]) if v is None} if star else set()
            cells += f"{_f(mean) + star:>16}"
        print(f"{'':<15}{'mean':<22}{cells}")
        means[method] = {f"{level} {m}": row[(level, m)][0] for level, m in cols}
    if short:
        print(f"* over the cases with a value: {', '.join(sorted(short))} has every head and MLP in its circuit "
              f"(no negatives at node level)")
    return means


def print_reference(results: list[dict], models: list[str], means: dict) -> None:
    cases = list(dict.fromkeys(r["case"] for r in results))
    ours = "; ".join(f"{label} " + " / ".join(f"{m} {_f(means[k][f'edge {m}'])}" for m in models)
                     for label, k in (("ACDC", "acdc"), ("EAP-IG", "eap_ig")))
    print(f"\nours (mean edge AUROC over {len(cases)} cases): {ours}")
    print(f"InterpBench (experiment notebook outputs, mean edge AUROC over its 16 SIIT cases): "
          f"ACDC {INTERPBENCH['acdc']:.3f}, EAP-IG {INTERPBENCH['eap_ig']:.3f}  [{INTERPBENCH_SOURCE}]")
    widths = sorted({tuple(r["widths"].items()) for r in results if r["model"] == "trained"})
    w = " or ".join(", ".join(f"{k} {v}" for k, v in ws) for ws in widths)
    models_text = (f"with our own SIIT models (the compiled model's depth and heads, widths {w})" if w else
                   "with the tracr-compiled models only (--models)")
    print(f"Different settings: ours are {len(cases)} tracr cases, {models_text}, all inputs of each case (the "
          f"trained model: the same inputs), resample "
          f"corruption (acdc-zero: zero ablation), EAP-IG with 5 steps and ACDC at one threshold (1e-6, its kept "
          f"edges ranked first); theirs are InterpBench's released models, its own datasets and thresholds.")


# ---------------------------------------------------------------------------------------------------------------------
# The seed's node ablations on the held-out inputs
# ---------------------------------------------------------------------------------------------------------------------
#: the seed's four PCA-subspace variants: label -> (self_patch, ablate_high_variance)
VARIANTS = {"self top-2": (True, True), "self rest": (True, False), "resample top-2": (False, True),
            "resample rest": (False, False)}


def ll_circuit(case: C.Case) -> C.Circuit:
    """The case's circuit in the model's node names (a trained model's correspondence maps HL -> LL nodes)."""
    corr = case.correspondence or {}
    if all(k == v for k, v in corr.items()):
        return case.circuit
    ren = {n: corr.get(n, n) for n in case.circuit.nodes}
    return C.Circuit([ren[n] for n in case.circuit.nodes], [(ren[a], ren[b]) for a, b in case.circuit.edges],
                     dict(case.circuit.meta))


def held_out(name: str) -> tuple[torch.Tensor, str]:
    """Indices of the inputs the trained model was held out from (``Case.held_out``: the split its training
    record names; all inputs where no trained model ships), and a warning where that split was of other inputs
    than the case's now (a case rebuilt after its model was trained). The compiled model gets the same inputs."""
    n = len(C.load_case(name).inputs)
    try:
        trained = C.load_case(name, trained=True)
    except cs.InputError:  # no shipped trained model
        return torch.arange(n), f"{name}: no shipped trained model, so no held-out split: all {n} inputs"
    rec = trained.training or {}
    index = trained.held_out
    assert index is not None
    trained_on = int(rec.get("n_train", 0)) + int(rec.get("n_test", 0))
    warn = (f"{name}: the trained model's record names a split of {trained_on} inputs, the case now has {n}: it was "
            f"trained before the case's inputs changed, so these 'held-out' inputs may include inputs it was "
            f"trained on (retrain it)" if trained_on != n else "")
    return index, warn


def error_floor(case: C.Case, test: torch.Tensor, atol: float = 5e-2) -> float:
    """A plain reference: the unablated model's error rate over the label-changing (base, source, position)
    triples of every pair of held-out inputs, i.e. the resample effect of a node that changes nothing (a
    prediction is the argmax, or the numerical output within ``atol`` of the label, node_effects' default)."""
    x, lab = case.inputs[test], case.labels[test]
    with torch.inference_mode():
        pred = case.predict(case.model(x))
    if case.categorical:
        has = lab >= 0
        wrong = (pred != lab) & has
    else:
        has = ~torch.isnan(lab)
        wrong = ((pred - lab).abs() > atol) & has
    differ = (lab[:, None] != lab[None]) & has[:, None] & has[None]  # (base, source, position)
    weight = differ.sum(1).double()  # label-changing sources per (base, position)
    return float((weight * wrong).sum() / weight.sum())


def effects_case(name: str, models: list[str], scales: list[float], pairs: int | str, sub_scales: list[float],
                 sub_pairs: int | str) -> dict:
    test, warn = held_out(name)
    if warn:
        print(f"warning: {warn}")
    out: dict[str, Any] = {"case": name, "held_out": len(test), "split_warning": warn, "models": {}}
    for model in models:
        t0 = time.perf_counter()
        case = load(name, model)
        circuit = ll_circuit(case)
        kw: dict[str, Any] = {"circuit": circuit, "labels": case.labels[test], "categorical": case.categorical,
                              "seed": 0, "progress": False}
        x = case.inputs[test]
        eff = C.node_effects(case.model, x, scales=scales, pairs=pairs, **kw)
        sub = {}
        for label, (self_patch, high) in VARIANTS.items():
            s = C.subspace_effects(case.model, x, k=2, self_patch=self_patch, ablate_high_variance=high,
                                   scales=sub_scales, pairs=sub_pairs, **kw)
            sub[label] = {n: s.values[i].tolist() for i, n in enumerate(s.nodes)}
        recorded = (case.training or {}).get("node_effects")
        if recorded and pairs == "all" and not warn:  # the record's evaluate_siit: the same call at training time
            try:
                out["record_max_diff"] = max(abs(float(recorded[n][str(float(s))]) - eff.effect(n, s))
                                             for n in eff.nodes for s in eff.scales)
            except KeyError:  # the record has other scales or nodes
                pass
        out["models"][model] = {"status": eff.status, "scales": eff.scales, "unablated": error_floor(case, test),
                                "effects": {n: eff.values[i].tolist() for i, n in enumerate(eff.nodes)},
                                "subspace": sub, "subspace_scales": list(sub_scales),
                                "seconds": time.perf_counter() - t0}
    return out


def _nodes(e: dict) -> list[tuple[str, str]]:
    """(node, status) rows of a case, in circuit first, in model order."""
    rows: dict[str, str] = {}
    for m in e["models"].values():
        for n, st in m["status"].items():
            rows.setdefault(n, st)
    return sorted(rows.items(), key=lambda kv: kv[1] != "in_circuit")


def effects_table(effects: list[dict], models: list[str], scales: list[float], pairs: int | str) -> None:
    s0, s1 = scales.index(0.0), scales.index(1.0)
    rule(f"Node effects on the held-out inputs (resample ablation, scales {', '.join(f'{s:g}' for s in scales)}; "
         f"pairs: {pairs})")
    print(f"{'':<39}" + "".join(f"{m:^27}" for m in models))
    print(f"{'case (held-out inputs)':<24}{'node':<7}{'status':<8}" +
          "".join(f"{'scale 0':>9}{'scale 1':>9}{'max':>9}" for _ in models))
    for e in effects:
        for i, (node, st) in enumerate(_nodes(e)):
            case = f"{e['case']} ({e['held_out']})" if i == 0 else ""
            cells = ""
            for m in models:
                v = e["models"][m]["effects"].get(node)
                cells += "".join(_f(x, 9) for x in ((v[s0], v[s1], max(v)) if v else (None,) * 3))
            print(f"{case:<24}{node:<7}{'in' if st == 'in_circuit' else 'out':<8}{cells}")
        floor = "".join(_f(e["models"][m]["unablated"], 9) * 3 for m in models)
        print(f"{'':<24}{'none':<7}{'-':<8}{floor}")
    for e in effects:
        if e["split_warning"]:
            print(f"warning: {e['split_warning']}")
    diffs = [f"{e['case']} {e['record_max_diff']:.1e}" for e in effects if "record_max_diff" in e]
    if diffs:
        print("trained: max |effect - the training record's (circuits.evaluate_siit, 4 decimals)|: " + ", ".join(diffs))
    print("none: no ablation, the model's own error rate over the label-changing (base, source, position) triples "
          "of all held-out pairs (a plain loop): the effect of a node that changes nothing")


def subspace_table(effects: list[dict], models: list[str], scales: list[float], pairs: int | str) -> None:
    rule(f"PCA-subspace ablations (the seed's four variants, k=2, centred): the largest effect over scales "
         f"{', '.join(f'{s:g}' for s in scales)}; pairs: {pairs}")
    short = {"compiled": "comp", "trained": "train"}
    print(f"{'':<37}" + "".join(f"{v:>{8 * len(models)}}" for v in VARIANTS))
    print(f"{'case':<22}{'node':<7}{'status':<8}" + "".join(f"{short.get(m, m):>8}" for _ in VARIANTS for m in models))
    for e in effects:
        for i, (node, st) in enumerate(_nodes(e)):
            cells = ""
            for v in VARIANTS:
                for m in models:
                    row = e["models"][m]["subspace"][v].get(node)
                    cells += _f(max(row) if row else None, 8)
            print(f"{e['case'] if i == 0 else '':<22}{node:<7}{'in' if st == 'in_circuit' else 'out':<8}{cells}")


def _pairs(text: str) -> int | str:
    return text if text == "all" else int(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=None, help="comma-separated shipped case names (default: all; --quick: "
                                                 "frac-prevs,reverse)")
    p.add_argument("--models", default="compiled,trained", help="compiled, trained or both (comma-separated)")
    p.add_argument("--reps", type=int, default=None, help="timed calls per method (default 3; --quick: 1)")
    p.add_argument("--pairs", type=_pairs, default=None, help="node effects: (base, source) pairs, 'all' or a "
                                                               "seeded sample size (default all; --quick: 300)")
    p.add_argument("--subspace-pairs", type=_pairs, default=None, help="PCA-subspace ablations: pairs (default "
                                                                        "1000; --quick: 200)")
    p.add_argument("--quick", action="store_true", help="two cases, one rep, scales 0 and 1 (subspace: 0 and 2), "
                                                        "sampled pairs")
    p.add_argument("--threads", default="auto", metavar="auto|default|K")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in ("compiled", "trained") for m in models):
        p.error(f"--models takes compiled, trained or both; got {args.models!r}")
    names = [n.strip() for n in (args.cases or ("frac-prevs,reverse" if args.quick else ",".join(C.case_names())))
             .split(",") if n.strip()]
    reps = args.reps if args.reps is not None else 1 if args.quick else 3
    pairs = args.pairs if args.pairs is not None else 300 if args.quick else "all"
    sub_pairs = args.subspace_pairs if args.subspace_pairs is not None else 200 if args.quick else 1000
    scales = [0.0, 1.0] if args.quick else [float(s) for s in C.DEFAULT_SCALES]
    sub_scales = [0.0, 2.0] if args.quick else scales
    device = torch.device("cpu")
    env = start(args.threads, device, args.quick, reps)
    t0 = time.perf_counter()
    results, ok = [], True
    # the first seconds of the process run slow (the first case's edge patching measured 0.4x its later speed
    # whatever its order: thread pools and lazy imports settling); warm every method up on one case first
    warm = load(names[0], models[0])
    for _ in range(1 if args.quick else 3):
        for method in METHODS:
            run_method(warm, method)
    for name in names:
        for model in models:
            r = bench_case(name, model, reps, device)
            results.append(r)
            ok &= print_case(r)
    t1 = time.perf_counter()
    effects = [effects_case(name, models, scales, pairs, sub_scales, sub_pairs) for name in names]
    means = auroc_table(results, models)
    print_reference(results, models, means)
    effects_table(effects, models, scales, pairs)
    subspace_table(effects, models, sub_scales, sub_pairs)
    print(f"\ndiscovery {t1 - t0:.1f} s, node and subspace ablations {time.perf_counter() - t1:.1f} s")
    return finish({"cases": results, "auroc_means": {m: {k: v for k, v in d.items()} for m, d in means.items()},
                   "interpbench": {**INTERPBENCH, "source": INTERPBENCH_SOURCE}, "effects": effects, "env": env,
                   "wall_s": time.perf_counter() - t0}, env, args.json, ok)


if __name__ == "__main__":
    sys.exit(main())
