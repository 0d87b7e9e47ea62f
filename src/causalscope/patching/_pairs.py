"""Prompt pairs of different lengths for the patching methods: split them length by length, line up the positions
of a sweep, and gather each length's per-pair values back into the pairs' order."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core import POSITION_SWEEPS, Model, aligned_positions, input_pair, length_groups, prompt_tokens
from ..errors import InputError


@dataclass
class Part:
    """Pairs of one length: their places among all pairs (None: all), inputs and the positions to sweep."""

    index: list[int] | None
    clean: Any
    corrupted: Any
    positions: Sequence[int] | None


@dataclass
class Pairs:
    """The pairs of a call, one :class:`Part` per length, and the sweep's position labels when they are aligned.

    >>> pairs = split_pairs(m, ["the cat sat", "a dog ran by"], ["the dog sat", "a cat ran by"], "resid_pre",
    ...                     None, None, "end", "activation_patching")
    >>> [p.index for p in pairs.parts], pairs.labels        # ([[0], [1]], [-3, -2, -1])
    """

    parts: list[Part]
    labels: list[int] | None  # the position coordinates of an aligned sweep; None: each part's own
    groups: dict[int, list[int]] | None  # tokens -> pair indices; None: every pair has one length
    align: str | None

    def check_cells(self, counts: Sequence[int]) -> None:
        """Every length must give the sweep the same number of cells."""
        if any(n != counts[0] for n in counts):
            raise InputError("The sweep has a different number of cells for prompts of different lengths; give "
                             "sites that every prompt has.")

    def gather(self, values: Sequence[torch.Tensor], n_pairs: int) -> torch.Tensor:
        """Each part's values (pairs on the last dim) in the pairs' order: ``(..., n_pairs)``."""
        out = torch.zeros(*values[0].shape[:-1], n_pairs, dtype=values[0].dtype)
        for part, v in zip(self.parts, values):
            cols = torch.arange(n_pairs) if part.index is None else torch.tensor(part.index)
            out[..., cols] = v
        return out

    def tokens(self, m: Model) -> list[list[str]] | None:
        """Every clean prompt's tokens as text, for the results' ``token`` coordinate; None where the inputs are not
        token ids or the model has no tokenizer.

        >>> pairs.tokens(m)                             # [['the', ' cat', ' sat'], ['a', ' dog', ' ran', ' by']]
        """
        return prompt_tokens(m.tokenizer, [part.clean for part in self.parts])

    def meta(self) -> dict[str, Any]:
        """``lengths`` (tokens -> number of pairs) and ``align`` for pairs of different lengths; else nothing."""
        if self.groups is None:
            return {}
        return {"lengths": {str(T): len(idx) for T, idx in self.groups.items()}, "align": self.align}


def split_pairs(m: Model, clean: Any, corrupted: Any, sites: Any, per: str | None, positions: Sequence[int] | None,
                align: str | None, method: str) -> Pairs:
    """The pairs length by length (one part when every pair has one length); a position sweep over several lengths
    gets each length's own positions from the aligned labels (see ``core.aligned_positions``)."""
    groups = length_groups(m, clean, corrupted)
    if groups is None:
        return Pairs([Part(None, *input_pair(m, clean, corrupted, method), positions)], None, None, align)
    sweeps_positions = per == "position" or (isinstance(sites, str) and sites in POSITION_SWEEPS)
    labels = aligned_positions(positions, align, sorted(groups)) if sweeps_positions else None
    parts = []
    for T, idx in groups.items():
        own: Sequence[int] | None = positions
        if labels is not None:
            own = labels if align == "start" else [T + o for o in labels]
        parts.append(Part(idx, *input_pair(m, [clean[i] for i in idx], [corrupted[i] for i in idx], method), own))
    return Pairs(parts, labels, groups, align)
