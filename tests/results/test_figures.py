"""The one backend switch (resolve_backend), the one figure writer (save_figure), the shared heatmap, and every
family's ``plot(backend=...)`` refusing a backend it does not know instead of quietly drawing with matplotlib."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from matplotlib.figure import Figure

import causalscope as cs
from causalscope import circuits
from causalscope.errors import InputError
from causalscope.results import BACKENDS, DEFAULT_BACKEND, heatmap, resolve_backend, save_figure

BAD = "plotyl"


# -- resolve_backend ---------------------------------------------------------------------------------------------------
def test_resolve_backend_default_and_names():
    assert resolve_backend(None) == resolve_backend() == DEFAULT_BACKEND == "matplotlib"
    assert [resolve_backend(b) for b in ("matplotlib", "plotly")] == ["matplotlib", "plotly"] == list(BACKENDS)


@pytest.mark.parametrize("bad", [BAD, "Plotly", "", "bokeh"])
def test_resolve_backend_refuses_other_names(bad):
    with pytest.raises(InputError, match=r"backend must be 'matplotlib' or 'plotly', got " + repr(bad)):
        resolve_backend(bad)


# -- save_figure -------------------------------------------------------------------------------------------------------
def _mpl() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def _plotly() -> go.Figure:
    return go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<svg"), (".pdf", b"%PDF")])
def test_save_figure_writes_matplotlib_images(tmp_path, suffix, magic):
    path = tmp_path / "a" / "b" / f"fig{suffix}"           # parent folders are created
    out = save_figure(_mpl(), path)
    assert out == path and path.is_file()
    head = path.read_bytes()[:400]
    assert head.startswith(magic) if suffix != ".svg" else magic in head


def test_save_figure_writes_plotly_html(tmp_path):
    path = tmp_path / "new" / "fig.html"
    assert save_figure(_plotly(), str(path)) == path and path.is_file()
    text = path.read_text(encoding="utf-8")
    assert "<html" in text and "plotly" in text


@pytest.mark.parametrize("fig,name,match", [
    (_mpl, "fig.xyz", r"matplotlib writes no '\.xyz' files"),
    (_mpl, "fig", "no suffix"),
    (_mpl, "fig.html", "backend='plotly'"),
    (_plotly, "fig.png", "backend='matplotlib'"),
    (_plotly, "fig", r"\.html"),
    (lambda: np.zeros((2, 2)), "fig.png", "save_figure takes a matplotlib Figure or a plotly Figure, got ndarray"),
])
def test_save_figure_refuses_what_it_cannot_write(tmp_path, fig, name, match):
    with pytest.raises(InputError, match=match):
        save_figure(fig(), tmp_path / name)
    assert not (tmp_path / name).exists()


# -- heatmap -----------------------------------------------------------------------------------------------------------
def test_heatmap_both_backends():
    data = np.arange(6.0).reshape(2, 3) / 5
    fig = heatmap(data, ["r0", "r1"], ["a", "b", "c"], title="t", value_title="v", annotate=True)
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "t" and len(fig.axes[0].texts) == 6
    pfig = heatmap(data, ["r0", "r1"], ["a", "b", "c"], title="t", value_title="v", backend="plotly")
    assert isinstance(pfig, go.Figure) and pfig.data[0].type == "heatmap" and pfig.layout.title.text == "t"
    with pytest.raises(InputError, match="backend must be"):
        heatmap(data, ["r0", "r1"], ["a", "b", "c"], backend=BAD)


# -- every family refuses an unknown backend ---------------------------------------------------------------------------
def _trace() -> Any:
    return cs.causal_trace("facts-gpt", "Thumtre Lesdurn was born in the city of", "Thumtre Lesdurn", samples=1,
                           window=1)


def _patching() -> Any:
    return cs.activation_patching("and-gate", torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.0]]), ["model.0"])


def _mediation() -> Any:
    return cs.mediation("adder", cs.counterfactuals(vary="A", n=8, seed=0), "neurons", n_boot=10)


def _directions() -> Any:
    from causalscope.zoo.digits_mlp import build_digits_mlp

    X = torch.rand(12, 64, generator=torch.Generator().manual_seed(0))
    return cs.class_directions(build_digits_mlp(trained=False), (X, torch.arange(12) % 3), "act2")


def _compiled() -> tuple[Any, torch.Tensor]:
    from causalscope.zoo.compiled import CompiledConfig, random_compiled

    cfg = CompiledConfig(n_layers=1, d_model=8, n_heads=1, d_head=4, d_mlp=4, d_vocab=4, d_vocab_out=2, n_ctx=3)
    return random_compiled(cfg, seed=1), torch.randint(0, 4, (8, 3), generator=torch.Generator().manual_seed(0))


def _node_effects() -> Any:
    return circuits.node_effects(*_compiled(), ablation="mean", scales=[0.0, 1.0])


def _circuit_scores() -> Any:
    return circuits.edge_attribution_patching(*_compiled())


@pytest.mark.parametrize("make", [_trace, _patching, _mediation, _directions, _node_effects, _circuit_scores],
                         ids=["tracing", "patching", "abstraction", "directions", "circuits-ablation",
                              "circuits-scores"])
def test_each_family_refuses_an_unknown_backend(make):
    result = make()
    with pytest.raises(InputError, match=f"backend must be 'matplotlib' or 'plotly', got '{BAD}'"):
        result.plot(backend=BAD)


def _array(cls: type) -> Any:
    return cls(torch.zeros(2, 2), ("a", "b"))


# The check comes before anything is read from the result, so a stand-in array of each type is enough.
PLOTS: dict[str, Callable[[], Any]] = {
    "TraceAverage": lambda: _array(cs.TraceAverage).plot(backend=BAD),
    "IGResult": lambda: _array(cs.IGResult).plot(backend=BAD),
    "LatentCircuits": lambda: _array(cs.LatentCircuits).plot(backend=BAD),
    "PatchingResult": lambda: _array(cs.PatchingResult).plot(backend=BAD),
    "AttributionPatchingResult.plot_against": lambda: _array(cs.AttributionPatchingResult).plot_against(
        _array(cs.PatchingResult), backend=BAD),
    "AbstractionResult": lambda: _array(cs.AbstractionResult).plot(backend=BAD),
    "DASResult": lambda: _array(cs.DASResult).plot(backend=BAD),
    "MediationResult": lambda: _array(cs.MediationResult).plot(backend=BAD),
    "SimilarityMatrix": lambda: _array(cs.SimilarityMatrix).plot(backend=BAD),
    "DirectionsResult-similarity": lambda: _array(cs.DirectionsResult).plot("similarity", backend=BAD),
    "SteeringResult": lambda: _array(cs.SteeringResult).plot(backend=BAD),
    "SteeringMatrix": lambda: _array(cs.SteeringMatrix).plot(backend=BAD),
    "ProbeResult": lambda: _array(cs.ProbeResult).plot(backend=BAD),
    "SteeringCheck": lambda: _array(cs.SteeringCheck).plot(backend=BAD),
    "RestorationResult": lambda: _array(cs.RestorationResult).plot(backend=BAD),
    "RocCurve": lambda: circuits.RocCurve(torch.zeros(2), torch.ones(2), torch.zeros(2), 0.5, 1, 1).plot(backend=BAD),
    "FaithfulnessCurve": lambda: circuits.FaithfulnessCurve([1], [0.5], [1.0], [0.0], 1.0, 0.0).plot(backend=BAD),
}


@pytest.mark.parametrize("name", list(PLOTS))
def test_every_result_type_refuses_an_unknown_backend(name):
    with pytest.raises(InputError, match="backend must be 'matplotlib' or 'plotly'"):
        PLOTS[name]()
