"""cs.mediation and cs.abstraction_iia in shards (executor=, out=, shards=): equal to the call in one piece.

The reference is always the unsharded in-process call (itself checked against plain hook loops in
tests/abstraction): values, CIs, dims, coords, token coordinates and meta (but meta["executor"]) must agree
for any number of shards, in process and on a local Ray with 2 workers. Also: out= reruns reuse every
finished shard, and inputs a shard cannot handle exactly are refused with a cs.InputError naming the fix.
"""
from __future__ import annotations

import pytest
import torch

import causalscope as cs

ray = pytest.importorskip("ray")  # in the [test] extra; CI installs it

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

TUTORIAL = {"A": cs.Site("l1", neurons=1), "BC": cs.Site("l1", neurons=2), "Y": cs.Site("l2", neurons=1)}
WRONG = {"A": cs.Site("l1", neurons=0), "BC": "l2"}
# pairs of different lengths (each pair one length), one answer per pair
BASE = ["the cat sat on the mat", "a dog ran", "the old king saw a river near the city", "the dog sat on the rug",
        "a cat ran", "the big dog sat on the mat", "the old dog saw a river near the city"]
SOURCE = ["the dog sat on the mat", "a cat ran", "the old queen saw a river near the city", "the cat sat on the rug",
          "a dog ran", "the big cat sat on the mat", "the old cat saw a river near the city"]
ANSWERS = cs.logit_diff([5, 11, 7, 2, 3, 4, 8], [9, 3, 14, 6, 8, 1, 0])
SUBJECTS = ["cat", "the old dog", "a king", "river near the city"]   # 1 to 4 tokens


def encode(v: dict) -> list[str]:
    return [f"{SUBJECTS[a]} {['sat', 'ran'][b]}" for a, b in zip(v["A"], v["B"])]


PARITY = cs.CausalModel({"A": [], "B": [], "O": ["A", "B"]}, {"O": lambda a, b: (a + b) % 2},
                        {"A": range(4), "B": range(2), "O": [0, 1]}, encode=encode, name="parity")


def read_last(y: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of tokens 0 and 1 at each prompt's last real token."""
    last = y[:, -1] if lengths is None else y[torch.arange(len(y)), lengths - 1]
    return last[:, :2]


def same(got: cs.LabelledArray, want: cs.LabelledArray, tol: float = 1e-6) -> None:
    """Equal values (NaN where NaN), dims, coords, token coordinates, and meta but for meta["executor"]."""
    assert got.dims == want.dims and got.coords == want.coords and got.aux_coords == want.aux_coords
    assert torch.equal(got.values.isnan(), want.values.isnan())
    assert (got.values - want.values).nan_to_num().abs().max().item() <= tol
    assert {k: v for k, v in got.meta.items() if k != "executor"} == want.meta and "executor" not in want.meta


@pytest.fixture(scope="module")
def ds() -> cs.CounterfactualDataset:
    return cs.counterfactuals(vary=["A", "B"], n=23, seed=5)


@pytest.fixture(scope="module")
def tiny() -> cs.Model:
    return cs.load("tiny-gpt2")


# -- mediation ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shards", [1, 3, 7])
def test_sharded_mediation_equals_the_unsharded_call(ds, shards):
    want = cs.mediation("adder", ds, "neurons", n_boot=300, seed=4)
    got = cs.mediation("adder", ds, "neurons", n_boot=300, seed=4, shards=shards)
    same(got, want)
    info = got.meta["executor"]
    assert info["executor"] == "in process" and info["shards"] == info["computed_shards"] == shards
    per = cs.mediation("adder", ds, "neurons", per_example=True, shards=shards)
    same(per, cs.mediation("adder", ds, "neurons", per_example=True))


def test_sharded_mediation_of_a_site_list_with_a_lambda_metric(ds):
    m = cs.load("adder")
    sites = [cs.Site("l1", neurons=[0, 2]), "l2"]
    kw = dict(metric=lambda y: 2 * y[:, 0], tol=0.5, n_boot=50, ci=0.8)
    same(cs.mediation(m, (ds.base, ds.source), sites, shards=4, **kw), cs.mediation(m, (ds.base, ds.source), sites,
                                                                                      **kw))


@pytest.mark.parametrize("shards", [1, 3, 7])
@pytest.mark.parametrize("kw", [dict(sites="resid_pre", align="end"),
                                dict(sites="mlp", align="start", positions=[0, 2]),
                                dict(sites=["layers.0.mlp", cs.Site("layers.1", positions=-1)], schedule="floor")],
                         ids=["grid-end", "grid-start", "site-list-floor"])
def test_sharded_mediation_on_a_language_model_with_pairs_of_different_lengths(tiny, shards, kw):
    kw = dict(kw)
    sites = kw.pop("sites")
    want = cs.mediation(tiny, (BASE, SOURCE), sites, metric=ANSWERS, n_boot=100, **kw)
    got = cs.mediation(tiny, (BASE, SOURCE), sites, metric=ANSWERS, n_boot=100, shards=shards, **kw)
    same(got, want)
    assert got.meta["lengths"] == want.meta["lengths"] and got.meta["schedule"] == want.meta["schedule"]


def test_sharded_mediation_of_one_length_token_ids(tiny):
    base = tiny.adapter.tokenize([BASE[0], BASE[3], "the dog ran on the mat"])
    src = tiny.adapter.tokenize([SOURCE[0], SOURCE[3], "the cat ran on the mat"])
    metric = cs.logit_diff([5, 6, 7], [9, 3, 1])
    want = cs.mediation(tiny, (base, src), "resid_pre", metric=metric, n_boot=60)
    same(cs.mediation(tiny, (base, src), "resid_pre", metric=metric, n_boot=60, shards=2), want)
    assert want.aux_coords  # the token coordinate came back from the plan


# -- abstraction_iia ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shards", [1, 3, 7])
def test_sharded_abstraction_iia_equals_the_unsharded_call(shards):
    cm = cs.adder_causal_model()
    for alignment in (TUTORIAL, WRONG):
        want = cs.abstraction_iia("adder", cm, alignment, n=40, seed=3, n_boot=200)  # pairs drawn with n and seed
        got = cs.abstraction_iia("adder", cm, alignment, n=40, seed=3, n_boot=200, shards=shards)
        same(got, want)
        assert got.meta["executor"]["shards"] == shards
    given = cm.counterfactuals(vary="A", n=17, intervene="A", seed=2)
    same(cs.abstraction_iia("adder", cm, WRONG, given, tol=0.3, shards=shards),
         cs.abstraction_iia("adder", cm, WRONG, given, tol=0.3))


def test_sharded_abstraction_iia_with_a_categorical_output_on_prompts_of_different_lengths(tiny):
    data = PARITY.counterfactuals(n=20, seed=1)
    alignment = {"A": cs.Site("layers.1", positions=-1), "B": [cs.Site("layers.0", positions=-1)]}
    kw = dict(metric=read_last, align="end", n_boot=80)
    want = cs.abstraction_iia(tiny, PARITY, alignment, data, **kw)
    for shards in (3, 7):
        same(cs.abstraction_iia(tiny, PARITY, alignment, data, shards=shards, **kw), want)


# -- out= -----------------------------------------------------------------------------------------------------------
def test_an_out_rerun_reuses_every_shard(ds, tmp_path, capsys):
    want = cs.mediation("adder", ds, "neurons", n_boot=100)
    first = cs.mediation("adder", ds, "neurons", n_boot=100, shards=4, out=tmp_path / "med")
    same(first, want)
    assert len(list((tmp_path / "med").glob("shard-*.npz"))) == 4
    again = cs.mediation("adder", ds, "neurons", n_boot=100, shards=4, out=tmp_path / "med")
    same(again, want)
    assert again.meta["executor"]["reused_shards"] == 4 and again.meta["executor"]["computed_shards"] == 0
    assert "reused 4 of 4 finished shards" in capsys.readouterr().err
    # the reduction runs here: another bootstrap (or per_example) over the same shards computes nothing
    other = cs.mediation("adder", ds, "neurons", n_boot=70, seed=9, shards=4, out=tmp_path / "med")
    same(other, cs.mediation("adder", ds, "neurons", n_boot=70, seed=9))
    assert other.meta["executor"]["computed_shards"] == 0

    cm = cs.adder_causal_model()
    want = cs.abstraction_iia("adder", cm, TUTORIAL, n=30, n_boot=100)
    same(cs.abstraction_iia("adder", cm, TUTORIAL, n=30, n_boot=100, shards=3, out=tmp_path / "iia"), want)
    again = cs.abstraction_iia("adder", cm, TUTORIAL, n=30, n_boot=100, shards=3, out=tmp_path / "iia")
    same(again, want)
    assert again.meta["executor"]["reused_shards"] == 3 and again.meta["executor"]["computed_shards"] == 0


def scaled(k: float):
    return lambda y: y[:, 0] * k


def test_an_out_folder_of_another_run_is_refused(ds, tmp_path):
    cs.mediation("adder", ds, "neurons", metric=scaled(1.0), n_boot=20, shards=2, out=tmp_path)
    again = cs.mediation("adder", ds, "neurons", metric=scaled(1.0), n_boot=20, shards=2, out=tmp_path)
    assert again.meta["executor"]["reused_shards"] == 2  # the same metric: another lambda object of the same data
    with pytest.raises(cs.InputError, match="another run"):  # one code closing over another value: another metric
        cs.mediation("adder", ds, "neurons", metric=scaled(2.0), n_boot=20, shards=2, out=tmp_path)
    cm = cs.adder_causal_model()
    cs.abstraction_iia("adder", cm, TUTORIAL, n=10, shards=2, out=tmp_path / "iia")
    with pytest.raises(cs.InputError, match="another run"):  # other pairs: another seed draws them
        cs.abstraction_iia("adder", cm, TUTORIAL, n=10, seed=1, shards=2, out=tmp_path / "iia")


# -- refusals -----------------------------------------------------------------------------------------------------------
def test_inputs_a_shard_cannot_handle_exactly_are_refused(ds, tiny):
    ids = tiny.adapter.tokenize([BASE[0], BASE[3]])
    src = tiny.adapter.tokenize([SOURCE[0], SOURCE[3]])
    kw = dict(metric=cs.logit(5), n_boot=10, shards=2)
    with pytest.raises(cs.InputError, match="splits the data into its pairs.*input_ids as one tensor"):
        cs.mediation(tiny, ({"input_ids": ids}, {"input_ids": src}), "resid_pre", **kw)
    with pytest.raises(cs.InputError, match="3 answers for 2 pairs.*one per pair"):
        cs.mediation(tiny, (ids, src), "resid_pre", metric=cs.logit_diff([1, 2, 3], [4, 5, 6]), shards=2)

    class Indexed:
        takes_input_index = True

        def __call__(self, y, index=None):
            return y[:, -1, 0]
    with pytest.raises(cs.InputError, match="takes_input_index.*one per pair"):
        cs.mediation(tiny, (ids, src), "resid_pre", metric=Indexed(), shards=2)
    with pytest.raises(cs.InputError, match="one answer for all pairs"):
        data = PARITY.counterfactuals(n=4, seed=0)
        cs.abstraction_iia(tiny, PARITY, {"A": cs.Site("layers.1", positions=-1)}, data, align="end", shards=2,
                           metric=cs.logit_diff([0, 1, 0, 1], [1, 0, 1, 0]))
    with pytest.raises(cs.InputError, match="shards must be"):
        cs.mediation("adder", ds, "neurons", shards=0)
    with pytest.raises(cs.InputError, match="executor must be None"):
        cs.abstraction_iia("adder", cs.adder_causal_model(), TUTORIAL, n=5, executor="ray")


def test_errors_of_the_call_in_one_piece_raise_the_same_in_shards(ds):
    cm = cs.adder_causal_model()
    for kw in ({}, {"shards": 2}):
        with pytest.raises(cs.abstraction.AlignmentSiteError, match="Alignment of 'A'"):
            cs.abstraction_iia("adder", cm, {"A": "nowhere"}, n=5, **kw)
        with pytest.raises(cs.InputError, match="same shape"):
            cs.mediation("adder", (torch.zeros(3, 3), torch.zeros(4, 3)), **kw)
        with pytest.raises(cs.InputError, match="align"):
            cs.mediation("tiny-gpt2", (BASE[:2], SOURCE[:2]), "resid_pre", metric=cs.logit(3), **kw)


# -- Ray ----------------------------------------------------------------------------------------------------------------
def test_mediation_on_two_ray_workers_equals_the_unsharded_call(ex, ds):
    got = cs.mediation("adder", ds, "neurons", n_boot=200, executor=ex)
    same(got, cs.mediation("adder", ds, "neurons", n_boot=200))
    info = got.meta["executor"]
    assert info["executor"] == "ray" and info["workers"] == 2 and info["computed_shards"] == info["shards"] == 8
    metric = scaled(3.0)  # a closure travels to the workers by value
    kw = dict(metric=metric, tol=0.5, n_boot=50)
    same(cs.mediation("adder", (ds.base, ds.source), [cs.Site("l1", neurons=1), "l2"], executor=ex, shards=3, **kw),
         cs.mediation("adder", (ds.base, ds.source), [cs.Site("l1", neurons=1), "l2"], **kw))


def test_abstraction_iia_on_two_ray_workers_equals_the_unsharded_call(ex):
    cm = cs.adder_causal_model()
    got = cs.abstraction_iia("adder", cm, WRONG, n=30, seed=2, n_boot=200, executor=ex, shards=5)
    same(got, cs.abstraction_iia("adder", cm, WRONG, n=30, seed=2, n_boot=200))
    assert got.meta["executor"]["executor"] == "ray" and got.meta["executor"]["computed_shards"] == 5

