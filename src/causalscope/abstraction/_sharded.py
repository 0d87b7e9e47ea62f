"""The abstraction family's methods in shards: a data set's pairs, fixed here, split over an executor (in process
or Ray workers), every shard's per-pair values computed where it runs, checkpointed with ``out=``.

>>> values, flags, info = run_pairs(shard_effects, args, model="adder", base=ds.base, source=ds.source,
...                                 extra=None, ex=check_executor(None), method="mediation", settings={},
...                                 out=None, shards=3)
>>> values.shape[-1] == len(ds)          # every pair's values, in pair order, on the last dim
True

The pairs are fixed in this process before sharding (a data set drawn with the call's ``n`` and ``seed`` is
drawn once, here), so every number of shards sees the same pairs. A shard's function ``compute(model, base,
source, extra, args, first, k)`` returns its ``k`` pairs' values on a last dim (``first``: the index of its
first pair among all pairs) and a dict of flags; the values come back in pair order, and the method reduces
them here (means, the seeded bootstrap) with the one reduction its call without shards uses. Inputs that do
not split into pairs exactly, and metrics that would read other answers in a shard, are refused.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core import Model, callable_setting
from ..errors import ExecutionError, InputError
from ..executors import Executor, run_sharded

__all__ = ["Options", "ShardArgs", "Summary", "callable_key", "check_pair_metric", "join_rows", "metric_setting",
           "pair_rows", "run_pairs"]

PairFn = Callable[[Model, Any, Any, torch.Tensor | None, Any, int, int], tuple[torch.Tensor, dict[str, Any]]]


# -- the plain data of a sharded mediation call, between this process and the workers -------------------------------
@dataclass
class Options:
    """The arguments of :func:`mediation` that decide every pair's values besides the model and the pairs."""

    sites: Any
    per: str | None
    positions: Sequence[int] | None
    align: str | None
    metric: Any
    tol: float
    chunk_size: int | None
    schedule: str


@dataclass
class Summary:
    """What a mediation result needs besides the values, as plain data (it comes back from a worker)."""

    model: str
    metric: str
    dims: tuple[str, ...]
    coords: dict[str, list]
    cells: list[tuple]
    site_names: list[str]
    fast: list[bool]
    groups: dict[int, list[int]] | None
    labels: list[int] | None
    tokens: list[list[str]] | None


@dataclass
class ShardArgs:
    """What every shard of a sharded mediation call computes with: the options and what was fixed over all pairs."""

    options: Options
    n_pairs: int
    lengths: list[int] | None           # each pair's token length (pairs of different lengths), else None
    labels: list[int] | None            # the aligned position labels
    schedules: dict[int | None, str]    # each length group's schedule (None: all pairs), as the plan chose it
    n_cells: int


_HOW = "leave executor=, out= and shards= out to run the call in one piece"


def run_pairs(compute: PairFn, args: Any, *, model: Any, base: Any, source: Any, extra: torch.Tensor | None,
              ex: Executor, method: str, settings: dict[str, Any], out: str | os.PathLike[str] | None,
              shards: int | None) -> tuple[torch.Tensor, list[dict[str, Any]], dict[str, Any]]:
    """Every pair's values ``(..., pairs)`` in pair order, each shard's flags (one dict per pair) and what ran.

    ``base`` / ``source``: the pairs' inputs (see :func:`pair_rows`); ``extra``: per-pair data with the pairs
    on its last dim (labels), handed to each shard as its own columns. ``compute`` and ``args`` travel to the
    workers (``compute`` a module-level function); ``settings`` (JSON-able) key the ``out=`` checkpoint.
    """
    b_rows, b_kind = pair_rows(base, "base", method)
    s_rows, s_kind = pair_rows(source, "source", method)
    if len(b_rows) != len(s_rows):
        raise InputError(f"{method}: {len(b_rows)} base inputs and {len(s_rows)} source ones; give one source per "
                         f"base.")
    if extra is not None and extra.shape[-1] != len(b_rows):
        raise InputError(f"{method}: the inputs hold {len(b_rows)} pairs but there are {extra.shape[-1]} labels; "
                         f"give one input row per pair (a causal model's encode returns one row per input row).")
    items: list[tuple[Any, ...]] = [(b, s) if extra is None else (b, s, extra[..., i].clone())
                                    for i, (b, s) in enumerate(zip(b_rows, s_rows))]
    results, info = run_sharded(_pairs_shard, items, model=model, context=(compute, args, b_kind, s_kind),
                                method=method, settings=settings, executor=ex, out=out, shards=shards)
    values = torch.stack([r["values"] for r in results], -1)
    flags = [{k: v for k, v in r.items() if k != "values"} for r in results]
    return values, flags, info


def _pairs_shard(m: Model, items: list[tuple[Any, ...]], context: tuple[PairFn, Any, str, str],
                 first: int) -> list[dict[str, Any]]:
    """One shard's pairs: ``{"values": tensor, **flags}`` per pair (its values, the shard's flags)."""
    compute, args, b_kind, s_kind = context
    base = join_rows([it[0] for it in items], b_kind)
    source = join_rows([it[1] for it in items], s_kind)
    extra = torch.stack([it[2] for it in items], -1) if len(items[0]) > 2 else None
    values, flags = compute(m, base, source, extra, args, first, len(items))
    if values.shape[-1] != len(items):
        raise ExecutionError(f"the shard from pair {first} computed {values.shape[-1]} pairs of {len(items)}.")
    values = values.detach().cpu()
    return [{"values": values[..., j].clone(), **flags} for j in range(len(items))]


def pair_rows(x: Any, what: str, method: str) -> tuple[list[Any], str]:
    """``x`` as one entry per pair, and how :func:`join_rows` puts entries back into one input.

    >>> pair_rows(torch.zeros(4, 3), "base", "mediation")[1], pair_rows(["a b", "c d"], "base", "mediation")[1]
    ('tensor', 'list')

    A tensor splits along its first dim (1-D token ids are one prompt), a list of prompts or of token-id
    lists into its entries, one prompt is one pair. Anything else (a dict of model keyword tensors, a tuple of
    several input tensors, a list of tensors) is refused: its rows cannot be told apart without guessing.
    """
    if isinstance(x, str):
        return [x], "one"
    if isinstance(x, torch.Tensor):
        if x.ndim == 1 and not x.is_floating_point() and x.dtype != torch.bool:
            return [x.clone()], "one"  # one prompt's token ids
        if x.ndim >= 1 and len(x):
            return [r.clone() for r in x], "tensor"  # own storage: a shard ships its rows, not the whole tensor
    elif isinstance(x, (list, tuple)) and x and (
            all(isinstance(s, str) for s in x)
            or all(isinstance(s, (list, tuple)) and s and all(isinstance(i, int) and not isinstance(i, bool) for i in s)
                   for s in x)):
        return list(x), "list"
    if isinstance(x, torch.Tensor):
        got = f"a {tuple(x.shape)} tensor"
    elif isinstance(x, dict):
        got = f"a dict with keys {list(x)[:6]}"
    elif isinstance(x, (list, tuple)):
        got = f"a {type(x).__name__} of {len(x)} ({', '.join(sorted({type(v).__name__ for v in x}))})"
    else:
        got = f"a {type(x).__name__}"
    raise InputError(f"{method} with executor=, out= or shards= splits the data into its pairs, so the {what} input "
                     f"must be a tensor with one row per pair, a list of prompts or a list of token-id lists; got "
                     f"{got}. Pass it so (e.g. input_ids as one tensor), or {_HOW}.")


def join_rows(rows: list[Any], kind: str) -> Any:
    """A shard's entries of :func:`pair_rows` as one input again."""
    if kind == "one":
        return rows[0]
    if kind == "tensor":
        return torch.stack(rows)
    return list(rows)


def check_pair_metric(metric: Any, n_pairs: int, method: str, answers_per_pair: bool = True) -> None:
    """Refuse a metric whose numbers would change when its pairs are split into shards.

    >>> check_pair_metric(cs.logit_diff([5, 6, 7], [9, 3, 1]), 3, "mediation")      # one answer per pair: fine

    A metric with one answer per pair reads each pair's answer by its place among all pairs, which a shard
    keeps (``answers_per_pair``: the method passes each row's pair); another number of answers, or a metric
    that reads row indices of its own (``takes_input_index`` without ``n_answers``), would read other rows.
    """
    n = getattr(metric, "n_answers", None)
    if n is not None and int(n) > 1 and (not answers_per_pair or int(n) != n_pairs):
        want = f"one answer for all pairs or one per pair ({n_pairs})" if answers_per_pair else \
            "one answer for all pairs"
        raise InputError(f"{method} with executor=, out= or shards=: the metric {metric!r:.60} has {int(n)} answers "
                         f"for {n_pairs} pairs, which a shard cannot line up with its own pairs; give {want}, "
                         f"or {_HOW}.")
    if n is None and getattr(metric, "takes_input_index", False):
        raise InputError(f"{method} with executor=, out= or shards=: the metric {metric!r:.60} reads each row's input "
                         f"index (takes_input_index), which a shard numbers from its own first pair; give answers as "
                         f"cs.logit_diff([...], [...]) does (one per pair), or {_HOW}.")


def metric_setting(metric: Any) -> Any:
    """A metric as the ``out=`` manifest shows it: its name or repr, never an address (which would change the
    checkpoint key from one process to the next; :func:`callable_key` holds what tells metrics apart).

    >>> metric_setting(lambda y: y), metric_setting(cs.logit(5))
    ('<lambda>', 'logit(5)')
    """
    text = callable_setting(metric)
    return type(metric).__qualname__ if isinstance(text, str) and " at 0x" in text else text


def callable_key(fn: Any, depth: int = 0) -> Any:
    """The data a callable's numbers depend on, for the ``out=`` checkpoint key: a function with its closure's
    values and defaults, a callable object with its attributes (recursively, a few levels).

    >>> callable_key(None) is None
    True

    The key's fingerprint reads a function's code but not the values it closes over; two metrics
    ``lambda y: y[:, k]`` with other ``k`` must not share a checkpoint.
    """
    if fn is None or depth > 3:
        return fn
    if callable(fn) and hasattr(fn, "__code__"):
        cells = []
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                cells.append(callable_key(cell.cell_contents, depth + 1))
            except ValueError:  # an empty cell
                cells.append(None)
        defaults = getattr(fn, "__defaults__", None)
        return {"function": fn, "closure": cells, "defaults": list(defaults or ())}
    attrs = getattr(fn, "__dict__", None)
    if callable(fn) and not isinstance(fn, type) and isinstance(attrs, dict) and not isinstance(fn, (Model,
                                                                                                   torch.nn.Module)):
        return {"type": type(fn).__qualname__,
                "attributes": {str(k): callable_key(v, depth + 1) for k, v in attrs.items()}}
    return fn
