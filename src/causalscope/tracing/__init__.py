"""ROME-style causal tracing: one prompt's restoration heatmaps and averages over many facts.

>>> import causalscope as cs
>>> r = cs.tracing.causal_trace("facts-gpt", "Ada Brook lives in", "Ada Brook", kind="mlp")  # doctest: +SKIP
"""
from ._average import TOKEN_CLASSES, TraceAverage, token_classes, trace_average
from ._rome import rome_sites, rome_window
from ._trace import TraceResult, causal_trace, embedding_std, subject_range

__all__ = ["TOKEN_CLASSES", "TraceAverage", "TraceResult", "causal_trace", "embedding_std", "rome_sites",
           "rome_window", "subject_range", "token_classes", "trace_average"]
