"""Causal mediation: total, natural direct and indirect effects and interchange-intervention accuracy per site."""
from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch

from ..core import (
    POSITION_SWEEPS,
    Site,
    aligned_positions,
    call_metric,
    for_pairs,
    full_rows,
    input_pair,
    input_setting,
    is_last_only,
    length_groups,
    pick_schedule,
    positions_setting,
    prompt_tokens,
    resolve_metric,
    seq_len,
    staircase,
    swapped_rows,
    sweep_cells,
    unique_full_sites,
)
from ..errors import ExecutionError, InputError, check_flag, check_number, check_seed
from ..executors import check_executor
from ..loading import load
from ..results import LabelledArray, quantiles, resolve_backend
from ._counterfactuals import CounterfactualDataset
from ._sharded import Options, ShardArgs, Summary, callable_key, check_pair_metric, metric_setting, run_pairs

STATS = ("TE", "NIE", "NDE", "IIA")


class MediationResult(LabelledArray):
    """Per-site effects with bootstrap intervals: dims ``(*sweep, "stat", "value")``.

    >>> r = cs.mediation("adder", cs.counterfactuals(vary="A", n=50), "neurons")
    >>> r.iia()                     # (layer, neuron) grid of IIA means
    >>> r.sel(stat="NIE", value="mean")

    ``stat``: ``TE`` (total effect, the same for every site), ``NIE`` (natural indirect effect), ``NDE``
    (natural direct effect), ``IIA`` (interchange-intervention accuracy); ``value``: ``mean``, ``lo``,
    ``hi`` (the bootstrap interval). With ``per_example=True`` the last dim is ``example`` (each pair's
    value, IIA as 0 / 1 hits) and :meth:`stat`, :meth:`iia` and :meth:`plot` give means over the examples.
    """

    def stat(self, name: str, value: str = "mean") -> LabelledArray:
        """One statistic over the sweep, e.g. ``r.stat("NIE")`` or ``r.stat("IIA", "lo")``."""
        if "example" in self.dims:
            if value != "mean":
                raise InputError(f"This result keeps one value per pair (per_example=True), so it has no {value!r}; "
                                 f"run cs.mediation without per_example for bootstrap intervals.")
            return self.sel(stat=name).mean("example")
        return self.sel(stat=name, value=value)

    def iia(self) -> LabelledArray:
        return self.stat("IIA")

    def plot(self, ax: Any = None, backend: str = "matplotlib", stat: str = "IIA", **kw: Any) -> Any:
        """Heatmap (2-D sweeps) or bars (1-D) of one statistic's mean, like the tutorial's IIA grids."""
        backend = resolve_backend(backend)
        a = self.stat(stat)
        varied = self.meta.get("varied")
        if isinstance(varied, (list, tuple)):
            varied = ", ".join(str(v) for v in varied)
        title = f"{stat} per site, varying {varied}" if varied else f"{stat} per site"
        a = LabelledArray(a.values, a.dims, a.coords, {**a.meta, "title": title}, name=stat)
        if a.ndim == 2 and backend == "matplotlib":
            kw.setdefault("cmap", "Purples")
            if stat == "IIA":
                kw.setdefault("vmin", 0.0)
                kw.setdefault("vmax", 1.0)
        if a.ndim == 2 and backend == "plotly":
            kw.setdefault("colorscale", [[0, "#FFFFFF"], [1, "#A59FD9"]])
            if stat == "IIA":
                kw.setdefault("vmin", 0.0)
                kw.setdefault("vmax", 1.0)
        return a.plot(ax=ax, backend=backend, **kw)


def _neuron_cells(m: Any) -> tuple[tuple[str, ...], dict[str, list], list[Any]]:
    """Every neuron of every top-level Linear layer (the tutorial's grid), as (layer, neuron) cells."""
    from ..core import Cell

    linears = {name: mod for name, mod in m.module.named_children() if isinstance(mod, torch.nn.Linear)}
    if not linears:
        raise InputError(f"sites='neurons' sweeps the neurons of a model's top-level Linear layers; {m.name} has "
                         f"none. Give a list of sites, or one site with per='neuron'.")
    hidden = list(linears)[:-1] or list(linears)  # the output layer is the output itself
    widths = [int(linears[h].out_features) for h in hidden]
    cells = [Cell((h, n), Site(h, neurons=n)) for h, w in zip(hidden, widths) for n in range(w)]
    return ("layer", "neuron"), {"layer": hidden, "neuron": list(range(max(widths)))}, cells


def mediation(model: Any, data: CounterfactualDataset | tuple[Any, Any], sites: Any = "neurons", *,
              metric: Any = None, per: str | None = None, positions: Sequence[int] | None = None,
              align: Literal["start", "end"] | None = None, tol: float = 1e-3, n_boot: int = 1000, ci: float = 0.95,
              seed: int = 0, chunk_size: int | None = None, per_example: bool = False,
              schedule: Literal["auto", "floor", "batched"] = "auto", executor: Any = None,
              out: str | os.PathLike[str] | None = None, shards: int | None = None) -> MediationResult:
    """Total, natural direct and indirect effects and IIA of every site of a sweep, over base / source pairs.

    >>> ds = cs.counterfactuals(vary="A", n=50, seed=42)
    >>> r = cs.mediation("adder", ds, "neurons")          # every neuron of l1 and l2
    >>> r.iia().values                                     # h12 and h22 mediate A (tolerance 1e-3)

    For pair i (base x, source x') and site M, with y = metric(output):

    - ``TE`` = y(x') - y(x): the total effect of changing the input;
    - ``NIE`` = y(x, M := M(x')) - y(x): the natural indirect effect, through M alone;
    - ``NDE`` = y(x', M := M(x)) - y(x): the natural direct effect, with M held at its base value;
    - ``IIA`` = 1 if y(x, M := M(x')) matches y(x') (within ``tol``; for LM logits: the same top token at
      the last position), else 0: interchange-intervention accuracy. The tutorial compares floats with
      ``==``; we default to ``tol=1e-3`` so that rounding in the last bits does not decide.

    Means over pairs with percentile bootstrap intervals (``n_boot`` resamples of the pairs, level
    ``ci``, seeded). ``per_example=True`` keeps each pair's TE / NIE / NDE / IIA hit instead, on an
    ``example`` dim in place of ``value`` (their mean over examples is the default result's ``mean``).
    ``sites``: ``"neurons"`` (each neuron of each hidden Linear layer), any sweep or site list
    :func:`activation_patching` takes (``"resid_pre"``, ``"heads"``, ...), or one site with ``per=``;
    ``positions`` restricts position sweeps. All cells x pairs run as rows of batched engine passes; on
    Hugging Face LMs with the segmented schedule of :func:`activation_patching`.

    **Pairs of different lengths**: lists of base and source prompts (or token-id lists) whose pairs differ in
    length (each base prompt as long as its source one) run length by length; every pair's values are those
    it would have alone, and the means and the bootstrap run over all pairs as for pairs of one length. A
    position sweep says how positions line up: ``align="end"`` (-k .. -1, back from each prompt's last
    token) or ``align="start"``; every position must exist in the shortest prompt.

    >>> r = cs.mediation(m, (["the cat sat on the mat", "a dog ran"], ["the dog sat on the mat", "a cat ran"]),
    ...                  "resid_pre", metric=cs.logit_diff(5, 9), align="end")

    **On many workers**: ``executor=cs.RayExecutor(workers=N)`` spreads the pairs over Ray workers in ``shards``
    pieces (default: 4 per worker; ``shards=k`` alone splits them in this process); ``out=folder`` saves each
    finished shard at once, and a rerun of the same call computes only the missing ones (docs/distributed.md).
    Each shard computes its pairs' TE / NIE / NDE / IIA; this process puts them back in pair order and takes
    the means and the seeded bootstrap exactly as the call without shards, so the result is the same whatever
    the workers or shards; ``meta["executor"]`` says what ran. The inputs must split into pairs: a tensor (one
    row per pair) or lists of prompts or token-id lists.

    >>> r = cs.mediation("facts-gpt", (bases, sources), "resid_pre", metric=cs.logit_diff(5, 9),
    ...                  executor=cs.RayExecutor(workers=4), out="runs/mediation")
    """
    sharded = executor is not None or out is not None or shards is not None
    m = None if sharded else load(model)
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < ci < 1:
        raise InputError(f"ci must be in (0, 1), got {ci!r}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot!r} (an int: the number of bootstrap resamples).")
    check_number(tol, "tol", low=0, hint="It is how far an interchanged output may be from the source's and count "
                                         "as a hit.")
    seed = check_seed(seed)
    check_flag(per_example, "per_example")
    if sites == "neurons" and per is None and positions is not None:
        raise InputError("positions= restricts a sweep over positions ('resid_pre', 'resid_post', 'attn', 'mlp', "
                         "or one site with per='position'); the 'neurons' sweep has none, so it would be ignored. "
                         "Drop positions=, or select positions in a site: cs.Site(name, positions=[...]).")
    if align not in (None, "start", "end"):
        raise InputError(f"align must be 'start' or 'end' (or None), got {align!r}.")
    if isinstance(data, CounterfactualDataset):
        base, source, varied = data.base, data.source, data.varied
    else:
        try:
            base, source = data
        except (TypeError, ValueError):
            raise InputError("data must be a CounterfactualDataset or a (base, source) pair of inputs.") from None
        varied = ()
    opts = Options(sites, per, positions, align, metric, tol, chunk_size, schedule)
    run_info = None
    if m is None:  # on an executor, in shards of pairs
        ex = check_executor(executor)
        summary, args = ex.call(model, plan_sharded, base, source, opts)
        summary.metric = repr(resolve_metric(metric, model))  # this process's repr, as the call in one piece has
        check_pair_metric(metric, args.n_pairs, "mediation")
        settings = {"sites": sites, "per": per, "positions": positions_setting(positions), "align": align,
                    "metric": metric_setting(metric), "tol": tol, "schedule": schedule,
                    **({"metric_data": callable_key(metric)} if out is not None else {})}
        per_pair, flags, run_info = run_pairs(shard_effects, args, model=model, base=base, source=source, extra=None,
                                              ex=ex, method="mediation", settings=settings, out=out, shards=shards)
        logits = any(bool(f["logits"]) for f in flags)
    else:
        setup = mediation_setup(m, base, source, opts)
        effects = [pair_effects(m, part, sweep, for_pairs(setup.metric, part.index), tol, chunk_size)
                   for part, sweep in zip(setup.parts, setup.sweeps)]
        P = sum(e.per_pair.shape[-1] for e in effects)
        per_pair = torch.zeros(len(setup.sweeps[0].cells), len(STATS), P, device=effects[0].per_pair.device)
        for part, e in zip(setup.parts, effects):   # (cells, stat, pairs)
            per_pair[..., torch.arange(P) if part.index is None else torch.tensor(part.index)] = e.per_pair
        summary, logits = summarize(m, setup), any(e.logits for e in effects)
    return mediation_result(per_pair, summary, logits, opts, data=data, varied=varied, per_example=per_example,
                            n_boot=n_boot, ci=ci, seed=seed, run_info=run_info)


def mediation_result(per_pair: torch.Tensor, s: Summary, logits: bool, o: Options, *, data: Any,
                     varied: Sequence[str], per_example: bool, n_boot: int, ci: float, seed: int,
                     run_info: dict[str, Any] | None) -> MediationResult:
    """The result from every pair's values ``(cells, stat, pairs)`` (in pair order): the means and the seeded
    bootstrap (or the values, ``per_example``), placed on the sweep's grid, with the meta. The one reduction of
    both the call in this process and the sharded one, so they cannot drift apart.

    >>> mediation_result(per_pair, summary, False, opts, data=ds, varied=("A",), per_example=False, n_boot=100,
    ...                  ci=0.95, seed=0, run_info=None).iia()
    """
    P = per_pair.shape[-1]
    last: tuple[str, list[Any]]
    if per_example:
        out, last = per_pair, ("example", list(range(P)))
    else:
        # each resample's mean as one float64 product with its counts: (cells, stat, pairs) @ (pairs, n_boot);
        # the same resamples as gathering per_pair[..., idx], without a (cells, stat, n_boot, pairs) tensor
        # TE is one row for every cell (it does not depend on the site), and sites that change nothing share
        # their rows (NIE all 0, IIA all misses): each distinct row is resampled once
        rows = torch.cat([per_pair[:1, 0], per_pair[:, 1:].reshape(-1, P)]).cpu().double()
        distinct, which = torch.unique(rows, dim=0, return_inverse=True)
        boot = (distinct @ resample_counts(P, n_boot, seed) / P).float()                    # (distinct, n_boot)
        lo_hi = quantiles(boot, [(1 - ci) / 2, 1 - (1 - ci) / 2], dim=-1).T[which]         # (rows, 2)
        C = len(s.cells)
        lo_hi = torch.cat([lo_hi[:1].expand(C, 1, 2), lo_hi[1:].view(C, len(STATS) - 1, 2)], 1)  # (cells, stat, 2)
        out, last = torch.cat([per_pair.mean(-1, keepdim=True), lo_hi], -1), ("value", ["mean", "lo", "hi"])
    dims, coords = s.dims, s.coords
    shape = [len(coords[k]) for k in dims]
    full = torch.full((*shape, len(STATS), out.shape[-1]), float("nan"))
    for c, label in zip(out, s.cells):  # cells as the first group labels them
        full[tuple(coords[k].index(v) for k, v in zip(dims, label))] = c
    fast = all(s.fast)
    meta: dict[str, Any] = {
        "method": "mediation", "model": s.model, "varied": list(varied), "n_pairs": P, "tol": o.tol,
        "data": input_setting(data),
        "sites": o.sites if isinstance(o.sites, str) else list(s.site_names), "per": o.per,
        "positions": positions_setting(o.positions), "align": o.align,
        "chunk_size": o.chunk_size, "requested_schedule": o.schedule, "per_example": per_example,
        "n_boot": n_boot, "ci": ci, "seed": seed, "metric": s.metric, "fast_path": fast,
        "schedule": "floor" if fast else "batched" if not any(s.fast) else "mixed",
        "iia_rule": "same top token" if logits else f"|y - y_source| <= {o.tol}",
        "title": f"mediation of {', '.join(varied) or 'the input change'}"}
    if s.groups is not None:
        meta.update(lengths={str(T): len(idx) for T, idx in s.groups.items()}, align=o.align)  # tokens: pairs
    if run_info is not None:
        meta["executor"] = run_info
    out_coords = {**coords, **({} if s.labels is None else {"position": list(s.labels)})}
    return MediationResult(full, (*dims, "stat", last[0]), {**out_coords, "stat": list(STATS), last[0]: last[1]},
                           meta, name="effect").with_tokens(s.tokens)


def resample_counts(P: int, n_boot: int, seed: int) -> torch.Tensor:
    """(P, n_boot) float64: how often each of P pairs is drawn in each of ``n_boot`` seeded resamples.

    >>> resample_counts(4, 2, seed=0).sum(0)          # every resample draws P pairs
    tensor([4., 4.], dtype=torch.float64)

    The draws are ``torch.randint(P, (n_boot, P))`` from a generator seeded with ``seed``; small tables are
    kept (read-only) for the next call with the same sizes and seed, as repeated analyses of one dataset make.
    """
    if P * n_boot <= _KEEP_COUNTS:
        return _kept_counts(P, n_boot, seed)
    return _draw_counts(P, n_boot, seed)


_KEEP_COUNTS = 1 << 21  # elements of a table worth keeping (16 MiB)


def _draw_counts(P: int, n_boot: int, seed: int) -> torch.Tensor:
    idx = torch.randint(P, (n_boot, P), generator=torch.Generator().manual_seed(seed))
    ones = torch.ones(n_boot, P, dtype=torch.float64)
    return torch.zeros(n_boot, P, dtype=torch.float64).scatter_add_(1, idx, ones).T.contiguous()


@functools.lru_cache(maxsize=4)
def _kept_counts(P: int, n_boot: int, seed: int) -> torch.Tensor:
    return _draw_counts(P, n_boot, seed)


@dataclass
class Part:
    """Pairs of one length: their places among all pairs (None: all), inputs and the positions to sweep."""

    index: list[int] | None
    base: Any
    source: Any
    positions: Sequence[int] | None


@dataclass
class Sweep:
    """A part's cells and its schedule: the segmented floor (``fast``, from position ``d``) or one batched pass."""

    dims: tuple[str, ...]
    coords: dict[str, list]
    cells: list[Any]
    fast: bool
    d: int


@dataclass
class Setup:
    """Every part of a call (by length), its sweep, the aligned position labels and the resolved metric."""

    parts: list[Part]
    sweeps: list[Sweep]
    labels: list[int] | None
    groups: dict[int, list[int]] | None
    metric: Any


@dataclass
class Effects:
    """A part's values and whether its IIA compared top tokens (an LM's logits)."""

    per_pair: torch.Tensor  # (cells, stat, pairs)
    logits: bool


def mediation_setup(m: Any, base: Any, source: Any, o: Options) -> Setup:
    """The parts of a call (pairs of one length each, or all pairs) and their sweeps; raises before any compute."""
    metric_fn = resolve_metric(o.metric, m)
    groups = length_groups(m, base, source, names=("base", "source"))
    labels = None
    if groups is None:
        parts = [Part(None, *input_pair(m, base, source, "mediation"), o.positions)]
    else:
        if o.per == "position" or (isinstance(o.sites, str) and o.sites in POSITION_SWEEPS):
            labels = aligned_positions(o.positions, o.align, sorted(groups))
        parts = [Part(idx, *input_pair(m, [base[i] for i in idx], [source[i] for i in idx], "mediation"),
                      part_positions(o.positions, labels, o.align, T)) for T, idx in groups.items()]
    sweeps = [part_sweep(m, part, o.sites, o.per, o.schedule) for part in parts]
    if any(len(s.cells) != len(sweeps[0].cells) for s in sweeps):
        raise InputError("The sweep has a different number of cells for prompts of different lengths; give "
                         "sites that every prompt has.")
    return Setup(parts, sweeps, labels, groups, metric_fn)


def part_positions(positions: Sequence[int] | None, labels: list[int] | None, align: str | None,
                   T: int) -> Sequence[int] | None:
    """The positions a part of ``T`` tokens sweeps: the aligned labels from its start or back from its end."""
    return positions if labels is None else labels if align == "start" else [T + o for o in labels]


def part_sweep(m: Any, part: Part, sites: Any, per: str | None, schedule: str) -> Sweep:
    """A part's cells and the schedule ``schedule`` picks for them (``"auto"``: the cheaper for these pairs)."""
    T = seq_len(part.base)
    if sites == "neurons" and per is None:
        dims, coords, cells = _neuron_cells(m)
    else:
        dims, coords, cells = sweep_cells(m, sites, per, part.positions, T, part.base)
    fast, d, _ = pick_schedule(m, cells, part.base, part.source, T, schedule)
    return Sweep(dims, coords, cells, fast, d)


def summarize(m: Any, s: Setup) -> Summary:
    """The plain data of a setup that the result needs (the cells as the first group labels them, the tokens)."""
    first = s.sweeps[0]  # cells as the first group labels them
    return Summary(m.name, repr(s.metric), first.dims, first.coords, [c.label for c in first.cells],
                   [str(c.site.name) for c in first.cells], [sw.fast for sw in s.sweeps], s.groups, s.labels,
                   prompt_tokens(m.tokenizer, [part.base for part in s.parts]))


def plan_sharded(m: Any, base: Any, source: Any, o: Options) -> tuple[Summary, ShardArgs]:
    """Before sharding, where the model is: the whole call's setup (its errors raise here, as in one piece), the
    result's summary and what each shard computes with so that it gives each pair the values of the call in
    one piece: the pair's length group, the aligned positions and the group's schedule (chosen over all pairs).

    >>> summary, args = plan_sharded(m, ds.base, ds.source, opts)
    """
    s = mediation_setup(m, base, source, o)
    P = sum(int(part.base.size) for part in s.parts)
    lengths = None
    if s.groups is not None:
        lengths = [0] * P
        for T, idx in s.groups.items():
            for i in idx:
                lengths[i] = T
    keys: list[int | None] = list(s.groups) if s.groups is not None else [None]
    schedules = {T: "floor" if sw.fast else "batched" for T, sw in zip(keys, s.sweeps)}
    return summarize(m, s), ShardArgs(o, P, lengths, s.labels, schedules, len(s.sweeps[0].cells))


def shard_effects(m: Any, base: Any, source: Any, extra: Any, a: ShardArgs, first: int,
                  k: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """One shard's pairs (``first`` .. ``first + k - 1`` of all): their (cells, stat, pairs) values as the call in
    one piece computes them (each pair in its length group, with the group's positions and schedule, reading
    its own answer), and whether the IIA compared top tokens."""
    o = a.options
    metric_fn = resolve_metric(o.metric, m)
    groups: dict[int | None, list[int]] = {None: list(range(k))} if a.lengths is None else {}
    if a.lengths is not None:
        for j in range(k):
            groups.setdefault(a.lengths[first + j], []).append(j)
    per_pair = torch.zeros(a.n_cells, len(STATS), k)
    logits = False
    for T, idx in groups.items():
        if T is None:
            part = Part(None, *input_pair(m, base, source, "mediation"), o.positions)
        else:
            part = Part(idx, *input_pair(m, [base[j] for j in idx], [source[j] for j in idx], "mediation"),
                        part_positions(o.positions, a.labels, o.align, T))
        sweep = part_sweep(m, part, o.sites, o.per, a.schedules[T])
        if len(sweep.cells) != a.n_cells:
            raise ExecutionError(f"mediation: the shard from pair {first} sweeps {len(sweep.cells)} cells, the plan "
                                 f"{a.n_cells}.")
        e = pair_effects(m, part, sweep, for_pairs(metric_fn, [first + j for j in idx]), o.tol, o.chunk_size)
        per_pair[..., torch.tensor(idx)] = e.per_pair.cpu()
        logits = logits or e.logits
    return per_pair, {"logits": logits}


def pair_effects(m: Any, part: Part, sweep: Sweep, metric_fn: Any, tol: float, chunk_size: int | None) -> Effects:
    """Every cell's TE / NIE / NDE / IIA hit per pair, for pairs of one length."""
    base_in, src_in = part.base, part.source
    T = seq_len(base_in)
    cells, fast, d = sweep.cells, sweep.fast, sweep.d
    both_in = None if fast else base_in.stack(src_in)
    if both_in is not None:  # any model: bases and sources in one run, then both directions in one more
        return _swapped_effects(m, cells, both_in, metric_fn, tol, chunk_size)
    L = int(m.n_layers or 0)
    extra = [Site(f"layers.{i}", io="input") for i in range(L)] if fast else []
    runs = {k: m.run(x, cache=unique_full_sites(cells) + extra, metric=metric_fn, keep_kv=fast,
                     keep_output=True, chunk_size=chunk_size) for k, x in (("base", base_in), ("source", src_in))}
    # both runs were given a metric and keep their output
    y_base, y_src = cast(torch.Tensor, runs["base"].metric).float(), cast(torch.Tensor, runs["source"].metric).float()
    P = len(y_base)

    def patched(base_run: Any, base_x: Any, source_run: Any, fn: Any) -> torch.Tensor:
        if fast:
            return staircase(m, cells, base_run, source_run, P, T, d, fn, False, "mediation", chunk_size)[0]
        return full_rows(m, cells, base_x, source_run, P, fn, chunk_size, False)[0]

    logits = runs["source"].output is not None and runs["source"].output.ndim == 3
    if logits:  # IIA on an LM: the intervened run predicts the source run's top token; same pass as the metric
        both = _WithTopToken(metric_fn)
        into_base, top = patched(runs["base"], base_in, runs["source"], both).unbind(-1)
        hit = top == cast(torch.Tensor, runs["source"].output)[:, -1].argmax(-1).float()[None]
    else:
        into_base = patched(runs["base"], base_in, runs["source"], metric_fn)        # (cells, pairs)
        hit = (into_base - y_src[None]).abs() <= tol
    into_source = patched(runs["source"], src_in, runs["base"], metric_fn)
    per_pair = torch.stack([(y_src - y_base)[None].expand_as(into_base), into_base - y_base[None],
                            into_source - y_base[None], hit.float()], 1)   # (cells, stat, pairs)
    return Effects(per_pair, bool(logits))


def _swapped_effects(m: Any, cells: list[Any], both_in: Any, metric_fn: Any, tol: float,
                     chunk_size: int | None) -> Effects:
    """:func:`pair_effects` for inputs that stack (P bases, then their P sources): two runs in all."""
    P = both_in.size // 2
    run = m.run(both_in, cache=unique_full_sites(cells), metric=metric_fn, keep_output=True, chunk_size=chunk_size)
    y = cast(torch.Tensor, run.metric).float()  # a metric was requested
    y_base, y_src = y[:P], y[P:]
    out = cast(torch.Tensor, run.output)
    logits = out.ndim == 3
    if logits:  # IIA on an LM: the intervened run predicts the source run's top token; same pass as the metric
        into, top = swapped_rows(m, cells, both_in, run, P, _WithTopToken(metric_fn), chunk_size).unbind(-1)
        into_base = into[:, :P]
        hit = top[:, :P] == out[P:, -1].argmax(-1).float()[None]
    else:
        into = swapped_rows(m, cells, both_in, run, P, metric_fn, chunk_size)
        into_base = into[:, :P]
        hit = (into_base - y_src[None]).abs() <= tol
    into_source = into[:, P:]
    per_pair = torch.stack([(y_src - y_base)[None].expand_as(into_base), into_base - y_base[None],
                            into_source - y_base[None], hit.float()], 1)   # (cells, stat, pairs)
    return Effects(per_pair, bool(logits))


class _WithTopToken:
    """The metric and the top token at the last position, as two columns of one pass (IIA on LMs)."""

    takes_input_index = True

    def __init__(self, metric: Any) -> None:
        self.metric, self.last_only = metric, is_last_only(metric)

    def __call__(self, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([call_metric(self.metric, y, index).float(), y[:, -1].argmax(-1).float()], 1)
