"""The in-process executor: the default, no Ray needed. Shards run one after another in this process.

>>> avg = causalscope.trace_average("facts-gpt", facts, out="runs/facts")   # in process, checkpointed per shard
>>> avg = causalscope.trace_average("facts-gpt", facts, executor=causalscope.InProcessExecutor(), shards=8)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core import Model
from ..loading import load
from ._base import Executor, Job, Progress, RunReport, check_results
from ._progress import reporting
from ._store import Shard

__all__ = ["InProcessExecutor"]


class InProcessExecutor(Executor):
    """Runs every shard here, on the model as given (loaded once per call when given by name)."""

    name = "in process"
    workers = 1

    def __init__(self) -> None:
        self._loaded: tuple[Any, Model] | None = None

    def _model(self, model: Any) -> Model:
        if isinstance(model, Model):
            return model
        if self._loaded is None or self._loaded[0] is not model:
            self._loaded = (model, load(model))
        return self._loaded[1]

    def run_shards(self, job: Job, shards: list[Shard], done: Callable[[Shard, list[Any]], None],
                   progress: Progress | None = None) -> RunReport:
        m = self._model(job.model)
        for shard in shards:
            with reporting(_to(progress, shard)):
                results = job.fn(m, shard.items, job.context, shard.start)
            done(shard, check_results(job, shard, results))
        return RunReport(workers=1)

    def call(self, model: Any, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self._model(model), *args)


def _to(progress: Progress | None, shard: Shard) -> Callable[[int], None]:
    """Where a shard's :func:`report_progress` calls go."""
    def add(n: int) -> None:
        if progress is not None:
            progress.add(shard, n)
    return add
