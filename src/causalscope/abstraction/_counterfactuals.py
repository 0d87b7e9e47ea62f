"""Counterfactual datasets: base / source input pairs that differ in chosen variables."""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InputError, check_int, check_seed


class CounterfactualDataset:
    """Pairs of inputs (``base[i]``, ``source[i]``) and the variables that differ between them.

    >>> ds = cs.counterfactuals(vary="A", n=50, seed=42)       # the tutorial's "only A changes" set
    >>> ds.base.shape, ds.source.shape, ds.varied
    (torch.Size([50, 3]), torch.Size([50, 3]), ('A',))
    >>> ds2 = cs.CounterfactualDataset.from_pairs([{"base": [1, 2, 3], "source": [4, 2, 3]}])
    """

    def __init__(self, base: Any, source: Any, varied: Sequence[str] = (), variables: Sequence[str] = ()) -> None:
        if isinstance(base, torch.Tensor) and isinstance(source, torch.Tensor) and base.shape != source.shape:
            raise InputError(f"base and source must have the same shape; got {tuple(base.shape)} and "
                             f"{tuple(source.shape)}.")
        self.base, self.source = base, source
        self.varied, self.variables = tuple(varied), tuple(variables)

    def __len__(self) -> int:
        return int(self.base.shape[0]) if isinstance(self.base, torch.Tensor) else len(self.base)

    def __repr__(self) -> str:
        return f"<CounterfactualDataset n={len(self)} varied={self.varied}>"

    @classmethod
    def from_pairs(cls, pairs: Sequence[Mapping[str, Any]], varied: Sequence[str] = ()) -> CounterfactualDataset:
        """From a list of ``{"base": ..., "source": ...}`` dicts (numbers, lists or tensors)."""
        if not pairs:
            raise InputError("from_pairs needs at least one {'base': ..., 'source': ...} pair.")
        try:
            base = torch.tensor([list(p["base"]) for p in pairs], dtype=torch.float32)
            source = torch.tensor([list(p["source"]) for p in pairs], dtype=torch.float32)
        except KeyError as e:
            raise InputError(f"Every pair needs 'base' and 'source'; missing {e}.") from None
        except (TypeError, ValueError) as e:
            raise InputError(f"Pairs must hold equal-length lists of numbers: {e}") from None
        return cls(base, source, varied)

    def bootstrap_indices(self, n_boot: int, seed: int = 0) -> torch.Tensor:
        """(n_boot, n) resampled pair indices from a seeded generator."""
        g = torch.Generator().manual_seed(seed)
        return torch.randint(len(self), (n_boot, len(self)), generator=g)


def counterfactuals(vary: str | Sequence[str] = "A", n: int = 50, *, variables: Sequence[str] = ("A", "B", "C"),
                    values: Sequence[float] = tuple(range(10)), seed: int = 0) -> CounterfactualDataset:
    """Random base inputs over ``values`` and sources that differ from them exactly in ``vary``.

    >>> ds = cs.counterfactuals(vary=["B", "C"], n=100, seed=1)

    Each varied variable gets a source value different from its base value (as the tutorial does); the
    other variables are copied. Drawn from a ``torch.Generator`` seeded with ``seed``.
    """
    vary = [vary] if isinstance(vary, str) else list(vary)
    if not vary:
        raise InputError(f"vary is empty: name at least one of the variables {list(variables)} to change between "
                         f"base and source (with none, every source equals its base).")
    bad = [v for v in vary if v not in variables]
    if bad:
        raise InputError(f"Cannot vary {bad}: the variables are {list(variables)}.")
    if isinstance(values, torch.Tensor):
        values = values.reshape(-1).tolist()
    if isinstance(values, (str, bytes)) or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                   for v in values):
        raise InputError(f"values must be a list of numbers (the values each variable takes), got {values!r:.60}.")
    if len(values) < 2:
        raise InputError("values needs at least two entries to make a source differ from its base.")
    n = check_int(n, "n", low=1, hint="It is the number of base / source pairs.")
    g = torch.Generator().manual_seed(check_seed(seed))
    vals = torch.tensor(list(values), dtype=torch.float32)
    k = len(vals)
    base_idx = torch.randint(k, (n, len(variables)), generator=g)
    src_idx = base_idx.clone()
    for v in vary:
        j = variables.index(v)
        shift = torch.randint(1, k, (n,), generator=g)  # never the base value
        src_idx[:, j] = (base_idx[:, j] + shift) % k
    return CounterfactualDataset(vals[base_idx], vals[src_idx], vary, variables)
