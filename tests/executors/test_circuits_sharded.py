"""node_effects, EAP and EAP-IG over their inputs in shards (in process, and on a local Ray with 2 workers) equal the
unsharded in-process call: node effects exactly (they are counts), attribution scores to a relative 1e-6 (a sum
over inputs, added in another order). The references are the unsharded calls, checked against plain loops and
closed forms in tests/circuits. The Ray tests carry the ``ray`` marks; the in-process ones run without Ray.
"""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope import circuits

EAP = {"eap": (circuits.edge_attribution_patching, {}), "eap_ig": (circuits.eap_ig, {"steps": 3})}
g = torch.Generator().manual_seed(0)
CLEAN = [torch.randint(1, 50, (n,), generator=g).tolist() for n in (5, 3, 5, 4, 3, 4, 5)]  # token ids, ragged
CORRUPTED = [torch.randint(1, 50, (len(c),), generator=g).tolist() for c in CLEAN]
NE = {"pairs": 150, "scales": [0.0, 0.5, 2.0], "seed": 1, "progress": False}   # a seeded sample of pairs: seconds


@pytest.fixture(scope="module")
def reverse():
    return circuits.load_case("reverse")


@pytest.fixture(scope="module")
def frac():
    return circuits.load_case("frac-prevs")  # numerical outputs


def same_scores(got, ref) -> None:
    """Equal scores (relative 1e-6: a sum over inputs in another order), names and meta but for the executor."""
    assert got.dims == ref.dims and got.coords == ref.coords
    err = (got.values - ref.values).abs().max().item()
    assert err <= 1e-6 * max(1.0, ref.values.abs().max().item()), err
    meta = {k: v for k, v in got.meta.items() if k != "executor"}
    assert meta.keys() == ref.meta.keys()
    for k, v in ref.meta.items():
        if isinstance(v, float):
            assert meta[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
        else:
            assert meta[k] == v, k


def same_effects(got, ref) -> None:
    """Node effects are ratios of counts: the same numbers to 1e-6 (in fact exactly), the same meta."""
    assert got.dims == ref.dims and got.coords == ref.coords
    assert torch.equal(got.values.isnan(), ref.values.isnan())
    assert (got.values - ref.values).nan_to_num().abs().max().item() <= 1e-6
    assert {k: v for k, v in got.meta.items() if k != "executor"} == ref.meta


# -- EAP / EAP-IG in process ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shards", [1, 3, 7])
@pytest.mark.parametrize("name", list(EAP))
def test_sharded_attribution_equals_the_unsharded_call(reverse, name, shards):
    fn, kw = EAP[name]
    got = fn(reverse, shards=shards, **kw)
    same_scores(got, fn(reverse, **kw))
    info = got.meta["executor"]
    assert info["executor"] == "in process" and info["shards"] == info["computed_shards"] == shards


@pytest.mark.parametrize("kw", [{"corrupted": "mean"}, {"corrupted": "zero"}, {"metric": "kl"},
                                {"endpoints": "left", "seed": 4}], ids=str)
@pytest.mark.parametrize("name", list(EAP))
def test_sharded_attribution_settings(reverse, name, kw):
    """A mean corruption's mean is over all inputs (not each shard's); other corruptions, metrics, seeds."""
    fn, base = EAP[name]
    if "endpoints" in kw and name == "eap":
        kw = {"seed": 4}
    same_scores(fn(reverse, shards=3, **base, **kw), fn(reverse, **base, **kw))


@pytest.mark.parametrize("name", list(EAP))
def test_sharded_attribution_on_a_numerical_case_with_given_corruption_and_own_metric(frac, name):
    fn, kw = EAP[name]
    x = frac.inputs[:40]
    y = circuits.resample(x, seed=7)

    def last(logits):  # one value per row
        return logits[:, -1, 0]

    same_scores(fn(frac.model, x, y, shards=4, **kw), fn(frac.model, x, y, **kw))
    same_scores(fn(frac.model, x, y, metric=last, shards=4, **kw), fn(frac.model, x, y, metric=last, **kw))
    same_scores(fn(frac, shards=5, **kw), fn(frac, **kw))  # the case's labels and positions


@pytest.mark.parametrize("name", list(EAP))
def test_sharded_attribution_over_prompts_of_different_lengths(gpt2, name):
    """Each shard keeps the batch's padded width and every row's own length; a resample pairs equal lengths."""
    fn, kw = EAP[name]

    def last_logit(logits, lengths):
        return logits[torch.arange(len(logits)), lengths - 1, 7]

    same_scores(fn(gpt2, CLEAN, CORRUPTED, shards=3, **kw), fn(gpt2, CLEAN, CORRUPTED, **kw))
    same_scores(fn(gpt2, CLEAN, positions=[-1], shards=4, **kw), fn(gpt2, CLEAN, positions=[-1], **kw))
    same_scores(fn(gpt2, CLEAN, CORRUPTED, metric=last_logit, shards=2, **kw),
                fn(gpt2, CLEAN, CORRUPTED, metric=last_logit, **kw))
    with pytest.raises(cs.InputError, match="different lengths.*give it a `lengths` parameter"):
        fn(gpt2, CLEAN, CORRUPTED, metric=lambda y: y[:, -1, 7], shards=2, **kw)


def test_an_in_process_executor_object_and_its_default_shards(reverse):
    got = circuits.eap_ig(reverse, steps=2, executor=cs.InProcessExecutor())
    same_scores(got, circuits.eap_ig(reverse, steps=2))
    assert got.meta["executor"]["shards"] == 4


# -- node effects in process ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def effects(reverse):
    return circuits.node_effects(reverse, **NE)


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_sharded_node_effects_equal_the_unsharded_call(reverse, effects, shards):
    got = circuits.node_effects(reverse, shards=shards, **NE)
    same_effects(got, effects)
    assert got.meta["executor"]["shards"] == got.meta["executor"]["computed_shards"] == shards


@pytest.mark.parametrize("kw", [{"ablation": "mean", "scales": [0.0, 0.5, 1.0]}, {"ablation": "zero", "scales": [0.0]},
                                {"positions": [1, 3], "ties": "first", "pairs": 100, "scales": [0.0, 1.2]},
                                {"nodes": ["a0.h0", "m1"], "scales": [0.5], "pairs": 100}], ids=str)
def test_sharded_node_effects_settings(reverse, kw):
    """A mean ablation's mean is taken over all inputs first; positions, ties, nodes, scales without 0."""
    kw = {"progress": False, "seed": 2, **kw}
    same_effects(circuits.node_effects(reverse, shards=3, **kw), circuits.node_effects(reverse, **kw))


def test_sharded_node_effects_on_a_numerical_case_and_given_inputs(frac):
    x = frac.inputs[:30]
    kw = {"pairs": 80, "scales": [0.0, 2.0], "categorical": False, "progress": False}
    same_effects(circuits.node_effects(frac.model, x, shards=4, **kw), circuits.node_effects(frac.model, x, **kw))
    same_effects(circuits.node_effects(frac, shards=3, ablation="mean", scales=[0.5], progress=False),
                 circuits.node_effects(frac, ablation="mean", scales=[0.5], progress=False))


# -- out=: a rerun reuses every shard -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*EAP, "node_effects"])
def test_an_out_rerun_reuses_every_shard(reverse, effects, tmp_path, name, capsys):
    if name == "node_effects":
        def run():
            return circuits.node_effects(reverse, shards=3, out=tmp_path, **NE)
        ref, check = effects, same_effects
    else:
        fn, kw = EAP[name]

        def run():
            return fn(reverse, shards=3, out=tmp_path, **kw)
        ref, check = fn(reverse, **kw), same_scores
    first = run()
    check(first, ref)
    assert first.meta["executor"]["computed_shards"] == 3 and len(list(tmp_path.glob("shard-*.npz"))) == 3
    again = run()
    check(again, ref)
    assert again.meta["executor"]["reused_shards"] == 3 and again.meta["executor"]["computed_shards"] == 0
    assert again.meta["executor"]["out"] == str(tmp_path)
    assert "reused 3 of 3 finished shards" in capsys.readouterr().err


def test_an_out_folder_of_another_run_is_refused(reverse, tmp_path):
    circuits.eap_ig(reverse, steps=2, shards=2, out=tmp_path)
    with pytest.raises(cs.InputError, match="another run.*delete"):
        circuits.eap_ig(reverse, steps=3, shards=2, out=tmp_path)
    circuits.node_effects(reverse, shards=2, out=tmp_path / "ne", **NE)
    with pytest.raises(cs.InputError, match="another run"):
        circuits.node_effects(reverse, shards=2, out=tmp_path / "ne", **{**NE, "seed": 9})  # other pairs


# -- bad input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*EAP, "node_effects"])
def test_bad_executor_settings_are_refused(reverse, name):
    fn = circuits.node_effects if name == "node_effects" else EAP[name][0]
    with pytest.raises(cs.InputError, match="executor must be None"):
        fn(reverse, executor="ray")
    with pytest.raises(cs.InputError, match="shards must be"):
        fn(reverse, shards=0)
    if name != "node_effects":
        with pytest.raises(cs.InputError, match="progress must be True or False"):
            fn(reverse, shards=2, progress="yes")


@pytest.mark.parametrize("name", list(EAP))
def test_a_metric_of_the_whole_batch_cannot_be_sharded(frac, name):
    fn, kw = EAP[name]
    x = frac.inputs[:12]
    fn(frac.model, x, metric=lambda y: y[:, -1, 0].mean(), **kw)  # fine in one piece
    with pytest.raises(cs.InputError, match="one value per row.*leave executor, out and shards out"):
        fn(frac.model, x, metric=lambda y: y[:, -1, 0].mean(), shards=3, **kw)


@pytest.mark.parametrize("name", list(EAP))
def test_bad_attribution_inputs_are_refused_before_sharding(reverse, name):
    fn, kw = EAP[name]
    x = reverse.inputs[:6]
    with pytest.raises(cs.InputError, match="Unknown corruption 'shuffle'.*one of resample, zero, mean"):
        fn(reverse.model, x, "shuffle", shards=2, **kw)
    with pytest.raises(cs.InputError, match="5 corrupted inputs for 6 clean ones: give one corrupted row"):
        fn(reverse.model, x, x[:5], shards=2, **kw)
    with pytest.raises(cs.InputError, match="resampled corruption needs at least 2 input rows; pass corrupted="):
        fn(reverse.model, x[:1], shards=2, **kw)
    with pytest.raises(cs.InputError, match="Unknown metric 'acc'"):
        fn(reverse.model, x, metric="acc", shards=2, **kw)
    with pytest.raises(cs.InputError, match=r"labels have shape \(6, 3\); expected one per input token \(6, 5\)"):
        fn(reverse.model, x, labels=torch.zeros(6, 3, dtype=torch.long), metric="logprob", shards=2, **kw)


def test_bad_node_effects_inputs_are_refused_before_sharding(reverse):
    with pytest.raises(cs.InputError, match="pairs must be 'all'.*or a positive int"):
        circuits.node_effects(reverse, pairs=0, shards=2)
    with pytest.raises(cs.InputError, match="Unknown node 'a9.h0'"):
        circuits.node_effects(reverse, nodes=["a9.h0"], shards=2)


# -- Ray: 2 workers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(EAP))
@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_attribution_on_two_workers_equals_the_unsharded_call(ex, reverse, name):
    fn, kw = EAP[name]
    got = fn(reverse, executor=ex, **kw)
    same_scores(got, fn(reverse, **kw))
    info = got.meta["executor"]
    assert info["executor"] == "ray" and info["workers"] == 2 and info["computed_shards"] == info["shards"] == 8


@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_node_effects_on_two_workers_equal_the_unsharded_call(ex, reverse, effects):
    got = circuits.node_effects(reverse, executor=ex, shards=3, **NE)
    same_effects(got, effects)
    assert got.meta["executor"]["executor"] == "ray" and got.meta["executor"]["computed_shards"] == 3
