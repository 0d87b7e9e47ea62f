"""A plan's rows: the compact block form (:class:`Rows`) and the friendly list of dicts, compiled into blocks of
consecutive rows that share one edits dict, with each row's base input as one tensor.

>>> blocks, index = plan_blocks(batch, [cs.Rows({"layers.1": Zero()}, torch.arange(4))], None)
>>> blocks[0][1:], index.tolist()
((0, 4), [0, 1, 2, 3])
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import PlanError
from .adapters import Batch


class Rows:
    """K plan rows that share one edits dict: row k runs on base input ``inputs[k]``. The compact form of a
    sweep: a cell's P rows cost a tensor, not P dicts (a list of dicts compiles into such blocks).

    >>> m.run(x, [cs.Rows({Site("layers.1", neurons=n): Patch(src)}, torch.arange(P)) for n in range(8)])

    A plan may mix ``Rows`` blocks and dicts (one row each, on the input ``input_index`` names or the row's
    own); ``input_index`` must not be given when a block names its inputs.
    """

    __slots__ = ("edits", "inputs")

    def __init__(self, edits: Mapping[Any, Any], inputs: Any) -> None:
        if not isinstance(edits, Mapping):
            raise PlanError(f"Rows takes a dict {{site: intervention}} and the base inputs of its rows; got "
                            f"{type(edits).__name__} for the edits.")
        t = torch.as_tensor(inputs if not isinstance(inputs, range) else list(inputs))
        if t.ndim != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise PlanError(f"Rows inputs must be a 1-D sequence of input row indices; got shape {tuple(t.shape)} "
                            f"of {t.dtype}.")
        self.edits, self.inputs = edits, t.to(device="cpu", dtype=torch.long)

    def __len__(self) -> int:
        return int(self.inputs.numel())

    def __repr__(self) -> str:
        return f"Rows({dict(self.edits)!r}, {len(self)} rows)"


#: a plan, compiled: blocks of consecutive plan rows ``r0 .. r1`` that share one edits dict
Block = tuple[Mapping[Any, Any], int, int]


def plan_blocks(batch: Batch, edits: Any, input_index: Sequence[int] | None) -> tuple[list[Block], torch.Tensor]:
    """The plan as blocks of consecutive rows sharing one edits dict, and each row's base input, checked.

    >>> plan_blocks(batch, {"layers.0": Zero()}, None)     # a dict applies to every input row
    ([({'layers.0': Zero()}, 0, 1)], tensor([0]))
    """
    if edits is None or isinstance(edits, Mapping):
        index = torch.arange(batch.size) if input_index is None else _index(input_index, batch)
        return ([({} if edits is None else edits, 0, len(index))] if len(index) else []), index
    if not isinstance(edits, Sequence) or isinstance(edits, (str, bytes)):
        raise PlanError(f"edits must be None, a dict {{site: intervention}}, a list of such dicts or of "
                        f"cs.Rows blocks; got {type(edits).__name__}.")
    entries = list(edits)
    if not entries:
        raise PlanError("The plan is empty: edits=[] has no rows. Pass edits=None for a plain run, "
                        "or at least one dict of {site: intervention}.")
    kinds = set(map(type, entries))  # C-speed checks for long plans
    if Rows in kinds:
        return _blocks_of_rows(batch, entries, input_index)
    if kinds != {dict}:
        bad = next((i for i, e in enumerate(entries) if not isinstance(e, Mapping)), None)
        if bad is not None:
            raise PlanError(f"Each row of edits must be a dict {{site: intervention}} (or a cs.Rows block); row "
                            f"{bad} is {type(entries[bad]).__name__}.")
    if input_index is None:
        if batch.size == 1:
            index = torch.zeros(len(entries), dtype=torch.long)
        elif batch.size == len(entries):
            index = torch.arange(batch.size)
        else:
            raise PlanError(f"Mismatched batch: {len(entries)} rows of edits for {batch.size} inputs. "
                            f"Give one input (shared by every row), one row per input, or "
                            f"input_index=[...] naming each row's input.")
    else:
        index = _index(input_index, batch)
        if len(index) != len(entries):
            raise PlanError(f"input_index has {len(index)} entries for {len(entries)} rows of edits.")
    blocks: list[Block] = []
    r, n = 0, len(entries)
    while r < n:  # consecutive rows sharing one dict: one block, compiled once
        row, end = entries[r], r + 1
        while end < n and entries[end] is row:
            end += 1
        blocks.append((row, r, end))
        r = end
    return blocks, index

def _blocks_of_rows(batch: Batch, entries: list, input_index: Sequence[int] | None
                    ) -> tuple[list[Block], torch.Tensor]:
    if input_index is not None:
        raise PlanError("input_index cannot be given with cs.Rows blocks: each block names its rows' inputs.")
    blocks: list[Block] = []
    parts: list[torch.Tensor] = []
    r = 0
    for i, e in enumerate(entries):
        if isinstance(e, Rows):
            idx, row = e.inputs, e.edits
        elif isinstance(e, Mapping) and batch.size == 1:
            idx, row = torch.zeros(1, dtype=torch.long), e
        else:
            raise PlanError(f"Entry {i} of a plan with cs.Rows blocks is a {type(e).__name__}: give it as "
                            f"cs.Rows(edits, inputs) naming its inputs (a bare dict is one row only with one "
                            f"input).")
        if len(idx):
            blocks.append((row, r, r + len(idx)))
            parts.append(idx)
            r += len(idx)
    if not parts:
        raise PlanError("The plan has no rows: every cs.Rows block is empty.")
    index = torch.cat(parts)
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi >= batch.size:
        raise PlanError(f"A cs.Rows block names input {lo if lo < 0 else hi}; the inputs have {batch.size} rows "
                        f"(0 .. {batch.size - 1}).")
    return blocks, index

def _index(input_index: Any, batch: Batch) -> torch.Tensor:
    """``input_index`` as a tensor, every entry an input row."""
    vals = list(input_index) if not isinstance(input_index, torch.Tensor) else input_index
    plain = isinstance(vals, torch.Tensor) or set(map(type, vals)) <= {int}
    if plain:
        index = torch.as_tensor(vals, dtype=torch.long).reshape(-1)
        if not len(index) or (int(index.min()) >= 0 and int(index.max()) < batch.size):
            return index
    for i in (vals.tolist() if isinstance(vals, torch.Tensor) else vals):
        if not isinstance(i, int) or not 0 <= i < batch.size:
            raise PlanError(f"input_index entry {i!r} is not an input row (the inputs have {batch.size} rows).")
    return torch.as_tensor(vals, dtype=torch.long)
