"""``causalscope models``, ``sites`` and ``run``: the bundled models, a model's site names, one cached run.

>>> from causalscope.app.cli import main
>>> main(["run", "--model", "tiny-gpt2", "--prompt", "the cat sat on the", "--cache", "layers.0"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, cast

from ._progress import JSON_HELP, Steps

if TYPE_CHECKING:
    import torch


def cmd_models(args: argparse.Namespace) -> int:
    from ...catalog import describe

    info = describe()  # plain data: no torch import
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:12s} {v}")
    return 0


def cmd_sites(args: argparse.Namespace) -> int:
    from ...loading import load

    with Steps(args, 1) as step:
        step(f"loading {args.model}")
        names = load(args.model).site_names(args.pattern)
    print(json.dumps(names, indent=2) if args.json else "\n".join(names))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ...loading import load

    with Steps(args, 2) as step:
        step(f"loading {args.model}")
        m = load(args.model)
        step("running the prompt")
        run = m.run(args.prompt, cache=args.cache)
    logits = cast("torch.Tensor", run.output)[0, -1]  # no metric, so the run keeps its output
    top = logits.softmax(-1).topk(min(args.top, logits.numel()))
    result: dict[str, Any] = {
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


def add_parsers(sub: Any) -> None:
    mo = sub.add_parser("models", help="list the bundled models")
    mo.add_argument("--json", action="store_true", help="print the list as JSON")
    mo.set_defaults(fn=cmd_models)
    s = sub.add_parser("sites", help="list a model's site names")
    s.add_argument("--model", required=True)
    s.add_argument("--pattern", default=None, help="glob, e.g. 'layers.*.mlp'")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(fn=cmd_sites)
    r = sub.add_parser("run", help="run a prompt, show the next-token distribution and cached activations")
    r.add_argument("--model", required=True)
    r.add_argument("--prompt", required=True)
    r.add_argument("--cache", nargs="*", default=[])
    r.add_argument("--top", type=int, default=5)
    r.add_argument("--json", action="store_true", help=JSON_HELP)
    r.set_defaults(fn=cmd_run)
