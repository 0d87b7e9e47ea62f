"""The rows of a node-ablation sweep: the scaling intervention, the metric, and the batched engine calls.

>>> groups = [{site: Rescale(0.5, table=acts, lookup=sources)}]     # one group of edits per (node, scale)
>>> effects = evaluate(d, Rows(inputs, labels, weights), groups, chunk_size=None, bar=progress_bar(n, None, "x"))
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch

from ..core import ApplyContext, Intervention, Site, tqdm
from ._ablation_inputs import AblationData, predict
from ._ablation_result import NodeEffects
from ._circuit import Circuit

#: most rows per engine call (the engine chunks each call into passes; this bounds the plan's memory)
MAX_ROWS_PER_CALL = 1 << 18


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


@dataclass
class Rows:
    """One plan row per (group, r): input ``inputs[r]``; the metric counts ``weight[r, t]`` where the
    prediction misses ``target[r, t]``."""

    inputs: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor


def evaluate(d: AblationData, rows: Rows, groups: list[dict], chunk_size: int | None, bar: Any) -> torch.Tensor:
    """Effect of each group of edits: sum of weights where the prediction misses, over the total weight."""
    total = float(rows.weight.sum())
    eff = miss_sums(d, rows, groups, chunk_size, bar)
    return eff / total if total > 0 else torch.full_like(eff, float("nan"))


def miss_sums(d: AblationData, rows: Rows, groups: list[dict], chunk_size: int | None, bar: Any) -> torch.Tensor:
    """Per group of edits: the sum of ``rows.weight`` where the ablated prediction misses ``rows.target``.

    >>> miss_sums(d, Rows(inputs, labels, weights), [{site: Rescale(0.0)}], None, bar)   # one sum per group
    """
    R = rows.inputs.shape[0]

    def metric(y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        miss = d.wrong(predict(y, d.categorical, d.ties), rows.target[idx].to(y.device))
        return (miss.double() * rows.weight[idx].to(y.device)).sum(-1)

    metric.takes_input_index = True  # type: ignore[attr-defined]
    per_call = max(1, MAX_ROWS_PER_CALL // max(1, R))
    out = []
    for g0 in range(0, len(groups), per_call):
        part = groups[g0:g0 + per_call]
        edits = list(itertools.chain.from_iterable([g] * R for g in part))
        run = d.model.run(rows.inputs, edits, input_index=list(range(R)) * len(part), metric=metric,
                          keep_output=False, chunk_size=chunk_size, progress=False)
        assert run.metric is not None  # a metric was passed, so every run returns its values
        out.append(run.metric.cpu().view(len(part), R).sum(1))
        bar.update(len(part) * R)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def progress_bar(n_rows: int, progress: bool | None, desc: str) -> Any:
    """A row-counting bar, shown for sweeps of more than 200k rows unless ``progress`` says otherwise."""
    show = progress if progress is not None else n_rows > 200_000
    return tqdm(total=n_rows, desc=desc, unit="row", disable=not show)


def node_status(nodes: list[str], circuit: Circuit | None) -> list[str]:
    """``in_circuit`` / ``not_in_circuit`` per node (``unknown`` without a circuit)."""
    if circuit is None:
        return ["unknown"] * len(nodes)
    inside = set(circuit.nodes)
    return ["in_circuit" if n in inside else "not_in_circuit" for n in nodes]


def effects_result(d: AblationData, nodes: list[str], scales: list[float], values: torch.Tensor,
                   meta: dict) -> NodeEffects:
    """The result object, with the data's settings and each node's status added to ``meta``."""
    meta = {"model": d.model.name, "case": d.name, "n_inputs": int(d.inputs.shape[0]), "categorical": d.categorical,
            "atol": d.atol, "status": node_status(nodes, d.circuit), **meta}
    return NodeEffects(values, ("node", "scale"), {"node": nodes, "scale": scales}, meta, name="causal effect")


def site_view(run: Any, site: Site) -> torch.Tensor:
    """A node's cached activation (N, T, [1,] d) as the engine selects it (heads keep their dim)."""
    return run.cache[site.name]
