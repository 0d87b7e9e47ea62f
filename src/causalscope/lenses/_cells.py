"""The lens arithmetic: read each layer's residual stream through the model's head (after an optional
translator) and keep, per cell, the top-k tokens, the answer's probability and rank, and the KL divergence from
the final layer's distribution. Chunked over prompts; nothing of size (prompts, positions, vocab) is kept.

>>> cells = lens_cells(head, None, s, k=5, answers=None, rows=16)
>>> cells.kl.shape                           # (layers, prompts, positions)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._inputs import Head, Stream

#: ``(layer, residual) -> translated residual``; None: the logit lens (no translation)
Translate = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class Cells:
    """Per (layer, prompt, position): ``top_ids`` / ``top_probs`` (..., k), ``kl`` (KL(final || lens), nats),
    ``answer_prob`` / ``answer_rank`` (rank 1 = the top token; None without answers). Padding cells hold NaN
    (floats) and -1 (ints)."""

    top_ids: torch.Tensor
    top_probs: torch.Tensor
    kl: torch.Tensor
    answer_prob: torch.Tensor | None
    answer_rank: torch.Tensor | None


def log_probs(head: Head, h: torch.Tensor) -> torch.Tensor:
    """log softmax of the head's logits for residual ``h``, in float32 (or wider)."""
    logits = head(h)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits.log_softmax(-1)


def kl_from(final: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim from log probabilities ``final`` (p) and ``other`` (q)."""
    return (final.exp() * (final - other)).sum(-1)


def lens_cells(head: Head, translate: Translate | None, s: Stream, layers: list[int], k: int,
               answers: torch.Tensor | None, rows: int) -> Cells:
    """The cells of ``layers`` for every prompt of ``s``, ``rows`` prompts at a time."""
    B, T = int(s.ids.shape[0]), int(s.ids.shape[1])
    L = len(layers)
    top_ids = torch.full((L, B, T, k), -1, dtype=torch.long)
    top_probs = torch.full((L, B, T, k), float("nan"))
    kl = torch.full((L, B, T), float("nan"))
    a_prob = None if answers is None else torch.full((L, B, T), float("nan"))
    a_rank = None if answers is None else torch.full((L, B, T), -1, dtype=torch.long)
    mask = s.mask
    with torch.inference_mode():
        for r0 in range(0, B, rows):
            r1 = min(B, r0 + rows)
            keep = mask[r0:r1]
            final = log_probs(head, s.last[r0:r1])
            for j, layer in enumerate(layers):
                h = s.hidden[layer][r0:r1]
                if translate is not None:
                    h = translate(layer, h)
                lp = log_probs(head, h)
                p, i = lp.topk(k, dim=-1)
                top_ids[j, r0:r1] = torch.where(keep[..., None], i.cpu(), -1)
                top_probs[j, r0:r1] = torch.where(keep[..., None], p.exp().cpu(), float("nan"))
                kl[j, r0:r1] = torch.where(keep, kl_from(final, lp).cpu(), float("nan"))
                if answers is not None and a_prob is not None and a_rank is not None:
                    ids = answers[r0:r1].to(lp.device)[:, None, None].expand(-1, lp.shape[1], 1)
                    la = lp.gather(-1, ids)
                    rank = 1 + (lp > la).sum(-1)
                    a_prob[j, r0:r1] = torch.where(keep, la[..., 0].exp().cpu(), float("nan"))
                    a_rank[j, r0:r1] = torch.where(keep, rank.cpu(), -1)
    return Cells(top_ids, top_probs, kl, a_prob, a_rank)


def mean_kl(head: Head, translate: Translate | None, s: Stream, layers: list[int], rows: int) -> torch.Tensor:
    """(layers,) float64: the mean over every real token of KL(final layer || lens at the layer)."""
    total = torch.zeros(len(layers), dtype=torch.float64)
    mask = s.mask
    count = int(mask.sum())
    with torch.inference_mode():
        for r0 in range(0, int(s.ids.shape[0]), rows):
            r1 = r0 + rows
            keep = mask[r0:r1].to(s.last.device)
            final = log_probs(head, s.last[r0:r1])
            for j, layer in enumerate(layers):
                h = s.hidden[layer][r0:r1]
                if translate is not None:
                    h = translate(layer, h)
                lp = log_probs(head, h)
                total[j] += float(kl_from(final, lp)[keep].double().sum())
    return total / count
