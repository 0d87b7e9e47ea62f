"""One local Ray for every Ray test of the session (they all run in one pytest-xdist worker: group "ray")."""
from __future__ import annotations

import logging

import pytest

import causalscope as cs


@pytest.fixture(scope="session")
def cluster():
    """A local Ray with room for the tests' workers (4 CPUs: a pool of 2, a spare for a replacement)."""
    ray = pytest.importorskip("ray")  # in the [test] extra; CI installs it
    if ray.is_initialized():  # left by another test: start this session's own
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def ex(cluster):
    """A RayExecutor with 2 workers (the workers start on first use and stay for the session)."""
    executor = cs.RayExecutor(workers=2)
    yield executor
    executor.shutdown()
