"""ACDC: greedy edge pruning (Conmy et al. 2023, ArthurConmy/Automatic-Circuit-Discovery), exact and batched.

>>> r = circuits.acdc(case, threshold=1e-4)
>>> r.circuit()                   # the edges ACDC kept
>>> r.meta["passes"]              # batched graph passes it took
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ._discovery import _EXACT_DEFAULT, Setup, setup
from ._discovery_result import CircuitScores


def acdc(model: Any, clean: Any = None, corrupted: Any = None, *, threshold: float = 1e-4, metric: Any = None,
         labels: Any = None, positions: Sequence[int] | None = None, categorical: bool | None = None,
         seed: int = 0, absolute: bool = False, higher_is_better: bool | None = None,
         progress: bool | None = None) -> CircuitScores:
    """ACDC: visit receivers from the logits back to the first layer; try each incoming edge patched to the
    corrupted run; keep it patched (removed) if the metric gets worse by less than ``threshold``.

    >>> r = circuits.acdc(case, threshold=1e-4)         # default metric: KL to the clean output (or MSE)
    >>> r.kept.sum(), r.circuit()

    As in ACDC's ``TLACDCExperiment.step``: the effect of trying an edge is ``new - current`` for a metric to
    minimise (``current - new`` for one to maximise, e.g. a log-prob); ``absolute=True`` compares its
    absolute value (ACDC's ``abs_value_threshold``). A removal makes the tried metric the current one.
    Senders are tried latest first. A receiver none of whose outgoing edges is left has no effect on the
    output, so its incoming edges are removed without trying (ACDC skips such nodes).

    Exact and batched: all remaining candidates of a receiver are tried in one pass, each alone and as the
    running prefix "these and all before removed", starting at the receiver's layer from the cached current
    state; decisions are read off in order while they stay valid (a run of keeps reads the singles, a run
    of removals the prefixes), and only a switch costs a new pass. The result equals the sequential greedy
    loop with one forward per candidate. ``meta["passes"]`` counts the batched passes.
    """
    if not threshold >= 0:
        raise InputError(f"threshold must be >= 0, got {threshold}.")
    s = setup(model, clean, corrupted, metric=metric, labels=labels, positions=positions, categorical=categorical,
              seed=seed, default_metric=_EXACT_DEFAULT, higher_is_better=higher_is_better)
    g = s.graph
    E = len(g.edges)
    state = torch.zeros(E, dtype=torch.float64)
    effect = torch.zeros(E, dtype=torch.float64)
    tried = torch.zeros(E, dtype=torch.bool)
    base = s.clean
    current = float(s.meta["clean_metric"])
    passes = 0
    order = list(reversed(g.receivers))
    show = progress if progress is not None else E > 500
    for r in tqdm(order, desc="acdc", unit="receiver", disable=not show):
        incoming = [i for i in range(E) if g.edges[i][1] == r]
        incoming.sort(key=lambda i: -g.senders.index(g.edges[i][0]))  # latest sender first
        if r != "logits":
            out = [i for i in range(E) if g.edges[i][0] == r]
            if all(state[i] == 1 for i in out):
                state[incoming] = 1.0  # an unused node: its inputs cannot reach the output
                continue
        cands = incoming
        while cands:
            k = len(cands)
            singles = state.repeat(k, 1)
            singles[torch.arange(k), cands] = 1.0
            prefixes = state.repeat(k, 1)
            for j in range(k):
                prefixes[j:, cands[j]] = 1.0
            logits, outs = g.run(torch.cat([singles, prefixes]), s.clean, s.corrupted, base=base,
                                 base_patch=state, return_outputs=True)
            passes += 1
            values = s.value(logits)
            mode, done = None, k
            for j, e in enumerate(cands):
                row = j if mode != "remove" else k + j
                v = float(values[row])
                change = float(s.metric.worse(torch.tensor(v), current))
                effect[e], tried[e] = change, True
                remove = (abs(change) if absolute else change) < threshold
                if remove:
                    state[e] = 1.0
                    current = v
                    base = _outputs(s, logits[row], outs[row])
                    if mode == "keep":  # the state now differs from every configuration of this pass
                        done = j + 1
                        break
                    mode = "remove"
                else:
                    if mode == "remove":  # later candidates need "prefix without this edge": not computed
                        done = j + 1
                        break
                    mode = "keep"
            cands = cands[done:]
    kept = (state == 0) & tried
    meta = {"threshold": threshold, "absolute": absolute, "passes": passes, "final_metric": current,
            "kept": kept.tolist()}
    return s.result(effect, "edge", "acdc", **meta)


def _outputs(s: Setup, logits: torch.Tensor, senders: torch.Tensor) -> Any:
    from ._graph import GraphOutputs

    return GraphOutputs(s.clean.tokens, senders, logits, s.clean.key_mask)
