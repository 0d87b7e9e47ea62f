"""causalscope next to its peers (nnsight, pyvene, TransformerLens, captum): same work, same process, same numbers.

    .venv/bin/python bench/peers.py                  # full run (~5 min on 2 busy CPU cores)
    .venv/bin/python bench/peers.py --quick          # T 8, a smaller stand-in for GPT-2-small (~15 s)
    .venv/bin/python bench/peers.py --json out.json --only map,ig
    .venv/bin/pip install --no-deps "nnsight>=0.8,<0.9" "pyvene>=0.1.8,<0.2" ...   # see bench/README.md

Every row is one piece of work done by causalscope and by each peer that can do it, written the way the peer's
documentation does it, in one process: each result is checked equal to ours (allclose, tolerance printed)
before its time counts, and the timed calls are interleaved (the order rotates every repetition) and reported
as medians. The table prints **peer time / our time**: above 1.0 causalscope is faster, below 1.0 the peer is.
torch runs on 1 thread (set here, whatever the machine), so a busy CPU slows every tool alike.

1. **IIA of variable A at the 6 neurons of the bundled adder** (``l1`` and ``l2``, 3 each), 200 base / source
   pairs from ``cs.counterfactuals(vary="A", n=200)``:
   - ours: ``cs.mediation(adder, ds, "neurons")`` (defaults: TE, NIE, NDE, IIA with 1000 bootstrap resamples;
     the time without the bootstrap, ``n_boot=1``, is printed too);
   - nnsight: ``NNsight(adder)``, one trace per run: the base and source runs saving ``l1`` / ``l2``, then per
     neuron a base trace with the source value written in (NIE, IIA) and a source trace with the base value
     (NDE): 14 traces of 200 rows;
   - pyvene: one ``IntervenableModel`` per layer (``"l1.output"``, ``VanillaIntervention``), one call per
     neuron and direction with ``subspaces=[[n]]`` (pyvene runs the source forward in each call).
   Equal: every site's IIA (exactly) and TE / NIE / NDE means (atol 1e-6).
2. **resid_pre activation-patching map** (denoising: each clean block input, one position at a time, into the
   corrupted run) on GPT-2s built from the zoo's configs with seeded random weights (``build_tiny_lm``, the
   word vocabulary of 72): ``tiny`` (the bundled tiny-gpt2, L=4 d=64) and ``toy`` (L=6 d=128), T=12;
   metric = last-position logit difference between the clean and the corrupted token at the one position
   where the prompts differ (position 4, like IOI's name swap), mean over P pairs (``--pairs``, default 1):
   - ours: ``cs.activation_patching(cs.load(hf), clean, corrupted, "resid_pre", cs.logit_diff(c, w),
     direction="denoise")``; ``result.raw`` is compared;
   - nnsight: ``NNsight(hf)``; one clean trace saving every block input, then one trace per layer over T*P
     rows (row t: the corrupted prompt with the clean block input written in at position t);
   - pyvene: one ``IntervenableModel({"layer": l, "component": "block_input", "unit": "pos"})`` per layer,
     one call per layer over T*P rows with the clean rows as sources and per-row ``unit_locations``;
   - TransformerLens: the same weights in a ``HookedTransformer``; ``run_with_cache(clean)`` +
     ``patching.get_act_patch_resid_pre`` (one forward per cell), under ``no_grad``.
   Equal: the (layer, position) maps, allclose atol 1e-5 (1e-4 for TransformerLens, whose einsums round
   differently), rtol 1e-4.
3. **The same map on the GPT-2-small body** (L=12 d=768 12 heads, random weights from the config), T=16: the
   same three peers.
4. **Layer integrated gradients, 32 Gauss-Legendre steps** vs captum's ``LayerIntegratedGradients(...,
   multiply_by_inputs=True)`` with ``internal_batch_size`` = the whole path (its fastest setting): on the zoo
   MLP (16-32-32-4, 64 inputs, site ``net.2``, zero baseline, target class 0) and on the three GPT-2s (clean
   prompt vs corrupted baseline at the output of block L/2, target = the clean token's logit at the last
   position). Equal: attributions allclose atol 1e-4 x the largest |attribution|, rtol 1e-3.

Setup (model building, weight conversion, warm-up) is not timed; wrapping the model (``cs.load``,
``NNsight(...)``, ``IntervenableModel(...)``) is, since a user does it per analysis. Each tool gets its own copy
of the weights. A peer that is not installed, or fails on this torch / transformers, is left out of its cells
with the reason printed. The exit status is 1 if any result differs from ours.
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata as md
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's per-cell progress bar; disabling it only helps TL
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
# the `kernels` package (pulled in through transformers by the peers) logs "Skipping publisher trust check ... offline
# mode" three times; the offline mode is on purpose
logging.getLogger("kernels").setLevel(logging.ERROR)

import torch

import causalscope as cs
from _common import finish, rule, start, timed
from causalscope.zoo import build_adder, build_mlp, build_tiny_lm

PEERS = {"nnsight": "nnsight", "pyvene": "pyvene", "TransformerLens": "transformer-lens", "captum": "captum"}
DIFF_POS = 4          # the one position where a corrupted prompt differs from its clean one
IIA_TOL = 1e-3        # cs.mediation's default tol: |y(patched) - y(source)| <= tol counts as a match
CPU = torch.device("cpu")


# -- helpers -------------------------------------------------------------------------------------------------------
def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def _missing(peer: str) -> str | None:
    """Why ``peer`` cannot run here (None: it imports)."""
    mod = {"nnsight": "nnsight", "pyvene": "pyvene", "TransformerLens": "transformer_lens", "captum": "captum"}[peer]
    try:
        __import__(mod)
    except Exception as e:  # noqa: BLE001 - any import failure is a reason to leave the peer out
        return f"import {mod} failed: {type(e).__name__}: {e}"[:300]
    return None


def _git_state() -> str:
    """The commit the numbers belong to, and whether src/ had uncommitted changes."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head or 'unknown'}{' + uncommitted changes in src/' if dirty else ''}"


def interleave(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """``reps`` rounds of every function, the order rotated each round; seconds per call."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            times[n].append(timed(fns[n], CPU)[0])
    return times


def compare(ours: torch.Tensor, theirs: torch.Tensor, atol: float, rtol: float) -> dict:
    ours, theirs = ours.detach().double().cpu(), theirs.detach().double().cpu()
    if ours.shape != theirs.shape:
        return {"equal": False, "max_abs_diff": float("inf"), "note": f"shapes {tuple(ours.shape)} vs "
                f"{tuple(theirs.shape)}", "atol": atol, "rtol": rtol}
    return {"equal": bool(torch.allclose(ours, theirs, atol=atol, rtol=rtol)),
            "max_abs_diff": float((ours - theirs).abs().max()), "atol": atol, "rtol": rtol}


def run_row(work: str, size: str, ours: Callable[[], Any], ours_value: Callable[[Any], torch.Tensor],
            peers: dict[str, tuple[Callable[[], Any], Callable[[Any], torch.Tensor], float, float]],
            skipped: dict[str, str], reps: int, extra: dict[str, Callable[[], Any]] | None = None) -> dict:
    """Warm up and check every peer against ours, then time them all interleaved.

    ``peers``: name -> (call, its value as a tensor, atol, rtol). ``skipped``: name -> why it is left out.
    ``extra``: more of our own calls to time alongside (diagnostics, no ratio).
    """
    ref = ours_value(ours())  # warm-up and the reference
    res: dict[str, Any] = {"work": work, "size": size, "reps": reps, "peers": {}}
    fns: dict[str, Callable[[], Any]] = {"ours": ours, **(extra or {})}
    for name, why in skipped.items():
        res["peers"][name] = {"skipped": why}
    for name, (call, value, atol, rtol) in peers.items():
        try:
            out = value(call())
        except Exception as e:  # noqa: BLE001 - a peer failing here is reported, not fatal
            res["peers"][name] = {"skipped": f"failed: {type(e).__name__}: {e}"[:300]}
            continue
        res["peers"][name] = compare(ref, out, atol, rtol)
        fns[name] = call
    times = interleave(fns, reps)
    res["ours_s"] = statistics.median(times["ours"])
    res["ours_s_reps"] = times["ours"]
    for name in extra or {}:
        res[f"{name}_s"] = statistics.median(times[name])
    for name, p in res["peers"].items():
        if name in times:
            p["s"], p["s_reps"] = statistics.median(times[name]), times[name]
            p["ratio"] = p["s"] / res["ours_s"]
    _print_row(res)
    return res


def _print_row(res: dict) -> None:
    print(f"{res['work']} [{res['size']}], {res['reps']} interleaved reps, medians:")
    print(f"  {'ours':<16}{res['ours_s'] * 1e3:>10.2f} ms")
    for k, v in res.items():
        if k.endswith("_s") and k not in ("ours_s",):
            print(f"  {k[:-2]:<16}{v * 1e3:>10.2f} ms  (ours, diagnostic)")
    for name, p in res["peers"].items():
        if "skipped" in p:
            print(f"  {name:<16}{'-':>10}     left out: {p['skipped']}")
            continue
        same = "equal" if p["equal"] else "DIFFERENT"
        print(f"  {name:<16}{p['s'] * 1e3:>10.2f} ms  peer/ours {p['ratio']:6.2f}x  {same} (max |diff| "
              f"{p['max_abs_diff']:.1e}, atol {p['atol']:.0e}, rtol {p['rtol']:.0e}){' ' + p.get('note', '')}")
    sys.stdout.flush()


# -- 1. IIA on the adder -------------------------------------------------------------------------------------------
def bench_mediation(n_pairs: int, reps: int) -> dict:
    layers, width = ("l1", "l2"), 3
    ds = cs.counterfactuals(vary="A", n=n_pairs, seed=0)
    base, src = ds.base, ds.source
    net = build_adder()

    def ours() -> Any:
        return cs.mediation(net, ds, "neurons")

    def ours_no_boot() -> Any:
        return cs.mediation(net, ds, "neurons", n_boot=1)

    def ours_value(r: Any) -> torch.Tensor:  # (site, stat) means: TE, NIE, NDE, IIA
        return torch.stack([r.stat(s).values.reshape(-1) for s in ("TE", "NIE", "NDE", "IIA")], -1)

    def stats(y_base: torch.Tensor, y_src: torch.Tensor, y_nie: list, y_nde: list) -> torch.Tensor:
        rows = []
        for yp, yd in zip(y_nie, y_nde):
            rows.append(torch.stack([(y_src - y_base).mean(), (yp - y_base).mean(), (yd - y_base).mean(),
                                     ((yp - y_src).abs() <= IIA_TOL).float().mean()]))
        return torch.stack(rows)

    peers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in ("nnsight", "pyvene"):
        if (why := _missing(name)) is not None:
            skipped[name] = why
    if "nnsight" not in skipped:
        from nnsight import NNsight

        nn_net = copy.deepcopy(net)

        def nnsight_iia() -> torch.Tensor:
            nm = NNsight(nn_net)
            a_base: dict[str, Any] = {}
            a_src: dict[str, Any] = {}
            y_nie: list = []
            y_nde: list = []
            with torch.no_grad():
                with nm.trace(base):
                    for name in layers:
                        a_base[name] = getattr(nm, name).output.save()
                    y_base = nm.output.save()
                with nm.trace(src):
                    for name in layers:
                        a_src[name] = getattr(nm, name).output.save()
                    y_src = nm.output.save()
                for name in layers:
                    for n in range(width):
                        with nm.trace(base):
                            getattr(nm, name).output[:, n] = a_src[name][:, n]
                            yp = nm.output.save()
                        with nm.trace(src):
                            getattr(nm, name).output[:, n] = a_base[name][:, n]
                            yd = nm.output.save()
                        y_nie.append(yp)
                        y_nde.append(yd)
            return stats(y_base, y_src, y_nie, y_nde)

        peers["nnsight"] = (nnsight_iia, lambda t: t, 1e-6, 0.0)
    if "pyvene" not in skipped:
        import pyvene as pv
        from transformers import PretrainedConfig

        pv_net = copy.deepcopy(net)
        pv_net.config = PretrainedConfig()  # pyvene reads model.config
        # pyvene's documented way to use a model class it has no mapping for: register empty mappings
        pv.type_to_module_mapping[type(pv_net)] = {}
        pv.type_to_dimension_mapping[type(pv_net)] = {}

        def pyvene_iia() -> torch.Tensor:
            y_nie: list = []
            y_nde: list = []
            with torch.no_grad():
                y_base, y_src = pv_net(base), pv_net(src)
                for name in layers:
                    im = pv.IntervenableModel([{"component": f"{name}.output",
                                                "intervention_type": pv.VanillaIntervention}], model=pv_net)
                    for n in range(width):
                        sub = [[[n]] * len(base)]
                        y_nie.append(im({"x": base}, [{"x": src}], subspaces=sub)[1])
                        y_nde.append(im({"x": src}, [{"x": base}], subspaces=sub)[1])
            return stats(y_base, y_src, y_nie, y_nde)

        peers["pyvene"] = (pyvene_iia, lambda t: t, 1e-6, 0.0)
    res = run_row("IIA of A at 6 adder neurons (cs.mediation)", f"adder, {n_pairs} pairs", ours, ours_value,
                  peers, skipped, reps, extra={"ours, n_boot=1": ours_no_boot})
    res["note"] = ("ours computes TE, NIE, NDE and IIA with 1000 bootstrap resamples (the default); the peers "
                   "compute the same four means without intervals")
    print(f"  note: {res['note']}")
    return res


# -- GPT-2 models and prompts --------------------------------------------------------------------------------------
def build_gpt2(L: int, d: int, H: int, seed: int = 0) -> Any:
    """A GPT2LMHeadModel from the zoo's config (72-word vocabulary, n_positions 64), seeded random weights."""
    return build_tiny_lm("gpt2", seed=seed, n_layers=L, d_model=d, n_heads=H)[0]


def build_tl(hf: Any) -> Any:
    """A TransformerLens HookedTransformer holding ``hf``'s weights, no folding or centring (bench/attribution.py)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    c = hf.config
    tl_cfg = HookedTransformerConfig(n_layers=c.n_layer, d_model=c.n_embd, n_ctx=c.n_positions,
                                     d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=4 * c.n_embd,
                                     d_vocab=c.vocab_size, act_fn="gelu_new", normalization_type="LN",
                                     positional_embedding_type="standard", eps=c.layer_norm_epsilon,
                                     init_weights=False, device="cpu")
    tl = HookedTransformer(tl_cfg)
    with torch.no_grad():
        sd = {k: v.detach().clone() for k, v in convert_gpt2_weights(hf, tl_cfg).items()}
    tl.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                   fold_value_biases=False)
    return tl.eval()


def make_pairs(P: int, T: int, V: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """P random clean prompts of T tokens; each corrupted one differs at DIFF_POS only."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, V, (P, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, DIFF_POS] = (clean[:, DIFF_POS] + torch.randint(1, V - 1, (P,), generator=g) - 1) % (V - 1) + 1
    return clean, corrupted


# -- 2 / 3. resid_pre patching maps --------------------------------------------------------------------------------
def bench_map(work: str, size: str, L: int, d: int, H: int, T: int, P: int, reps: int, tl_ok: bool) -> dict:
    hf = build_gpt2(L, d, H)
    V = hf.config.vocab_size
    clean, corrupted = make_pairs(P, T, V)
    c_tok, w_tok = clean[:, DIFF_POS], corrupted[:, DIFF_POS]
    metric = cs.logit_diff(c_tok.tolist(), w_tok.tolist())
    # the T*P patched rows of the peers: row t*P + p is pair p patched at position t
    rows = torch.arange(T * P)
    pos = torch.arange(T).repeat_interleave(P)
    pair = torch.arange(P).repeat(T)
    corr_rows, clean_rows = corrupted[pair], clean[pair]

    def diff_rows(last: torch.Tensor) -> torch.Tensor:  # (T*P, V) last-position logits -> (T,) means over pairs
        return (last[rows, c_tok[pair]] - last[rows, w_tok[pair]]).view(T, P).mean(1)

    def ours() -> Any:
        return cs.activation_patching(cs.load(hf), clean, corrupted, "resid_pre", metric, direction="denoise",
                                      progress=False)

    def ours_value(r: Any) -> torch.Tensor:
        return r.raw.sel(direction="denoise").values

    peers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in ("nnsight", "pyvene", "TransformerLens"):
        if (why := _missing(name)) is not None:
            skipped[name] = why
    if "TransformerLens" not in skipped and not tl_ok:
        skipped["TransformerLens"] = "its logits differ from the HF model's (see above)"
    if "nnsight" not in skipped:
        from nnsight import NNsight

        nn_hf = copy.deepcopy(hf)

        def nnsight_map() -> torch.Tensor:
            nm = NNsight(nn_hf)
            h_clean: dict[int, Any] = {}
            out = torch.empty(L, T)
            with torch.no_grad():
                with nm.trace(clean):
                    for layer in range(L):
                        h_clean[layer] = nm.transformer.h[layer].input.save()
                for layer in range(L):
                    with nm.trace(corr_rows):
                        h = nm.transformer.h[layer].input
                        h[rows, pos] = h_clean[layer][pair, pos]
                        last = nm.output.logits[:, -1].save()
                    out[layer] = diff_rows(last)
            return out

        peers["nnsight"] = (nnsight_map, lambda t: t, 1e-5, 1e-4)
    if "pyvene" not in skipped:
        import pyvene as pv

        pv_hf = copy.deepcopy(hf)
        locs = [[[int(t)] for t in pos]]  # one intervention; per row, the one position it patches

        def pyvene_map() -> torch.Tensor:
            out = torch.empty(L, T)
            with torch.no_grad():
                for layer in range(L):
                    im = pv.IntervenableModel({"layer": layer, "component": "block_input", "unit": "pos"},
                                              model=pv_hf)
                    _, o = im({"input_ids": corr_rows}, [{"input_ids": clean_rows}],
                              {"sources->base": (locs, locs)})
                    out[layer] = diff_rows(o.logits[:, -1])
            return out

        peers["pyvene"] = (pyvene_map, lambda t: t, 1e-5, 1e-4)
    if "TransformerLens" not in skipped:
        from transformer_lens.patching import get_act_patch_resid_pre

        tl = build_tl(hf)
        pr = torch.arange(P)

        def patching_metric(logits: torch.Tensor) -> torch.Tensor:
            return (logits[pr, -1, c_tok] - logits[pr, -1, w_tok]).mean()

        def tl_map() -> torch.Tensor:
            with torch.no_grad():
                _, cache = tl.run_with_cache(clean)
                return get_act_patch_resid_pre(tl, corrupted, cache, patching_metric)

        peers["TransformerLens"] = (tl_map, lambda t: t, 1e-4, 1e-4)
    res = run_row(work, size, ours, ours_value, peers, skipped, reps)
    r = ours()
    res["token_layers"] = int(r.meta.get("token_layers", 0))
    res["map_spread"] = float((ours_value(r) - r.meta["corrupted_metric"]).abs().max())
    res["config"] = {"L": L, "d_model": d, "heads": H, "T": T, "pairs": P, "vocab": V, "diff_position": DIFF_POS}
    print(f"  map spread max|map - corrupted metric| {res['map_spread']:.3g}: the largest atol is "
          f"{1e-4 / res['map_spread']:.1%} of it")
    return res


# -- 4. layer integrated gradients ---------------------------------------------------------------------------------
def bench_ig(size: str, model: Any, inputs: torch.Tensor, baseline: torch.Tensor, site: str, layer: Any,
             forward: Callable[[torch.Tensor], torch.Tensor], target: int, steps: int, reps: int) -> dict:
    def ours() -> Any:
        return cs.integrated_gradients(cs.load(model), inputs, baseline, site, target=target, steps=steps,
                                       method="gausslegendre", progress=False)

    def ours_value(r: Any) -> torch.Tensor:
        return r.attributions

    peers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if (why := _missing("captum")) is not None:
        skipped["captum"] = why
    else:
        from captum.attr import LayerIntegratedGradients

        cap_model = copy.deepcopy(model)
        cap_layer = cap_model.get_submodule(layer)
        batch = len(inputs) * steps

        def captum_ig() -> torch.Tensor:
            lig = LayerIntegratedGradients(lambda x: forward(cap_model, x), cap_layer, multiply_by_inputs=True)
            a = lig.attribute(inputs, baselines=baseline, target=target, n_steps=steps, method="gausslegendre",
                              internal_batch_size=batch)
            return a[0] if isinstance(a, (tuple, list)) else a

        scale = float(ours_value(ours()).abs().max())
        peers["captum"] = (captum_ig, lambda t: t, 1e-4 * max(scale, 1e-12), 1e-3)
    res = run_row(f"layer IG, {steps} steps", size, ours, ours_value, peers, skipped, reps)
    res["site"] = site
    return res


def ig_mlp(steps: int, reps: int) -> dict:
    mlp = build_mlp()
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(2))
    return bench_ig("zoo MLP 16-32-32-4, 64 inputs, site net.2", mlp, x, torch.zeros_like(x), "net.2", "net.2",
                    lambda m, v: m(v), 0, steps, reps)


def ig_gpt2(size: str, L: int, d: int, H: int, T: int, P: int, steps: int, reps: int) -> dict:
    hf = build_gpt2(L, d, H)
    clean, corrupted = make_pairs(P, T, hf.config.vocab_size)
    layer = L // 2
    return bench_ig(f"{size}, T={T}, {P} input(s), site layers.{layer}", hf, clean, corrupted,
                    f"layers.{layer}", f"transformer.h.{layer}", lambda m, ids: m(ids).logits[:, -1],
                    int(clean[0, DIFF_POS]), steps, reps)


# -- the table -----------------------------------------------------------------------------------------------------
def print_table(rows: list[dict]) -> None:
    rule("Summary: peer time / causalscope time (> 1.0: causalscope is faster; < 1.0: the peer is)")
    names = list(PEERS)
    table = [["work", "size", "ours (s)", *names]]
    for r in rows:
        cells = []
        for n in names:
            p = r["peers"].get(n)
            if p is None:
                cells.append("")
            elif "skipped" in p:
                cells.append("left out")
            else:
                cells.append(f"{p['ratio']:.2f}x{'' if p['equal'] else ' DIFFERENT'}")
        table.append([r["work"], r["size"], f"{r['ours_s']:.4f}", *cells])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for k, row in enumerate(table):
        print("| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
              + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 1) + (":" if i >= 2 else "-") for i, w in enumerate(widths)) + "|")
    losses = [(r["work"], r["size"], n, p["ratio"]) for r in rows for n, p in r["peers"].items()
              if "ratio" in p and p["ratio"] < 1.0]
    print(f"\nrows where a peer is faster: {len(losses)}")
    for work, size, n, ratio in losses:
        print(f"  {n} takes {ratio:.2f}x our time on {work} [{size}]")
    left = sorted({f"{n}: {p['skipped']}" for r in rows for n, p in r["peers"].items() if "skipped" in p})
    for why in left:
        print(f"  left out, {why}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="T 8, the GPT-2-small body as L=4 d=256, base reps 1")
    p.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    p.add_argument("--reps", type=int, default=3, metavar="R",
                   help="timed reps of the GPT-2-small-body rows (default 3); the cheaper rows run more: adder "
                        "and MLP 7R, tiny 3R, toy 2R")
    p.add_argument("--pairs", type=int, default=1, metavar="P", help="prompt pairs of the GPT-2 rows (default 1)")
    p.add_argument("--only", default="", help="comma-separated subset of mediation,map,ig")
    args = p.parse_args(argv)
    if args.reps < 1 or args.pairs < 1:
        p.error("--reps and --pairs must be >= 1")
    only = {s.strip() for s in args.only.split(",") if s.strip()} or {"mediation", "map", "ig"}
    if only - {"mediation", "map", "ig"}:
        p.error(f"--only: choose from mediation, map, ig; got {args.only!r}")
    reps = 1 if args.quick else args.reps
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    versions = {"transformers": _version("transformers"), **{n: _version(d) for n, d in PEERS.items()}}
    env = start("1", CPU, args.quick, reps, versions)
    env["git"] = _git_state()
    print(f"causalscope tree: {env['git']}")
    print("torch threads: 1, set by this script for every tool")
    T, Tsmall = (8, 8) if args.quick else (12, 16)
    small = (4, 256, 8) if args.quick else (12, 768, 12)
    small_name = f"GPT-2 L={small[0]} d={small[1]} (quick stand-in)" if args.quick else "GPT-2-small body L=12 d=768"
    P, steps = args.pairs, 32
    tl_ok = _missing("TransformerLens") is None
    if tl_ok:  # the converted TL model must compute the HF model's function
        hf = build_gpt2(4, 64, 4)
        ids = make_pairs(2, T, hf.config.vocab_size)[0]
        with torch.no_grad():
            gap = float((hf(ids).logits - build_tl(hf)(ids)).abs().max())
        tl_ok = gap <= 1e-4
        print(f"TransformerLens vs HF logits on the tiny GPT-2: max |diff| {gap:.1e} ({'ok' if tl_ok else 'NOT ok'})")
    rows: list[dict] = []
    if "mediation" in only:
        rule("1. IIA of variable A at the 6 adder neurons")
        rows.append(bench_mediation(200, 7 * reps))
    if "map" in only:
        rule(f"2. resid_pre patching map (denoise), T={T}, {P} pair(s)")
        rows.append(bench_map("resid_pre patching map", f"tiny GPT-2 L=4 d=64, T={T}", 4, 64, 4, T, P, 3 * reps,
                              tl_ok))
        rows.append(bench_map("resid_pre patching map", f"toy GPT-2 L=6 d=128, T={T}", 6, 128, 4, T, P, 2 * reps,
                              tl_ok))
        rule(f"3. resid_pre patching map (denoise), {small_name}, T={Tsmall}")
        rows.append(bench_map("resid_pre patching map", f"{small_name}, T={Tsmall}", *small, Tsmall, P, reps,
                              tl_ok))
    if "ig" in only:
        rule(f"4. layer integrated gradients, {steps} steps, vs captum")
        rows.append(ig_mlp(steps, 7 * reps))
        rows.append(ig_gpt2("tiny GPT-2 L=4 d=64", 4, 64, 4, T, P, steps, 3 * reps))
        rows.append(ig_gpt2("toy GPT-2 L=6 d=128", 6, 128, 4, T, P, steps, 2 * reps))
        rows.append(ig_gpt2(small_name, *small, Tsmall, P, steps, reps))
    print_table(rows)
    ok = all(p.get("equal", True) for r in rows for p in r["peers"].values())
    results = {"env": env, "rows": rows, "wall_s": time.perf_counter() - t0}
    return finish(results, env, args.json, ok)


if __name__ == "__main__":
    sys.exit(main())
