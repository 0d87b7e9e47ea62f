"""The ``causalscope`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import build_report

    path = build_report(args.out)
    print(f"report written: {path}")
    if args.check:
        from ._browser import check_report, find_chromium

        if find_chromium() is None:
            print("chromium not found: skipped the browser check (apt-get install chromium)", file=sys.stderr)
        else:
            res = check_report(path)
            print(f"browser check: {res['drawn']}/{res['n_figures']} figures drew"
                  + (f"; JS errors: {res['js_errors']}" if res["js_errors"] else ""))
            if res["drawn"] != res["n_figures"] or res["js_errors"]:
                return 1
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from . import zoo

    info = zoo.describe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:12s} {v}")
    return 0


def _cmd_sites(args: argparse.Namespace) -> int:
    from ._load import load

    names = load(args.model).site_names(args.pattern)
    print(json.dumps(names, indent=2) if args.json else "\n".join(names))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ._load import load

    m = load(args.model)
    run = m.run(args.prompt, cache=args.cache)
    logits = run.output[0, -1]
    top = logits.softmax(-1).topk(min(args.top, logits.numel()))
    result = {
        "model": m.name, "tokens": m.tokens(args.prompt) if m.tokenizer is not None else None,
        "next_token": [{"token": m.tokenizer.decode([int(i)]) if m.tokenizer else int(i), "prob": float(p)}
                       for p, i in zip(top.values, top.indices)],
        "cache": {k: {"shape": list(v.shape), "norm": float(v.norm())} for k, v in run.cache.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("tokens:", result["tokens"])
        for t in result["next_token"]:
            print(f"  {t['token']!s:12s} {t['prob']:.4f}")
        for k, v in result["cache"].items():
            print(f"cache {k}: shape {v['shape']} norm {v['norm']:.3f}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = argparse.ArgumentParser(prog="causalscope", description="Causal interpretability for PyTorch models.")
    p.add_argument("--version", action="version", version=f"causalscope {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the end-to-end demo on bundled models and write an HTML report")
    d.add_argument("--out", default="report/causalscope-report.html")
    d.add_argument("--check", action="store_true", help="open the report in headless chromium and check every figure drew")
    d.set_defaults(fn=_cmd_demo)
    mo = sub.add_parser("models", help="list the bundled models")
    mo.add_argument("--json", action="store_true")
    mo.set_defaults(fn=_cmd_models)
    s = sub.add_parser("sites", help="list a model's site names")
    s.add_argument("--model", required=True)
    s.add_argument("--pattern", default=None, help="glob, e.g. 'layers.*.mlp'")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_cmd_sites)
    r = sub.add_parser("run", help="run a prompt, show the next-token distribution and cached activations")
    r.add_argument("--model", required=True)
    r.add_argument("--prompt", required=True)
    r.add_argument("--cache", nargs="*", default=[])
    r.add_argument("--top", type=int, default=5)
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=_cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ._errors import CausalScopeError

    try:
        return int(args.fn(args))
    except CausalScopeError as e:
        print(f"causalscope: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
