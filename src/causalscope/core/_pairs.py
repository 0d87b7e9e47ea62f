"""Prompt pairs of different lengths, shared by the families that take pairs (patching, mediation): the positions
of a sweep lined up across lengths, and a metric that reads each pair's own answer inside a group of one length.

>>> aligned_positions(None, "end", [3, 5]), aligned_positions([0, 2], "start", [4, 7])
([-3, -2, -1], [0, 2])
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InputError
from ._cells import position_list, token_ids
from ._metrics import call_metric, is_last_only

#: sweeps over token positions (per layer), whose positions must line up across prompt lengths
POSITION_SWEEPS = ("resid_pre", "resid_post", "attn", "mlp")


def check_align(align: Any) -> None:
    """``align`` must be ``"start"``, ``"end"`` or None."""
    if align not in (None, "start", "end"):
        raise InputError(f"align must be 'start' or 'end' (or None), got {align!r}.")


def aligned_positions(positions: Sequence[int] | None, align: str | None, lengths: list[int]) -> list[int]:
    """The position labels of a sweep over pairs of different lengths: from each prompt's start, or (``"end"``)
    offsets back from its last token; every label must exist in the shortest prompt.

    >>> aligned_positions(None, "end", [2, 5])
    [-2, -1]
    """
    T_min = min(lengths)
    if align is None:
        raise InputError(f"The prompt pairs have different lengths {lengths}, so a position sweep must say how "
                         f"positions line up: align='end' (offsets back from each prompt's last token, -1 = last) "
                         f"or align='start' (positions from each prompt's first token).")
    if positions is None:
        return list(range(T_min)) if align == "start" else list(range(-T_min, 0))
    pos = position_list(positions) or []
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
    """``metric`` for one length group of pairs (``pairs``: their indices among all pairs; None: all pairs)."""
    if pairs is None or int(getattr(metric, "n_answers", 1)) <= 1:
        return metric
    return PairMetric(metric, pairs)


def positions_setting(positions: Any) -> Any:
    """``positions`` as a result's settings record it: None, a list of ints, or the text of anything else."""
    if positions is None:
        return None
    try:
        return [int(p) for p in positions]
    except (TypeError, ValueError):
        return repr(positions)


def prompt_tokens(tokenizer: Any, batches: Sequence[Any]) -> list[list[str]] | None:
    """Every prompt's tokens as text, batch after batch (a result's ``token`` coordinate); None without token ids
    or a tokenizer, or with one that cannot decode single ids.

    >>> prompt_tokens(m.tokenizer, [batch_of_two])       # [['the', ' cat', ' sat'], ['a', ' dog', ' ran']]
    """
    ids = [token_ids(b) for b in batches]
    if tokenizer is None or any(i is None for i in ids):
        return None
    rows = [row for i in ids if i is not None for row in i.tolist()]
    try:  # each distinct id decoded once
        text = {t: str(tokenizer.decode([t])) for t in {t for row in rows for t in row}}
    except Exception:  # a tokenizer that cannot decode single ids: no token labels
        return None
    return [[text[t] for t in row] for row in rows]

