"""What node ablations read: the model, inputs, labels and label positions; the nodes; the label-changing pairs.

>>> d = ablation_data(case, None, None, True, None, 5e-2)       # a case carries its inputs, labels, circuit
>>> base, source, differ = label_pairs(d, "all", seed=0)        # pairs whose labels differ somewhere
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch

from ..core import Model, Site
from ..errors import InputError, close_names
from ..loading import load
from ._circuit import Circuit, node_order


@dataclass
class AblationData:
    """The model and data of one sweep; ``valid`` marks the label positions the metric reads."""

    model: Model
    inputs: torch.Tensor      # (N, T) token ids
    labels: torch.Tensor      # (N, T): long (categorical) or float (numerical)
    valid: torch.Tensor       # (N, T) bool: the label positions
    predictions: torch.Tensor  # (N, T): the unablated model's predictions
    categorical: bool
    atol: float
    circuit: Circuit | None
    name: str | None
    ties: str = "no_prediction"

    def wrong(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """True where a prediction misses its label (argmax differs; numerical: ``|out - label| > atol``)."""
        if self.categorical:
            return pred != target
        return (pred - target).abs() > self.atol  # NaN labels (no label) compare False


def is_case(x: Any) -> bool:
    return all(hasattr(x, a) for a in ("model", "inputs", "labels", "circuit", "categorical"))


NO_PREDICTION = -2  # a tied maximum: equals no label (labels are >= 0, -1 where there is none)
#: outputs within this (relative, at least absolute) distance of the maximum tie with it: float32 noise such as
#: the ~1e-7 leak of a compiled head's attention past BOS must not pick an output id
TIE_RTOL = 1e-4


def predict(output: torch.Tensor, categorical: bool, ties: str = "no_prediction") -> torch.Tensor:
    """The prediction at every position: the argmax output id, or the single output of a numerical model.

    >>> predict(torch.tensor([[[0.0, 0.0, 0.0], [0.1, 2.0, 0.3]]]), True)
    tensor([[-2,  1]])

    ``ties="no_prediction"``: where several outputs share the maximum (an ablated output head leaves all
    logits 0), there is no prediction (``NO_PREDICTION``), which matches no label. Outputs within
    ``TIE_RTOL * max(1, |max|)`` of the maximum count as sharing it: a compiled head whose query was
    zeroed attends to BOS but leaks ~1e-7 onto the tokens, and that float32 noise is no prediction.
    ``ties="first"`` takes the first maximal id, as ``torch.argmax`` and InterpBench do; that makes a zeroed
    output "correct" whenever the label happens to be output id 0, an artefact of the vocabulary order.
    """
    if categorical:
        pred = output.argmax(-1)
        if ties == "no_prediction":
            top = output.max(-1, keepdim=True).values
            tol = TIE_RTOL * top.abs().clamp_min(1.0)
            tied = (output >= top - tol).sum(-1) > 1
            pred = torch.where(tied, torch.full_like(pred, NO_PREDICTION), pred)
        return pred
    if output.shape[-1] != 1:
        raise InputError(f"A numerical (categorical=False) model must have one output per position; this one has "
                         f"{output.shape[-1]}. Pass categorical=True for a classifier.")
    return output[..., 0]


def ablation_data(model_or_case: Any, inputs: Any, labels: Any, categorical: bool, circuit: Any,
                  atol: float, ties: str = "no_prediction") -> AblationData:
    """Model, inputs, labels (the case's, given, or the model's own predictions), label positions, circuit."""
    case = model_or_case if is_case(model_or_case) else None
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
    check_adapter(m)
    if ties not in ("no_prediction", "first"):
        raise InputError(f"ties must be 'no_prediction' or 'first', got {ties!r}.")
    run = m.run(inputs, metric=lambda y: predict(y, categorical, ties), keep_output=False, progress=False)
    preds = cast(torch.Tensor, run.metric).cpu()  # a metric was requested
    N, T = inputs.shape
    if labels is None:
        labels = preds.clone()
        valid = torch.ones(N, T, dtype=torch.bool)
        valid[:, 0] = False  # tracr's BOS position carries no label
        key_mask = getattr(m.module, "key_mask", None)  # compiled models: False at PAD
        mask = key_mask(inputs) if key_mask is not None else None
        if mask is not None:  # nor does padding
            valid &= mask.cpu()
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
    return AblationData(m, inputs, labels, valid, preds, categorical, float(atol), circuit, name, ties)


def check_scales(scales: Any) -> list[float]:
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


def check_adapter(m: Model) -> None:
    try:
        m.adapter.resolve(Site("layers.0.attn.result"))
    except Exception:
        raise InputError(f"Node ablations need per-head residual writes (site 'layers.i.attn.result'), which "
                         f"{m.name} ({m.adapter.kind}) does not have; use a compiled transformer "
                         f"(circuits.load_case, zoo.compiled).") from None


def node_sites(m: Model, nodes: Sequence[str] | None) -> dict[str, Site]:
    """``{node: site}``: a head's residual write (``layers.l.attn.result``, one head) or an MLP's output."""
    check_adapter(m)
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


def check_positions(positions: Any, T: int, default: list[int]) -> list[int]:
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


def label_pairs(d: AblationData, pairs: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
