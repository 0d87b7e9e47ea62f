"""Attribution patching over SAE and transcoder latents: a score for every site, position and feature, the same
first-order estimate as for a plain activation, ``grad_f . (f_other - f_this)``, from the same passes.

>>> sweep = latent_sweep([cs.Site("layers.2", sae=sae, features=[3, 7])], None)
>>> dims, coords, est, y_clean, y_corr = latent_estimates(m, clean_in, corr_in, cells, metric, ["denoise"], None)
>>> dims                                                        # ('site', 'position', 'feature')

An SAE site's value is ``f = sae.encode(x)[..., features]``; an edit ``f -> f'`` writes ``x + (f' - f) @
W_dec[features]`` into the activation the SAE writes (a transcoder: the module's output), so the gradient with
respect to the latents is ``grad_x @ W_dec[features].T`` with ``grad_x`` taken there. Only the site's ``sae``'s
public attributes are read here (``encode`` through the engine's cache, ``W_dec``, ``is_transcoder``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core import Cell, Model, Site, is_transcoder
from ..errors import InputError


@dataclass(frozen=True)
class LatentSweep:
    """The SAE sites of an attribution-patching call: every site selects the same features and positions."""

    features: list[int]
    positions: tuple[int, ...] | slice | None

    def check_lengths(self, ragged: bool) -> None:
        """Prompt pairs of different lengths need positions that mean the same token in every prompt."""
        if ragged and not isinstance(self.positions, tuple):
            raise InputError("attribution_patching over SAE sites scores every position the sites select, but the "
                             "prompt pairs have different lengths, so positions "
                             f"{'from a slice' if isinstance(self.positions, slice) else 'left open (all of them)'} "
                             "would not line up. List them on the sites, counted from each prompt's end or start: "
                             "cs.Site(module, sae=sae, features=[...], positions=[-3, -2, -1]) (negative positions "
                             "count back from each prompt's last token; the result is labelled with them as given).")

    def position_labels(self) -> list[int]:
        """The position coordinates over pairs of different lengths: the site's positions as given."""
        assert isinstance(self.positions, tuple)  # check_lengths refused the rest
        return list(self.positions)


def latent_sweep(sites: Any, per: str | None) -> LatentSweep | None:
    """None where no site of the sweep has an SAE (the plain path); else the sweep's shared features and positions,
    refusing what one result cannot hold: plain sites beside SAE sites, or SAE sites that differ in features or
    positions (the result has one feature and one position coordinate)."""
    if per is not None:  # sweep_cells refuses per= over an SAE site, naming the fix
        return None
    listed = [sites] if isinstance(sites, Site) else list(sites) if isinstance(sites, (list, tuple)) else []
    coded = [s for s in listed if isinstance(s, Site) and s.sae is not None]
    if not coded:
        return None
    if len(coded) != len(listed):
        plain = next(str(getattr(s, "name", s)) for s in listed if not (isinstance(s, Site) and s.sae is not None))
        raise InputError(f"attribution_patching got SAE sites and plain sites (e.g. {plain!r}) in one call: an SAE "
                         f"site gets a score per latent (and position), a plain site one score, so they cannot share "
                         f"a result. Call once with the SAE sites and once with the plain ones.")
    names = [s.name for s in coded]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"attribution_patching: the sites {twice} appear twice (or two SAE objects share a name); "
                         f"list each once, giving distinct SAEs distinct names.")
    features = [_features(s) for s in coded]
    for s, f in zip(coded, features):
        if f != features[0] or s.positions != coded[0].positions:
            raise InputError(f"attribution_patching over several SAE sites needs them to select the same features "
                             f"and positions (the result's 'feature' and 'position' coordinates are shared): "
                             f"{coded[0].name!r} and {s.name!r} differ. Call once per site, or give each the same "
                             f"features= and positions=.")
    return LatentSweep(features[0], coded[0].positions)


def _features(site: Site) -> list[int]:
    """The latents a site selects, as indices of its SAE's latents (``W_dec`` rows)."""
    every = list(range(int(site.sae.W_dec.shape[0])))
    f = site.features
    if f is None:
        return every
    return every[f] if isinstance(f, slice) else [int(j) for j in f]


def _written(site: Site) -> Site:
    """The plain site whose gradient gives the latents' one: where the SAE writes its change, at the same
    positions (a transcoder's module output; an SAE's own activation)."""
    return Site(site.module, io="output" if is_transcoder(site.sae) else site.io, positions=site.positions)


def latent_estimates(m: Model, clean_in: Any, corr_in: Any, cells: Sequence[Cell], metric_fn: Any, dirs: list[str],
                     chunk_size: int | None) -> tuple[tuple[str, ...], dict[str, list], torch.Tensor, torch.Tensor,
                                                      torch.Tensor]:
    """For pairs of one length: ``(dims, coords, est, y_clean, y_corrupted)``, ``est`` shaped (dirs, cells, pairs)
    with the cells ``(site, position, feature)`` (``(site, feature)`` for an activation without positions) in C
    order. Each is ``grad_f . (f_clean - f_corrupted)`` for one latent at one position, ``grad_f`` from the corrupted
    run (denoise) or the clean run (noise). One clean and one corrupted pass; one backward in each run whose
    gradient a direction needs."""
    sites = [c.site for c in cells]
    written = [_written(s) for s in sites]
    reads = list({(s.module, s.io): Site(s.module, io=s.io) for s in sites}.values())  # the token count
    cache = _unique([*sites, *reads])
    grads = _unique(written)
    runs = {}
    for name, inp, need in (("clean", clean_in, "noise" in dirs), ("corrupted", corr_in, "denoise" in dirs)):
        runs[name] = m.run(inp, cache=cache, grads=grads if need else (), metric=metric_fn, chunk_size=chunk_size)
    y_clean, y_corr = (torch.as_tensor(runs[k].metric).float().cpu() for k in ("clean", "corrupted"))
    P = runs["clean"].n_rows
    shapes = {tuple(runs["clean"].cache[s].shape[1:]) for s in sites}
    first = runs["clean"].cache[sites[0]]
    if len(shapes) != 1 or first.ndim not in (2, 3):
        raise InputError(f"attribution_patching over SAE sites labels latents shaped (prompts, positions, features) "
                         f"or (prompts, features); these sites give {sorted(shapes)} per prompt. Call once per site, "
                         f"at an activation shaped (batch, positions, d) or (batch, d).")
    per_site = int(first[0].numel())
    est = torch.zeros(len(dirs), len(sites), per_site, P)
    for j, (s, w) in enumerate(zip(sites, written)):
        diff = runs["clean"].cache[s] - runs["corrupted"].cache[s]  # (P, [positions,] features)
        W = s.sae.W_dec.detach()[_features(s)]
        for i, direction in enumerate(dirs):
            g = (runs["corrupted"] if direction == "denoise" else runs["clean"]).grads[w]
            dtype = torch.promote_types(torch.promote_types(g.dtype, W.dtype), torch.float32)
            grad_f = g.to(dtype) @ W.to(device=g.device, dtype=dtype).T  # the chain rule through x + (f' - f) @ W
            est[i, j] = (grad_f * diff.to(device=g.device, dtype=dtype)).reshape(P, -1).T.float().cpu()
    features = _features(sites[0])
    if first.ndim == 2:
        return ("site", "feature"), {"site": [c.label[0] for c in cells], "feature": features}, \
            est.reshape(len(dirs), -1, P), y_clean, y_corr
    T = int(runs["clean"].cache[Site(sites[0].module, io=sites[0].io)].shape[1])
    return ("site", "position", "feature"), \
        {"site": [c.label[0] for c in cells], "position": _positions(sites[0].positions, T), "feature": features}, \
        est.reshape(len(dirs), -1, P), y_clean, y_corr


def _positions(positions: tuple[int, ...] | slice | None, T: int) -> list[int]:
    """The position coordinates of pairs of one length ``T``, as ``causalscope.sae.feature_attribution`` gives
    them."""
    if isinstance(positions, tuple):
        return [p % T for p in positions]
    if isinstance(positions, slice):
        return list(range(T))[positions]
    return list(range(T))


def _unique(sites: Sequence[Site]) -> list[Site]:
    """Sites without repeats (by name: a run's cache holds one value per name)."""
    return list({s.name: s for s in sites}.values())
