"""Training a small sparse autoencoder on a model's activations at one site.

>>> sae = train_sae(cs.load("facts-gpt"), prompts, "layers.2", n_latents=512, k=16, steps=2000)
>>> sae.info["explained_variance"], sae.info["l0"]
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..core import Site, as_site, tqdm
from ..errors import InputError, check_flag, check_int, check_number, check_seed
from ..loading import load
from ._sae import SAE


def train_sae(model: Any, prompts: Any, site: Site | str, n_latents: int, *, k: int | None = None,
              l1: float | None = None, steps: int = 2000, lr: float = 1e-3, batch_size: int = 1024, seed: int = 0,
              progress: bool = True, log_every: int | None = None, name: str | None = None,
              eval_tokens: int = 8192) -> SAE:
    """Train an SAE on the activations of ``model`` at ``site`` over ``prompts``; returns it (``sae.info``: how).

    >>> m = cs.load("facts-gpt")
    >>> prompts = [f.prompt for f in causalscope.zoo.facts.facts("train")]
    >>> sae = cs.train_sae(m, prompts, "layers.2", n_latents=512, k=16, steps=1000)   # TopK, 16 latents a token
    >>> sae = cs.train_sae(m, prompts, "layers.2", n_latents=512, l1=3e-3)             # ReLU with an L1 penalty
    >>> m.run(prompts[:1], {cs.Site("layers.2", sae=sae, features=[7]): cs.Zero()})

    The activations are cached in one engine run (every real token of every prompt; the site's positions where it
    has some) and stay in memory. ``k=`` trains a TopK SAE, ``l1=`` a ReLU SAE whose loss adds ``l1`` times the sum
    of the latents (its decoder rows are kept at unit norm, so that is the decoder-norm-weighted penalty); give one
    of the two. Loss: the squared error summed over the ``d`` dims, averaged over tokens; Adam with learning rate
    ``lr`` (cosine decay to 0), ``batch_size`` tokens a step drawn from a generator seeded with ``seed``; the
    decoder bias starts at the activations' mean. Every ``log_every`` steps (default: 10 times in all) a line
    reports, on ``eval_tokens`` fixed tokens, the reconstruction MSE (per element), the explained variance
    ``1 - sum (x - x_hat)^2 / sum (x - mean)^2`` and L0 (latents active per token). The model is left unchanged.
    """
    m = load(model)
    if prompts is None or (isinstance(prompts, (list, tuple)) and not prompts):
        raise InputError("prompts is empty: give the prompts (or inputs) whose activations train the SAE.")
    site = as_site(site)
    if site.sae is not None or site.neurons is not None or site.heads is not None or site.basis is not None:
        raise InputError(f"train_sae reads a whole activation (optionally at some positions); {site.name!r} selects "
                         f"a part of it. Give the module alone, e.g. Site({site.module!r}).")
    if (k is None) == (l1 is None):
        raise InputError("train_sae needs exactly one of k= (a TopK SAE: latents kept per token) and l1= (a ReLU SAE: "
                         "the L1 penalty's coefficient).")
    n_latents = check_int(n_latents, "n_latents", low=1, hint="It is the SAE's number of latents (e.g. 512).")
    if k is not None:
        k = check_int(k, "k", low=1, high=n_latents, hint="It is the number of latents kept per token (at most "
                                                           "n_latents).")
    if name is not None and not isinstance(name, str):
        raise InputError(f"name must be a string (or None), got {type(name).__name__} {name!r:.40}.")
    steps = check_int(steps, "steps", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    eval_tokens = check_int(eval_tokens, "eval_tokens", low=1)
    lr = check_number(lr, "lr", low=0.0, open_low=True)
    seed = check_seed(seed)
    check_flag(progress, "progress")
    if l1 is not None:
        l1 = check_number(l1, "l1", low=0.0)
    log_every = max(1, steps // 10) if log_every is None else check_int(log_every, "log_every", low=1)
    acts = _activations(m, prompts, site)
    n_tok, d = acts.shape
    sae = SAE(d, n_latents, architecture="topk" if k is not None else "relu", k=k, seed=seed,
              name=name or f"{m.name}-{site.name}", hook_name=site.name).to(acts.device)
    g = torch.Generator().manual_seed(seed)
    eval_x = acts[torch.randperm(n_tok, generator=g)[:eval_tokens].to(acts.device)]
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    history: list[dict[str, Any]] = []
    fired = torch.zeros(n_latents, dtype=torch.bool, device=acts.device)
    t0 = time.perf_counter()
    perm, at = torch.randperm(n_tok, generator=g), 0
    bar = tqdm(range(steps), desc=f"train_sae {site.name}", unit="step", disable=not progress)
    for step in bar:
        if at + batch_size > n_tok:
            perm, at = torch.randperm(n_tok, generator=g), 0
        x = acts[perm[at: at + batch_size].to(acts.device)]
        at += batch_size
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        f = sae.encode(x)
        loss = (sae.decode(f) - x).pow(2).sum(-1).mean()
        if l1 is not None:
            loss = loss + l1 * f.sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8))
            fired |= (f > 0).any(0)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            stats = {"step": step + 1, "seconds": round(time.perf_counter() - t0, 2), **evaluate(sae, eval_x),
                     "dead_fraction": round(1 - float(fired.float().mean()), 4)}
            fired.zero_()
            history.append(stats)
            if progress:
                bar.write(f"step {stats['step']}: mse {stats['mse']:.4g}, explained variance "
                          f"{stats['explained_variance']:.4f}, L0 {stats['l0']:.1f}, dead {stats['dead_fraction']:.1%}")
    bar.close()
    sae.requires_grad_(False)
    last = history[-1]
    sae.info = {"model": m.name, "site": site.name, "architecture": sae.architecture, "n_latents": n_latents, "k": k,
                "l1": l1, "steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed, "tokens": n_tok,
                "seconds": round(time.perf_counter() - t0, 2), "mse": last["mse"],
                "explained_variance": last["explained_variance"], "l0": last["l0"],
                "dead_fraction": last["dead_fraction"], "torch": torch.__version__, "history": history}
    return sae


@torch.no_grad()
def evaluate(sae: SAE, x: torch.Tensor) -> dict[str, float]:
    """Reconstruction MSE (per element), explained variance and L0 of ``sae`` on activations ``x`` (tokens, d).

    >>> evaluate(sae, acts)      # {'mse': 0.012, 'explained_variance': 0.93, 'l0': 16.0}
    """
    f = sae.encode(x)
    err = (sae.decode(f) - x.to(f.dtype)).pow(2)
    var = (x - x.mean(0)).pow(2).sum()
    return {"mse": round(float(err.mean()), 6), "explained_variance": round(1 - float(err.sum() / var), 5),
            "l0": round(float((f != 0).sum(-1).float().mean()), 3)}


def _activations(m: Any, prompts: Any, site: Site) -> torch.Tensor:
    """(tokens, d): the site's activation at every real token of every prompt (padding left out)."""
    run = m.run(prompts, cache=[site], keep_output=False)
    acts = run.cache[site]
    if acts.ndim == 2:
        return acts.float()
    if acts.ndim != 3:
        raise InputError(f"train_sae needs a (batch, positions, d) or (batch, d) activation; {site.name!r} is "
                         f"{tuple(acts.shape)}.")
    if run.lengths is not None and site.positions is None:
        real = torch.arange(acts.shape[1])[None, :] < run.lengths.cpu()[:, None]
        return acts[real.to(acts.device)].float()
    return acts.reshape(-1, acts.shape[-1]).float()
