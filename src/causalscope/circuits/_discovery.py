"""Circuit discovery on a model's computational graph: shared setup, metrics, exact node and edge patching.

>>> r = circuits.node_patching(case)                       # a shipped case: its inputs, labels, positions
>>> r = circuits.discover(model, tokens, method="eap")     # any model with graph parts, any inputs
>>> r.circuit(k=10)

Every method takes clean inputs, corrupted inputs (default: a seeded resample of the clean rows, no row
paired with itself; or ``"zero"`` / ``"mean"``: every node's corrupted output is zero, or its mean over the
inputs at that position) and a metric of the logits, and returns :class:`CircuitScores`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core import input_setting, position_list, takes_lengths
from ..errors import InputError, check_flag, check_seed
from ._cases import labelled
from ._discovery_result import CircuitScores
from ._graph import ComputeGraph, GraphOutputs

METRICS = ("logprob", "kl", "mse", "output")
#: corruptions by name: a seeded resample of the inputs (the default), every sender's output set to zero, or
#: to its mean over the inputs (per position)
ABLATIONS = ("resample", "zero", "mean")


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    """``x.log_softmax(-1)`` as ``x - max - log(sum(exp(x - max)))``: the same to a few ulps, and about 3x
    faster on CPU for the short last dimensions of graph outputs (torch's kernel is slow below ~16 classes).

    >>> torch.allclose(log_softmax(torch.randn(4, 6)), torch.randn(4, 6).log_softmax(-1))   # doctest: +SKIP
    """
    y = x - x.amax(-1, keepdim=True)
    return y - y.exp().sum(-1, keepdim=True).log()


class GraphMetric:
    """A metric of the logits, vectorised over leading configuration dims: (..., rows, T, V) -> (..., rows).

    >>> m = GraphMetric("kl", clean_logits=clean, positions=[1, 2, 3])
    >>> m(logits).mean(-1)                  # one value per configuration

    Built-ins (read at ``positions`` only, averaged over those that are ``valid`` in each row: not padding,
    not an unlabelled position): ``"logprob"``: log-probability of each row's
    label (higher is better); ``"kl"``: KL(clean || patched) of the output distribution (lower is better);
    ``"mse"``: minus the squared error to the clean output (numerical outputs; higher is better);
    ``"output"``: the output value itself (numerical). A callable ``f(logits (rows, T, V)) -> (rows,)`` is
    taken as is (``higher_is_better`` says which way is better; the default is True).
    """

    def __init__(self, kind: str | Callable[..., torch.Tensor], *, clean_logits: torch.Tensor,
                 positions: Sequence[int], labels: torch.Tensor | None = None,
                 higher_is_better: bool | None = None, valid: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None, strict: bool = True) -> None:
        self.positions = torch.as_tensor(list(positions), dtype=torch.long)
        rows, T = clean_logits.shape[0], clean_logits.shape[-2]
        self.lengths = lengths
        # per row, the position each metric slot reads: negative positions count back from the row's own last
        # token (prompts of different lengths); slots outside a shorter row are its padding (weight 0), which
        # only the default positions may have (``strict=False``)
        if lengths is None:
            index = (self.positions % T).expand(rows, -1)
            inside = torch.ones(rows, len(self.positions), dtype=torch.bool)
        else:
            L = lengths.cpu()[:, None]
            index = torch.where(self.positions < 0, self.positions + L, self.positions)
            inside = (index >= 0) & (index < L)
            if strict and not bool(inside.all()):
                r = int((~inside).any(1).nonzero()[0, 0])
                raise InputError(f"Metric positions {self.positions.tolist()} lie outside prompt {r} of "
                                 f"{int(L[r, 0])} tokens; give positions every prompt has (negative ones count back "
                                 f"from each prompt's own last token).")
            index = index.clamp(0, T - 1)
        self._rows = torch.arange(rows)[:, None].to(clean_logits.device)
        self._index = index.to(clean_logits.device)
        # one length: the same positions in every row, read with one index (cheaper than a per-row gather)
        self._shared = None if lengths is not None else (self.positions % T).to(clean_logits.device)
        # per row, the weight of each metric position: 1 / (the row's valid positions), 0 at padding
        w = inside.to(torch.float64)
        if valid is not None:
            w = w * valid.cpu().gather(1, index).to(torch.float64)
        self._w = (w / w.sum(-1, keepdim=True).clamp_min(1.0)).to(clean_logits.device)
        if callable(kind):
            if lengths is not None and not takes_lengths(kind):
                raise InputError(f"The prompts have different lengths {sorted(set(lengths.tolist()))}, so the logits "
                                 f"are padded on the right and a metric that reads positions would read padding: give "
                                 f"it a `lengths` parameter, def metric(logits, lengths): ... (each row's real "
                                 f"length), or use a built-in metric ({', '.join(METRICS)}).")
            self.name = getattr(kind, "__name__", repr(kind))
            self._user: Callable[..., torch.Tensor] | None = kind
            self.higher_is_better = True if higher_is_better is None else bool(higher_is_better)
            return
        if kind not in METRICS:
            raise InputError(f"Unknown metric {kind!r}: use one of {', '.join(METRICS)} or a callable "
                             f"logits (rows, T, V) -> (rows,).")
        self.name, self._user = kind, None
        self.higher_is_better = kind != "kl" if higher_is_better is None else bool(higher_is_better)
        at = self._at(clean_logits).double().clone()  # a normal tensor (runs give inference tensors)
        self._clean_logp = log_softmax(at)
        self._clean_p = self._clean_logp.exp()
        self._clean_out = at
        if kind == "logprob":
            if labels is None:
                labels = clean_logits.argmax(-1)
            lab = labels.to(clean_logits.device).gather(1, self._index)
            lab = torch.where(self._w > 0, lab, torch.zeros_like(lab))  # padding: any id, weight 0
            if bool((lab < 0).any()) or bool((lab >= clean_logits.shape[-1]).any()):
                raise InputError(f"Labels at the metric positions {self.positions.tolist()} must be output ids in "
                                 f"[0, {clean_logits.shape[-1]}); some are not (position 0 is BOS: leave it out).")
            self._labels = lab.long()

    def _at(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., rows, T, V) -> (..., rows, positions, V): each row's metric positions."""
        if self._shared is not None:
            return logits[..., self._shared.to(logits.device), :]
        return logits[..., self._rows.to(logits.device), self._index.to(logits.device), :]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self._user is not None:
            lead = logits.shape[:-3]
            flat = logits.reshape(-1, *logits.shape[-3:])
            kw = {} if self.lengths is None else {"lengths": self.lengths.to(logits.device)}
            vals = torch.stack([torch.as_tensor(self._user(x, **kw)).reshape(-1).expand(x.shape[0]) for x in flat])
            return vals.reshape(*lead, logits.shape[-3])
        at = self._at(logits).double()
        w = self._w.to(at.device)
        if self.name == "logprob":
            lab = self._labels.to(at.device).expand(*at.shape[:-1])
            return (log_softmax(at).gather(-1, lab[..., None])[..., 0] * w).sum(-1)
        if self.name == "kl":
            return ((self._clean_p * (self._clean_logp - log_softmax(at))).sum(-1) * w).sum(-1)
        if self.name == "mse":
            return -(((at - self._clean_out) ** 2).mean(-1) * w).sum(-1)
        return (at.mean(-1) * w).sum(-1)  # output

    def worse(self, new: torch.Tensor, old: torch.Tensor | float) -> torch.Tensor:
        """How much worse ``new`` is than ``old`` (positive: worse)."""
        return (old - new) if self.higher_is_better else (new - old)

    def __repr__(self) -> str:
        return self.name


@dataclass
class Setup:
    """Everything a method needs: the graph, both runs, the metric and the settings to record."""

    graph: ComputeGraph
    clean: GraphOutputs
    corrupted: GraphOutputs
    metric: GraphMetric
    meta: dict[str, Any] = field(default_factory=dict)

    def value(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean metric over rows, per configuration: (C, rows, T, V) -> (C,)."""
        return self.metric(logits).mean(-1)

    def result(self, scores: torch.Tensor, level: str, method: str, **extra: Any) -> CircuitScores:
        g = self.graph
        names = g.edge_names() if level == "edge" else list(g.senders)
        meta = {"method": method, **self.meta, "nodes": g.nodes, **extra}
        return CircuitScores(scores.double().cpu(), (level,), {level: names}, meta, name=f"{method} score")


def _is_case(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("model", "inputs", "circuit"))


def resample(tokens: torch.Tensor, seed: int = 0, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """A seeded reordering of the rows in which no row is paired with itself (for more than one row); with
    ``lengths`` (prompts of different lengths), each row is paired with another of its own length.

    >>> resample(torch.arange(4)[:, None], seed=0).ravel().tolist()   # a permutation, no fixed points
    """
    return tokens[resample_rows(tokens.shape[0], seed, lengths)]


def resample_rows(n: int, seed: int = 0, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The source row of each row in :func:`resample` (one cycle per length group, so no fixed points).

    >>> resample_rows(4, seed=0, lengths=torch.tensor([3, 5, 3, 5])).tolist()   # rows 0 <-> 2, 1 <-> 3
    [2, 3, 0, 1]
    """
    g = torch.Generator().manual_seed(check_seed(seed))
    groups = [torch.arange(n)] if lengths is None else [
        (lengths.cpu() == v).nonzero()[:, 0] for v in sorted(set(lengths.tolist()))]
    src = torch.empty(n, dtype=torch.long)
    for rows in groups:
        if len(rows) == 1 and lengths is not None:
            raise InputError(f"A resampled corruption pairs each prompt with another of its own length, but prompt "
                             f"{int(rows[0])} is the only one of {int(lengths[rows[0]])} tokens; give corrupted= "
                             f"inputs (one per clean prompt, of its length) or more prompts of that length.")
        perm = rows[torch.randperm(len(rows), generator=g)]
        src[perm] = perm.roll(-1)  # row perm[i] takes row perm[i + 1]: one cycle, so no fixed points
    return src


def _masked_mean(senders: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Every sender's mean output over the inputs at each position: (rows, T, S, d) -> (1, T, S, d); with
    ``lengths``, over the prompts that have the position (padding left out)."""
    if lengths is None:
        return senders.mean(0, keepdim=True)
    real = (torch.arange(senders.shape[1])[None] < lengths.cpu()[:, None]).to(senders)
    total = (senders * real[:, :, None, None]).sum(0, keepdim=True)
    return total / real.sum(0).clamp_min(1.0)[None, :, None, None]


@dataclass
class Arguments:
    """A discovery method's arguments with a case unpacked: its model, inputs, labels, positions and kind."""

    model: Any
    clean: Any
    labels: Any
    positions: list[int] | None
    categorical: bool | None
    seed: int
    given_case: bool
    clean_given: Any
    labels_given: Any


def resolve_arguments(model: Any, clean: Any, labels: Any, positions: Any, categorical: Any, seed: Any) -> Arguments:
    """Unpack a case (its model, inputs, labels, label positions, output kind) and check the plain settings.

    >>> a = resolve_arguments(circuits.load_case("reverse"), None, None, None, None, 0)
    >>> a.clean.shape == a.labels.shape
    True
    """
    given_case, clean_given, labels_given = _is_case(model), clean, labels
    if given_case:
        case = model
        model = case.model
        if clean is None:
            clean = case.inputs
            labels = case.labels if labels is None else labels
        positions = list(case.label_positions) if positions is None else positions
        categorical = bool(case.categorical) if categorical is None else categorical
    seed = check_seed(seed)
    if categorical is not None:
        categorical = check_flag(categorical, "categorical")
    if positions is not None:
        positions = position_list(positions)
    return Arguments(model, clean, labels, positions, categorical, seed, given_case, clean_given, labels_given)


def setup(model: Any, clean: Any = None, corrupted: Any = None, *, metric: Any = None, labels: Any = None,
          positions: Sequence[int] | None = None, categorical: bool | None = None, seed: int = 0,
          default_metric: dict[bool, str], higher_is_better: bool | None = None) -> Setup:
    """Resolve a method's arguments (a case, or a model + inputs) into a :class:`Setup`.

    Prompts of different lengths (on graphs with causal attention): each corrupted prompt has its clean
    prompt's length (a resample pairs prompts of equal length), and the metric reads each row's own positions
    (default: every real position after the first; negative positions count back from each row's last)."""
    args = resolve_arguments(model, clean, labels, positions, categorical, seed)
    model, clean, labels, positions = args.model, args.clean, args.labels, args.positions
    categorical, seed = args.categorical, args.seed
    given_case, clean_given, labels_given = args.given_case, args.clean_given, args.labels_given
    graph = model if isinstance(model, ComputeGraph) else ComputeGraph(model)
    if clean is None:
        raise InputError("No clean inputs: pass token ids (rows, positions), or a case from circuits.load_case.")
    clean_t, lengths = graph._tokens_and_lengths(clean)
    ablation = corrupted if isinstance(corrupted, str) else None
    if ablation is not None and ablation not in ABLATIONS:
        raise InputError(f"Unknown corruption {ablation!r}: give corrupted token ids or one of {', '.join(ABLATIONS)}.")
    if corrupted is None or ablation is not None:
        if clean_t.shape[0] < 2 and ablation in (None, "resample"):
            raise InputError("A resampled corruption needs at least 2 input rows; pass corrupted= inputs.")
        resampled = clean_t.shape[0] > 1 and ablation in (None, "resample")
        corr_t = resample(clean_t, seed, lengths) if resampled else clean_t
    else:
        corr_t, corr_len = graph._tokens_and_lengths(corrupted)
        if corr_t.shape[0] != clean_t.shape[0]:
            raise InputError(f"{corr_t.shape[0]} corrupted inputs for {clean_t.shape[0]} clean ones: give one "
                             f"corrupted row per clean row, of the same length.")
        T, Tc = clean_t.shape[1], corr_t.shape[1]
        a = lengths if lengths is not None else torch.full((clean_t.shape[0],), T)
        b = corr_len if corr_len is not None else torch.full((corr_t.shape[0],), Tc)
        if not torch.equal(a, b):
            i = int((a != b).nonzero()[0, 0])
            raise InputError(f"Corrupted prompt {i} has {int(b[i])} tokens and its clean prompt {int(a[i])}: give "
                             f"one corrupted row per clean row, of the same length (inputs shaped "
                             f"{tuple(corr_t.shape)} vs {tuple(clean_t.shape)}).")
    T = clean_t.shape[1]
    default = positions is None
    positions = list(range(1, T)) if positions is None else [int(p) for p in positions]
    if not positions or any(p < -T or p >= T for p in positions):
        raise InputError(f"Metric positions {positions} must be non-empty and lie in [0, {T}).")
    c_out, x_out = graph.outputs_of(clean_t, lengths), graph.outputs_of(corr_t, lengths)
    if ablation in ("zero", "mean"):
        fill = (torch.zeros_like(c_out.senders) if ablation == "zero"
                else _masked_mean(c_out.senders, lengths).expand_as(c_out.senders).clone())
        x_out = GraphOutputs(clean_t, fill, c_out.logits, c_out.key_mask, lengths)
        x_out.logits = graph.run(torch.ones(1, len(graph.edges)), c_out, x_out)[0]
    if categorical is None:
        categorical = c_out.logits.shape[-1] > 1
    kind = metric if metric is not None else default_metric[bool(categorical)]
    lab = None
    if labels is not None and kind == "logprob":
        lab = torch.as_tensor(labels)
        if lab.shape != clean_t.shape:
            raise InputError(f"labels have shape {tuple(lab.shape)}; expected one per input token "
                             f"{tuple(clean_t.shape)}.")
    valid = _label_mask(labels, c_out)
    gm = GraphMetric(kind, clean_logits=c_out.logits, positions=positions, labels=lab,
                     higher_is_better=higher_is_better, valid=valid, lengths=lengths, strict=not default)
    meta = {"model": graph.model.name, "metric": gm.name, "higher_is_better": gm.higher_is_better,
            "positions": positions, "n_inputs": int(clean_t.shape[0]), "seed": seed,
            "clean": "the case's inputs" if given_case and clean_given is None else input_setting(clean),
            "labels": None if labels is None else ("the case's labels" if given_case and labels_given is None
                                                   else "given"),
            "categorical": bool(categorical),
            "corrupted": ablation or ("resample" if corrupted is None else "given"), "n_edges": len(graph.edges),
            "parallel_mlp": graph.parallel_mlp}
    if lengths is not None:
        meta["lengths"] = {int(v): int((lengths == v).sum()) for v in sorted(set(lengths.tolist()))}
    s = Setup(graph, c_out, x_out, gm, meta)
    m_clean = float(s.value(c_out.logits[None])[0])
    m_corr = float(s.value(x_out.logits[None])[0])
    s.meta.update(clean_metric=m_clean, corrupted_metric=m_corr)
    return s


def _label_mask(labels: Any, clean: GraphOutputs) -> torch.Tensor | None:
    """(rows, T) bool: where the metric reads: not padding, and where labels are given, not -1 / NaN."""
    valid = clean.key_mask.cpu() if clean.key_mask is not None else None
    if labels is not None:
        lab = torch.as_tensor(labels).cpu()
        if lab.shape == clean.tokens.shape:
            has = labelled(lab)
            valid = has if valid is None else valid & has
    return valid


_EXACT_DEFAULT = {True: "kl", False: "mse"}


def _patched_values(s: Setup, patch: torch.Tensor, progress: bool | None) -> torch.Tensor:
    """Metric (mean over rows) of each configuration of ``patch``, batched, with a progress bar over chunks."""
    from ..core import tqdm

    N = s.clean.tokens.shape[0]
    per = max(1, 4096 // max(1, N))
    starts = range(0, patch.shape[0], per)
    show = progress if progress is not None else len(starts) > 20
    bar = tqdm(starts, desc="patching", unit="chunk", disable=not show)
    return torch.cat([s.value(s.graph.run(patch[i:i + per], s.clean, s.corrupted)) for i in bar])


def node_patching(model: Any, clean: Any = None, corrupted: Any = None, *, metric: Any = None, labels: Any = None,
                  positions: Sequence[int] | None = None, categorical: bool | None = None, seed: int = 0,
                  progress: bool | None = None) -> CircuitScores:
    """Exact node patching: each node's output replaced by its corrupted-run output, one row group per node.

    >>> r = circuits.node_patching(case)       # default metric: KL to the clean output (categorical), else MSE
    >>> r.top(5)

    Score of node ``n``: ``metric(n patched) - metric(clean)``, averaged over inputs (all edges out of ``n``
    carry the corrupted value; downstream nodes recompute). Cost: one batched pass over the graph per node
    (rows = nodes x inputs), starting at each node's layer.
    """
    s = setup(model, clean, corrupted, metric=metric, labels=labels, positions=positions, categorical=categorical,
              seed=seed, default_metric=_EXACT_DEFAULT)
    g = s.graph
    patch = (g.edge_sender[None, :] == torch.arange(len(g.senders))[:, None]).double()
    vals = _patched_values(s, patch, progress)
    return s.result(vals - s.meta["clean_metric"], "node", "node_patching")


def edge_patching(model: Any, clean: Any = None, corrupted: Any = None, *, metric: Any = None, labels: Any = None,
                  positions: Sequence[int] | None = None, categorical: bool | None = None, seed: int = 0,
                  progress: bool | None = None) -> CircuitScores:
    """Exact edge patching: each edge alone carries the corrupted sender output (the reference EAP estimates).

    >>> exact = circuits.edge_patching(case); eap = circuits.edge_attribution_patching(case)

    Score of edge ``e``: ``metric(e patched) - metric(clean)``, averaged over inputs. Cost: one configuration
    per edge, batched, each run from the edge's receiver on.
    """
    s = setup(model, clean, corrupted, metric=metric, labels=labels, positions=positions, categorical=categorical,
              seed=seed, default_metric=_EXACT_DEFAULT)
    patch = torch.eye(len(s.graph.edges), dtype=torch.float64)
    vals = _patched_values(s, patch, progress)
    return s.result(vals - s.meta["clean_metric"], "edge", "edge_patching")
