"""Shared fixtures: small models built from configs with random weights (no downloads)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# tiny models gain nothing from intra-op threads, and 2 xdist workers x 2 threads on 2 cores stall each other
torch.set_num_threads(1)

import causalscope as cs  # noqa: E402
from causalscope.zoo import build_mlp, build_tiny_lm  # noqa: E402

LM_ARCHS = ["gpt2", "gpt_neox", "llama"]


@pytest.fixture(params=LM_ARCHS)
def lm(request) -> cs.Model:
    """A wrapped tiny random-weight LM of each architecture."""
    model, tok = build_tiny_lm(request.param)
    return cs.load(model, tok, name=f"tiny-{request.param}")


@pytest.fixture
def gpt2() -> cs.Model:
    model, tok = build_tiny_lm("gpt2")
    return cs.load(model, tok, name="tiny-gpt2")


@pytest.fixture
def mlp() -> cs.Model:
    return cs.load(build_mlp())


def hooked_transformer():
    """A small random-weight TransformerLens HookedTransformer (TransformerLens 3.x)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, d_head=8, n_heads=4, n_ctx=16, d_vocab=50,
                                  act_fn="gelu", normalization_type="LN", seed=0)
    return HookedTransformer(cfg).eval()


PROMPTS = ["the cat sat on the mat", "a dog ran by the tree", "the old king saw a river"]


@pytest.fixture(scope="session")
def cluster():
    """One local Ray for the session's Ray tests (all in one pytest-xdist worker: group "ray"), with room for
    their workers (4 CPUs: a pool of 2 and spares for replacements)."""
    import logging
    import warnings

    ray = pytest.importorskip("ray")  # in the [test] extra; CI installs it
    if ray.is_initialized():  # left by another test: start this session's own
        ray.shutdown()
    with warnings.catch_warnings():  # JAX (tracr tests) warns at every fork; Ray forks + execs its services
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def ex(cluster):
    """A RayExecutor with 2 workers (they start on first use and stay for the session)."""
    executor = cs.RayExecutor(workers=2)
    yield executor
    executor.shutdown()


@pytest.fixture
def bar_updates(monkeypatch) -> list[int]:
    """What a sharded run's one progress bar is told: its initial count, then every update (tqdm replaced)."""
    import causalscope.executors._run as run

    updates: list[int] = []

    class Bar:
        def __init__(self, *a, initial=0, **kw):
            updates.append(initial)

        def update(self, n):
            updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(run, "tqdm", Bar)
    return updates

