"""Patching sweeps as cells: a clean / corrupted input pair, and the (label, site) cells of a sweep over
layers, positions, heads or neurons. Shared by activation patching, attribution patching and mediation.

>>> m = cs.load("tiny-gpt2")
>>> clean, corrupted = input_pair(m, "the cat sat on the mat", "the dog sat on the mat")
>>> dims, coords, cells = sweep_cells(m, "resid_pre", None, None, seq_len(clean), clean)
>>> dims, len(cells)
(('layer', 'position'), 24)
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError, SiteError
from ._model import Model
from ._sites import Site
from .adapters import Batch

GRIDS = ("resid_pre", "resid_post", "attn", "mlp", "heads")


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep: its coordinates (``label``) and the site it patches."""

    label: tuple
    site: Site


def model_input(m: Model, x: Any, method: str, what: str = "") -> Batch:
    """Any input a method takes (a prompt, a list of prompts, token ids, a tensor, a tuple of tensors, a dict of
    keyword tensors such as ``input_ids`` / ``attention_mask``) as the :class:`Batch` the engine feeds the model.

    >>> model_input(m, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, "activation_patching").seq_len
    6

    1-D token ids get a batch dim. Padded inputs (an ``attention_mask`` with zeros, prompts of different
    lengths) are refused with an :class:`InputError` naming ``method``: its positions and "last position"
    metrics assume unpadded rows.
    """
    label = f"The {what} input" if what else "The input"
    if isinstance(x, str) or (isinstance(x, (list, tuple)) and x and all(isinstance(s, str) for s in x)):
        tokenize = getattr(m.adapter, "tokenize", None)
        if tokenize is None:
            raise InputError(f"{label} is text but {m.name} takes tensors.")
        x = tokenize(x)  # prompts of one length (different lengths raise, saying so)
    if isinstance(x, torch.Tensor) and x.ndim == 1 and not x.is_floating_point() and x.dtype != torch.bool:
        x = x[None]  # one prompt's token ids
    batch = m.adapter.prepare(x)
    mask = batch.kwargs.get("attention_mask")
    if getattr(batch, "lengths", None) is not None or (isinstance(mask, torch.Tensor) and not bool((mask != 0).all())):
        raise InputError(f"{method} cannot handle padded inputs yet: {label[4:] if what else 'the input'} is padded "
                         f"(an attention_mask with zeros, or prompts of different lengths), and the method's "
                         f"positions and last-position metrics assume every row is all real tokens. Pass unpadded "
                         f"inputs: prompts of one length, with no attention_mask or an all-ones one; run prompts of "
                         f"different lengths separately.")
    return batch


def length_groups(m: Model, clean: Any, corrupted: Any,
                  names: tuple[str, str] = ("clean", "corrupted")) -> dict[int, list[int]] | None:
    """Prompt pairs grouped by token length (length -> pair indices, in order) when ``clean`` / ``corrupted`` are
    lists of prompts (or of token-id lists) whose pairs differ in length; None when every pair has one length
    or the inputs are not such lists. Within a pair, clean and corrupted must have one length.

    >>> length_groups(m, ["the cat sat", "a dog ran by the tree"], ["the dog sat", "a cat ran by the tree"])
    {3: [0], 5: [1]}
    """
    kinds = (_list_kind(clean), _list_kind(corrupted))
    if None in kinds:
        return None
    if len(clean) != len(corrupted):
        a, b = names
        raise InputError(f"{len(clean)} {a} prompts and {len(corrupted)} {b} ones: give one {b} prompt per {a} one.")

    def length(x: Any, kind: str | None) -> int:
        if kind == "ids":
            return len(x)
        tokenize = getattr(m.adapter, "tokenize", None)
        if tokenize is None:
            raise InputError(f"The inputs are text but {m.name} takes tensors.")
        return int(tokenize(x).shape[1])

    lc = [length(x, kinds[0]) for x in clean]
    lk = [length(x, kinds[1]) for x in corrupted]
    bad = [i for i in range(len(lc)) if lc[i] != lk[i]]
    if bad:
        i = bad[0]
        raise InputError(f"Pair {i}: the {names[0]} prompt has {lc[i]} tokens and the {names[1]} one {lk[i]}; the "
                         f"two prompts of a pair must have one length (pairs may differ from each other).")
    if len(set(lc)) == 1:
        return None
    groups: dict[int, list[int]] = {}
    for i, T in enumerate(lc):
        groups.setdefault(T, []).append(i)
    return groups


def _list_kind(x: Any) -> str | None:
    if not isinstance(x, (list, tuple)) or not x:
        return None
    if all(isinstance(s, str) for s in x):
        return "text"
    if all(isinstance(s, (list, tuple)) and s and all(isinstance(i, int) and not isinstance(i, bool) for i in s)
           for s in x):
        return "ids"
    return None


def input_pair(m: Model, clean: Any, corrupted: Any, method: str = "activation_patching") -> tuple[Batch, Batch]:
    """A clean / corrupted pair of inputs as two :class:`Batch` es of the same shape (see :func:`model_input`).

    >>> clean, corrupted = input_pair(m, "the cat sat on the mat", "the dog sat on the mat")
    >>> seq_len(clean), first_difference(clean, corrupted)
    (6, 1)
    """
    a, b = model_input(m, clean, method, "clean"), model_input(m, corrupted, method, "corrupted")
    ids_a, ids_b = token_ids(a), token_ids(b)
    if ids_a is not None and ids_b is not None:
        shapes: tuple[Any, Any] = (tuple(ids_a.shape), tuple(ids_b.shape))
    else:
        shapes = (_shapes(a), _shapes(b))
    if shapes[0] != shapes[1] or a.size != b.size:
        raise InputError(f"Clean and corrupted inputs must have the same shape (one corrupted input per clean "
                         f"one, same length); got {shapes[0]} and {shapes[1]}.")
    return a, b


def _shapes(batch: Batch) -> Any:
    """The shapes of a batch's tensors (one tensor: its shape; several: a tuple of them)."""
    flat = [*batch.args, *(v for k, v in sorted(batch.kwargs.items()))]
    shapes = [tuple(t.shape) for t in flat if isinstance(t, torch.Tensor)]
    return shapes[0] if len(shapes) == 1 else tuple(shapes)


def token_ids(x: Any) -> torch.Tensor | None:
    """The (batch, tokens) token ids an input feeds the model, or None where it feeds none.

    >>> token_ids({"input_ids": ids, "attention_mask": mask}) is ids
    True

    ``x``: a :class:`Batch` (its ``input_ids`` keyword, else its first positional tensor), a dict (its
    ``input_ids``) or a tensor. Only integer tensors of at least two dims count.
    """
    if isinstance(x, Batch):
        ids = x.kwargs.get("input_ids", x.args[0] if x.args else None)
    elif isinstance(x, Mapping):
        ids = x.get("input_ids")
    else:
        ids = x
    if isinstance(ids, torch.Tensor) and ids.ndim >= 2 and not ids.is_floating_point() and ids.dtype != torch.bool:
        return ids
    return None


def seq_len(x: Any) -> int:
    """Token positions of an input (a :class:`Batch`, a dict with ``input_ids``, token ids); 0 where it has none."""
    if isinstance(x, Batch) and x.seq_len is not None:
        return int(x.seq_len)
    ids = token_ids(x)
    return int(ids.shape[1]) if ids is not None else 0


def first_difference(a: Any, b: Any) -> int:
    """First position where any clean prompt differs from its corrupted one (causal models: earlier
    positions are the same in both runs, so patching them changes nothing).

    >>> first_difference(*input_pair(m, "the cat sat on the mat", "the dog sat on the mat"))
    1

    ``a`` / ``b``: :class:`Batch` es, dicts with ``input_ids`` or token-id tensors, alike. Every other
    (batch, tokens, ...) keyword tensor (a mask, position ids) counts too; one that only one side has
    makes it 0. 0 where there are no token ids.
    """
    ids_a, ids_b = token_ids(a), token_ids(b)
    if ids_a is None or ids_b is None or ids_a.shape != ids_b.shape:
        return 0
    bt = ids_a.shape[:2]
    per_token = [_per_token(x, bt) for x in (a, b)]
    if per_token[0].keys() != per_token[1].keys():
        return 0
    first = int(bt[1])
    for u, v in [(ids_a, ids_b), *((per_token[0][k], per_token[1][k]) for k in per_token[0])]:
        if u.shape != v.shape:
            return 0
        diff = (u != v).reshape(u.shape[0], u.shape[1], -1).any(-1).any(0).nonzero()
        if len(diff):
            first = min(first, int(diff[0]))
    return first


def _per_token(x: Any, bt: Any) -> dict[str, torch.Tensor]:
    """The (batch, tokens, ...) keyword tensors of an input other than its token ids."""
    kw = x.kwargs if isinstance(x, Batch) else x if isinstance(x, Mapping) else {}
    return {k: v for k, v in kw.items()
            if k != "input_ids" and isinstance(v, torch.Tensor) and v.ndim >= 2 and v.shape[:2] == bt}


def segment_safe(batch: Batch) -> bool:
    """Whether a segmented forward (which rebuilds positions and the causal mask itself) reproduces what
    ``batch`` feeds the model: token ids only, with at most an all-ones ``attention_mask``.

    >>> segment_safe(m.adapter.prepare({"input_ids": ids, "position_ids": pos}))
    False
    """
    for k, v in batch.kwargs.items():
        if k in ("input_ids", "use_cache"):
            continue
        if k == "attention_mask" and isinstance(v, torch.Tensor) and bool((v != 0).all()):
            continue
        if v is None:
            continue
        return False
    return True


def sweep_cells(m: Model, sites: Any, per: str | None, positions: Sequence[int] | None, T: int,
           clean_in: Any) -> tuple[tuple[str, ...], dict[str, list], list[Cell]]:
    L = int(m.n_layers or 0)
    sweeps_positions = (isinstance(sites, str) and sites in GRIDS and sites != "heads") or per == "position"
    if positions is not None and not sweeps_positions:
        raise InputError(f"positions= restricts a sweep over positions ('resid_pre', 'resid_post', 'attn', 'mlp', or "
                         f"one site with per='position'); this sweep ({sites!r:.60}"
                         f"{f', per={per!r}' if per else ''}) has none, so it would be ignored. Drop positions=, or "
                         f"select positions in the site: cs.Site(name, positions=[...]).")
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
        if per not in ("neuron", "position", "head"):
            raise InputError(f"per must be 'neuron', 'position' or 'head', got {per!r}.")
        if not isinstance(sites, (str, Site)):
            raise InputError(f"per={per!r} sweeps one site, so sites must be one site name or cs.Site; got "
                             f"{type(sites).__name__} {sites!r:.60}. For several sites call once per site, or drop "
                             f"per=.")
        site = sites if isinstance(sites, Site) else Site(sites)
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


def position_list(positions: Any) -> list[int] | None:
    """A sweep's ``positions`` as a list of ints (None: every position); anything else raises, naming the fix.

    >>> position_list(range(2, 4)), position_list(None)
    ([2, 3], None)
    """
    if positions is None:
        return None
    if isinstance(positions, slice):
        raise InputError(f"positions must be a list of ints, got {positions!r}: a sweep does not take a slice (it "
                         f"could select nothing without a word). List the positions, e.g. positions=list(range(2, 5)).")
    if isinstance(positions, torch.Tensor) and not (positions.is_floating_point() or positions.is_complex()) \
            and positions.ndim <= 1:
        positions = positions.reshape(-1).tolist()
    if isinstance(positions, (str, bytes, Mapping)) or not isinstance(positions, (Sequence, range)):
        raise InputError(f"positions must be a list of ints (token positions; negative count from the end), got "
                         f"{type(positions).__name__} {positions!r:.60}." +
                         (f" For one position write positions=[{positions}]." if isinstance(positions, int) else ""))
    items = list(positions)
    bad = [p for p in items if isinstance(p, bool) or not isinstance(p, numbers.Integral)]
    if bad:
        raise InputError(f"positions must be ints; got {bad[0]!r} in {items!r:.80}.")
    if not items:
        raise InputError("positions is empty: list at least one token position, or pass None for all of them.")
    return [int(p) for p in items]


def _positions(positions: Sequence[int] | None, T: int) -> list[int]:
    given = position_list(positions)
    if given is None:
        if not T:
            raise InputError("A position sweep needs token inputs (batch, positions).")
        return list(range(T))
    if T and any(not -T <= p < T for p in given):
        raise InputError(f"positions {given} out of range for {T} tokens (valid: -{T} .. {T - 1}).")
    pos = [p % T if T else p for p in given]
    if len(set(pos)) != len(pos):
        raise InputError(f"positions {given} name a position twice (on {T} tokens they are {pos}); list each once.")
    return pos


def _per(m: Model, site: Site, per: str, positions: Sequence[int] | None, T: int,
         clean_in: Any) -> tuple[tuple[str, ...], dict[str, list], list[Cell]]:
    if per not in ("neuron", "position", "head"):
        raise InputError(f"per must be 'neuron', 'position' or 'head', got {per!r}.")
    if site.sae is not None or site.basis is not None:
        raise InputError(f"per={per!r} sweeps the activation's own {per}s, but {site.name!r} selects "
                         f"{'SAE latents' if site.sae is not None else 'a subspace'}; give one site per cell "
                         f"instead, e.g. [cs.Site({site.module!r}, sae=sae, features=[j]) for j in ...].")
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
