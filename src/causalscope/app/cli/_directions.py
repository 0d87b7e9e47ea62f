"""``causalscope directions`` and ``causalscope probe``: class directions with their similarity, and linear
probes with a control task (and, with ``--steer``, the causal check of the probe directions)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._figures import plot_of, write_plot
from ._progress import JSON_HELP, Steps


def _data(args: argparse.Namespace) -> Any:
    from ...data import digits

    return digits(args.split)


def _pairs(r: Any, k: int) -> list[dict[str, Any]]:
    """``most_similar(k)`` as JSON-able dicts, whatever row type it returns (tuples or mappings)."""
    out = []
    for row in r.most_similar(k):
        if isinstance(row, dict):
            out.append({str(a): (b if isinstance(b, (int, float, str)) else str(b)) for a, b in row.items()})
        else:
            a, b, s = row[0], row[1], row[2]
            out.append({"a": a if isinstance(a, (int, str)) else str(a),
                        "b": b if isinstance(b, (int, str)) else str(b), "cosine": float(s)})
    return out


def cmd_directions(args: argparse.Namespace) -> int:
    from ...directions import class_directions
    from ...loading import load

    with Steps(args, 2 + bool(args.out)) as step:
        step(f"loading {args.model} and digits({args.split!r})")
        m, data = load(args.model), _data(args)
        step(f"class directions at {args.site}")
        r = class_directions(m, data, args.site)
        sim = r.similarity()
        pairs = _pairs(r, args.top)
        if args.out:
            step("writing the figures")
            p = Path(args.out)
            write_plot(lambda backend: sim.plot(backend=backend), args.out)
            write_plot(lambda backend: r.plot(backend=backend), str(p.with_name(f"{p.stem}-bars{p.suffix}")))
    classes = list(r.coords["class"])
    if args.json:
        print(json.dumps({"model": args.model, "site": args.site, "split": args.split, "classes": classes,
                          "norms": r.values.norm(dim=1).tolist(),
                          "top_neurons": {str(c): r.top_neurons(c, args.top) for c in classes},
                          "dims": list(sim.dims), "coords": sim.coords, "similarity": sim.values.tolist(),
                          "most_similar": pairs}, indent=1, default=str))
        return 0
    labels = [str(c) for c in sim.coords[sim.dims[0]]]
    print(f"cosine similarity of the class directions (class mean - global mean) at {args.site}, "
          f"{args.model} on digits({args.split!r}):")
    print("      " + " ".join(f"{c:>6s}" for c in labels))
    for c, row in zip(labels, sim.values.tolist()):
        print(f"{c:>6s}" + " ".join(f"{v:6.2f}" for v in row))
    print("direction norms: " + ", ".join(f"{c}: {float(v):.2f}" for c, v in zip(classes, r.values.norm(dim=1))))
    print("most similar pairs:")
    for pair in pairs:
        print("  " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in pair.items()))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from ...directions import PROBE_METRICS as METRICS
    from ...directions import probe
    from ...loading import load

    checks = {}
    with Steps(args, 2 + (len(args.sites) if args.steer else 0) + bool(args.out)) as step:
        step(f"loading {args.model} and digits({args.split!r})")
        m, data = load(args.model), _data(args)
        step(f"probes at {len(args.sites)} sites")
        r = probe(m, data, args.sites, test_size=args.test_size, seed=args.seed, C=args.C)
        if args.steer:
            source, target = (int(v) if v.lstrip("-").isdigit() else v for v in args.steer)
            for s in args.sites:
                step(f"steering at {s}")
                checks[s] = r.steer_check(m, data, s, source, target, args.strengths, n_random=args.n_random,
                                          seed=args.seed)
        if args.out:
            step("writing the figures")
            p = Path(args.out)
            write_plot(lambda backend: r.plot(backend=backend), args.out)
            for s, chk in checks.items():
                write_plot(plot_of(chk), str(p.with_name(f"{p.stem}-steer-{s}{p.suffix}")))
    if args.json:
        res: dict[str, Any] = {
            "model": args.model, "split": args.split,
            "sites": {s: {k: float(r.sel(site=s, metric=k).values) for k in METRICS} for s in r.coords["site"]},
            "settings": {k: r.meta[k] for k in ("n_train", "n_test", "test_size", "seed", "C", "control",
                                                 "classes", "converged")}}
        if checks:
            res["steering"] = {s: {"source": c.meta["source"], "target": c.meta["target"],
                                   "n_inputs": c.meta["n_inputs"], "strength": c.coords["strength"],
                                   "probe": {k: c.probe.sel(stat=k).values.tolist() for k in ("fraction", "prob")},
                                   "random": {k: c.random.sel(stat=k).values.tolist() for k in ("fraction", "prob")}}
                               for s, c in checks.items()}
        print(json.dumps(res, indent=1, default=str))
        return 0
    print(r.summary())
    for s, c in checks.items():
        print(f"\nsteering {c.meta['n_inputs']} inputs of class {c.meta['source']} toward {c.meta['target']} at {s}:")
        print(f"  {'strength':>8s} {'probe: frac':>12s} {'p(target)':>10s} {'random: frac':>13s} {'p(target)':>10s}")
        for i, st in enumerate(c.coords["strength"]):
            pv, rv = c.probe.values[i], c.random.values[i]
            print(f"  {st:8g} {float(pv[0]):12.3f} {float(pv[1]):10.3f} {float(rv[0]):13.3f} {float(rv[1]):10.3f}")
    return 0


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="digits-mlp", help="a bundled model taking 8x8 digits (default digits-mlp)")
    common.add_argument("--split", default="test", choices=["test", "train", "all"],
                        help="which part of causalscope.data.digits to use (default test)")
    common.add_argument("--out", default=None, help="write the plot to this image file")
    common.add_argument("--json", action="store_true", help=JSON_HELP)

    d = sub.add_parser("directions", parents=[common], help="class directions at a site and their cosine similarity")
    d.add_argument("--site", required=True, help="site name, e.g. act2")
    d.add_argument("--top", type=int, default=5, help="how many most similar pairs to list")
    d.set_defaults(fn=cmd_directions)

    p = sub.add_parser("probe", parents=[common], help="linear probes per site with a control task (selectivity); "
                                                       "--steer: the causal check of the probe directions")
    p.add_argument("--sites", nargs="+", required=True, help="site names, e.g. act1 act2 act3")
    p.add_argument("--test-size", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength of the probes")
    p.add_argument("--steer", nargs=2, metavar=("SOURCE", "TARGET"), default=None,
                   help="steer inputs of class SOURCE along the TARGET probe direction at every site")
    p.add_argument("--strengths", nargs="+", type=float, default=[0, 1, 2, 4, 8, 16])
    p.add_argument("--n-random", type=int, default=5, help="random control directions for --steer")
    p.set_defaults(fn=cmd_probe)
