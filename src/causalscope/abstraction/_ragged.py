"""Base / source pairs of different lengths for mediation: the pairs grouped by length, the positions of a
sweep across lengths, and a metric that reads each pair's own answer inside a group.

>>> groups = pair_groups(m, ["the cat sat", "a dog ran by the tree"], ["the dog sat", "a cat ran by the tree"])
>>> groups, aligned_positions(None, "end", sorted(groups))
({3: [0], 5: [1]}, [-3, -2, -1])
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core import call_metric, is_last_only, length_groups
from ..errors import InputError

#: sweeps over token positions (per layer), whose positions must line up across prompt lengths
POSITION_GRIDS = ("resid_pre", "resid_post", "attn", "mlp")


def pair_groups(m: Any, base: Any, source: Any) -> dict[int, list[int]] | None:
    """Pair indices by token length (length -> indices, in order) for lists of base / source prompts whose pairs
    differ in length; None when every pair has one length or the inputs are not lists of prompts.

    >>> pair_groups(m, ["the cat sat", "a dog ran by the tree"], ["the dog sat", "a cat ran by the tree"])
    {3: [0], 5: [1]}

    Within a pair, base and source must have one length (an :class:`InputError` names the pair).
    """
    try:
        return length_groups(m, base, source)
    except InputError as e:  # core names the two sides of a pair as patching does: clean / corrupted
        msg = str(e).replace("clean", "base").replace("corrupted", "source")
        raise InputError(msg) from None


def aligned_positions(positions: Sequence[int] | None, align: str | None, lengths: list[int]) -> list[int]:
    """The position labels of a sweep over pairs of different lengths: from each prompt's start, or (``"end"``)
    offsets back from its last token; every label must exist in the shortest prompt.

    >>> aligned_positions([0, 2], "start", [4, 7]), aligned_positions(None, "end", [2, 5])
    ([0, 2], [-2, -1])
    """
    T_min = min(lengths)
    if align is None:
        raise InputError(f"The prompt pairs have different lengths {lengths}, so a position sweep must say how "
                         f"positions line up: align='end' (offsets back from each prompt's last token, -1 = last) "
                         f"or align='start' (positions from each prompt's first token).")
    if positions is None:
        return list(range(T_min)) if align == "start" else list(range(-T_min, 0))
    pos = [int(p) for p in positions]
    ok = (lambda p: 0 <= p < T_min) if align == "start" else (lambda p: -T_min <= p < 0)
    if not all(ok(p) for p in pos):
        want = f"0 .. {T_min - 1}" if align == "start" else f"-{T_min} .. -1"
        raise InputError(f"positions {pos} with align={align!r} must lie in {want} (the shortest prompt has "
                         f"{T_min} tokens).")
    return pos


class PairMetric:
    """``metric`` on the rows of one length group, reading each row's pair among all pairs: a metric with one
    answer per pair (``cs.logit_diff([...], [...])``) picks pair ``pairs[i]``'s answer for the group's prompt
    ``i``.

    >>> PairMetric(cs.logit_diff([5, 6, 7], [9, 3, 1]), [0, 2])(logits)    # answers of pairs 0 and 2
    """

    takes_input_index = True

    def __init__(self, metric: Any, pairs: list[int]) -> None:
        self.metric, self.pairs, self.last_only = metric, torch.tensor(pairs), is_last_only(metric)

    def __call__(self, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.arange(len(y)) if index is None else index.cpu()  # rows repeat the group's prompts in order
        return call_metric(self.metric, y, self.pairs[rows % len(self.pairs)].to(y.device))

    def __repr__(self) -> str:
        return repr(self.metric)


def for_pairs(metric: Any, pairs: list[int] | None) -> Any:
    """``metric`` for one length group (``pairs``: the group's pair indices; None: all pairs, in order)."""
    if pairs is None or not getattr(metric, "takes_input_index", False):
        return metric
    return PairMetric(metric, pairs)
