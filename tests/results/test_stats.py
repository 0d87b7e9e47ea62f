"""results.quantiles against torch.quantile itself, value for value (ties, both float dtypes, any dim, NaN)."""
from __future__ import annotations

import pytest
import torch

from causalscope.results import quantiles


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "dim"), [((6, 4, 1000), -1), ((1000, 7), 0), ((3, 5), 1), ((24, 1001), -1),
                                            ((1,), 0), ((2, 2), 0)])
@pytest.mark.parametrize("q", [[0.025, 0.975], [0.25, 0.5, 0.75], [0.0, 1.0], [0.3]])
def test_quantiles_equal_torch_quantile_bit_for_bit(dtype, shape, dim, q):
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(len(shape) + shape[0]))
    x.view(-1)[: x.numel() // 3] = 0.5  # ties
    ours = quantiles(x, q, dim=dim)
    ref = torch.quantile(x, torch.tensor(q, dtype=dtype), dim=dim)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert torch.equal(ours, ref)


def test_quantiles_with_nan_follow_torch():
    x = torch.randn(3, 50, dtype=torch.float64)
    x[1, 7] = float("nan")
    ref = torch.quantile(x, torch.tensor([0.1, 0.9], dtype=torch.float64), dim=-1)
    torch.testing.assert_close(quantiles(x, [0.1, 0.9], dim=-1), ref, equal_nan=True)
