"""Engine benchmarks: what a causalscope run costs next to plain PyTorch, measured in one process.

    .venv/bin/python bench/engine.py                 # full run (~25 s on 2 idle CPU cores)
    .venv/bin/python bench/engine.py --quick         # smoke run (~15 s)
    .venv/bin/python bench/engine.py --device cuda --json out.json
    .venv/bin/python bench/engine.py --profile       # also cProfile the empty run (benchmark 2)

1. Overhead of a run on a GPT-2-small-sized model (random weights): the bare ``m.run(ids)`` and a
   no-op intervention pass ``m.run(ids, {Site("layers.5"): Scale(1.0)}, keep_output=True)`` against
   ``model(ids, use_cache=False).logits`` under ``torch.inference_mode``. Interleaved repetitions; the
   median of the per-repetition time ratios is compared with the 1.05x target.
2. Fixed cost of an empty run on the zoo MLP (input (1, 16)): ``m.run(x)`` vs ``model(x)``, µs per call
   (median of interleaved single calls). Target: at most 50 µs added by causalscope.
3. K = L*T patch locations (``Site(f"layers.{l}", positions=t)`` patched from a clean run) as one
   batched ``m.run`` with K rows, as K separate ``m.run`` calls, and as K plain-PyTorch forward-hook
   passes (the TransformerLens-style loop). The three must agree (allclose 1e-5); times and speedups.

Times use ``time.perf_counter`` (with ``torch.cuda.synchronize`` on CUDA); torch's thread count is
left at its default.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import causalscope as cs

OVERHEAD_TARGET = 1.05     # benchmark 1: run time / plain forward time
FIXED_COST_TARGET_US = 50  # benchmark 2: µs added per empty run


from _common import finish, timed
from _common import loadavg as _loadavg
from _common import rule as _rule
from _common import verdict as _verdict


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    return timed(fn, device)[0]


# -- 1. run overhead on a GPT-2-small-sized model --------------------------------------------------------------
def bench_overhead(device: torch.device, quick: bool) -> dict:
    import transformers as tf

    n_layers = 12
    if device.type == "cuda":
        batch, seq, reps = 16, 256, (8 if quick else 30)
    else:
        batch, seq, reps = 2, 64, (4 if quick else 25)
    cfg = tf.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=n_layers, n_head=12)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = tf.GPT2LMHeadModel(cfg).eval().to(device)
    m = cs.load(model, name="gpt2-small-random")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g).to(device)
    noop = {cs.Site("layers.5"): cs.Scale(1.0)}

    def plain():
        with torch.inference_mode():
            return model(ids, use_cache=False).logits

    def bare():
        return m.run(ids).output

    def edited():
        return m.run(ids, noop, keep_output=True).output

    ref = plain()
    diffs = {"bare": float((bare() - ref).abs().max()), "noop": float((edited() - ref).abs().max())}
    del ref
    fns = {"plain": plain, "bare": bare, "noop": edited}
    for fn in fns.values():  # warm up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(reps):
        order = names[r % 3:] + names[: r % 3]  # rotate the order so no variant always runs first
        for k in order:
            times[k].append(_timed(fns[k], device))
    ratio = {k: statistics.median(t / p for t, p in zip(times[k], times["plain"])) for k in ("bare", "noop")}
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    res = {"model": f"GPT-2 config, {n_layers} layers, d_model 768, 12 heads, vocab 50257 (random weights)",
           "batch": batch, "seq_len": seq, "reps": reps, "median_ms": med, "median_ratio": ratio,
           "max_abs_diff_vs_plain": diffs, "target_ratio": OVERHEAD_TARGET,
           "pass": {k: ratio[k] <= OVERHEAD_TARGET for k in ratio}}

    _rule(f"1. Run overhead, GPT-2-small-sized model (batch {batch} x {seq} tokens, {reps} interleaved reps)")
    print(f"{'variant':<52}{'median ms':>11}{'ratio':>9}{'max|diff|':>11}  target")
    print(f"{'model(ids, use_cache=False).logits  [reference]':<52}{med['plain']:>11.1f}{1.0:>9.3f}{'':>11}")
    for k, label in (("bare", "m.run(ids)"), ("noop", "m.run(ids, {Site('layers.5'): Scale(1.0)})")):
        print(f"{label:<52}{med[k]:>11.1f}{ratio[k]:>9.3f}{diffs[k]:>11.1e}  "
              f"<= {OVERHEAD_TARGET:.2f}x  {_verdict(res['pass'][k])}")
    return res  # the model and its wrapper go with this frame


# -- 2. fixed cost of an empty run -----------------------------------------------------------------------------
def bench_fixed_cost(device: torch.device, quick: bool, profile: bool) -> dict:
    model = cs.zoo.build_mlp().to(device)
    m = cs.load(model, name="mlp")
    x = torch.randn(1, 16, generator=torch.Generator().manual_seed(0)).to(device)
    n, warm = (300, 100) if quick else (2000, 300)

    with torch.inference_mode():
        ref = model(x)
    assert torch.equal(m.run(x).output, ref), "the empty run's output differs from model(x)"
    for _ in range(warm):
        with torch.inference_mode():
            model(x)
        m.run(x)
    t_plain, t_run = [], []
    for _ in range(n):
        with torch.inference_mode():
            t_plain.append(_timed(lambda: model(x), device))
        t_run.append(_timed(lambda: m.run(x), device))
    plain_us = statistics.median(t_plain) * 1e6
    run_us = statistics.median(t_run) * 1e6
    added = run_us - plain_us
    res = {"model": "zoo build_mlp() 16-32-32-4, input (1, 16)", "calls": n, "plain_us": plain_us,
           "run_us": run_us, "added_us": added, "target_added_us": FIXED_COST_TARGET_US,
           "pass": added <= FIXED_COST_TARGET_US}

    _rule(f"2. Fixed cost of an empty run, zoo MLP, input (1, 16) (median of {n} interleaved calls)")
    print(f"{'call':<52}{'median µs':>11}")
    print(f"{'model(x)  (inside torch.inference_mode)  [reference]':<52}{plain_us:>11.1f}")
    print(f"{'m.run(x)':<52}{run_us:>11.1f}")
    print(f"{'added by causalscope':<52}{added:>11.1f}  target <= {FIXED_COST_TARGET_US} µs  "
          f"{_verdict(res['pass'])}   (nnsight 0.6: ~300 µs per empty trace)")

    if profile:
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(2000):
            m.run(x)
        pr.disable()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(25)
        print("\ncProfile of 2000 empty m.run(x) calls (cumulative; times include profiler overhead):")
        print(buf.getvalue())
    return res


# -- 3. K patch locations: one batched pass vs K passes vs plain hooks -----------------------------------------
def bench_patching(device: torch.device, quick: bool) -> dict:
    n_layers, d_model, n_heads = 6, 256, 8
    seq = 8 if quick else (32 if device.type == "cuda" else 16)
    reps = 1 if quick else 5
    model, tok = cs.zoo.build_tiny_lm("gpt2", n_layers=n_layers, d_model=d_model, n_heads=n_heads)
    model = model.to(device)
    m = cs.load(model, tok, name="gpt2-6x256")
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(2)
    clean_ids = torch.randint(1, vocab, (1, seq), generator=g)
    corrupt_ids = clean_ids.clone()
    flip = torch.randperm(seq, generator=g)[: max(1, seq // 4)]
    corrupt_ids[0, flip] = clean_ids[0, flip] % (vocab - 1) + 1  # a different token in [1, vocab)
    clean_ids, corrupt_ids = clean_ids.to(device), corrupt_ids.to(device)
    a, b = 3, 5  # metric: logit difference of two tokens at the last position

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, a] - logits[:, -1, b]

    cells = [(l, t) for l in range(n_layers) for t in range(seq)]
    K = len(cells)

    # causalscope
    clean = m.run(clean_ids, cache=[f"layers.{l}" for l in range(n_layers)])
    rows = [{cs.Site(f"layers.{l}", positions=t): cs.Patch(clean)} for l, t in cells]
    chunk_info: dict = {}

    def batched():
        run = m.run(corrupt_ids, rows, metric=metric)
        chunk_info["chunk_size"] = run.meta.get("chunk_size")
        return run.metric

    def separate():
        return torch.cat([m.run(corrupt_ids, row, metric=metric).metric for row in rows])

    # plain PyTorch: cache the clean block outputs with hooks, then one hooked forward per cell
    blocks = model.transformer.h

    def first(out: Any) -> torch.Tensor:
        return out[0] if isinstance(out, tuple) else out

    clean_acts: dict[int, torch.Tensor] = {}
    handles = [blocks[l].register_forward_hook(lambda mod, args, out, l=l: clean_acts.__setitem__(l, first(out)))
               for l in range(n_layers)]
    try:
        with torch.inference_mode():
            model(clean_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()

    def hooks():
        vals = []
        with torch.inference_mode():
            for l, t in cells:
                def patch(mod, args, out, l=l, t=t):
                    h = first(out).clone()
                    h[:, t] = clean_acts[l][:, t]
                    return (h, *out[1:]) if isinstance(out, tuple) else h
                handle = blocks[l].register_forward_hook(patch)
                try:
                    vals.append(metric(model(corrupt_ids, use_cache=False).logits))
                finally:
                    handle.remove()
        return torch.cat(vals)

    fns = {"batched": batched, "separate": separate, "hooks": hooks}
    vals = {k: fn().float().cpu() for k, fn in fns.items()}  # also the warm-up
    diffs = {}
    for k in ("separate", "hooks"):
        diffs[k] = float((vals["batched"] - vals[k]).abs().max())
        assert torch.allclose(vals["batched"], vals[k], atol=1e-5, rtol=1e-5), \
            f"batched and {k} patching disagree (max |diff| {diffs[k]:.2e})"
    assert float(vals["batched"].abs().max()) > 0, "degenerate metric"
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(reps):
        for k in names[r % 3:] + names[: r % 3]:
            times[k].append(_timed(fns[k], device))
    med = {k: statistics.median(v) for k, v in times.items()}
    speed = {k: med[k] / med["batched"] for k in ("separate", "hooks")}
    res = {"model": f"GPT-2 config, {n_layers} layers, d_model {d_model}, {n_heads} heads, vocab {vocab} "
                    f"(zoo build_tiny_lm, random weights)",
           "seq_len": seq, "K": K, "reps": reps, "chunk_size": chunk_info.get("chunk_size"),
           "median_s": med, "batched_speedup_over": speed, "max_abs_diff_vs_batched": diffs}

    _rule(f"3. K = {n_layers} layers x {seq} positions = {K} patch locations (median of {reps} rep(s))")
    print(f"{'method':<60}{'seconds':>9}{'ms/cell':>9}{'max|diff|':>11}{'batched speedup':>17}")
    print(f"{'one m.run with K rows (chunk_size ' + str(chunk_info.get('chunk_size')) + ')':<60}"
          f"{med['batched']:>9.3f}{med['batched'] / K * 1e3:>9.2f}{'':>11}{'1.0x':>17}")
    print(f"{'K separate m.run calls, one edit each':<60}{med['separate']:>9.3f}{med['separate'] / K * 1e3:>9.2f}"
          f"{diffs['separate']:>11.1e}{speed['separate']:>16.1f}x")
    print(f"{'K plain-PyTorch forward-hook passes (TransformerLens-style)':<60}{med['hooks']:>9.3f}"
          f"{med['hooks'] / K * 1e3:>9.2f}{diffs['hooks']:>11.1e}{speed['hooks']:>16.1f}x")
    print("all three agree (allclose, atol = rtol = 1e-5)")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fast smoke mode (fewer repetitions, shorter prompts)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    p.add_argument("--profile", action="store_true", help="cProfile the empty run of benchmark 2")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)

    t0 = time.perf_counter()
    env = {"causalscope": cs.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "quick": args.quick}
    print(f"causalscope {env['causalscope']} | torch {env['torch']} | device {args.device} ({env['device']}) | "
          f"{env['cpu_count']} CPUs, torch threads {env['torch_threads']}{' | --quick' if args.quick else ''}")
    load = _loadavg()
    if load is not None:
        env["loadavg_start"] = load
        print(f"load average at start: {load:.2f}")
        if device.type == "cpu" and load > 0.5 * (os.cpu_count() or 1):
            print("warning: other processes are using the CPU; timings (and the PASS/FAIL lines) will be noisy")
    results: dict[str, Any] = {"env": env}
    results["overhead"] = bench_overhead(device, args.quick)
    results["fixed_cost"] = bench_fixed_cost(device, args.quick, args.profile)
    results["patching"] = bench_patching(device, args.quick)
    results["wall_s"] = time.perf_counter() - t0

    _rule("Summary")
    o, f, pt = results["overhead"], results["fixed_cost"], results["patching"]
    print(f"1. run overhead        bare {o['median_ratio']['bare']:.3f}x, no-op edit {o['median_ratio']['noop']:.3f}x "
          f"(target <= {OVERHEAD_TARGET:.2f}x)  {_verdict(all(o['pass'].values()))}")
    print(f"2. empty-run cost      +{f['added_us']:.1f} µs per call ({f['run_us']:.1f} vs {f['plain_us']:.1f} µs; "
          f"target <= {FIXED_COST_TARGET_US} µs)  {_verdict(f['pass'])}")
    print(f"3. {pt['K']} patch locations  batched {pt['median_s']['batched']:.3f} s; "
          f"{pt['batched_speedup_over']['separate']:.1f}x faster than K runs, "
          f"{pt['batched_speedup_over']['hooks']:.1f}x faster than K hook passes")
    return finish(results, env, args.json)


if __name__ == "__main__":
    sys.exit(main())
