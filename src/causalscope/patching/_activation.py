"""Activation patching in both directions (denoising and noising), batched at the compute floor."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch

from ..core import (
    Cell,
    Model,
    Site,
    check_align,
    flag_span,
    for_pairs,
    full_rows,
    input_setting,
    is_last_only,
    model_dtype,
    pick_schedule,
    positions_setting,
    resolve_metric,
    seq_len,
    staircase,
    sweep_cells,
    unique_full_sites,
)
from ..errors import InputError, check_flag
from ..loading import load
from ._pairs import Pairs, Part, split_pairs
from ._result import PatchingResult
from ._sharded import is_sharded, per_pair, run_pairs, shard_pairs

Direction = Literal["denoise", "noise", "both"]


def activation_patching(model: Any, clean: Any, corrupted: Any, sites: Any = "resid_pre", metric: Any = None, *,
                        direction: Direction = "both", per: str | None = None,
                        positions: Sequence[int] | None = None, chunk_size: int | None = None,
                        progress: bool | None = None, align: Literal["start", "end"] | None = None,
                        per_example: bool = False,
                        schedule: Literal["auto", "floor", "batched"] = "auto", executor: Any = None,
                        out: str | os.PathLike[str] | None = None, shards: int | None = None) -> PatchingResult:
    """Patch activations between a clean and a corrupted input, at every site of a sweep, in both directions.

    >>> r = cs.activation_patching(m, "the cat sat on the mat", "the dog sat on the mat", "resid_pre",
    ...                            metric=cs.logit_diff(" mat", " rug", model=m))
    >>> r.sel(direction="denoise")          # (layer, position): 0 = corrupted, 1 = clean
    >>> r.asymmetry                          # noise - denoise per cell: > 0 AND-like, < 0 OR-like
    >>> print(r.explain()); r.plot()

    **Denoising** runs the corrupted input and restores one clean activation: score
    ``(m(patched) - m(corrupted)) / (m(clean) - m(corrupted))``: how much of the clean behaviour this
    site alone brings back (is it *sufficient*?). **Noising** runs the clean input and puts in one
    corrupted activation: score ``(m(clean) - m(patched)) / (m(clean) - m(corrupted))``: how much of the
    behaviour is lost (is it *necessary*?). Both are 1 for a site that carries everything and 0 for one
    that carries nothing. ``result.raw`` holds the unnormalised metric values. With several prompt
    pairs the metric is averaged over them (``per_example=True`` keeps one score per pair, on an ``example``
    dim, normalised by the same averaged span, so its mean over examples is the default result).
    ``clean`` / ``corrupted``: prompts, token ids, or dicts of model keyword tensors (``input_ids``, an
    ``attention_mask``, ...), of one shape; padded inputs (a mask with zeros) are refused. Keyword inputs a
    segmented forward cannot rebuild (position ids) run full forwards (``meta["fast_path"]`` False).

    **Pairs of different lengths**: lists of prompts (or token-id lists) whose pairs differ in length (each
    clean prompt as long as its corrupted one) run length by length and combine exactly as the pairs would
    alone, averaged. Site positions are each prompt's own (``-1`` its last token). A position sweep must say
    how positions line up: ``align="end"`` (coordinates -k .. -1, back from each prompt's last token) or
    ``align="start"``; either way every position must exist in the shortest prompt.

    >>> r = cs.activation_patching(m, ["the cat sat on the mat", "a dog ran"], ["the dog sat on the mat",
    ...                            "a cat ran"], "resid_pre", cs.logit_diff(5, 9), align="end")

    ``sites``: a sweep, ``"resid_pre"`` / ``"resid_post"`` / ``"attn"`` / ``"mlp"`` (layer x position of
    the block input, block output, attention or MLP output), ``"heads"`` (layer x head, all positions);
    a list of sites or module names (one cell each, whole activation); or one site with ``per="neuron"``
    / ``"position"`` / ``"head"``. ``positions`` restricts position sweeps. ``metric``: any callable
    ``output -> (rows,)``, e.g. ``cs.logit_diff``, ``cs.prob``; by default the output itself (for
    models with one output per row).

    Cost: every cell is a row of a batched engine run, not a pass of its own. On Hugging Face LMs
    cells inside blocks run only the blocks from the patched one on, only positions from the first one
    that can change (the patched position, and never before the first token where clean and corrupted
    differ), against cached keys / values, with the cells of one position stacked into each block call;
    ``result.meta["token_layers"]`` counts it. The model is not changed.

    **A data set of pairs on many workers**: ``executor=cs.RayExecutor(workers=N)`` spreads the pairs (row ``i``
    of ``clean`` with row ``i`` of ``corrupted``, and a metric's answer ``i``) over Ray workers in ``shards``
    pieces (default: 4 per worker); ``out=folder`` saves each finished shard there and a rerun of the same call
    computes only the missing ones (docs/distributed.md). Each shard runs this computation on its pairs; their
    per-pair values are combined here by the same reduction as one call on all pairs, so the scores are the
    same for any workers or shards. ``meta["executor"]`` says what ran; ``meta["token_layers"]`` sums the
    shards' work and ``first_difference`` / ``schedule_costs`` list each shard's (each shard picks its own
    schedule). The inputs must be several pairs (a list of prompts, token-id lists, a tensor or a dict of keyword
    tensors with the pairs on dim 0); the metric must score each row alone.

    >>> r = cs.activation_patching("facts-gpt", clean_prompts, corrupted_prompts, "resid_pre",
    ...                            cs.logit_diff(answers, wrong, model=m), executor=cs.RayExecutor(workers=2))
    """
    sharded = is_sharded(executor, out, shards)
    m = None if sharded else load(model)
    if direction not in ("denoise", "noise", "both"):
        raise InputError(f"direction must be 'denoise', 'noise' or 'both', got {direction!r}.")
    check_align(align)
    check_flag(per_example, "per_example")
    if progress is not None:
        check_flag(progress, "progress")
    dirs: list[str] = ["denoise", "noise"] if direction == "both" else [str(direction)]
    call = {"sites": sites, "per": per, "positions": positions, "align": align, "chunk_size": chunk_size,
            "schedule": schedule, "per_example": per_example, "direction": direction, "dirs": dirs,
            "clean": clean, "corrupted": corrupted}
    if m is None:
        if schedule not in ("auto", "floor", "batched"):
            raise InputError(f"schedule must be 'auto', 'floor' or 'batched', got {schedule!r}.")
        settings = {"sites": sites, "per": per, "positions": positions, "align": align, "dirs": dirs,
                    "schedule": schedule, "chunk_size": chunk_size}
        got = run_pairs("activation_patching", _shard_values, model, clean, corrupted, metric, settings,
                        executor=executor, out=out, shards=shards, progress=progress)
        first = got.runs[0]  # the sweep as the shard that holds the first pair swept it
        gathered = _Gathered(tuple(first["dims"]), dict(first["coords"]), first["site_names"], got.values, got.clean,
                             got.corrupted, _combined_runs(got.runs))
        return _result(gathered, call, resolve_metric(metric, None), got.plan["model"], got.plan["dtype"],
                       got.plan["meta"], got.plan["tokens"], {"executor": got.info})
    metric_fn = resolve_metric(metric, m)
    pairs = split_pairs(m, clean, corrupted, sites, per, positions, align, "activation_patching")
    gathered = _gather(m, pairs, sites, metric_fn, dirs, per, chunk_size, progress, schedule)
    return _result(gathered, call, metric_fn, m.name, model_dtype(m.module), pairs.meta(), pairs.tokens(m))


@dataclass
class _Gathered:
    """Every pair's metric values in pair order (before any reduction), the sweep and what ran."""

    dims: tuple[str, ...]
    coords: dict[str, list]
    site_names: Any
    raw: torch.Tensor  # (dirs, cells, pairs)
    clean: torch.Tensor  # (pairs,)
    corrupted: torch.Tensor
    run: dict[str, Any]  # first_difference, fast_path, token_layers, schedule, schedule_costs


def _gather(m: Model, pairs: Pairs, sites: Any, metric_fn: Any, dirs: list[str], per: str | None,
            chunk_size: int | None, progress: bool | None, schedule: str) -> _Gathered:
    """Every pair's patched metric per cell (length by length), in the pairs' order."""
    values = [_values(m, part, sites, metric_fn, dirs, per, chunk_size, progress, schedule) for part in pairs.parts]
    dims, coords, cells = values[0].dims, dict(values[0].coords), values[0].cells
    pairs.check_cells([len(v.cells) for v in values])
    if pairs.labels is not None:
        coords["position"] = list(pairs.labels)
    P = sum(v.P for v in values)
    raw_all = pairs.gather([v.raw for v in values], P)
    clean_all, corr_all = pairs.gather([v.clean for v in values], P), pairs.gather([v.corrupted for v in values], P)
    site_names = sites if isinstance(sites, str) else [str(c.site.name) for c in cells]
    fast = [v.fast for v in values]
    run = {"first_difference": values[0].d if len(values) == 1 else [v.d for v in values],
           "fast_path": all(fast), "token_layers": sum(v.token_layers for v in values),
           "schedule": "floor" if all(fast) else "batched" if not any(fast) else "mixed",
           "schedule_costs": [v.costs for v in values]}
    return _Gathered(dims, coords, site_names, raw_all, clean_all, corr_all, run)


def _result(g: _Gathered, call: dict[str, Any], metric_fn: Any, model_name: str, dtype: torch.dtype,
            pairs_meta: dict[str, Any], tokens: Any, extra: dict[str, Any] | None = None) -> PatchingResult:
    """The reduction: every pair's metric values -> scores normalised by the averaged span (mean over pairs, or one
    score per pair with ``per_example``), and the result's meta. One call and its shards both end here."""
    dirs, dims, coords = call["dirs"], g.dims, g.coords
    m_clean, m_corr = float(g.clean.mean()), float(g.corrupted.mean())
    if abs(m_clean - m_corr) < 1e-12 * max(1.0, abs(m_clean)):
        raise InputError(f"The metric is the same on the clean and corrupted inputs ({m_clean:.6g}): there is "
                         f"nothing to patch. Check the inputs and the metric.")
    span = m_clean - m_corr

    def scores(r: torch.Tensor) -> torch.Tensor:  # (dirs, cells, ...) metric values -> patching scores
        return torch.stack([(r[i] - m_corr) / span if n == "denoise" else (m_clean - r[i]) / span
                            for i, n in enumerate(dirs)])

    P = g.raw.shape[-1]
    shape = (len(dirs), *[len(coords[k]) for k in dims])
    raw = g.raw.mean(-1)
    meta: dict[str, Any] = {
            "method": "activation_patching", "model": model_name, "sites": g.site_names, "per": call["per"],
            "positions": positions_setting(call["positions"]), "align": call["align"],
            "chunk_size": call["chunk_size"], "requested_schedule": call["schedule"],
            "per_example": call["per_example"], "metric": repr(metric_fn), "direction": call["direction"],
            "clean": input_setting(call["clean"]), "corrupted": input_setting(call["corrupted"]),
            "clean_metric": m_clean, "corrupted_metric": m_corr, "raw": raw.view(shape).tolist(),
            "n_prompts": P, **g.run, "title": f"activation patching ({', '.join(dirs)})"}
    meta.update(pairs_meta)  # pairs of different lengths: lengths (tokens: pairs) and align
    flag_span(meta, span, m_clean, m_corr, dtype, "activation_patching")
    meta.update(extra or {})
    if call["per_example"]:
        meta["raw"] = g.raw.view(*shape, P).tolist()
        return PatchingResult(scores(g.raw).reshape(*shape, P), ("direction", *dims, "example"),
                              {"direction": dirs, **coords, "example": list(range(P))}, meta,
                              name="patching score").with_tokens(tokens)
    return PatchingResult(scores(raw).view(shape), ("direction", *dims), {"direction": dirs, **coords}, meta,
                          name="patching score").with_tokens(tokens)


def _shard_values(m: Model, clean: Any, corrupted: Any, metric_fn: Any,
                  s: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One shard of pairs (on a worker): every pair's metric values as :func:`_gather` computes them for a call, and
    the shard's sweep and what ran."""
    pairs = shard_pairs(m, clean, corrupted, s["sites"], s["per"], s["positions"], s["align"], "activation_patching",
                        s["labels"])
    g = _gather(m, pairs, s["sites"], metric_fn, s["dirs"], s["per"], s["chunk_size"], False, s["schedule"])
    return per_pair(g.raw, g.clean, g.corrupted), {"dims": list(g.dims), "coords": g.coords,
                                                     "site_names": g.site_names, **g.run}


def _combined_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the shards ran, together: token-layers summed, each shard's first difference and costs listed."""
    if len(runs) == 1:
        return {k: runs[0][k] for k in ("first_difference", "fast_path", "token_layers", "schedule", "schedule_costs")}
    kinds = {r["schedule"] for r in runs}
    return {"first_difference": [r["first_difference"] for r in runs], "fast_path": all(r["fast_path"] for r in runs),
            "token_layers": sum(int(r["token_layers"]) for r in runs),
            "schedule": kinds.pop() if len(kinds) == 1 else "mixed",
            "schedule_costs": [c for r in runs for c in r["schedule_costs"]]}


@dataclass
class _Values:
    dims: tuple[str, ...]
    coords: dict[str, list]
    cells: list[Cell]
    raw: torch.Tensor  # (dirs, cells, pairs)
    clean: torch.Tensor  # (pairs,)
    corrupted: torch.Tensor
    P: int
    d: int
    fast: bool
    token_layers: int
    costs: dict[str, Any] | None = None  # the schedules' estimated costs, where both could run


def _values(m: Model, part: Part, sites: Any, metric_fn: Any, dirs: list[str], per: str | None,
            chunk_size: int | None, progress: bool | None, schedule: str = "auto") -> _Values:
    """Every cell's patched metric per pair (both directions asked), for pairs of one length."""
    metric_fn = for_pairs(metric_fn, part.index)  # one answer per pair: each row reads its own pair's
    clean_in, corr_in = part.clean, part.corrupted
    T = seq_len(clean_in)
    dims, coords, cells = sweep_cells(m, sites, per, part.positions, T, clean_in)
    if not cells:
        raise InputError("The sweep has no cells.")
    fast, d, costs = pick_schedule(m, cells, clean_in, corr_in, T, schedule)
    L = int(m.n_layers or 0)
    key_sites = unique_full_sites(cells)
    extra = [Site(f"layers.{i}", io="input") for i in range(L)] if fast else []
    keep_out = fast and not is_last_only(metric_fn)
    runs = {name: m.run(inp, cache=key_sites + extra, metric=metric_fn, keep_kv=fast, keep_output=keep_out,
                        chunk_size=chunk_size)
            for name, inp in (("clean", clean_in), ("corrupted", corr_in))}
    # both runs were given a metric
    y_clean, y_corr = (cast(torch.Tensor, runs[k].metric).float().cpu() for k in ("clean", "corrupted"))
    P = runs["clean"].n_rows
    raw = torch.zeros(len(dirs), len(cells), P)
    token_layers = 0
    for i, name in enumerate(dirs):
        base, source = (runs["corrupted"], runs["clean"]) if name == "denoise" else (runs["clean"], runs["corrupted"])
        base_in = corr_in if name == "denoise" else clean_in
        if fast:
            vals, tl = staircase(m, cells, base, source, P, T, d, metric_fn, progress, name, chunk_size)
        else:
            vals, tl = full_rows(m, cells, base_in, source, P, metric_fn, chunk_size, progress)
        raw[i] = vals.float().cpu()
        token_layers += tl
    return _Values(dims, coords, cells, raw, y_clean, y_corr, P, d, fast, token_layers, costs)
