"""Results: labelled arrays (named dims, coordinates, settings) and the plotting helpers every family shares:
the backend switch, the heatmap, tick labels (tokens at positions, whole numbers for layers) and the figure writer.

>>> import torch
>>> from causalscope.results import LabelledArray, save_figure
>>> r = LabelledArray(torch.zeros(2, 3), dims=("layer", "position"), coords={"layer": [0, 1]})
>>> r.sel(layer=1).dims
('position',)
>>> save_figure(r.plot(), "effect.png")  # doctest: +SKIP
"""
from ._bundle import load_bundle, save_bundle
from ._figures import BACKENDS, DEFAULT_BACKEND, backend_for, resolve_backend, save_figure
from ._heatmap import heatmap, index_runs, integer_axis
from ._labelled import LabelledArray, load_result
from ._labels import axis_labels
from ._stats import quantiles

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "LabelledArray", "axis_labels", "backend_for", "heatmap", "index_runs",
           "integer_axis", "load_bundle", "load_result", "quantiles", "resolve_backend", "save_bundle", "save_figure"]
