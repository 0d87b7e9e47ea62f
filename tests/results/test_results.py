from __future__ import annotations

import doctest
import itertools
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

import causalscope.results._labelled as results_mod
from causalscope._version import __version__
from causalscope.errors import InputError
from causalscope.results import LabelledArray, load_result

DOCS = Path(__file__).resolve().parents[2] / "docs" / "results.md"


def make(shape=(3, 4), **kw) -> LabelledArray:
    g = torch.Generator().manual_seed(0)
    values = torch.randn(*shape, generator=g)
    dims = kw.pop("dims", ("layer", "token")[: len(shape)] if len(shape) <= 2 else tuple(f"d{i}" for i in range(len(shape))))
    return LabelledArray(values, dims, **kw)


# ---------------------------------------------------------------- construction
def test_wrong_number_of_dims_shows_both():
    with pytest.raises(ValueError) as e:
        LabelledArray(torch.zeros(2, 3), ["layer"])
    msg = str(e.value)
    assert "('layer',)" in msg and "(2, 3)" in msg and "1 dims" in msg


def test_coord_length_mismatch():
    with pytest.raises(ValueError, match=re.escape("coords['token'] has 2 labels but dim 'token' has size 3")):
        LabelledArray(torch.zeros(2, 3), ["layer", "token"], coords={"token": ["a", "b"]})


def test_duplicate_dims():
    with pytest.raises(ValueError, match=r"duplicate dim names \['x'\]"):
        LabelledArray(torch.zeros(2, 3), ["x", "x"])


def test_coords_for_unknown_dim():
    with pytest.raises(ValueError, match="unknown dims.*'head'"):
        LabelledArray(torch.zeros(2), ["layer"], coords={"head": [0, 1]})


def test_meta_not_jsonable():
    with pytest.raises(ValueError, match="JSON-able"):
        LabelledArray(torch.zeros(2), ["layer"], meta={"fn": object()})


def test_defaults_and_storage():
    src = torch.ones(2, 3, requires_grad=True)
    a = LabelledArray(src * 2, ["layer", "token"], meta={"method": "m", "sites": (1, 2), "seed": np.int64(7)})
    assert not a.values.requires_grad and a.values.device.type == "cpu"
    assert a.coords == {"layer": [0, 1], "token": [0, 1, 2]}
    assert a.shape == (2, 3) and a.dims == ("layer", "token") and a.name == "value"
    assert a.meta["versions"] == {"causalscope": __version__, "torch": str(torch.__version__)}
    assert a.meta["sites"] == [1, 2] and a.meta["seed"] == 7 and type(a.meta["seed"]) is int
    assert repr(a) == "<LabelledArray 'value' (layer: 2, token: 3) float32 method='m'>"
    # explicit versions are kept; caller's meta dict is not mutated
    meta = {"versions": {"x": "1"}}
    b = LabelledArray(np.zeros(2), ["layer"], meta=meta)
    assert b.meta["versions"] == {"x": "1"} and meta == {"versions": {"x": "1"}}
    # numpy input is copied, not shared
    arr = np.arange(3.0)
    c = LabelledArray(arr, ["x"])
    arr[0] = 99
    assert c.values[0].item() == 0.0
    assert isinstance(c.numpy(), np.ndarray) and c.numpy().dtype == np.float64


# ---------------------------------------------------------------- selection & reduction
def test_sel_isel_match_numpy():
    a = make(coords={"token": ["The", "cat", ("sat", 2), "on"], "layer": [10, 20, 30]})
    x = a.numpy()
    np.testing.assert_array_equal(a.isel(layer=1).numpy(), x[1])
    np.testing.assert_array_equal(a.isel(token=[3, 0]).numpy(), x[:, [3, 0]])
    np.testing.assert_array_equal(a.isel(token=-1, layer=slice(0, 2)).numpy(), x[0:2, -1])
    np.testing.assert_array_equal(a.sel(layer=20).numpy(), x[1])
    np.testing.assert_array_equal(a.sel(token=("sat", 2)).numpy(), x[:, 2])
    sub = a.sel(token=["on", "The"], layer=30)
    np.testing.assert_array_equal(sub.numpy(), x[2, [3, 0]])
    assert sub.dims == ("token",) and sub.coords == {"token": ["on", "The"]}
    assert a.isel(layer=[2, 0]).coords["layer"] == [30, 10]
    assert a.isel(layer=0).dims == ("token",)
    assert sub.meta == a.meta and sub.name == a.name


def test_sel_errors():
    a = make(coords={"token": ["a", "b", "a", "c"]})
    with pytest.raises(KeyError, match="'z' not in coords"):
        a.sel(token="z")
    with pytest.raises(KeyError, match="occurs 2 times"):
        a.sel(token="a")
    with pytest.raises(ValueError, match="unknown dim 'head'"):
        a.isel(head=0)
    with pytest.raises(IndexError):
        a.isel(layer=3)


@pytest.mark.parametrize("op", ["sum", "mean"])
def test_reductions_match_numpy(op):
    a = make((3, 4, 5), dims=("layer", "token", "head"))
    x = a.numpy()
    r = getattr(a, op)("token")
    assert r.dims == ("layer", "head") and r.coords == {"layer": [0, 1, 2], "head": list(range(5))}
    np.testing.assert_allclose(r.numpy(), getattr(x, op)(axis=1), rtol=1e-6)
    np.testing.assert_allclose(getattr(a, op)(["layer", "head"]).numpy(), getattr(x, op)(axis=(0, 2)), rtol=1e-5)
    total = getattr(a, op)()
    assert total.dims == () and total.shape == ()
    np.testing.assert_allclose(total.numpy(), getattr(x, op)(), rtol=1e-5)
    assert r.meta == a.meta


def test_integer_mean_is_float64_like_numpy():
    a = LabelledArray(torch.arange(6).reshape(2, 3), ["a", "b"])
    np.testing.assert_array_equal(a.mean("b").numpy(), np.arange(6).reshape(2, 3).mean(axis=1))
    assert a.mean("b").values.dtype == torch.float64


def test_transpose():
    a = make((2, 3, 4), dims=("a", "b", "c"), coords={"b": ["x", "y", "z"]})
    t = a.transpose("c", "a", "b")
    assert t.dims == ("c", "a", "b") and t.coords["b"] == ["x", "y", "z"]
    np.testing.assert_array_equal(t.numpy(), a.numpy().transpose(2, 0, 1))
    np.testing.assert_array_equal(a.transpose().numpy(), a.numpy().T)
    with pytest.raises(ValueError, match="permutation"):
        a.transpose("a", "b")


# ---------------------------------------------------------------- to_frame
def test_to_frame_matches_nested_loop():
    coords = {"layer": [0, 1, 2], "token": ["The", "cat", ("sat", 2), "The"]}
    a = make(coords=coords, name="effect")
    x = a.numpy()
    rows = []
    for i, layer in enumerate(coords["layer"]):
        for j, tok in enumerate(coords["token"]):
            rows.append({"layer": layer, "token": tok, "effect": x[i, j]})
    expected = pd.DataFrame(rows)
    got = a.to_frame()
    assert list(got.columns) == ["layer", "token", "effect"]
    assert got["layer"].tolist() == expected["layer"].tolist()
    assert got["token"].tolist() == expected["token"].tolist()
    np.testing.assert_array_equal(got["effect"].to_numpy(), expected["effect"].to_numpy())
    assert got["layer"].dtype.kind == "i"


def test_to_frame_3d_order():
    a = make((2, 3, 2), dims=("a", "b", "c"))
    got = a.to_frame()
    expected = list(itertools.product(range(2), range(3), range(2)))
    assert list(zip(got["a"], got["b"], got["c"])) == expected
    np.testing.assert_array_equal(got["value"].to_numpy(), a.numpy().reshape(-1))


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_save_load_round_trip(tmp_path, dtype):
    g = torch.Generator().manual_seed(1)
    values = (torch.randn(3, 4, generator=g) * 3).to(dtype)
    meta = {"method": "patching", "model": "gpt2", "sites": [[1, "resid"]], "seed": 3, "title": "T", "eps": 0.1}
    a = LabelledArray(values, ["layer", "token"],
                      coords={"layer": [0.5, 1.5, 2.5], "token": ["a", ("b", 1), ("c", (2, "d")), "é"]},
                      meta=meta, name="effect")
    written = a.save(tmp_path / "res")
    assert written == tmp_path / "res.npz" and written.exists()
    b = load_result(written)
    assert b.values.dtype == dtype
    assert torch.equal(b.values.reshape(-1).view(torch.uint8), a.values.reshape(-1).view(torch.uint8))  # same bits
    assert b.dims == a.dims and b.coords == a.coords and b.meta == a.meta and b.name == "effect"
    assert isinstance(b.coords["token"][2], tuple) and isinstance(b.coords["token"][2][1], tuple)
    assert load_result(tmp_path / "res").coords == a.coords  # suffix optional, like save


def test_save_load_nan_bits_and_0d(tmp_path):
    v = torch.tensor([float("nan"), -0.0, float("inf"), 1e-45])
    a = LabelledArray(v, ["x"])
    b = load_result(a.save(tmp_path / "n.npz"))
    assert b.values.view(torch.int32).tolist() == v.view(torch.int32).tolist()
    s = load_result(LabelledArray(torch.tensor(2.5), []).save(tmp_path / "s.npz"))
    assert s.dims == () and s.values.item() == 2.5


def test_load_errors(tmp_path):
    with pytest.raises(InputError, match="no causalscope result"):
        load_result(tmp_path / "missing.npz")
    txt = tmp_path / "x.npz"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="not a causalscope result"):
        load_result(txt)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a causalscope result"):
        load_result(other)
    npy = tmp_path / "arr.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="not a causalscope result"):
        load_result(npy)


# ---------------------------------------------------------------- plotting
def test_plot_1d_matplotlib():
    a = LabelledArray(torch.tensor([1.0, 3.0, 2.0]), ["token"], coords={"token": ["a", "b", "c"]}, name="effect",
                      meta={"title": "My title"})
    fig = a.plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "token" and ax.get_ylabel() == "effect" and ax.get_title() == "My title"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [1.0, 3.0, 2.0])
    # numeric coords are used as x values; an existing ax is drawn into
    host = Figure()
    host_ax = host.add_subplot()
    out = LabelledArray(torch.ones(3), ["layer"], coords={"layer": [2, 4, 6]}).plot(ax=host_ax)
    assert out is host and host_ax.get_title() == "value"
    np.testing.assert_array_equal(host_ax.lines[0].get_xdata(), [2, 4, 6])


def test_plot_2d_matplotlib():
    a = make(coords={"token": ["The", "cat", "sat", "on"]}, name="effect")
    fig = a.plot(cmap="RdBu")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # heatmap + colorbar
    ax = fig.axes[0]
    assert ax.get_xlabel() == "token" and ax.get_ylabel() == "layer" and ax.get_title() == "effect"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["The", "cat", "sat", "on"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
    np.testing.assert_array_equal(ax.images[0].get_array(), a.numpy())
    assert fig.axes[1].get_ylabel() == "effect"
    # too many labels: no per-label ticks
    big = LabelledArray(torch.zeros(2, 50), ["a", "b"], coords={"b": [f"t{i}" for i in range(50)]})
    labels = [t.get_text() for t in big.plot().axes[0].get_xticklabels()]
    assert "t1" not in labels


def test_plot_plotly():
    import plotly.graph_objects as go

    line = LabelledArray(torch.tensor([1.0, 2.0]), ["token"], coords={"token": ["a", "b"]}).plot(backend="plotly")
    assert isinstance(line, go.Figure) and len(line.data) == 1 and line.data[0].type == "scatter"
    assert line.layout.xaxis.title.text == "token" and list(line.layout.xaxis.ticktext) == ["a", "b"]
    heat = make(name="effect").plot(backend="plotly")
    assert isinstance(heat, go.Figure) and len(heat.data) == 1 and heat.data[0].type == "heatmap"
    np.testing.assert_array_equal(np.asarray(heat.data[0].z), make().numpy())
    assert heat.layout.xaxis.title.text == "token" and heat.layout.yaxis.title.text == "layer"
    assert heat.layout.title.text == "effect"


def test_plot_errors():
    with pytest.raises(ValueError, match=r"1-D or 2-D.*\.sel\(d0=.*\.mean\('d0'\)"):
        make((2, 2, 2)).plot()
    with pytest.raises(ValueError, match="single value"):
        LabelledArray(torch.tensor(1.0), []).plot()
    with pytest.raises(ValueError, match="backend"):
        make().plot(backend="bokeh")


# ---------------------------------------------------------------- docs stay runnable
def test_docstring_examples():
    failures, tried = doctest.testmod(results_mod, verbose=False)
    assert tried > 0 and failures == 0


def test_docs_example_runs(tmp_path, monkeypatch):
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/results.md should open with a python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(DOCS), "exec"), {})
