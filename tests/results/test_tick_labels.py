"""Figure ticks of results: the tokens label the positions (read back from the drawn figures and compared with the
tokenizer's own decoding), integer axes (layers) tick at whole numbers only, long labels are thinned and cut."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import causalscope as cs
from causalscope.results import LabelledArray, axis_labels, heatmap, integer_axis

CLEAN = "the cat sat on the mat"
CORRUPT = "the dog sat on the mat"


@pytest.fixture(scope="module")
def patched():
    m = cs.load("tiny-gpt2")
    r = cs.activation_patching(m, CLEAN, CORRUPT, "resid_pre", cs.logit_diff("mat", "cat", model=m))
    ids = m.tokenizer(CLEAN, add_special_tokens=False)["input_ids"]
    return r, [m.tokenizer.decode([i]) for i in ids]  # the reference: each id decoded alone


def mpl_ticks(axis) -> tuple[list[str], list[float]]:
    return [t.get_text() for t in axis.get_ticklabels()], [float(v) for v in axis.get_ticklocs()]


def visible_ticks(axis) -> list[float]:
    lo, hi = sorted(axis.get_view_interval())
    return [float(v) for v in axis.get_ticklocs() if lo <= v <= hi]


def test_patching_maps_label_positions_with_tokens_and_layers_with_whole_numbers(patched):
    r, tokens = patched
    assert r.dims == ("direction", "layer", "position") and len(tokens) == r.shape[2]
    want = [f"{i}: {t.strip()}" for i, t in enumerate(tokens)]
    for part in (r.denoise, r.noise, r.asymmetry):
        ax = part.plot().axes[0]
        assert mpl_ticks(ax.xaxis) == (want, [float(i) for i in range(len(tokens))])
        assert mpl_ticks(ax.yaxis) == ([str(layer) for layer in range(r.shape[1])], [0.0, 1.0, 2.0, 3.0])
        fig = part.plot(backend="plotly")
        assert list(fig.layout.xaxis.ticktext) == want and list(fig.layout.xaxis.tickvals) == list(range(len(want)))
        assert list(fig.layout.yaxis.ticktext) == ["0", "1", "2", "3"]
        assert all(float(v).is_integer() for v in fig.layout.yaxis.tickvals)
        assert list(fig.data[0].x) == list(range(len(want)))  # cells stay apart: "the" occurs twice


def test_one_dim_results_tick_tokens_and_whole_layers(patched):
    r, tokens = patched
    by_position = r.denoise.sel(layer=1)
    ax = by_position.plot().axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{i}: {t.strip()}" for i, t in enumerate(tokens)]
    assert list(by_position.plot(backend="plotly").layout.xaxis.ticktext)[1] == f"1: {tokens[1].strip()}"
    by_layer = r.denoise.sel(position=5)
    ax = by_layer.plot().axes[0]
    ax.figure.canvas.draw()  # the locator runs
    ticks = visible_ticks(ax.xaxis)
    assert ticks and all(v.is_integer() for v in ticks), ticks
    lay = by_layer.plot(backend="plotly").layout.xaxis
    assert lay.tickmode == "linear" and lay.dtick == 1 and lay.tick0 == 0


def test_matplotlib_lines_without_the_integer_rule_would_tick_halves():
    """The check above bites: matplotlib's own ticks on 4 layers fall at halves."""
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([0, 1, 2, 3], [1.0, 2.0, 0.5, 3.0])
    fig.canvas.draw()
    assert any(not v.is_integer() for v in visible_ticks(ax.xaxis))
    a = LabelledArray(torch.tensor([1.0, 2.0, 0.5, 3.0]), ("layer",))
    ax = a.plot().axes[0]
    ax.figure.canvas.draw()
    assert visible_ticks(ax.xaxis) == [0.0, 1.0, 2.0, 3.0]


def test_axis_labels_and_integer_axis():
    aux = {"token": ("position", [" Paris", " ", None, ("a", 1)])}
    assert axis_labels([0, 1, 2, 3], aux, "position") == ["0: Paris", "1: ' '", "2", "3: ('a', 1)"]
    assert axis_labels([0, 1], aux, "layer") == ["0", "1"]
    assert integer_axis([0, 1, 2, 3]) == {"tickmode": "linear", "tick0": 0, "dtick": 1}
    assert integer_axis(list(range(48)))["dtick"] == 5  # about 10 ticks
    assert integer_axis([0.0, 2.0]) is not None and integer_axis([0.5, 1]) is None and integer_axis(["a"]) is None
    assert integer_axis([True, False]) is None and integer_axis([]) is None


def test_many_labels_are_thinned_at_whole_cells_and_long_ones_cut():
    rows = [f"layers.{i}.mlp[neurons={','.join(str(3 * j) for j in range(20))}]" for i in range(3)]
    cols = [f"t{i}" for i in range(100)]
    ax = heatmap(np.zeros((3, 100)), rows, cols, max_ticks=40).axes[0]
    labels, locs = mpl_ticks(ax.xaxis)
    assert locs == [float(i) for i in range(0, 100, 3)] and labels == [f"t{i}" for i in range(0, 100, 3)]
    ylabels = [t.get_text() for t in ax.get_yticklabels()]
    assert all(len(t) <= 40 and "…" in t for t in ylabels) and ylabels[0].startswith("layers.0.mlp")
    fig = heatmap(np.zeros((3, 100)), rows, cols, max_ticks=40, backend="plotly", categorical=False)
    assert list(fig.layout.xaxis.tickvals) == list(range(0, 100, 3))
    assert list(fig.layout.xaxis.ticktext) == [f"t{i}" for i in range(0, 100, 3)]


def test_patching_result_plots_label_positions_with_tokens():
    """PatchingResult draws its own panels; their position ticks carry the tokens too (both backends)."""
    m = cs.load("tiny-gpt2")
    r = cs.activation_patching(m, "the cat sat on the mat", "the dog sat on the mat", "resid_pre", cs.logit(5),
                               direction="both")
    words = [m.tokenizer.decode([int(t)]).strip() for t in m.adapter.tokenize("the cat sat on the mat")[0]]
    want = [f"{i}: {w}" for i, w in enumerate(words)]
    fig = r.plot()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == want
    assert list(r.plot(backend="plotly").data[0].x) == want       # "the" twice stays two columns
