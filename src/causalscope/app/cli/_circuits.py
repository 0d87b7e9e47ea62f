"""``causalscope circuits``: the shipped ground-truth (tracr) cases, node ablations, circuit discovery and
scoring of discovery methods against the known circuits."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._figures import write_plot
from ._progress import JSON_HELP, Steps

#: CLI method names -> ``circuits.discover`` method names
METHODS = {"eap": "eap", "eap-ig": "eap_ig", "acdc": "acdc", "edge": "edge_patching", "node": "node_patching"}
ALIASES = {"eap_ig": "eap-ig", "edge_patching": "edge", "edge-patching": "edge", "node_patching": "node",
           "node-patching": "node", "edge_attribution_patching": "eap"}
DEFAULT_SCORE_METHODS = "eap,eap-ig,acdc,edge"


def _method(name: str) -> str:
    """A CLI method name (or its library spelling) as the library's name; InputError names the choices."""
    from ...errors import InputError

    key = ALIASES.get(name.strip(), name.strip())
    if key not in METHODS:
        raise InputError(f"Unknown method {name!r}: use one of {', '.join(METHODS)}.")
    return METHODS[key]


def _case(name: str, trained: bool = False) -> Any:
    from ...circuits import load_case

    return load_case(name, trained=trained)


def _scales(text: str) -> list[float]:
    from ...errors import InputError

    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--scales takes comma-separated numbers, e.g. 0,0.5,1,2; got {text!r}.") from None
    if not vals:
        raise InputError("--scales needs at least one number.")
    return vals


def _pairs(text: str) -> int | str:
    from ...errors import InputError

    if text == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        raise InputError(f"--pairs takes a number or 'all'; got {text!r}.") from None
    if n <= 0:
        raise InputError(f"--pairs must be positive; got {n}.")
    return n


def _corrupted(text: str) -> str | None:
    """``resample`` is the library default (None): a seeded resample of the inputs."""
    return None if text == "resample" else text


def _save(make: Any, out: str | None) -> None:
    """:func:`write_plot` of ``make`` to ``--plot``, the path noted as a ``Path`` (``./roc.png`` as ``roc.png``)."""
    write_plot(make, Path(out) if out else None)


def case_info(name: str) -> dict[str, Any]:
    """One row of ``circuits list``."""
    c = _case(name)
    cfg = c.model.cfg
    return {"name": c.name, "description": c.description, "kind": "categorical" if c.categorical else "numerical",
            "n_inputs": int(c.inputs.shape[0]), "seq_len": int(c.inputs.shape[1]) - 1,
            "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads, "d_head": cfg.d_head,
            "d_mlp": cfg.d_mlp, "d_vocab_out": cfg.d_vocab_out,
            "circuit_nodes": len(c.circuit.nodes), "circuit_edges": len(c.circuit.edges),
            "circuit": c.circuit.nodes}


def cmd_list(args: argparse.Namespace) -> int:
    from ...circuits import case_names

    names = case_names()
    rows = []
    with Steps(args, len(names)) as step:
        for n in names:
            step(f"loading {n}")
            rows.append(case_info(n))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'case':13s} {'kind':11s} {'inputs':>6s} {'len':>3s} {'layers':>6s} {'d_model':>7s} {'heads':>5s} "
          f"{'circuit':>13s}  description")
    for r in rows:
        circ = f"{r['circuit_nodes']} n / {r['circuit_edges']} e"
        print(f"{r['name']:13s} {r['kind']:11s} {r['n_inputs']:6d} {r['seq_len']:3d} {r['n_layers']:6d} "
              f"{r['d_model']:7d} {r['n_heads']:5d} {circ:>13s}  {r['description']}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from ...circuits import node_effects

    scales, pairs = _scales(args.scales), _pairs(args.pairs)
    with Steps(args, 2 + bool(args.out)) as step:
        step(f"loading {args.case}")
        case = _case(args.case, args.trained)
        step(f"{args.ablation} ablation of every node")
        r = node_effects(case, ablation=args.ablation, scales=scales, pairs=pairs, seed=args.seed,
                         progress=step.progress)
        if args.out:
            step("writing the figure")
        _save(lambda backend: r.plot(backend=backend), args.out)
    if args.json:
        print(json.dumps({"case": case.name, **r.to_dict()}, indent=1, default=str))
        return 0
    print(f"{case.name}: {args.ablation} ablation, pairs={args.pairs}, seed={args.seed}: causal effect per node "
          f"(fraction of predictions that break)")
    print(r.table().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


#: the discovery methods that take ``progress=`` (the others are one forward and backward pass)
WITH_PROGRESS = ("acdc", "edge_patching", "node_patching")


def _discover(case: Any, method: str, args: argparse.Namespace, progress: bool = False) -> Any:
    from ...circuits import discover

    kw: dict[str, Any] = {"seed": args.seed}
    if method in WITH_PROGRESS:
        kw["progress"] = progress
    if method == "acdc" and getattr(args, "threshold", None) is not None:
        kw["threshold"] = args.threshold
    if method == "eap_ig" and getattr(args, "steps", None) is not None:
        kw["steps"] = args.steps
    return discover(case, corrupted=_corrupted(args.corrupted), method=method, **kw)


def cmd_discover(args: argparse.Namespace) -> int:
    from ...circuits import roc
    from ...errors import InputError

    method = _method(args.method)
    with Steps(args, 2 + bool(args.out)) as step:
        step(f"loading {args.case}")
        case = _case(args.case, args.trained)
        step(method)
        r = _discover(case, method, args, step.progress)
        if method == "acdc":
            circ = r.circuit()
        elif args.threshold is not None:
            circ = r.circuit(threshold=args.threshold)
        else:
            circ = None
        try:
            auroc: float | None = roc(r, case.circuit).auroc
        except InputError:
            auroc = None  # e.g. node scores where every scored node is in the circuit
        top = r.top(args.top)
        if args.out:
            step("writing the figure")
        _save(lambda backend: r.plot(backend=backend, k=args.top), args.out)
    if args.json:
        res: dict[str, Any] = {"case": case.name, "method": method, "level": r.level, "corrupted": args.corrupted,
                               "scores": dict(zip(r.names, r.values.tolist())),
                               "top": [{r.level: n, "score": float(s)} for n, s in zip(top[r.level], top["score"])],
                               "auroc": auroc,
                               "circuit": None if circ is None else {"nodes": circ.nodes,
                                                                     "edges": [list(e) for e in circ.edges]},
                               "truth": {"nodes": case.circuit.nodes, "edges": [list(e) for e in case.circuit.edges]}}
        if r.kept is not None:
            res["kept"] = r.kept.tolist()
        print(json.dumps(res, indent=1, default=str))
        return 0
    truth = set(case.circuit.nodes) if r.level == "node" else {f"{a}->{b}" for a, b in case.circuit.edges}
    print(f"{case.name}: {method} ({args.corrupted} corruption), top {len(top)} of {len(r.names)} {r.level}s"
          + (f"; AUROC against the ground truth {auroc:.3f}" if auroc is not None else ""))
    for n, s in zip(top[r.level], top["score"]):
        print(f"  {'*' if n in truth else ' '} {n:16s} {s:+.6f}")
    print("  (* in the ground-truth circuit)")
    if circ is not None:
        print(f"circuit: {len(circ.edges)} edges: " + ", ".join(f"{a}->{b}" for a, b in circ.edges))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from ...circuits import plot_roc, roc
    from ...errors import InputError

    names = [m.strip() for part in args.methods for m in part.split(",") if m.strip()]
    if not names:
        raise InputError(f"--methods needs at least one of {', '.join(METHODS)}.")
    methods = {m.strip(): _method(m) for m in names}
    curves: dict[str, Any] = {}
    out: dict[str, dict[str, Any]] = {}
    with Steps(args, 1 + len(methods) + bool(args.out)) as step:
        step(f"loading {args.case}")
        case = _case(args.case, args.trained)
        for label, method in methods.items():
            step(method)
            r = _discover(case, method, args, step.progress)
            try:
                c = roc(r, case.circuit, level=args.level)
            except InputError as e:
                out[label] = {"method": method, "auroc": None, "error": str(e)}
                continue
            curves[label] = c
            out[label] = {"method": method, "auroc": c.auroc, "n_positive": c.n_positive,
                          "n_negative": c.n_negative, "fpr": c.fpr.tolist(), "tpr": c.tpr.tolist()}
        if curves:
            if args.out:
                step("writing the figure")
            _save(lambda backend: plot_roc(curves, backend=backend), args.out)
    if args.json:
        print(json.dumps({"case": case.name, "corrupted": args.corrupted, "level": args.level or "edge",
                          "methods": out}, indent=1))
        return 0
    print(f"{case.name}: AUROC against the ground-truth circuit ({args.corrupted} corruption, "
          f"{args.level or 'edge'} level)")
    for label, d in out.items():
        print(f"  {label:8s} " + (f"{d['auroc']:.3f}  ({d['n_positive']} in circuit, {d['n_negative']} not)"
                                  if d["auroc"] is not None else f"n/a: {d['error']}"))
    return 0


def add_parsers(sub: Any) -> None:
    from ...catalog import tracr_cases

    def case_names() -> list[str]:
        return list(tracr_cases())

    p = sub.add_parser("circuits", help="ground-truth (tracr) circuits: list cases, node ablations, discovery, "
                                        "scoring against the true circuit")
    csub = p.add_subparsers(dest="circuits_command", required=True)
    lp = csub.add_parser("list", help="the shipped cases: sizes, output kind, circuit size")
    lp.add_argument("--json", action="store_true", help=JSON_HELP)
    lp.set_defaults(fn=cmd_list)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--case", required=True, help=f"a shipped case: {', '.join(case_names())}")
    common.add_argument("--trained", action="store_true",
                        help="use the case's SIIT-trained model instead of the compiled one (docs/siit.md)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--json", action="store_true", help=JSON_HELP)
    common.add_argument("--out", "--plot", dest="out", default=None,
                        help="write the plot here (.html: interactive; else an image); --plot is the old name")

    a = csub.add_parser("ablate", parents=[common], help="causal effect of each head / MLP under scaled ablation")
    a.add_argument("--ablation", default="resample", choices=["resample", "mean", "zero"])
    a.add_argument("--scales", default="0,0.5,1,2,5,10", help="comma-separated scales (default 0,0.5,1,2,5,10)")
    a.add_argument("--pairs", default="2000", help="(base, source) pairs to sample, or 'all' (default 2000)")
    a.set_defaults(fn=cmd_ablate)

    disc = argparse.ArgumentParser(add_help=False)
    disc.add_argument("--corrupted", default="resample", choices=["resample", "zero", "mean"],
                      help="corrupted run: a seeded resample of the inputs (default), or every node zero / its mean")
    disc.add_argument("--steps", type=int, default=None, help="EAP-IG integration steps (library default 5)")

    d = csub.add_parser("discover", parents=[common, disc], help="run one circuit-discovery method on a case")
    d.add_argument("--method", default="eap-ig", help=f"one of {', '.join(METHODS)} (default eap-ig)")
    d.add_argument("--threshold", type=float, default=None,
                   help="acdc: its pruning threshold (default 1e-4); other methods: keep edges with |score| >= it")
    d.add_argument("--top", type=int, default=10, help="list the K highest-ranked edges (nodes)")
    d.set_defaults(fn=cmd_discover)

    s = csub.add_parser("score", parents=[common, disc], help="AUROC of discovery methods against the true circuit")
    s.add_argument("--methods", nargs="+", default=DEFAULT_SCORE_METHODS.split(","),
                   help=f"from {', '.join(METHODS)}, separated by spaces (as --sites) or commas")
    s.add_argument("--threshold", type=float, default=None, help="ACDC's pruning threshold (default 1e-4)")
    s.add_argument("--level", default=None, choices=["edge", "node"], help="score edges (default) or nodes")
    s.set_defaults(fn=cmd_score)
