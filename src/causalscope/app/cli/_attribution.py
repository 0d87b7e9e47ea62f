"""``causalscope patch`` and ``causalscope attribute``: activation patching, IG and attribution patching."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ...errors import InputError
from ._figures import write_plot
from ._progress import JSON_HELP, Steps

_SWEEPS = ("resid_pre", "resid_post", "attn", "mlp", "heads")


def _inputs(m: Any, texts: list[str], what: str) -> Any:
    """Prompts for LMs; comma-separated numbers (one row per flag) for tensor models."""
    import torch

    if m.tokenizer is not None:
        return texts if len(texts) > 1 else texts[0]
    try:
        return torch.tensor([[float(v) for v in t.split(",")] for t in texts])
    except ValueError:
        raise InputError(f"{m.name} takes tensors: give --{what} as comma-separated numbers, e.g. 1,0") from None


def _metric(m: Any, args: argparse.Namespace, clean: Any, corrupted: Any) -> Any:
    from ...core import logit, logit_diff, output_value, prob

    kind = args.metric
    if kind == "output" or (kind == "auto" and m.tokenizer is None):
        return output_value()
    correct, wrong = args.correct, args.wrong
    if correct is None or (kind in ("auto", "logit_diff") and wrong is None):
        # default answers: the clean and corrupted runs' own top predictions at the last position
        top = [int(m.run(x).output[:, -1].mean(0).argmax()) for x in (clean, corrupted)]
        correct = top[0] if correct is None else correct
        wrong = top[1] if wrong is None else wrong
        if kind in ("auto", "logit_diff") and correct == wrong:
            raise InputError("The clean and corrupted inputs predict the same token: give --correct and --wrong.")
    if kind in ("auto", "logit_diff"):
        return logit_diff(_tok(correct), _tok(wrong), model=m)
    return (logit if kind == "logit" else prob)(_tok(correct), model=m)


def _tok(x: Any) -> Any:
    return int(x) if isinstance(x, str) and x.lstrip("-").isdigit() else x


def _sites(args: argparse.Namespace) -> Any:
    if len(args.sites) == 1 and args.sites[0] in _SWEEPS:
        return args.sites[0]
    import dataclasses

    from ...core import Site

    # a site name may select a part, as results name sites: layers.2.mlp[pos=3, neurons=0..63]
    sites = [dataclasses.replace(site, io="input") if args.io == "input" else site
             for site in map(Site.from_name, args.sites)]
    return sites[0] if args.per else sites


def _print_grid(name: str, a: Any) -> None:
    print(f"\n{name}")
    if a.ndim == 1:
        for label, v in zip(a.coords[a.dims[0]], a.values.tolist()):
            print(f"  {a.dims[0]} {label!s:>24s}  {v:+.4f}")
        return
    rows, cols = a.dims
    print(f"  {rows}\\{cols} " + " ".join(f"{str(c):>7s}" for c in a.coords[cols]))
    for label, vals in zip(a.coords[rows], a.values.tolist()):
        print(f"  {str(label):>10s} " + " ".join(f"{v:+7.3f}" for v in vals))


def cmd_patch(args: argparse.Namespace) -> int:
    from ...loading import load
    from ...patching import activation_patching

    with Steps(args, 3 + bool(args.out)) as step:
        step(f"loading {args.model}")
        m = load(args.model)
        step("the metric")
        clean, corrupted = _inputs(m, args.clean, "clean"), _inputs(m, args.corrupted, "corrupted")
        metric = _metric(m, args, clean, corrupted)
        step("patching")
        r = activation_patching(m, clean, corrupted, _sites(args), metric, direction=args.direction, per=args.per,
                                progress=step.progress)
        if args.out:
            step("writing the figure")
        write_plot(lambda backend: r.plot(backend=backend), args.out)
    if args.json:
        print(json.dumps({"dims": list(r.dims), "coords": r.coords, "scores": r.values.tolist(),
                          "raw": r.meta["raw"], "clean_metric": r.meta["clean_metric"],
                          "corrupted_metric": r.meta["corrupted_metric"], "metric": r.meta["metric"],
                          "asymmetry": r.asymmetry.values.tolist() if args.direction == "both" else None,
                          "token_layers": r.meta["token_layers"]}, indent=1, default=str))
        return 0
    print(f"metric {r.meta['metric']}: clean {r.meta['clean_metric']:.4f}, corrupted {r.meta['corrupted_metric']:.4f}")
    for d in r.coords["direction"]:
        _print_grid(f"{d} (0 = corrupted, 1 = clean)" if d == "denoise" else f"{d} (fraction of the effect lost)",
                    r.sel(direction=d))
    if args.direction == "both":
        _print_grid("asymmetry (noise - denoise: > 0 AND-like, < 0 OR-like)", r.asymmetry)
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    from ...loading import load

    if not args.atp and len(args.site) != 1:
        raise InputError("attribute (integrated gradients) takes one --site.")
    r: Any  # attribution patching or integrated gradients
    with Steps(args, 3 + bool(args.out)) as step:
        step(f"loading {args.model}")
        m = load(args.model)
        step("the metric")
        clean, corrupted = _inputs(m, args.input, "input"), _inputs(m, args.baseline, "baseline")
        if args.atp:
            from ...patching import attribution_patching

            metric = _metric(m, args, clean, corrupted)
            sites = _sites(argparse.Namespace(sites=args.site, io=args.io, per=args.per))
            step("attribution patching")
            r = attribution_patching(m, clean, corrupted, sites, metric, direction=args.direction, per=args.per)
        else:
            from ...patching import integrated_gradients

            metric = None if args.target is not None or m.tokenizer is None else _metric(m, args, clean, corrupted)
            step("integrated gradients")
            r = integrated_gradients(m, clean, corrupted, args.site[0], target=args.target, metric=metric,
                                     steps=args.steps, method=args.method, attribute_to=args.io,
                                     progress=step.progress)
        if args.out:
            step("writing the figure")
        write_plot(lambda backend: r.plot(backend=backend), args.out)
    if args.atp:
        if args.json:
            print(json.dumps({"dims": list(r.dims), "coords": r.coords, "scores": r.values.tolist(),
                              "metric": r.meta["metric"]}, indent=1, default=str))
            return 0
        for d in r.coords["direction"]:
            _print_grid(f"attribution patching, {d} estimate", r.sel(direction=d))
        return 0
    attr = r.values
    per_unit = attr.sum(-1) if attr.ndim == 3 else attr
    if args.json:
        print(json.dumps({"dims": list(r.dims), "attributions": attr.tolist(), "per_unit": per_unit.tolist(),
                          "delta": r.meta.get("delta"), "settings": {k: r.meta.get(k) for k in
                                                                     ("steps", "method", "site", "attribute_to")}},
                         indent=1, default=str))
        return 0
    print(f"integrated gradients at {args.site[0]} ({args.io}), {args.steps} steps, {args.method}")
    for i, row in enumerate(per_unit.tolist()):
        row = row if isinstance(row, list) else [row]
        print(f"  input {i}: " + " ".join(f"{v:+.4f}" for v in row))
    print(f"completeness delta: {r.meta.get('delta')}")
    return 0


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", required=True)
    common.add_argument("--metric", default="auto", choices=["auto", "logit_diff", "logit", "prob", "output"],
                        help="auto: logit difference (LMs; answers default to the clean / corrupted top tokens) "
                             "or the output itself (one-output models)")
    common.add_argument("--correct", default=None, help="answer token (or id) for the metric")
    common.add_argument("--wrong", default=None, help="the competing token (or id) for logit_diff")
    common.add_argument("--io", default="output", choices=["output", "input"], help="patch / attribute a module's "
                        "output or its input")
    common.add_argument("--per", default=None, choices=["neuron", "position", "head"],
                        help="sweep one site per neuron / position / head")
    common.add_argument("--direction", default="both", choices=["denoise", "noise", "both"])
    common.add_argument("--out", default=None, help="write the plot to this image file")
    common.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("patch", parents=[common], help="activation patching in both directions, with asymmetry")
    p.add_argument("--clean", action="append", required=True, help="clean prompt, or numbers 1,0 (repeat for more)")
    p.add_argument("--corrupted", action="append", required=True, help="corrupted prompt / numbers (one per --clean)")
    p.add_argument("--sites", nargs="+", default=["resid_pre"],
                   help=f"a sweep ({', '.join(_SWEEPS)}) or site names (e.g. layers.1.mlp model.0 "
                        f"'layers.2[pos=3, neurons=0..63]')")
    p.set_defaults(fn=cmd_patch)

    a = sub.add_parser("attribute", parents=[common], help="layer integrated gradients (or --atp: attribution "
                                                           "patching) against a baseline input")
    a.add_argument("--input", action="append", required=True, help="input prompt / numbers (repeat for more)")
    a.add_argument("--baseline", action="append", required=True, help="baseline (e.g. corrupted) prompt / numbers")
    a.add_argument("--site", nargs="+", required=True, help="site name (IG: one; --atp: a sweep or site names)")
    a.add_argument("--target", type=int, default=None, help="output index (class / token id) to attribute")
    a.add_argument("--steps", type=int, default=50)
    a.add_argument("--method", default="gausslegendre",
                   choices=["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
    a.add_argument("--atp", action="store_true", help="attribution patching instead of integrated gradients")
    a.set_defaults(fn=cmd_attribute)
