"""The engine's ops: a plan's edits compiled into per-site groups of rows, and applied to one pass's activations.

>>> ops = compile_ops(adapter, batch, [({Site("layers.2", positions=1): Zero()}, 0, 1)])
>>> ops[("layers.2", "output")][0].rows
[0]

``compile_ops`` groups the rows that apply one intervention at one site template; :func:`apply_op` applies such a
group to the rows of the pass in progress (a :class:`Chunk`); :func:`select` and :func:`write` read and write a
site's part (positions, heads, neurons, basis, SAE latents) of an activation.
"""
from __future__ import annotations

import dataclasses
import functools
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch

from ..errors import InterventionError, SiteError
from ._interventions import ApplyContext, Intervention, as_intervention
from ._ragged_sources import fit_width, row_positions, source_mean, source_positions
from ._rows import Block
from ._sae_sites import TranscoderWrite, decoded_change, is_transcoder, latent_grads, latent_mean, site_latents
from ._sae_sites import pick as pick_features
from ._sites import Site, as_site, check_shape
from ._sites import check_site as check_site  # (the engine's planning reads it from here)
from .adapters import Adapter, Batch, Resolved

Key = tuple[str, str]


@dataclass
class Source:
    """Another run's activations an intervention reads: by (module path, io), ``size`` rows each."""

    tensors: dict[Key, torch.Tensor]
    size: int
    lengths: torch.Tensor | None = None  # each source row's real length (a ragged source run)


@dataclass
class Op:
    """Rows that apply one intervention at one site template (positions may differ per row).

    >>> op.rows, op.site.name, type(op.intervention).__name__
    ([0, 3], 'layers.2', 'Zero')
    """

    res: Resolved
    site: Site
    intervention: Intervention
    rows: list[int] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # rows as runs r0 .. r1 (what rows_t is made from)
    pos: list[tuple[tuple[int, ...], int]] = field(default_factory=list)  # (positions, how many rows in a row)
    neur: list[tuple[tuple[int, ...], int]] = field(default_factory=list)  # (neurons, rows): sites differing in them
    neur_t: torch.Tensor | None = None  # (rows, k) each row's neurons, where the op's rows pick different ones
    neur_range: tuple[int, int] = (0, 0)  # the smallest and largest neuron of neur_t
    feat: list[tuple[tuple[int, ...], int]] = field(default_factory=list)  # (SAE features, rows), as neur
    feat_t: torch.Tensor | None = None  # (rows, k) each row's SAE features, where the op's rows pick different ones
    src_rows: torch.Tensor | None = None
    rows_t: torch.Tensor | None = None
    pos_t: torch.Tensor | None = None
    source: Source | None = None

    staged: dict = field(default_factory=dict)
    memo: dict = field(default_factory=dict)  # what the run's chunks share (an SAE site's mean of latents)

    def finalize(self) -> None:
        if len(self.spans) <= 16:
            self.rows_t = torch.cat([torch.arange(a, b) for a, b in self.spans])
        else:
            self.rows_t = torch.tensor(self.rows, dtype=torch.long)
        if isinstance(self.site.positions, tuple):
            self.pos_t = torch.cat([torch.tensor([p], dtype=torch.long).expand(k, -1) for p, k in self.pos])
        if len(self.neur) > 1:
            self.neur_t = torch.cat([torch.tensor([n], dtype=torch.long).expand(k, -1) for n, k in self.neur])
            self.neur_range = (int(self.neur_t.min()), int(self.neur_t.max()))
        if len(self.feat) > 1:
            self.feat_t = torch.cat([torch.tensor([f], dtype=torch.long).expand(k, -1) for f, k in self.feat])

    def add(self, r0: int, r1: int, site: Site) -> None:
        """Rows ``r0 .. r1`` (after every row added so far) apply this op at ``site`` (this op's template; its
        own positions)."""
        self.rows.extend(range(r0, r1))
        if self.spans and self.spans[-1][1] == r0:
            self.spans[-1] = (self.spans[-1][0], r1)
        else:
            self.spans.append((r0, r1))
        for runs, v in ((self.pos, site.positions), (self.neur, site.neurons), (self.feat, site.features)):
            if isinstance(v, tuple):
                if runs and runs[-1][0] == v:
                    runs[-1] = (v, runs[-1][1] + r1 - r0)
                else:
                    runs.append((v, r1 - r0))

    def stage(self, dev: torch.device) -> None:
        """Copy the row / position / source-row indices to ``dev`` before a pass: a host-to-device copy
        inside a hook would make the host wait for the accelerator mid-pass."""
        if dev.type != "cpu" and dev not in self.staged:
            self.staged[dev] = tuple(None if t is None else t.to(dev)
                                     for t in (self.rows_t, self.pos_t, self.src_rows, self.neur_t, self.feat_t))


class Chunk:
    """The pass in progress: plan rows ``c0 .. c1``, and what its hooks record. The hooks read and write it.

    >>> chunk = Chunk(seq_len=12, offset=0)
    >>> chunk.start(0, 48, plan_input_index[0:48])

    (A plain class with slots: it is made once per run, and its attributes are read in every hook.)
    """

    __slots__ = ("seq_len", "offset", "c0", "c1", "input_index", "lengths", "counts", "acts", "cache", "finite",
                 "stash")

    def __init__(self, seq_len: int | None, offset: int) -> None:
        self.seq_len = seq_len
        self.offset = offset  # a segmented run covers positions offset .. seq_len-1 only
        self.c0 = self.c1 = 0
        self.input_index: torch.Tensor | None = None  # each of this pass's rows' base input
        self.lengths: torch.Tensor | None = None  # each of this pass's rows' real length (ragged batches)
        self.cache: dict[Key, torch.Tensor] = {}  # copies of the cached activations (the run takes them each pass)
        # reset by start(): hook calls per module, activations of the grad sites, deferred (accelerator) finite checks
        self.counts: dict[Key, int] = {}
        self.acts: dict[Key, torch.Tensor] = {}
        self.finite: list[tuple[torch.Tensor, Op]] = []
        self.stash: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}  # transcoder latent changes, by reader

    def start(self, c0: int, c1: int, input_index: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """Begin the pass over plan rows ``c0 .. c1`` (base inputs ``input_index``, real ``lengths`` where the
        prompts differ in length), forgetting the last one."""
        self.c0, self.c1, self.input_index, self.lengths = c0, c1, input_index, lengths
        self.counts, self.acts, self.finite, self.stash = {}, {}, [], {}


def _pos_kind(site: Site) -> Any:
    p = site.positions
    if p is None:
        return None
    if isinstance(p, slice):
        return ("slice", p.start, p.stop, p.step)
    return ("n", len(p))


def _group_key(site: Site) -> tuple:
    """What rows must share to be one op: the site but its positions, and but its neurons (only their number)
    where it has no basis (each row then reads its own neurons), and but its SAE features (their number)."""
    key = site.key()
    if isinstance(site.neurons, tuple) and site.basis is None:
        return (*key[:2], ("neurons", len(site.neurons)), *key[3:])
    if site.features is not None:
        return (*key[:-1], ("features", len(site.features)))
    return key


def compile_ops(adapter: Adapter, batch: Batch, blocks: list[Block]) -> dict[Key, list[Op]]:
    """Group the plan's blocks ``({site: intervention}, r0, r1)`` into ops, by the module each one hooks.

    >>> compile_ops(adapter, batch, [({"layers.1": Zero()}, 0, 2)])     # rows 0 and 1 zero layers.1
    """
    groups: dict[tuple, Op] = {}
    resolved: dict[Site, Resolved] = {}
    for row, r0, r1 in blocks:
        seen: dict[tuple, int] = {}
        for raw_site, raw_iv in row.items():
            site, iv = as_site(raw_site), as_intervention(raw_iv)
            res = resolved.get(site)
            if res is None:
                res = resolved[site] = adapter.resolve(site)
                check_site(site, batch.seq_len, batch.pos_offset)
            k = (res.key, _group_key(site), _pos_kind(site), iv.key())
            slot = seen[k] = seen.get(k, -1) + 1
            op = groups.get((k, slot))
            if op is None:
                op = groups[(k, slot)] = Op(res, site, iv)
            op.add(r0, r1, site)
    by_key: dict[Key, list[Op]] = {}
    for op in groups.values():
        op.finalize()
        by_key.setdefault(op.res.key, []).append(op)
        if op.site.sae is not None and is_transcoder(op.site.sae):  # it writes into the module's output
            out = adapter.resolve(Site(op.site.module))
            w = Op(out, op.site, TranscoderWrite(op), op.rows, op.spans, op.pos, feat=op.feat)
            w.finalize()
            by_key.setdefault(out.key, []).append(w)
    return by_key


def apply_op(act: torch.Tensor, op: Op, chunk: Chunk) -> None:
    """Apply ``op`` to the rows of this chunk, writing into ``act`` (a fresh clone) in place."""
    assert op.rows_t is not None
    c0, offset = chunk.c0, chunk.offset
    # op.rows is sorted (compile_ops adds rows in plan order): bisect it, ~5 µs cheaper than torch.searchsorted
    lo, hi = bisect_left(op.rows, c0), bisect_left(op.rows, chunk.c1)
    if lo == hi:
        return
    rows = op.rows_t[lo:hi] - c0
    pos = op.pos_t[lo:hi] if op.pos_t is not None else None
    site, n_heads = op.site, op.res.n_heads
    if offset and act.ndim >= 3:  # segmented run: absolute positions -> positions of this segment
        T = cast(int, chunk.seq_len)  # a segmented run has token positions
        if pos is None and isinstance(site.positions, slice):
            pos = (torch.arange(T)[site.positions]).expand(hi - lo, -1)
        if pos is not None:
            pos = pos % T - offset
    raw_pos, lens, base_lens = pos, None, None
    if chunk.lengths is not None and act.ndim >= 3:
        base_lens = chunk.lengths[rows]
        if site.positions is not None:
            lens = base_lens
            pos = row_positions(site, pos, lens)
    writer = isinstance(op.intervention, TranscoderWrite)
    check_shape(act, site, n_heads, pos, writing=writer)
    neur = None
    if op.neur_t is not None:
        if op.neur_range[0] < 0 or op.neur_range[1] >= act.shape[-1]:
            raise SiteError(f"Site {site.name!r}: neurons {list(op.neur_range)} out of range (size {act.shape[-1]}: "
                            f"0 .. {act.shape[-1] - 1}).")
        neur = op.neur_t[lo:hi]
    dev = act.device
    rows_cpu = rows
    staged = op.staged.get(dev)
    if staged is not None:
        rows = staged[0][lo:hi] - c0
        if pos is not None and staged[1] is not None and not (offset and act.ndim >= 3) and lens is None:
            pos = staged[1][lo:hi]
        if staged[3] is not None:
            neur = staged[3][lo:hi]
    rows, pos = rows.to(dev), None if pos is None else pos.to(dev)
    levels = _levels(act, rows, pos, site, n_heads, neur)  # read once: the write below scatters through it
    if writer:
        return _write_transcoded(levels, rows, op, chunk, act.dtype)
    feats = None  # each row's own SAE features, where the op's rows differ in them
    if op.feat_t is not None:
        feats = staged[4][lo:hi] if staged is not None and staged[4] is not None else op.feat_t[lo:hi].to(dev)
    x = _value(levels.selected, site, feats)
    src = None
    if op.source is not None:
        full = op.source.tensors[op.res.key]
        if offset and full.ndim >= 3 and full.shape[1] == chunk.seq_len:
            full = full[:, offset:]
        ragged = base_lens is not None or op.source.lengths is not None
        if full.shape[1:] != act.shape[1:] and not (ragged and full.ndim >= 3 and full.shape[2:] == act.shape[2:]):
            raise InterventionError(f"Shape mismatch at {site.name!r}: the source activation is "
                                    f"{tuple(full.shape[1:])} per row, the run's is {tuple(act.shape[1:])} per row "
                                    f"(different prompt lengths?). Patch between inputs of the same shape.")
        full = full.to(dev)
        if full.is_inference() and torch.is_grad_enabled():
            full = full.clone()
        if op.intervention.source_mode == "all" and site.sae is not None:  # the mean of the source's latents
            source_mean(full[..., :1], op, pos, lens if lens is not None else base_lens)  # (its checks)
            mean = fit_width(latent_mean(full.to(act.dtype), op), act.shape[1])
            src = pick_features(_levels(mean, torch.zeros_like(rows), pos, site, n_heads).selected, site.features,
                                feats).to(x.dtype)
        elif op.intervention.source_mode == "all":
            mean = fit_width(source_mean(full, op, pos, lens if lens is not None else base_lens), act.shape[1])
            src = select(mean.to(act.dtype), torch.zeros_like(rows), pos, site, n_heads)
        else:
            assert op.src_rows is not None
            src_pos = pos
            if full.ndim >= 3 and (base_lens is not None or op.source.lengths is not None):
                src_pos = source_positions(op, op.src_rows[lo:hi], raw_pos, pos, base_lens, int(act.shape[1]),
                                           int(full.shape[1]))
                src_pos = None if src_pos is None else src_pos.to(dev)
                if src_pos is None:  # every position, between prompts of equal real lengths
                    full = fit_width(full, act.shape[1])
            src_rows = staged[2] if staged is not None and staged[2] is not None else op.src_rows
            src = _value(_levels(full.to(act.dtype), src_rows[lo:hi].to(dev), src_pos, site, n_heads,
                                 neur).selected, site, feats)
    assert chunk.input_index is not None
    ctx = ApplyContext(chunk.input_index[rows_cpu], site.name)
    new = op.intervention(x, src, ctx)
    if not isinstance(new, torch.Tensor) or new.shape != x.shape:
        raise InterventionError(f"{type(op.intervention).__name__} at {site.name!r} returned shape "
                                f"{tuple(getattr(new, 'shape', ()))}; expected {tuple(x.shape)}.")
    if dev.type == "cpu":
        # a finite sum means every element is finite (NaN / inf propagate); only a non-finite sum (which may be
        # an overflow of finite values) needs the elementwise check, ~40x slower on CPU
        if not bool(torch.isfinite(new.sum())) and not bool(torch.isfinite(new).all()):
            raise _not_finite(op)
    else:  # reading a flag here would stall the accelerator mid-pass: check once after the forward
        chunk.finite.append((torch.isfinite(new).all(), op))
    if site.sae is not None:  # x + (f' - f) @ W_dec: the SAE's reconstruction error stays (f' == f adds an exact 0)
        if is_transcoder(site.sae):  # written into the module's output, by the op that follows it there
            chunk.stash[id(op)] = (new - x, feats)
            return
        new = levels.selected + decoded_change(site.sae, new - x, site.features, feats, act.dtype)
    _write_levels(levels, rows, site, new)


def _write_transcoded(levels: _Levels, rows: torch.Tensor, op: Op, chunk: Chunk, dtype: torch.dtype) -> None:
    """A transcoder site's write: add ``(f' - f) @ W_dec[features]`` (the change its reader op kept) to the
    module's output."""
    got = chunk.stash.pop(id(cast(TranscoderWrite, op.intervention).reader), None)
    if got is None:
        raise SiteError(f"Site {op.site.name!r}: the transcoder's input at {op.site.module!r} was not read before its "
                        f"output in this pass; a transcoder site needs a module that takes its input and returns its "
                        f"output in one call.")
    delta, feats = got
    site = op.site
    _write_levels(levels, rows, site, levels.selected + decoded_change(site.sae, delta, site.features, feats, dtype))


def _not_finite(op: Any) -> InterventionError:
    return InterventionError(f"{type(op.intervention).__name__} at {op.site.name!r} produced NaN or inf values.")


def check_finite(checks: list[tuple[torch.Tensor, Any]]) -> None:
    """Raise for the first deferred (accelerator) intervention whose values were not all finite; empties ``checks``.

    >>> check_finite(chunk.finite)   # after the forward pass
    """
    if not checks:
        return
    pending = list(checks)
    checks.clear()
    if not bool(torch.stack([ok for ok, _ in pending]).all()):
        raise _not_finite(next(op for ok, op in pending if not bool(ok)))


def check_output_finite(ops: Mapping[Key, list[Op]], c0: int, values: torch.Tensor, what: str) -> None:
    """Raise when a pass with interventions returns NaN / inf in its ``what`` (output or metric), naming the
    interventions of the first such row (``c0``: the chunk's first plan row).

    >>> check_output_finite(plan.ops, 0, logits, "output")   # after the forward pass
    """
    if not values.is_floating_point() or bool(torch.isfinite(values.sum())):
        return  # NaN / inf propagate into the sum; a non-finite sum of finite values is checked elementwise
    ok = torch.isfinite(values.reshape(values.shape[0], -1)).all(1) if values.ndim else torch.isfinite(values)
    if bool(ok.all()):
        return
    row = c0 + int((~ok).nonzero()[0, 0])
    here = [op for lst in ops.values() for op in lst if _has_row(op, row)]
    named = ", ".join(f"{type(op.intervention).__name__} at {op.site.name!r}" for op in here)
    cause = (f"after {named}: the values written there were finite, so the overflow happened downstream of the "
             f"site (e.g. a large Scale or Add); use a smaller edit or a higher-precision dtype") if here else \
        "in a row without interventions: its inputs (or the model itself) carry NaN / inf"
    raise InterventionError(f"The {what} of plan row {row} is NaN or inf {cause}.")


def _has_row(op: Op, row: int) -> bool:
    i = bisect_left(op.rows, row)
    return i < len(op.rows) and op.rows[i] == row


def _index(sel: tuple[int, ...] | slice, size: int, device: torch.device) -> torch.Tensor:
    if isinstance(sel, slice):
        return torch.arange(size, device=device)[sel]
    return _index_tensor(sel, device)


@functools.lru_cache(maxsize=4096)
def _index_tensor(sel: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A site's heads / neurons as an index tensor, made once per device (never written to)."""
    return torch.tensor(sel, dtype=torch.long, device=device)


class _Levels(NamedTuple):
    """A site's selection of an activation, step by step (what :func:`write` needs to scatter a new value back)."""

    view: torch.Tensor  # the activation, its last dim split into heads when the site picks heads
    at_rows: torch.Tensor  # view[rows]
    pos_rows: torch.Tensor | None  # (rows, 1) arange pairing each row with its positions; None without positions
    pos: torch.Tensor | None  # (rows, positions), non-negative
    at_pos: torch.Tensor  # at_rows at the positions
    heads: torch.Tensor | None
    at_heads: torch.Tensor  # at_pos at the heads
    neurons: torch.Tensor | None  # shared: 1-D; one set per row: shaped like ``selected`` (for gather / scatter)
    selected: torch.Tensor  # at_heads at the neurons (before any basis)


def _levels(t: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor | None, site: Site,
            n_heads: int | None, row_neurons: torch.Tensor | None = None) -> _Levels:
    v = t.unflatten(-1, (n_heads, -1)) if site.heads is not None and n_heads is not None and t.ndim in (2, 3) else t
    x = v[rows]
    ar = None
    if site.positions is not None:
        if pos is None:  # a slice
            pos = _index(site.positions, v.shape[1], v.device).expand(len(rows), -1)
        pos = torch.where(pos < 0, pos + v.shape[1], pos)
        ar = torch.arange(len(rows), device=v.device)[:, None]
        x1 = x[ar, pos]
    else:
        x1 = x
    h = _index(site.heads, v.shape[-2], v.device) if site.heads is not None else None
    x2 = x1.index_select(-2, h) if h is not None else x1
    nr: torch.Tensor | None
    if row_neurons is not None:  # each row its own neurons: an index shaped like the selection, for gather
        k = row_neurons.shape[-1]
        nr = row_neurons.to(v.device).view(len(rows), *([1] * (x2.ndim - 2)), k).expand(*x2.shape[:-1], k)
        x3 = x2.gather(-1, nr)
    else:
        nr = _index(site.neurons, v.shape[-1], v.device) if site.neurons is not None else None
        x3 = x2.index_select(-1, nr) if nr is not None else x2
    return _Levels(v, x, ar, pos, x1, h, x2, nr, x3)


def select(t: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor | None, site: Site,
           n_heads: int | None) -> torch.Tensor:
    """The site's part of ``t`` at ``rows`` (and per-row positions ``pos``), in the site's basis if it has one,
    its SAE's latents if it has one.

    >>> select(act, torch.tensor([0, 1]), None, Site("layers.0", neurons=[3]), None).shape   # (2, T, 1)
    """
    return _value(_levels(t, rows, pos, site, n_heads).selected, site)


def _value(x3: torch.Tensor, site: Site, row_features: torch.Tensor | None = None) -> torch.Tensor:
    """What an intervention sees of a selection: its coordinates in the site's basis, its SAE's latents (the site's
    features, or each row's ``row_features``), or the selection itself."""
    if site.sae is not None:
        return site_latents(site, x3, row_features)
    return _in_basis(x3, site)


def _in_basis(x3: torch.Tensor, site: Site) -> torch.Tensor:
    if site.basis is not None:
        return x3 @ site.basis.to(device=x3.device, dtype=x3.dtype)
    return x3


def write(t: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor | None, site: Site, n_heads: int | None,
          new: torch.Tensor) -> None:
    """Write ``new`` (shaped like :func:`select`'s answer) into the site's part of ``t`` in place (an SAE site's
    new latents as ``x + (new - f) @ W_dec[features]``).

    >>> write(act, rows, None, site, None, torch.zeros_like(select(act, rows, None, site, None)))
    """
    lv = _levels(t, rows, pos, site, n_heads)
    if site.sae is not None:
        if is_transcoder(site.sae):
            raise SiteError(f"Site {site.name!r}: a transcoder site reads a module's input and writes its output; "
                            f"only Model.run applies its edits (it hooks both).")
        new = lv.selected + decoded_change(site.sae, new - _value(lv.selected, site), site.features, None, t.dtype)
    _write_levels(lv, rows, site, new)


def _write_levels(lv: _Levels, rows: torch.Tensor, site: Site, new: torch.Tensor) -> None:
    if site.basis is not None:
        b = site.basis.to(device=lv.selected.device, dtype=lv.selected.dtype)
        new = lv.selected + (new - lv.selected @ b) @ b.T
    if lv.neurons is not None:
        new = lv.at_heads.index_copy(-1, lv.neurons, new) if lv.neurons.ndim == 1 else \
            lv.at_heads.scatter(-1, lv.neurons, new)
    if lv.heads is not None:
        new = lv.at_pos.index_copy(-2, lv.heads, new)
    if lv.pos_rows is not None:
        new = lv.at_rows.index_put((lv.pos_rows, lv.pos), new)
    lv.view.index_put_((rows,), new)


#: ``view``'s ``seq_len`` when the caller gives none: it views a tensor that need not be a run's activation
_UNSET: Any = object()


def view(full: torch.Tensor, site: Site, res: Resolved, seq_len: int | None = _UNSET, offset: int = 0,
         lengths: torch.Tensor | None = None, grad: bool = False) -> torch.Tensor:
    """The site's selection of a cached activation. In a segmented run (``offset`` > 0) the cache
    covers positions offset .. seq_len-1, and the site's absolute positions are mapped onto it; in a ragged
    batch (``lengths``) positions are each row's own. An SAE site's selection is its latents; with ``grad=True``
    ``full`` is the gradient with respect to the activation and the answer that with respect to the latents
    (``g @ W_dec[features].T``). A caller that gives no ``seq_len`` views some other tensor shaped like the
    activation (a gradient x difference product): an SAE site raises there, since the latents of such a tensor
    mean nothing (attribution patching scores an SAE site's latents itself, from their cached values and
    gradients)."""
    if seq_len is _UNSET:
        if site.sae is not None and not grad:
            raise SiteError(f"Site {site.name!r}: this sums a site's share of an activation-space tensor that is not "
                            f"an activation (e.g. a gradient x difference product); the SAE's latents of such a "
                            f"tensor mean nothing. Score latents with cs.attribution_patching(model, clean, "
                            f"corrupted, [site], metric) or causalscope.sae.feature_attribution, which multiply "
                            f"the latents' own gradient by their difference.")
        seq_len = None
    if full.numel() == 0 or (site.positions is None and site.heads is None and site.neurons is None
                             and site.basis is None and site.sae is None):
        return full
    rows = torch.arange(full.shape[0])
    pos = None
    if isinstance(site.positions, tuple):
        pos = torch.tensor(site.positions).expand(full.shape[0], -1)
    if lengths is not None and site.positions is not None and full.ndim >= 3:
        pos = row_positions(site, pos, lengths)
    if offset and seq_len and full.ndim >= 3 and site.positions is not None:
        absolute = pos if pos is not None else torch.arange(seq_len)[site.positions].expand(full.shape[0], -1)
        pos = absolute % seq_len - offset
        site = dataclasses.replace(site, positions=tuple(int(p) for p in pos[0]))
    check_shape(full, site, res.n_heads, pos)
    if site.sae is not None:
        with torch.no_grad():  # (the SAE's weights may require grad: the cache holds values)
            if grad:
                return latent_grads(_levels(full, rows, pos, site, res.n_heads).selected, site)
            return select(full, rows, pos, site, n_heads=res.n_heads)
    return select(full, rows, pos, site, n_heads=res.n_heads)
