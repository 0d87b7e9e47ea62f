"""The patching schedules shared by activation patching, mediation and causal tracing: full batched rows for
any model, and the segmented "staircase" for LMs with a segmented forward (only blocks from the patched
one on, only positions from the first that can change, against cached keys / values).

>>> values, token_layers = staircase(m, cells, base_run, source_run, P, T, d, metric, None, "denoise")
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch

from ..errors import InputError, PlanError
from ._cells import Cell, first_difference, segment_safe
from ._interventions import Patch
from ._metrics import is_last_only
from ._model import Model
from ._progress import tqdm
from ._rows import Rows
from ._sites import Site
from .adapters import KV, SegmentedLM, segmented

if TYPE_CHECKING:
    from ._engine import Run

#: the groups entering at one block: (state (P, positions, d_model), its P rows of edits at that block)
Entering = list[tuple[torch.Tensor, list[dict]]]


def full_rows(m: Model, cells: list[Cell], base_in: Any, source: Any, P: int, metric: Any, chunk_size: int | None,
          progress: bool | None) -> tuple[torch.Tensor, int]:
    """Any model: one engine row per (cell, prompt), full forwards, chunked. Returns (cells, prompts)."""
    patch = Patch(source)
    every = torch.arange(P)
    run = m.run(base_in, [Rows({c.site: patch}, every) for c in cells], metric=metric,
                chunk_size=chunk_size, progress=progress if progress is False else None)
    vals = cast(torch.Tensor, run.metric).float()  # a metric was requested
    return vals.view(len(cells), P, *vals.shape[1:]), int(run.meta["token_layers"] or 0)


class _Swapped(Patch):
    """Patch from a run of both halves of the inputs: row i of the first half reads row i of the second, and
    the reverse."""

    def source_rows(self, rows: torch.Tensor, input_index: torch.Tensor, source_size: int,
                    base_size: int) -> torch.Tensor:
        half = source_size // 2
        return (input_index[rows] + half) % source_size


def swapped_rows(m: Model, cells: list[Cell], both_in: Any, both: Any, P: int, metric: Any,
                 chunk_size: int | None) -> torch.Tensor:
    """Any model, both directions in one pass: ``both_in`` holds P base inputs then their P sources and
    ``both`` is its run (caching every cell's site); every cell patches each base input from its source and
    each source from its base. Returns (cells, 2P): into the bases, then into the sources.

    >>> into = swapped_rows(m, cells, base.stack(source), run, P, metric, None)
    """
    patch = _Swapped(both)
    every = torch.arange(2 * P)
    run = m.run(both_in, [Rows({c.site: patch}, every) for c in cells], metric=metric, chunk_size=chunk_size,
                progress=False)
    vals = cast(torch.Tensor, run.metric).float()  # a metric was requested
    return vals.view(len(cells), 2 * P, *vals.shape[1:])


def _block_of(lm: SegmentedLM, m: Model, site: Site) -> int | None:
    res = m.adapter.resolve(site)
    prefix = lm.arch.layers + "."
    if not res.path.startswith(prefix):
        return None
    return int(res.path[len(prefix):].split(".")[0])


def segmented_ok(m: Model, cells: list[Cell]) -> bool:
    lm = segmented(m.adapter)
    if lm is None:
        return False
    return all(_block_of(lm, m, c.site) is not None for c in cells)


def block_step(m: Model, lm: SegmentedLM, kv: KV | None, states: Sequence[torch.Tensor], j: int, t: int,
               rows: list[dict], *, head: bool = False, last_only: bool = False, metric: Any = None,
               cache: Sequence[Site | str] = (), chunk_size: int | None = None) -> tuple[Run, int]:
    """Block ``j`` alone on the stacked ``states`` (groups of rows at positions ``t..``), against the keys /
    values before ``t`` of ``kv`` (one run's, repeated per group), in engine chunks of at most ``chunk_size``
    rows (the engine's memory bound when None). Returns the run and its token-layers.

    >>> run, tl = block_step(m, lm, corrupted.kv, [h1, h2], j=3, t=5, rows=[{}] * (2 * samples))
    """
    if kv is None:
        raise PlanError("A segmented block call needs the base run's keys / values: run it with keep_kv=True.")
    past = lm.stacked_past(kv, j, len(states), t)
    seg = lm.segment(torch.cat(list(states)), layer=j, stop=j + 1, pos=t, past=past, head=head, last_only=last_only)
    run = m.run(seg, rows, metric=metric, cache=cache, chunk_size=chunk_size, progress=False)
    return run, int(run.meta["token_layers"] or 0)


def block_staircase(m: Model, lm: SegmentedLM, kv: KV | None, t: int, P: int, enter: Callable[[int], Entering],
                    carry: Callable[[int], list[dict]] | None = None, metric: Any = None,
                    last_only: bool = False, chunk_size: int | None = None) -> tuple[Run | None, int]:
    """The staircase over blocks at positions ``t..``: every group of ``P`` rows enters at its own block
    (``enter(j)``: the groups entering at block ``j``, with their rows of edits there) and then runs every
    block above it; block ``j`` runs once on the stacked states of all groups entered so far, the running
    ones first, in the order they entered. ``carry(j)``: the ``P`` rows of edits of each running group at
    block ``j`` (default: none). The last block runs the head (on the last position only, with
    ``last_only``; then ``metric`` is taken there). Returns the last block's run (None where no group
    entered) and the token-layers run. No block call runs more than ``chunk_size`` rows at once.

    >>> run, tl = block_staircase(m, lm, corrupted.kv, t, samples, lambda j: [(state_at(j), [{}] * samples)])
    """
    L = lm.n_layers
    states: list[torch.Tensor] = []
    token_layers = 0
    for j in range(L):
        new = enter(j)
        if not states and not new:
            continue
        keep = carry(j) if carry is not None else [{}] * P
        rows = keep * len(states) + [r for _, group_rows in new for r in group_rows]
        states += [h for h, _ in new]
        last = j == L - 1
        run, tl = block_step(m, lm, kv, states, j, t, rows, head=last, last_only=last and last_only,
                             metric=metric if last and last_only else None, chunk_size=chunk_size)
        token_layers += tl
        if last:
            return run, token_layers
        states = list(cast(torch.Tensor, run.output).split(P))  # no metric here, so the run keeps its output
    return None, token_layers


#: CPU cost of one segmented block step (an engine pass of one block) over one token-layer of a d=128 model, and
#: how the token-layer cost grows with d_model; fitted on GPT-2 configs (L 4-12, d 64-768, T 8-16, 1-8 prompts) on
#: the 2-core CPU where the floor and one batched pass were timed side by side (docs/patching.md, "Schedules")
STEP_OVER_TOKEN_LAYER = 108.0
TOKEN_LAYER_EXPONENT = 1.4
#: on an accelerator a pass is launch-bound: a block step costs relatively more (not yet measured; a safe lean)
ACCELERATOR_STEP_FACTOR = 10.0


def schedule_costs(m: Model, cells: list[Cell], T: int, d: int, P: int) -> dict[str, Any]:
    """The two patching schedules' costs, in token-layer units: the segmented floor (its token-layers plus its
    block steps, each worth the fixed cost of an engine pass, with positions grouped as :func:`floor_groups`
    finds cheapest) and one batched pass over every cell.

    >>> schedule_costs(m, cells, T=12, d=1, P=1)      # {'floor': ..., 'batched': ..., 'steps': 66, ...}
    """
    starts, floor, steps, floor_tl = floor_groups(m, cells, T, d, P)
    L = int(m.n_layers or 0)
    batched_tl = len(cells) * P * T * L
    return {"floor": floor, "batched": float(batched_tl), "steps": steps,
            "floor_token_layers": floor_tl, "batched_token_layers": batched_tl,
            "staircase_starts": sorted(set(starts.values()))}


#: the most first positions one staircase of the floor may span when grouping (bounds the search on long prompts)
_MAX_GROUP_SPAN = 128


def floor_groups(m: Model, cells: list[Cell], T: int, d: int, P: int) -> tuple[dict[int, int], float, int, int]:
    """Where the segmented floor starts each staircase: cells whose first patched position is ``p`` run in the
    staircase over positions ``start[p]..``. One staircase per position computes fewest token-layers; one
    from the first position takes fewest block steps; the grouping minimises token-layers plus steps (each
    worth :data:`STEP_OVER_TOKEN_LAYER` token-layers, scaled by d_model) over contiguous runs of positions.
    Returns ``({first position: staircase start}, cost, block steps, token-layers)``.

    >>> floor_groups(m, cells, T=12, d=4, P=1)[0]    # e.g. {4: 4, 5: 4, ..., 11: 4}: one staircase from 4
    """
    lm = segmented(m.adapter)
    L = int(m.n_layers or 0)
    assert lm is not None
    work: dict[int, int] = {}  # first position -> sum over its cells of (L - entry block) * P
    entry: dict[int, int] = {}  # first position -> the earliest block one of its cells enters at
    for c in cells:
        p0 = max(d, _first_position(c.site, T))
        if p0 >= T or _from(c.site, p0, T) is None:
            continue  # patches only positions where clean and corrupted agree: no compute (as in staircase)
        block = cast(int, _block_of(lm, m, c.site))
        work[p0] = work.get(p0, 0) + (L - block) * P
        entry[p0] = min(entry.get(p0, L), block)
    firsts = sorted(work)
    width = max(int(getattr(lm, "d_model", 128)), 1)
    step = STEP_OVER_TOKEN_LAYER / (width / 128) ** TOKEN_LAYER_EXPONENT
    if getattr(lm, "device", torch.device("cpu")).type != "cpu":
        step *= ACCELERATOR_STEP_FACTOR
    K = len(firsts)
    best = [0.0] + [float("inf")] * K  # best[j]: cheapest grouping of firsts[:j]
    cut = [0] * (K + 1)
    for j in range(1, K + 1):
        w, b = 0, L
        for i in range(j - 1, max(-1, j - 1 - _MAX_GROUP_SPAN), -1):  # the group firsts[i:j], from firsts[i]
            w += work[firsts[i]]
            b = min(b, entry[firsts[i]])
            cost = best[i] + (T - firsts[i]) * w + (L - b) * step
            if cost < best[j]:
                best[j], cut[j] = cost, i
    start: dict[int, int] = {}
    steps = token_layers = 0
    j = K
    while j > 0:
        i = cut[j]
        group = firsts[i:j]
        for p in group:
            start[p] = firsts[i]
        steps += L - min(entry[p] for p in group)
        token_layers += (T - firsts[i]) * sum(work[p] for p in group)
        j = i
    return start, best[K], steps, token_layers


def pick_schedule(m: Model, cells: list[Cell], base_in: Any, source_in: Any, T: int,
                  schedule: str) -> tuple[bool, int, dict[str, Any] | None]:
    """Whether a patching sweep runs the segmented floor (else one batched pass), the first position where base
    and source differ (0 for the batched pass) and the two schedules' estimated costs (None where only the
    batched pass can run). ``schedule``: ``"auto"`` (the cheaper), ``"floor"`` or ``"batched"``.

    >>> fast, d, costs = pick_schedule(m, cells, clean_batch, corrupted_batch, T=12, schedule="auto")
    """
    if schedule not in ("auto", "floor", "batched"):
        raise InputError(f"schedule must be 'auto', 'floor' or 'batched', got {schedule!r}.")
    fast = segmented_ok(m, cells) and segment_safe(base_in) and segment_safe(source_in)
    if schedule == "floor" and not fast:
        raise InputError(f"schedule='floor' needs a transformer LM with a segmented forward, plain token ids and "
                         f"sites inside its blocks; {m.name} with this sweep has none. Use schedule='auto'.")
    d = first_difference(base_in, source_in) if fast else 0
    costs = schedule_costs(m, cells, T, d, int(base_in.size)) if fast else None
    if schedule == "batched" or (schedule == "auto" and costs is not None and costs["batched"] < costs["floor"]):
        return False, 0, costs
    return fast, d, costs


def _first_position(site: Site, T: int) -> int:
    p = site.positions
    if p is None:
        return 0
    if isinstance(p, slice):
        r = range(T)[p]
        return min(r) if len(r) else T
    return min(int(x) % T for x in p)


def _from(site: Site, p0: int, T: int) -> Site | None:
    """The site restricted to positions >= p0 (None if nothing is left to patch)."""
    p = site.positions
    if p is None:
        return site
    kept = [t for t in (range(T)[p] if isinstance(p, slice) else [int(x) % T for x in p]) if t >= p0]
    if not kept:
        return None
    return dataclasses.replace(site, positions=tuple(kept))  # every other field (basis, sae, features) kept


def staircase(m: Model, cells: list[Cell], base: Any, source: Any, P: int, T: int, d: int, metric: Any,
              progress: bool | None, name: str, chunk_size: int | None = None) -> tuple[torch.Tensor, int]:
    """LMs with a segmented forward: cells grouped by the first position they can change (runs of positions
    share one staircase where :func:`floor_groups` finds that cheaper); within a group each cell enters at its
    own block (the base run's block input, patched there) and every block call
    runs the stacked states of all cells already patched, on positions from that one on (:func:`block_staircase`).
    Returns the metric per (cell, prompt[, the metric's own columns])."""
    lm = segmented(m.adapter)
    if lm is None:
        raise PlanError(f"The segmented schedule needs a transformer LM with a segmented forward; {m.name} "
                        f"({m.adapter.kind}) has none.")
    last_only = is_last_only(metric)
    patches = [Patch(source, row=p) for p in range(P)]
    # cells that patch nothing keep the base run's value (of this metric: the base output, where kept)
    own = metric(base.output).float() if base.output is not None else base.metric.float()
    values = own[None].repeat(len(cells), *[1] * own.ndim)
    starts = floor_groups(m, cells, T, d, P)[0]
    groups: dict[int, list[tuple[int, int, Site]]] = {}
    for i, c in enumerate(cells):
        p0 = max(d, _first_position(c.site, T))
        site = _from(c.site, p0, T) if p0 < T else None
        if site is None:
            continue  # patches only positions where clean and corrupted agree: the base run's value
        block = _block_of(lm, m, c.site)
        assert block is not None  # segmented_ok checked every cell
        groups.setdefault(starts[p0], []).append((i, block, site))
    token_layers = 0
    bar = tqdm(sorted(groups.items()), desc=f"activation patching ({name})", unit="position",
               disable=not (progress if progress is not None else len(cells) * P > 2000))
    for t, members in bar:
        order = [i for i, _, _ in sorted(members, key=lambda x: x[1])]  # the order cells enter the staircase
        enter = functools.partial(_entering, base, t, members, patches)
        run, tl = block_staircase(m, lm, base.kv, t, P, enter, metric=metric, last_only=last_only,
                                  chunk_size=chunk_size)
        token_layers += tl
        assert run is not None  # every group has a cell, and the staircase ends at the last block
        if last_only:
            vals = cast(torch.Tensor, run.metric).float()  # a metric was requested
        else:  # the metric may read any position: put back the base run's logits before t
            prefix = base.output[:, :t]
            out = cast(torch.Tensor, run.output)  # no metric here, so the run keeps its output
            vals = torch.cat([metric(torch.cat([prefix, y], 1)).float() for y in out.split(P)])
        values[order] = vals.view(len(order), P, *vals.shape[1:])
    return values, token_layers


def _entering(base: Any, t: int, members: list[tuple[int, int, Site]], patches: list[Patch], j: int) -> Entering:
    """The cells of ``members`` patched in block ``j``: the base run's block-``j`` input, patched there."""
    new = [s for _, b, s in members if b == j]
    if not new:
        return []
    state = base.cache[Site(f"layers.{j}", io="input").name][:, t:]
    return [(state, [{s: patches[p]} for p in range(len(patches))]) for s in new]
