"""causal_trace benchmark: causalscope.causal_trace vs the naive ROME loop, measured in one process.

    .venv/bin/python bench/causal_trace.py                  # GPT-2-small-sized model (~4 min on 2 busy CPU cores)
    .venv/bin/python bench/causal_trace.py --quick          # 6 layers, d_model 256, 4 samples (< 60 s)
    .venv/bin/python bench/causal_trace.py --kinds hidden --json out.json
    .venv/bin/python bench/causal_trace.py --profile        # also cProfile causal_trace for each kind

Model: ``causalscope.zoo.build_tiny_lm("gpt2", n_layers=12, d_model=768, n_heads=12, init_std=0.3)``, a
``GPT2LMHeadModel`` with GPT-2-small's body and random weights. Its vocabulary is the zoo word tokenizer's
72 entries, which is enough for the 12-token prompt. The large init makes the output depend visibly on the
subject. Prompt: "the old king saw a big river near the capital city of" (T = 12 tokens). Subject: "old king"
(tokens [1, 3)). Noise: an explicit tensor of draws, samples x 2 x d_model, equal to 3 x the subject's
embedding std times N(0, 1), seeded.

For every kind (hidden, mlp, attn; window 10 as in ROME):
- ours: ``causalscope.causal_trace(m, prompt, subject, kind=kind, samples=N, noise=draws)``, wall time.
- naive: ROME's ``calculate_hidden_flow`` / ``trace_with_patch`` loop written plainly (see ``naive_trace``).
  Each (token, layer) cell runs one full forward of the (N+1)-row batch, with row 0 clean, plain
  ``register_forward_hook`` hooks and ``torch.no_grad``. An embedding hook adds the draws to rows 1..N at
  the subject tokens. A restore hook sets ``h[1:, t] = h[0, t]`` at the block output (hidden) or at the
  outputs of the window's mlp / attn modules. One extra base pass gives the clean and corrupted scores.
- The two maps must be equal (allclose, atol 1e-5, rtol 0). The script prints the max |diff|. With
  init_std 0.3 the model is sharp, so fp32 rounding alone (different batch shapes and GEMM blockings; with
  2 threads more than with 1) can move a probability by slightly more than 1e-5. If that happens, the
  cells over atol are recomputed in float64 both ways and must agree to 1e-5 there; the output says so.
- Token-layers (one token through one block, per batch row). For ours: ``result.meta["token_layers"]`` plus
  the two cached passes ((1 + N) * L * T). For naive: (N+1) * L * T per cell times L * T cells. For the
  floor: N * sum_l (L-1-l) * sum_{t>=b} (T-t) for hidden; for mlp / attn, the prefix-tree schedule: at
  token t, N * (T-t) per distinct restore pattern over blocks 0..j among cells restored below j, summed
  over j (cells whose windows agree up to block j share that block; for mlp up to block j-1, since the
  restored MLP output is the last term of block j's output), plus N * (T-b) per distinct first
  restored layer (a cell's first restored block runs once for all tokens: inside one block, restoring
  position t changes only position t). In the last block only the last position's MLP runs.
- Speedup = naive wall time / ours wall time. Target: >= 4x for each kind (PASS / FAIL).

If one naive forward is slow (busy CPU), ``--naive-layers auto`` (the default) times the naive loop on every
token for only a few evenly spaced layers, so that it stays within ``--naive-budget`` seconds. It then
extrapolates the naive total from the mean time per cell: every naive cell is the same full forward. The
output says when it does this, and the exactness check still covers every cell that ran.
``--naive-layers all`` always runs the full loop.

Times use ``time.perf_counter`` (with ``torch.cuda.synchronize`` on CUDA). ``causal_trace`` is timed
``--reps`` times (median); the naive loop runs once, between the first and the other repetitions. Threads:
on an idle CPU, torch's thread count is left at its default. When the load average is above half the cores,
``--threads auto`` (the default) sets 1 thread. With 2 OpenMP threads on 2 cores that another job keeps
busy, every op waits for a descheduled thread, ~5-15 ms per op whatever its size. A GPT-2-small block then
takes ~70 ms for 1 token and ~170 ms for 132 (1.5 ms and 18 ms with 1 thread). Timings would count op
launches, not work. ``--threads default`` keeps torch's setting regardless.
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import io
import math
import os
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

SPEEDUP_TARGET = 4.0
ATOL = 1e-5  # ours vs naive, absolute, on probabilities
PROMPT = "the old king saw a big river near the capital city of"
SUBJECT = "old king"
WINDOW = 10


from _common import finish, start
from _common import rule as _rule
from _common import timed as _timed
from _common import verdict as _verdict


def window_start(layer: int, n_layers: int, window: int) -> int:
    """First layer of ROME's window of ``window`` restored layers centred on ``layer``."""
    return max(0, layer - window // 2)


def window_layers(layer: int, n_layers: int, window: int) -> range:
    return range(window_start(layer, n_layers, window), min(n_layers, layer - (-window // 2)))


# -- the naive ROME loop -----------------------------------------------------------------------------------------
def naive_trace(model: torch.nn.Module, ids: torch.Tensor, b: int, e: int, draws: torch.Tensor, kind: str,
                window: int, cells: list[tuple[int, int]], device: torch.device) -> dict:
    """ROME's calculate_hidden_flow written plainly: a batch of N+1 rows (row 0 clean), one pass per cell.

    Runs the (token, layer) ``cells``. Returns the (T, L) table (NaN where a cell did not run), the clean and
    corrupted scores, the answer id and the wall times.
    """
    L, T, N = model.config.n_layer, ids.shape[1], draws.shape[0]
    inp = ids.expand(N + 1, -1)
    blocks = model.transformer.h
    noise = draws.to(device)

    def first(out: Any) -> torch.Tensor:
        return out[0] if isinstance(out, tuple) else out

    def embed_hook(mod: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[1:, b:e] = out[1:, b:e] + noise.to(out.dtype)
        return out

    def restore_hook(t: int) -> Callable:
        def hook(mod: Any, args: Any, out: Any) -> Any:
            h = first(out).clone()
            h[1:, t] = h[0, t]
            return (h, *out[1:]) if isinstance(out, tuple) else h
        return hook

    def forward(restore: list[tuple[torch.nn.Module, int]]) -> torch.Tensor:
        handles = [model.transformer.wte.register_forward_hook(embed_hook)]
        handles += [mod.register_forward_hook(restore_hook(t)) for mod, t in restore]
        try:
            with torch.no_grad():
                return model(input_ids=inp, use_cache=False).logits[:, -1]
        finally:
            for h in handles:
                h.remove()

    def cell(t: int, layer: int) -> torch.Tensor:
        if kind == "hidden":
            return forward([(blocks[layer], t)])
        return forward([(getattr(blocks[j], kind), t) for j in window_layers(layer, L, window)])

    base_s, base = _timed(lambda: forward([]), device)
    answer = int(base[0].argmax())
    probs = base.float().softmax(-1)[:, answer]
    high, low = float(probs[0]), float(probs[1:].mean())
    table = torch.full((T, L), float("nan"))
    cell_s = []
    for t, layer in cells:
        dt, lg = _timed(lambda: cell(t, layer), device)
        cell_s.append(dt)
        table[t, layer] = float(lg[1:].float().softmax(-1)[:, answer].mean())
    return {"table": table, "high": high, "low": low, "answer": answer, "base_s": base_s, "cell_s": cell_s}


# -- counts --------------------------------------------------------------------------------------------------------
def token_layer_counts(kind: str, L: int, T: int, N: int, b: int, window: int, ours_meta: int) -> dict:
    tail = sum(T - t for t in range(b, T))
    if kind == "hidden":
        floor = N * sum(L - 1 - l for l in range(L)) * tail
    else:
        # prefix tree: at token t, block j runs once per distinct restore pattern over blocks 0..j among the
        # cells restored somewhere below j (cells not yet restored are the cached corrupted run); a cell's
        # first restored block runs once for all tokens (positions b..T-1) per distinct first layer; a
        # last-layer restore at t < T-1 cannot reach the last position and is dropped
        floor, firsts = 0, set()
        for t in range(b, T):
            top = L if t == T - 1 else L - 1
            wins = [set(range(window_start(l, L, window), min(top, l - (-window // 2)))) for l in range(L)]
            firsts |= {min(w) for w in wins if w}
            # mlp: cells that agree on blocks 0..j-1 share block j (the restore is added to its output)
            per_t = sum(len({tuple(k in wins[l] for k in range(j if kind == "mlp" else j + 1)) for l in range(L)
                             if min(wins[l], default=L) < j}) for j in range(L))
            floor += N * per_t * (T - t)
        if kind != "mlp":  # mlp entry states need no block: corrupted output + (clean - corrupted) MLP output
            floor += N * (T - b) * len(firsts)
    cached = (1 + N) * L * T
    naive = (N + 1) * L * T * L * T
    ours = ours_meta + cached
    return {"ours_cells": ours_meta, "ours_cached_passes": cached, "ours": ours, "floor": floor,
            "floor_plus_cached": floor + cached, "naive": naive, "naive_over_ours": naive / ours,
            "ours_equals_floor": ours_meta == floor}


# -- one kind ------------------------------------------------------------------------------------------------------
def _fp64_recheck(m: cs.Model, kind: str, draws: torch.Tensor, window: int, ours32: torch.Tensor,
                  bad: list[tuple[int, int]], device: torch.device) -> dict:
    """Recompute the cells where fp32 ours and naive differ by more than atol, in float64, both ways."""
    model64 = copy.deepcopy(m.module).double()
    m64 = cs.load(model64, m.tokenizer, name=f"{m.name}-fp64")
    d64 = draws.double()
    r64 = cs.causal_trace(m64, PROMPT, SUBJECT, kind=kind, window=window, samples=d64.shape[0], noise=d64,
                          progress=False)
    ids = m64.adapter.tokenize(PROMPT).to(device)
    b, e = cs.subject_range(m64, PROMPT, SUBJECT)
    nv = naive_trace(model64, ids, b, e, d64, kind, window, bad, device)
    diff64 = 0.0
    if bad:
        idx = tuple(torch.tensor(c) for c in zip(*bad))
        diff64 = float((r64.scores.double()[idx] - nv["table"][idx]).abs().max())
    ends64 = max(abs(r64.high_score - nv["high"]), abs(r64.low_score - nv["low"]))
    del model64, m64
    return {"cells": bad, "max_abs_diff_fp64": diff64, "clean_corrupted_diff_fp64": ends64,
            "fp32_vs_fp64_rounding": float((ours32.double() - r64.scores.double()).abs().max()),
            "pass": diff64 <= ATOL and ends64 <= ATOL}


def bench_kind(m: cs.Model, kind: str, draws: torch.Tensor, window: int, naive_layers: list[int], reps: int,
               device: torch.device, profile: bool) -> dict:
    model = m.module
    L, N = model.config.n_layer, draws.shape[0]
    ids = m.adapter.tokenize(PROMPT).to(device)
    T = ids.shape[1]
    b, e = cs.subject_range(m, PROMPT, SUBJECT)

    def ours_fn() -> cs.TraceResult:
        return cs.causal_trace(m, PROMPT, SUBJECT, kind=kind, window=window, samples=N, noise=draws,
                               progress=False)

    # ours once, then the naive loop, then the remaining repetitions of ours (median)
    ours_times = []
    dt, r = _timed(ours_fn, device)
    ours_times.append(dt)
    cells = [(t, layer) for t in range(T) for layer in naive_layers]
    nv = naive_trace(model, ids, b, e, draws, kind, window, cells, device)
    for _ in range(reps - 1):
        ours_times.append(_timed(ours_fn, device)[0])
    ours_s = statistics.median(ours_times)

    ran = ~torch.isnan(nv["table"])
    err = (r.scores - nv["table"]).abs().nan_to_num(0.0)
    diff = float(err.max())
    same = bool(diff <= ATOL)
    assert r.meta["answer_id"] == nv["answer"], "ours and naive predict different answers"
    ends_same = abs(r.high_score - nv["high"]) <= ATOL and abs(r.low_score - nv["low"]) <= ATOL
    spread = float((r.scores - r.low_score).abs().max())
    assert spread > 1e-4, f"{kind}: the trace is flat, the comparison proves nothing"
    recheck = None
    if not same or not ends_same:
        # init_std 0.3 makes the model sharp: fp32 rounding (different batch shapes, GEMM blockings; on CUDA
        # other kernels) can move a probability by > 1e-5. Decide in float64 whether the methods really differ
        # (the disagreeing cells and the clean / corrupted scores).
        bad = [(int(t), int(layer)) for t, layer in (err > ATOL).nonzero().tolist()]
        recheck = _fp64_recheck(m, kind, draws, window, r.scores, bad, device)
        assert recheck["pass"], (f"{kind}: causal_trace and the naive loop disagree (fp32 max |diff| {diff:.2e}, "
                                 f"fp64 max |diff| {recheck['max_abs_diff_fp64']:.2e} on {bad}; clean / corrupted "
                                 f"ours {r.high_score}, {r.low_score}, naive {nv['high']}, {nv['low']}, fp64 diff "
                                 f"{recheck['clean_corrupted_diff_fp64']:.2e})")

    n_cells, n_ran = L * T, int(ran.sum())
    per_cell = statistics.fmean(nv["cell_s"])
    naive_s = nv["base_s"] + sum(nv["cell_s"]) if n_ran == n_cells else nv["base_s"] + per_cell * n_cells
    counts = token_layer_counts(kind, L, T, N, b, window, int(r.meta["token_layers"]))
    speedup = naive_s / ours_s
    res = {"kind": kind, "schedule": r.meta["schedule"], "ours_s": ours_s, "ours_s_reps": ours_times,
           "naive_s": naive_s,
           "naive_extrapolated": n_ran < n_cells, "naive_cells_run": n_ran, "naive_cells_total": n_cells,
           "naive_layers": naive_layers, "naive_s_per_cell": per_cell, "naive_base_s": nv["base_s"],
           "naive_measured_s": nv["base_s"] + sum(nv["cell_s"]), "max_abs_diff": diff, "cells_compared": n_ran,
           "allclose_fp32": same, "fp64_recheck": recheck, "trace_spread": spread, "high_score": r.high_score,
           "low_score": r.low_score, "answer": r.answer, "token_layers": counts,
           "ours_token_layers_per_s": counts["ours"] / ours_s,
           "naive_token_layers_per_s": (N + 1) * L * T / per_cell, "speedup": speedup,
           "target": SPEEDUP_TARGET, "pass": speedup >= SPEEDUP_TARGET}

    if profile:
        pr = cProfile.Profile()
        pr.enable()
        ours_fn()
        pr.disable()
        buf = io.StringIO()
        st = pstats.Stats(pr, stream=buf)
        st.sort_stats("tottime").print_stats(15)
        st.sort_stats("cumulative").print_stats(20)
        res["profile"] = buf.getvalue()
    return res


def _print_kind(res: dict, N: int) -> None:
    c = res["token_layers"]
    ext = (f"  EXTRAPOLATED from {res['naive_cells_run']} of {res['naive_cells_total']} cells "
           f"(all tokens x layers {res['naive_layers']}; measured {res['naive_measured_s']:.1f} s)"
           if res["naive_extrapolated"] else "")
    _rule(f"kind = {res['kind']}   (answer {res['answer']!r}: clean p {res['high_score']:.4f}, "
          f"corrupted p {res['low_score']:.4f}, trace spread {res['trace_spread']:.3f})")
    print(f"{'method':<58}{'seconds':>10}{'token-layers':>14}{'tok-layers/s':>14}")
    ours_label = f"ours: causal_trace(samples={N}, noise=draws), {res['schedule']}"
    print(f"{ours_label:<58}{res['ours_s']:>10.2f}{c['ours']:>14,}"
          f"{res['ours_token_layers_per_s']:>14,.0f}")
    print(f"{'naive ROME loop: one (N+1)-row forward per cell':<58}{res['naive_s']:>10.2f}{c['naive']:>14,}"
          f"{res['naive_token_layers_per_s']:>14,.0f}{ext}")
    print(f"  naive: {res['naive_s_per_cell'] * 1e3:.1f} ms per cell, base pass {res['naive_base_s'] * 1e3:.1f} ms")
    print(f"  ours token-layers = meta['token_layers'] {c['ours_cells']:,} + cached clean/corrupted passes "
          f"{c['ours_cached_passes']:,}; closed-form floor {c['floor']:,} "
          f"({'equal' if c['ours_equals_floor'] else 'NOT equal'} to meta['token_layers'])")
    print(f"  token-layer ratio naive / ours = {c['naive_over_ours']:.2f}x (the speedup at equal cost per "
          f"token-layer)")
    if res["allclose_fp32"]:
        print(f"  maps identical on {res['cells_compared']} cells: max |diff| {res['max_abs_diff']:.2e} "
              f"(allclose atol {ATOL:.0e}, rtol 0)")
    else:
        rc = res["fp64_recheck"]
        print(f"  fp32 maps differ by up to {res['max_abs_diff']:.2e} (> atol {ATOL:.0e}) on {len(rc['cells'])} of "
              f"{res['cells_compared']} cells {rc['cells'][:6]}{' ...' if len(rc['cells']) > 6 else ''}; "
              f"recomputed in float64 both ways, they agree to "
              f"{rc['max_abs_diff_fp64']:.1e} (allclose atol {ATOL:.0e}: fp32 rounding, not a different "
              f"computation; fp32 vs fp64 of ours differs by up to {rc['fp32_vs_fp64_rounding']:.1e})")
    if res["fp64_recheck"] is not None and res["fp64_recheck"]["clean_corrupted_diff_fp64"] > 0:
        print(f"  clean / corrupted scores: fp32 ours vs naive differ by more than {ATOL:.0e}; in float64 they agree "
              f"to {res['fp64_recheck']['clean_corrupted_diff_fp64']:.1e}")
    print(f"  speedup {res['speedup']:.2f}x  target >= {SPEEDUP_TARGET:.0f}x  {_verdict(res['pass'])}", flush=True)
    if res["schedule"] == "batched":
        print("  schedule 'batched' (auto on an accelerator): every cell x sample is a row of a few full passes, "
              "more token-layers than the floor but far fewer kernel launches")
    elif c["naive_over_ours"] < SPEEDUP_TARGET:
        print(f"  note: the target is above the token-layer ratio ({c['naive_over_ours']:.2f}x): at equal cost per "
              f"token-layer, no schedule that runs this count of token-layers can reach it.")
    if "profile" in res:
        print(f"\ncProfile of one causal_trace(kind={res['kind']!r}) (times include profiler overhead):")
        print(res["profile"])


def _choose_layers(spec: str, L: int, T: int, n_kinds: int, fwd_s: float, budget: float) -> list[int]:
    if spec == "all":
        return list(range(L))
    if spec != "auto":
        k = int(spec)
    else:
        est = n_kinds * (L * T + 1) * fwd_s
        if est <= budget:
            return list(range(L))
        k = max(2, math.floor(budget / (n_kinds * T * fwd_s)))
    k = min(max(k, 1), L)
    if k == 1:
        return [L // 2]
    return sorted({round(i * (L - 1) / (k - 1)) for i in range(k)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="6 layers, d_model 256, 4 samples (< 60 s)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    p.add_argument("--kinds", default="hidden,mlp,attn", help="comma-separated subset of hidden,mlp,attn")
    p.add_argument("--window", type=int, default=WINDOW, help="restored window for mlp / attn (ROME: 10)")
    p.add_argument("--naive-layers", default="auto", metavar="auto|all|K",
                   help="layers the naive loop runs (every token each): all, K evenly spaced, or auto: all "
                        "unless the estimated naive time exceeds --naive-budget")
    p.add_argument("--naive-budget", type=float, default=240.0, metavar="S",
                   help="seconds of naive loop (all kinds) that --naive-layers auto aims for (default 240)")
    p.add_argument("--profile", action="store_true", help="cProfile one extra causal_trace per kind")
    p.add_argument("--reps", type=int, default=None, metavar="R",
                   help="timed repetitions of causal_trace per kind, median reported (default 3)")
    p.add_argument("--threads", default="auto", metavar="auto|default|K",
                   help="torch threads: default leaves torch's setting; auto (the default) keeps it on an idle "
                        "CPU and uses 1 thread when the load average is above half the cores (why: see the "
                        "docstring of bench/causal_trace.py)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in ("hidden", "mlp", "attn") for k in kinds):
        p.error(f"--kinds: choose from hidden, mlp, attn; got {args.kinds!r}")
    device = torch.device(args.device)
    L, d, H, N = (6, 256, 8, 4) if args.quick else (12, 768, 12, 10)
    reps = args.reps if args.reps is not None else 3
    if reps < 1:
        p.error("--reps must be >= 1")

    t0 = time.perf_counter()
    env = start(args.threads, device, args.quick, reps)

    model, tok = cs.zoo.build_tiny_lm("gpt2", n_layers=L, d_model=d, n_heads=H, init_std=0.3)
    model = model.to(device)
    m = cs.load(model, tok, name=f"gpt2-{L}x{d}")
    ids = m.adapter.tokenize(PROMPT).to(device)
    T = ids.shape[1]
    b, e = cs.subject_range(m, PROMPT, SUBJECT)
    std = cs.embedding_std(m, [SUBJECT])
    draws = 3 * std * torch.randn(N, e - b, d, generator=torch.Generator().manual_seed(0))
    draws = draws.to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: GPT2LMHeadModel, {L} layers, d_model {d}, {H} heads, vocab {model.config.vocab_size} "
          f"(zoo build_tiny_lm, init_std 0.3, random weights), {params / 1e6:.1f}M parameters")
    print(f"prompt {PROMPT!r}: T = {T} tokens; subject {SUBJECT!r} = tokens [{b}, {e}); samples N = {N}; "
          f"noise = explicit draws, 3 x subject embedding std ({std:.3f}); window {args.window}")

    # warm up both paths, and time one naive forward to size the naive loop
    cs.causal_trace(m, PROMPT, SUBJECT, kind="hidden", samples=1, noise=draws[:1], progress=False)
    inp = ids.expand(N + 1, -1)
    fwd = []
    with torch.no_grad():
        for _ in range(3):
            fwd.append(_timed(lambda: model(input_ids=inp, use_cache=False), device)[0])
    fwd_s = statistics.median(fwd[1:])
    layers = _choose_layers(args.naive_layers, L, T, len(kinds), fwd_s, args.naive_budget)
    env.update(naive_forward_s=fwd_s, naive_layers=layers)
    print(f"one naive (N+1)-row forward: {fwd_s * 1e3:.1f} ms -> full naive loop ~ "
          f"{len(kinds) * (L * T + 1) * fwd_s:.0f} s for {len(kinds)} kind(s)")
    if len(layers) < L:
        why = (f"to fit --naive-budget {args.naive_budget:.0f} s" if args.naive_layers == "auto"
               else f"(--naive-layers {args.naive_layers})")
        print(f"NOTE: the naive loop runs every token for layers {layers} only ({len(layers) * T} of {L * T} "
              f"cells per kind) {why}; its total is EXTRAPOLATED from the mean time per cell, and exactness is "
              f"checked on those cells. --naive-layers all runs the full loop.")

    results: dict[str, Any] = {"env": env, "config": {"n_layers": L, "d_model": d, "n_heads": H, "T": T,
                               "subject_range": [b, e], "samples": N, "window": args.window,
                               "prompt": PROMPT, "subject": SUBJECT}, "kinds": {}}
    for kind in kinds:
        res = bench_kind(m, kind, draws, args.window, layers, reps, device, args.profile)
        _print_kind(res, N)
        res.pop("profile", None)
        results["kinds"][kind] = res
    results["wall_s"] = time.perf_counter() - t0

    _rule("Summary")
    for kind, res in results["kinds"].items():
        c = res["token_layers"]
        fp64 = "" if res["allclose_fp32"] else f" (fp64: {res['fp64_recheck']['max_abs_diff_fp64']:.1e})"
        print(f"{kind:<7} ours {res['ours_s']:7.2f} s   naive {res['naive_s']:8.2f} s"
              f"{' (extrapolated)' if res['naive_extrapolated'] else ''}   speedup {res['speedup']:5.2f}x "
              f"(token-layer ratio {c['naive_over_ours']:.2f}x)   max|diff| {res['max_abs_diff']:.1e}"
              f"{fp64}   "
              f"target >= {SPEEDUP_TARGET:.0f}x  {_verdict(res['pass'])}")
    return finish(results, env, args.json)


if __name__ == "__main__":
    sys.exit(main())
