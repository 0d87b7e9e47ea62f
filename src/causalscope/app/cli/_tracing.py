"""``causalscope trace`` and ``trace-average``: ROME causal traces of one fact, and averaged over many facts.

>>> from causalscope.app.cli import main
>>> main(["trace", "--model", "facts-gpt", "--prompt", "...", "--subject", "...", "--out", "t.png"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal, cast

from ...errors import InputError
from ._figures import plot_of, write_plot
from ._progress import JSON_HELP, Steps

Kind = Literal["hidden", "mlp", "attn"]

WINDOW_HELP = ("layers restored around each one for --kind mlp / attn (default: ROME's 10 of 48 layers, scaled to "
               "the model's depth and rounded up: 1 for 4 layers, 2 for 8, 3 for 12, 10 for 48)")


def window_for(model: Any, window: int | None) -> tuple[Any, int]:
    """The loaded model and the restoration window: ``window``, or ROME's 10 of 48 layers scaled to its depth."""
    from ...loading import load

    m = load(model)
    if window is not None:
        return m, window
    from ...tracing import rome_window

    return m, rome_window(int(m.n_layers or 1))


def _noise_arg(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def cmd_trace(args: argparse.Namespace) -> int:
    from ...tracing import causal_trace

    # argparse's choices= has checked --kind
    kinds: list[Kind] = ["hidden", "mlp", "attn"] if args.kind == "all" else [cast(Kind, args.kind)]
    with Steps(args, 1 + len(kinds) + bool(args.out)) as step:
        step(f"loading {args.model}")
        model, window = window_for(args.model, args.window)
        results = []
        for k in kinds:
            step(f"tracing ({k})")
            results.append(causal_trace(model, args.prompt, args.subject, kind=k, samples=args.samples,
                                        noise=_noise_arg(args.noise), window=window, seed=args.seed,
                                        target=args.target, progress=step.progress))
        if args.out:
            step("writing the figure")
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


def _facts_json(path: str) -> list[Any]:
    """``--facts file.json``: a list of {"prompt", "subject"[, "answer"]} objects, checked."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise InputError(f"--facts {path!r}: cannot read it ({e.strerror or e}).") from None
    except json.JSONDecodeError as e:
        raise InputError(f"--facts {path!r} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from None
    if not isinstance(data, list) or not data or not all(isinstance(f, dict) and isinstance(f.get("prompt"), str)
                                                          and isinstance(f.get("subject"), str) for f in data):
        raise InputError(f"--facts {path!r} must hold a non-empty JSON list of objects with string \"prompt\" and "
                         f"\"subject\" (and optionally \"answer\"), e.g. "
                         f'[{{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "answer": " Paris"}}].')
    return [(f["prompt"], f["subject"], f.get("answer")) for f in data]


def cmd_trace_average(args: argparse.Namespace) -> int:
    from ...tracing import trace_average

    facts: list[Any]  # (prompt, subject, answer) tuples or the zoo's Facts
    if args.facts.endswith(".json"):
        facts = _facts_json(args.facts)
    else:
        from ...zoo import facts as facts_mod

        facts = facts_mod.facts(args.facts)
    if args.n is not None and args.n < 1:
        raise InputError(f"--n must be a positive number of facts, got {args.n}.")
    facts = facts[: args.n] if args.n else facts
    if args.workers < 0:
        raise InputError(f"--workers must be 0 (in this process) or a number of Ray workers, got {args.workers}.")
    executor = None
    if args.workers:
        from ...executors import RayExecutor

        executor = RayExecutor(workers=args.workers, gpus_per_worker=args.gpus_per_worker, address=args.address)
    with Steps(args, 2 + bool(args.out)) as step:
        step(f"loading {args.model}")
        model, window = window_for(args.model, args.window)
        step(f"tracing {len(facts)} facts" + (f" on {args.workers} Ray workers" if args.workers else ""))
        try:
            avg = trace_average(model, facts, samples=args.samples, noise=_noise_arg(args.noise), window=window,
                                seed=args.seed, progress=step.progress, executor=executor, out=args.checkpoint)
        finally:
            if executor is not None:
                executor.shutdown()
        if args.out:
            step("writing the figure")
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
    t.add_argument("--window", type=int, default=None, help=WINDOW_HELP)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--target", default=None, help="score this token instead of the clean prediction")
    t.add_argument("--out", default=None, help="write the heatmap to this image file (one per kind with --kind all)")
    t.add_argument("--json", action="store_true", help=JSON_HELP)
    t.set_defaults(fn=cmd_trace)
    ta = sub.add_parser("trace-average", help="causal traces averaged over many facts by token class (ROME Fig. 2)")
    ta.add_argument("--model", default="facts-gpt")
    ta.add_argument("--facts", default="heldout",
                    help="a facts-gpt split name, or a JSON file of {prompt, subject[, answer]}")
    ta.add_argument("--n", type=int, default=50, help="use the first N facts (0 = all)")
    ta.add_argument("--samples", type=int, default=10)
    ta.add_argument("--noise", default="3x")
    ta.add_argument("--window", type=int, default=None, help=WINDOW_HELP)
    ta.add_argument("--seed", type=int, default=0)
    ta.add_argument("--out", default=None, help="write the plot to this image file")
    ta.add_argument("--checkpoint", default=None, metavar="DIR",
                    help="save each finished shard of facts in DIR; the same command again computes only the rest")
    ta.add_argument("--workers", type=int, default=0,
                    help="spread the facts over this many Ray workers (pip install 'causalscope[ray]'); 0: here")
    ta.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs each Ray worker takes")
    ta.add_argument("--address", default=None,
                    help="an existing Ray cluster ('auto', or HEAD_IP:6379); default: RAY_ADDRESS, else a local Ray")
    ta.add_argument("--json", action="store_true", help=JSON_HELP)
    ta.set_defaults(fn=cmd_trace_average)
