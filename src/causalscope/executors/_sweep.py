"""``causalscope.sweep``: any per-item function over a dataset, in process or on Ray, checkpointed with ``out=``.

>>> def effect(m, fact):
...     return causalscope.causal_trace(m, fact.prompt, fact.subject, kind="mlp")
>>> traces = causalscope.sweep(effect, facts[:100], model="facts-gpt", executor=causalscope.RayExecutor(workers=2))
>>> traces.dims                  # the traces stacked along a new first dim, "item"
('item', 'position', 'layer')
"""
from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..core import input_setting
from ..errors import InputError, check_seed
from ..results import LabelledArray
from ._fingerprint import fingerprint
from ._progress import report_progress, reporting
from ._run import run_sharded

__all__ = ["SweepList", "sweep"]


def sweep(fn: Callable[[Any, Any], Any], items: Sequence[Any], *, model: Any, executor: Any = None,
          out: str | os.PathLike[str] | None = None, shards: int | None = None, seed: int = 0,
          progress: bool | None = None) -> Any:
    """``fn(model, item)`` for every item, where ``executor`` runs it; the results in item order.

    >>> counts = causalscope.sweep(lambda m, p: len(m.tokenizer.tokenize(p)), prompts, model="facts-gpt")

    ``model`` is anything :func:`causalscope.load` takes (or a :class:`causalscope.ModelSpec`); each worker
    loads it once and hands the loaded :class:`causalscope.Model` to ``fn``. Before each item, torch's, numpy's
    and Python's random generators are seeded from ``seed`` and the item's index (and restored after), so a
    function that draws random numbers gives the same results whatever the workers or shards.

    Returns a :class:`~causalscope.LabelledArray` with a first dim ``item`` when every result is a labelled
    array of one shape, dims and coords (the stacked results) or a number (a 1-D array); otherwise the list of
    results (a ``SweepList``: a list with ``meta``). ``meta["executor"]`` says what ran (shards, reused shards,
    retries). With ``out=folder`` each finished shard is saved there at once and a rerun with the same function,
    items, model and seed computes only the shards that are missing (results must then be data the library
    saves: None, numbers, strings, lists, dicts, tensors, labelled arrays).
    """
    if not callable(fn):
        raise InputError(f"sweep's fn must be a function fn(model, item); got {type(fn).__name__}.")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise InputError(f"sweep calls fn(model, item) with two arguments, but {getattr(fn, '__qualname__', fn)!r} "
                         f"takes {inspect.signature(fn)}: give a function of (model, item), e.g. lambda m, x: ...") \
            from None
    except ValueError:  # a builtin without a signature: it is called as it is
        pass
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InputError(f"sweep's items must be a list of items; got {type(items).__name__} {items!r:.60}.")
    seed = check_seed(seed)
    name = getattr(fn, "__qualname__", type(fn).__name__)
    settings = {"fn": f"{getattr(fn, '__module__', '?')}.{name}", "seed": seed}
    if out is not None:
        settings["fn_code"] = fingerprint(fn)
    results, info = run_sharded(_sweep_shard, items, model=model, context=(fn, seed), method="sweep",
                                settings=settings, executor=executor, out=out, shards=shards, progress=progress)
    meta = {"method": "sweep", "fn": settings["fn"], "seed": seed, "n_items": len(results),
            "items": input_setting(list(items)), "executor": info}
    return _stacked(results, meta)


class SweepList(list):
    """Results that do not stack (other shapes, other types): a list in item order, with the run's ``meta``.

    >>> results = causalscope.sweep(fn, prompts, model="facts-gpt")
    >>> results[0], results.meta["executor"]["shards"]
    """

    def __init__(self, results: list[Any], meta: dict[str, Any]) -> None:
        super().__init__(results)
        self.meta = meta


def _sweep_shard(model: Any, items: list[Any], context: tuple[Callable[[Any, Any], Any], int],
                 first: int) -> list[Any]:
    fn, seed = context
    out = []
    with _generators_restored():
        for i, item in enumerate(items):
            value = (seed * 1_000_003 + first + i) % (2**32)  # seeded per item, whatever shard holds it
            torch.manual_seed(value)
            np.random.seed(value)
            random.seed(value)
            with reporting(_ignore):  # fn's own sharded-looking reports are not items
                out.append(fn(model, item))
            report_progress(1)
    return out


def _ignore(n: int) -> None:
    pass


@contextmanager
def _generators_restored() -> Iterator[None]:
    """torch's, numpy's and Python's global generators as they were before the block."""
    saved = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        yield
    finally:
        torch.random.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


def _stacked(results: list[Any], meta: dict[str, Any]) -> Any:
    n = len(results)
    if all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in results):
        return LabelledArray(torch.tensor([float(r) for r in results], dtype=torch.float64), ["item"],
                             {"item": list(range(n))}, meta, name="value")
    if not all(isinstance(r, LabelledArray) for r in results):
        return SweepList(results, meta)
    first = results[0]
    if "item" in first.dims or any(r.dims != first.dims or r.shape != first.shape or r.coords != first.coords
                                   for r in results):
        return SweepList(results, meta)
    values = torch.stack([r.values for r in results])
    aux = {k: v for k, v in first.aux_coords.items() if all(r.aux_coords.get(k) == v for r in results)}
    meta = {**meta, "item_method": first.meta.get("method"), "item_meta": [r.meta for r in results]}
    return LabelledArray(values, ["item", *first.dims], {"item": list(range(n)), **first.coords}, meta,
                         name=first.name, aux_coords=aux)
