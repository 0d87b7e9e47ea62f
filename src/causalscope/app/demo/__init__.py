"""The demo: every family on the bundled models, one report section each.

>>> from causalscope.app.demo import build_report
>>> build_report("report/causalscope-report.html")  # doctest: +SKIP
"""
from ._build import build_report
from ._engine import activation_norms, neuron_ablation, patching_map

__all__ = ["activation_norms", "build_report", "neuron_ablation", "patching_map"]
