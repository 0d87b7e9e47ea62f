"""trace_average benchmark: facts traced together (schedule="grouped") vs one fact at a time, in one process.

    .venv/bin/python bench/trace_average.py                 # 200 held-out facts of facts-gpt, 3 reps each
    .venv/bin/python bench/trace_average.py --quick         # 40 facts, 1 rep (~45 s)
    .venv/bin/python bench/trace_average.py --n 100 --threads 1 --json out.json

Model: the bundled ``facts-gpt`` (GPT-2, 8 layers, d_model 128, trained on a synthetic knowledge corpus).
Facts: the first ``--n`` of ``causalscope.zoo.facts.facts("heldout")`` (asked with templates held out from
training; 200 of them tokenize to 6 lengths and 10 (length, subject tokens) shapes). Settings: ROME's
defaults, ``kinds=("hidden", "mlp", "attn")``, ``samples=10``, ``window=10``, ``noise="3x"`` (3 x the
embedding std over all the facts' subjects), ``seed=0``, answers given and ``require_correct=True``.

- old: ``cs.trace_average(m, facts, schedule="per_fact")``, today's loop: ``causal_trace`` fact by fact and
  kind by kind (its compute-floor schedule on a CPU), each with its own clean and corrupted passes.
- new: ``cs.trace_average(m, facts)`` (``schedule="grouped"``): facts of one shape share one clean pass, one
  corrupted pass for all kinds, and every block call of the same floor schedule.
- The two are timed ``--reps`` times each, interleaved (alternating which goes first); medians are compared.
  Speedup = old / new. Target: >= 3x (PASS / FAIL).
- Exactness: every cell of the averages (mean, ci_low, ci_high; NaN where a class has no token, in both) and
  of every individual trace must agree to atol 1e-5 (rtol 0); the script prints the max |diff|. Token-layers
  (``meta["token_layers"]``) must be equal: the grouped schedule runs exactly the per-fact floor's work, in
  fewer, larger block calls. The script also counts the engine runs (``Model.run`` calls) of each.

Threads: ``--threads auto`` (the default) sets 1 thread when the load average is above half the cores (see
bench/causal_trace.py); ``default`` keeps torch's setting, ``K`` sets K.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import causalscope as cs
from _common import finish, interleaved, max_diff, start
from _common import rule as _rule
from _common import verdict as _verdict

SPEEDUP_TARGET = 3.0
ATOL = 1e-5


def count_runs(m: cs.Model, fn: Any) -> tuple[Any, int]:
    """``fn()`` and the number of ``m.run`` calls it made (an instance attribute wraps the method; removed after)."""
    calls = [0]
    plain = m.run

    def counted(*a: Any, **kw: Any) -> Any:
        calls[0] += 1
        return plain(*a, **kw)

    m.run = counted  # type: ignore[method-assign]
    try:
        return fn(), calls[0]
    finally:
        del m.run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="held-out facts to average over (default 200)")
    p.add_argument("--quick", action="store_true", help="40 facts, 1 rep")
    p.add_argument("--reps", type=int, default=None, metavar="R", help="timed runs of each (default 3; 1 --quick)")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--kinds", default="hidden,mlp,attn", help="comma-separated subset of hidden,mlp,attn")
    p.add_argument("--threads", default="auto", metavar="auto|default|K",
                   help="torch threads: default leaves torch's setting; auto (the default) keeps it on an idle "
                        "CPU and sets 1 when the load average is above half the cores; K sets K")
    p.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    args = p.parse_args(argv)
    n = 40 if args.quick and args.n == 200 else args.n
    reps = args.reps or (1 if args.quick else 3)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    device = torch.device("cpu")
    t_start = time.perf_counter()
    env = start(args.threads, device, args.quick, reps)

    m = cs.load("facts-gpt")
    facts = cs.zoo.facts.facts("heldout")[:n]
    kw: dict[str, Any] = {"kinds": kinds, "samples": args.samples, "window": args.window, "progress": False}
    print(f"model facts-gpt (L={m.n_layers}, d_model=128) | {n} held-out facts | kinds {', '.join(kinds)} | "
          f"samples {args.samples} | window {args.window}")

    def new() -> cs.TraceAverage:
        return cs.trace_average(m, facts, **kw)

    def old() -> cs.TraceAverage:
        return cs.trace_average(m, facts, schedule="per_fact", **kw)

    cs.trace_average(m, facts[:4], **kw)  # warm-up (imports, first-call allocations)
    cs.trace_average(m, facts[:4], schedule="per_fact", **kw)
    t_new, t_old, a, ref = interleaved(new, old, reps, device)
    _, runs_new = count_runs(m, new)
    _, runs_old = count_runs(m, old)

    _rule("exactness (grouped vs per-fact)")
    avg_diff = max_diff(a.values, ref.values)
    trace_diff = max((max_diff(x.scores, y.scores) for x, y in zip(a.traces, ref.traces, strict=True)), default=0.0)
    low_diff = max((abs(x.low_score - y.low_score) for x, y in zip(a.traces, ref.traces)), default=0.0)
    same_facts = a.meta["n_facts"] == ref.meta["n_facts"] and a.meta["skipped"] == ref.meta["skipped"]
    same_tl = a.meta["token_layers"] == ref.meta["token_layers"]
    exact = max(avg_diff, trace_diff, low_diff) <= ATOL and same_facts and same_tl
    print(f"facts traced {a.meta['n_facts']} (skipped {len(a.meta['skipped'])}) in both: {same_facts}")
    print(f"max |diff| averages (mean, ci_low, ci_high) {avg_diff:.2e} | trace cells {trace_diff:.2e} | "
          f"corrupted scores {low_diff:.2e}   (atol {ATOL:g}) {_verdict(exact)}")
    print(f"token-layers: grouped {a.meta['token_layers']:,} | per-fact {ref.meta['token_layers']:,} "
          f"({'equal' if same_tl else 'DIFFERENT'})")
    print(f"engine runs (Model.run calls): grouped {runs_new:,} | per-fact {runs_old:,} "
          f"({runs_old / max(runs_new, 1):.1f}x fewer) | fact groups {a.meta['fact_groups']}")

    _rule("time")
    new_s, old_s = statistics.median(t_new), statistics.median(t_old)
    speedup = old_s / new_s
    print(f"per-fact {old_s:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_old)})")
    print(f"grouped  {new_s:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_new)})")
    print(f"speedup {speedup:.2f}x (target >= {SPEEDUP_TARGET:g}x) {_verdict(speedup >= SPEEDUP_TARGET)}")
    results = {"env": env, "n_facts": n, "kinds": list(kinds), "samples": args.samples, "window": args.window,
               "per_fact_s": t_old, "grouped_s": t_new, "per_fact_median_s": old_s, "grouped_median_s": new_s,
               "speedup": speedup, "max_abs_diff_average": avg_diff, "max_abs_diff_traces": trace_diff,
               "token_layers": a.meta["token_layers"], "runs_grouped": runs_new, "runs_per_fact": runs_old,
               "fact_groups": a.meta["fact_groups"], "exact": exact, "wall_s": time.perf_counter() - t_start}
    return finish(results, env, args.json, ok=exact)


if __name__ == "__main__":
    sys.exit(main())
