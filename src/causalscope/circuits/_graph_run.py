"""The batched run of a :class:`ComputeGraph` over many patch configurations: a staircase over the graph's
stages in which each configuration joins at the first stage it changes, carries only its change from the base
run, and leaves as soon as it is known to equal another configuration (or the base run) from there on.

>>> logits, outs = run_configurations(g, patch, corrupted, base, base_patch, keep=True)
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import torch


class PatchedOutputs:
    """The sender outputs of each configuration of a :meth:`ComputeGraph.run`, built on demand (one configuration's
    outputs cost one (rows, T, senders, d) tensor; all of them at once would cost that per configuration).

    >>> logits, outs = g.run(patch, clean, corrupted, return_outputs=True)
    >>> outs[2].shape                      # (rows, T, senders, d_model) of configuration 2
    """

    def __init__(self) -> None:
        self._where: list[tuple[Any, int]] = []  # per configuration: (its chunk's state, its index in it)

    def _add(self, chunk: Any, n: int) -> None:
        self._where += [(chunk, i) for i in range(n)]

    def __len__(self) -> int:
        return len(self._where)

    def __getitem__(self, i: int) -> torch.Tensor:
        chunk, j = self._where[i]
        return chunk.outputs(j)

    def equal_to(self, i: int) -> int | None:
        """What configuration ``i`` was found equal to (bit for bit, from the stage it joined on): -1 for the
        base run, another configuration's index, or None where it ran to the end itself.

        >>> logits, outs = g.run(patch, clean, corrupted, return_outputs=True); outs.equal_to(3)   # e.g. -1
        """
        chunk, j = self._where[i]
        if j not in chunk.same:
            return None
        t = resolve(chunk.same, j)
        return -1 if t is None else i - j + t


@dataclass
class Chunk:
    """What one chunk of a run leaves behind to rebuild a configuration's sender outputs."""

    base: torch.Tensor  # (rows, T, senders, d)
    delta: torch.Tensor  # (senders from p0, configurations that ran to the end, rows*T*d)
    place: dict[int, tuple[int, int]]  # configuration -> (its column of delta, the first sender it wrote)
    same: dict[int, int | None] = field(default_factory=dict)  # configuration -> the one it equals (None: base)
    p0: int = 0

    def outputs(self, j: int) -> torch.Tensor:
        target = resolve(self.same, j)
        N, T, S, d = self.base.shape
        out = self.base.permute(2, 0, 1, 3).reshape(S, N * T * d).clone()  # sender-major, as runs read it
        if target is not None and target in self.place:
            k, q = self.place[target]
            out[q:] += self.delta[q - self.p0:, k]
        return out.view(S, N, T, d).permute(1, 2, 0, 3)


def resolve(same: dict[int, int | None], j: int | None) -> int | None:
    """The configuration ``j`` equals in the end (None: the base run), following chains of equal ones."""
    while j is not None and j in same:
        j = same[j]
    return j


def run_configurations(g: Any, patch: torch.Tensor, corrupted: Any, base: Any, base_patch: torch.Tensor,
                       keep: bool) -> tuple[torch.Tensor, Chunk | None]:
    """Logits (configurations, rows, T, outputs) of every configuration of ``patch``, and (``keep``) what rebuilds
    their sender outputs. ``g``: the :class:`ComputeGraph`; ``corrupted`` / ``base``: its ``GraphOutputs`` (this
    module sits below ``_graph`` and does not import it).

    A staircase over the stages: a configuration joins at the first stage that reads an edge it patches
    differently from ``base_patch`` (before that it equals the base run), so it costs what its own run from
    that stage costs. Its sender outputs are held as their change from the base run, (senders, configurations,
    rows*T*d), written from the stage it joins on, so a stage's receiver inputs are one shared matrix product
    with the base and corrupted outputs plus, per group of configurations that joined together, one batched
    product with the changes since they joined. A configuration that differs from the base only at the stage it
    joins, and whose outputs there come out equal (bit for bit) to the base run's or to those of the
    configuration joining just before it (which differs from the base at that stage only too), equals that one
    downstream: it leaves the staircase and takes its logits.
    """
    C = patch.shape[0]
    N, T, S, d = base.senders.shape
    NTd = N * T * d
    end = 2 * g.n_layers
    stage_e = g.edge_stage.to(patch.device)[None]
    differs = patch != base_patch[None]
    starts_all = torch.where(differs, stage_e, end + 1).amin(1)
    lasts_all = torch.where(differs, stage_e, -1).amax(1)
    starts_sorted, order = torch.sort(starts_all, stable=True)
    n_run = int((starts_sorted <= end).sum())
    logits = torch.empty(C, *base.logits.shape, dtype=base.logits.dtype, device=base.logits.device)
    logits[order[n_run:]] = base.logits
    same: dict[int, int | None] = {int(i): None for i in order[n_run:].tolist()}
    if not n_run:
        return logits, (Chunk(base.senders, base.senders.new_empty(0, 0, NTd), {}, same) if keep else None)
    ids = order[:n_run].tolist()  # original configurations still to run, sorted by the stage they join
    st = starts_sorted[:n_run].tolist()
    la = lasts_all[order[:n_run]].tolist()
    first = st[0]
    p0 = g._first_written(first)
    A = torch.zeros(n_run, len(g.receivers), S, dtype=patch.dtype, device=patch.device)
    A[:, g.edge_receiver, g.edge_sender] = patch[order[:n_run]]
    delta = torch.empty(S - p0, n_run, NTd, dtype=base.senders.dtype, device=base.senders.device)
    B = base.by_sender()
    XB = corrupted.minus(base)
    sum_B, summed = B.new_zeros(NTd), 0  # the sum of the first `summed` base sender outputs
    joined = 0
    for stage in range(first, end + 1):
        n = bisect_right(st, stage)
        if not n:
            continue
        p = g._n_upstream(stage)
        rs = g._receivers_of(stage)
        R = len(rs)
        a = A[:n, rs, :p]  # (n, R, p)
        sum_B, summed = sum_B + B[summed:p].sum(0), p
        x = torch.addmm((sum_B.view(N * T, d) + g._bias(stage)).view(1, -1), a.reshape(n * R, p), XB[:p])
        x = x.view(n, R, -1)
        lo = 0
        for s, members in groupby(st[:n]):  # configurations that joined together: their changes since then
            hi = lo + len(list(members))
            q = g._first_written(s)
            if p > q:
                x[lo:hi].baddbmm_(1 - a[lo:hi, :, q:], delta[q - p0:p - p0, lo:hi].transpose(0, 1))
            lo = hi
        x = x.view(n, R, N, T, d)
        layer, part = divmod(stage, 2)
        if stage == end:
            logits[torch.tensor(ids[:n], device=logits.device)] = g.parts.logits(x[:, 0])
            break
        if part == 0:
            mask = None if base.key_mask is None else base.key_mask.repeat(n, 1)
            h = g._heads(layer, x.permute(0, 2, 3, 1, 4).reshape(n * N, T, R, d), mask)
            h = h.view(n, N, T, R, d).permute(0, 3, 1, 2, 4).reshape(n, R, -1)
        else:
            h = g.parts.mlp(layer, x[:, 0].reshape(n * N, T, d)).reshape(n, 1, -1)
        w = g._first_written(stage)
        rows = slice(w - p0, w - p0 + R)
        torch.sub(h.transpose(0, 1), B[w:w + R, None], out=delta[rows, :n])
        if n > joined:
            leave = _equal_ones(delta[rows], ids, la, joined, n, stage, same)
            if leave:
                keep_pos = [k for k in range(len(ids)) if k not in leave]
                # only the configurations that joined at this stage can leave, and they have written this stage's
                # rows alone (later ones nothing yet): shift those columns left instead of copying all of delta
                moved = [k for k in range(joined, n) if k not in leave]
                if moved:
                    delta[rows, joined:joined + len(moved)] = delta[rows, moved]
                A = A.index_select(0, torch.tensor(keep_pos, dtype=torch.long, device=A.device))
                ids, st, la = [ids[k] for k in keep_pos], [st[k] for k in keep_pos], [la[k] for k in keep_pos]
                n -= len(leave)
        joined = n
    for j in list(same):  # configurations that left: the logits of the one they equal
        target = resolve(same, j)
        logits[j] = base.logits if target is None else logits[target]
    if not keep:
        return logits, None
    place = {j: (k, g._first_written(s)) for k, (j, s) in enumerate(zip(ids, st))}
    return logits, Chunk(base.senders, delta[:, :len(ids)], place, same, p0)


def _equal_ones(wrote: torch.Tensor, ids: list[int], la: list[int], joined: int, n: int, stage: int,
                same: dict[int, int | None]) -> set[int]:
    """The configurations joining at ``stage`` (places ``joined .. n``) that equal another one from here on:
    they differ from the base at this stage only and wrote exactly the base run's outputs (no change) or
    exactly what the configuration before them wrote. Records whom each equals in ``same``."""
    leave: set[int] = set()
    for k in range(joined, n):
        if la[k] != stage:
            continue  # it changes a later stage too
        w = wrote[:, k]
        if not bool(w.any()):
            same[ids[k]] = None
            leave.add(k)
        elif k > joined and la[k - 1] == stage and torch.equal(w, wrote[:, k - 1]):
            same[ids[k]] = ids[k - 1]
            leave.add(k)
    return leave
