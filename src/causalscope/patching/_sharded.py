"""The patching methods' prompt pairs in shards, on an executor (in process or Ray), checkpointed with ``out=``.

>>> got = run_pairs("activation_patching", shard_fn, "facts-gpt", clean, corrupted, metric, settings,
...                 executor=cs.RayExecutor(workers=2), out="runs/patching", shards=None, progress=None)
>>> got.values.shape, got.info["shards"]                     # (..., pairs): every pair's values, in pair order

The items are the prompt pairs: row ``i`` of ``clean`` with row ``i`` of ``corrupted`` (prompts, token-id lists,
rows of a tensor or of a dict of keyword tensors). A shard runs the method's own per-pair computation on its pairs
(``compute(model, clean, corrupted, metric, settings)``, the same function the unsharded call runs on all pairs)
and returns each pair's values before any reduction; the lead process stacks them in pair order and applies the
method's one reduction. What a reduction needs from the whole run besides the numbers (the model's name and number
format, the position labels of pairs of different lengths, the prompts' tokens) is planned once, where the model
is (``executor.call``), before the shards run, and each shard sweeps the positions of that plan.

A metric with one answer per pair (``cs.logit_diff([...], [...])``, ``cs.logit``, ``cs.prob``) reads pair
``first + i``'s answer for the shard's pair ``i`` (:class:`ShardMetric`), so each pair is scored against its own
answer in any shard. A metric that reads row indices in another way is refused: its rows cannot be matched to
pairs across shards.
"""
from __future__ import annotations

import functools
import os
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core import (
    Model,
    call_metric,
    is_last_only,
    model_dtype,
    positions_setting,
    resolve_metric,
    seq_len,
    sweep_cells,
)
from ..core import takes_lengths as metric_takes_lengths
from ..errors import InputError
from ..executors import check_executor, fingerprint, run_sharded
from ._pairs import Pairs, split_pairs

#: ``compute(model, clean, corrupted, metric, settings)``: every pair's values (a list, one dict per pair: "values",
#: "clean", "corrupted") and the shard's account of its sweep and of what ran
Compute = Callable[[Model, Any, Any, Any, dict[str, Any]], tuple[list[dict[str, Any]], dict[str, Any]]]

_FORMS = ("a list of prompts, a list of token-id lists, a (pairs, tokens) tensor of token ids, a tensor with one "
          "input per row, or a dict of keyword tensors with the pairs on dim 0")


@dataclass
class ShardedPairs:
    """Every pair's values from the shards, in pair order, and what ran."""

    values: torch.Tensor  # (..., pairs): each pair's values before the reduction
    clean: torch.Tensor  # (pairs,): the metric on each clean input
    corrupted: torch.Tensor  # (pairs,): the metric on each corrupted input
    runs: list[dict[str, Any]]  # each shard's account (its sweep's dims / coords, what ran), in shard order
    plan: dict[str, Any]  # the whole run: model name and number format, aligned labels, pairs meta, tokens
    info: dict[str, Any]  # meta["executor"]


def is_sharded(executor: Any, out: Any, shards: Any) -> bool:
    """Whether a call asked for the sharded path (any of ``executor``, ``out``, ``shards`` given)."""
    return executor is not None or out is not None or shards is not None


def run_pairs(method: str, compute: Compute, model: Any, clean: Any, corrupted: Any, metric: Any,
              settings: dict[str, Any], *, executor: Any, out: str | os.PathLike[str] | None, shards: int | None,
              progress: bool | None) -> ShardedPairs:
    """The pairs of ``clean`` / ``corrupted`` in shards (see the module docstring). ``settings`` (picklable) go to
    ``compute``; they hold ``sites``, ``per``, ``positions`` and ``align``, and all but ``chunk_size`` decide the
    checkpoint key with ``out=``."""
    ex = check_executor(executor)
    items = pair_items(clean, corrupted, method)
    metric_fn = resolve_metric(metric, None)
    check_metric(metric_fn, len(items), method)
    key = _key(settings, metric_fn, out)
    plan = ex.call(model, _plan, clean, corrupted, settings["sites"], settings["per"], settings["positions"],
                   settings["align"], method)
    context = (compute, metric_fn, {**settings, "labels": plan["labels"]})
    results, info = run_sharded(_pairs_shard, items, model=model, context=context, method=method,
                                settings=key, executor=ex, out=out, shards=shards,
                                progress=progress)
    shapes = {tuple(r["values"].shape) for r in results}
    if len(shapes) != 1:
        raise InputError("The sweep has a different number of cells for prompts of different lengths; give "
                         "sites that every prompt has.")
    return ShardedPairs(torch.stack([r["values"] for r in results], -1),
                        torch.tensor([r["clean"] for r in results], dtype=torch.float32),
                        torch.tensor([r["corrupted"] for r in results], dtype=torch.float32),
                        [r["run"] for r in results if "run" in r], plan, info)


def per_pair(values: torch.Tensor, clean: torch.Tensor, corrupted: torch.Tensor) -> list[dict[str, Any]]:
    """A shard's values (pairs on the last dim) as one dict per pair, the form :func:`run_pairs` stacks back."""
    return [{"values": values[..., i].clone(), "clean": float(clean[i]), "corrupted": float(corrupted[i])}
            for i in range(values.shape[-1])]


def shard_pairs(m: Model, clean: Any, corrupted: Any, sites: Any, per: str | None, positions: Sequence[int] | None,
                align: str | None, method: str, labels: list[int] | None) -> Pairs:
    """A shard's pairs length by length, as ``split_pairs`` splits them; where the whole run lines up positions
    over several lengths (``labels``), every part sweeps the positions of those labels, whatever lengths the shard
    holds, as the part of its length does in the unsharded call."""
    pairs = split_pairs(m, clean, corrupted, sites, per, positions, align, method)
    if labels is None:
        return pairs
    for part in pairs.parts:
        T = seq_len(part.clean)
        part.positions = list(labels) if align == "start" else [T + o for o in labels]
    return Pairs(pairs.parts, list(labels), pairs.groups, align)


# ---------------------------------------------------------------------------------------------------- the items

def pair_items(clean: Any, corrupted: Any, method: str) -> list[tuple[Any, Any]]:
    """``(clean row, corrupted row)`` for every pair; an :class:`InputError` where the inputs are one pair or cannot
    be split by row."""
    rows = [_rows(x, what, method) for x, what in ((clean, "clean"), (corrupted, "corrupted"))]
    if len(rows[0]) != len(rows[1]):
        raise InputError(f"{method}: {len(rows[0])} clean and {len(rows[1])} corrupted inputs; give one corrupted "
                         f"input per clean one (row i of each is pair i).")
    if len(rows[0]) < 2:
        raise InputError(f"{method} with executor=, out= or shards= spreads prompt pairs over shards, but the inputs "
                         f"are a single pair. Pass several pairs ({_FORMS}), or leave executor, out and shards out "
                         f"to run this pair in process.")
    return list(zip(rows[0], rows[1], strict=True))


def _rows(x: Any, what: str, method: str) -> list[Any]:
    """The rows of one side of the pairs, each in a form :func:`_join` stacks back."""
    if isinstance(x, str):
        return [x]
    if isinstance(x, torch.Tensor):
        if x.ndim == 0:
            raise InputError(f"{method}: the {what} input is a 0-d tensor; give it a batch dim (pairs on dim 0).")
        if x.ndim == 1 and not x.is_floating_point() and x.dtype != torch.bool:
            return [x]  # one prompt's token ids
        return [x[i:i + 1].clone() for i in range(x.shape[0])]
    if isinstance(x, Mapping):
        tens = {k: v for k, v in x.items() if isinstance(v, torch.Tensor)}
        sizes = {int(v.shape[0]) if v.ndim else -1 for v in tens.values()}
        ids = x.get("input_ids")
        if isinstance(ids, torch.Tensor) and ids.ndim == 1:
            return [x]  # one prompt's token ids
        if len(sizes) != 1 or -1 in sizes:
            raise InputError(f"{method}: the {what} dict cannot be split into pairs: its tensors need the pairs on "
                             f"dim 0, all alike (dim 0 sizes {sorted(sizes)}). Give every keyword tensor one row "
                             f"per pair, or run without executor, out and shards.")
        rowwise = [k for k, v in x.items() if isinstance(v, (list, tuple, Mapping))]
        if rowwise:
            raise InputError(f"{method}: the {what} dict holds {rowwise[0]!r}, a {type(x[rowwise[0]]).__name__} that "
                             f"cannot be split into pairs. Give it as a tensor with one row per pair (or leave it "
                             f"out), or run without executor, out and shards.")
        n = sizes.pop()
        return [{k: v[i:i + 1].clone() if k in tens else v for k, v in x.items()} for i in range(n)]
    if isinstance(x, (list, tuple)) and x:
        if all(isinstance(s, str) for s in x):
            return list(x)
        if all(isinstance(r, (list, tuple)) and r and all(isinstance(i, int) and not isinstance(i, bool) for i in r)
               for r in x):
            return [list(r) for r in x]
        if all(isinstance(t, torch.Tensor) and t.ndim > 0 for t in x):  # positional input tensors
            sizes = {int(t.shape[0]) for t in x}
            if len(sizes) != 1:
                raise InputError(f"{method}: the {what} input tensors disagree on the number of pairs (dim 0): "
                                 f"{sorted(sizes)}. Give each tensor one row per pair.")
            return [tuple(t[i:i + 1].clone() for t in x) for i in range(sizes.pop())]
    raise InputError(f"{method} with executor=, out= or shards= cannot split the {what} input "
                     f"({type(x).__name__} {x!r:.60}) into prompt pairs. Pass {_FORMS}; or leave executor, out and "
                     f"shards out to run it in process.")


def _join(rows: list[Any]) -> Any:
    """A shard's rows of one side as the method's input (the inverse of :func:`_rows`)."""
    first = rows[0]
    if isinstance(first, str):
        return list(rows)
    if isinstance(first, torch.Tensor):
        return torch.cat(rows)
    if isinstance(first, Mapping):
        return {k: torch.cat([r[k] for r in rows]) if isinstance(v, torch.Tensor) else v for k, v in first.items()}
    if isinstance(first, tuple):
        return tuple(torch.cat([r[j] for r in rows]) for j in range(len(first)))
    return [list(r) for r in rows]  # token-id lists


# --------------------------------------------------------------------------------------------------- the metric

class ShardMetric:
    """A metric with one answer per pair, on a shard of pairs ``first .. first + n - 1``: the shard's pair ``i``
    reads answer ``first + i`` (rows repeat the shard's pairs in order, as they repeat all pairs unsharded).

    >>> ShardMetric(cs.logit_diff([5, 6, 7, 8], [9, 3, 1, 2]), first=2, n=2)(logits)   # answers of pairs 2, 3
    """

    takes_input_index = True

    def __init__(self, metric: Any, first: int, n: int) -> None:
        self.metric, self.first, self.n_answers = metric, int(first), int(n)
        self.last_only = is_last_only(metric)
        self.takes_lengths = metric_takes_lengths(metric)

    def __call__(self, y: torch.Tensor, index: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.arange(len(y)) if index is None else index.cpu()
        pairs = (self.first + rows % self.n_answers).to(y.device)
        return call_metric(self.metric, y, pairs, lengths)

    def __repr__(self) -> str:
        return repr(self.metric)


def check_metric(metric: Any, n_pairs: int, method: str) -> None:
    """Refuse a metric whose rows cannot be matched to pairs across shards."""
    answers = int(getattr(metric, "n_answers", 1))
    if answers > 1 and n_pairs % answers:
        raise InputError(f"{method}: the metric has {answers} answer tokens for {n_pairs} prompt pairs; give one "
                         f"answer per pair (or one for all).")
    if getattr(metric, "takes_input_index", False) and answers <= 1 and not hasattr(metric, "n_answers"):
        raise InputError(f"{method} with executor=, out= or shards=: the metric {metric!r:.60} reads each row's input "
                         f"index (takes_input_index) without saying how many pairs it covers (n_answers), so its rows "
                         f"cannot be matched to pairs across shards. Give per-pair answers through cs.logit_diff / "
                         f"cs.logit / cs.prob (one token per pair), or run without executor, out and shards.")


def _shard_metric(metric: Any, first: int, n: int) -> Any:
    return ShardMetric(metric, first, n) if int(getattr(metric, "n_answers", 1)) > 1 else metric


# ----------------------------------------------------------------------------------------- plan, shard and key

def _plan(m: Model, clean: Any, corrupted: Any, sites: Any, per: str | None, positions: Sequence[int] | None,
          align: str | None, method: str) -> dict[str, Any]:
    """What the reduction needs from the whole run besides the numbers (run where the model is); a sweep the call
    would refuse is refused here, before any shard runs."""
    pairs = split_pairs(m, clean, corrupted, sites, per, positions, align, method)
    counts = []
    for part in pairs.parts:
        cells = sweep_cells(m, sites, per, part.positions, seq_len(part.clean), part.clean)[2]
        if not cells:
            raise InputError("The sweep has no cells.")
        counts.append(len(cells))
    pairs.check_cells(counts)
    return {"model": m.name, "dtype": model_dtype(m.module), "labels": pairs.labels, "meta": pairs.meta(),
            "tokens": pairs.tokens(m)}


def _pairs_shard(m: Model, items: list[tuple[Any, Any]], context: tuple[Compute, Any, dict[str, Any]],
                 first: int) -> list[dict[str, Any]]:
    """One shard's pairs: each pair's values; the shard's first pair also carries the shard's account (``run``)."""
    compute, metric, settings = context
    clean, corrupted = _join([c for c, _ in items]), _join([k for _, k in items])
    results, run = compute(m, clean, corrupted, _shard_metric(metric, first, len(items)), settings)
    results[0]["run"] = run
    return results


def _key(settings: dict[str, Any], metric: Any, out: Any) -> dict[str, Any]:
    """The settings that decide the numbers, as the checkpoint key (and the out= manifest) records them."""
    sites = settings["sites"]
    key = {k: v for k, v in settings.items() if k not in ("sites", "positions", "chunk_size")}
    key["sites"] = _site_names(sites)
    key["positions"] = positions_setting(settings["positions"])
    key["metric"] = repr(metric)
    if out is not None:  # the data itself: a site's basis, the metric's answers (a repr may abbreviate them)
        for name, value in (("sites_data", sites), ("metric_data", _state(metric))):
            try:
                key[name] = fingerprint(value)
            except InputError as err:
                raise InputError(f"out=: the {name.removesuffix('_data')} cannot be keyed for the checkpoint ({err}). "
                                 f"Run without out=, or give a metric made of plain data (cs.logit_diff, a "
                                 f"function of tensors and numbers).") from None
    return key


def _site_names(sites: Any) -> Any:
    """A sweep as text: its name, or each site's name."""
    if isinstance(sites, str):
        return sites
    if isinstance(sites, (list, tuple)):
        return [str(getattr(s, "name", s)) for s in sites]
    return str(getattr(sites, "name", sites))


def _state(obj: Any, depth: int = 0) -> Any:
    """A metric's data for its checkpoint key: a function's code with the values it closes over, reads as
    defaults or as globals; an object's attributes; plain data as it is."""
    if depth > 6 or obj is None or isinstance(obj, (str, bytes, int, float, bool, torch.Tensor)):
        return obj
    if isinstance(obj, types.MethodType):
        return [_state(obj.__func__, depth + 1), _state(obj.__self__, depth + 1)]
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        cells = [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
        data = {n: obj.__globals__[n] for n in code.co_names if n in obj.__globals__
                and not isinstance(obj.__globals__[n], (types.ModuleType, type)) and not callable(obj.__globals__[n])}
        return [obj, [_state(c, depth + 1) for c in cells], _state(obj.__defaults__, depth + 1),
                {k: _state(v, depth + 1) for k, v in sorted(data.items())}]
    if isinstance(obj, functools.partial):
        return [_state(obj.func, depth + 1), _state(obj.args, depth + 1), _state(obj.keywords, depth + 1)]
    if isinstance(obj, (list, tuple)):
        return [_state(x, depth + 1) for x in obj]
    if isinstance(obj, Mapping):
        return {str(k): _state(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (torch.nn.Module, Model)):
        return obj
    attrs = getattr(obj, "__dict__", None)
    if callable(obj) and isinstance(attrs, dict) and attrs:
        return [type(obj).__qualname__, {k: _state(v, depth + 1) for k, v in sorted(attrs.items())}]
    return obj


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:  # an empty cell
        return False
    return True
