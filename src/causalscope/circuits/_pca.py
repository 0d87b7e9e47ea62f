"""Per-position PCA of a node's activations: the mean, the principal directions and their variances.

>>> acts = torch.randn(100, 5, 16)                  # (inputs, positions, d)
>>> pca = position_pca(acts)
>>> pca.basis(0, k=2).shape, pca.basis(0, k=2, high_variance=False).shape
(torch.Size([16, 2]), torch.Size([16, 14]))

The directions are those of scikit-learn's ``PCA`` (fitted on the activations centred on their mean):
the eigenvectors of the covariance matrix, by decreasing variance. All ``d`` of them are kept, so both
the top-``k`` subspace and its orthogonal complement have orthonormal bases (even when there are fewer
inputs than dimensions: the extra directions then carry no variance).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass(frozen=True)
class PositionPCA:
    """PCA per position. ``mean`` (P, d); ``components`` (P, d, d), column ``j`` the ``j``-th direction
    (unit length, by decreasing variance); ``variance`` (P, d), the variance along each direction."""

    mean: torch.Tensor
    components: torch.Tensor
    variance: torch.Tensor

    @property
    def d(self) -> int:
        return int(self.mean.shape[-1])

    def basis(self, position: int, k: int, high_variance: bool = True) -> torch.Tensor:
        """Orthonormal basis (d, k) of the top-``k`` directions at ``position`` (its index among the fitted
        positions), or (d, d - k) of their orthogonal complement with ``high_variance=False``.

        >>> B = pca.basis(0, k=2); torch.allclose(B.T @ B, torch.eye(2), atol=1e-5)
        True
        """
        check_k(k, self.d)
        comps = self.components[position]
        return (comps[:, :k] if high_variance else comps[:, k:]).contiguous()


def check_k(k: int, d: int) -> None:
    """``k`` must be an int in ``1 .. d`` (the activation's dimension)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d:
        raise InputError(f"k (the number of PCA components) must be an int from 1 to {d} (the node's activation "
                         f"dimension); got {k!r}.")


def position_pca(acts: torch.Tensor) -> PositionPCA:
    """PCA of ``acts`` (N inputs, P positions, d) at each position separately (float64 inside).

    >>> position_pca(torch.randn(50, 3, 8)).components.shape
    torch.Size([3, 8, 8])
    """
    if acts.ndim != 3:
        raise InputError(f"position_pca takes activations shaped (inputs, positions, d); got {tuple(acts.shape)}.")
    if acts.shape[0] < 2:
        raise InputError(f"PCA needs at least 2 inputs; got {acts.shape[0]}.")
    x = acts.detach().double()
    mean = x.mean(0)                                        # (P, d)
    xc = (x - mean).transpose(0, 1)                         # (P, N, d)
    cov = xc.transpose(1, 2) @ xc / (x.shape[0] - 1)        # (P, d, d)
    var, vecs = torch.linalg.eigh(cov)                      # ascending
    var, vecs = var.flip(-1).clamp_min(0), vecs.flip(-1)
    # sign convention of scikit-learn's svd_flip: the largest-|.| entry of each direction is positive
    big = vecs.abs().argmax(1, keepdim=True)
    vecs = vecs * torch.sign(vecs.gather(1, big)).where(vecs.gather(1, big) != 0, torch.ones(()).double())
    dt = acts.dtype if acts.is_floating_point() else torch.float32
    return PositionPCA(mean.to(dt), vecs.to(dt), var.to(dt))
