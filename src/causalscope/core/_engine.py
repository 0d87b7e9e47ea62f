"""The engine: one batched pass (per chunk) for a plan of per-row interventions; hooks live only here."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InterventionError, PlanError, SiteError
from ._guard import preserved
from ._interventions import ApplyContext, Intervention, Resample, as_intervention
from ._sites import Site, as_site
from .adapters import Adapter, Batch, Resolved, primary

Edits = Mapping["Site | str", Intervention]
Key = tuple[str, str]
#: most rows per pass on CPU when the caller gives no chunk_size (see Engine._chunk_size)
CPU_MAX_ROWS = 2048


class ActivationCache(dict):
    """Activations by site name (``run.cache["layers.3"]``), rows on dim 0."""

    def __init__(self) -> None:
        super().__init__()
        self.by_key: dict[Key, torch.Tensor] = {}

    def __getitem__(self, name: str | Site) -> torch.Tensor:
        return super().__getitem__(name.name if isinstance(name, Site) else name)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name.name if isinstance(name, Site) else name)

    def __missing__(self, name: str) -> torch.Tensor:
        raise KeyError(f"{name!r} was not cached in this run; cached: {sorted(self)}. "
                       f"Pass cache=[{name!r}, ...] to run().")


@dataclass
class Run:
    """What :meth:`Model.run` returns.

    ``output``: the model's output tensor per row (logits for LMs), unless ``keep_output=False``;
    ``metric``: ``metric(output)`` per row if a metric was given (on the model's device, like ``output``:
    callers that build results move it to the CPU once); ``meta["token_layers"]``: transformer
    blocks x positions x rows executed (the unit of the compute floor); ``cache`` / ``grads``: activations and
    gradients of ``metric`` with respect to them, by site name; ``input_index``: each row's base input.
    """

    output: torch.Tensor | None
    metric: torch.Tensor | None
    cache: ActivationCache
    grads: ActivationCache
    input_index: torch.Tensor
    kv: list | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.input_index.numel())


@dataclass
class _Op:
    """Rows that apply one intervention at one site template (positions may differ per row)."""

    res: Resolved
    site: Site
    intervention: Intervention
    rows: list[int] = field(default_factory=list)
    pos: list[tuple[int, ...]] = field(default_factory=list)
    src_rows: torch.Tensor | None = None
    rows_t: torch.Tensor | None = None
    pos_t: torch.Tensor | None = None
    source: _Source | None = None

    staged: dict = field(default_factory=dict)

    def finalize(self) -> None:
        self.rows_t = torch.tensor(self.rows, dtype=torch.long)
        if isinstance(self.site.positions, tuple):
            self.pos_t = torch.tensor(self.pos, dtype=torch.long)

    def stage(self, dev: torch.device) -> None:
        """Copy the row / position / source-row indices to ``dev`` before a pass: a host-to-device copy
        inside a hook would make the host wait for the accelerator mid-pass."""
        if dev.type != "cpu" and dev not in self.staged:
            self.staged[dev] = tuple(None if t is None else t.to(dev) for t in (self.rows_t, self.pos_t, self.src_rows))


@dataclass
class _Source:
    tensors: dict[Key, torch.Tensor]
    size: int


def _pos_kind(site: Site) -> Any:
    p = site.positions
    if p is None:
        return None
    if isinstance(p, slice):
        return ("slice", p.start, p.stop, p.step)
    return ("n", len(p))


class Engine:
    """Executes plans on one adapter. Made by :class:`Model`; use ``Model.run``."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    # -- planning ----------------------------------------------------------------------------------
    def _rows(self, batch: Batch, edits: Any, input_index: Sequence[int] | None) -> list[tuple[int, dict]]:
        if edits is None:
            if input_index is None:
                input_index = range(batch.size)
            edits_list: list[Mapping] = [{}] * len(input_index)
        elif isinstance(edits, Mapping):
            edits_list = [edits] * (batch.size if input_index is None else len(input_index))
            if input_index is None:
                input_index = range(batch.size)
        elif isinstance(edits, Sequence) and not isinstance(edits, (str, bytes)):
            edits_list = list(edits)
            if not edits_list:
                raise PlanError("The plan is empty: edits=[] has no rows. Pass edits=None for a plain run, "
                                "or at least one dict of {site: intervention}.")
            plain_dicts = set(map(type, edits_list)) == {dict}  # C-speed check for long plans
            bad = [] if plain_dicts else [i for i, e in enumerate(edits_list) if not isinstance(e, Mapping)]
            if bad:
                raise PlanError(f"Each row of edits must be a dict {{site: intervention}}; row {bad[0]} is "
                                f"{type(edits_list[bad[0]]).__name__}.")
            if input_index is None:
                if batch.size == 1:
                    input_index = [0] * len(edits_list)
                elif batch.size == len(edits_list):
                    input_index = range(batch.size)
                else:
                    raise PlanError(f"Mismatched batch: {len(edits_list)} rows of edits for {batch.size} inputs. "
                                    f"Give one input (shared by every row), one row per input, or "
                                    f"input_index=[...] naming each row's input.")
        else:
            raise PlanError(f"edits must be None, a dict {{site: intervention}} or a list of such dicts; "
                            f"got {type(edits).__name__}.")
        input_index = list(input_index)
        if len(input_index) != len(edits_list):
            raise PlanError(f"input_index has {len(input_index)} entries for {len(edits_list)} rows of edits.")
        plain = set(map(type, input_index)) <= {int}  # fast path for long plans: no per-entry check below
        if not (plain and (not input_index or (min(input_index) >= 0 and max(input_index) < batch.size))):
            for i in input_index:
                if not isinstance(i, int) or not 0 <= i < batch.size:
                    raise PlanError(f"input_index entry {i!r} is not an input row (the inputs have {batch.size} "
                                    f"rows).")
        return list(zip(input_index, edits_list))

    def _check_site(self, site: Site, res: Resolved, seq_len: int | None, offset: int = 0) -> None:
        if seq_len is not None and isinstance(site.positions, tuple):
            bad = [p for p in site.positions if not -seq_len <= p < seq_len]
            if bad:
                raise SiteError(f"Site {site.name!r}: positions {bad} are out of range for {seq_len} tokens "
                                f"(valid: {-seq_len} .. {seq_len - 1}).")
            early = [p for p in site.positions if p % seq_len < offset]
            if early:
                raise SiteError(f"Site {site.name!r}: positions {early} lie before the segment, which starts at "
                                f"position {offset}; a segmented run recomputes positions {offset} .. {seq_len - 1}.")

    def _compile(self, batch: Batch, rows: list[tuple[int, dict]]) -> dict[Key, list[_Op]]:
        groups: dict[tuple, _Op] = {}
        resolved: dict[Site, Resolved] = {}
        r, n = 0, len(rows)
        while r < n:
            row = rows[r][1]
            end = r + 1
            while end < n and rows[end][1] is row:  # consecutive rows sharing one dict: compiled once
                end += 1
            span = range(r, end)
            r = end
            seen: dict[tuple, int] = {}
            for raw_site, raw_iv in row.items():
                site, iv = as_site(raw_site), as_intervention(raw_iv)
                res = resolved.get(site)
                if res is None:
                    res = resolved[site] = self.adapter.resolve(site)
                    self._check_site(site, res, batch.seq_len, batch.pos_offset)
                k = (res.key, site.key(), _pos_kind(site), iv.key())
                slot = seen[k] = seen.get(k, -1) + 1
                op = groups.get((k, slot))
                if op is None:
                    op = groups[(k, slot)] = _Op(res, site, iv)
                op.rows.extend(span)
                if isinstance(site.positions, tuple):
                    op.pos.extend([site.positions] * len(span))
        by_key: dict[Key, list[_Op]] = {}
        for op in groups.values():
            op.finalize()
            by_key.setdefault(op.res.key, []).append(op)
        return by_key

    def _sources(self, ops: dict[Key, list[_Op]], rows: list[tuple[int, dict]], batch: Batch) -> None:
        needs: dict[int, tuple[Any, set[Key]]] = {}
        for key, lst in ops.items():
            for op in lst:
                if op.intervention.source_mode is not None:
                    src = op.intervention.source
                    needs.setdefault(id(src), (src, set()))[1].add(key)
        if not needs:  # no intervention reads another run: nothing below applies
            return
        resolved: dict[int, _Source] = {}
        for sid, (src, keys) in needs.items():
            if isinstance(src, Run):
                missing = [k for k in keys if k not in src.cache.by_key]
                if missing:
                    raise InterventionError(
                        f"The source run did not cache {', '.join(f'{p!r} ({io})' for p, io in missing)}; "
                        f"it cached {sorted(src.cache)}. Run the source with cache=[...] covering the patched sites.")
                resolved[sid] = _Source({k: src.cache.by_key[k] for k in keys}, src.n_rows)
            else:
                sites = [Site(p, io) for p, io in keys]
                run = self.run(src, cache=sites)
                resolved[sid] = _Source(dict(run.cache.by_key), run.n_rows)
        input_index = torch.tensor([i for i, _ in rows], dtype=torch.long)
        for lst in ops.values():
            for op in lst:
                iv = op.intervention
                if iv.source_mode is None:
                    continue
                op.source = s = resolved[id(iv.source)]
                if iv.source_mode == "all":
                    continue
                if isinstance(iv, Resample):
                    g = torch.Generator().manual_seed(int(iv.seed))
                    draws = torch.randint(s.size, (len(rows),), generator=g)
                    op.src_rows = draws[op.rows_t]
                elif getattr(iv, "row", None) is not None:
                    if not 0 <= iv.row < s.size:
                        raise InterventionError(f"Patch row {iv.row} is out of range: the source has {s.size} rows.")
                    op.src_rows = torch.full((len(op.rows),), iv.row, dtype=torch.long)
                elif s.size == 1:
                    op.src_rows = torch.zeros(len(op.rows), dtype=torch.long)
                elif s.size == batch.size:
                    op.src_rows = input_index[op.rows_t]
                else:
                    raise InterventionError(f"The patch source has {s.size} rows and the base inputs {batch.size}; "
                                            f"row i of the base reads row i of the source only when they match. "
                                            f"Pass Patch(source, row=k).")

    # -- execution ---------------------------------------------------------------------------------
    def run(self, inputs: Any, edits: Any = None, *, cache: Sequence[Site | str] = (), grads: Sequence[Site | str] = (),
            metric: Callable[[torch.Tensor], torch.Tensor] | None = None, input_index: Sequence[int] | None = None,
            chunk_size: int | None = None, keep_output: bool | None = None, keep_kv: bool = False,
            progress: bool | None = None) -> Run:
        batch = self.adapter.prepare(inputs)
        rows = self._rows(batch, edits, input_index)
        ops = self._compile(batch, rows)
        self._sources(ops, rows, batch)
        cache_sites = [as_site(s) for s in cache]
        grad_sites = [as_site(s) for s in grads]
        if grad_sites and metric is None:
            raise PlanError("grads=[...] needs a metric: the gradients are of metric(output) (one scalar per row).")
        if keep_kv and not hasattr(self.adapter, "kv_cache"):
            raise PlanError(f"keep_kv=True needs a Hugging Face causal LM (it keeps its key/value cache); "
                            f"{self.adapter.kind} models have none.")
        cache_res = [(s, self.adapter.resolve(s)) for s in cache_sites]
        grad_res = [(s, self.adapter.resolve(s)) for s in grad_sites]
        for s, r in cache_res + grad_res:
            self._check_site(s, r, batch.seq_len, batch.pos_offset)
        n = len(rows)
        chunk = self._chunk_size(chunk_size, n, batch, len(cache_res))
        keep_output = metric is None if keep_output is None else keep_output
        in_order = [i for i, _ in rows]
        identity = in_order == list(range(batch.size))
        input_index_t = torch.arange(n) if identity else torch.tensor(in_order, dtype=torch.long)

        keys = set(ops) | {r.key for _, r in cache_res} | {r.key for _, r in grad_res}
        state: dict[str, Any] = {}
        token_layers: int | None = None
        outs: list[torch.Tensor] = []
        mets: list[torch.Tensor] = []
        kvs: list[list] = []
        cached: dict[Key, list[torch.Tensor]] = {r.key: [] for _, r in cache_res}
        graded: dict[Key, list[torch.Tensor]] = {r.key: [] for _, r in grad_res}
        model = self.adapter.module
        want_grad = bool(grad_res)
        with preserved(model) as handles:
            for key in keys:
                res = next(o.res for o in ops.get(key, [])) if key in ops else \
                    next(r for _, r in cache_res + grad_res if r.key == key)
                hook = self._make_hook(key, ops.get(key, []), key in cached, key in graded, state)
                if res.io == "output":
                    handles.append(res.module.register_forward_hook(hook))
                else:
                    handles.append(res.module.register_forward_pre_hook(hook, with_kwargs=True))
            for path, scope in self.adapter.last_position_cuts(batch):
                if not any(k[0] == scope or k[0].startswith(scope + ".") for k in keys):
                    handles.append(self.adapter.module.get_submodule(path).register_forward_pre_hook(_last_position))
            starts = range(0, n, chunk)
            show = progress if progress is not None else len(starts) > 3
            # (a disabled tqdm still costs ~30 µs to build; iterate the range directly when it is off)
            bar = tqdm(starts, desc="causalscope run", unit="chunk") if show else starts
            for c0 in bar:
                c1 = min(n, c0 + chunk)
                idx = input_index_t[c0:c1]
                state.update(c0=c0, c1=c1, input_index=idx, counts={}, acts={}, seq_len=batch.seq_len,
                             offset=batch.pos_offset, finite=[])
                sub = batch if identity and c1 - c0 == n else batch.take(idx)
                dev = _device_of(sub)
                for key_ops in ops.values():
                    for op in key_ops:
                        op.stage(dev)
                tl = self.adapter.token_layers(sub)
                token_layers = None if tl is None else (token_layers or 0) + tl
                if keep_kv:
                    sub = dataclasses.replace(sub, kwargs={**sub.kwargs, "use_cache": True})
                ctx = torch.no_grad() if want_grad else torch.inference_mode()
                with ctx:
                    out = self.adapter.call(sub)
                    _check_finite(state)
                    missed = [k for k in keys if k not in state["counts"]]
                    if missed:
                        raise SiteError(
                            f"Site module(s) {', '.join(f'{p!r} ({io})' for p, io in missed)} did not run in this "
                            f"forward pass, so their interventions / cache / grads would silently do nothing. "
                            f"(A segmented run only executes the blocks from its start layer on.)")
                    y = self.adapter.output(out)
                    if metric is None:
                        m = None
                    elif getattr(metric, "takes_input_index", False):  # e.g. a per-input target
                        m = metric(y, idx)
                    else:
                        m = metric(y)
                    if m is not None:
                        m = self._check_metric(m, c1 - c0)
                    if want_grad:
                        acts = [state["acts"][r.key] for _, r in grad_res]
                        if not torch.is_grad_enabled() or not m.requires_grad:
                            raise PlanError("The metric does not depend on the grad sites (no gradient path); "
                                            "check that the sites lie before the output.")
                        gs = torch.autograd.grad(m.sum(), acts, allow_unused=True)
                        for (s, r), a, gr in zip(grad_res, acts, gs):
                            gr = torch.zeros_like(a) if gr is None else gr
                            graded[r.key].append(gr.detach())
                        torch.set_grad_enabled(False)
                if keep_output:
                    outs.append(y.detach())
                if m is not None:
                    mets.append(m.detach())
                if keep_kv:
                    kvs.append(self.adapter.kv_cache(out))  # type: ignore[attr-defined]
                for k in cached:
                    cached[k].append(state["cache"].pop(k))
        run_cache, run_grads = ActivationCache(), ActivationCache()
        for sites_res, store, dst in ((cache_res, cached, run_cache), (grad_res, graded, run_grads)):
            for s, r in sites_res:
                full = torch.cat(store[r.key]) if store[r.key] else torch.empty(0)
                dst.by_key[r.key] = full
                dst[s.name if isinstance(s, Site) else s] = self._view(full, s, r, batch.seq_len, batch.pos_offset)
        kv = None
        if keep_kv and kvs:
            kv = [(torch.cat([c[i][0] for c in kvs]), torch.cat([c[i][1] for c in kvs])) for i in range(len(kvs[0]))]
        return Run(torch.cat(outs) if keep_output and outs else None, torch.cat(mets) if mets else None,
                   run_cache, run_grads, input_index_t, kv,
                   {"n_rows": n, "chunk_size": chunk, "token_layers": token_layers, **self.adapter.describe()})

    @staticmethod
    def _check_metric(m: Any, n: int) -> torch.Tensor:
        if not isinstance(m, torch.Tensor):
            raise PlanError(f"The metric must return a tensor with one value (or row of values) per row; "
                            f"got {type(m).__name__}.")
        if m.ndim == 0 or m.shape[0] != n:
            raise PlanError(f"The metric returned shape {tuple(m.shape)}; it must keep the batch dimension "
                            f"({n} rows in this chunk), e.g. logits[:, -1, answer] rather than a mean over rows.")
        return m

    def _chunk_size(self, chunk_size: int | None, n: int, batch: Batch, n_cached: int) -> int:
        if chunk_size is not None:
            if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
                raise PlanError(f"chunk_size must be a positive int, got {chunk_size!r}.")
            return chunk_size
        if n <= 1:  # the answer below is max(1, min(n, ...)) = 1: skip the parameter walk
            return 1
        model = self.adapter.module
        width = getattr(self.adapter, "d_model", None) or \
            max(1, int(math.sqrt(max(sum(p.numel() for p in model.parameters()), 1))))
        layers = getattr(self.adapter, "n_layers", 4)
        seq = batch.seq_len or 1
        vocab = getattr(getattr(self.adapter, "config", None), "vocab_size", width)
        per_row = 4 * seq * (width * (16 + layers * (1 + n_cached)) + vocab)
        device = next(model.parameters(), torch.empty(0)).device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return max(1, min(n, int((free // 3) // max(per_row, 1))))
        # CPU: a 2 GiB budget, and at most CPU_MAX_ROWS rows: bigger passes of small models fall out of cache
        # (18,000 rows of an MLP in one pass ran 2.5x slower per row than 2,048-row passes)
        return max(1, min(n, int((2 << 30) // max(per_row, 1)), CPU_MAX_ROWS))

    @staticmethod
    def _view(full: torch.Tensor, site: Site, res: Resolved, seq_len: int | None = None,
              offset: int = 0) -> torch.Tensor:
        """The site's selection of a cached activation. In a segmented run (``offset`` > 0) the cache
        covers positions offset .. seq_len-1, and the site's absolute positions are mapped onto it."""
        if full.numel() == 0 or (site.positions is None and site.heads is None and site.neurons is None
                                 and site.basis is None):
            return full
        rows = torch.arange(full.shape[0])
        pos = None
        if isinstance(site.positions, tuple):
            pos = torch.tensor(site.positions).expand(full.shape[0], -1)
        if offset and seq_len and full.ndim >= 3 and site.positions is not None:
            absolute = pos if pos is not None else torch.arange(seq_len)[site.positions].expand(full.shape[0], -1)
            pos = absolute % seq_len - offset
            site = dataclasses.replace(site, positions=tuple(int(p) for p in pos[0]))
        _check_shape(full, site, res.n_heads, pos)
        return _select(full, rows, pos, site, res.n_heads)

    def _make_hook(self, key: Key, ops: list[_Op], do_cache: bool, do_grad: bool, state: dict) -> Callable:
        path, io = key

        def apply(act: torch.Tensor) -> torch.Tensor:
            counts = state["counts"]
            counts[key] = counts.get(key, 0) + 1
            if counts[key] > 1:
                raise SiteError(f"Module {path!r} ran more than once in one forward pass (a shared module); a site "
                                f"there is ambiguous. Choose a module that runs once per pass.")
            if not isinstance(act, torch.Tensor):
                raise SiteError(f"Site {path!r} ({io}) carries {type(act).__name__}, not a tensor.")
            c0, c1 = state["c0"], state["c1"]
            if act.ndim == 0 or act.shape[0] != c1 - c0:
                raise SiteError(f"The activation at {path!r} ({io}) is {tuple(act.shape)}, whose dim 0 is not the "
                                f"batch of {c1 - c0} rows (the module flattens or transposes the batch). Choose a "
                                f"site whose activation is (batch, ...).")
            if ops:
                act = act.clone()
                for op in ops:
                    _apply_op(act, op, state)
            if do_grad:
                if not torch.is_grad_enabled():
                    torch.set_grad_enabled(True)
                if not act.requires_grad:
                    act = act.detach().requires_grad_(True)
                state["acts"][key] = act
            if do_cache:
                # a copy: the model may later change this tensor in place (e.g. ReLU(inplace=True))
                state.setdefault("cache", {})[key] = act.detach().clone()
            return act

        if io == "output":
            def hook(module, args, output):  # noqa: ANN001
                if isinstance(output, torch.Tensor):
                    return apply(output)
                if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                    return (apply(output[0]), *output[1:])
                new = apply(primary(output))
                if hasattr(output, "logits"):
                    output.logits = new
                    return output
                raise SiteError(f"Cannot write the output of {path!r} ({type(output).__name__}).")
            return hook

        def pre_hook(module, args, kwargs):  # noqa: ANN001
            if args and isinstance(args[0], torch.Tensor):
                return (apply(args[0]), *args[1:]), kwargs
            for k, v in kwargs.items():
                if isinstance(v, torch.Tensor):
                    return args, {**kwargs, k: apply(v)}
            raise SiteError(f"The input of {path!r} holds no tensor to read.")
        return pre_hook


def _last_position(module: nn.Module, args: tuple) -> tuple:
    """Pre-hook: feed ``module`` only the last position (the caller reads nothing else downstream)."""
    return (args[0][:, -1:], *args[1:])


def _apply_op(act: torch.Tensor, op: _Op, state: dict) -> None:
    """Apply ``op`` to the rows of this chunk, writing into ``act`` (a fresh clone) in place."""
    assert op.rows_t is not None
    c0, c1, input_index, offset = state["c0"], state["c1"], state["input_index"], state["offset"]
    lo, hi = (int(v) for v in torch.searchsorted(op.rows_t, torch.tensor([c0, c1])))
    if lo == hi:
        return
    rows = op.rows_t[lo:hi] - c0
    pos = op.pos_t[lo:hi] if op.pos_t is not None else None
    site, n_heads = op.site, op.res.n_heads
    if offset and act.ndim >= 3:  # segmented run: absolute positions -> positions of this segment
        T = state["seq_len"]
        if pos is None and isinstance(site.positions, slice):
            pos = (torch.arange(T)[site.positions]).expand(hi - lo, -1)
        if pos is not None:
            pos = pos % T - offset
    _check_shape(act, site, n_heads, pos)
    dev = act.device
    rows_cpu = rows
    staged = op.staged.get(dev)
    if staged is not None:
        rows = staged[0][lo:hi] - c0
        if pos is not None and staged[1] is not None and not (offset and act.ndim >= 3):
            pos = staged[1][lo:hi]
    rows, pos = rows.to(dev), None if pos is None else pos.to(dev)
    x = _select(act, rows, pos, site, n_heads)
    src = None
    if op.source is not None:
        full = op.source.tensors[op.res.key]
        if offset and full.ndim >= 3 and full.shape[1] == state["seq_len"]:
            full = full[:, offset:]
        if full.shape[1:] != act.shape[1:]:
            raise InterventionError(f"Shape mismatch at {site.name!r}: the source activation is "
                                    f"{tuple(full.shape[1:])} per row, the run's is {tuple(act.shape[1:])} per row "
                                    f"(different prompt lengths?). Patch between inputs of the same shape.")
        full = full.to(dev)
        if full.is_inference() and torch.is_grad_enabled():
            full = full.clone()
        if op.intervention.source_mode == "all":
            src = _select(full.mean(0, keepdim=True).to(act.dtype), torch.zeros_like(rows), pos, site, n_heads)
        else:
            assert op.src_rows is not None
            src_rows = staged[2] if staged is not None and staged[2] is not None else op.src_rows
            src = _select(full.to(act.dtype), src_rows[lo:hi].to(dev), pos, site, n_heads)
    ctx = ApplyContext(input_index[rows_cpu], site.name)
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
        state["finite"].append((torch.isfinite(new).all(), op))
    _write(act, rows, pos, site, n_heads, new)


def _device_of(batch: Batch) -> torch.device:
    """The device of a batch's first tensor (CPU when it holds none)."""
    for v in (*batch.args, *batch.kwargs.values()):
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")


def _not_finite(op: _Op) -> InterventionError:
    return InterventionError(f"{type(op.intervention).__name__} at {op.site.name!r} produced NaN or inf values.")


def _check_finite(state: dict) -> None:
    """Raise for the first deferred (accelerator) intervention whose values were not all finite."""
    checks, state["finite"] = state["finite"], []
    if checks and not bool(torch.stack([ok for ok, _ in checks]).all()):
        raise _not_finite(next(op for ok, op in checks if not bool(ok)))


def _check_shape(act: torch.Tensor, site: Site, n_heads: int | None, pos: torch.Tensor | None) -> None:
    if site.positions is not None and act.ndim < 3:
        raise SiteError(f"Site {site.name!r} selects positions, but the activation is {tuple(act.shape)}: "
                        f"positions index dim 1 of a (batch, positions, ...) activation.")
    if pos is not None:
        T = act.shape[1]
        lo, hi = int(pos.min()), int(pos.max())
        if lo < -T or hi >= T:
            raise SiteError(f"Site {site.name!r}: positions out of range for {T} positions "
                            f"(got {lo} .. {hi}; valid {-T} .. {T - 1}).")
    split = site.heads is not None and n_heads is not None and act.ndim in (2, 3)
    last = act.shape[-1] // n_heads if split and n_heads else act.shape[-1]
    if split and act.shape[-1] % n_heads:  # type: ignore[operator]
        raise SiteError(f"Site {site.name!r}: last dimension {act.shape[-1]} does not split into {n_heads} heads.")
    if site.heads is not None and isinstance(site.heads, tuple):
        H = n_heads if split else act.shape[-2]
        bad = [h for h in site.heads if not 0 <= h < H]
        if bad:
            raise SiteError(f"Site {site.name!r}: heads {bad} out of range (the site has {H} heads: 0 .. {H - 1}).")
    if isinstance(site.neurons, tuple):
        bad = [i for i in site.neurons if not 0 <= i < last]
        if bad:
            raise SiteError(f"Site {site.name!r}: neurons {bad} out of range (size {last}: 0 .. {last - 1}).")
    if site.basis is not None and site.basis.shape[0] != last:
        raise SiteError(f"Site {site.name!r}: basis is {tuple(site.basis.shape)} but the activation's last "
                        f"dimension is {last}.")


def _index(sel: tuple[int, ...] | slice, size: int, device: torch.device) -> torch.Tensor:
    if isinstance(sel, slice):
        return torch.arange(size, device=device)[sel]
    return torch.tensor(sel, dtype=torch.long, device=device)


def _levels(t: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor | None, site: Site, n_heads: int | None):
    v = t.unflatten(-1, (n_heads, -1)) if site.heads is not None and n_heads is not None and t.ndim in (2, 3) else t
    x = v[rows]
    ar = None
    if site.positions is not None:
        if pos is None:  # a slice
            pos = _index(site.positions, v.shape[1], v.device).expand(len(rows), -1)  # type: ignore[arg-type]
        pos = torch.where(pos < 0, pos + v.shape[1], pos)
        ar = torch.arange(len(rows), device=v.device)[:, None]
        x1 = x[ar, pos]
    else:
        x1 = x
    h = _index(site.heads, v.shape[-2], v.device) if site.heads is not None else None
    x2 = x1.index_select(-2, h) if h is not None else x1
    nr = _index(site.neurons, v.shape[-1], v.device) if site.neurons is not None else None
    x3 = x2.index_select(-1, nr) if nr is not None else x2
    return v, x, ar, pos, x1, h, x2, nr, x3


def _select(t: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor | None, site: Site,
            n_heads: int | None) -> torch.Tensor:
    x3 = _levels(t, rows, pos, site, n_heads)[-1]
    if site.basis is not None:
        return x3 @ site.basis.to(device=x3.device, dtype=x3.dtype)
    return x3


def _write(t: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor | None, site: Site, n_heads: int | None,
           new: torch.Tensor) -> None:
    v, x, ar, pos, x1, h, x2, nr, x3 = _levels(t, rows, pos, site, n_heads)
    if site.basis is not None:
        b = site.basis.to(device=x3.device, dtype=x3.dtype)
        new = x3 + (new - x3 @ b) @ b.T
    if nr is not None:
        new = x2.index_copy(-1, nr, new)
    if h is not None:
        new = x1.index_copy(-2, h, new)
    if ar is not None:
        new = x.index_put((ar, pos), new)
    v.index_put_((rows,), new)
