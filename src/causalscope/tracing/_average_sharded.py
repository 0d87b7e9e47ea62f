"""trace_average's facts in shards, on an executor (in process or Ray), checkpointed with ``out=``.

>>> by_fact, skipped, counts, info = sharded_traces("facts-gpt", items, settings, RayExecutor(workers=2), None,
...                                                 None, None)

A shard traces its facts with the schedule asked for (grouped or per fact) on the worker's model; every fact's
noise comes from the run's seed alone, so a fact's traces are the same in any shard on any worker (up to float
rounding of the batches it shares). The facts are first ordered by shape (prompt length, longest first, and
subject span, looked up on a worker) so that facts of one shape fall in the same shards and share their passes
there as they do in one process, and the shards are cut to equal expected cost (per fact: a fixed cost plus
the square of its tokens from the subject on); the results come back in the facts' order. ``noise`` in the
settings is already a number or a tensor (the multiple of the embedding std is resolved over *all* facts before
sharding).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import torch

from ..core import Model, SegmentedLM, tqdm
from ..errors import InputError
from ..executors import Executor, run_sharded
from ._grouped import grouped_traces
from ._trace import Kind, TraceResult, _lm, causal_trace, subject_range


def sharded_traces(model: Any, items: list[tuple[str, str, str | None]], settings: dict[str, Any], ex: Executor,
                   out: str | os.PathLike[str] | None, shards: int | None, progress: bool | None,
                   ) -> tuple[list[dict[str, TraceResult] | None], list[dict], dict[str, int], dict[str, Any]]:
    """Every fact's traces by kind (None where skipped), the skipped facts, counts and what ran."""
    saved = dict(settings)
    if isinstance(saved["noise"], torch.Tensor):  # the run key holds the tensor's data; the manifest its shape
        saved["noise"] = f"tensor{tuple(saved['noise'].shape)}"
    # facts of one shape in the same shards (so that they share passes there), the costliest first, and shards of
    # equal cost (a fact's floor schedule runs about T^2 token-layers for a T-token prompt)
    order, weights = ex.call(model, _shape_order, items)
    results, info = run_sharded(_trace_shard, [items[i] for i in order], model=model, context=settings,
                                method="trace_average",
                                settings={**saved, "noise_data": settings["noise"]} if out is not None else saved,
                                executor=ex, out=out, shards=shards, progress=progress,
                                weights=[weights[i] for i in order])
    results = [results[pos] for pos in sorted(range(len(order)), key=order.__getitem__)]  # back in item order
    by_fact = [r.get("traces") for r in results]
    skipped = [r["skipped"] for r in results if "skipped" in r]
    counts = {"fact_groups": sum(int(r.get("fact_groups", 0)) for r in results)}
    return by_fact, skipped, counts, info


def _shape_order(m: Model, items: list[tuple[str, str, str | None]]) -> tuple[list[int], list[float]]:
    """The facts' indices sorted (stably) by prompt length (longest first) and subject span: the grouped schedule's
    groups; and each fact's expected cost."""
    m, lm = _lm(m)
    keys: list[tuple[int, int, int]] = []
    for prompt, subject, _ in items:
        try:
            b, e = subject_range(m, prompt, subject)
            keys.append((-int(lm.tokenize(prompt).shape[1]), b, e))
        except InputError:  # the shard that holds it raises (or skips it) as trace_average does in process
            keys.append((0, 0, 0))
    # the floor schedule restores cells from the subject's first token b on, each re-running the tokens after it;
    # plus a fixed cost per fact (its clean and corrupted rows, its answer), measured at about 30 such cells
    return sorted(range(len(items)), key=keys.__getitem__), [30.0 + max(0, -k[0] - k[1]) ** 2 for k in keys]


def _trace_shard(m: Model, items: list[tuple[str, str, str | None]], s: dict[str, Any], first: int) -> list[Any]:
    """One shard's facts: ``{"traces": {kind: TraceResult}}`` or ``{"skipped": {...}}`` per fact (the shard's
    first fact also counts the shard's groups of facts traced together)."""
    m, lm = _lm(m)
    args = (s["kinds"], s["samples"], s["noise"], s["window"], s["seed"], s["require_correct"])
    if s["schedule"] == "grouped":
        by_fact, skipped, counts = grouped_traces(m, lm, items, *args, False)
    else:
        by_fact, skipped = per_fact_traces(m, lm, items, *args, False)
        counts = {"fact_groups": sum(t is not None for t in by_fact)}
    out: list[dict[str, Any]] = []
    lost = iter(skipped)
    for traces in by_fact:
        out.append({"traces": traces} if traces is not None else {"skipped": next(lost)})
    if out:
        out[0]["fact_groups"] = counts["fact_groups"]
    return out


def per_fact_traces(m: Model, lm: SegmentedLM, items: list[tuple[str, str, str | None]], kinds: Sequence[Kind],
                    samples: int, noise: Any, window: int, seed: int, require_correct: bool,
                    progress: bool) -> tuple[list[dict[str, TraceResult] | None], list[dict]]:
    """Every fact's traces by kind (None where skipped) from :func:`causal_trace`, fact by fact, and the skipped."""
    out: list[dict[str, TraceResult] | None] = []
    skipped = []
    for prompt, subject, answer in tqdm(items, desc="trace_average", unit="fact", disable=not progress):
        ids = lm.tokenize(prompt)
        if answer is not None and require_correct:
            logits = cast(torch.Tensor, m.run(ids).output)  # no metric, so the run keeps its output
            pred = m.tokenizer.decode([int(logits[0, -1].argmax())]).strip()
            if pred != str(answer).strip():
                skipped.append({"prompt": prompt, "answer": answer, "predicted": pred})
                out.append(None)
                continue
        out.append({k: causal_trace(m, prompt, subject, kind=k, samples=samples, noise=noise, window=window,
                                    seed=seed) for k in kinds})
    return out, skipped
