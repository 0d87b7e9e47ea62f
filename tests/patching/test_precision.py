"""fp16 / bf16 models: scores over a clean-corrupted span below the format's resolution are flagged, not silent."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_tiny_lm

CLEAN, CORRUPTED = "the cat sat on the mat", "the dog sat on the mat"


def _pair(dtype: torch.dtype) -> tuple[cs.Model, torch.Tensor, torch.Tensor]:
    model, tok = build_tiny_lm("gpt2", init_std=0.3)
    m = cs.load(copy.deepcopy(model).to(dtype), tok)
    return m, m.adapter.tokenize(CLEAN), m.adapter.tokenize(CORRUPTED)


def _offset_metric(y: torch.Tensor) -> torch.Tensor:
    """A metric far from zero that moves little: 50 + 1e-3 * a logit (the span is ~1e-3 of a logit change)."""
    return 50.0 + 1e-3 * y[:, -1, 5].float()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_span_below_the_formats_resolution_warns_and_is_recorded(dtype):
    m, clean, corrupted = _pair(dtype)
    with pytest.warns(cs.PrecisionWarning, match="rounding steps"):
        r = cs.activation_patching(m, clean, corrupted, "resid_pre", _offset_metric, direction="denoise")
    flag = r.meta["low_precision"]
    span = r.meta["clean_metric"] - r.meta["corrupted_metric"]
    eps = torch.finfo(dtype).eps
    # the rule, from the format: 16 rounding steps of the larger metric value (about 50 here)
    assert flag["resolution"] == pytest.approx(16 * eps * max(abs(r.meta["clean_metric"]), 50.0), rel=1e-3)
    assert abs(span) < flag["resolution"] and flag["dtype"] == str(dtype)
    with pytest.warns(cs.PrecisionWarning):
        a = cs.attribution_patching(m, clean, corrupted, "resid_pre", _offset_metric, direction="denoise")
    assert a.meta["low_precision"] is not None


def test_float32_and_a_resolvable_span_are_quiet():
    m, clean, corrupted = _pair(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cs.PrecisionWarning)
        r = cs.activation_patching(m, clean, corrupted, "resid_pre", _offset_metric, direction="denoise")
    assert r.meta["low_precision"] is None
    span = abs(r.meta["clean_metric"] - r.meta["corrupted_metric"])
    assert span > 16 * torch.finfo(torch.float32).eps * 50  # resolvable in float32, as the rule says

    m16, clean, corrupted = _pair(torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cs.PrecisionWarning)
        r16 = cs.activation_patching(m16, clean, corrupted, "resid_pre", cs.logit(5), direction="denoise")
    span16 = abs(r16.meta["clean_metric"] - r16.meta["corrupted_metric"])
    assert r16.meta["low_precision"] is None and span16 >= 16 * torch.finfo(torch.float16).eps * max(
        abs(r16.meta["clean_metric"]), 1.0)
