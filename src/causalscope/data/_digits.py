"""The 8x8 handwritten digits that scikit-learn ships (1797 images, no download), with a fixed split."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import InputError

DIGITS_N, DIGITS_TEST = 1797, 360


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # reads the CSV bundled inside scikit-learn

    d = load_digits()
    return d.data.astype(np.float32) / 16.0, d.target.astype(np.int64)


@lru_cache(maxsize=8)
def _split(seed: int, test_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified: each class gives its share of ``test_size`` (largest remainder, ties to the lower class),
    the rows picked by a ``numpy.random.RandomState(seed)`` permutation per class. RandomState's stream is
    frozen by numpy, so the split is the same for every numpy / scikit-learn version."""
    _, y = _raw()
    classes, counts = np.unique(y, return_counts=True)
    share = counts * test_size / len(y)
    n_test = np.floor(share).astype(int)
    for c in np.argsort(-(share - n_test), kind="stable")[: test_size - int(n_test.sum())]:
        n_test[c] += 1
    rng = np.random.RandomState(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, n_test)])
    is_test = np.zeros(len(y), bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)  # both in the data set's own order


def digits_indices(split: str = "train", seed: int = 0) -> torch.Tensor:
    """Row numbers (into ``sklearn.datasets.load_digits()``) of ``split``, ascending."""
    if split == "all":
        return torch.arange(DIGITS_N)
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train', 'test' or 'all', got {split!r}.")
    train, test = _split(int(seed), DIGITS_TEST)
    return torch.from_numpy((train if split == "train" else test).copy())


def digits(split: str = "train", seed: int = 0, images: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)``: scikit-learn's 8x8 handwritten digits, pixels scaled from 0..16 to ``[0, 1]``.

    >>> X, y = digits("train")
    >>> X.shape, X.dtype, y.shape, y.dtype
    (torch.Size([1437, 64]), torch.float32, torch.Size([1437]), torch.int64)
    >>> digits("test")[0].shape, digits("all")[0].shape, digits("test", images=True)[0].shape
    (torch.Size([360, 64]), torch.Size([1797, 64]), torch.Size([360, 8, 8]))

    The train / test split (1437 / 360) is stratified by class and fixed by ``seed``: the same rows for every
    user, machine and library version. ``"all"`` is the whole set in scikit-learn's order. ``images=True``
    shapes ``X`` as ``(n, 8, 8)``. Fresh tensors each call (editing them changes nothing here).
    """
    X, y = _raw()
    idx = digits_indices(split, seed).numpy()
    x = torch.from_numpy(X[idx].copy())
    return (x.reshape(-1, 8, 8) if images else x), torch.from_numpy(y[idx].copy())
