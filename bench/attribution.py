"""Attribution benchmark: activation patching vs TransformerLens, layer IG vs captum, attribution patching vs exact.

    .venv/bin/python bench/attribution.py                  # GPT-2-small-sized model (~3 min on 2 idle CPU cores)
    .venv/bin/python bench/attribution.py --quick          # 4 layers, d_model 256, vocab 5000 (~10 s)
    .venv/bin/python bench/attribution.py --json out.json --reps 3
    .venv/bin/python bench/attribution.py --device cuda

Model: ``transformers.GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
n_positions=64))``, random weights (torch seed ``--seed``, the config's default init), eval mode. The same
weights go into a TransformerLens ``HookedTransformer`` built from a ``HookedTransformerConfig`` (act_fn
"gelu_new", normalization "LN", standard positional embeddings, d_vocab 50257, n_ctx 64) with TL's own
``convert_gpt2_weights`` and ``load_and_process_state_dict(fold_ln=False, center_writing_weights=False,
center_unembed=False, fold_value_biases=False)``, so the two compute the same function. The script asserts
that their logits agree to 1e-4 before anything is timed. ``--quick``: 4 layers, d_model 256, 8 heads, vocab
5000, T = 8, P = 2, 16 IG steps.

Prompts: P = 4 pairs of random token-id sequences of length T = 12 (seeded). The corrupted prompt differs from
the clean one at ONE position, position 4 (like IOI's name swap), where it holds another random token.
Metric: logit difference at the last position, per prompt p, between ``correct[p]`` and ``wrong[p]``, the
clean and the corrupted token at position 4, ordered per prompt so that the clean run's difference exceeds the
corrupted run's (a random model prefers neither; with a fixed order the per-prompt gaps, of random sign, can
average to ~0: see ``order_metric_tokens``). ``cs.logit_diff(correct, wrong)`` for causalscope, and
``patching_metric(logits)`` = the mean over prompts of the same difference for TransformerLens.

1. Patching map vs TransformerLens (resid_pre, denoising: clean activation into the corrupted run).
   - ours: ``cs.activation_patching(cs.load(hf_model), clean_ids, corrupted_ids, "resid_pre", metric,
     direction="denoise")``, wall time including its own clean and corrupted passes. ``result.raw``
     (direction, layer, position) holds the unnormalised metric means.
   - TL: ``run_with_cache(clean_ids)`` + ``transformer_lens.patching.get_act_patch_resid_pre(tl_model,
     corrupted_ids, clean_cache, patching_metric)``, under ``torch.no_grad()`` as TL's demos do
     (``torch.set_grad_enabled(False)``). TL runs one hooked forward of all P prompts per (layer, position)
     cell. Its tqdm bar is disabled (``TQDM_DISABLE=1``), which only helps TL.
   - The two (layer, position) maps must agree: allclose atol 1e-4, rtol 1e-4 (fp32, different kernels:
     HF's Conv1D / SDPA vs TL's einsums); the max |diff| is printed.
   - Token-layers (one token through one block, per prompt row): ours = ``meta["token_layers"]`` + the two
     cached passes (2·P·L·T); TL = L·T cells × P·L·T, plus P·L·T for ``run_with_cache``. The script also
     times one plain (P, T) forward of each model (median of 5, no_grad) and TL's time per cell, to show how
     much of the speedup is TL's cost per pass rather than the count of token-layers.
   - Target: ours >= 3x faster. Part of the speedup is legitimate work avoidance that a TL user could not
     get from ``get_act_patch_resid_pre``: TL unembeds every position of every cell (P·T rows × 50257),
     while ours unembeds only the last position, because ``cs.logit_diff`` reads only that one
     (``metric.last_only``); ours also runs a cell only from the patched block on and from the patched
     position on, against cached keys / values, and skips cells before the first differing position
     (their value is the corrupted run's).
2. Layer integrated gradients vs captum, at the output of block 6 (``"layers.6"``; ``--quick``: block L/2).
   - ours: ``cs.integrated_gradients(cs.load(hf_model), clean_ids, corrupted_ids, "layers.6", target=tid,
     steps=50, method="gausslegendre", attribute_to="output")``: inputs = the P clean prompts, baseline =
     the P corrupted prompts, target = the logit of token ``tid`` (= ``correct[0]``) at the last position.
   - captum: ``LayerIntegratedGradients(lambda ids: hf_model(ids).logits[:, -1], hf_model.transformer.h[6],
     multiply_by_inputs=True).attribute(clean_ids, baselines=corrupted_ids, target=tid, n_steps=50,
     method="gausslegendre", internal_batch_size=P*50)``. internal_batch_size = P·steps puts the whole path
     into one forward + backward (what ``None`` does too), the fastest setting when memory allows: on CPU a
     200-row batch of 12 tokens fits easily (its logits are 0.5 GB), and fewer, larger GEMMs beat several
     smaller passes. ``--captum-batch`` changes it. In transformers 5.x ``GPT2Block.forward`` returns a
     tensor, not a tuple, so captum returns one tensor (P, T, d_model); for a tuple output (older
     transformers returned (hidden_states, present, ...)) captum treats every tensor of the tuple as a layer
     output and returns a tuple of attributions. captum runs with autograd on (it needs it); its gradients
     are taken with ``torch.autograd.grad`` w.r.t. the layer output only. It is timed without
     ``return_convergence_delta`` (which adds two forwards); the script computes captum's delta afterwards,
     as captum defines it: sum of attributions - (f(inputs) - f(baselines)). Ours always computes its delta.
   - Attributions compared element-wise: max |diff| and allclose rtol 1e-3, atol 1e-4.
   - Token-layers: ours ``meta["token_layers"]``; captum 2·P·L·T (one full forward each for the layer
     activations of the inputs and the baselines) + P·steps·L·T (the path rows run the whole model).
   - Target: ours >= 1.5x faster. Ours runs the P·steps path rows only through blocks 7..L-1 (block 6's
     output is block 7's input, cached on the inputs' run) and only the last position through the head;
     captum runs the whole model and unembeds every position.
3. Attribution patching vs exact patching (resid_pre, denoise), same prompts and metric:
   ``cs.attribution_patching(m, clean, corrupted, "resid_pre", metric, direction="denoise")`` vs
   ``cs.activation_patching(..., direction="denoise")``: times, their ratio, ``atp.agreement(exact)``
   (Pearson / Spearman over all L·T cells) and ``atp.disagreement(exact)``'s top cells. Cells where clean
   and corrupted resid_pre are equal (before position 4, and block 0's input after it) are 0 in both up to
   fp32 noise, and the library's Spearman ranks exact ties by sort order, so the script also gives Spearman
   with average ranks, and both correlations over the "live" cells only (positions >= 4, minus layer 0
   after position 4). No target: attribution patching is an approximation; the point is what its speed
   costs in accuracy.

Times use ``time.perf_counter`` (with ``torch.cuda.synchronize`` on CUDA), after a warm-up of every path
(for IG one full-size run of each; for patching one forward of each model, a few cells of ours and one
hooked TL pass).
Each comparison runs ``--reps`` repetitions (default 3) interleaved, alternating which side goes first, and
reports the medians; the ratio is median(reference) / median(ours). Threads: on an idle CPU, torch's thread
count is left at its default. When the load average is above half the cores, ``--threads auto`` (the
default) sets 1 thread: with 2 OpenMP threads on 2 cores that another job keeps busy, every op waits for a
descheduled thread (see bench/causal_trace.py), and times would count op launches, not work.
``--threads default`` keeps torch's setting regardless; ``--threads K`` sets K. The exit status is 1 if an
exactness check fails (the PASS / FAIL of the speed targets does not change it).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import statistics
import sys
import time
import warnings
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TL's per-cell progress bar; disabling it only helps TL

import torch

import causalscope as cs
from causalscope.patching._attribution import _ranks

PATCH_TARGET = 3.0      # ours vs TransformerLens, activation patching
IG_TARGET = 1.5         # ours vs captum, layer integrated gradients
PATCH_TOL = dict(atol=1e-4, rtol=1e-4)
IG_TOL = dict(atol=1e-4, rtol=1e-3)
LOGITS_ATOL = 1e-4      # HF vs TL logits before anything is timed
DIFF_POS = 4            # the one position where corrupted differs from clean


# -- helpers (as in bench/causal_trace.py) -------------------------------------------------------------------------
from _common import finish, interleaved, start
from _common import rule as _rule
from _common import timed as _timed
from _common import verdict as _verdict


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "?"


def _corr(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Pearson and Spearman (average ranks for ties) of two tensors, flattened."""
    a, b = a.flatten().double(), b.flatten().double()
    pearson = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    ra, rb = _ranks(a), _ranks(b)  # ties share their average rank, as in AttributionPatchingResult.agreement
    return {"pearson": pearson, "spearman": float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])}


# -- models and prompts --------------------------------------------------------------------------------------------
def build_models(L: int, d: int, H: int, V: int, n_ctx: int, seed: int, device: torch.device) -> tuple[Any, Any]:
    """A seeded random-weight GPT2LMHeadModel and a HookedTransformer holding the same weights."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=L, n_embd=d, n_head=H, vocab_size=V, n_positions=n_ctx,
                     bos_token_id=V - 1, eos_token_id=V - 1)  # the default 50256 is out of range for --quick
    hf = GPT2LMHeadModel(cfg).eval().to(device)
    tl_cfg = HookedTransformerConfig(n_layers=L, d_model=d, n_ctx=n_ctx, d_head=d // H, n_heads=H, d_mlp=4 * d,
                                     d_vocab=V, act_fn="gelu_new", normalization_type="LN",
                                     positional_embedding_type="standard", eps=cfg.layer_norm_epsilon,
                                     init_weights=False, device=str(device))
    with warnings.catch_warnings():  # TL 3.x: "HookedTransformer is deprecated ... use TransformerBridge"
        warnings.simplefilter("ignore", DeprecationWarning)
        tl = HookedTransformer(tl_cfg)
    with torch.no_grad():
        sd = {k: v.detach().clone() for k, v in convert_gpt2_weights(hf, tl_cfg).items()}
    tl.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                   fold_value_biases=False)
    tl.eval()
    return hf, tl


def make_prompts(P: int, T: int, V: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, V, (P, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, DIFF_POS] = (clean[:, DIFF_POS] + torch.randint(1, V, (P,), generator=g)) % V  # always differs
    return clean.to(device), corrupted.to(device)


def order_metric_tokens(logits: torch.Tensor, clean: torch.Tensor,
                        corrupted: torch.Tensor) -> tuple[list[int], list[int], list[bool]]:
    """Per prompt, the clean and corrupted tokens at DIFF_POS, ordered so that the clean run's last-position
    logit difference exceeds the corrupted run's. ``logits``: the (2P, T, V) logits of clean then corrupted.

    A random-weight model has no reason to prefer the token it saw at DIFF_POS, so the per-prompt gaps have
    random signs; averaged in a fixed order they can cancel (one seed gave per-prompt gaps of -0.04, -0.32,
    +0.28, +0.08 and a mean of 3e-4), which would make the normalised scores of benchmark 3 meaningless.
    """
    P = clean.shape[0]
    correct, wrong, swapped = [], [], []
    for p in range(P):
        c, w = int(clean[p, DIFF_POS]), int(corrupted[p, DIFF_POS])
        gap = float(logits[p, -1, c] - logits[p, -1, w] - (logits[P + p, -1, c] - logits[P + p, -1, w]))
        swapped.append(gap < 0)
        correct.append(w if gap < 0 else c)
        wrong.append(c if gap < 0 else w)
    return correct, wrong, swapped


# -- 1. activation patching vs TransformerLens ---------------------------------------------------------------------
def bench_patching(hf: Any, tl: Any, clean: torch.Tensor, corrupted: torch.Tensor, correct: list[int],
                   wrong: list[int], reps: int, device: torch.device) -> dict:
    from transformer_lens.patching import get_act_patch_resid_pre

    P, T = clean.shape
    L = hf.config.n_layer
    metric = cs.logit_diff(correct, wrong)
    rows = torch.arange(P, device=device)
    c_ids, w_ids = torch.tensor(correct, device=device), torch.tensor(wrong, device=device)

    def patching_metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits[rows, -1, c_ids] - logits[rows, -1, w_ids]).mean()

    def ours() -> Any:
        return cs.activation_patching(cs.load(hf), clean, corrupted, "resid_pre", metric, direction="denoise",
                                      progress=False)

    def tl_ref() -> torch.Tensor:
        with torch.no_grad():
            _, clean_cache = tl.run_with_cache(clean)
            return get_act_patch_resid_pre(tl, corrupted, clean_cache, patching_metric)

    # warm-up: one forward of each model, a few cells of ours, one hooked TL pass
    with torch.no_grad():
        tl.run_with_cache(clean)
        tl.run_with_hooks(corrupted, fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: x)])
    cs.activation_patching(cs.load(hf), clean, corrupted, "resid_pre", metric, direction="denoise",
                           positions=[DIFF_POS], progress=False)

    t_ours, t_tl, r, tl_map = interleaved(ours, tl_ref, reps, device)
    ours_map = r.raw.sel(direction="denoise").values.float().cpu()
    tl_map = tl_map.float().cpu()
    assert ours_map.shape == tl_map.shape == (L, T), (ours_map.shape, tl_map.shape)
    diff = float((ours_map - tl_map).abs().max())
    same = bool(torch.allclose(ours_map, tl_map, **PATCH_TOL))
    with torch.no_grad():
        tl_clean, tl_corr = float(patching_metric(tl(clean))), float(patching_metric(tl(corrupted)))
    spread = float((tl_map - tl_corr).abs().max())

    # one (P, T) forward of each model: how much of the speedup is TL's per-pass cost rather than the schedule
    fwd_hf, fwd_tl = [], []
    with torch.no_grad():
        for _ in range(5):
            fwd_hf.append(_timed(lambda: hf(corrupted, use_cache=False), device)[0])
            fwd_tl.append(_timed(lambda: tl(corrupted), device)[0])
    cached = 2 * P * L * T
    ours_tl = int(r.meta["token_layers"]) + cached
    tl_cells = L * T * P * L * T
    tl_total = tl_cells + P * L * T
    ours_s, tl_s = statistics.median(t_ours), statistics.median(t_tl)
    speedup = tl_s / ours_s
    return {"ours_s": ours_s, "ours_s_reps": t_ours, "tl_s": tl_s, "tl_s_reps": t_tl, "speedup": speedup,
            "target": PATCH_TARGET, "pass": speedup >= PATCH_TARGET, "max_abs_diff": diff, "allclose": same,
            "tolerance": PATCH_TOL, "map_spread": spread, "clean_metric": {"ours": r.meta["clean_metric"],
            "tl": tl_clean}, "corrupted_metric": {"ours": r.meta["corrupted_metric"], "tl": tl_corr},
            "token_layers": {"ours_cells": int(r.meta["token_layers"]), "ours_cached_passes": cached,
                             "ours": ours_tl, "tl_cells": tl_cells, "tl_cache_pass": P * L * T, "tl": tl_total,
                             "tl_over_ours": tl_total / ours_tl},
            "forward_s": {"hf": statistics.median(fwd_hf), "tl": statistics.median(fwd_tl)},
            "tl_s_per_cell": tl_s / (L * T),
            "ours_map": ours_map.tolist(), "tl_map": tl_map.tolist()}


def _print_patching(res: dict, L: int, T: int, P: int) -> None:
    c = res["token_layers"]
    print(f"{'method':<66}{'seconds':>9}{'token-layers':>15}")
    print(f"{'ours: cs.activation_patching(cs.load(hf), ..., direction=denoise)':<66}{res['ours_s']:>9.3f}"
          f"{c['ours']:>15,}")
    print(f"{'TL: run_with_cache(clean) + get_act_patch_resid_pre (no_grad)':<66}{res['tl_s']:>9.3f}"
          f"{c['tl']:>15,}")
    print(f"  reps: ours {', '.join(f'{t:.3f}' for t in res['ours_s_reps'])} s; "
          f"TL {', '.join(f'{t:.3f}' for t in res['tl_s_reps'])} s")
    print(f"  ours token-layers = meta['token_layers'] {c['ours_cells']:,} + 2 cached passes "
          f"{c['ours_cached_passes']:,}"
          f"; TL = {L}·{T} cells x {P}·{L}·{T} = {c['tl_cells']:,} + run_with_cache {c['tl_cache_pass']:,}")
    print(f"  token-layer ratio TL / ours = {c['tl_over_ours']:.2f}x (TL also unembeds all {T} positions of "
          f"each cell, ours only the last)")
    f = res["forward_s"]
    print(f"  one ({P}, {T}) forward under no_grad: HF {f['hf'] * 1e3:.1f} ms, TL {f['tl'] * 1e3:.1f} ms "
          f"({f['tl'] / f['hf']:.2f}x); TL spends {res['tl_s_per_cell'] * 1e3:.1f} ms per cell")
    cm, km = res["clean_metric"], res["corrupted_metric"]
    print(f"  metric: clean ours {cm['ours']:+.5f} / TL {cm['tl']:+.5f}; corrupted ours {km['ours']:+.5f} / TL "
          f"{km['tl']:+.5f}; map spread max|map - corrupted| {res['map_spread']:.4f}")
    print(f"  maps (denoise, layer x position): max |diff| {res['max_abs_diff']:.2e}  allclose(atol 1e-4, rtol "
          f"1e-4): {res['allclose']}")
    print(f"  speedup {res['speedup']:.2f}x  target >= {PATCH_TARGET:.0f}x  {_verdict(res['pass'])}", flush=True)


# -- 2. layer IG vs captum -----------------------------------------------------------------------------------------
def bench_ig(hf: Any, clean: torch.Tensor, corrupted: torch.Tensor, layer: int, tid: int, steps: int,
             captum_batch: int, reps: int, device: torch.device) -> dict:
    from captum.attr import LayerIntegratedGradients

    site = f"layers.{layer}"

    def ours() -> Any:
        return cs.integrated_gradients(cs.load(hf), clean, corrupted, site, target=tid, steps=steps,
                                       method="gausslegendre", attribute_to="output", progress=False)

    lig = LayerIntegratedGradients(lambda ids: hf(ids).logits[:, -1], hf.transformer.h[layer],
                                   multiply_by_inputs=True)

    def captum() -> Any:
        return lig.attribute(clean, baselines=corrupted, target=tid, n_steps=steps, method="gausslegendre",
                             internal_batch_size=captum_batch)

    # warm-up: one full-size run of each (the first 200-row pass pays for allocations)
    ours()
    captum()

    t_ours, t_cap, r, cap = interleaved(ours, captum, reps, device)
    returned = type(cap).__name__
    if isinstance(cap, (tuple, list)):
        cap = cap[0]
    a_ours, a_cap = r.attributions.detach().float().cpu(), cap.detach().float().cpu()
    # captum's convergence delta (sum of attributions - (f(inputs) - f(baselines))), computed here rather than
    # with return_convergence_delta=True, which would add two forwards to captum's timed call
    with torch.inference_mode():
        f_x, f_b = (hf(x).logits[:, -1, tid].double().cpu() for x in (clean, corrupted))
    P, T = clean.shape
    L = hf.config.n_layer
    cap_delta = a_cap.reshape(P, -1).double().sum(1) - (f_x - f_b)
    assert a_ours.shape == a_cap.shape, (a_ours.shape, a_cap.shape)
    err = (a_ours - a_cap).abs()
    diff = float(err.max())
    same = bool(torch.allclose(a_ours, a_cap, **IG_TOL))
    scale = float(a_cap.abs().max())
    ours_s, cap_s = statistics.median(t_ours), statistics.median(t_cap)
    speedup = cap_s / ours_s
    cap_tl = 2 * P * L * T + P * steps * L * T
    return {"site": site, "captum_layer": f"transformer.h[{layer}]", "target_token": tid, "steps": steps,
            "captum_internal_batch_size": captum_batch, "captum_returned": returned,
            "shape": list(a_ours.shape), "ours_s": ours_s, "ours_s_reps": t_ours, "captum_s": cap_s,
            "captum_s_reps": t_cap, "speedup": speedup, "target": IG_TARGET, "pass": speedup >= IG_TARGET,
            "max_abs_diff": diff, "max_abs_diff_over_max_abs": diff / max(scale, 1e-30),
            "allclose": same, "tolerance": IG_TOL, "max_abs_attribution": scale,
            "n_over_tolerance": int((err > IG_TOL["atol"] + IG_TOL["rtol"] * a_cap.abs()).sum()),
            "sum_per_input": {"ours": a_ours.reshape(P, -1).sum(1).tolist(),
                              "captum": a_cap.reshape(P, -1).sum(1).tolist()},
            "delta": {"ours": r.delta.tolist(), "captum": cap_delta.detach().cpu().tolist()},
            "ours_token_layers": r.meta.get("token_layers"), "captum_token_layers": cap_tl,
            "ours_chunk_size": r.meta.get("chunk_size"),
            "ours_segment": r.meta.get("segment")}


def _print_ig(res: dict, P: int) -> None:
    ours = f"ours: cs.integrated_gradients(cs.load(hf), clean, corrupted, {res['site']!r}, target=tid)"
    ref = (f"captum: LayerIntegratedGradients(f, {res['captum_layer']}), internal_batch_size "
           f"{res['captum_internal_batch_size']}")
    w = max(len(ours), len(ref)) + 2
    print(f"{'method':<{w}}{'seconds':>9}")
    print(f"{ours:<{w}}{res['ours_s']:>9.3f}")
    print(f"{ref:<{w}}{res['captum_s']:>9.3f}")
    print(f"  reps: ours {', '.join(f'{t:.3f}' for t in res['ours_s_reps'])} s; "
          f"captum {', '.join(f'{t:.3f}' for t in res['captum_s_reps'])} s")
    print(f"  target token {res['target_token']} (last position), {res['steps']} gausslegendre steps, {P} inputs; "
          f"captum returned a {res['captum_returned']} of shape {tuple(res['shape'])}")
    print(f"  token-layers: ours {res['ours_token_layers']:,} (meta; the path rows run segment "
          f"{res['ours_segment']}, chunk_size {res['ours_chunk_size']}); captum {res['captum_token_layers']:,} "
          f"(2 full forwards for the layer activations of inputs and baselines + {P}·{res['steps']} path rows "
          f"through the whole model); ratio {res['captum_token_layers'] / res['ours_token_layers']:.2f}x")
    so, sc = res["sum_per_input"]["ours"], res["sum_per_input"]["captum"]
    print(f"  attribution sums per input: ours {', '.join(f'{x:+.4f}' for x in so)}; captum "
          f"{', '.join(f'{x:+.4f}' for x in sc)}")
    print(f"  convergence delta: ours (r.delta) {', '.join(f'{x:+.1e}' for x in res['delta']['ours'])}; captum "
          f"{', '.join(f'{x:+.1e}' for x in res['delta']['captum'])}")
    outside = "" if res["allclose"] else f" ({res['n_over_tolerance']} elements outside)"
    print(f"  attributions: max |diff| {res['max_abs_diff']:.2e} (largest |attribution| "
          f"{res['max_abs_attribution']:.3e}, "
          f"ratio {res['max_abs_diff_over_max_abs']:.1e})"
          f"; allclose(rtol 1e-3, atol 1e-4): {res['allclose']}"
          f"{outside}")
    print(f"  speedup {res['speedup']:.2f}x  target >= {IG_TARGET}x  {_verdict(res['pass'])}", flush=True)


# -- 3. attribution patching vs exact patching ---------------------------------------------------------------------
def bench_atp(hf: Any, clean: torch.Tensor, corrupted: torch.Tensor, correct: list[int], wrong: list[int],
              reps: int, device: torch.device) -> dict:
    metric = cs.logit_diff(correct, wrong)

    def atp() -> Any:
        return cs.attribution_patching(cs.load(hf), clean, corrupted, "resid_pre", metric, direction="denoise")

    def exact() -> Any:
        return cs.activation_patching(cs.load(hf), clean, corrupted, "resid_pre", metric, direction="denoise",
                                      progress=False)

    atp()  # warm-up (exact was warmed up by benchmark 1)
    t_atp, t_exact, a, e = interleaved(atp, exact, reps, device)
    agreement = a.agreement(e)
    av, ev = a.denoise.values, e.denoise.values  # (layer, position), normalised scores
    every = _corr(av, ev)
    # the cells whose clean and corrupted activations differ: positions >= DIFF_POS, except the block-0 input
    # (the embeddings) at positions after DIFF_POS. Elsewhere both are 0 up to fp32 noise, whose ranks are random.
    live = torch.zeros_like(av, dtype=torch.bool)
    live[:, DIFF_POS:] = True
    live[0, DIFF_POS + 1:] = False
    tail = _corr(av[live], ev[live])
    atp_s, exact_s = statistics.median(t_atp), statistics.median(t_exact)
    return {"atp_s": atp_s, "atp_s_reps": t_atp, "exact_s": exact_s, "exact_s_reps": t_exact,
            "speedup": exact_s / atp_s, "agreement": agreement, "agreement_tie_aware": every,
            "n_zero_cells": {"atp": int((av == 0).sum()), "exact": int((ev == 0).sum())},
            "agreement_live_cells": tail, "n_live_cells": int(live.sum()),
            "max_abs_score_error": float((av - ev).abs().max()),
            "disagreement": a.disagreement(e, k=5), "atp_scores": av.tolist(), "exact_scores": ev.tolist()}


def _print_atp(res: dict, L: int, T: int) -> None:
    print(f"{'method':<66}{'seconds':>9}")
    print(f"{'ours: cs.attribution_patching(..., resid_pre, direction=denoise)':<66}{res['atp_s']:>9.3f}")
    print(f"{'ours: cs.activation_patching(..., resid_pre, direction=denoise)':<66}{res['exact_s']:>9.3f}")
    print(f"  reps: attribution {', '.join(f'{t:.3f}' for t in res['atp_s_reps'])} s; "
          f"exact {', '.join(f'{t:.3f}' for t in res['exact_s_reps'])} s")
    print(f"  attribution patching is {res['speedup']:.2f}x faster than exact patching")
    g, tl = res["agreement"], res["agreement_live_cells"]
    print(f"  agreement (atp.agreement(exact), all {L * T} cells): Pearson {g['denoise pearson']:.4f}, Spearman "
          f"{g['denoise spearman']:.4f}")
    z, ta = res["n_zero_cells"], res["agreement_tie_aware"]
    print(f"  Spearman with average ranks for ties (the script's; {z['atp']} / {z['exact']} cells are exactly 0 in "
          f"AtP / exact): {ta['spearman']:.4f}")
    print(f"  on the {res['n_live_cells']} cells where clean and corrupted resid_pre differ (positions >= {DIFF_POS}, "
          f"except layer 0 after {DIFF_POS}): Pearson {tl['pearson']:.4f}, Spearman {tl['spearman']:.4f}")
    print(f"  max |score error| {res['max_abs_score_error']:.3f} (scores are fractions of the clean - corrupted gap)")
    print("  largest disagreements (normalised scores, 0 = corrupted, 1 = clean):")
    for row in res["disagreement"]:
        print(f"    {row['cell']:<22} estimate {row['estimate']:+.3f}  exact {row['exact']:+.3f}  "
              f"error {row['error']:+.3f}")
    sys.stdout.flush()


# -- main ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="4 layers, d_model 256, vocab 5000, T 8, P 2, 16 steps")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    p.add_argument("--reps", type=int, default=3, metavar="R", help="timed repetitions per side, median (default 3)")
    p.add_argument("--steps", type=int, default=None, help="IG steps (default 50; --quick 16)")
    p.add_argument("--captum-batch", type=int, default=None, metavar="N",
                   help="captum internal_batch_size (default P * steps: the whole path in one pass)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights (prompts use seed + 1)")
    p.add_argument("--skip", default="", help="comma-separated subset of patching,ig,atp to skip")
    p.add_argument("--threads", default="auto", metavar="auto|default|K",
                   help="torch threads: default leaves torch's setting; auto (the default) keeps it on an idle "
                        "CPU and uses 1 thread when the load average is above half the cores")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.reps < 1:
        p.error("--reps must be >= 1")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - {"patching", "ig", "atp"}:
        p.error(f"--skip: choose from patching, ig, atp; got {args.skip!r}")
    device = torch.device(args.device)
    L, d, H, V, T, P, steps = (4, 256, 8, 5000, 8, 2, 16) if args.quick else (12, 768, 12, 50257, 12, 4, 50)
    steps = args.steps or steps
    n_ctx = 64
    ig_layer = 6 if not args.quick else L // 2
    captum_batch = args.captum_batch or P * steps

    t0 = time.perf_counter()
    env = start(args.threads, device, args.quick, args.reps, {"transformers": _version("transformers"),
                "transformer_lens": _version("transformer-lens"), "captum": _version("captum")})

    hf, tl = build_models(L, d, H, V, n_ctx, args.seed, device)
    clean, corrupted = make_prompts(P, T, V, args.seed + 1, device)
    with torch.inference_mode():
        lhf = hf(torch.cat([clean, corrupted])).logits
        ltl = tl(torch.cat([clean, corrupted]))
    logits_diff = float((lhf - ltl).abs().max())
    assert logits_diff <= LOGITS_ATOL, f"HF and TL logits differ by {logits_diff:.2e}: not the same function"
    correct, wrong, swapped = order_metric_tokens(lhf.float().cpu(), clean, corrupted)
    params = sum(q.numel() for q in hf.parameters())
    print(f"model: GPT2LMHeadModel(GPT2Config(n_layer={L}, n_embd={d}, n_head={H}, vocab_size={V}, "
          f"n_positions={n_ctx})), random weights (seed {args.seed}), {params / 1e6:.1f}M parameters; the same "
          f"weights in a TL HookedTransformer: max |logits diff| {logits_diff:.1e} (<= {LOGITS_ATOL:.0e})")
    print(f"prompts: P = {P} pairs of random token ids, T = {T}; corrupted differs from clean ONLY at position "
          f"{DIFF_POS}; metric = logit_diff(correct, wrong) at the last position, per prompt the clean and the "
          f"corrupted token at {DIFF_POS}, ordered so that clean > corrupted: correct {correct}, wrong {wrong} "
          f"(swapped for prompts {[p for p in range(P) if swapped[p]]})")
    results: dict[str, Any] = {"env": env, "config": {"n_layers": L, "d_model": d, "n_heads": H, "vocab": V,
                               "n_positions": n_ctx, "T": T, "P": P, "diff_position": DIFF_POS, "steps": steps,
                               "ig_layer": ig_layer, "seed": args.seed, "clean": clean.tolist(),
                               "corrupted": corrupted.tolist(), "correct": correct, "wrong": wrong,
                               "swapped": swapped,
                               "hf_tl_logits_max_abs_diff": logits_diff}}
    ok = True
    if "patching" not in skip:
        _rule(f"1. Activation patching (resid_pre, denoise) vs TransformerLens: {L * T} cells x {P} prompts")
        res = bench_patching(hf, tl, clean, corrupted, correct, wrong, args.reps, device)
        _print_patching(res, L, T, P)
        results["patching"] = res
        ok &= res["allclose"]
    if "ig" not in skip:
        _rule(f"2. Layer integrated gradients at layers.{ig_layer} vs captum LayerIntegratedGradients "
              f"({steps} steps x {P} inputs)")
        res = bench_ig(hf, clean, corrupted, ig_layer, correct[0], steps, captum_batch, args.reps, device)
        _print_ig(res, P)
        results["ig"] = res
        ok &= res["allclose"]
    if "atp" not in skip:
        _rule("3. Attribution patching vs exact activation patching (resid_pre, denoise)")
        res = bench_atp(hf, clean, corrupted, correct, wrong, args.reps, device)
        _print_atp(res, L, T)
        results["atp"] = res
    results["wall_s"] = time.perf_counter() - t0

    _rule("Summary")
    if "patching" in results:
        r = results["patching"]
        print(f"patching vs TL      ours {r['ours_s']:8.3f} s   TL     {r['tl_s']:8.3f} s   speedup "
              f"{r['speedup']:6.2f}x"
              f"   target >= {PATCH_TARGET:.1f}x  {_verdict(r['pass'])}   max|diff| {r['max_abs_diff']:.1e} "
              f"(allclose {r['allclose']})   token-layers {r['token_layers']['tl_over_ours']:.1f}x fewer")
    if "ig" in results:
        r = results["ig"]
        print(f"IG vs captum        ours {r['ours_s']:8.3f} s   captum {r['captum_s']:8.3f} s   speedup "
              f"{r['speedup']:6.2f}x   target >= {IG_TARGET:.1f}x  {_verdict(r['pass'])}   max|diff| "
              f"{r['max_abs_diff']:.1e} (allclose {r['allclose']})")
    if "atp" in results:
        r = results["atp"]
        g = r["agreement"]
        live = r["agreement_live_cells"]
        print(f"AtP vs exact        AtP  {r['atp_s']:8.3f} s   exact  {r['exact_s']:8.3f} s   speedup "
              f"{r['speedup']:6.2f}x"
              f"   (no target)   Pearson {g['denoise pearson']:.3f}, Spearman {g['denoise spearman']:.3f} "
              f"(live cells: {live['pearson']:.3f}, {live['spearman']:.3f})   "
              f"max|score error| {r['max_abs_score_error']:.2f}")
    return finish(results, env, args.json, ok)


if __name__ == "__main__":
    sys.exit(main())
