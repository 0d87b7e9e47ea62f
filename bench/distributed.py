"""Distributed benchmark: trace_average sharded over Ray workers vs the same call in one process.

    .venv/bin/python bench/distributed.py                  # 200 held-out facts of facts-gpt, 3 reps each
    .venv/bin/python bench/distributed.py --quick          # 60 facts, 1 rep
    .venv/bin/python bench/distributed.py --workers 2 --json out.json

Model: the bundled ``facts-gpt``. Facts: the first ``--n`` of ``causalscope.zoo.facts.facts("heldout")``, ROME's
settings as in bench/trace_average.py (kinds hidden/mlp/attn, samples 10, window 10, noise 3x, seed 0).

- in process, 1 thread: ``cs.trace_average(m, facts)`` with ``torch.set_num_threads(1)`` (the reference);
- in process, torch's default threads (printed for comparison);
- Ray: ``cs.trace_average("facts-gpt", facts, executor=cs.RayExecutor(workers=W))``, W workers of 1 thread
  each (default W = 2, our 2 cores). The local Ray is started and the workers load the model before the timed
  runs (that start-up is timed and printed on its own line: it is paid once per session, not per call); both
  paths are warmed up with one whole untimed run.
- The in-process and Ray runs are timed ``--reps`` times each, interleaved; medians are compared.
  Speed-up = in process (1 thread) / Ray. Target: >= 1.6x with 2 workers (PASS / FAIL).
- Exactness: every cell of the averages must agree to atol 1e-6 (NaN where a class has no token, in both).
- Overhead: ``cs.sweep`` of a trivial function (``lambda m, x: x``) over ``--overhead-items`` items, on Ray with
  one item per shard (the cost of one shard's round trip) and with the default shards (the cost per item as
  a method pays it), minus the same sweep in process.
- An estimate for 8 GPU workers from these measurements is printed at the end (how it is computed is printed
  with it).
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import causalscope as cs
from _common import finish, loadavg, max_diff, rule, verdict

SPEEDUP_TARGET = 1.6
ATOL = 1e-6


def timed(fn):  # noqa: ANN001, ANN202
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200, help="facts (default 200)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers of 1 thread each (default 2)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of each (default 3)")
    p.add_argument("--overhead-items", type=int, default=400, help="items of the trivial sweep (default 400)")
    p.add_argument("--quick", action="store_true", help="60 facts, 1 rep, 100 overhead items")
    p.add_argument("--json", help="write the numbers to this JSON file")
    a = p.parse_args()
    if a.quick:
        a.n, a.reps, a.overhead_items = 60, 1, 100
    default_threads = torch.get_num_threads()
    wall = time.perf_counter()
    facts = cs.zoo.facts.facts("heldout")[: a.n]
    m = cs.load("facts-gpt")
    env = {"cores": os.cpu_count(), "default_threads": default_threads, "loadavg_start": loadavg(),
           "torch": torch.__version__, "causalscope": cs.__version__, "python": sys.version.split()[0]}
    import ray

    env["ray"] = ray.__version__
    print(f"causalscope {cs.__version__} | torch {torch.__version__} | ray {ray.__version__} | {os.cpu_count()} cores"
          f" | torch default threads {default_threads} | load average {env['loadavg_start']}")
    print(f"trace_average over {a.n} held-out facts of facts-gpt (kinds hidden/mlp/attn, samples 10, window 10, "
          f"noise 3x); {a.reps} reps, medians")

    rule("start-up (once per session)")
    ray.init(num_cpus=max(a.workers, os.cpu_count() or 1), include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    ex = cs.RayExecutor(workers=a.workers, cpus_per_worker=1, threads_per_worker=1)
    t_start, _ = timed(lambda: cs.trace_average("facts-gpt", facts[:4], executor=ex, progress=False))
    print(f"Ray workers started and the model loaded on each: {t_start:.1f} s")

    def in_process(threads: int):  # noqa: ANN202
        def run():  # noqa: ANN202
            torch.set_num_threads(threads)
            try:
                return cs.trace_average(m, facts, progress=False)
            finally:
                torch.set_num_threads(default_threads)
        return run

    def on_ray():  # noqa: ANN202
        torch.set_num_threads(1)  # the driver only waits
        try:
            return cs.trace_average("facts-gpt", facts, executor=ex, progress=False)
        finally:
            torch.set_num_threads(default_threads)

    in_process(1)()  # warm-up, the same for both: one whole run each
    on_ray()
    t_one, t_ray, t_default = [], [], []
    ref = got = None
    for r in range(a.reps):
        order = [("one", in_process(1)), ("ray", on_ray)] if r % 2 == 0 else [("ray", on_ray), ("one", in_process(1))]
        for name, fn in order:
            dt, out = timed(fn)
            (t_one if name == "one" else t_ray).append(dt)
            if name == "one":
                ref = out
            else:
                got = out
    for _ in range(a.reps):  # after the comparison: a run at several threads leaves threads that would compete
        t_default.append(timed(in_process(default_threads))[0])
    assert ref is not None and got is not None
    one, on, dflt = statistics.median(t_one), statistics.median(t_ray), statistics.median(t_default)
    diff = max_diff(got.values, ref.values)
    speedup = one / on
    ok_speed, ok_exact = speedup >= SPEEDUP_TARGET, diff <= ATOL
    rule("trace_average")
    print(f"in process, 1 thread:                  {one:7.2f} s  ({one / a.n * 1e3:.1f} ms per fact)")
    print(f"in process, {default_threads} threads (torch default):   {dflt:7.2f} s  ({one / dflt:.2f}x of 1 thread)")
    print(f"Ray, {a.workers} workers x 1 thread ({got.meta['executor']['shards']} shards): {on:7.2f} s")
    print(f"speed-up Ray / in process 1 thread:     {speedup:.2f}x (target >= {SPEEDUP_TARGET}x: {verdict(ok_speed)})")
    print(f"speed-up Ray / in process default:      {dflt / on:.2f}x")
    print(f"max |diff| of the averages: {diff:.2e} (atol {ATOL}: {verdict(ok_exact)})")

    rule("overhead of the Ray path (a trivial function)")
    items = list(range(a.overhead_items))

    def trivial(m, x):  # noqa: ANN001, ANN202
        return x

    t_here = statistics.median(timed(lambda: cs.sweep(trivial, items, model="facts-gpt", progress=False))[0]
                               for _ in range(3))
    t_each = statistics.median(timed(lambda: cs.sweep(trivial, items, model="facts-gpt", executor=ex,
                                                      shards=len(items), progress=False))[0] for _ in range(3))
    t_dflt = statistics.median(timed(lambda: cs.sweep(trivial, items, model="facts-gpt", executor=ex,
                                                      progress=False))[0] for _ in range(3))
    per_shard = max(0.0, t_each - t_here) / len(items)
    per_item = t_dflt / len(items)
    print(f"in process: {t_here * 1e3:.1f} ms for {len(items)} items")
    print(f"Ray, one item per shard ({len(items)} shards): {t_each * 1e3:.1f} ms -> {per_shard * 1e3:.2f} ms per shard "
          f"round trip (with {a.workers} workers in parallel)")
    print(f"Ray, default shards: {t_dflt * 1e3:.1f} ms -> {per_item * 1e3:.3f} ms per item, all costs included")

    rule("estimate: 8 GPU workers")
    per_fact = on * a.workers / a.n  # seconds of one worker per fact, as measured here (CPU, 1 thread)
    n_est = 1000
    shards8 = cs.executors.default_shards(n_est, 8)
    est = n_est * per_fact / 8 + shards8 * per_shard * a.workers / 8
    print(f"measured: one worker spends {per_fact * 1e3:.1f} ms per fact (CPU, 1 thread) and a shard costs "
          f"{per_shard * a.workers * 1e3:.1f} ms of one worker's time in round trip.")
    print(f"1000 facts on 8 workers of this speed, {shards8} shards: {n_est} x {per_fact * 1e3:.1f} ms / 8 + "
          f"{shards8} x {per_shard * a.workers * 1e3:.1f} ms / 8 = {est:.1f} s, plus the start-up "
          f"({t_start:.0f} s here; on GPUs add the model's load and copy to each GPU).")
    print("On GPUs the per-fact compute shrinks (a small model is launch-bound: expect a few ms per fact) while the "
          "shard round trip stays; with 4 shards per worker the round trip is "
          f"{shards8 * per_shard * a.workers / 8 * 1e3:.0f} ms per worker, so sharding costs little next to any "
          "model worth 8 GPUs.")
    ex.shutdown()
    ray.shutdown()
    results = {"n": a.n, "workers": a.workers, "in_process_1_thread_s": one, "in_process_default_s": dflt,
               "ray_s": on, "speedup": speedup, "speedup_vs_default": dflt / on, "max_diff": diff,
               "startup_s": t_start, "per_shard_s": per_shard, "per_item_s": per_item, "estimate_8_workers_s": est,
               "t_one": t_one, "t_ray": t_ray, "t_default": t_default, "wall_s": time.perf_counter() - wall}
    if not ok_speed:
        print(f"SPEED TARGET MISSED: {speedup:.2f}x < {SPEEDUP_TARGET}x")
    return finish(results, env, a.json, ok=ok_exact)


if __name__ == "__main__":
    sys.exit(main())
