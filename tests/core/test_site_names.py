"""Site names: compact (runs of indices as ``a..b``), one name per site (the name keys a run's cache), and read
back by ``as_site`` / ``Site.from_name``. The reference for "the same site" is the tuple of its fields."""
from __future__ import annotations

import random
import re

import pytest
import torch

import causalscope as cs
from causalscope.core import Site, as_site
from causalscope.errors import SiteError


def fields(s: Site) -> tuple:
    """The reference identity of a (basis-free) site: its fields, a slice as its three ends."""
    def idx(v):
        return ("slice", v.start, v.stop, v.step) if isinstance(v, slice) else v
    return (s.module, s.io, idx(s.positions), idx(s.neurons), idx(s.heads), s.n_heads)


def random_index(rng: random.Random, slices: bool = True):
    kind = rng.random()
    if kind < 0.25:
        return None
    if kind < 0.45 and slices:  # slices (positions only), often the same indices a list would select
        ends = [None, -3, -1, 0, 1, 2, 3, 5]
        return slice(rng.choice(ends), rng.choice(ends), rng.choice([None, None, 1, 2, -1]))
    # lists: runs (ascending, descending), negatives, scattered indices, in any order, no repeats
    pieces: list[int] = []
    for _ in range(rng.randint(1, 3)):
        a = rng.randint(-4, 6)
        n = rng.choice([1, 1, 2, 3, 4])
        pieces += list(range(a, a + n)) if rng.random() < 0.8 else list(range(a, a - n, -1))
    out = list(dict.fromkeys(pieces))
    if rng.random() < 0.2:
        rng.shuffle(out)
    return out


def random_site(rng: random.Random) -> Site:
    return Site(rng.choice(["layers.1", "layers.1.mlp", "net.0"]), io=rng.choice(["output", "input"]),
                positions=random_index(rng), neurons=random_index(rng, False), heads=random_index(rng, False),
                n_heads=rng.choice([None, None, 2, 4]))


def test_names_are_distinct_exactly_for_distinct_sites():
    rng = random.Random(0)
    sites = [random_site(rng) for _ in range(600)]
    by_fields: dict[tuple, str] = {}
    by_name: dict[str, tuple] = {}
    for s in sites:
        f, name = fields(s), s.name
        assert by_fields.setdefault(f, name) == name, f"one site, two names: {f}"
        assert by_name.setdefault(name, f) == f, f"two sites share the name {name!r}: {by_name[name]} and {f}"
        assert (Site.from_name(name) == s) and fields(as_site(name)) == f  # read back into the same site
    assert len(by_fields) > 400  # the draw is varied, and some sites repeat (equal sites, equal names)
    assert len(by_fields) < len(sites)


@pytest.mark.parametrize(("a", "b"), [
    (Site("m", positions=range(3)), Site("m", positions=slice(0, 3))),     # a list and the slice selecting it
    (Site("m", positions=[-3, -2, -1]), Site("m", positions=slice(-3, None))),
    (Site("m", positions=slice(0, 4)), Site("m", positions=slice(0, 4, 1))),  # the step was dropped before
    (Site("m", heads=[0], n_heads=4), Site("m", heads=[0], n_heads=8)),      # n_heads was not named before
    (Site("m", heads=[0]), Site("m", heads=[0], n_heads=4)),
    (Site("m", neurons=[0, 1, 2]), Site("m", neurons=[2, 1, 0])),            # order is part of the site
    (Site("m", positions=[1, 2]), Site("m", neurons=[1, 2])),
])
def test_sites_that_select_alike_still_have_names_of_their_own(a, b):
    assert a != b and a.name != b.name


def test_runs_are_compact():
    assert Site("act1", neurons=list(range(128))).name == "act1[neurons=0..127]"
    assert Site("act1", neurons=[0, 1, 2, 3, 7, 9, 10, 11]).name == "act1[neurons=0..3,7,9..11]"
    assert Site("layers.2", positions=[-3, -2, -1]).name == "layers.2[pos=-3..-1]"
    # short lists read as before (a run of two stays a,b; descending lists are written out)
    assert Site("layers.2.mlp", neurons=[1, 17, 40]).name == "layers.2.mlp[neurons=1,17,40]"
    assert Site("layers.1.attn.z", heads=[2, 3]).name == "layers.1.attn.z[heads=2,3]"
    assert Site("m", neurons=[3, 2, 1]).name == "m[neurons=3,2,1]"
    # the length grows with the number of runs, not of indices
    for n in (10, 1000, 100_000):
        assert len(Site("act1", neurons=range(n)).name) <= len("act1[neurons=0..99999]")
    rng = random.Random(1)
    for _ in range(50):
        runs = sorted(rng.sample(range(0, 5000, 50), 6))
        idx = [i for start in runs for i in range(start, start + rng.randint(3, 40))]
        assert len(Site("m", neurons=idx).name) <= len("m[neurons=]") + 6 * len("4950..4989,")


def test_slices_and_io_in_names():
    assert Site("layers.3", io="input", positions=slice(-2, None)).name == "layers.3[input, pos=-2:]"
    assert Site("m", positions=slice(None, None, 2)).name == "m[pos=::2]"
    assert Site("m", positions=slice(None)).name == "m[pos=:]"
    assert Site("layers.2.attn.z", heads=[1], neurons=[0, 5], n_heads=4).name == \
        "layers.2.attn.z[heads=1, neurons=0,5, n_heads=4]"


def test_a_subspace_site_is_named_by_its_size_and_is_not_read_back():
    b = torch.linalg.qr(torch.randn(8, 2)).Q
    s = Site("l1", basis=b)
    assert s.name == "l1[subspace=2]"
    with pytest.raises(SiteError, match=r"names a subspace site.*basis="):
        Site.from_name(s.name)


@pytest.mark.parametrize(("text", "words"), [
    ("layers.1[pos=3", "is not a site name"),
    ("layers.1[pos=x]", "'x' is not an integer"),
    ("layers.1[pos=1..x]", "'x' is not an integer"),
    ("layers.1[pos=5..2]", "counts down"),
    ("layers.1[pos=1:2:3:4]", "more than three parts"),
    ("layers.1[neurons=0..99999999999]", "holds over 16777216 indices"),
    ("layers.1[cols=3]", "'cols=3' is not one of 'input', 'pos=...'"),
    ("layers.1[pos=1, pos=2]", "'pos=2' is not one of"),
    ("layers.1[pos=1,1]", "repeat an index"),
    ("layers.1[]", "'' is not one of"),
])
def test_text_that_is_not_a_site_name_is_refused(text, words):
    with pytest.raises(SiteError, match=re.escape(words)):
        as_site(text)


def test_a_module_path_cannot_hold_a_bracket():
    with pytest.raises(SiteError, match=r"holds a bracket.*as_site\('layers\.2\[pos=3\]'\)"):
        Site("layers.2[pos=3]")


def test_names_key_the_cache(gpt2):
    """Two sites that select the same positions, as a list and as a slice, are cached apart."""
    listed, sliced = Site("layers.1", positions=[0, 1, 2]), Site("layers.1", positions=slice(0, 3))
    run = gpt2.run("the cat sat on the mat", cache=[listed, sliced, "layers.1[pos=0..2]"])
    assert set(run.cache) == {"layers.1[pos=0..2]", "layers.1[pos=0:3]"}
    torch.testing.assert_close(run.cache[listed], run.cache[sliced], rtol=0, atol=0)
    full = gpt2.run("the cat sat on the mat", cache=["layers.1"]).cache["layers.1"]
    torch.testing.assert_close(run.cache[listed], full[:, :3], rtol=0, atol=0)


def test_two_different_sites_of_one_name_in_one_run_raise():
    """Two subspaces of one module (different bases) share the name ``l1[subspace=1]``: the run refuses
    rather than let one cache entry overwrite the other."""
    m = cs.load("adder")
    b1, b2 = torch.eye(3)[:, :1], torch.eye(3)[:, 1:2]
    s1, s2 = cs.Site("l1", basis=b1), cs.Site("l1", basis=b2)
    assert s1.name == s2.name and s1 != s2
    with pytest.raises(cs.PlanError, match="share the name"):
        m.run(torch.rand(2, 3), cache=[s1, s2])
    run = m.run(torch.rand(2, 3), cache=[s1, s1])          # the same site twice is fine
    assert run.cache[s1.name].shape == (2, 1)
