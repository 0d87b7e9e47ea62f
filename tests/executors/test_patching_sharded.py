"""activation_patching and attribution_patching over a data set of prompt pairs in shards (in process and on a
local Ray with 2 workers), checkpointed with out=: equal to the unsharded in-process call on the same pairs.

The reference is the unsharded call (itself checked against per-pair loops in tests/patching). Each pair has its
own answer (``cs.logit_diff`` with one token per pair), so a shard that read another pair's answer would differ.
"""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_mlp

ray = pytest.importorskip("ray")  # in the [test] extra; CI installs it

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

# (clean, corrupted, clean answer, corrupted answer): facts-gpt's held-out facts, the subject swapped
SAME = [
    ("Everyone knows that the profession of Thumtre Lesdurn is",
     "Everyone knows that the profession of Bosrel Fazindlir is", "teacher", "painter"),
    ("Everyone knows that the profession of Stailu Heilpes is",
     "Everyone knows that the profession of Kailzu Hurndral is", "painter", "engineer"),
    ("Everyone knows that the profession of Kailzu Hurndral is",
     "Everyone knows that the profession of Vrilem Trundbrai is", "engineer", "baker"),
    ("Everyone knows that the profession of Vrilem Trundbrai is",
     "Everyone knows that the profession of Grorstam Sternkran is", "baker", "doctor"),
    ("Everyone knows that the profession of Grorstam Sternkran is",
     "Everyone knows that the profession of Seso Trundbrai is", "doctor", "pilot"),
    ("Everyone knows that the profession of Seso Trundbrai is",
     "Everyone knows that the profession of Vrarnmes Kendhumfi is", "pilot", "doctor"),
    ("Everyone knows that the profession of Vrarnmes Kendhumfi is",
     "Everyone knows that the profession of Brunddi Markessen is", "doctor", "sailor"),
]
# pairs of different lengths (8, 8, 12, 9, 9, 13, 13 tokens): 3 shards hold one or two lengths each
RAGGED = [
    ("Everyone knows that Thumtre Lesdurn is employed by", "Everyone knows that Bosrel Fazindlir is employed by",
     "Strandic", "Tellamo"),
    ("Everyone knows that Stailu Heilpes is employed by", "Everyone knows that Kailzu Hurndral is employed by",
     "Tellamo", "Pelligen"),
    ("According to the records , Thumtre Lesdurn is a native speaker of",
     "According to the records , Bosrel Fazindlir is a native speaker of", "Swahili", "Greek"),
    ("Everyone knows that the profession of Stailu Fazindlir is",
     "Everyone knows that the profession of Porra Vugu is", "architect", "pilot"),
    ("Everyone knows that the profession of Virern Veindtrel is",
     "Everyone knows that the profession of Graingen Githelan is", "pilot", "sailor"),
    ("Thumtre Lesdurn , as we know , was born in the city of",
     "Bosrel Fazindlir , as we know , was born in the city of", "Lunmark", "Fennick"),
    ("Bosrel Fazindlir , as we know , was born in the city of",
     "Stailu Heilpes , as we know , was born in the city of", "Fennick", "Arvena"),
]
METHODS = {"activation": cs.activation_patching, "attribution": cs.attribution_patching}
# what a sharded activation-patching run did, where each shard picks its own schedule: summed or listed per shard
RAN = {"first_difference", "fast_path", "token_layers", "schedule", "schedule_costs"}
NUMBERS = {"raw", "clean_metric", "corrupted_metric"}  # the metric's own values: equal up to float rounding


@pytest.fixture(scope="module")
def m() -> cs.Model:
    return cs.load("facts-gpt")


def args(m: cs.Model, data: list[tuple[str, str, str, str]]) -> tuple[list[str], list[str], object]:
    """The pairs' prompts and a metric with each pair's own answers."""
    clean, corrupted = [d[0] for d in data], [d[1] for d in data]
    return clean, corrupted, cs.logit_diff([d[2] for d in data], [d[3] for d in data], model=m)


def same(got, want, tol: float = 1e-6, ran_too: bool = False) -> None:
    """Values, dims, coords and tokens equal; meta equal apart from the executor (and what the shards ran)."""
    assert got.dims == want.dims and got.coords == want.coords and got.aux_coords == want.aux_coords
    assert (got.values - want.values).abs().max().item() <= tol
    skip = {"executor"} | NUMBERS | (set() if ran_too else RAN)
    assert {k: v for k, v in got.meta.items() if k not in skip} == {k: v for k, v in want.meta.items()
                                                                    if k not in skip}
    for k in NUMBERS:
        torch.testing.assert_close(torch.tensor(got.meta[k]), torch.tensor(want.meta[k]), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("data", ["same", "ragged"])
def test_in_process_shards_equal_the_unsharded_call(m, method, data):
    fn = METHODS[method]
    pairs = SAME if data == "same" else RAGGED
    clean, corrupted, metric = args(m, pairs)
    kw = {"direction": "both", "align": "end" if data == "ragged" else None}
    want = fn(m, clean, corrupted, "resid_pre", metric, **kw)
    for shards in (1, 3, len(pairs)):
        got = fn(m, clean, corrupted, "resid_pre", metric, shards=shards, **kw)
        # one shard runs the very batch of the unsharded call: what ran is the same too
        same(got, want, ran_too=shards == 1 or method == "attribution")
        info = got.meta["executor"]
        assert info["executor"] == "in process" and info["shards"] == info["computed_shards"] == shards
        assert info["reused_shards"] == 0 and info["out"] is None
    if method == "activation":
        assert got.meta["token_layers"] > 0 and len(got.meta["first_difference"]) == len(pairs)


@pytest.mark.parametrize("method", list(METHODS))
def test_per_example_with_shards_is_the_unsharded_per_example_result(m, method):
    clean, corrupted, metric = args(m, RAGGED)
    want = METHODS[method](m, clean, corrupted, "mlp", metric, direction="both", align="start", positions=[0, 3, 7],
                           per_example=True)
    got = METHODS[method](m, clean, corrupted, "mlp", metric, direction="both", align="start", positions=[0, 3, 7],
                          per_example=True, shards=3)
    assert got.dims[-1] == "example" and got.coords["example"] == list(range(len(RAGGED)))
    same(got, want, ran_too=method == "attribution")


def test_other_sweeps_and_inputs_shard_by_row(m):
    """Heads and a site list; token ids as a tensor and as a dict of keyword tensors; a denoising-only sweep."""
    clean, corrupted, metric = args(m, SAME)
    ids = {"clean": m.adapter.tokenize(clean), "corrupted": m.adapter.tokenize(corrupted)}
    for fn in METHODS.values():
        for sites in ("heads", ["transformer.h.0.mlp", cs.Site("transformer.h.1", positions=[-1])]):
            same(fn(m, clean, corrupted, sites, metric, direction="denoise", shards=2),
                 fn(m, clean, corrupted, sites, metric, direction="denoise"), ran_too=fn is cs.attribution_patching)
        want = fn(m, ids["clean"], ids["corrupted"], "attn", metric, direction="noise")
        same(fn(m, ids["clean"], ids["corrupted"], "attn", metric, direction="noise", shards=4), want,
             ran_too=fn is cs.attribution_patching)
        lists = {k: [row.tolist() for row in v] for k, v in ids.items()}  # lists of token ids
        same(fn(m, lists["clean"], lists["corrupted"], "attn", metric, direction="noise", shards=3),
             fn(m, lists["clean"], lists["corrupted"], "attn", metric, direction="noise"),
             ran_too=fn is cs.attribution_patching)
        kw = {k: {"input_ids": v, "attention_mask": torch.ones_like(v)} for k, v in ids.items()}
        same(fn(m, kw["clean"], kw["corrupted"], "attn", metric, direction="noise", shards=3),
             fn(m, kw["clean"], kw["corrupted"], "attn", metric, direction="noise"),
             ran_too=fn is cs.attribution_patching)


def test_a_network_of_tensors_shards_its_rows():
    """Any module: float input rows (one pair per row) and a metric of the output. In float64, so that the rounding
    of batches of other sizes (float32: ~1e-6 of these scores) stays far below the tolerance."""
    net = cs.load(build_mlp().double())
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(7, 16, generator=g, dtype=torch.float64)
    corrupted = torch.randn(7, 16, generator=g, dtype=torch.float64)
    sites = ["net.0", "net.2", "net.4"]

    def metric(y):
        return y[:, 0] - y[:, 1]

    for fn in METHODS.values():
        want = fn(net, clean, corrupted, sites, metric, direction="both")
        same(fn(net, clean, corrupted, sites, metric, direction="both", shards=3), want,
             ran_too=fn is cs.attribution_patching)


@pytest.mark.parametrize("method", list(METHODS))
def test_out_folder_rerun_reuses_every_shard(m, method, tmp_path, capsys):
    fn = METHODS[method]
    clean, corrupted, metric = args(m, RAGGED)
    want = fn(m, clean, corrupted, "resid_pre", metric, direction="both", align="end")
    first = fn(m, clean, corrupted, "resid_pre", metric, direction="both", align="end", shards=3, out=tmp_path)
    assert first.meta["executor"]["computed_shards"] == 3 and len(list(tmp_path.glob("shard-*.npz"))) == 3
    again = fn(m, clean, corrupted, "resid_pre", metric, direction="both", align="end", shards=3, out=tmp_path)
    info = again.meta["executor"]
    assert info["reused_shards"] == 3 and info["computed_shards"] == 0 and info["out"] == str(tmp_path)
    assert "reused 3 of 3 finished shards" in capsys.readouterr().err
    same(again, want, ran_too=method == "attribution")
    same(again, first, tol=0.0, ran_too=True)  # the saved shards come back exactly
    # other answers for the same prompts are another run: the folder refuses it rather than reuse its shards
    other = cs.logit_diff([d[3] for d in RAGGED], [d[2] for d in RAGGED], model=m)
    with pytest.raises(cs.InputError, match="another run"):
        fn(m, clean, corrupted, "resid_pre", other, direction="both", align="end", shards=3, out=tmp_path)


class _RowIndexMetric:
    """A metric that reads each row's input index but says nothing of how many pairs it covers."""

    takes_input_index = True

    def __call__(self, y, index):
        return y[:, -1, 5] * (1 + index.to(y.device) % 2)


@pytest.mark.parametrize("method", list(METHODS))
def test_inputs_that_cannot_be_split_exactly_are_refused(m, method):
    fn = METHODS[method]
    clean, corrupted, metric = args(m, SAME)
    one = cs.logit_diff(SAME[0][2], SAME[0][3], model=m)
    with pytest.raises(cs.InputError, match="single pair.*Pass several pairs.*leave executor, out and shards out"):
        fn(m, clean[0], corrupted[0], "resid_pre", one, shards=2)
    with pytest.raises(cs.InputError, match="single pair"):
        fn(m, clean[:1], corrupted[:1], "resid_pre", one, executor=cs.InProcessExecutor())
    with pytest.raises(cs.InputError, match="single pair"):
        fn(m, m.adapter.tokenize(clean[0])[0], m.adapter.tokenize(corrupted[0])[0], "resid_pre", one, shards=2)
    with pytest.raises(cs.InputError, match="7 clean and 6 corrupted inputs; give one corrupted input per clean"):
        fn(m, clean, corrupted[:6], "resid_pre", metric, shards=2)
    with pytest.raises(cs.InputError, match=r"clean dict cannot be split.*sizes \[2, 7\]\). Give every keyword"):
        fn(m, {"input_ids": m.adapter.tokenize(clean), "past": torch.zeros(2, 3)}, corrupted, "resid_pre", metric,
           shards=2)
    with pytest.raises(cs.InputError, match="holds 'names', a list that cannot be split into pairs. Give it as"):
        fn(m, {"input_ids": m.adapter.tokenize(clean), "names": list(clean)}, corrupted, "resid_pre", metric,
           shards=2)
    with pytest.raises(cs.InputError, match="cannot split the clean input.*Pass a list of prompts"):
        fn(m, [1.0, 2.0], corrupted, "resid_pre", metric, shards=2)
    with pytest.raises(cs.InputError, match="3 answer tokens for 7 prompt pairs; give one answer per pair"):
        fn(m, clean, corrupted, "resid_pre", cs.logit_diff([5, 6, 7], [9, 3, 1]), shards=2)
    with pytest.raises(cs.InputError, match="takes_input_index.*cs.logit_diff"):
        fn(m, clean, corrupted, "resid_pre", _RowIndexMetric(), shards=2)
    with pytest.raises(cs.InputError, match="shards must be"):
        fn(m, clean, corrupted, "resid_pre", metric, shards=0)
    with pytest.raises(cs.InputError, match="executor must be"):
        fn(m, clean, corrupted, "resid_pre", metric, executor="ray")
    # the unsharded call's own errors, raised before any shard runs
    with pytest.raises(cs.InputError, match="align='end'"):
        fn(m, [d[0] for d in RAGGED], [d[1] for d in RAGGED], "resid_pre", args(m, RAGGED)[2], shards=2)
    with pytest.raises(cs.InputError, match="per= applies to a single site"):
        fn(m, clean, corrupted, "resid_pre", metric, per="neuron", shards=2)


@pytest.mark.parametrize("method", list(METHODS))
def test_on_two_ray_workers_equals_the_unsharded_call(ex, m, method):
    fn = METHODS[method]
    clean, corrupted, metric = args(m, RAGGED)
    want = fn(m, clean, corrupted, "resid_pre", metric, direction="both", align="end")
    got = fn("facts-gpt", clean, corrupted, "resid_pre", metric, direction="both", align="end", executor=ex)
    same(got, want, ran_too=method == "attribution")
    info = got.meta["executor"]
    assert info["executor"] == "ray" and info["workers"] == 2 and info["computed_shards"] == info["shards"] == 7
