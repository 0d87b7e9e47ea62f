"""The ``causalscope`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo._build import build_report

    path = build_report(args.out)
    print(f"report written: {path}")
    if args.check:
        from ..report._browser import check_report, find_chromium

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
    from ... import zoo

    info = zoo.describe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:12s} {v}")
    return 0


def _cmd_sites(args: argparse.Namespace) -> int:
    from ...loading import load

    names = load(args.model).site_names(args.pattern)
    print(json.dumps(names, indent=2) if args.json else "\n".join(names))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ...loading import load

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


def _noise_arg(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _cmd_trace(args: argparse.Namespace) -> int:
    from ...tracing import causal_trace

    kinds = ["hidden", "mlp", "attn"] if args.kind == "all" else [args.kind]
    results = [causal_trace(args.model, args.prompt, args.subject, kind=k, samples=args.samples,
                            noise=_noise_arg(args.noise), window=args.window, seed=args.seed,
                            target=args.target, progress=not args.json) for k in kinds]
    if args.out:
        from pathlib import Path

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        for r in results:
            path = out if len(results) == 1 else out.with_name(f"{out.stem}-{r.kind}{out.suffix}")
            r.plot().savefig(path, bbox_inches="tight", dpi=150)
            print(f"plot written: {path}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"kind": r.kind, "tokens": r.tokens, "subject_range": list(r.subject_range),
                           "answer": r.answer, "high_score": r.high_score, "low_score": r.low_score,
                           "scores": r.scores.tolist(), "token_layers": r.meta["token_layers"],
                           "settings": {k: r.meta[k] for k in ("samples", "noise_std", "window", "seed")}}
                          for r in results], indent=1))
        return 0
    for r in results:
        b, e = r.subject_range
        print(f"{r.kind}: p({r.answer.strip()!r}) clean {r.high_score:.4f}, corrupted {r.low_score:.4f}")
        width = max(len(t) for t in r.tokens) + 2
        print(" " * width + " ".join(f"{l:>6d}" for l in range(r.shape[1])))
        for i, tok in enumerate(r.tokens):
            mark = "*" if b <= i < e else " "
            print(f"{(tok + mark):<{width}}" + " ".join(f"{v:6.3f}" for v in r.scores[i].tolist()))
    return 0


def _cmd_trace_average(args: argparse.Namespace) -> int:
    from ...tracing import trace_average

    if args.facts.endswith(".json"):
        facts = [(f["prompt"], f["subject"], f.get("answer")) for f in json.loads(open(args.facts).read())]
    else:
        from ...zoo import facts as facts_mod

        facts = facts_mod.facts(args.facts)
    facts = facts[: args.n] if args.n else facts
    avg = trace_average(args.model, facts, samples=args.samples, noise=_noise_arg(args.noise),
                        window=args.window, seed=args.seed, progress=not args.json)
    if args.out:
        avg.plot().savefig(args.out, bbox_inches="tight", dpi=150)
        print(f"plot written: {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps({"meta": avg.meta, "kinds": avg.coords["kind"], "token_classes": avg.coords["token_class"],
                          "values": avg.values.tolist(), "dims": list(avg.dims)}, indent=1, default=str))
        return 0
    print(avg.meta["title"])
    for k in avg.coords["kind"]:
        print(f"\n{k}: average indirect effect (mean over facts) per layer")
        for c in avg.coords["token_class"]:
            vals = avg.sel(kind=k, token_class=c, stat="mean").values.tolist()
            print(f"  {c:24s}" + " ".join(f"{v:6.3f}" for v in vals))
    return 0


def _parser() -> argparse.ArgumentParser:
    from ..._version import __version__

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
    t = sub.add_parser("trace", help="ROME causal trace of one fact (hidden / mlp / attn heatmap)")
    t.add_argument("--model", required=True)
    t.add_argument("--prompt", required=True)
    t.add_argument("--subject", required=True)
    t.add_argument("--kind", default="hidden", choices=["hidden", "mlp", "attn", "all"])
    t.add_argument("--samples", type=int, default=10)
    t.add_argument("--noise", default="3x", help="absolute std (float) or a multiple of the subject embedding std ('3x')")
    t.add_argument("--window", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--target", default=None, help="score this token instead of the clean prediction")
    t.add_argument("--out", default=None, help="write the heatmap to this image file (one per kind with --kind all)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=_cmd_trace)
    ta = sub.add_parser("trace-average", help="causal traces averaged over many facts by token class (ROME Fig. 2)")
    ta.add_argument("--model", default="facts-gpt")
    ta.add_argument("--facts", default="heldout", help="a facts-gpt split name, or a JSON file of {prompt, subject[, answer]}")
    ta.add_argument("--n", type=int, default=50, help="use the first N facts (0 = all)")
    ta.add_argument("--samples", type=int, default=10)
    ta.add_argument("--noise", default="3x")
    ta.add_argument("--window", type=int, default=10)
    ta.add_argument("--seed", type=int, default=0)
    ta.add_argument("--out", default=None, help="write the plot to this image file")
    ta.add_argument("--json", action="store_true")
    ta.set_defaults(fn=_cmd_trace_average)
    from ._attribution import add_parsers

    add_parsers(sub)
    from ._mediation import add_parser

    add_parser(sub)
    from ._directions import add_parsers as add_direction_parsers

    add_direction_parsers(sub)
    from ._circuits import add_parser as add_circuits_parser

    add_circuits_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ...errors import CausalScopeError

    try:
        return int(args.fn(args))
    except CausalScopeError as e:
        print(f"causalscope: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
