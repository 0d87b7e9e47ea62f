"""Patching sweeps as cells: a clean / corrupted input pair, and the (label, site) cells of a sweep over
layers, positions, heads or neurons. Shared by activation patching, attribution patching and mediation.

>>> m = cs.load("tiny-gpt2")
>>> clean, corrupted = input_pair(m, "the cat sat on the mat", "the dog sat on the mat")
>>> dims, coords, cells = sweep_cells(m, "resid_pre", None, None, seq_len(clean), clean)
>>> dims, len(cells)
(('layer', 'position'), 24)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError, SiteError
from ._model import Model
from ._sites import Site

GRIDS = ("resid_pre", "resid_post", "attn", "mlp", "heads")


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep: its coordinates (``label``) and the site it patches."""

    label: tuple
    site: Site


def input_pair(m: Model, clean: Any, corrupted: Any) -> tuple[Any, Any]:
    tok = getattr(m.adapter, "tokenize", None)
    out = []
    for what, x in (("clean", clean), ("corrupted", corrupted)):
        if isinstance(x, str) or (isinstance(x, (list, tuple)) and x and all(isinstance(s, str) for s in x)):
            if tok is None:
                raise InputError(f"The {what} input is text but {m.name} takes tensors.")
            x = tok(x)
        out.append(x)
    a, b = out
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.ndim == 1 and not a.is_floating_point():
            a, b = a[None], b[None] if b.ndim == 1 else b
        if a.shape != b.shape:
            raise InputError(f"Clean and corrupted inputs must have the same shape (one corrupted input per clean "
                             f"one, same length); got {tuple(a.shape)} and {tuple(b.shape)}.")
    return a, b


def seq_len(x: Any) -> int:
    if isinstance(x, torch.Tensor) and x.ndim >= 2 and not x.is_floating_point():
        return int(x.shape[1])
    return 0


def first_difference(a: Any, b: Any) -> int:
    """First position where any clean prompt differs from its corrupted one (causal models: earlier
    positions are the same in both runs, so patching them changes nothing)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.is_floating_point():
        return 0
    diff = (a != b).any(0).nonzero()
    return int(diff[0]) if len(diff) else int(a.shape[1])


def sweep_cells(m: Model, sites: Any, per: str | None, positions: Sequence[int] | None, T: int,
           clean_in: Any) -> tuple[tuple[str, ...], dict[str, list], list[Cell]]:
    L = int(m.n_layers or 0)
    if isinstance(sites, str) and sites in GRIDS:
        if not L:
            raise InputError(f"The sweep {sites!r} needs a transformer with layers; {m.name} has none known. "
                             f"Give a list of sites instead.")
        if per is not None:
            raise InputError(f"per= applies to a single site, not to the {sites!r} sweep.")
        if sites == "heads":
            H = int(getattr(m.adapter, "n_heads", 0) or 0)
            cells = [Cell((l, h), Site(f"layers.{l}.attn.z", heads=h)) for l in range(L) for h in range(H)]
            return ("layer", "head"), {"layer": list(range(L)), "head": list(range(H))}, cells
        pos = _positions(positions, T)
        pre = m.adapter.resid_pre_site
        make = {"resid_pre": lambda l, t: Site(pre(l).module, io=pre(l).io, positions=t),
                "resid_post": lambda l, t: Site(f"layers.{l}", positions=t),
                "attn": lambda l, t: Site(f"layers.{l}.attn", positions=t),
                "mlp": lambda l, t: Site(f"layers.{l}.mlp", positions=t)}[sites]
        cells = [Cell((l, t), make(l, t)) for l in range(L) for t in pos]
        return ("layer", "position"), {"layer": list(range(L)), "position": pos}, cells
    if per is not None:
        site = sites if isinstance(sites, Site) else Site(str(sites))
        return _per(m, site, per, positions, T, clean_in)
    if isinstance(sites, (str, Site)):
        sites = [sites]
    if not isinstance(sites, (list, tuple)) or not sites:
        raise InputError(f"sites must be one of {', '.join(map(repr, GRIDS))}, a list of sites, or one site with "
                         f"per='neuron' | 'position' | 'head'; got {sites!r}.")
    cells = [Cell((str(s.name if isinstance(s, Site) else s),), s if isinstance(s, Site) else Site(str(s)))
             for s in sites]
    for c in cells:
        try:
            m.adapter.resolve(c.site)  # unknown names fail here, with suggestions
        except SiteError as e:
            raise SiteError(f"{e} (Or a sweep: {', '.join(GRIDS)}.)") from None
    return ("site",), {"site": [c.label[0] for c in cells]}, cells


def _positions(positions: Sequence[int] | None, T: int) -> list[int]:
    if positions is None:
        if not T:
            raise InputError("A position sweep needs token inputs (batch, positions).")
        return list(range(T))
    pos = [int(p) % T if T else int(p) for p in positions]
    if T and any(not -T <= int(p) < T for p in positions):
        raise InputError(f"positions {list(positions)} out of range for {T} tokens.")
    return pos


def _per(m: Model, site: Site, per: str, positions: Sequence[int] | None, T: int,
         clean_in: Any) -> tuple[tuple[str, ...], dict[str, list], list[Cell]]:
    if per not in ("neuron", "position", "head"):
        raise InputError(f"per must be 'neuron', 'position' or 'head', got {per!r}.")
    probe = m.run(clean_in, cache=[Site(site.module, io=site.io)]).cache[Site(site.module, io=site.io).name]
    res = m.adapter.resolve(site)
    base: dict[str, Any] = dict(module=site.module, io=site.io, positions=site.positions, neurons=site.neurons,
                                heads=site.heads)
    if per == "position":
        if probe.ndim < 3:
            raise InputError(f"per='position' needs a (batch, positions, ...) activation; {site.name!r} is "
                             f"{tuple(probe.shape)}.")
        pos = _positions(positions, int(probe.shape[1]))
        cells = [Cell((t,), Site(**{**base, "positions": t})) for t in pos]
        return ("position",), {"position": pos}, cells
    if per == "head":
        H = res.n_heads or (probe.shape[-2] if probe.ndim == 4 else None)
        if not H:
            raise InputError(f"per='head' needs a per-head site such as 'layers.0.attn.z'; {site.name!r} has no heads.")
        cells = [Cell((h,), Site(**{**base, "heads": h})) for h in range(int(H))]
        return ("head",), {"head": list(range(int(H)))}, cells
    width = int(probe.shape[-1]) // (res.n_heads if site.heads is not None and res.n_heads else 1)
    cells = [Cell((n,), Site(**{**base, "neurons": n})) for n in range(width)]
    return ("neuron",), {"neuron": list(range(width))}, cells


def unique_full_sites(cells: list[Cell]) -> list[Site]:
    seen: dict[tuple, Site] = {}
    for c in cells:
        seen.setdefault((c.site.module, c.site.io), Site(c.site.module, io=c.site.io))
    return list(seen.values())
