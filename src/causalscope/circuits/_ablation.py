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

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..core import Site, input_setting
from ..errors import InputError, check_flag, check_seed
from ._ablation_inputs import (
    AblationData,
    ablation_data,
    check_positions,
    check_scales,
    is_case,
    label_pairs,
    node_sites,
)
from ._ablation_result import NodeEffects
from ._ablation_rows import (
    Rescale,
    Rows,
    effects_result,
    evaluate,
    miss_sums,
    progress_bar,
    site_view,
)
from ._circuit import Circuit
from ._pca import check_k, position_pca
from ._sharded import sharded_node_sums

Ablation = Literal["resample", "mean", "zero"]
DEFAULT_SCALES = (0.0, 0.1, 0.2, 0.5, 0.7, 0.8, 1.0, 1.2, 1.4, 2.0, 5.0, 10.0)

METRIC_PAIRS = ("fraction of (base, source, position) triples with different labels at a label position in which "
                "the ablated model's prediction differs from the base label")
METRIC_CORRECT = ("fraction of (base, position) label positions the model predicts correctly in which the "
                  "ablated model's prediction differs from the label")


# -- node effects --------------------------------------------------------------------------------------------------
def node_effects(model_or_case: Any, inputs: torch.Tensor | None = None, *, circuit: Circuit | None = None,
                 ablation: Ablation = "resample", scales: Sequence[float] = DEFAULT_SCALES,
                 nodes: Sequence[str] | None = None, pairs: int | str = "all", seed: int = 0, labels: Any = None,
                 categorical: bool = True, atol: float = 5e-2, ties: str = "no_prediction",
                 positions: Sequence[int] | None = None,
                 chunk_size: int | None = None, progress: bool | None = None, executor: Any = None,
                 out: str | os.PathLike[str] | None = None, shards: int | None = None) -> NodeEffects:
    """Causal effect of each node when its activation is replaced by a scaled source (InterpBench's sweep).

    >>> case = circuits.load_case("reverse")
    >>> r = circuits.node_effects(case)                              # resample, every (base, source) pair
    >>> r.table()                                                    # node, status, scale 0 .. scale 10
    >>> circuits.node_effects(case, ablation="mean", scales=[0, 1])
    >>> circuits.node_effects(net, tokens, circuit=c, pairs=2000)   # any compiled model, a seeded sample
    >>> circuits.node_effects(case, executor=cs.RayExecutor(workers=4), out="runs/reverse")   # pairs in shards

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

    A prediction is the argmax output id (``ties="no_prediction"``, the default: a tied maximum, e.g. the
    all-zero logits of an ablated output head, is no prediction and misses every label; ``ties="first"``
    takes torch's first maximal id as InterpBench does); for a numerical model (``categorical=False``) the
    output, and it differs from a label when ``|out - label| > atol``. Labels: the case's, or ``labels``
    (N, T; -1 / NaN where there is none), or by default the model's own predictions on ``inputs`` at every
    position but 0 (tracr's BOS) and the model's PAD positions. Effects are pooled over all triples
    (InterpBench averages per-batch ratios of 256, a different weighting of the same counts). ``circuit``
    (default: the case's) marks each node ``in_circuit`` / ``not_in_circuit``. Every (node, scale, pair) is one
    engine row; the model is not changed.

    ``executor=causalscope.RayExecutor(workers=N)`` (or ``shards=`` / ``out=`` in process) spreads the pairs
    (mean / zero: the base inputs) over workers in shards, checkpointed in ``out``. The pairs (and the means of
    a mean ablation, over *all* inputs) are fixed here first, each shard counts its misses, and the counts are
    added here and divided once, as in one process: the effects are the same for any number of shards or
    workers. ``meta["executor"]`` says what ran.
    """
    if ablation not in ("resample", "mean", "zero"):
        raise InputError(f"ablation must be 'resample', 'mean' or 'zero', got {ablation!r}.")
    scales = check_scales(scales)
    seed = check_seed(seed)
    categorical = check_flag(categorical, "categorical")
    d = ablation_data(model_or_case, inputs, labels, categorical, circuit, atol, ties)
    sites = node_sites(d.model, nodes)
    N, T = d.inputs.shape
    pos = check_positions(positions, T, list(range(T)))
    if pos != list(range(T)):
        sites = {n: s.at(pos) for n, s in sites.items()}
    names = list(sites)
    meta: dict[str, Any] = {"method": "node_effects", "ablation": ablation, "positions": pos, "seed": int(seed),
                            "scales": list(scales), "nodes": names, "ties": ties, "chunk_size": chunk_size,
                            "pairs": pairs if ablation == "resample" else None,
                            "inputs": "the case's inputs" if inputs is None else input_setting(inputs),
                            "labels": "given" if labels is not None else "the case's (or the model's own)",
                            "circuit": "given" if circuit is not None else "the case's",
                            "title": f"{ablation} ablation, scaled"}
    means = None
    if ablation == "mean":  # the mean over *all* inputs, whatever runs the rows
        clean = d.model.run(d.inputs, cache=list(sites.values()), keep_output=False, progress=False)
        means = {n: site_view(clean, s).mean(0, keepdim=True) for n, s in sites.items()}
    if ablation == "resample":
        pb, ps, differ = label_pairs(d, pairs, seed)
        items = torch.stack([pb, ps], 1)
        total = float(differ.double().sum())
        meta.update(metric=METRIC_PAIRS, pairs=pairs, n_pairs=int(len(pb)), denominator=total)
    else:
        items = torch.arange(N)
        total = float(correct_weights(d).sum())
        meta.update(metric=METRIC_CORRECT, denominator=total)
    if executor is not None or out is not None or shards is not None:
        source = model_or_case.model if is_case(model_or_case) else model_or_case
        sums, meta["executor"] = sharded_node_sums(d, source, ablation, names, pos, scales, items, means, chunk_size,
                                                   progress, executor, out, shards, sums=node_sums)
    else:
        with progress_bar(node_rows(ablation, len(names), scales, items), progress, "node_effects") as bar:
            sums = node_sums(d, sites, ablation, scales, items, means, chunk_size, bar)
    return effects_result(d, names, scales, node_values(ablation, sums, total, len(names), scales), meta)


def correct_weights(d: AblationData) -> torch.Tensor:
    """(N, T) 1.0 at the label positions the unablated model predicts correctly (mean / zero ablation's rows).

    >>> correct_weights(d).sum()          # the denominator of a mean / zero ablation
    """
    return (d.valid & ~d.wrong(d.predictions, d.labels)).double()


def _zero_scales(scales: Sequence[float]) -> tuple[list[int], list[int]]:
    """The indices of scale 0 (the source drops out) and of the other scales."""
    return [j for j, s in enumerate(scales) if s == 0.0], [j for j, s in enumerate(scales) if s != 0.0]


def node_rows(ablation: str, n_nodes: int, scales: Sequence[float], items: torch.Tensor) -> int:
    """How many engine rows :func:`node_sums` runs for ``items`` (a progress bar's total).

    >>> node_rows("zero", 3, [0.0], torch.arange(10))
    30
    """
    if ablation == "zero":
        return n_nodes * len(items)
    if ablation == "mean":
        return n_nodes * len(scales) * len(items)
    zero_j, rest = _zero_scales(scales)
    return n_nodes * (len(zero_j) * len(items[:, 0].unique()) + len(rest) * len(items))


def node_sums(d: AblationData, sites: dict[str, Site], ablation: str, scales: Sequence[float], items: torch.Tensor,
              means: dict[str, torch.Tensor] | None, chunk_size: int | None, bar: Any) -> dict[str, torch.Tensor]:
    """Per (node[, scale]): the summed weight of the label positions where the ablated prediction misses, over
    ``items``: base input indices (N',) for mean / zero, (base, source) pairs (P', 2) for resample.

    >>> sums = node_sums(d, sites, "resample", scales, pairs, None, None, bar)     # {"zero": (n,), "rest": (n*k,)}

    A sum over the items: the sums over disjoint sets of items add up to the sum over all of them (exactly:
    every weight is a count). ``means`` (per node, over *all* inputs) feed a mean ablation. A resample pair reads
    its source's activation from a clean run over the sources among ``items`` alone; at scale 0 the source drops
    out, so each base among ``items`` runs once, weighted by its number of differing sources there.
    """
    if ablation in ("zero", "mean"):
        rows = Rows(d.inputs[items], d.labels[items], correct_weights(d)[items])
        if ablation == "zero":
            groups = [{s: Rescale(0.0)} for s in sites.values()]
        else:
            assert means is not None, "a mean ablation reads the means over all inputs"
            groups = [{s: Rescale(sc, table=means[n])} for n, s in sites.items() for sc in scales]
        return {"all": miss_sums(d, rows, groups, chunk_size, bar)}
    pb, ps = items[:, 0], items[:, 1]
    differ = (d.labels[pb] != d.labels[ps]) & d.valid[pb] & d.valid[ps]
    zero_j, rest = _zero_scales(scales)
    out = {}
    if zero_j:  # scale 0: one row per base, weighted by its differing sources
        bases, at = pb.unique(return_inverse=True)
        per_base = torch.zeros(len(bases), d.inputs.shape[1], dtype=torch.float64).index_add_(0, at, differ.double())
        out["zero"] = miss_sums(d, Rows(d.inputs[bases], d.labels[bases], per_base),
                                [{s: Rescale(0.0)} for s in sites.values()], chunk_size, bar)
    if rest:
        sources, lookup = ps.unique(return_inverse=True)
        clean = d.model.run(d.inputs[sources], cache=list(sites.values()), keep_output=False, progress=False)
        groups = [{s: Rescale(scales[j], table=site_view(clean, s), lookup=lookup)}
                  for s in sites.values() for j in rest]
        out["rest"] = miss_sums(d, Rows(d.inputs[pb], d.labels[pb], differ.double()), groups, chunk_size, bar)
    return out


def node_values(ablation: str, sums: dict[str, torch.Tensor], total: float, n_nodes: int,
                scales: Sequence[float]) -> torch.Tensor:
    """The effects (node, scale) from :func:`node_sums` over all items: each sum divided once by ``total`` (the
    weight of every row: label positions, or differing (base, source, position) triples); NaN when it is 0.

    >>> node_values("zero", {"all": torch.tensor([2.0, 0.0])}, 4.0, 2, [0.0, 1.0])[:, 0]
    tensor([0.5000, 0.0000], dtype=torch.float64)
    """
    values = torch.full((n_nodes, len(scales)), float("nan"), dtype=torch.float64)

    def effect(x: torch.Tensor) -> torch.Tensor:
        return x.double() / total if total > 0 else torch.full_like(x, float("nan"), dtype=torch.float64)

    if ablation == "zero":
        values[:] = effect(sums["all"])[:, None]
    elif ablation == "mean":
        values[:] = effect(sums["all"]).view(n_nodes, len(scales))
    else:
        zero_j, rest = _zero_scales(scales)
        if zero_j:
            values[:, zero_j] = effect(sums["zero"])[:, None]
        if rest:
            values[:, rest] = effect(sums["rest"]).view(n_nodes, len(rest))
    return values


# -- PCA-subspace effects ------------------------------------------------------------------------------------------
def subspace_effects(model_or_case: Any, inputs: torch.Tensor | None = None, *, circuit: Circuit | None = None,
                     k: int = 2, self_patch: bool = False, ablate_high_variance: bool = True, center: bool = True,
                     scales: Sequence[float] = DEFAULT_SCALES, nodes: Sequence[str] | None = None,
                     pairs: int | str = "all", seed: int = 0, labels: Any = None, categorical: bool = True,
                     atol: float = 5e-2, ties: str = "no_prediction", positions: Sequence[int] | None = None,
                     chunk_size: int | None = None,
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
    scales = check_scales(scales)
    seed = check_seed(seed)
    categorical = check_flag(categorical, "categorical")
    d = ablation_data(model_or_case, inputs, labels, categorical, circuit, atol, ties)
    sites = node_sites(d.model, nodes)
    N, T = d.inputs.shape
    pos = check_positions(positions, T, list(range(1, T)) if T > 1 else [0])
    names = list(sites)
    clean = d.model.run(d.inputs, cache=list(sites.values()), keep_output=False, progress=False)
    views = {n: site_view(clean, s) for n, s in sites.items()}
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
    pb, ps, differ = label_pairs(d, pairs, seed)
    per_base = torch.zeros(N, T, dtype=torch.float64).index_add_(0, pb, differ.double())
    values = torch.full((len(names), len(scales)), float("nan"), dtype=torch.float64)
    by_base = list(range(len(scales))) if self_patch else [j for j, s in enumerate(scales) if s == 0.0]
    by_pair = [j for j in range(len(scales)) if j not in by_base]
    with progress_bar(len(names) * (len(by_base) * N + len(by_pair) * len(pb)), progress, "subspace_effects") as bar:
        if by_base:  # self-patch, or scale 0 (the source drops out): one row per base
            groups = [{site: Rescale(scales[j], anchor=anchor) for site, _, anchor in parts[n]}
                      for n in names for j in by_base]
            eff = evaluate(d, Rows(d.inputs, d.labels, per_base), groups, chunk_size, bar)
            values[:, by_base] = eff.view(len(names), len(by_base))
        if by_pair:
            groups = [{site: Rescale(scales[j], table=table, lookup=ps, anchor=anchor) for site, table, anchor
                       in parts[n]} for n in names for j in by_pair]
            eff = evaluate(d, Rows(d.inputs[pb], d.labels[pb], differ.double()), groups, chunk_size, bar)
            values[:, by_pair] = eff.view(len(names), len(by_pair))
    variant = f"{'self-patch' if self_patch else 'resample'}, {'top-' if ablate_high_variance else 'complement of '}" \
              f"{k} PCA directions{'' if center else ', uncentred'}"
    meta = {"method": "subspace_effects", "ablation": "self_patch" if self_patch else "resample", "k": k,
            "self_patch": self_patch, "ablate_high_variance": ablate_high_variance, "center": center,
            "positions": pos, "seed": int(seed), "metric": METRIC_PAIRS, "pairs": pairs, "n_pairs": int(len(pb)),
            "denominator": float(differ.sum()), "title": f"subspace ablation ({variant})",
            "scales": list(scales), "nodes": names, "ties": ties, "chunk_size": chunk_size, "atol": atol,
            "categorical": categorical,
            "inputs": "the case's inputs" if inputs is None else input_setting(inputs),
            "labels": "given" if labels is not None else "the case's (or the model's own)",
            "circuit": "given" if circuit is not None else "the case's"}
    return effects_result(d, names, scales, values, meta)
