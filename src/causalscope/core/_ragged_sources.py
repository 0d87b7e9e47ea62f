"""Sites and sources over prompts of different lengths (a batch padded on the right): each row's own positions,
the positions to read in a source prompt of another length, and a source's mean that leaves padding out.

>>> row_positions(Site("layers.0", positions=[0, -1]), None, torch.tensor([5, 3])).tolist()
[[0, 4], [0, 2]]
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import InterventionError, SiteError
from ._sites import Site


def row_positions(site: Site, pos: torch.Tensor | None, lengths: torch.Tensor) -> torch.Tensor:
    """The site's positions in each row of a ragged batch: negative positions count back from each row's own
    last real token; every position must lie inside its row (not in the padding).

    >>> row_positions(Site("layers.0", positions=[0, -1]), None, torch.tensor([5, 3])).tolist()
    [[0, 4], [0, 2]]
    """
    if isinstance(site.positions, slice):
        sl = site.positions
        if any(v is not None and v < 0 for v in (sl.start, sl.stop)) or (sl.step is not None and sl.step < 0):
            raise SiteError(f"Site {site.name!r}: a slice with negative bounds or step means different positions in "
                            f"prompts of different lengths; give the positions as a list (e.g. [-3, -2, -1]).")
        pos = torch.arange(int(lengths.max()))[sl].expand(len(lengths), -1)
        if bool((pos >= lengths[:, None]).any()):
            raise SiteError(f"Site {site.name!r}: the slice reaches past the end of a shorter prompt (lengths "
                            f"{lengths.tolist()}); give positions every prompt has, as a list.")
        return pos
    assert pos is not None
    lens = lengths[:, None].to(pos.device)
    out = torch.where(pos < 0, pos + lens, pos)
    bad = (out < 0) | (out >= lens)
    if bool(bad.any()):
        r = int(bad.any(1).nonzero()[0, 0])
        raise SiteError(f"Site {site.name!r}: positions {pos[r].tolist()} lie outside a prompt of "
                        f"{int(lengths[r])} tokens (its padding starts there); positions count from each prompt's "
                        f"first token, negative ones back from its last.")
    return out


def source_positions(op: Any, src_rows: torch.Tensor, raw_pos: torch.Tensor | None, pos: torch.Tensor | None,
                     base_lens: torch.Tensor | None, T: int, T_src: int) -> torch.Tensor | None:
    """The positions to read in each source row when base or source prompts differ in length: the base row's
    own positions where they mean the same tokens, each source prompt's own offsets from its end under
    ``align="end"``; anything else (a source too short, positions from the end or a whole-sequence patch
    between prompts of different lengths) raises rather than read another token or padding.

    >>> source_positions(op, torch.tensor([0]), None, torch.tensor([[0, 2]]), torch.tensor([3]), 3, 3)
    """
    assert op.source is not None
    site, name = op.site, type(op.intervention).__name__
    base = base_lens.cpu() if base_lens is not None else torch.full((len(src_rows),), T)
    src = op.source.lengths[src_rows].cpu() if op.source.lengths is not None else torch.full((len(src_rows),), T_src)
    if site.positions is None:
        if not torch.equal(base, src):
            i = int((base != src).nonzero()[0, 0])
            raise InterventionError(
                f"{name} at {site.name!r} replaces every position, but a base prompt has {int(base[i])} tokens and "
                f"its source prompt {int(src[i])}. Pair prompts of equal lengths, or give the site positions "
                f"(e.g. positions=-1 with {name}(..., align='end'): each prompt's own last token).")
        return None
    listed = site.positions if isinstance(site.positions, tuple) else ()
    from_end = any(p < 0 for p in listed)
    if from_end and getattr(op.intervention, "align", None) == "end":
        return row_positions(site, raw_pos, src)
    if from_end and not torch.equal(base, src):
        i = int((base != src).nonzero()[0, 0])
        raise InterventionError(
            f"{name} at {site.name!r}: positions {list(listed)} count from the end, but a base prompt has "
            f"{int(base[i])} tokens and its source prompt {int(src[i])}; the same position would be different "
            f"tokens. Pair prompts of equal lengths, give positions from the start, or say {name}(..., "
            f"align='end') to read each source prompt's own offsets from its end.")
    assert pos is not None
    short = pos.cpu() >= src[:, None]
    if bool(short.any()):
        i = int(short.any(1).nonzero()[0, 0])
        raise InterventionError(
            f"{name} at {site.name!r}: position {int(pos[i][short[i]][0])} lies past the end of a source prompt of "
            f"{int(src[i])} tokens (its padding); give positions every source prompt has.")
    return pos


def fit_width(full: torch.Tensor, T: int) -> torch.Tensor:
    """A ragged source's token width made the base's: cut, or padded with zeros (only padding lies there).

    >>> fit_width(torch.ones(2, 3, 4), 5).shape
    torch.Size([2, 5, 4])
    """
    if full.ndim < 3 or full.shape[1] == T:
        return full
    if full.shape[1] > T:
        return full[:, :T]
    return torch.cat([full, full.new_zeros((full.shape[0], T - full.shape[1]) + tuple(full.shape[2:]))], 1)


def source_mean(full: torch.Tensor, op: Any, pos: torch.Tensor | None, lens: torch.Tensor | None) -> torch.Tensor:
    """The mean of a source over its rows, (1, ...): at each position over the source prompts that have it (a
    ragged source's padding is left out); a position the base reads that no source prompt has raises.

    >>> source_mean(run_cache_tensor, op, None, None)     # (1, T, d)
    """
    assert op.source is not None
    lengths = op.source.lengths
    if lengths is None or full.ndim < 3:
        return full.mean(0, keepdim=True)
    T = full.shape[1]
    real = (torch.arange(T)[None, :] < lengths.cpu()[:, None]).to(full.device)
    count = real.sum(0)
    shape = (len(full), T) + (1,) * (full.ndim - 2)
    total = (full * real.view(shape).to(full.dtype)).sum(0, keepdim=True)
    need = int(pos.max()) + 1 if pos is not None else (int(lens.max()) if lens is not None else T)
    have = torch.cat([count.cpu(), count.new_zeros(max(need - T, 0)).cpu()])[:need]
    if bool((have == 0).any()):
        t = int((have == 0).nonzero()[0, 0])
        raise InterventionError(
            f"{type(op.intervention).__name__} at {op.site.name!r}: no source prompt has position {t} (source "
            f"lengths up to {int(lengths.max())}); give a source whose prompts are at least as long as the base.")
    return total / count.clamp(min=1).view((1, T) + (1,) * (full.ndim - 2)).to(full.dtype)
