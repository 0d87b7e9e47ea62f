"""The two patching schedules shared by activation patching and mediation: full batched rows for any
model, and the segmented "staircase" for Hugging Face LMs (only blocks from the patched one on, only
positions from the first that can change, against cached keys / values).

>>> values, token_layers = staircase(m, cells, base_run, source_run, P, T, d, metric, None, "denoise")
"""
from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from ._cells import Cell
from ._interventions import Patch
from ._metrics import is_last_only
from ._model import Model
from ._sites import Site


def full_rows(m: Model, cells: list[Cell], base_in: Any, source: Any, P: int, metric: Any, chunk_size: int | None,
          progress: bool | None) -> tuple[torch.Tensor, int]:
    """Any model: one engine row per (cell, prompt), full forwards, chunked. Returns (cells, prompts)."""
    patch = Patch(source)
    rows = [{c.site: patch} for c in cells for _ in range(P)]
    run = m.run(base_in, rows, input_index=[p for _ in cells for p in range(P)], metric=metric,
                chunk_size=chunk_size, progress=progress if progress is False else None)
    vals = run.metric.float()
    return vals.view(len(cells), P, *vals.shape[1:]), int(run.meta["token_layers"] or 0)


def _block_of(m: Model, site: Site) -> int | None:
    res = m.adapter.resolve(site)
    prefix = m.adapter.arch.layers + "."  # type: ignore[attr-defined]
    if not res.path.startswith(prefix):
        return None
    return int(res.path[len(prefix):].split(".")[0])


def segmented_ok(m: Model, cells: list[Cell]) -> bool:
    if m.adapter.kind != "hf-causal-lm":
        return False
    return all(_block_of(m, c.site) is not None for c in cells)


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
    return Site(site.module, io=site.io, positions=tuple(kept), neurons=site.neurons, heads=site.heads,
                basis=site.basis, n_heads=site.n_heads)


def staircase(m: Model, cells: list[Cell], base: Any, source: Any, P: int, T: int, d: int, metric: Any,
               progress: bool | None, name: str) -> tuple[torch.Tensor, int]:
    """Hugging Face LMs: cells grouped by the first position they can change; within a group every block
    call runs the stacked states of all cells already patched, on positions from that one on. Returns the
    metric per (cell, prompt[, the metric's own columns])."""
    L = int(m.n_layers or 0)
    last_only = is_last_only(metric)
    patches = [Patch(source, row=p) for p in range(P)]
    # cells that patch nothing keep the base run's value (of this metric: the base output, where kept)
    own = metric(base.output).float() if base.output is not None else base.metric.float()
    values = own[None].repeat(len(cells), *[1] * own.ndim)
    groups: dict[int, list[tuple[int, int, Site]]] = {}
    for i, c in enumerate(cells):
        p0 = max(d, _first_position(c.site, T))
        site = _from(c.site, p0, T) if p0 < T else None
        if site is None:
            continue  # patches only positions where clean and corrupted agree: the base run's value
        groups.setdefault(p0, []).append((i, int(_block_of(m, c.site)), site))  # type: ignore[arg-type]
    token_layers = 0
    bar = tqdm(sorted(groups.items()), desc=f"activation patching ({name})", unit="position",
               disable=not (progress if progress is not None else len(cells) * P > 2000))
    for t, members in bar:
        states: list[torch.Tensor] = []
        order: list[int] = []
        first = min(b for _, b, _ in members)
        for j in range(first, L):
            new = [(i, s) for i, b, s in members if b == j]
            entering = base.cache[Site(f"layers.{j}", io="input").name][:, t:]
            hidden = torch.cat(states + [entering] * len(new)) if (states or new) else None
            if hidden is None:
                continue
            rows: list[dict] = [{}] * (len(states) * P)
            rows += [{s: patches[p]} for _, s in new for p in range(P)]
            order += [i for i, _ in new]
            last = j == L - 1
            seg = m.adapter.segment(hidden, layer=j, stop=j + 1, pos=t,  # type: ignore[attr-defined]
                                    past=m.adapter.stacked_past(base.kv, j, len(order), t),  # type: ignore
                                    head=last, last_only=last and last_only)
            run = m.run(seg, rows, metric=metric if last and last_only else None)
            token_layers += int(run.meta["token_layers"] or 0)
            if not last:
                states = list(run.output.split(P))
                continue
            if last_only:
                vals = run.metric.float()
            else:  # the metric may read any position: put back the base run's logits before t
                prefix = base.output[:, :t]
                vals = torch.cat([metric(torch.cat([prefix, y], 1)).float() for y in run.output.split(P)])
            values[order] = vals.view(len(order), P, *vals.shape[1:])
    return values, token_layers
