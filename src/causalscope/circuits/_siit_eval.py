"""How well a SIIT-trained model implements its case, measured through the engine: agreement with the compiled
(HL) model, interchange-intervention accuracy (IIA) at every aligned node, and the seed's node effects.

>>> t = circuits.load_siit("frac-prevs")
>>> r = circuits.evaluate_siit(t)                 # on the held-out inputs the model was not trained on
>>> r["accuracy"], r["iia"], r["node_effects"]["a1.h0"]["0.0"]
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from ..core import Patch
from ..loading import load
from ._ablation import DEFAULT_SCALES, node_effects
from ._ablation_inputs import NO_PREDICTION, node_sites, predict
from ._cases import Case, load_case, split_inputs


class Trained(Protocol):
    """What the evaluation reads of a trained model (``circuits.SIITModel``)."""

    name: str
    model: Any
    correspondence: dict[str, str]
    record: dict[str, Any]

ATOL = 5e-2  # a numerical output agrees when within this (node_effects' default tolerance)
MAX_PAIRS = 100_000  # every held-out pair of every shipped case (ib3-frac-prevs: 273^2)


def label_mask(tokens: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """Positions that carry an output: not position 0 (BOS), not PAD."""
    m = torch.ones_like(tokens, dtype=torch.bool) if pad_id is None else tokens != pad_id
    m[:, 0] = False
    return m


def _agree(y_ll: torch.Tensor, y_hl: torch.Tensor, mask: torch.Tensor, categorical: bool) -> tuple[int, int]:
    """(agreeing, counted) label positions; categorical positions where the HL output ties are not counted."""
    p_hl = predict(y_hl, categorical, "no_prediction")
    p_ll = predict(y_ll, categorical, "first")
    if categorical:
        m = mask & (p_hl != NO_PREDICTION)
        good = p_ll == p_hl
    else:
        m = mask & torch.isfinite(p_hl)
        good = (p_ll - p_hl).abs() <= ATOL
    return int((good & m).sum()), int(m.sum())


def siit_accuracy(model: torch.nn.Module, case: Case, inputs: torch.Tensor) -> float:
    """Fraction of label positions where ``model``'s prediction equals the case's compiled model's."""
    ll, hl = load(model), load(case.model)
    y_ll = ll.run(inputs, progress=False).output
    y_hl = hl.run(inputs, progress=False).output
    assert y_ll is not None and y_hl is not None
    k, n = _agree(y_ll, y_hl, label_mask(inputs, case.model.cfg.pad_id), case.categorical)
    return k / max(n, 1)


def siit_iia(model: torch.nn.Module, case: Case, correspondence: dict[str, str], inputs: torch.Tensor,
             max_pairs: int = MAX_PAIRS, seed: int = 0) -> dict[str, float]:
    """IIA per aligned HL node: over (base, source) pairs of ``inputs`` (all of them, or a seeded sample of
    ``max_pairs``), the fraction of label positions where the LL output with its aligned node patched from the
    source equals the HL output with the HL node patched from the same source (``Patch`` rows in the engine)."""
    n = len(inputs)
    if n * n <= max_pairs:
        bi, si = torch.arange(n).repeat_interleave(n), torch.arange(n).repeat(n)
    else:
        g = torch.Generator().manual_seed(seed)
        bi, si = torch.randint(n, (max_pairs,), generator=g), torch.randint(n, (max_pairs,), generator=g)
    base, source = inputs[bi], inputs[si]
    mask = label_mask(base, case.model.cfg.pad_id)
    ll, hl = load(model), load(case.model)
    ll_sites, hl_sites = node_sites(ll, list(correspondence.values())), node_sites(hl, list(correspondence))
    out = {}
    for hl_node, ll_node in correspondence.items():
        s_ll, s_hl = ll_sites[ll_node], hl_sites[hl_node]
        y_ll = ll.run(base, {s_ll: Patch(ll.run(source, cache=[s_ll], progress=False))}, progress=False).output
        y_hl = hl.run(base, {s_hl: Patch(hl.run(source, cache=[s_hl], progress=False))}, progress=False).output
        assert y_ll is not None and y_hl is not None
        k, m = _agree(y_ll, y_hl, mask, case.categorical)
        out[hl_node] = round(k / max(m, 1), 4)
    return out


def evaluate_siit(trained: Trained, case: Case | None = None, test_index: torch.Tensor | None = None,
                  scales: Sequence[float] = DEFAULT_SCALES) -> dict[str, Any]:
    """Accuracy, IIA and node effects (resample ablation at the seed's scales) on the held-out inputs.

    >>> circuits.evaluate_siit(circuits.load_siit("reverse"))["iia"]

    ``test_index`` defaults to the split recorded in training (``record['split_seed']``, ``record['holdout']``).
    Node effects use the case's labels (tracr's outputs) and circuit, with the LL nodes named as the HL's.
    """
    hl = case if case is not None else load_case(trained.name)
    if test_index is None:
        rec = trained.record
        test_index = split_inputs(len(hl.inputs), float(rec.get("holdout", 0.2)), int(rec.get("split_seed", 1234)))[1]
    te = hl.inputs[test_index]
    eff = node_effects(trained.model, te, circuit=_ll_circuit(hl, trained.correspondence),
                       labels=hl.labels[test_index], categorical=hl.categorical, scales=list(scales), progress=False)
    return {"accuracy": round(siit_accuracy(trained.model, hl, te), 4),
            "iia": siit_iia(trained.model, hl, trained.correspondence, te),
            "node_effects": {n: {"status": eff.status[n], **{str(float(s)): round(eff.effect(n, s), 4)
                                                             for s in scales}} for n in eff.nodes}}


def _ll_circuit(case: Case, correspondence: dict[str, str]) -> Any:
    """The circuit in LL node names (the identity correspondence leaves it as it is)."""
    if all(k == v for k, v in correspondence.items()):
        return case.circuit
    from ._circuit import Circuit
    ren = {**{n: n for n in case.circuit.nodes}, **correspondence}
    return Circuit([ren[n] for n in case.circuit.nodes], [(ren[a], ren[b]) for a, b in case.circuit.edges],
                   dict(case.circuit.meta))
