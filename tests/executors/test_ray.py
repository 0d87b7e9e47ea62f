"""Sharded runs on a local Ray cluster with 2 workers: equal to the in-process run, through a lost worker, a
Ctrl-C and a resume, whatever the number of workers or shards.

Every test here runs in one pytest-xdist worker (group "ray") against one local Ray started by the module's
fixture. The references are the in-process runs (checked against plain loops in tests/tracing and
test_sharding.py) and closed-form values.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import causalscope as cs

ray = pytest.importorskip("ray")  # in the [test] extra; CI installs it

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

FACTS = cs.zoo.facts.facts("heldout")[:16]


@pytest.fixture(scope="module")
def in_process():
    return cs.trace_average("facts-gpt", FACTS, samples=3, progress=False)


def same(a, b, tol: float = 1e-6) -> None:
    assert a.dims == b.dims and a.coords == b.coords
    assert torch.equal(a.values.isnan(), b.values.isnan())
    assert (a.values - b.values).nan_to_num().abs().max().item() <= tol


def test_trace_average_on_two_workers_equals_the_in_process_run(ex, in_process):
    got = cs.trace_average("facts-gpt", FACTS, samples=3, executor=ex, progress=False)
    same(got, in_process)
    info = got.meta["executor"]
    assert info["executor"] == "ray" and info["workers"] == 2 and info["computed_shards"] == info["shards"] == 8
    assert [t.meta["prompt"] for t in got.traces] == [t.meta["prompt"] for t in in_process.traces]


def test_a_model_object_is_shipped_to_the_workers(ex, in_process):
    m = cs.load("facts-gpt")
    same(cs.trace_average(m, FACTS, samples=3, executor=ex, progress=False), in_process)


def test_sweep_on_two_workers_equals_the_in_process_sweep(ex):
    def fn(m, p):
        return len(m.tokenizer.tokenize(p)) + torch.rand(()).item()  # a draw: seeded per item, not per worker

    prompts = [f.prompt for f in FACTS]
    here = cs.sweep(fn, prompts, model="facts-gpt", progress=False)
    there = cs.sweep(fn, prompts, model="facts-gpt", executor=ex, progress=False)
    assert torch.allclose(here.values, there.values, atol=1e-6, rtol=0)
    assert [int(v) for v in there.values.tolist()] == [len(cs.load("facts-gpt").tokenizer.tokenize(p))
                                                        for p in prompts]


def test_a_worker_killed_mid_run_is_replaced_and_its_shard_retried(ex, in_process, tmp_path, capsys):
    marker = tmp_path / "killed"

    def fn(m, fact):
        import os

        if fact.prompt == target and not os.path.exists(marker_path):
            open(marker_path, "w").close()
            os._exit(1)  # the worker process dies in the middle of a shard
        return float(cs.causal_trace(m, fact.prompt, fact.subject, kind="mlp", samples=3).values.sum())

    target, marker_path = FACTS[5].prompt, str(marker)
    got = cs.sweep(fn, FACTS, model="facts-gpt", executor=ex, shards=4, progress=False)
    assert marker.exists()
    ref = [float(cs.causal_trace("facts-gpt", f.prompt, f.subject, kind="mlp", samples=3).values.sum())
           for f in FACTS]
    assert torch.allclose(got.values, torch.tensor(ref, dtype=got.values.dtype), atol=1e-5, rtol=0)
    assert "lost its worker" in capsys.readouterr().err
    retries = got.meta["executor"]["retries"]
    assert len(retries) == 1 and retries[0]["items"] == [4, 7] and retries[0]["try"] == 2
    # the pool is whole again: the next run uses both workers and is still exact
    same(cs.trace_average("facts-gpt", FACTS, samples=3, executor=ex, progress=False), in_process)


def test_a_shard_that_keeps_killing_its_worker_stops_with_its_items(ex):
    def fn(m, x):
        import os

        if x == 3:
            os._exit(1)
        return x

    one_retry = cs.RayExecutor(workers=2, max_retries=1)
    try:
        with pytest.raises(cs.ExecutionError, match=r"shard 1 \(items 2\.\.3\) lost its worker 2 times.*Items: \[2, 3\]"):
            cs.sweep(fn, list(range(6)), model="facts-gpt", executor=one_retry, shards=3, progress=False)
    finally:
        one_retry.shutdown()


def test_ctrl_c_keeps_the_finished_shards_and_a_rerun_computes_only_the_rest(ex, in_process, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_wait = ray.wait

    def wait_then_interrupt(refs, **kw):
        if len(list(out.glob("shard-*.npz"))) >= 3:  # Ctrl-C once three shards came back and were saved
            raise KeyboardInterrupt
        return real_wait(refs, **kw)

    monkeypatch.setattr(ray, "wait", wait_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        cs.trace_average("facts-gpt", FACTS, samples=3, executor=ex, shards=7, out=out, progress=False)
    monkeypatch.setattr(ray, "wait", real_wait)
    finished = len(list(out.glob("shard-*.npz")))
    assert 1 <= finished < 7
    got = cs.trace_average("facts-gpt", FACTS, samples=3, executor=ex, shards=7, out=out, progress=False)
    same(got, in_process)
    assert got.meta["executor"]["reused_shards"] == finished
    assert got.meta["executor"]["computed_shards"] == 7 - finished


def test_a_failed_run_resumes_from_its_out_folder(ex, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("")

    def fn(m, x):
        import os

        if x == 8 and os.path.exists(flag_path):
            raise cs.InputError(f"item {x} is bad")
        return x * x

    flag_path = str(flag)
    with pytest.raises(cs.InputError, match="item 8 is bad"):  # the method's own error, as itself, not retried
        cs.sweep(fn, list(range(12)), model="facts-gpt", executor=ex, shards=6, out=tmp_path / "run", progress=False)
    saved = len(list((tmp_path / "run").glob("shard-*.npz")))
    assert 1 <= saved <= 5
    flag.unlink()
    got = cs.sweep(fn, list(range(12)), model="facts-gpt", executor=ex, shards=6, out=tmp_path / "run",
                   progress=False)
    assert got.values.tolist() == [x * x for x in range(12)]
    assert got.meta["executor"]["computed_shards"] == 6 - saved


@pytest.mark.parametrize("workers, shards", [(1, None), (2, 3), (2, 7)])
def test_workers_and_shards_do_not_change_the_numbers(ex, in_process, workers, shards):
    run = ex if workers == 2 else cs.RayExecutor(workers=workers)
    try:
        same(cs.trace_average("facts-gpt", FACTS, samples=3, executor=run, shards=shards, progress=False),
             in_process)
    finally:
        if run is not ex:
            run.shutdown()


def test_bad_input_raises_the_same_error_as_in_process(ex):
    other = next(f.subject for f in FACTS if f.subject != FACTS[0].subject)
    bad = [(FACTS[0].prompt, other, FACTS[0].answer)]  # a subject that is not in the prompt
    with pytest.raises(cs.InputError) as here:
        cs.trace_average("facts-gpt", bad, samples=3, progress=False)
    with pytest.raises(cs.InputError) as there:
        cs.trace_average("facts-gpt", bad, samples=3, executor=ex, progress=False)
    assert str(there.value) == str(here.value)


def test_out_folder_is_plain_files(ex, tmp_path):
    cs.sweep(lambda m, x: x + 1, [1, 2, 3], model="facts-gpt", executor=ex, out=tmp_path, progress=False)
    names = sorted(p.name for p in Path(tmp_path).iterdir())
    assert names[0] == "manifest.json" and len(names) == 4
    assert all(n.startswith("shard-") and n.endswith(".npz") for n in names[1:])


def test_the_command_line_spreads_facts_over_workers_and_resumes(ex, tmp_path, capsys):
    from causalscope.app.cli import main

    args = ["trace-average", "--n", "6", "--samples", "2", "--checkpoint", str(tmp_path / "run"), "--json"]
    assert main(args) == 0
    here = json.loads(capsys.readouterr().out)
    assert main([*args, "--workers", "2"]) == 0  # the same run: every shard reused, the same numbers
    there = json.loads(capsys.readouterr().out)
    assert there["values"] == here["values"] and there["meta"]["executor"]["reused_shards"] == 4
    ref = cs.trace_average("facts-gpt", cs.zoo.facts.facts("heldout")[:6], samples=2,
                           window=cs.rome_window(cs.load("facts-gpt").n_layers), progress=False)  # the CLI's default
    assert torch.allclose(torch.tensor(there["values"]).nan_to_num(), ref.values.nan_to_num(), atol=1e-6)


def test_one_bar_moves_with_the_items_finished_inside_the_shards(ex, bar_updates):
    updates = bar_updates

    def slow(m, x):
        import time

        time.sleep(0.35)
        return x

    got = cs.sweep(slow, list(range(8)), model="facts-gpt", executor=ex, shards=2, progress=True)
    assert got.values.tolist() == list(range(8))
    assert sum(updates) == 8  # every item once, whatever arrived when
    assert len([u for u in updates if u > 0]) > 2  # items reported from inside the 2 shards, not only at their ends
