"""Executors: where a method runs. In process by default; on Ray (``causalscope[ray]``) to shard a method over a
dataset on several workers, GPUs or machines, with checkpointed, resumable shards (``out=``) and retries.

>>> ex = causalscope.RayExecutor(workers=2)
>>> avg = causalscope.trace_average("facts-gpt", facts, executor=ex, out="runs/facts")
>>> lens = causalscope.sweep(lambda m, p: causalscope.logit_lens(m, p), prompts, model="facts-gpt", executor=ex)

See docs/distributed.md.
"""
from ._base import Executor, Job, Progress, RunReport
from ._fingerprint import fingerprint, model_fingerprint
from ._local import InProcessExecutor
from ._progress import report_progress
from ._ray import RayExecutor
from ._run import check_executor, default_shards, plan_shards, run_sharded
from ._store import Shard, ShardStore
from ._sweep import SweepList, sweep

__all__ = ["Executor", "InProcessExecutor", "Job", "Progress", "RayExecutor", "RunReport", "Shard", "ShardStore",
           "SweepList", "check_executor", "default_shards", "fingerprint", "model_fingerprint", "plan_shards",
           "report_progress", "run_sharded", "sweep"]
