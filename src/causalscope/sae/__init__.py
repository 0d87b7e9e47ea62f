"""Sparse autoencoders and transcoders: load (SAELens's format or plain tensors), train, and use their latents as
sites of any method.

>>> import causalscope as cs
>>> from causalscope.sae import load_bundled
>>> m, sae = cs.load("facts-gpt"), load_bundled("facts-gpt-layers.2")
>>> site = cs.Site("layers.2", sae=sae, features=[3, 7])       # two latents of the residual stream after block 2
>>> m.run("Thumtre Lesdurn was born in the city of", {site: cs.Zero()})      # ablate them
>>> m.run("Thumtre Lesdurn was born in the city of", cache=[site]).cache[site].shape   # (1, 9, 2)

An edit of the latents ``f -> f'`` writes ``x + (f' - f) @ W_dec[features]``: the SAE's reconstruction error
stays, so an edit that changes no latent changes nothing (docs/sae.md).
"""
from ._attribution import feature_attribution
from ._io import bundled, load_bundled, load_sae
from ._sae import SAE, Transcoder
from ._train import evaluate, train_sae

__all__ = ["SAE", "Transcoder", "bundled", "evaluate", "feature_attribution", "load_bundled", "load_sae", "train_sae"]
