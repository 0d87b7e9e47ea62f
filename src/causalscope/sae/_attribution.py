"""Attribution patching over SAE features: the first-order effect of patching each latent from a clean run into
a corrupted one, from one forward pass each and one backward.

>>> a = feature_attribution(m, clean, corrupted, cs.Site("layers.2", sae=sae), cs.logit_diff(5, 9))
>>> a.sel(position=-1).values.topk(5)
"""
from __future__ import annotations

from typing import Any

from ..core import Site, as_site, input_pair, input_setting, is_transcoder, resolve_metric
from ..errors import InputError
from ..loading import load
from ..results import LabelledArray


def feature_attribution(model: Any, clean: Any, corrupted: Any, site: Site, metric: Any = None) -> LabelledArray:
    """For every latent (and position) of an SAE site, ``grad_f . (f_clean - f_corrupted)``: the first-order change
    of ``metric`` on the corrupted input when the latent takes its clean value (attribution patching, Nanda 2023,
    over features; Marks et al. 2024).

    >>> sae = causalscope.sae.load_bundled("facts-gpt-layers.2")
    >>> a = cs.feature_attribution(m, clean, corrupted, cs.Site("layers.2", sae=sae), cs.logit_diff(5, 9))
    >>> a.dims                                                  # ('position', 'feature'), averaged over pairs

    ``grad_f`` is the gradient with respect to the latents on the corrupted run. The engine writes an edit of the
    latents as ``x + (f' - f) @ W_dec`` (the SAE's error term stays), so ``grad_f = grad_x @ W_dec[features].T``
    with ``grad_x`` the gradient with respect to the activation the SAE writes into (a transcoder's: the module's
    output). Cost: the clean pass and the corrupted pass with one backward. Pairs of prompts of one length;
    several pairs are averaged. Returns ``(position, feature)`` scores (``(feature,)`` for an activation without
    positions), the metric on both inputs in ``meta``.
    """
    m = load(model)
    for what, x in (("clean", clean), ("corrupted", corrupted)):
        if x is None or (isinstance(x, (list, tuple)) and not x):
            raise InputError(f"{what} is empty: give a prompt, a list of prompts or token ids (one corrupted input "
                             f"per clean one, of the same length).")
    site = as_site(site)
    sae = site.sae
    if sae is None:
        raise InputError(f"feature_attribution attributes to an SAE's latents: give a site with sae=, e.g. "
                         f"cs.Site({site.module!r}, sae=sae); for plain activations use cs.attribution_patching.")
    metric_fn = resolve_metric(metric, m)
    clean_in, corr_in = input_pair(m, clean, corrupted, "feature_attribution")
    coder = is_transcoder(sae)  # a SAELens transcoder has no flag, only its config's hook_name_out
    written = Site(site.module, io="output" if coder else site.io, positions=site.positions)
    c_run = m.run(clean_in, cache=[site], metric=metric_fn)
    k_run = m.run(corr_in, cache=[site], grads=[written], metric=metric_fn)
    g = k_run.grads[written]
    W = sae.W_dec.detach().to(g.device)
    if site.features is not None:
        W = W[list(site.features)]
    grad_f = g.to(W.dtype) @ W.T
    est = (grad_f * (c_run.cache[site] - k_run.cache[site]).to(grad_f.dtype)).mean(0)
    n_feat = est.shape[-1]
    features = list(site.features) if site.features is not None else list(range(n_feat))
    c_metric, k_metric = (float(r.metric.float().mean()) for r in (c_run, k_run))  # type: ignore[union-attr]
    meta = {"method": "feature_attribution", "model": m.name, "site": site.name, "metric": repr(metric_fn),
            "clean": input_setting(clean), "corrupted": input_setting(corrupted), "clean_metric": c_metric,
            "corrupted_metric": k_metric, "n_prompts": int(g.shape[0])}
    if est.ndim == 1:
        return LabelledArray(est, ("feature",), {"feature": features}, meta, name="attribution")
    T = int(est.shape[0])
    if isinstance(site.positions, tuple):
        positions = [p % int(clean_in.seq_len or T) for p in site.positions]
    elif isinstance(site.positions, slice):
        positions = list(range(int(clean_in.seq_len or T)))[site.positions]
    else:
        positions = list(range(T))
    return LabelledArray(est, ("position", "feature"), {"position": positions, "feature": features}, meta,
                         name="attribution")
