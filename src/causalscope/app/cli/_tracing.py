"""``causalscope trace`` and ``trace-average``: ROME causal traces of one fact, and averaged over many facts.

>>> from causalscope.app.cli import main
>>> main(["trace", "--model", "facts-gpt", "--prompt", "...", "--subject", "...", "--out", "t.png"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal, cast

from ._figures import plot_of, write_plot

Kind = Literal["hidden", "mlp", "attn"]


def _noise_arg(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def cmd_trace(args: argparse.Namespace) -> int:
    from ...tracing import causal_trace

    # argparse's choices= has checked --kind
    kinds: list[Kind] = ["hidden", "mlp", "attn"] if args.kind == "all" else [cast(Kind, args.kind)]
    results = [causal_trace(args.model, args.prompt, args.subject, kind=k, samples=args.samples,
                            noise=_noise_arg(args.noise), window=args.window, seed=args.seed,
                            target=args.target, progress=not args.json) for k in kinds]
    if args.out:
        out = Path(args.out)
        for r in results:
            path = out if len(results) == 1 else out.with_name(f"{out.stem}-{r.kind}{out.suffix}")
            write_plot(plot_of(r), path)
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


def cmd_trace_average(args: argparse.Namespace) -> int:
    from ...tracing import trace_average

    facts: list[Any]  # (prompt, subject, answer) tuples or the zoo's Facts
    if args.facts.endswith(".json"):
        facts = [(f["prompt"], f["subject"], f.get("answer")) for f in json.loads(open(args.facts).read())]
    else:
        from ...zoo import facts as facts_mod

        facts = facts_mod.facts(args.facts)
    facts = facts[: args.n] if args.n else facts
    avg = trace_average(args.model, facts, samples=args.samples, noise=_noise_arg(args.noise),
                        window=args.window, seed=args.seed, progress=not args.json)
    write_plot(lambda backend: avg.plot(backend=backend), args.out)
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


def add_parsers(sub: Any) -> None:
    t = sub.add_parser("trace", help="ROME causal trace of one fact (hidden / mlp / attn heatmap)")
    t.add_argument("--model", required=True)
    t.add_argument("--prompt", required=True)
    t.add_argument("--subject", required=True)
    t.add_argument("--kind", default="hidden", choices=["hidden", "mlp", "attn", "all"])
    t.add_argument("--samples", type=int, default=10)
    t.add_argument("--noise", default="3x",
                   help="absolute std (float) or a multiple of the subject embedding std ('3x')")
    t.add_argument("--window", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--target", default=None, help="score this token instead of the clean prediction")
    t.add_argument("--out", default=None, help="write the heatmap to this image file (one per kind with --kind all)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_trace)
    ta = sub.add_parser("trace-average", help="causal traces averaged over many facts by token class (ROME Fig. 2)")
    ta.add_argument("--model", default="facts-gpt")
    ta.add_argument("--facts", default="heldout",
                    help="a facts-gpt split name, or a JSON file of {prompt, subject[, answer]}")
    ta.add_argument("--n", type=int, default=50, help="use the first N facts (0 = all)")
    ta.add_argument("--samples", type=int, default=10)
    ta.add_argument("--noise", default="3x")
    ta.add_argument("--window", type=int, default=10)
    ta.add_argument("--seed", type=int, default=0)
    ta.add_argument("--out", default=None, help="write the plot to this image file")
    ta.add_argument("--json", action="store_true")
    ta.set_defaults(fn=cmd_trace_average)
