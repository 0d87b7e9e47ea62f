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

__all__ = ["Executor", "Job", "RunReport", "ShardFn", "check_results"]

ShardFn = Callable[[Any, list[Any], Any, int], list[Any]]


@dataclass
class Job:
    fn: ShardFn
    context: Any
    model: Any
    desc: str


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
    def run_shards(self, job: Job, shards: list[Shard], done: Callable[[Shard, list[Any]], None]) -> RunReport:
        """Compute every shard, calling ``done(shard, results)`` in this process as each one finishes."""

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
