"""The engine: one batched pass (per chunk) for a plan of per-row interventions; hooks live only here.

>>> run = Engine(adapter).run(inputs, {Site("layers.2"): Zero()}, cache=["layers.3"])
>>> run.cache["layers.3"].shape[0] == run.n_rows
True

:meth:`Engine.run` plans the run (``_plan`` -> :class:`_Plan`), hooks every module it reads or writes
(``_register_hooks``), runs the plan's rows chunk by chunk (``_run_chunk``; the pass in progress is a
:class:`Chunk`, which the hooks read and write) and gathers what the passes kept (:class:`_Kept`) into a
:class:`Run` (``_result``). Compiling edits into ops and selecting / writing a site's part of an activation
live in ``_engine_ops``.
"""
from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import InputError, InterventionError, PlanError, SiteError
from ._engine_ops import (
    Chunk,
    Key,
    Op,
    Source,
    apply_op,
    check_finite,
    check_output_finite,
    check_site,
    compile_ops,
    view,
)
from ._guard import preserved
from ._interventions import Intervention
from ._metrics import call_metric, takes_lengths
from ._progress import tqdm
from ._rows import Block, plan_blocks
from ._sites import Site, as_site
from .adapters import Adapter, Batch, Resolved, SegmentedLM, primary, segmented

IO = Literal["output", "input"]

Edits = Mapping["Site | str", Intervention]
#: rows per CPU pass when the caller gives no chunk_size, unless more fit in CPU_CACHE_BYTES (Engine._chunk_size)
CPU_MAX_ROWS = 2048
#: activations (by the estimate in Engine._chunk_size) a CPU pass may hold and stay in cache
CPU_CACHE_BYTES = 8 << 20


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
    gradients of ``metric`` with respect to them, by site name; ``input_index``: each row's base input;
    ``lengths``: each row's real length when the prompts differ in length (None otherwise): the output and
    the caches are padded on the right, and site positions were each row's own.
    """

    output: torch.Tensor | None
    metric: torch.Tensor | None
    cache: ActivationCache
    grads: ActivationCache
    input_index: torch.Tensor
    kv: list | None = None
    meta: dict = field(default_factory=dict)
    #: prompts of different lengths: each row's real length (the output and caches are padded on the right)
    lengths: torch.Tensor | None = None
    #: the model that made the run (a weak reference): a patch source must come from the model it patches
    made_by: Any = field(default=None, repr=False, compare=False)

    @property
    def n_rows(self) -> int:
        return int(self.input_index.numel())


@dataclass
class _Plan:
    """A run, planned: what every pass shares.

    >>> plan.n, plan.chunk_size, sorted(plan.keys)      # plan = engine._plan(inputs, edits, ...)
    (48, 48, [('layers.2', 'output'), ('layers.3', 'output')])
    """

    batch: Batch
    ops: dict[Key, list[Op]]  # the interventions, by the module they hook
    cache_res: list[tuple[Site, Resolved]]
    grad_res: list[tuple[Site, Resolved]]
    keys: set[Key]  # every module a hook reads or writes
    input_index: torch.Tensor  # each plan row's base input
    n: int  # plan rows
    identity: bool  # plan row i is base input i, for every input: a one-chunk run passes the batch as it is
    chunk_size: int
    metric: Callable[[torch.Tensor], torch.Tensor] | None
    keep_output: bool
    kv_of: SegmentedLM | None  # keep_kv: the LM whose key/value cache each pass keeps
    lengths: torch.Tensor | None = None  # each plan row's real length (a ragged batch)


class _Kept:
    """What the passes keep for the :class:`Run`, one entry per chunk.

    >>> kept = _Kept(plan)
    >>> kept.outs, kept.cached      # ([], {('layers.3', 'output'): []})
    """

    __slots__ = ("cached", "graded", "outs", "mets", "kvs", "token_layers")

    def __init__(self, plan: _Plan) -> None:
        self.cached: dict[Key, list[torch.Tensor]] = {r.key: [] for _, r in plan.cache_res}
        self.graded: dict[Key, list[torch.Tensor]] = {r.key: [] for _, r in plan.grad_res}
        self.outs: list[torch.Tensor] = []
        self.mets: list[torch.Tensor] = []
        self.kvs: list[list] = []
        self.token_layers: int | None = None


class Engine:
    """Executes plans on one adapter. Made by :class:`Model`; use ``Model.run``.

    >>> Engine(adapter).run(inputs, [{Site("layers.1"): Zero()}, {}]).output.shape[0]
    2
    """

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    # -- planning ----------------------------------------------------------------------------------
    def plan_blocks(self, batch: Batch, edits: Any, input_index: Sequence[int] | None
                    ) -> tuple[list[Block], torch.Tensor]:
        """The plan as blocks of rows sharing one edits dict, and each row's base input (see :func:`plan_blocks`)."""
        return plan_blocks(batch, edits, input_index)

    def _sources(self, ops: dict[Key, list[Op]], input_index: torch.Tensor, batch: Batch) -> None:
        """Resolve the runs the interventions read, and each op's source rows (the intervention picks them)."""
        needs: dict[int, tuple[Any, set[Key]]] = {}
        for key, lst in ops.items():
            for op in lst:
                if op.intervention.source_mode is not None:
                    src = op.intervention.source
                    needs.setdefault(id(src), (src, set()))[1].add(key)
        if not needs:  # no intervention reads another run: nothing below applies
            return
        resolved: dict[int, Source] = {}
        for sid, (src, keys) in needs.items():
            if isinstance(src, Run):
                maker = src.made_by() if src.made_by is not None else self.adapter.module
                if maker is not self.adapter.module:
                    names = ", ".join(sorted({type(op.intervention).__name__ for k in keys for op in ops[k]}))
                    raise InterventionError(
                        f"{names} reads a run made by another model ({src.meta.get('model', '?')}, not this "
                        f"{self.adapter.describe().get('model', type(self.adapter.module).__name__)} instance): "
                        f"its activations would be patched in silently. Run the source on this model, or, to "
                        f"patch across models on purpose, pass the activation itself: "
                        f"cs.Set(other_run.cache[site_name]).")
                missing = [k for k in keys if k not in src.cache.by_key]
                if missing:
                    raise InterventionError(
                        f"The source run did not cache {', '.join(f'{p!r} ({io})' for p, io in missing)}; "
                        f"it cached {sorted(src.cache)}. Run the source with cache=[...] covering the patched sites.")
                resolved[sid] = Source({k: src.cache.by_key[k] for k in keys}, src.n_rows, src.lengths)
            else:
                sites = [Site(p, cast(IO, io)) for p, io in keys]
                run = self.run(src, cache=sites)
                resolved[sid] = Source(dict(run.cache.by_key), run.n_rows, run.lengths)
        for lst in ops.values():
            for op in lst:
                iv = op.intervention
                if iv.source_mode is None:
                    continue
                op.source = s = resolved[id(iv.source)]
                if iv.source_mode != "all":
                    assert op.rows_t is not None
                    op.src_rows = iv.source_rows(op.rows_t, input_index, s.size, batch.size)

    def _plan(self, inputs: Any, edits: Any, cache: Sequence[Site | str], grads: Sequence[Site | str],
              metric: Callable[[torch.Tensor], torch.Tensor] | None, input_index: Sequence[int] | None,
              chunk_size: int | None, keep_output: bool | None, keep_kv: bool) -> _Plan:
        """Check the arguments, compile the edits into ops and resolve their sources."""
        batch = self.adapter.prepare(inputs)
        blocks, index = self.plan_blocks(batch, edits, input_index)
        identity = len(index) == batch.size and bool((index == torch.arange(batch.size)).all())
        ops = compile_ops(self.adapter, batch, blocks)
        self._sources(ops, index, batch)
        cache_sites = [as_site(s) for s in cache]
        grad_sites = [as_site(s) for s in grads]
        for what, group in (("cache", cache_sites), ("grads", grad_sites)):
            named: dict[str, Site] = {}
            for s in group:
                if named.setdefault(s.name, s) != s:  # e.g. two different bases on one module: l1[subspace=2]
                    raise PlanError(f"Two different {what} sites share the name {s.name!r} (their results are "
                                    f"keyed by name): ask for them in separate runs.")
        if grad_sites and metric is None:
            raise PlanError("grads=[...] needs a metric: the gradients are of metric(output) (one scalar per row).")
        answers = int(getattr(metric, "n_answers", 1))
        if answers > 1 and batch.size % answers:
            raise InputError(f"The metric has {answers} answer tokens (one per prompt) but the inputs have "
                             f"{batch.size} rows: give one answer per prompt.")
        kv_of = segmented(self.adapter) if keep_kv else None
        if keep_kv and kv_of is None:
            raise PlanError(f"keep_kv=True needs a Hugging Face causal LM (it keeps its key/value cache); "
                            f"{self.adapter.kind} models have none.")
        cache_res = [(s, self.adapter.resolve(s)) for s in cache_sites]
        grad_res = [(s, self.adapter.resolve(s)) for s in grad_sites]
        for s, _ in cache_res + grad_res:
            check_site(s, batch.seq_len, batch.pos_offset)
        keys = set(ops) | {r.key for _, r in cache_res} | {r.key for _, r in grad_res}
        n = len(index)
        lengths = None if batch.lengths is None else batch.lengths.cpu()[index]
        if lengths is not None and metric is not None and not takes_lengths(metric):
            raise InputError(
                f"The prompts have different lengths {sorted(set(lengths.tolist()))}, so the output is padded "
                f"on the right and a metric that reads positions (e.g. logits[:, -1]) would read padding. Use "
                f"cs.logit_diff / cs.logit / cs.prob (they read each prompt's last token), or give your metric a "
                f"`lengths` parameter: def metric(logits, lengths): ... (each row's real length).")
        return _Plan(batch, ops, cache_res, grad_res, keys, index, n, identity,
                     self._chunk_size(chunk_size, n, batch, len(cache_res)), metric,
                     metric is None if keep_output is None else keep_output, kv_of, lengths)

    # -- execution ---------------------------------------------------------------------------------
    def run(self, inputs: Any, edits: Any = None, *, cache: Sequence[Site | str] = (), grads: Sequence[Site | str] = (),
            metric: Callable[[torch.Tensor], torch.Tensor] | None = None, input_index: Sequence[int] | None = None,
            chunk_size: int | None = None, keep_output: bool | None = None, keep_kv: bool = False,
            progress: bool | None = None) -> Run:
        plan = self._plan(inputs, edits, cache, grads, metric, input_index, chunk_size, keep_output, keep_kv)
        chunk = Chunk(plan.batch.seq_len, plan.batch.pos_offset)
        kept = _Kept(plan)
        with preserved(self.adapter.module) as handles:
            self._register_hooks(plan, chunk, handles)
            for c0 in self._starts(plan, progress):
                self._run_chunk(plan, chunk, c0, kept)
        return self._result(plan, kept)

    def _register_hooks(self, plan: _Plan, chunk: Chunk, handles: list[RemovableHandle]) -> None:
        """Hook every module the plan reads or writes (and cut the positions nothing downstream reads)."""
        cache_keys = {r.key for _, r in plan.cache_res}
        grad_keys = {r.key for _, r in plan.grad_res}
        for key in plan.keys:
            res = plan.ops[key][0].res if key in plan.ops else \
                next(r for _, r in plan.cache_res + plan.grad_res if r.key == key)
            hook = _make_hook(key, plan.ops.get(key, []), key in cache_keys, key in grad_keys, chunk)
            if res.io == "output":
                handles.append(res.module.register_forward_hook(hook))
            else:
                handles.append(res.module.register_forward_pre_hook(hook, with_kwargs=True))
        for path, scope in self.adapter.last_position_cuts(plan.batch):
            if not any(k[0] == scope or k[0].startswith(scope + ".") for k in plan.keys):
                handles.append(self.adapter.module.get_submodule(path).register_forward_pre_hook(_last_position))

    @staticmethod
    def _starts(plan: _Plan, progress: bool | None) -> Iterable[int]:
        """The first plan row of each chunk, behind a progress bar when asked (or when there are over 3 chunks)."""
        starts = range(0, plan.n, plan.chunk_size)
        show = progress if progress is not None else len(starts) > 3
        # (a disabled tqdm still costs ~30 µs to build; iterate the range directly when it is off)
        return tqdm(starts, desc="causalscope run", unit="chunk") if show else starts

    def _run_chunk(self, plan: _Plan, chunk: Chunk, c0: int, kept: _Kept) -> None:
        """One forward pass over plan rows ``c0 .. c0 + chunk_size``; what the run returns goes into ``kept``."""
        n = plan.n
        c1 = min(n, c0 + plan.chunk_size)
        idx = plan.input_index[c0:c1]
        chunk.start(c0, c1, idx, None if plan.lengths is None else plan.lengths[c0:c1])
        sub = plan.batch if plan.identity and c1 - c0 == n else plan.batch.take(idx)
        if plan.ops:
            dev = _device_of(sub)
            for key_ops in plan.ops.values():
                for op in key_ops:
                    op.stage(dev)
        tl = self.adapter.token_layers(sub)
        kept.token_layers = None if tl is None else (kept.token_layers or 0) + tl
        if plan.kv_of is not None:
            sub = dataclasses.replace(sub, kwargs={**sub.kwargs, "use_cache": True})
        with torch.no_grad() if plan.grad_res else torch.inference_mode():
            out = self.adapter.call(sub)
            check_finite(chunk.finite)
            missed = [k for k in plan.keys if k not in chunk.counts]
            if missed:
                raise SiteError(
                    f"Site module(s) {', '.join(f'{p!r} ({io})' for p, io in missed)} did not run in this "
                    f"forward pass, so their interventions / cache / grads would silently do nothing. "
                    f"(A segmented run only executes the blocks from its start layer on.)")
            y = self.adapter.output(out)
            m = None if plan.metric is None else self._metric(plan.metric, y, idx, chunk.lengths)
            if plan.ops:  # an edit may overflow downstream of its site: check what the pass returns
                check_output_finite(plan.ops, c0, y, "output")
                if m is not None:
                    check_output_finite(plan.ops, c0, m, "metric")
            if plan.grad_res:
                self._grads(plan, chunk, m, kept)
        if plan.keep_output:
            kept.outs.append(y.detach())
        if m is not None:
            kept.mets.append(m.detach())
        if plan.kv_of is not None:
            kept.kvs.append(plan.kv_of.kv_cache(out))
        for k, store in kept.cached.items():
            store.append(chunk.cache.pop(k))

    def _metric(self, metric: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                idx: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor | None:
        """``metric`` of this pass's output (also given the rows' base inputs if it ``takes_input_index``, and
        their real lengths in a ragged batch)."""
        m = call_metric(metric, y, idx, lengths)
        return None if m is None else self._check_metric(m, len(idx))

    @staticmethod
    def _grads(plan: _Plan, chunk: Chunk, m: torch.Tensor | None, kept: _Kept) -> None:
        """Keep the gradients of this pass's summed metric with respect to the grad sites' activations."""
        acts = [chunk.acts[r.key] for _, r in plan.grad_res]
        if m is None or not torch.is_grad_enabled() or not m.requires_grad:
            raise PlanError("The metric does not depend on the grad sites (no gradient path); "
                            "check that the sites lie before the output.")
        gs = torch.autograd.grad(m.sum(), acts, allow_unused=True)
        for (_, r), a, gr in zip(plan.grad_res, acts, gs):
            kept.graded[r.key].append((torch.zeros_like(a) if gr is None else gr).detach())
        torch.set_grad_enabled(False)

    def _result(self, plan: _Plan, kept: _Kept) -> Run:
        """The :class:`Run`: the kept chunks concatenated, caches viewed through their sites."""
        batch = plan.batch
        run_cache, run_grads = ActivationCache(), ActivationCache()
        for sites_res, store, dst in ((plan.cache_res, kept.cached, run_cache),
                                      (plan.grad_res, kept.graded, run_grads)):
            for s, r in sites_res:
                full = torch.cat(store[r.key]) if store[r.key] else torch.empty(0)
                dst.by_key[r.key] = full
                dst[s.name] = self._view(full, s, r, batch.seq_len, batch.pos_offset, plan.lengths,
                                         grad=dst is run_grads)
        kv = None
        if plan.kv_of is not None and kept.kvs:
            kvs = kept.kvs
            kv = [(torch.cat([c[i][0] for c in kvs]), torch.cat([c[i][1] for c in kvs])) for i in range(len(kvs[0]))]
        return Run(torch.cat(kept.outs) if plan.keep_output and kept.outs else None,
                   torch.cat(kept.mets) if kept.mets else None, run_cache, run_grads, plan.input_index, kv,
                   {"n_rows": plan.n, "chunk_size": plan.chunk_size, "token_layers": kept.token_layers,
                    **self.adapter.describe()}, plan.lengths, weakref.ref(self.adapter.module))

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
        # CPU: a 2 GiB budget, and rows whose activations stay in cache: CPU_CACHE_BYTES of them, at least
        # CPU_MAX_ROWS rows (18,000 rows of the zoo MLP, ~60 MB, ran 2.5x slower per row than 2,048-row passes;
        # a tiny model's rows are so small that more of them fit, and each pass costs its fixed overhead)
        cached_rows = max(CPU_MAX_ROWS, CPU_CACHE_BYTES // max(per_row, 1))
        return max(1, min(n, int((2 << 30) // max(per_row, 1)), cached_rows))

    _view = staticmethod(view)  # the site's selection of a cached activation (patching/_attribution.py uses it)


def _make_hook(key: Key, ops: list[Op], do_cache: bool, do_grad: bool, chunk: Chunk) -> Callable:
    """The hook of module ``key`` (path, io): apply ``ops`` to its activation, keep it for the cache / grads."""
    path, io = key

    def apply(act: torch.Tensor) -> torch.Tensor:
        counts = chunk.counts
        counts[key] = counts.get(key, 0) + 1
        if counts[key] > 1:
            raise SiteError(f"Module {path!r} ran more than once in one forward pass (a shared module); a site "
                            f"there is ambiguous. Choose a module that runs once per pass.")
        if not isinstance(act, torch.Tensor):
            raise SiteError(f"Site {path!r} ({io}) carries {type(act).__name__}, not a tensor.")
        n = chunk.c1 - chunk.c0
        if act.ndim == 0 or act.shape[0] != n:
            raise SiteError(f"The activation at {path!r} ({io}) is {tuple(act.shape)}, whose dim 0 is not the "
                            f"batch of {n} rows (the module flattens or transposes the batch). Choose a "
                            f"site whose activation is (batch, ...).")
        if ops:
            act = act.clone()
            for op in ops:
                apply_op(act, op, chunk)
        if do_grad:
            if not torch.is_grad_enabled():
                torch.set_grad_enabled(True)
            if not act.requires_grad:
                act = act.detach().requires_grad_(True)
            chunk.acts[key] = act
            if do_cache:
                chunk.cache[key] = act.detach().clone()
            # the model gets a copy: a block may change this tensor in place (Falcon adds its attention output to
            # the MLP output), which torch refuses on a gradient leaf; the gradient reaches the leaf through it
            return act.clone()
        if do_cache:
            # a copy: the model may later change this tensor in place (e.g. ReLU(inplace=True))
            chunk.cache[key] = act.detach().clone()
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


def _device_of(batch: Batch) -> torch.device:
    """The device of a batch's first tensor (CPU when it holds none)."""
    for v in (*batch.args, *batch.kwargs.values()):
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")
