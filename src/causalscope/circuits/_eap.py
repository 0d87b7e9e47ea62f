"""Edge attribution patching (EAP) and EAP with integrated gradients on the embedding (EAP-IG-inputs).

>>> eap = circuits.edge_attribution_patching(case)
>>> ig = circuits.eap_ig(case, steps=5)
>>> ig.circuit(k=20)

Both follow hannamw/EAP-IG (``get_scores_eap`` / ``get_scores_eap_ig``; Syed et al. 2023, Hanna et al. 2024):
edge ``s -> r`` scores ``(out_s(corrupted) - out_s(clean)) . d metric / d input_r``, summed over positions
and the model dimension, the metric being the mean over inputs (so a score estimates the change of that mean;
EAP-IG's code divides once more by the number of inputs, a constant factor that no ranking sees).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..core import preserved
from ..errors import InputError, check_flag, check_int
from ._discovery import Setup, setup
from ._discovery_result import CircuitScores
from ._sharded import sharded_attribution

#: gradient methods need a metric whose gradient at the clean run is not zero (KL and MSE to clean are
#: minimal there): log-probability of the label (categorical), the output value (numerical)
GRAD_DEFAULT = {True: "logprob", False: "output"}


def _edge_scores(s: Setup, grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per edge: ``sum (corrupted - clean sender output) * grad of its receiver's input``."""
    g = s.graph
    delta = (s.corrupted.senders - s.clean.senders).double()
    mat = torch.zeros(len(g.receivers), len(g.senders), dtype=torch.float64, device=delta.device)
    for stage, grad in enumerate(grads):
        p = g._n_upstream(stage)
        rs = g._receivers_of(stage)
        gr = grad.double() if grad.ndim == 4 else grad.double().unsqueeze(2)
        mat[rs, :p] = torch.einsum("ntsd,ntrd->rs", delta[..., :p, :], gr)
    return mat[g.edge_receiver, g.edge_sender]


def _gradients(s: Setup, embed: torch.Tensor, reps: int) -> list[torch.Tensor]:
    """Gradients of the metric summed over rows (and ``reps`` stacked copies) w.r.t. every receiver input,
    from one forward and one backward pass; parameters get no ``.grad``. The sum, not the mean: a row's
    gradient is then its own, whichever rows share the batch (see :func:`normalise`)."""
    g = s.graph
    N = s.clean.tokens.shape[0]
    with preserved(g.model.module), torch.enable_grad():
        e = embed.detach().clone().requires_grad_(True)
        mask = s.clean.key_mask
        logits, _, inputs = g.trace(e, None if mask is None else mask.repeat(reps, 1))
        value = s.metric(logits.view(reps, N, *logits.shape[1:])).sum()
        grads = torch.autograd.grad(value, inputs, allow_unused=True)
    out = []
    for x, gr in zip(inputs, grads):
        gr = torch.zeros_like(x) if gr is None else gr.detach()
        out.append(gr.view(reps, N, *gr.shape[1:]).sum(0))
    return out


def attribution_sums(s: Setup, steps: int | None = None, endpoints: str = "right") -> torch.Tensor:
    """Per edge, the unnormalised score: ``sum (corrupted - clean sender output) * d metric / d receiver input``
    over the rows of ``s`` (and, for EAP-IG, over its ``steps`` points), the metric summed over rows.

    >>> total = attribution_sums(s, steps=5)          # EAP-IG; steps=None: EAP (gradient at the clean run)
    >>> scores = normalise(total, n_inputs=N, steps=5)

    A sum over inputs: the sums of disjoint sets of rows add up to the sum over all of them.
    """
    if steps is None:
        return _edge_scores(s, _gradients(s, s.clean.senders[..., 0, :], 1))
    N = s.clean.tokens.shape[0]
    ks = torch.arange(1, steps + 1) if endpoints == "right" else torch.arange(0, steps)
    alpha = (ks.double() / steps).to(dtype=s.clean.senders.dtype, device=s.clean.senders.device)
    e_clean, e_corr = s.clean.senders[..., 0, :].clone(), s.corrupted.senders[..., 0, :].clone()
    emb = e_corr[None] + alpha[:, None, None, None] * (e_clean - e_corr)[None]
    return _edge_scores(s, _gradients(s, emb.reshape(steps * N, *e_clean.shape[1:]), steps))


def normalise(total: torch.Tensor, n_inputs: int, steps: int = 1) -> torch.Tensor:
    """Scores from :func:`attribution_sums` (summed over all inputs): divided once by the number of inputs (the
    metric is their mean) and of EAP-IG points (the gradient is their mean).

    >>> normalise(torch.tensor([6.0]), n_inputs=3, steps=2)
    tensor([1.])
    """
    return total / (int(n_inputs) * int(steps))


def edge_attribution_patching(model: Any, clean: Any = None, corrupted: Any = None, *, metric: Any = None,
                              labels: Any = None, positions: Sequence[int] | None = None,
                              categorical: bool | None = None, seed: int = 0, progress: bool | None = None,
                              executor: Any = None, out: str | os.PathLike[str] | None = None,
                              shards: int | None = None) -> CircuitScores:
    """EAP: the first-order estimate of exact edge patching for every edge, from one forward + backward.

    >>> r = circuits.edge_attribution_patching(case)      # default metric: label log-prob / output value
    >>> r.top(10)

    Score of ``s -> r``: ``sum_{inputs, positions, d} (out_s(corrupted) - out_s(clean)) * dM/d input_r`` with
    ``M`` the metric averaged over inputs and the gradient taken on the clean run (per head for heads: each
    head reads its own copy of the residual stream). Cost: two cached runs (clean, corrupted) and one
    forward + backward on the clean inputs, whatever the number of edges.

    ``executor=causalscope.RayExecutor(workers=N)`` (or ``shards=``, ``out=`` in process) spreads the inputs
    over workers in shards, checkpointed in ``out``: each shard sums its inputs' scores, the sums are added
    in shard order and normalised once, so the scores equal the unsharded call's (to float rounding; see
    :func:`~causalscope.circuits._sharded.sharded_attribution`); ``meta["executor"]`` says what ran. ``progress``:
    a bar over the inputs as the shards finish (default: shown for more than 5 inputs); one piece shows none.
    """
    if progress is not None:
        check_flag(progress, "progress")
    if executor is not None or out is not None or shards is not None:
        return _in_shards(model, clean, corrupted, None, "right", executor, out, shards, progress, metric=metric,
                          labels=labels, positions=positions, categorical=categorical, seed=seed)
    s = setup(model, clean, corrupted, metric=metric, labels=labels, positions=positions, categorical=categorical,
              seed=seed, default_metric=GRAD_DEFAULT)
    return s.result(normalise(attribution_sums(s), s.clean.tokens.shape[0]), "edge", "eap")


def eap_ig(model: Any, clean: Any = None, corrupted: Any = None, *, steps: int = 5, metric: Any = None,
           labels: Any = None, positions: Sequence[int] | None = None, categorical: bool | None = None,
           seed: int = 0, endpoints: Literal["right", "left"] = "right", progress: bool | None = None,
           executor: Any = None, out: str | os.PathLike[str] | None = None,
           shards: int | None = None) -> CircuitScores:
    """EAP-IG (inputs): EAP with gradients averaged along the straight line from the corrupted to the clean
    embeddings, ``steps`` points batched into one forward + backward.

    >>> r = circuits.eap_ig(case, steps=5)

    Points ``alpha_k = k / steps``: ``k = 1 .. steps`` (``endpoints="right"``, as in later hannamw/EAP-IG
    versions; ``steps=1`` is EAP) or ``k = 0 .. steps - 1`` (``"left"``, as in the MIB-era code). The embedding
    node's output is ``emb_corrupted + alpha (emb_clean - emb_corrupted)``; every other node recomputes. As
    ``steps`` grows, the scores of the edges out of ``embed`` sum to ``metric(corrupted) - metric(clean)``
    (completeness). Cost: two cached runs and one forward + backward over ``steps x inputs`` rows.

    ``executor=`` / ``out=`` / ``shards=`` / ``progress=``: the inputs in shards, as for
    :func:`edge_attribution_patching`.
    """
    check_int(steps, "steps", low=1)
    if progress is not None:
        check_flag(progress, "progress")
    if endpoints not in ("right", "left"):
        raise InputError(f"endpoints must be 'right' or 'left', got {endpoints!r}.")
    if executor is not None or out is not None or shards is not None:
        return _in_shards(model, clean, corrupted, int(steps), endpoints, executor, out, shards, progress,
                          metric=metric, labels=labels, positions=positions, categorical=categorical, seed=seed)
    s = setup(model, clean, corrupted, metric=metric, labels=labels, positions=positions, categorical=categorical,
              seed=seed, default_metric=GRAD_DEFAULT)
    total = attribution_sums(s, int(steps), endpoints)
    return s.result(normalise(total, s.clean.tokens.shape[0], int(steps)), "edge", "eap_ig", steps=int(steps),
                    endpoints=endpoints)


def _in_shards(model: Any, clean: Any, corrupted: Any, steps: int | None, endpoints: str, executor: Any,
               out: str | os.PathLike[str] | None, shards: int | None, progress: bool | None,
               **kw: Any) -> CircuitScores:
    """EAP (``steps=None``) or EAP-IG with the inputs in shards: each shard's :func:`attribution_sums`, added in
    shard order, then :func:`normalise` once, as the unsharded call does."""
    total, edges, meta = sharded_attribution(model, clean, corrupted, steps=steps, endpoints=endpoints,
                                             executor=executor, out=out, shards=shards, progress=progress,
                                             sums=attribution_sums,
                                             default_metric=GRAD_DEFAULT, **kw)
    scores = normalise(total, meta["n_inputs"], 1 if steps is None else steps)
    return CircuitScores(scores.double().cpu(), ("edge",), {"edge": edges}, meta, name=f"{meta['method']} score")
