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

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..core import preserved
from ..errors import InputError, check_int
from ._discovery import Setup, setup
from ._discovery_result import CircuitScores

#: gradient methods need a metric whose gradient at the clean run is not zero (KL and MSE to clean are
#: minimal there): log-probability of the label (categorical), the output value (numerical)
_GRAD_DEFAULT = {True: "logprob", False: "output"}


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
    """Gradients of the summed (over ``reps`` stacked copies) row-mean metric w.r.t. every receiver input,
    from one forward and one backward pass; parameters get no ``.grad``."""
    g = s.graph
    N = s.clean.tokens.shape[0]
    with preserved(g.model.module), torch.enable_grad():
        e = embed.detach().clone().requires_grad_(True)
        mask = s.clean.key_mask
        logits, _, inputs = g.trace(e, None if mask is None else mask.repeat(reps, 1))
        value = s.metric(logits.view(reps, N, *logits.shape[1:])).mean(-1).sum()
        grads = torch.autograd.grad(value, inputs, allow_unused=True)
    out = []
    for x, gr in zip(inputs, grads):
        gr = torch.zeros_like(x) if gr is None else gr.detach()
        out.append(gr.view(reps, N, *gr.shape[1:]).sum(0))
    return out


def edge_attribution_patching(model: Any, clean: Any = None, corrupted: Any = None, *, metric: Any = None,
                              labels: Any = None, positions: Sequence[int] | None = None,
                              categorical: bool | None = None, seed: int = 0) -> CircuitScores:
    """EAP: the first-order estimate of exact edge patching for every edge, from one forward + backward.

    >>> r = circuits.edge_attribution_patching(case)      # default metric: label log-prob / output value
    >>> r.top(10)

    Score of ``s -> r``: ``sum_{inputs, positions, d} (out_s(corrupted) - out_s(clean)) * dM/d input_r`` with
    ``M`` the metric averaged over inputs and the gradient taken on the clean run (per head for heads: each
    head reads its own copy of the residual stream). Cost: two cached runs (clean, corrupted) and one
    forward + backward on the clean inputs, whatever the number of edges.
    """
    s = setup(model, clean, corrupted, metric=metric, labels=labels, positions=positions, categorical=categorical,
              seed=seed, default_metric=_GRAD_DEFAULT)
    grads = _gradients(s, s.clean.senders[..., 0, :], 1)
    return s.result(_edge_scores(s, grads), "edge", "eap")


def eap_ig(model: Any, clean: Any = None, corrupted: Any = None, *, steps: int = 5, metric: Any = None,
           labels: Any = None, positions: Sequence[int] | None = None, categorical: bool | None = None,
           seed: int = 0, endpoints: Literal["right", "left"] = "right") -> CircuitScores:
    """EAP-IG (inputs): EAP with gradients averaged along the straight line from the corrupted to the clean
    embeddings, ``steps`` points batched into one forward + backward.

    >>> r = circuits.eap_ig(case, steps=5)

    Points ``alpha_k = k / steps``: ``k = 1 .. steps`` (``endpoints="right"``, as in later hannamw/EAP-IG
    versions; ``steps=1`` is EAP) or ``k = 0 .. steps - 1`` (``"left"``, as in the MIB-era code). The embedding
    node's output is ``emb_corrupted + alpha (emb_clean - emb_corrupted)``; every other node recomputes. As
    ``steps`` grows, the scores of the edges out of ``embed`` sum to ``metric(corrupted) - metric(clean)``
    (completeness). Cost: two cached runs and one forward + backward over ``steps x inputs`` rows.
    """
    check_int(steps, "steps", low=1)
    if endpoints not in ("right", "left"):
        raise InputError(f"endpoints must be 'right' or 'left', got {endpoints!r}.")
    s = setup(model, clean, corrupted, metric=metric, labels=labels, positions=positions, categorical=categorical,
              seed=seed, default_metric=_GRAD_DEFAULT)
    N = s.clean.tokens.shape[0]
    ks = torch.arange(1, steps + 1) if endpoints == "right" else torch.arange(0, steps)
    alpha = (ks.double() / steps).to(dtype=s.clean.senders.dtype, device=s.clean.senders.device)
    e_clean, e_corr = s.clean.senders[..., 0, :].clone(), s.corrupted.senders[..., 0, :].clone()
    emb = e_corr[None] + alpha[:, None, None, None] * (e_clean - e_corr)[None]
    grads = [gr / steps for gr in _gradients(s, emb.reshape(steps * N, *e_clean.shape[1:]), steps)]
    return s.result(_edge_scores(s, grads), "edge", "eap_ig", steps=int(steps), endpoints=endpoints)
