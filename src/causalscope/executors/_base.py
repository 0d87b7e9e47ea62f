"""What an executor does: run a job's shards somewhere and hand each shard's results back as it finishes.

>>> job = Job(fn=my_shard_fn, context=settings, model="facts-gpt", desc="trace_average")
>>> report = executor.run_shards(job, shards, done=lambda shard, results: ...)

``fn(model, items, context, first)`` computes one shard: ``model`` is the loaded :class:`~causalscope.Model`,
``items`` the shard's items, ``first`` the index of its first item in the whole run, and it returns one result per
item. It is a module-level function (or anything Ray can pickle) so that it can travel to a worker.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ._store import Shard

__all__ = ["Executor", "Job", "Progress", "RunReport", "ShardFn", "check_results"]

ShardFn = Callable[[Any, list[Any], Any, int], list[Any]]


@dataclass
class Job:
    fn: ShardFn
    context: Any
    model: Any
    desc: str


class Progress:
    """The driver's view of items finished inside running shards (the bar moves as they are reported)."""

    def __init__(self, bar: Any = None) -> None:
        self.bar = bar
        self.partial: dict[int, int] = {}

    def add(self, shard: Shard, n: int) -> None:
        """``n`` more items of ``shard`` are done (never more than the shard holds)."""
        got = self.partial.get(shard.index, 0)
        n = max(0, min(n, len(shard.items) - got))
        if n:
            self.partial[shard.index] = got + n
            if self.bar is not None:
                self.bar.update(n)

    def reset(self, shard: Shard) -> None:
        """The shard starts again (its worker was lost): take back what it reported."""
        n = self.partial.pop(shard.index, 0)
        if n and self.bar is not None:
            self.bar.update(-n)

    def finish(self, shard: Shard) -> None:
        """The shard is done: the bar gets the items it had not reported."""
        rest = len(shard.items) - self.partial.pop(shard.index, 0)
        if rest and self.bar is not None:
            self.bar.update(rest)


@dataclass
class RunReport:
    """What happened besides the results: the workers used and the shards retried after a lost worker."""

    workers: int
    retries: list[dict[str, Any]] = field(default_factory=list)


class Executor(ABC):
    """Where a sharded method runs. ``workers`` sets the default number of shards."""

    name: str = "executor"
    workers: int = 1

    @abstractmethod
    def run_shards(self, job: Job, shards: list[Shard], done: Callable[[Shard, list[Any]], None],
                   progress: Progress | None = None) -> RunReport:
        """Compute every shard, calling ``done(shard, results)`` in this process as each one finishes, and
        ``progress.add(shard, n)`` as the shard function reports items done (:func:`report_progress`)."""

    @abstractmethod
    def call(self, model: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(loaded_model, *args)`` where the workers run (once, on one worker)."""

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers}


def check_results(job: Job, shard: Shard, results: Any) -> list[Any]:
    """A shard function returns one result per item, as a list."""
    if not isinstance(results, list) or len(results) != len(shard.items):
        got = f"a list of {len(results)}" if isinstance(results, list) else type(results).__name__
        raise InputError(f"{job.desc}: the shard function returned {got} for {shard.describe()}, which has "
                         f"{len(shard.items)} items; it must return one result per item, as a list.")
    return results
