"""Node ablations with a scale factor (InterpBench's causal-effect sweep), on the full node or a PCA subspace.

>>> from causalscope import circuits
>>> case = circuits.load_case("reverse")
>>> r = circuits.node_effects(case)                                   # resample ablation, scales 0 .. 10
>>> r.table(); r.plot()
>>> s = circuits.subspace_effects(case, k=2, self_patch=True, ablate_high_variance=False)

Every ablation is an intervention row of the engine (one row per (node, scale, base input or pair)), so a
sweep runs as a few large batched passes; the model is never changed and no hook outlives a call.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from .._errors import InputError, close_names
from .._interventions import ApplyContext, Intervention
from .._load import load
from .._model import Model
from .._sites import Site
from ._ablation_result import NodeEffects
from ._circuit import Circuit, node_order
from ._pca import check_k, position_pca

Ablation = Literal["resample", "mean", "zero"]
DEFAULT_SCALES = (0.0, 0.1, 0.2, 0.5, 0.7, 0.8, 1.0, 1.2, 1.4, 2.0, 5.0, 10.0)
#: most rows per engine call (the engine chunks each call into passes; this bounds the plan's memory)
MAX_ROWS_PER_CALL = 1 << 18

METRIC_PAIRS = ("fraction of (base, source, position) triples with different labels at a label position in which "
                "the ablated model's prediction differs from the base label")
METRIC_CORRECT = ("fraction of (base, position) label positions the model predicts correctly in which the "
                  "ablated model's prediction differs from the label")


@dataclass(eq=False)
class Rescale(Intervention):
    """``x -> anchor + scale * (src - anchor)`` on the selection.

    ``src`` is row ``lookup[i]`` of ``table`` for a row on base input ``i`` (a resample source; ``table``
    with one row is a mean), or ``x`` itself when ``table`` is None (self-patch). ``anchor`` defaults to 0.

    >>> Rescale(0.5, table=acts, lookup=sources)      # half the source's activation
    >>> Rescale(0.0, anchor=mu)                       # the selection set to mu
    """

    scale: float
    table: torch.Tensor | None = None
    lookup: torch.Tensor | None = None
    anchor: torch.Tensor | None = None

    def key(self) -> tuple:
        return ("Rescale", id(self))

    def __call__(self, x: torch.Tensor, src: Any, ctx: ApplyContext) -> torch.Tensor:
        if self.table is None:
            s = x
        elif self.table.shape[0] == 1:
            s = self.table.to(device=x.device, dtype=x.dtype).expand_as(x)
        else:
            rows = ctx.input_index if self.lookup is None else self.lookup[ctx.input_index]
            s = self.table.index_select(0, rows.to(self.table.device)).to(device=x.device, dtype=x.dtype)
        if self.anchor is None:
            return s * float(self.scale)
        a = self.anchor.to(device=x.device, dtype=x.dtype)
        return a + float(self.scale) * (s - a)


# -- inputs ------------------------------------------------------------------------------------------------------------
@dataclass
class _Data:
    model: Model
    inputs: torch.Tensor      # (N, T) token ids
    labels: torch.Tensor      # (N, T): long (categorical) or float (numerical)
    valid: torch.Tensor       # (N, T) bool: the label positions
    predictions: torch.Tensor  # (N, T): the unablated model's predictions
    categorical: bool
    atol: float
    circuit: Circuit | None
    name: str | None

    def wrong(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """True where a prediction misses its label (argmax differs; numerical: ``|out - label| > atol``)."""
        if self.categorical:
            return pred != target
        return (pred - target).abs() > self.atol  # NaN labels (no label) compare False


def _is_case(x: Any) -> bool:
    return all(hasattr(x, a) for a in ("model", "inputs", "labels", "circuit", "categorical"))


def predict(output: torch.Tensor, categorical: bool) -> torch.Tensor:
    """The prediction at every position: the argmax output id, or the single output of a numerical model."""
    if categorical:
        return output.argmax(-1)
    if output.shape[-1] != 1:
        raise InputError(f"A numerical (categorical=False) model must have one output per position; this one has "
                         f"{output.shape[-1]}. Pass categorical=True for a classifier.")
    return output[..., 0]


def _data(model_or_case: Any, inputs: Any, labels: Any, categorical: bool, circuit: Any, atol: float) -> _Data:
    case = model_or_case if _is_case(model_or_case) else None
    label_positions = None
    name = None
    if case is not None:
        model, categorical, name = case.model, bool(case.categorical), getattr(case, "name", None)
        circuit = case.circuit if circuit is None else circuit
        if inputs is None:
            inputs = case.inputs
            labels = case.labels if labels is None else labels
            label_positions = getattr(case, "label_positions", None)
    else:
        model = model_or_case
    m = load(model)
    if inputs is None:
        raise InputError("inputs are needed: a LongTensor (N, T) of token ids (or pass a case from "
                         "circuits.load_case, which carries its inputs and labels).")
    if not isinstance(inputs, torch.Tensor) or inputs.is_floating_point() or inputs.ndim != 2:
        raise InputError(f"inputs must be token ids, a LongTensor (N, T); got "
                         f"{type(inputs).__name__} {tuple(getattr(inputs, 'shape', ()))}.")
    if inputs.shape[0] < 2:
        raise InputError(f"Node ablations need at least 2 inputs (resample sources, means); got {inputs.shape[0]}.")
    if circuit is not None and not isinstance(circuit, Circuit):
        raise InputError(f"circuit must be a circuits.Circuit, got {type(circuit).__name__}.")
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not math.isfinite(atol) or atol < 0:
        raise InputError(f"atol must be a finite number >= 0, got {atol!r}.")
    _check_adapter(m)
    preds = m.run(inputs, metric=lambda y: predict(y, categorical), keep_output=False, progress=False).metric
    N, T = inputs.shape
    if labels is None:
        labels = preds.clone()
        valid = torch.ones(N, T, dtype=torch.bool)
        valid[:, 0] = False  # tracr's BOS position carries no label
    else:
        labels = torch.as_tensor(labels)
        if tuple(labels.shape) != (N, T):
            raise InputError(f"labels must be shaped like the inputs {(N, T)}; got {tuple(labels.shape)}.")
        if categorical:
            if labels.is_floating_point():
                raise InputError("Categorical labels must be output ids (a LongTensor, -1 where there is no label); "
                                 "for a numerical model pass categorical=False.")
            valid = labels >= 0
        else:
            labels = labels.double()
            valid = torch.isfinite(labels)
    if label_positions is not None:
        keep = torch.zeros(T, dtype=torch.bool)
        keep[torch.as_tensor(label_positions, dtype=torch.long).flatten()] = True
        valid = valid & keep
    if not valid.any():
        raise InputError("There is no label position: every label is missing (-1 / NaN).")
    return _Data(m, inputs, labels, valid, preds, categorical, float(atol), circuit, name)


def _check_scales(scales: Any) -> list[float]:
    if isinstance(scales, (int, float)) and not isinstance(scales, bool):
        scales = [scales]
    try:
        out = [float(s) for s in scales]
    except (TypeError, ValueError):
        raise InputError(f"scales must be a sequence of numbers, got {scales!r}.") from None
    if not out:
        raise InputError("scales is empty: give at least one factor, e.g. scales=(0, 0.5, 1, 2).")
    if any(not math.isfinite(s) for s in out):
        raise InputError(f"scales must be finite numbers; got {list(scales)}.")
    if len(set(out)) != len(out):
        raise InputError(f"scales repeat a value ({out}); list each scale once.")
    return out


def _check_adapter(m: Model) -> None:
    try:
        m.adapter.resolve(Site("layers.0.attn.result"))
    except Exception:
        raise InputError(f"Node ablations need per-head residual writes (site 'layers.i.attn.result'), which "
                         f"{m.name} ({m.adapter.kind}) does not have; use a compiled transformer "
                         f"(circuits.load_case, zoo.compiled).") from None


def _node_sites(m: Model, nodes: Sequence[str] | None) -> dict[str, Site]:
    """``{node: site}``: a head's residual write (``layers.l.attn.result``, one head) or an MLP's output."""
    _check_adapter(m)
    L, H = int(getattr(m.adapter, "n_layers", 0) or 0), int(getattr(m.adapter, "n_heads", 0) or 0)
    every = sorted([f"a{l}.h{h}" for l in range(L) for h in range(H)] + [f"m{l}" for l in range(L)], key=node_order)
    if nodes is None:
        nodes = every
    if isinstance(nodes, str):
        nodes = [nodes]
    nodes = list(nodes)
    if not nodes:
        raise InputError("nodes is empty: name at least one node (e.g. 'a0.h1', 'm0'), or pass None for all.")
    for n in nodes:
        if n not in every:
            if n in ("embed", "logits"):
                raise InputError(f"{n!r} cannot be ablated here: node effects cover attention heads (a<l>.h<h>) and "
                                 f"MLPs (m<l>).")
            close = close_names(str(n), every)
            raise InputError(f"Unknown node {n!r}; this model has {', '.join(every)}." +
                             (f" Closest: {', '.join(map(repr, close))}." if close else ""))
    if len(set(nodes)) != len(nodes):
        raise InputError(f"nodes repeat a name ({nodes}); list each node once.")
    out = {}
    for n in sorted(nodes, key=node_order):
        l = int(n[1:].split(".")[0])
        out[n] = Site(f"layers.{l}.attn.result", heads=[int(n.split(".h")[1])]) if n.startswith("a") \
            else Site(f"layers.{l}.mlp")
    return out


def _positions(positions: Any, T: int, default: list[int]) -> list[int]:
    if positions is None:
        return default
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    try:
        pos = [int(p) for p in positions]
    except (TypeError, ValueError):
        raise InputError(f"positions must be ints, got {positions!r}.") from None
    bad = [p for p in pos if not -T <= p < T]
    if bad or not pos:
        raise InputError(f"positions {pos} must be a non-empty list within 0 .. {T - 1}.")
    pos = sorted({p % T for p in pos})
    return pos


# -- pairs and the metric ------------------------------------------------------------------------------------------------
def _pairs(d: _Data, pairs: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(base, source, differ)``: the (base, source) pairs whose labels differ at some label position
    (the only pairs the metric counts), every one or a seeded sample; ``differ`` (P, T) marks where."""
    if not (pairs == "all" or (isinstance(pairs, int) and not isinstance(pairs, bool) and pairs > 0)):
        raise InputError(f"pairs must be 'all' (every (base, source) combination) or a positive int (a seeded "
                         f"sample of that many); got {pairs!r}.")
    lab, ok = d.labels, d.valid
    N = lab.shape[0]
    found = []
    step = max(1, (1 << 22) // max(1, N * lab.shape[1]))
    for b0 in range(0, N, step):
        blk = slice(b0, min(N, b0 + step))
        diff = (lab[blk, None] != lab[None]) & ok[blk, None] & ok[None]
        b, s = diff.any(-1).nonzero(as_tuple=True)
        found.append(torch.stack([b + b0, s], 1))
    both = torch.cat(found)
    if isinstance(pairs, int) and pairs < len(both):
        g = torch.Generator().manual_seed(int(seed))
        both = both[torch.randperm(len(both), generator=g)[:pairs].sort().values]
    if not len(both):
        raise InputError("No two inputs have different labels, so a resample ablation has nothing to measure "
                         "(the metric counts only (base, source) pairs whose labels differ).")
    pb, ps = both[:, 0], both[:, 1]
    differ = (lab[pb] != lab[ps]) & ok[pb] & ok[ps]
    return pb, ps, differ


@dataclass
class _Rows:
    """One plan row per (group, r): input ``inputs[r]``; the metric counts ``weight[r, t]`` where the
    prediction misses ``target[r, t]``."""

    inputs: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor


def _evaluate(d: _Data, rows: _Rows, groups: list[dict], chunk_size: int | None, bar: Any) -> torch.Tensor:
    """Effect of each group of edits: sum of weights where the prediction misses, over the total weight."""
    R = rows.inputs.shape[0]
    total = float(rows.weight.sum())

    def metric(y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        miss = d.wrong(predict(y, d.categorical), rows.target[idx])
        return (miss.double() * rows.weight[idx]).sum(-1)

    metric.takes_input_index = True  # type: ignore[attr-defined]
    per_call = max(1, MAX_ROWS_PER_CALL // R)
    out = []
    for g0 in range(0, len(groups), per_call):
        part = groups[g0:g0 + per_call]
        edits = list(itertools.chain.from_iterable([g] * R for g in part))
        run = d.model.run(rows.inputs, edits, input_index=list(range(R)) * len(part), metric=metric,
                          keep_output=False, chunk_size=chunk_size, progress=False)
        out.append(run.metric.view(len(part), R).sum(1))
        bar.update(len(part) * R)
    eff = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
    return eff / total if total > 0 else torch.full_like(eff, float("nan"))


def _bar(n_rows: int, progress: bool | None, desc: str) -> Any:
    show = progress if progress is not None else n_rows > 200_000
    return tqdm(total=n_rows, desc=desc, unit="row", disable=not show)


def _status(nodes: list[str], circuit: Circuit | None) -> list[str]:
    if circuit is None:
        return ["unknown"] * len(nodes)
    inside = set(circuit.nodes)
    return ["in_circuit" if n in inside else "not_in_circuit" for n in nodes]


def _result(d: _Data, nodes: list[str], scales: list[float], values: torch.Tensor, meta: dict) -> NodeEffects:
    meta = {"model": d.model.name, "case": d.name, "n_inputs": int(d.inputs.shape[0]), "categorical": d.categorical,
            "atol": d.atol, "status": _status(nodes, d.circuit), **meta}
    return NodeEffects(values, ("node", "scale"), {"node": nodes, "scale": scales}, meta, name="causal effect")


def _site_view(run: Any, site: Site) -> torch.Tensor:
    """A node's cached activation (N, T, [1,] d) as the engine selects it (heads keep their dim)."""
    return run.cache[site.name]


# -- node effects --------------------------------------------------------------------------------------------------------
def node_effects(model_or_case: Any, inputs: torch.Tensor | None = None, *, circuit: Circuit | None = None,
                 ablation: Ablation = "resample", scales: Sequence[float] = DEFAULT_SCALES,
                 nodes: Sequence[str] | None = None, pairs: int | str = "all", seed: int = 0, labels: Any = None,
                 categorical: bool = True, atol: float = 5e-2, positions: Sequence[int] | None = None,
                 chunk_size: int | None = None, progress: bool | None = None) -> NodeEffects:
    """Causal effect of each node when its activation is replaced by a scaled source (InterpBench's sweep).

    >>> case = circuits.load_case("reverse")
    >>> r = circuits.node_effects(case)                              # resample, every (base, source) pair
    >>> r.table()                                                    # node, status, scale 0 .. scale 10
    >>> circuits.node_effects(case, ablation="mean", scales=[0, 1])
    >>> circuits.node_effects(net, tokens, circuit=c, pairs=2000)   # any compiled model, a seeded sample

    Nodes are attention heads ``a{l}.h{h}`` (the head's write into the residual stream,
    ``layers.l.attn.result``) and MLPs ``m{l}`` (the MLP's output), all of them unless ``nodes`` says.
    At every position (or ``positions``) the node's activation on a base input becomes ``scale * source``:

    - ``"resample"``: source = the node's activation on another input. Effect = over (base, source,
      position) triples whose **labels** differ at a label position, the fraction where the ablated
      model's prediction differs from the base label (InterpBench's ``check_causal_effect``, accuracy
      metric, with ``every_combination=True`` for ``pairs="all"``; an int samples that many pairs, seeded).
      Pairs whose labels agree everywhere count for nothing and are not run; at scale 0 the source
      drops out, so each base runs once, weighted by its number of sources.
    - ``"mean"``: source = the node's mean activation over ``inputs`` (per position); ``"zero"``: 0 (the
      scale then changes nothing). Effect = over the (base, position) label positions the model gets
      right, the fraction where the ablated prediction differs from the label (InterpBench's
      ``ablate_nodes`` with ``relative_change=True``).

    A prediction is the argmax output id; for a numerical model (``categorical=False``) the output, and it
    differs from a label when ``|out - label| > atol``. Labels: the case's, or ``labels`` (N, T; -1 / NaN
    where there is none), or by default the model's own predictions on ``inputs`` at every position but 0
    (tracr's BOS). Effects are pooled over all triples (InterpBench averages per-batch ratios of 256, a
    different weighting of the same counts). ``circuit`` (default: the case's) marks each node
    ``in_circuit`` / ``not_in_circuit``. Every (node, scale, pair) is one engine row; the model is not changed.
    """
    if ablation not in ("resample", "mean", "zero"):
        raise InputError(f"ablation must be 'resample', 'mean' or 'zero', got {ablation!r}.")
    scales = _check_scales(scales)
    d = _data(model_or_case, inputs, labels, categorical, circuit, atol)
    sites = _node_sites(d.model, nodes)
    N, T = d.inputs.shape
    pos = _positions(positions, T, list(range(T)))
    if pos != list(range(T)):
        sites = {n: s.at(pos) for n, s in sites.items()}
    names = list(sites)
    values = torch.full((len(names), len(scales)), float("nan"), dtype=torch.float64)
    meta: dict[str, Any] = {"method": "node_effects", "ablation": ablation, "positions": pos, "seed": int(seed),
                            "title": f"{ablation} ablation, scaled"}
    correct = (d.valid & ~d.wrong(d.predictions, d.labels)).double()
    if ablation == "zero":
        groups = [{s: Rescale(0.0)} for s in sites.values()]
        with _bar(len(groups) * N, progress, "node_effects") as bar:
            eff = _evaluate(d, _Rows(d.inputs, d.labels, correct), groups, chunk_size, bar)
        values[:] = eff[:, None]
        meta.update(metric=METRIC_CORRECT, denominator=float(correct.sum()))
        return _result(d, names, scales, values, meta)
    clean = d.model.run(d.inputs, cache=list(sites.values()), keep_output=False, progress=False)
    if ablation == "mean":
        groups = [{s: Rescale(sc, table=_site_view(clean, s).mean(0, keepdim=True))}
                  for s in sites.values() for sc in scales]
        with _bar(len(groups) * N, progress, "node_effects") as bar:
            values[:] = _evaluate(d, _Rows(d.inputs, d.labels, correct), groups, chunk_size, bar).view(len(names), -1)
        meta.update(metric=METRIC_CORRECT, denominator=float(correct.sum()))
        return _result(d, names, scales, values, meta)
    pb, ps, differ = _pairs(d, pairs, seed)
    zero_j = [j for j, s in enumerate(scales) if s == 0.0]
    rest = [j for j, s in enumerate(scales) if s != 0.0]
    per_base = torch.zeros(N, T, dtype=torch.float64).index_add_(0, pb, differ.double())
    with _bar(len(names) * (len(zero_j) * N + len(rest) * len(pb)), progress, "node_effects") as bar:
        if zero_j:  # scale 0: the source drops out; one row per base, weighted by its sources
            eff = _evaluate(d, _Rows(d.inputs, d.labels, per_base), [{s: Rescale(0.0)} for s in sites.values()],
                            chunk_size, bar)
            values[:, zero_j] = eff[:, None]
        if rest:
            groups = [{s: Rescale(scales[j], table=_site_view(clean, s), lookup=ps)}
                      for s in sites.values() for j in rest]
            eff = _evaluate(d, _Rows(d.inputs[pb], d.labels[pb], differ.double()), groups, chunk_size, bar)
            values[:, rest] = eff.view(len(names), len(rest))
    meta.update(metric=METRIC_PAIRS, pairs=pairs, n_pairs=int(len(pb)), denominator=float(differ.sum()))
    return _result(d, names, scales, values, meta)


# -- PCA-subspace effects ------------------------------------------------------------------------------------------------
def subspace_effects(model_or_case: Any, inputs: torch.Tensor | None = None, *, circuit: Circuit | None = None,
                     k: int = 2, self_patch: bool = False, ablate_high_variance: bool = True, center: bool = True,
                     scales: Sequence[float] = DEFAULT_SCALES, nodes: Sequence[str] | None = None,
                     pairs: int | str = "all", seed: int = 0, labels: Any = None, categorical: bool = True,
                     atol: float = 5e-2, positions: Sequence[int] | None = None, chunk_size: int | None = None,
                     progress: bool | None = None) -> NodeEffects:
    """Causal effect of scaling one part of each node's activation: its top-``k`` PCA subspace or the rest.

    >>> case = circuits.load_case("reverse")
    >>> circuits.subspace_effects(case, k=2)                                   # resample the top-2 subspace
    >>> circuits.subspace_effects(case, k=2, self_patch=True, ablate_high_variance=False)

    At each position ``t`` (default every position but 0, tracr's BOS, as the seed) the node's activations
    over ``inputs`` get a PCA: mean ``mu_t`` and an orthonormal basis ``B_t`` of the ``k`` directions of
    most variance (``ablate_high_variance=True``) or of their orthogonal complement (``False``). With
    ``c(x) = (x - mu_t) B_t`` the part of ``x`` in that subspace (``center=True``), the ablation writes

    - self-patch: ``c -> scale * c(x)`` (the node's own part, scaled);
    - resample (``self_patch=False``): ``c -> scale * c(source)`` (another input's part, scaled);

    and leaves the rest of ``x`` (its mean and the other subspace) alone. Scale 1 self-patch changes
    nothing; scale 0 sets the subspace to its mean. ``center=False`` measures ``c`` from 0 instead (the
    seed's projections of the raw activation): the subspace then also carries the part of the node's
    mean that lies in it, so scaling the complement to 0 removes a constant offset, and the top-``k``
    basis is arbitrary where fewer than ``k`` directions vary. Centred, directions without variance carry
    nothing, so the result does not depend on how they are chosen. With ``k = d`` and the high-variance
    subspace, ``center=False`` is exactly :func:`node_effects`' resample ablation at the same positions.

    The metric is :func:`node_effects`' resample metric for every variant (as the seed's, which runs all
    four through the same pair-based check): over (base, source, position) triples with different labels,
    the fraction where the ablated prediction differs from the base label. A self-patch does not read the
    source, so each base runs once, weighted by its number of differing sources.
    """
    if not isinstance(self_patch, bool) or not isinstance(ablate_high_variance, bool) or not isinstance(center, bool):
        raise InputError("self_patch, ablate_high_variance and center must be True or False.")
    scales = _check_scales(scales)
    d = _data(model_or_case, inputs, labels, categorical, circuit, atol)
    sites = _node_sites(d.model, nodes)
    N, T = d.inputs.shape
    pos = _positions(positions, T, list(range(1, T)) if T > 1 else [0])
    names = list(sites)
    clean = d.model.run(d.inputs, cache=list(sites.values()), keep_output=False, progress=False)
    views = {n: _site_view(clean, s) for n, s in sites.items()}
    dim = int(next(iter(views.values())).shape[-1])
    check_k(k, dim)
    # per node, per position: the site (with its subspace basis), the source table and the anchor
    parts: dict[str, list[tuple[Site, torch.Tensor, torch.Tensor | None]]] = {}
    for n, s in sites.items():
        v = views[n]
        pca = position_pca(v[:, pos].reshape(N, len(pos), dim))
        parts[n] = []
        for i, t in enumerate(pos):
            B = pca.basis(i, k, ablate_high_variance)
            if B.shape[1] == 0:
                continue  # the complement of the whole space: nothing to ablate
            site = Site(s.module, positions=[t], heads=s.heads, basis=B)
            table = v[:, t:t + 1] @ B
            anchor = pca.mean[i] @ B if center else None
            parts[n].append((site, table, anchor))
    pb, ps, differ = _pairs(d, pairs, seed)
    per_base = torch.zeros(N, T, dtype=torch.float64).index_add_(0, pb, differ.double())
    values = torch.full((len(names), len(scales)), float("nan"), dtype=torch.float64)
    by_base = list(range(len(scales))) if self_patch else [j for j, s in enumerate(scales) if s == 0.0]
    by_pair = [j for j in range(len(scales)) if j not in by_base]
    with _bar(len(names) * (len(by_base) * N + len(by_pair) * len(pb)), progress, "subspace_effects") as bar:
        if by_base:  # self-patch, or scale 0 (the source drops out): one row per base
            groups = [{site: Rescale(scales[j], anchor=anchor) for site, _, anchor in parts[n]}
                      for n in names for j in by_base]
            eff = _evaluate(d, _Rows(d.inputs, d.labels, per_base), groups, chunk_size, bar)
            values[:, by_base] = eff.view(len(names), len(by_base))
        if by_pair:
            groups = [{site: Rescale(scales[j], table=table, lookup=ps, anchor=anchor) for site, table, anchor
                       in parts[n]} for n in names for j in by_pair]
            eff = _evaluate(d, _Rows(d.inputs[pb], d.labels[pb], differ.double()), groups, chunk_size, bar)
            values[:, by_pair] = eff.view(len(names), len(by_pair))
    variant = f"{'self-patch' if self_patch else 'resample'}, {'top-' if ablate_high_variance else 'complement of '}" \
              f"{k} PCA directions{'' if center else ', uncentred'}"
    meta = {"method": "subspace_effects", "ablation": "self_patch" if self_patch else "resample", "k": k,
            "self_patch": self_patch, "ablate_high_variance": ablate_high_variance, "center": center,
            "positions": pos, "seed": int(seed), "metric": METRIC_PAIRS, "pairs": pairs, "n_pairs": int(len(pb)),
            "denominator": float(differ.sum()), "title": f"subspace ablation ({variant})"}
    return _result(d, names, scales, values, meta)
