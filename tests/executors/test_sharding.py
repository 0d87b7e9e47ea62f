"""Sharded runs in process (no Ray): shard plans, checkpoints in out= folders, resuming, refusals, sweep.

The references are the unsharded in-process run (itself checked against a loop over causal_trace in
tests/tracing) and plain Python loops over the items.
"""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.executors import plan_shards
from causalscope.results import LabelledArray, load_bundle, save_bundle

FACTS = cs.zoo.facts.facts("heldout")[:18]


@pytest.fixture(scope="module")
def facts_gpt() -> cs.Model:
    return cs.load("facts-gpt")


@pytest.fixture(scope="module")
def unsharded(facts_gpt):
    return cs.trace_average(facts_gpt, FACTS, samples=3, progress=False)


def same(a: LabelledArray, b: LabelledArray, tol: float = 1e-6) -> None:
    assert a.dims == b.dims and a.coords == b.coords
    assert torch.equal(a.values.isnan(), b.values.isnan())
    assert (a.values - b.values).nan_to_num().abs().max().item() <= tol


@pytest.mark.parametrize("n, k", [(10, 3), (7, 7), (5, 9), (1, 1), (256, 4)])
def test_plan_covers_every_item_once_in_order(n, k):
    plan = plan_shards(n, k)
    assert [i for a, b in plan for i in range(a, b)] == list(range(n))
    sizes = [b - a for a, b in plan]
    assert len(plan) == min(n, k) and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_sharded_trace_average_equals_the_unsharded_run(facts_gpt, unsharded, shards):
    got = cs.trace_average(facts_gpt, FACTS, samples=3, shards=shards, progress=False)
    same(got, unsharded)
    assert got.meta["n_facts"] == unsharded.meta["n_facts"] and got.meta["skipped"] == unsharded.meta["skipped"]
    assert got.meta["executor"]["shards"] == shards and got.meta["executor"]["computed_shards"] == shards
    for x, y in zip(got.traces, unsharded.traces, strict=True):  # every fact's own trace, in the facts' order
        assert x.meta["prompt"] == y.meta["prompt"] and x.meta["kind"] == y.meta["kind"]
        assert torch.allclose(x.values, y.values, atol=1e-6)


def test_by_name_and_by_spec_equal_the_loaded_model(unsharded):
    same(cs.trace_average("facts-gpt", FACTS, samples=3, shards=2, progress=False), unsharded)
    same(cs.trace_average(cs.ModelSpec("facts-gpt"), FACTS, samples=3, shards=2, progress=False), unsharded)


def test_out_folder_resumes_only_the_missing_shards(facts_gpt, unsharded, tmp_path, capsys):
    first = cs.trace_average(facts_gpt, FACTS, samples=3, shards=6, out=tmp_path, progress=False)
    same(first, unsharded)
    files = sorted(tmp_path.glob("shard-*.npz"))
    assert len(files) == 6 and (tmp_path / "manifest.json").is_file()
    files[1].unlink()
    files[4].unlink()
    again = cs.trace_average(facts_gpt, FACTS, samples=3, shards=6, out=tmp_path, progress=False)
    same(again, unsharded)
    assert again.meta["executor"]["reused_shards"] == 4 and again.meta["executor"]["computed_shards"] == 2
    assert "reused 4 of 6 finished shards" in capsys.readouterr().err
    assert len(list(tmp_path.glob("shard-*.npz"))) == 6


def test_out_folder_of_another_run_is_refused(facts_gpt, tmp_path):
    cs.trace_average(facts_gpt, FACTS[:4], samples=3, out=tmp_path, progress=False)
    with pytest.raises(cs.InputError, match="another run.*samples: 3 there, 2 here"):
        cs.trace_average(facts_gpt, FACTS[:4], samples=2, out=tmp_path, progress=False)
    with pytest.raises(cs.InputError, match="another run"):  # other facts
        cs.trace_average(facts_gpt, FACTS[4:8], samples=3, out=tmp_path, progress=False)
    other = cs.load("facts-gpt")
    with torch.no_grad():
        other.module.transformer.h[0].mlp.c_fc.weight.mul_(1.01)  # another model: same name, other weights
    with pytest.raises(cs.InputError, match="another run"):
        cs.trace_average(other, FACTS[:4], samples=3, out=tmp_path, progress=False)


def test_bad_executor_settings_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(cs.InputError, match="executor must be"):
        cs.trace_average("facts-gpt", FACTS[:2], executor="ray")
    with pytest.raises(cs.InputError, match="shards"):
        cs.trace_average("facts-gpt", FACTS[:2], shards=0)
    with pytest.raises(cs.InputError, match="is a file"):
        cs.trace_average("facts-gpt", FACTS[:2], out=tmp_path / "file")
    with pytest.raises(cs.InputError, match="workers"):
        cs.RayExecutor(workers=0)
    with pytest.raises(cs.InputError, match="fn"):
        cs.sweep(3, [1], model="facts-gpt")
    with pytest.raises(cs.InputError, match="items"):
        cs.sweep(lambda m, x: x, "abc", model="facts-gpt")


def test_sweep_equals_a_loop_and_stacks_labelled_results(facts_gpt):
    prompts = [f.prompt for f in FACTS[:5]]
    got = cs.sweep(lambda m, p: cs.logit_lens(m, p, k=1), prompts, model=facts_gpt, shards=2, progress=False)
    ref = [cs.logit_lens(facts_gpt, p, k=1) for p in prompts]
    assert len({r.shape for r in ref}) > 1 and isinstance(got, list)  # shapes differ: a list, in item order
    assert all(torch.equal(a.values, b.values) and a.coords == b.coords for a, b in zip(got, ref, strict=True))
    lengths = cs.sweep(lambda m, p: len(m.tokenizer.tokenize(p)), prompts, model=facts_gpt, progress=False)
    assert lengths.dims == ("item",) and lengths.values.tolist() == [len(facts_gpt.tokenizer.tokenize(p))
                                                                       for p in prompts]
    traces = cs.sweep(lambda m, f: cs.causal_trace(m, f.prompt, f.subject, kind="mlp", samples=2),
                      [FACTS[0]] * 3, model=facts_gpt, shards=3, progress=False)
    one = cs.causal_trace(facts_gpt, FACTS[0].prompt, FACTS[0].subject, kind="mlp", samples=2)
    assert traces.dims == ("item", *one.dims) and traces.aux_coords["token"] == one.aux_coords["token"]
    assert all(torch.allclose(traces.values[i], one.values, atol=1e-6) for i in range(3))


def test_sweep_seeds_each_item_not_each_shard_and_restores_the_generators():
    before = torch.random.get_rng_state()
    draws = [cs.sweep(lambda m, x: torch.rand(()).item() + x, list(range(7)), model="facts-gpt", shards=k,
                      progress=False).values for k in (1, 3, 7)]
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    assert len(set(draws[0].tolist())) == 7  # each item its own draw
    assert torch.equal(torch.random.get_rng_state(), before)
    other = cs.sweep(lambda m, x: torch.rand(()).item() + x, list(range(7)), model="facts-gpt", seed=1,
                     progress=False).values
    assert not torch.equal(other, draws[0])


def test_an_interrupted_sweep_keeps_its_finished_shards(tmp_path):
    stop = tmp_path / "stop"
    stop.write_text("")

    def fn(m, x):
        if x == 5 and stop.exists():
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        return x * 10

    with pytest.raises(KeyboardInterrupt):
        cs.sweep(fn, list(range(9)), model="facts-gpt", shards=3, out=tmp_path / "run", progress=False)
    assert len(list((tmp_path / "run").glob("shard-*.npz"))) == 1  # items 0..2 finished and saved
    stop.unlink()
    got = cs.sweep(fn, list(range(9)), model="facts-gpt", shards=3, out=tmp_path / "run", progress=False)
    assert got.values.tolist() == [x * 10 for x in range(9)]
    assert got.meta["executor"]["reused_shards"] == 1 and got.meta["executor"]["computed_shards"] == 2


def test_a_sweep_result_the_library_cannot_save_is_refused_by_name(tmp_path):
    with pytest.raises(cs.InputError, match="cannot save a set"):
        cs.sweep(lambda m, x: {x}, [1, 2], model="facts-gpt", out=tmp_path, progress=False)


def test_bundles_round_trip_exactly_and_refuse_other_files(tmp_path):
    r = cs.causal_trace("facts-gpt", FACTS[0].prompt, FACTS[0].subject, kind="mlp", samples=2)
    obj = [{"trace": r, "n": 2**62, "nan": float("nan"), "pair": (1, "a")}, None,
           torch.arange(4, dtype=torch.bfloat16), [True, 0.5, "x"]]
    back = load_bundle(save_bundle(tmp_path / "b.npz", obj))
    assert type(back[0]["trace"]) is type(r) and torch.equal(back[0]["trace"].values, r.values)
    assert back[0]["trace"].meta == r.meta and back[0]["trace"].aux_coords == r.aux_coords
    assert back[0]["n"] == 2**62 and back[0]["pair"] == (1, "a") and back[0]["nan"] != back[0]["nan"]
    assert back[1] is None and back[2].dtype == torch.bfloat16 and torch.equal(back[2], obj[2])
    assert back[3] == [True, 0.5, "x"]
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(cs.InputError, match="not a causalscope bundle"):
        load_bundle(tmp_path / "junk.npz")
    r.save(tmp_path / "result")
    with pytest.raises(cs.InputError, match="not a causalscope bundle"):
        load_bundle(tmp_path / "result.npz")
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written file left behind


def test_a_rerun_keeps_the_folders_shards_whatever_the_workers(facts_gpt, unsharded, tmp_path):
    cs.trace_average(facts_gpt, FACTS, samples=3, shards=5, out=tmp_path, progress=False)
    again = cs.trace_average(facts_gpt, FACTS, samples=3, out=tmp_path, progress=False)  # no shards= given
    assert again.meta["executor"]["shards"] == 5 and again.meta["executor"]["reused_shards"] == 5
    other = cs.trace_average(facts_gpt, FACTS, samples=3, shards=3, out=tmp_path, progress=False)  # asked: 3
    assert other.meta["executor"]["shards"] == 3 and other.meta["executor"]["computed_shards"] == 3
    same(other, unsharded)


def test_a_bundled_models_fingerprint_follows_its_weights(monkeypatch):
    from causalscope import zoo
    from causalscope.executors import model_fingerprint

    before = model_fingerprint("facts-gpt")
    assert before == model_fingerprint("facts-gpt")
    build = zoo.REGISTRY["facts-gpt"][0]

    def retrained():  # a later release ships other weights under the same name
        module, tok = build()
        with torch.no_grad():
            module.transformer.wte.weight[0, 0] += 1e-3
        return module, tok

    monkeypatch.setitem(zoo.REGISTRY, "facts-gpt", (retrained, zoo.REGISTRY["facts-gpt"][1]))
    assert model_fingerprint("facts-gpt") != before


def test_in_process_the_bar_moves_item_by_item_and_inner_reports_are_not_items(bar_updates):
    updates = bar_updates

    def fn(m, x):  # an unsharded trace_average inside reports its facts: they must not count as sweep items
        cs.trace_average(m, FACTS[:2], samples=2, progress=False)
        return x

    cs.sweep(fn, list(range(4)), model="facts-gpt", shards=2, progress=True)
    assert updates == [0, 1, 1, 1, 1]
