"""ACDC: greedy edge pruning (Conmy et al. 2023, ArthurConmy/Automatic-Circuit-Discovery), exact and batched.

>>> r = circuits.acdc(case, threshold=1e-4)
>>> r.circuit()                   # the edges ACDC kept
>>> r.meta["passes"]              # batched graph passes it took
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core import tqdm
from ..errors import check_flag, check_number
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

    Exact and batched: all remaining candidates of a receiver are tried in one pass, starting at the
    receiver's layer from the cached current state, along a guessed path of decisions (candidate j is tried
    with the earlier candidates guessed removed, removed). Decisions are read off in order while the guesses
    hold; a wrong guess ends the pass, and the next pass guesses from this one's values. First guesses cost
    almost nothing: an edge whose sender is the same in both runs, or that leaves the logits unchanged, is
    guessed removed. The result equals the sequential greedy loop with one forward per candidate, whatever
    the guesses; ``meta["passes"]`` counts the batched passes.
    """
    check_number(threshold, "threshold", low=0)
    check_flag(absolute, "absolute")
    s = setup(model, clean, corrupted, metric=metric, labels=labels, positions=positions, categorical=categorical,
              seed=seed, default_metric=_EXACT_DEFAULT, higher_is_better=higher_is_better)
    g = s.graph
    E = len(g.edges)
    state = torch.zeros(E, dtype=torch.float64)
    effect = torch.zeros(E, dtype=torch.float64)
    tried = torch.zeros(E, dtype=torch.bool)
    base = s.clean
    pending: Any = None
    current = float(s.meta["clean_metric"])
    passes = 0
    order = list(reversed(g.receivers))
    # guessed removals, for the batched passes below (they decide nothing: a wrong guess costs a pass). When a
    # receiver is visited its inputs are still the clean run's, so an edge whose sender has the same output in
    # both runs changes nothing, and an edge into the logits that leaves them as they are (one cheap stage for
    # all of them) neither: those are guessed removed, every other edge kept.
    X, B = s.corrupted.by_sender(), s.clean.by_sender()  # (senders, rows*T*d), kept for the passes too
    same = [torch.equal(X[i], B[i]) for i in range(X.shape[0])]  # stops at the first difference
    guess = [same[i] for i in g.edge_sender.tolist()]
    into_logits = (g.edge_stage == 2 * g.n_layers).nonzero().ravel()
    singles = torch.zeros(len(into_logits), E)
    singles[torch.arange(len(into_logits)), into_logits] = 1.0
    scale = float(s.clean.logits.abs().max())
    for e, c in zip(into_logits.tolist(), g.probe(singles, s.corrupted, s.clean, torch.zeros(E)).tolist()):
        guess[e] = guess[e] or c <= 1e-9 * scale
    predict = dict(enumerate(guess))
    show = progress if progress is not None else E > 500
    sign = -1.0 if s.metric.higher_is_better else 1.0

    def worse(new: float, old: float) -> float:  # how much worse `new` is than `old` (positive: worse)
        return sign * (new - old)

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
            # one pass tries every remaining candidate along the predicted path of decisions: candidate j's
            # configuration is the state with the candidates before it that are predicted removed, removed too
            guess = [predict[e] for e in cands]
            path = state.clone()
            rows: list[torch.Tensor] = []
            for e, rm in zip(cands, guess):
                row = path.clone()
                row[e] = 1.0
                rows.append(row)
                if rm:
                    path = row
            if pending is not None:  # the state's sender outputs: the last configuration removed
                base, pending = _outputs(s, pending[0], pending[1][pending[2]]), None
            logits, outs = g.run(torch.stack(rows), s.clean, s.corrupted, base=base, base_patch=state,
                                 return_outputs=True)
            passes += 1
            values = _values(s, logits, outs, current)
            start_value, done, last_removed = current, len(cands), None
            for j, e in enumerate(cands):  # row j is exact while every decision before it was guessed right
                change = worse(values[j], current)
                effect[e], tried[e] = change, True
                remove = (abs(change) if absolute else change) < threshold
                if remove:
                    state[e] = 1.0
                    current = values[j]
                    last_removed = j
                if remove != guess[j]:
                    done = j + 1
                    break
            if last_removed is not None:  # the new state's outputs, built when a later pass needs them
                pending = (logits[last_removed], outs, last_removed)
            # the next guesses: each later candidate's change against the path before it in this pass
            prev = start_value
            for j, e in enumerate(cands):
                if j >= done:
                    change = worse(values[j], prev)
                    predict[e] = (abs(change) if absolute else change) < threshold
                if guess[j]:
                    prev = values[j]
            cands = cands[done:]
    kept = (state == 0) & tried
    meta = {"threshold": threshold, "absolute": absolute, "passes": passes, "final_metric": current,
            "kept": kept.tolist()}
    return s.result(effect, "edge", "acdc", **meta)


def _values(s: Setup, logits: torch.Tensor, outs: Any, current: float) -> list[float]:
    """The metric of each configuration of a pass: computed for those that ran to the end; a configuration the
    run found equal (bit for bit) to the base run has the base's metric (``current``), one equal to another
    configuration has that one's."""
    eq = [outs.equal_to(i) for i in range(logits.shape[0])]
    own = [i for i, e in enumerate(eq) if e is None]
    values = [current] * logits.shape[0]
    if own:
        for i, v in zip(own, s.value(logits[own] if len(own) < len(eq) else logits).tolist()):
            values[i] = v
    for i, e in enumerate(eq):
        if e is not None and e >= 0:
            values[i] = values[e]
    return values


def _outputs(s: Setup, logits: torch.Tensor, senders: torch.Tensor) -> Any:  # senders: (rows, T, S, d)
    from ._graph import GraphOutputs

    return GraphOutputs(s.clean.tokens, senders, logits, s.clean.key_mask, s.clean.lengths)
