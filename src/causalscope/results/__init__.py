"""Results: labelled arrays (named dims, coordinates, settings) and the plotting helpers every family shares.

>>> import torch
>>> from causalscope.results import LabelledArray
>>> r = LabelledArray(torch.zeros(2, 3), dims=("layer", "position"), coords={"layer": [0, 1]})
>>> r.sel(layer=1).dims
('position',)
"""
from ._labelled import LabelledArray, load_result
from ._plotting import annotated_heatmap

__all__ = ["LabelledArray", "annotated_heatmap", "load_result"]
