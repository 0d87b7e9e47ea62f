"""Ray: shards of a method spread over workers on one machine, several GPUs or a cluster.

>>> ex = causalscope.RayExecutor(workers=2, cpus_per_worker=1)            # a local Ray started on demand
>>> ex = causalscope.RayExecutor(workers=8, gpus_per_worker=1)            # one node with 8 GPUs
>>> ex = causalscope.RayExecutor(workers=32, gpus_per_worker=1, address="auto")   # the cluster of `ray start`
>>> avg = causalscope.trace_average("facts-gpt", facts, executor=ex, out="runs/facts")

Each worker is a Ray actor that loads the model once (a name, folder or Hub id is loaded on the worker; a model
object is put in Ray's object store once and every worker takes it from there) and keeps it for the next calls
with the same model. Shards go to whichever worker is free. A shard whose worker dies (a crash, the OOM killer, a
lost node) is given to another worker, at most ``max_retries`` times, then the run stops with an
:class:`~causalscope.ExecutionError` naming the shard's items; the shards already finished are kept (and saved,
with ``out=``). An error raised by the method itself (bad input) is not retried: it is raised here, as is.
Ctrl-C stops the workers at once and keeps the finished shards.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

from ..core import tqdm
from ..errors import ExecutionError, InputError, check_int, check_number
from ..loading import ModelSpec, load
from ._base import Executor, Job, Progress, RunReport, check_results
from ._progress import reporting
from ._store import Shard

__all__ = ["RayExecutor"]


class _Worker:
    """One Ray actor: the model, loaded once, and the shard calls on it."""

    def __init__(self, model: Any, threads: int, device: str | None) -> None:
        import torch

        torch.set_num_threads(threads)
        self.model = load(model)
        if device is not None:
            self.model.module.to(device)

    def where(self) -> tuple[str, int]:
        import socket

        return socket.gethostname(), os.getpid()

    def run(self, fn: Callable[..., list[Any]], items: list[Any], context: Any, first: int, counter: Any = None,
            shard: int = 0) -> list[Any]:
        if counter is None:
            return fn(self.model, items, context, first)
        with reporting(lambda n: counter.add.remote(shard, n)):  # fire and forget: the driver reads the sums
            return fn(self.model, items, context, first)

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return fn(self.model, *args)


class _Counter:
    """Items reported done per shard since the driver last looked (a tiny actor, no CPU reserved)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add(self, shard: int, n: int) -> None:
        self.counts[shard] = self.counts.get(shard, 0) + n

    def take(self) -> dict[int, int]:
        out, self.counts = self.counts, {}
        return out


#: how often (seconds) the driver reads the workers' progress while it waits for shards
POLL_S = 0.5


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("RayExecutor needs Ray: pip install 'causalscope[ray]' (or pip install ray), then run "
                         "again. Without it, leave executor= out: the method runs in this process.") from None
    return ray


class RayExecutor(Executor):
    """Shards a method's dataset over ``workers`` Ray actors (see the module docstring).

    ``address`` (or the ``RAY_ADDRESS`` environment variable) names an existing cluster (``"auto"``: the one
    ``ray start`` runs on this machine); without either, a local Ray is started on first use with
    ``workers * cpus_per_worker`` CPUs, and stopped by :meth:`shutdown` (or at exit). Each worker runs torch with
    ``threads_per_worker`` threads (default ``cpus_per_worker``); with ``gpus_per_worker`` the model is moved
    to the worker's GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` for it) unless its load arguments place it
    (``device_map``). ``start_timeout`` bounds the wait for the workers to be placed and to load the model.
    """

    name = "ray"

    def __init__(self, workers: int = 2, *, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
                 threads_per_worker: int | None = None, address: str | None = None, max_retries: int = 2,
                 start_timeout: float = 600.0) -> None:
        self.workers = check_int(workers, "workers", low=1, hint="It is the number of Ray actors (e.g. workers=2).")
        cpus = check_number(cpus_per_worker, "cpus_per_worker", low=0, open_low=True,
                            hint="It is the CPUs Ray reserves for each worker (e.g. 1).")
        gpus = check_number(gpus_per_worker, "gpus_per_worker", low=0,
                            hint="It is the GPUs Ray reserves for each worker (0: none, 1: one each).")
        self.cpus_per_worker, self.gpus_per_worker = cpus, gpus
        self.threads = check_int(threads_per_worker if threads_per_worker is not None
                                 else max(1, int(cpus)), "threads_per_worker", low=1)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise InputError(f"address must be a Ray cluster address such as 'auto' or 'ray://head:10001' (or None: a "
                             f"local Ray), got {address!r}.")
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS") or None
        self.max_retries = check_int(max_retries, "max_retries", low=0,
                                     hint="It is how often a shard that lost its worker is tried again (0: never).")
        self.start_timeout = check_number(start_timeout, "start_timeout", low=0, open_low=True,
                                          hint="It is the seconds to wait for the workers to start (e.g. 600).")
        self._started = False  # this executor started Ray (so it stops it)
        self._pool: list[Any] = []
        self._counter: Any = None
        self._pool_model: Any = None
        self._model_ref: Any = None

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker, "threads_per_worker": self.threads,
                "address": self.address or "local"}

    # ------------------------------------------------------------------ the cluster and the workers
    def _init(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
            with warnings.catch_warnings():
                # JAX (if imported) warns at every fork; Ray's services start by fork + exec, which is safe
                warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
                if self.address:
                    ray.init(address=self.address, **quiet)
                else:
                    ray.init(num_cpus=max(1, int(self.workers * self.cpus_per_worker + 0.999)),
                             include_dashboard=False, **quiet)
                    self._started = True
        return ray

    def _spawn(self, ray: Any) -> Any:
        options: dict[str, Any] = {"num_cpus": self.cpus_per_worker, "max_restarts": 0, "max_task_retries": 0}
        if self.gpus_per_worker:
            options["num_gpus"] = self.gpus_per_worker
        kwargs = self._pool_model.kwargs if isinstance(self._pool_model, ModelSpec) else {}
        device = "cuda" if self.gpus_per_worker and "device_map" not in kwargs else None
        return ray.remote(_Worker).options(**options).remote(self._model_ref, self.threads, device)

    def _workers(self, model: Any) -> list[Any]:
        """The pool of workers holding ``model`` (started, and the model loaded, on first use)."""
        ray = self._init()
        if self._pool and (self._pool_model is model or (isinstance(model, (str, ModelSpec))
                                                          and type(model) is type(self._pool_model)
                                                          and model == self._pool_model)):
            return self._pool
        self._kill_pool()
        self._pool_model = model
        # a model object travels through the object store once; a name / folder / Hub id is loaded on each worker
        self._model_ref = model if isinstance(model, str) else ray.put(model)
        self._pool = [self._spawn(ray) for _ in range(self.workers)]
        # the workers' progress reports go to one small actor the driver reads while it waits (started with them)
        self._counter = ray.remote(_Counter).options(num_cpus=0).remote()
        ready = [w.where.remote() for w in self._pool] + [self._counter.take.remote()]
        done, waiting = ray.wait(ready, num_returns=len(ready), timeout=self.start_timeout)
        if waiting:
            self._kill_pool()
            raise ExecutionError(
                f"Ray placed or started only {min(len(done), self.workers)} of {self.workers} workers within "
                f"{self.start_timeout:g} s "
                f"(each asks for {self.cpus_per_worker:g} CPUs and {self.gpus_per_worker:g} GPUs; the cluster has "
                f"{ray.cluster_resources()}). Ask for fewer workers or resources, or raise start_timeout.")
        try:
            ray.get(done)
        except ray.exceptions.RayError as err:
            self._kill_pool()
            raise ExecutionError(f"a Ray worker could not load the model: {_cause(err)}") from None
        return self._pool

    def _kill_pool(self) -> None:
        if self._pool:
            ray = _ray()
            for w in [*self._pool, self._counter]:
                if w is not None:
                    ray.kill(w)
        self._pool, self._pool_model, self._model_ref, self._counter = [], None, None, None

    def shutdown(self) -> None:
        """Stop the workers (and the local Ray this executor started)."""
        self._kill_pool()
        if self._started:
            _ray().shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ running
    def call(self, model: Any, fn: Callable[..., Any], *args: Any) -> Any:
        ray = self._init()
        worker = self._workers(model)[0]
        try:
            return ray.get(worker.call.remote(fn, args))
        except ray.exceptions.RayTaskError as err:
            raise _user_error(err) from None

    def run_shards(self, job: Job, shards: list[Shard], done: Callable[[Shard, list[Any]], None],
                   progress: Progress | None = None) -> RunReport:
        ray = self._init()
        pool = list(self._workers(job.model))
        context = ray.put(job.context)
        fn = ray.put(job.fn)
        counter = self._counter if progress is not None else None
        if counter is not None:
            ray.get(counter.take.remote())  # counts left by an interrupted run are not this run's
        by_index = {s.index: s for s in shards}
        report = RunReport(workers=len(pool))
        pending: deque[Shard] = deque(shards)
        running: dict[Any, tuple[Any, Shard]] = {}
        tries: dict[int, int] = {}
        lost_on: dict[int, Any] = {}
        idle = list(pool)
        failure: BaseException | None = None
        try:
            while running or (pending and failure is None):
                while idle and pending and failure is None:
                    shard = pending.popleft()
                    # a retried shard goes to another worker than the one it was lost on, where there is one
                    w = next((x for x in idle if x is not lost_on.get(shard.index)), idle[0])
                    idle.remove(w)
                    running[w.run.remote(fn, shard.items, context, shard.start, counter, shard.index)] = (w, shard)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S if counter is not None else None)
                if counter is not None and progress is not None:
                    for index, n in ray.get(counter.take.remote()).items():
                        if any(s.index == index for _, s in running.values()):
                            progress.add(by_index[index], n)
                if not ready:
                    continue
                ref = ready[0]
                w, shard = running.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayActorError as err:  # the worker died: retry the shard elsewhere
                    tries[shard.index] = tries.get(shard.index, 0) + 1
                    if progress is not None:
                        progress.reset(shard)
                    replacement = self._replace(ray, w, pool)
                    if tries[shard.index] > self.max_retries:
                        failure = ExecutionError(
                            f"{job.desc}: {shard.describe()} lost its worker {tries[shard.index]} times (last: "
                            f"{_cause(err)}); stopped after max_retries={self.max_retries}. Items: "
                            f"{_items(shard)}. Shards finished before are kept (rerun with the same out= to go on).")
                        continue
                    lost_on[shard.index] = replacement
                    note: dict[str, Any] = {"shard": shard.index, "items": [shard.start, shard.stop - 1],
                                            "try": tries[shard.index] + 1, "error": _cause(err)[:200]}
                    report.retries.append(note)
                    tqdm.write(f"causalscope: {shard.describe()} lost its worker ({note['error'][:120]}); retrying "
                               f"it (try {note['try']} of {self.max_retries + 1})", file=sys.stderr)
                    pending.appendleft(shard)
                    idle.append(replacement)
                    continue
                except ray.exceptions.RayTaskError as err:  # the method raised: not retried, finished shards kept
                    failure = failure or _user_error(err)
                    idle.append(w)
                    continue
                idle.append(w)
                done(shard, check_results(job, shard, results))
        except KeyboardInterrupt:
            self._kill_pool()
            tqdm.write("causalscope: interrupted; the workers are stopped and the finished shards kept (with out=, "
                       "rerun the same call to compute only the rest)", file=sys.stderr)
            raise
        if failure is not None:
            raise failure
        return report

    def _replace(self, ray: Any, dead: Any, pool: list[Any]) -> Any:
        """A new worker in the place of a dead one (it loads the model while the others go on)."""
        fresh = self._spawn(ray)
        for lst in (pool, self._pool):
            if dead in lst:
                lst[lst.index(dead)] = fresh
        return fresh


def _cause(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def _user_error(err: Any) -> BaseException:
    """The exception the method raised on the worker, as itself (a causalscope error stays one)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else ExecutionError(_cause(err))


def _items(shard: Shard) -> str:
    shown = ", ".join(repr(x)[:60] for x in shard.items[:3])
    return f"[{shown}{', ...' if len(shard.items) > 3 else ''}] ({len(shard.items)} items)"
