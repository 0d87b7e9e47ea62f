"""Is a normalised score resolvable in the model's number format? A patching score divides by the span
between the clean and the corrupted metric; in fp16 / bf16 that span can be a few rounding steps, and the
scores are then noise (a score of 3.75 can be one rounding step over a span of four).

>>> check_span(0.002, 41.3, 41.298, torch.float16)       # fp16 resolves ~0.04 at 41: flagged
{'span': 0.002, 'resolution': 0.64..., 'dtype': 'torch.float16', 'ulps': 16}
"""
from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import PrecisionWarning

#: a span below this many rounding steps (ulps of the larger metric value, in the model's format) is flagged:
#: each score then carries a relative error of about 1/SPAN_ULPS or more from rounding alone
SPAN_ULPS = 16


def model_dtype(module: torch.nn.Module) -> torch.dtype:
    """The floating-point format of the model's weights (float32 when it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_span(span: float, m_clean: float, m_corr: float, dtype: torch.dtype) -> dict[str, Any] | None:
    """None where ``span`` (clean minus corrupted metric) is resolvable in ``dtype``; else what to record.

    >>> check_span(1.5, 3.0, 1.5, torch.float32) is None
    True
    """
    if not dtype.is_floating_point:
        return None
    scale = max(abs(m_clean), abs(m_corr), 1.0)
    resolution = SPAN_ULPS * torch.finfo(dtype).eps * scale
    if abs(span) >= resolution:
        return None
    return {"span": span, "resolution": resolution, "dtype": str(dtype), "ulps": SPAN_ULPS}


def flag_span(meta: dict[str, Any], span: float, m_clean: float, m_corr: float, dtype: torch.dtype,
              method: str) -> None:
    """Record ``meta["low_precision"]`` and warn (:class:`PrecisionWarning`) where the span is not resolvable."""
    found = check_span(span, m_clean, m_corr, dtype)
    meta["low_precision"] = found
    if found is None:
        return
    warnings.warn(
        f"{method}: the clean and corrupted metrics differ by {span:.3g}, below {SPAN_ULPS} rounding steps of "
        f"{dtype} at their scale ({found['resolution']:.3g}), so every normalised score here is mostly rounding "
        f"(a score can be off by {abs(torch.finfo(dtype).eps * max(abs(m_clean), abs(m_corr), 1.0) / span):.2g} "
        f"or more). Run the model in float32, pick a metric with a larger clean-corrupted difference, or read "
        f"result.meta['raw'] (the metric values themselves). result.meta['low_precision'] records this.",
        PrecisionWarning, stacklevel=3)
