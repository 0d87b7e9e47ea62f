"""Tuned lens vs logit lens on facts-gpt: the mean KL to the final layer on held-out prompts, per layer.

    .venv/bin/python bench/lenses.py                      # train on all 8000 train prompts (~20 s on 2 CPU cores)
    .venv/bin/python bench/lenses.py --quick              # 800 train prompts, 100 steps (~5 s)
    .venv/bin/python bench/lenses.py --json out.json --steps 400 --seed 1

The acceptance test of issue 17 (Belrose et al. 2023's headline result): a tuned lens trained on facts-gpt beats
the logit lens on KL to the final layer at every layer but the last. Model: the bundled ``facts-gpt`` (8 layers,
d_model 128). Train: ``cs.tuned_lens`` on the prompts of the train templates (``facts("train")``: 8000; ``--quick``:
every tenth), ``--steps`` Adam steps (default 250) of 2048 tokens at ``--lr`` (default 3e-3), seed ``--seed``.
Held out: the 1000 prompts of ``facts("heldout")``, asked with a template no training prompt uses. Measure:
``lens.compare(heldout)``, the mean over every held-out token of KL(final layer's distribution || lens read-out),
in nats, per layer, for the logit lens (the model's final norm + unembedding on each block's output) and the tuned
lens. PASS when the tuned lens is lower at every layer but the last (where both are 0: the read-out of the last
block is the model's output).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import causalscope as cs
from _common import finish, rule, start, verdict
from causalscope.zoo.facts import facts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every tenth train prompt, 100 steps")
    p.add_argument("--steps", type=int, default=None, help="Adam steps (default 250; --quick 100)")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    p.add_argument("--threads", default="auto", metavar="auto|default|K",
                   help="torch threads: default leaves torch's setting; auto (the default) keeps it on an idle "
                        "CPU and uses 1 thread when the load average is above half the cores")
    args = p.parse_args(argv)
    steps = args.steps or (100 if args.quick else 250)
    t0 = time.perf_counter()
    env = start(args.threads, torch.device("cpu"), args.quick, 1)
    m = cs.load("facts-gpt")
    train = [f.prompt for f in facts("train")]
    if args.quick:
        train = train[::10]
    heldout = [f.prompt for f in facts("heldout")]

    rule(f"train: {len(train)} prompts, {steps} steps, lr {args.lr:g}, seed {args.seed}")
    t = time.perf_counter()
    lens = cs.tuned_lens(m, train, steps=steps, lr=args.lr, seed=args.seed, progress=sys.stderr.isatty())
    train_s = time.perf_counter() - t
    print(f"trained in {train_s:.1f} s on {lens.meta['n_tokens']} tokens; training KL at the last step per layer: "
          + ", ".join(f"{v:.3f}" for v in lens.meta["final_kl"]))

    rule(f"held out: {len(heldout)} prompts (a template never trained on)")
    t = time.perf_counter()
    c = lens.compare(heldout)
    eval_s = time.perf_counter() - t
    logit, tuned = c.sel(lens="logit lens").values, c.sel(lens="tuned lens").values
    print(f"{'layer':>5}  {'logit lens KL':>13}  {'tuned lens KL':>13}  {'tuned / logit':>13}")
    for i, layer in enumerate(c.coords["layer"]):
        ratio = f"{float(tuned[i] / logit[i]):13.3f}" if logit[i] > 0 else f"{'-':>13}"
        print(f"{layer:>5}  {float(logit[i]):13.4f}  {float(tuned[i]):13.4f}  {ratio}")
    better = c.better
    ok = all(better[:-1]) and float(logit[-1]) == 0.0 and float(tuned[-1]) == 0.0
    print(f"mean KL on {c.meta['n_tokens']} held-out tokens, nats; measured in {eval_s:.1f} s")
    print(f"tuned lens below the logit lens at every layer but the last: {verdict(ok)}")
    results = {"env": env, "train_prompts": len(train), "heldout_prompts": len(heldout), "steps": steps,
               "lr": args.lr, "seed": args.seed, "layers": c.coords["layer"], "logit_kl": logit.tolist(),
               "tuned_kl": tuned.tolist(), "train_kl": lens.meta["final_kl"], "train_s": train_s, "eval_s": eval_s,
               "pass": ok, "wall_s": time.perf_counter() - t0}
    finish(results, env, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
