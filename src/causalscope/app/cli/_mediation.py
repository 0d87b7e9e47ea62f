"""``causalscope mediate``: total / direct / indirect effects and IIA per neuron on counterfactual pairs."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ._figures import write_plot
from ._progress import JSON_HELP, Steps


def cmd_mediate(args: argparse.Namespace) -> int:
    from ...abstraction import STATS, counterfactuals, mediation
    from ...loading import load

    ds = counterfactuals(vary=args.vary, n=args.n, seed=args.seed)  # checks --vary and --n before any loading
    sites: Any = args.sites[0] if len(args.sites) == 1 and args.sites[0] == "neurons" else args.sites
    with Steps(args, 2 + bool(args.out)) as step:
        step(f"loading {args.model}")
        m = load(args.model)
        step(f"mediation over {args.n} pairs, {args.n_boot} bootstrap draws")
        r = mediation(m, ds, sites, tol=args.tol, n_boot=args.n_boot, seed=args.seed)
        if args.out:
            step("writing the figure")
        write_plot(lambda backend: r.plot(backend=backend), args.out)
    if args.json:
        print(json.dumps({"dims": list(r.dims), "coords": r.coords, "values": r.values.tolist(),
                          "meta": {k: r.meta[k] for k in ("varied", "n_pairs", "tol", "n_boot", "ci", "iia_rule")}},
                         indent=1, default=str))
        return 0
    print(f"{r.meta['title']}: {r.meta['n_pairs']} pairs, IIA rule {r.meta['iia_rule']}, "
          f"{int(100 * r.meta['ci'])}% bootstrap intervals")
    cells = r.stat("IIA")
    dims = cells.dims
    for idx in _cells(cells):
        label = ", ".join(f"{d}={cells.coords[d][i]}" for d, i in zip(dims, idx))
        parts = []
        for s in STATS:
            mean, lo, hi = (float(r.values[(*idx, STATS.index(s), k)]) for k in range(3))
            parts.append(f"{s} {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"  {label:22s} " + "  ".join(parts))
    return 0


def _cells(a: Any) -> list[tuple[int, ...]]:
    import itertools

    return [idx for idx in itertools.product(*[range(n) for n in a.shape])
            if not bool(a.values[idx].isnan())]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("mediate", help="total / direct / indirect effects and IIA per site on counterfactual pairs")
    p.add_argument("--model", default="adder")
    p.add_argument("--vary", nargs="+", default=["A"], help="input variables that differ between base and source")
    p.add_argument("--sites", nargs="+", default=["neurons"], help="'neurons' (every hidden neuron) or site names")
    p.add_argument("--n", type=int, default=50, help="number of base / source pairs")
    p.add_argument("--tol", type=float, default=1e-3, help="IIA tolerance on the output")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the IIA heatmap to this image file")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(fn=cmd_mediate)
