"""Node effects and attribution patching (EAP, EAP-IG) in shards, on an executor (in process or Ray), with ``out=``.

>>> r = circuits.eap_ig(case, steps=5, executor=cs.RayExecutor(workers=2), out="runs/eap_ig")
>>> r = circuits.node_effects(case, shards=8, out="runs/effects")          # in process, checkpointed per shard
>>> r.meta["executor"]                                                     # what ran: workers, shards, reused

Both methods are sums over their items, divided once at the end; a shard computes its items' sums on a worker and
the lead process adds the shards' sums in shard order, then applies the unsharded call's own normalisation
(:func:`~causalscope.circuits._eap.normalise`, :func:`~causalscope.circuits._ablation.node_values`):

- EAP / EAP-IG: items are the input rows (a clean row with its corrupted row, labels and length). Everything
  that reads several rows is fixed here first, on all of them: the seeded resample of the corrupted rows, the
  mean of a ``"mean"`` corruption. A metric of your own must give each row its own value (one per row); one
  value for the whole batch cannot be split into shards and is refused.
- node effects: items are blocks of the (base, source) pairs (mean / zero: of the base inputs), chosen here with
  the seed before sharding; the means of a mean ablation are taken here over all inputs. Each miss count is an
  integer, so the sums, and the effects, do not depend on the shards at all.

A shard's result rides on its first item (the others are None), so each saved shard holds its own sums.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch

from ..core import Model, callable_setting, input_setting, takes_lengths
from ..errors import InputError
from ..executors import check_executor, run_sharded
from ._ablation_inputs import AblationData, node_sites
from ._ablation_rows import progress_bar
from ._discovery import (
    ABLATIONS,
    METRICS,
    GraphMetric,
    Setup,
    _label_mask,
    _masked_mean,
    resample_rows,
    resolve_arguments,
)
from ._graph import ComputeGraph, GraphOutputs

#: a shard's sums: ``attribution_sums(setup, steps, endpoints)`` (_eap), ``node_sums(d, sites, ...)`` (_ablation);
#: the methods hand theirs in (they import this module, not the other way round)
SumsFn = Callable[..., Any]

#: node effects ship their pairs in at most about this many blocks (items), so that default shards stay large
MAX_BLOCKS = 4096


# -- EAP / EAP-IG ---------------------------------------------------------------------------------------------------
class RowMetric:
    """A metric of your own, checked to give one value per row (a sum over rows splits into shards; a batch
    value does not). Keeps the metric's name and whether it reads ``lengths``.

    >>> RowMetric(lambda y: y[:, -1, 3])(torch.zeros(2, 4, 5)).shape
    torch.Size([2])
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", repr(fn))
        self.takes_lengths = takes_lengths(fn)

    def __call__(self, logits: torch.Tensor, **kw: Any) -> torch.Tensor:
        v = torch.as_tensor(self.fn(logits, **kw))
        if v.ndim == 0 or v.numel() != logits.shape[0]:
            raise InputError(f"The metric {self.__name__} gave {tuple(v.shape)} for {logits.shape[0]} rows; sharded "
                             f"over inputs (executor=, out=, shards=) a metric must give one value per row (e.g. "
                             f"logits[:, -1, 3], not logits[:, -1, 3].mean()), each read from its own row. Return one "
                             f"value per row, or leave executor, out and shards out to run in one piece.")
        return v.reshape(-1)


def sharded_attribution(model: Any, clean: Any, corrupted: Any, *, metric: Any, labels: Any, positions: Any,
                        categorical: bool | None, seed: int, steps: int | None, endpoints: str, executor: Any,
                        out: str | os.PathLike[str] | None, shards: int | None, sums: SumsFn,
                        default_metric: dict[bool, str], progress: bool | None = None
                        ) -> tuple[torch.Tensor, list[str], dict[str, Any]]:
    """EAP (``steps=None``) or EAP-IG over the inputs in shards: the per-edge ``sums`` over all inputs (added in
    shard order, not yet normalised), the edge names, and the unsharded call's meta plus ``meta["executor"]``.

    >>> total, edges, meta = sharded_attribution(case, None, None, metric=None, labels=None, positions=None,
    ...     categorical=None, seed=0, steps=5, endpoints="right", executor=RayExecutor(workers=2), out=None,
    ...     shards=None, sums=attribution_sums, default_metric=GRAD_DEFAULT)

    Arguments are resolved as :func:`~causalscope.circuits._discovery.setup` resolves them; the token ids, the
    seeded resample (or the mean corruption's means) come from one call where the model is, over all inputs.
    """
    ex = check_executor(executor)
    args = resolve_arguments(model, clean, labels, positions, categorical, seed)
    model, clean, labels, positions = args.model, args.clean, args.labels, args.positions
    categorical, seed = args.categorical, args.seed
    given_case, clean_given, labels_given = args.given_case, args.clean_given, args.labels_given
    if clean is None:
        raise InputError("No clean inputs: pass token ids (rows, positions), or a case from circuits.load_case.")
    ablation = corrupted if isinstance(corrupted, str) else None
    if ablation is not None and ablation not in ABLATIONS:
        raise InputError(f"Unknown corruption {ablation!r}: give corrupted token ids or one of {', '.join(ABLATIONS)}.")
    if metric is not None and not callable(metric) and metric not in METRICS:
        raise InputError(f"Unknown metric {metric!r}: use one of {', '.join(METRICS)} or a callable "
                         f"logits (rows, T, V) -> (rows,).")
    source = model.model if isinstance(model, ComputeGraph) else model
    plan = ex.call(source, _attribution_plan, clean, None if ablation else corrupted, ablation, seed)
    clean_t, corr_t, lengths = plan["clean"], plan["corrupted"], plan["lengths"]
    N, T = clean_t.shape
    default = positions is None
    positions = list(range(1, T)) if positions is None else [int(p) for p in positions]
    if not positions or any(p < -T or p >= T for p in positions):
        raise InputError(f"Metric positions {positions} must be non-empty and lie in [0, {T}).")
    if callable(metric) and lengths is not None and not takes_lengths(metric):
        raise InputError(f"The prompts have different lengths {sorted(set(lengths.tolist()))}, so the logits are "
                         f"padded on the right and a metric that reads positions would read padding: give it a "
                         f"`lengths` parameter, def metric(logits, lengths): ... (each row's real length), or use a "
                         f"built-in metric ({', '.join(METRICS)}).")
    lab = None if labels is None else torch.as_tensor(labels).cpu()
    per_row = lab if lab is not None and tuple(lab.shape) == (N, T) else None  # else they mark no position
    items = [(clean_t[i], None if corr_t is None else corr_t[i], None if per_row is None else per_row[i],
              None if lengths is None else int(lengths[i])) for i in range(N)]
    context = {"sums": sums, "default_metric": default_metric, "ablation": ablation, "fill": plan["fill"],
               "categorical": categorical,
               "metric": RowMetric(metric) if callable(metric) else metric, "positions": positions,
               "default": default, "ragged": lengths is not None, "steps": steps, "endpoints": endpoints,
               "labels_shape": None if lab is None or per_row is not None else tuple(lab.shape), "shape": (N, T)}
    method = "eap" if steps is None else "eap_ig"
    settings = {"metric": callable_setting(metric), "positions": positions, "default_positions": default,
                "categorical": categorical, "corrupted": ablation or ("resample" if corrupted is None else "given"),
                "seed": seed, "steps": steps, "endpoints": endpoints if steps is not None else None}
    key = {**settings, "metric_fn": metric, "fill": plan["fill"]} if out is not None else settings
    results, info = run_sharded(_attribution_shard, items, model=source, context=context, method=method,
                                settings=key, executor=ex, out=out, shards=shards, progress=progress)
    firsts = [r for r in results if r is not None and "scores" in r]
    total = firsts[0]["scores"].double().clone()
    for r in firsts[1:]:  # shard order: a deterministic sum
        total += r["scores"].double()
    head = firsts[0]
    meta: dict[str, Any] = {
        "model": plan["model"], "metric": head["metric"], "higher_is_better": head["higher_is_better"],
        "positions": positions, "n_inputs": int(N), "seed": seed,
        "clean": "the case's inputs" if given_case and clean_given is None else input_setting(clean),
        "labels": None if labels is None else ("the case's labels" if given_case and labels_given is None
                                               else "given"),
        "categorical": head["categorical"], "corrupted": settings["corrupted"], "n_edges": len(plan["edges"]),
        "parallel_mlp": plan["parallel_mlp"]}
    if lengths is not None:
        meta["lengths"] = {int(v): int((lengths == v).sum()) for v in sorted(set(lengths.tolist()))}
    meta["clean_metric"] = float(torch.tensor([r["clean"] for r in results], dtype=torch.float64).mean())
    meta["corrupted_metric"] = float(torch.tensor([r["corrupted"] for r in results], dtype=torch.float64).mean())
    extra = {} if steps is None else {"steps": int(steps), "endpoints": endpoints}
    return total, plan["edges"], {"method": method, **meta, "nodes": plan["nodes"], **extra, "executor": info}


def _attribution_plan(m: Model, clean: Any, corrupted: Any, ablation: str | None, seed: int) -> dict[str, Any]:
    """On all inputs (where the model is): token ids, lengths, the corrupted rows (the seeded resample) or the
    mean corruption's sender means, and the graph's names."""
    graph = ComputeGraph(m)
    clean_t, lengths = graph._tokens_and_lengths(clean)
    N = clean_t.shape[0]
    corr_t, fill = None, None
    if corrupted is None and ablation in (None, "resample"):
        if N < 2:
            raise InputError("A resampled corruption needs at least 2 input rows; pass corrupted= inputs.")
        corr_t = clean_t[resample_rows(N, seed, lengths)]
    elif corrupted is not None:
        corr_t, corr_len = graph._tokens_and_lengths(corrupted)
        if corr_t.shape[0] != N:
            raise InputError(f"{corr_t.shape[0]} corrupted inputs for {N} clean ones: give one corrupted row per "
                             f"clean row, of the same length.")
        T, Tc = clean_t.shape[1], corr_t.shape[1]
        a = lengths if lengths is not None else torch.full((N,), T)
        b = corr_len if corr_len is not None else torch.full((N,), Tc)
        if not torch.equal(a, b):
            i = int((a != b).nonzero()[0, 0])
            raise InputError(f"Corrupted prompt {i} has {int(b[i])} tokens and its clean prompt {int(a[i])}: give "
                             f"one corrupted row per clean row, of the same length (inputs shaped "
                             f"{tuple(corr_t.shape)} vs {tuple(clean_t.shape)}).")
    elif ablation == "mean":  # a mean over *all* inputs, shipped to every shard
        fill = _masked_mean(graph.outputs_of(clean_t, lengths).senders, lengths).cpu()
    return {"clean": clean_t.cpu(), "corrupted": None if corr_t is None else corr_t.cpu(), "lengths": lengths,
            "fill": fill, "edges": graph.edge_names(), "nodes": list(graph.nodes), "model": graph.model.name,
            "parallel_mlp": graph.parallel_mlp}


def _attribution_shard(m: Model, items: list[Any], ctx: dict[str, Any], first: int) -> list[Any]:
    """One shard's rows: each row's clean and corrupted metric; the first row also carries the shard's summed
    edge scores (``ctx["sums"]``: :func:`~causalscope.circuits._eap.attribution_sums`) and the metric's
    settings."""
    graph = ComputeGraph(m)
    dev = graph.parts.embed_device
    clean_t = torch.stack([it[0] for it in items]).to(dev)
    lengths = torch.tensor([it[3] for it in items]) if ctx["ragged"] else None
    c_out = graph.outputs_of(clean_t, lengths)
    if ctx["ablation"] in ("zero", "mean"):
        fill = (torch.zeros_like(c_out.senders) if ctx["ablation"] == "zero"
                else ctx["fill"].to(c_out.senders).expand_as(c_out.senders).clone())
        x_out = GraphOutputs(clean_t, fill, c_out.logits, c_out.key_mask, lengths)
        x_out.logits = graph.run(torch.ones(1, len(graph.edges)), c_out, x_out)[0]
    else:
        x_out = graph.outputs_of(torch.stack([it[1] for it in items]).to(dev), lengths)
    categorical = ctx["categorical"] if ctx["categorical"] is not None else c_out.logits.shape[-1] > 1
    kind = ctx["metric"] if ctx["metric"] is not None else ctx["default_metric"][bool(categorical)]
    if kind == "logprob" and ctx["labels_shape"] is not None:
        raise InputError(f"labels have shape {ctx['labels_shape']}; expected one per input token {ctx['shape']}.")
    rows = torch.stack([it[2] for it in items]) if items[0][2] is not None else None
    gm = GraphMetric(kind, clean_logits=c_out.logits, positions=ctx["positions"],
                     labels=rows if kind == "logprob" else None, valid=_label_mask(rows, c_out), lengths=lengths,
                     strict=not ctx["default"])
    s = Setup(graph, c_out, x_out, gm)
    total = ctx["sums"](s, ctx["steps"], ctx["endpoints"]).double().cpu()
    clean_v = gm(c_out.logits[None])[0].double().cpu().tolist()
    corr_v = gm(x_out.logits[None])[0].double().cpu().tolist()
    out: list[Any] = [{"clean": a, "corrupted": b} for a, b in zip(clean_v, corr_v)]
    out[0].update(scores=total, metric=gm.name, higher_is_better=bool(gm.higher_is_better),
                  categorical=bool(categorical))
    return out


# -- node effects ---------------------------------------------------------------------------------------------------
def sharded_node_sums(d: AblationData, model: Any, ablation: str, names: list[str], pos: list[int],
                      scales: list[float], items: torch.Tensor, means: dict[str, torch.Tensor] | None,
                      chunk_size: int | None, progress: bool | None, executor: Any,
                      out: str | os.PathLike[str] | None, shards: int | None, sums: SumsFn
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`~causalscope.circuits._ablation.node_sums` over ``items`` (pairs, or base inputs) in shards, added in
    shard order; and what ran.

    >>> sums, info = sharded_node_sums(d, case.model, "resample", names, pos, scales, pairs, None, None, None,
    ...                                RayExecutor(workers=2), "runs/effects", None, sums=node_sums)

    ``items`` and ``means`` are fixed by the caller, over all inputs; they travel in blocks (items of the run) of
    ``ceil(len(items) / MAX_BLOCKS)``, so that the default number of shards suits a light item.
    """
    ex = check_executor(executor)
    size = max(1, math.ceil(len(items) / MAX_BLOCKS))
    blocks = list(items.split(size))
    context = {"sums": sums, "ablation": ablation, "nodes": names, "positions": pos, "scales": scales, "means": means,
               "chunk_size": chunk_size, "inputs": d.inputs, "labels": d.labels, "valid": d.valid,
               "predictions": d.predictions, "categorical": d.categorical, "atol": d.atol, "ties": d.ties}
    settings = {"ablation": ablation, "nodes": names, "positions": pos, "scales": scales,
                "categorical": d.categorical, "atol": d.atol, "ties": d.ties}
    key = ({**settings, "inputs": d.inputs, "labels": d.labels, "valid": d.valid, "predictions": d.predictions,
            "means": means} if out is not None else settings)
    results, info = run_sharded(_node_shard, blocks, model=model, context=context, method="node_effects",
                                settings=key, executor=ex, out=out, shards=shards, progress=progress)
    total: dict[str, torch.Tensor] = {}
    for r in results:  # shard order: a deterministic sum (of counts: exact in any order)
        if r is not None:
            for k, v in r.items():
                total[k] = total[k] + v.double() if k in total else v.double().clone()
    return total, info


def _node_shard(m: Model, blocks: list[torch.Tensor], ctx: dict[str, Any], first: int) -> list[Any]:
    """One shard's blocks of pairs (or base inputs): their summed misses (``ctx["sums"]``:
    :func:`~causalscope.circuits._ablation.node_sums`) on the first block, None on the others."""
    d = AblationData(m, ctx["inputs"], ctx["labels"], ctx["valid"], ctx["predictions"], ctx["categorical"],
                     ctx["atol"], None, None, ctx["ties"])
    sites = node_sites(m, ctx["nodes"])
    if ctx["positions"] != list(range(d.inputs.shape[1])):
        sites = {n: s.at(ctx["positions"]) for n, s in sites.items()}
    items = torch.cat(blocks)
    with progress_bar(0, False, "node_effects") as bar:
        sums = ctx["sums"](d, sites, ctx["ablation"], ctx["scales"], items, ctx["means"], ctx["chunk_size"], bar)
    return [{k: v.double().cpu() for k, v in sums.items()}] + [None] * (len(blocks) - 1)
