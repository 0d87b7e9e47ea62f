"""A method's dataset in shards: planned, reused from ``out=``, run by an executor, one progress bar over items.

>>> results, info = run_sharded(trace_shard, facts, model="facts-gpt", context=settings, method="trace_average",
...                             settings=settings, executor=RayExecutor(workers=2), out="runs/facts")

``results`` has one entry per item, in item order, whatever ran where; ``info`` says what ran (executor,
workers, shards, shards reused from ``out``, retries) and goes into the result's ``meta["executor"]``.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..core import Model, tqdm
from ..errors import InputError, check_flag, check_int
from ..loading import ModelSpec
from ._base import Executor, Job, Progress, ShardFn
from ._fingerprint import fingerprint, model_fingerprint
from ._local import InProcessExecutor
from ._store import Shard, ShardStore, check_out

__all__ = ["check_executor", "check_model", "default_shards", "plan_shards", "run_sharded"]

#: a shard is at most this many items by default (a checkpoint at least every so many items)
MAX_SHARD_ITEMS = 256


def check_executor(executor: Any) -> Executor:
    """``executor`` as an :class:`Executor` (``None``: in process)."""
    if executor is None:
        return InProcessExecutor()
    if not isinstance(executor, Executor):
        raise InputError(f"executor must be None (in process), causalscope.RayExecutor(...) or "
                         f"causalscope.InProcessExecutor(); got {type(executor).__name__}.")
    return executor


def check_model(model: Any) -> None:
    """``model`` is something :func:`causalscope.load` takes (checked here, before any worker starts): a
    :class:`~causalscope.Model`, an ``nn.Module``, a non-empty name / folder / Hub id, or a
    :class:`~causalscope.ModelSpec` of one of these."""
    source = model.source if isinstance(model, ModelSpec) else model
    what = "ModelSpec's source" if isinstance(model, ModelSpec) else "model"
    ok = isinstance(source, (Model, nn.Module)) or (isinstance(source, (str, os.PathLike)) and str(source).strip())
    if not ok:
        raise InputError(f"{what} must be a bundled model name, a local Hugging Face folder, a Hub id, an nn.Module "
                         f"or a causalscope.Model (a ModelSpec wraps one of these); got {type(source).__name__} "
                         f"{source!r:.60}.")
    if isinstance(model, ModelSpec):
        if model.name is not None and not isinstance(model.name, str):
            raise InputError(f"ModelSpec's name must be a string (or None), got {model.name!r:.40}.")
        check_flag(model.generic, "ModelSpec's generic")


def default_shards(n_items: int, workers: int) -> int:
    """Four shards per worker (so a slow or lost shard costs little), each at most ``MAX_SHARD_ITEMS`` items."""
    return max(1, min(n_items, max(4 * workers, math.ceil(n_items / MAX_SHARD_ITEMS))))


def plan_shards(n_items: int, n_shards: int, weights: Sequence[float] | None = None) -> list[tuple[int, int]]:
    """``n_shards`` contiguous ranges ``[start, stop)`` covering ``n_items``: sizes differing by at most one, or,
    with ``weights`` (an item's expected cost), totals of weight as equal as contiguous ranges allow.

    >>> plan_shards(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    >>> plan_shards(4, 2, weights=[9, 1, 1, 1])
    [(0, 1), (1, 4)]
    """
    n_shards = max(1, min(n_shards, n_items))
    if weights is not None:
        return _weighted_plan(n_items, n_shards, [float(w) for w in weights])
    base, extra = divmod(n_items, n_shards)
    out, start = [], 0
    for i in range(n_shards):
        stop = start + base + (i < extra)
        out.append((start, stop))
        start = stop
    return out


def _weighted_plan(n_items: int, n_shards: int, weights: list[float]) -> list[tuple[int, int]]:
    if len(weights) != n_items or any(not w >= 0 for w in weights):
        raise InputError(f"shard weights must be {n_items} numbers >= 0; got {len(weights)}.")
    total = sum(weights) or 1.0
    cuts, acc, k = [0], 0.0, 1
    for i, w in enumerate(weights):
        acc += w
        # cut after item i once the shards so far hold their share, leaving an item for every shard to come
        if k < n_shards and acc >= total * k / n_shards and n_items - (i + 1) >= n_shards - k:
            cuts.append(i + 1)
            k += 1
    while len(cuts) < n_shards:  # too few cuts (heavy last items): split the largest ranges
        spans = [(cuts[j + 1] if j + 1 < len(cuts) else n_items) - cuts[j] for j in range(len(cuts))]
        j = max(range(len(spans)), key=spans.__getitem__)
        cuts.insert(j + 1, cuts[j] + spans[j] // 2)
    cuts.append(n_items)
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False)]


def run_sharded(fn: ShardFn, items: Sequence[Any], *, model: Any, context: Any, method: str,
                settings: dict[str, Any], executor: Any = None, out: str | os.PathLike[str] | None = None,
                shards: int | None = None, progress: bool | None = None,
                weights: Sequence[float] | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Every item's result (in order) and what ran (see the module docstring).

    ``settings`` (JSON-able) are the arguments that decide the results besides the model and the items: with
    ``out=``, a rerun with the same model, items and settings reuses the finished shards there. ``weights`` (an
    item's expected cost) make shards of equal cost instead of equal size, so that no worker waits on a heavy
    last shard.
    """
    ex = check_executor(executor)
    items = list(items)
    if not items:
        raise InputError(f"{method}: no items to run; give at least one.")
    if shards is not None:
        check_int(shards, "shards", low=1, hint="It is the number of pieces the items are split into.")
    if progress is not None:
        check_flag(progress, "progress")
    check_out(out)
    check_model(model)
    key = "none" if out is None else fingerprint([method, settings, model_fingerprint(model), items])
    store = ShardStore(out, method=method, key=key, settings=settings)
    # a rerun into the same folder keeps that run's shards unless asked otherwise, whatever its workers
    n_shards = shards or store.planned or default_shards(len(items), ex.workers)
    store.write_manifest(n_shards)
    plan = [Shard(i, a, items[a:b]) for i, (a, b) in enumerate(plan_shards(len(items), n_shards, weights))]
    store.name_shards(plan)
    results: list[Any] = [None] * len(items)
    todo = []
    for shard in plan:
        got = store.load(shard)
        if got is None:
            todo.append(shard)
        else:
            results[shard.start:shard.stop] = got
    reused = len(plan) - len(todo)
    if reused:
        tqdm.write(f"causalscope: {method}: reused {reused} of {len(plan)} finished shards from {str(out)!r} "
                   f"({len(items) - sum(len(s.items) for s in todo)} of {len(items)} items); computing "
                   f"{len(todo)}", file=sys.stderr)
    show = progress if progress is not None else len(items) > 5
    bar = tqdm(total=len(items), initial=len(items) - sum(len(s.items) for s in todo), desc=method, unit="item",
               disable=not show)

    progress_ = Progress(bar)

    def done(shard: Shard, res: list[Any]) -> None:
        store.save(shard, res)
        results[shard.start:shard.stop] = res
        progress_.finish(shard)

    try:
        report = ex.run_shards(Job(fn, context, model, method), todo, done, progress_) if todo else None
    finally:
        bar.close()
    info = {**ex.describe(), "shards": len(plan), "reused_shards": reused, "computed_shards": len(todo),
            "retries": report.retries if report else [], "out": None if out is None else str(out)}
    return results, info
