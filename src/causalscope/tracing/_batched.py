"""Causal tracing as one batched plan: every (token, layer) cell x sample is a row of full forwards.

On an accelerator the cost of a causal trace is the number of kernel launches, not the token-layers: a
GPT-2-small block call costs about the same for 12 rows as for 1,200. The floor schedule of ``_tracing``
(a staircase of one-block calls per token) minimises token-layers, which is what a CPU pays for; this
schedule runs the whole trace in a few full passes of ``cells x samples`` rows (chunked by free memory).

>>> r = causal_trace(m, prompt, subject, kind="mlp", schedule="batched")   # the default on CUDA
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch

from ..core import Intervention, Model, Patch, Site


def batched_scores(m: Model, ids: torch.Tensor, kind: str, window: int, samples: int, b: int,
                   noise: Mapping[Site, Intervention], clean: Any, corrupted: Any, sever: str | None, metric: Any,
                   low: float, progress: bool | None) -> tuple[torch.Tensor, int]:
    """Scores (T x L) of every cell from token ``b`` on, and the token-layers the passes ran.

    Each cell is one edits dict shared by its ``samples`` rows (row i runs on corrupted copy i): the
    subject noise, the clean value at (t, l) (``hidden``: block l's output; ``mlp`` / ``attn``: the
    window's module outputs, ROME's layers max(0, l - w//2) .. min(L, l - (-w//2)) - 1) and, with
    ``sever``, the corrupted values of that kind's outputs at t in every block above l. Restoring the last
    block's output at t < T-1 cannot reach the last position: those cells keep the corrupted score.
    """
    T, L = int(ids.shape[1]), int(m.n_layers or 0)
    restore = Patch(clean, row=0)
    freeze = Patch(corrupted)  # row i of the plan runs on input i = corrupted copy i
    cells: list[tuple[int, int]] = []
    rows: list[dict] = []
    index: list[int] = []
    for t in range(b, T):
        for layer in range(L):
            if kind == "hidden" and layer == L - 1 and t < T - 1:
                continue
            edits: dict[Site, Intervention] = dict(noise)
            if kind == "hidden":
                edits[Site(f"layers.{layer}", positions=t)] = restore
                if sever:
                    edits.update({Site(f"layers.{j}.{sever}", positions=t): freeze for j in range(layer + 1, L)})
            else:
                lo, hi = max(0, layer - window // 2), min(L, layer - (-window // 2))
                edits.update({Site(f"layers.{k}.{kind}", positions=t): restore for k in range(lo, hi)})
            cells.append((t, layer))
            rows += [edits] * samples
            index += list(range(samples))
    scores = torch.full((T, L), low)
    if not cells:
        return scores, 0
    run = m.run(ids.expand(samples, -1), rows, input_index=index, metric=metric, keep_output=False,
                progress=progress)
    per_cell = cast(torch.Tensor, run.metric).float().cpu().view(len(cells), samples).mean(1)  # a metric was requested
    for (t, layer), v in zip(cells, per_cell.tolist()):
        scores[t, layer] = v
    return scores, int(run.meta["token_layers"] or 0)
