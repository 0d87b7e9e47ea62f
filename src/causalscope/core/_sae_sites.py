"""Sparse-autoencoder sites: the latents of an SAE (or a transcoder) as the part of an activation a site reads and
edits, with the reconstruction error kept, so that an edit that leaves the latents as they are changes nothing.

>>> site = Site("layers.2", sae=sae, features=[3, 7])     # sae: anything with encode, W_dec, d_in, n_latents
>>> latents(sae, x, site.name)                            # sae.encode(x), checked: (..., n_latents)

An SAE site selects ``f = sae.encode(x)[..., features]``; an intervention returns new latents ``f'`` and the engine
writes ``x' = x + (f' - f) @ W_dec[features]``. With ``x = decode(f) + error`` that is ``decode(f') + error``: the
error term stays, and ``f' == f`` gives back ``x`` bit for bit (the change added is an exact zero). A transcoder
(``is_transcoder``) reads its latents from a module's input and writes the change into the module's output.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..errors import SiteError
from ._interventions import Intervention

#: latents (rows x positions x n_latents values) encoded at once: more rows are encoded in slices, each picking its
#: features before the next, so a wide SAE's full latents never fill memory for a few features
LATENT_BUDGET = 1 << 26


class SparseCoder(Protocol):
    """What a site needs of a sparse autoencoder (causalscope.sae.SAE, a SAELens SAE, or your own class).

    >>> class MySAE:
    ...     d_in, n_latents = 64, 512
    ...     W_dec = torch.randn(512, 64)                  # (n_latents, d_out): one decoder row per latent
    ...     def encode(self, x): return torch.relu(x @ W_enc + b_enc)   # (..., d_in) -> (..., n_latents)

    A transcoder also has ``is_transcoder = True`` (and ``W_dec`` shaped (n_latents, d_out) for the module's
    output). ``name`` (optional) names the SAE in its sites' names.
    """

    W_dec: torch.Tensor
    d_in: int
    n_latents: int

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...


def is_transcoder(sae: Any) -> bool:
    """Whether ``sae`` maps a module's input to its output (a transcoder), by its ``is_transcoder`` flag (or, for a
    SAELens transcoder, its config's ``hook_name_out``)."""
    flag = getattr(sae, "is_transcoder", None)
    if flag is not None:
        return bool(flag)
    return bool(getattr(getattr(sae, "cfg", None), "hook_name_out", None))


def sae_dims(sae: Any) -> tuple[int, int, int]:
    """``(d_in, n_latents, d_out)`` of an SAE: ``n_latents`` and ``d_out`` from ``W_dec`` (n_latents, d_out),
    ``d_in`` from ``sae.d_in`` (or a SAELens config's ``cfg.d_in``)."""
    W = sae.W_dec
    d_in: Any = getattr(sae, "d_in", None)
    if d_in is None:
        d_in = getattr(getattr(sae, "cfg", None), "d_in", None)
    return int(d_in), int(W.shape[0]), int(W.shape[1])


def check_sae(sae: Any) -> None:
    """Raise a :class:`SiteError` naming what ``sae`` lacks to be a site's SAE (see :class:`SparseCoder`)."""
    missing = [a for a in ("encode", "W_dec") if not hasattr(sae, a)]
    has_d_in = hasattr(sae, "d_in") or hasattr(getattr(sae, "cfg", None), "d_in")
    if missing or not has_d_in or not callable(getattr(sae, "encode", None)):
        lack = missing + ([] if has_d_in else ["d_in"])
        raise SiteError(f"sae= takes a sparse autoencoder: an object with encode(x) -> latents, W_dec (n_latents, d) "
                        f"and d_in (causalscope.sae.SAE, causalscope.sae.load_sae(path)); got {type(sae).__name__}, "
                        f"which lacks {', '.join(lack) or 'a callable encode'}.")
    W = sae.W_dec
    if not isinstance(W, torch.Tensor) or W.ndim != 2 or not W.is_floating_point():
        raise SiteError(f"The SAE's W_dec must be a float tensor shaped (n_latents, d); got {type(W).__name__} "
                        f"{tuple(getattr(W, 'shape', ()))}.")
    d_in, n, d_out = sae_dims(sae)
    declared = getattr(sae, "n_latents", None)
    if declared is not None and int(declared) != n:
        raise SiteError(f"The SAE says n_latents={declared} but its W_dec has {n} rows (one per latent).")
    if not is_transcoder(sae) and d_out != d_in:
        raise SiteError(f"The SAE reads {d_in} dimensions but its W_dec (n_latents, d) writes {d_out}: an SAE "
                        f"decodes into the activation it encodes. A transcoder (another module's output) says so "
                        f"with is_transcoder = True.")


def check_features(features: tuple[int, ...] | None, sae: Any) -> None:
    """Raise when a site's ``features`` lie outside the SAE's latents."""
    if features is None:
        return
    n = sae_dims(sae)[1]
    bad = [f for f in features if not 0 <= f < n]
    if bad:
        raise SiteError(f"features {bad} are out of range: the SAE has {n} latents (0 .. {n - 1}).")


def sae_label(sae: Any) -> str:
    """The SAE as it appears in a site's name: its ``name`` (characters a name cannot hold become ``_``), else its
    class and identity, e.g. ``SAE@7f3a``."""
    name = getattr(sae, "name", None)
    if not isinstance(name, str) or not name:
        name = f"{type(sae).__name__}@{id(sae) & 0xFFFFFF:x}"
    return re.sub(r"[^\w.\-:/@+]", "_", name)


def check_width(site: Any, width: int, writing: bool = False) -> None:
    """Raise when the activation's last dimension is not what the site's SAE reads (``writing``: a transcoder's
    output, what it writes)."""
    d_in, _, d_out = sae_dims(site.sae)
    want = d_out if writing else d_in
    if width != want:
        what = "writes into the output of" if writing else "reads"
        raise SiteError(f"Site {site.name!r}: the SAE {what} {want} dimensions, but the activation there has {width}. "
                        f"Use the SAE trained on this site (its cfg names the hook), or another site.")


def known_width(adapter: Any, res: Any) -> int | None:
    """The last dimension of a resolved site's activation where the model says it without running: a transformer
    block's input or output (the residual stream, ``adapter.d_model``), an ``nn.Linear`` / ``nn.Embedding`` /
    ``nn.LayerNorm``; None elsewhere (the width is then checked when the activation is there)."""
    mod, out = res.module, res.io == "output"
    blocks = getattr(adapter, "layers", None)
    d = getattr(adapter, "d_model", None)
    if isinstance(blocks, torch.nn.ModuleList) and isinstance(d, int) and any(mod is b for b in blocks):
        return d
    if isinstance(mod, torch.nn.Linear):
        return int(mod.out_features if out else mod.in_features)
    if isinstance(mod, torch.nn.Embedding) and out:
        return int(mod.embedding_dim)
    if isinstance(mod, torch.nn.LayerNorm) and mod.normalized_shape:
        return int(mod.normalized_shape[-1])
    return None


def latents(sae: Any, x: torch.Tensor, site_name: str) -> torch.Tensor:
    """``sae.encode(x)``, checked: on ``x``'s device, shaped ``(*x.shape[:-1], n_latents)``."""
    W = sae.W_dec
    if W.device != x.device:
        raise SiteError(f"Site {site_name!r}: the SAE's weights are on {W.device}, the activation on {x.device}; "
                        f"move the SAE to the model's device first (sae.to({str(x.device)!r})).")
    f = sae.encode(x)
    n = int(W.shape[0])
    if not isinstance(f, torch.Tensor) or tuple(f.shape) != (*x.shape[:-1], n):
        raise SiteError(f"Site {site_name!r}: sae.encode returned {tuple(getattr(f, 'shape', ()))} for an activation "
                        f"{tuple(x.shape)}; expected {(*x.shape[:-1], n)} (one value per latent).")
    return f


def rows_at_once(x: torch.Tensor, n_latents: int) -> int:
    """How many rows of ``x`` (rows, ..., d) to encode at once under :data:`LATENT_BUDGET`."""
    per_row = (x[0].numel() // max(int(x.shape[-1]), 1)) * n_latents if len(x) else 1
    return max(1, LATENT_BUDGET // max(per_row, 1))


def site_latents(site: Any, x: torch.Tensor, row_features: torch.Tensor | None = None) -> torch.Tensor:
    """The site's features of ``sae.encode(x)`` (see :func:`pick`), encoded in slices of rows that fit
    :data:`LATENT_BUDGET`."""
    sae = site.sae
    step = rows_at_once(x, sae_dims(sae)[1])
    if len(x) <= step:
        return pick(latents(sae, x, site.name), site.features, row_features)
    return torch.cat([pick(latents(sae, x[i: i + step], site.name), site.features,
                           None if row_features is None else row_features[i: i + step])
                      for i in range(0, len(x), step)])


def pick(f: torch.Tensor, features: tuple[int, ...] | None, row_features: torch.Tensor | None) -> torch.Tensor:
    """The site's features of latents ``f`` (rows, ..., n_latents): all of them, the shared ``features``, or each
    row's own ``row_features`` (rows, k)."""
    if row_features is not None:
        return f.gather(-1, _row_index(row_features, f))
    if features is None:
        return f
    return f.index_select(-1, _feature_index(features, f.device))


@functools.lru_cache(maxsize=1024)
def _feature_index(features: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A site's features as an index tensor, made once per device (no host-to-device copy inside a hook)."""
    return torch.tensor(features, dtype=torch.long, device=device)


def _row_index(row_features: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    k = row_features.shape[-1]
    idx = row_features.to(f.device).view(len(row_features), *([1] * (f.ndim - 2)), k)
    return idx.expand(*f.shape[:-1], k)


def decoder_rows(sae: Any, features: tuple[int, ...] | None, device: torch.device) -> torch.Tensor:
    """``W_dec[features]`` (all rows for None), detached, on ``device``."""
    W = sae.W_dec.detach().to(device)
    if features is None:
        return W
    return W.index_select(0, _feature_index(features, device))


def decoded_change(sae: Any, delta: torch.Tensor, features: tuple[int, ...] | None,
                   row_features: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``delta @ W_dec[features]`` in ``dtype``: what a change ``delta`` of the site's latents adds to the activation
    (each row its own decoder rows where ``row_features`` are given). An exact zero for ``delta == 0``."""
    if row_features is not None:
        W = sae.W_dec.detach().to(delta.device)[row_features.to(delta.device)]  # (rows, k, d)
        flat = delta.to(W.dtype).reshape(len(delta), -1, delta.shape[-1])
        out = (flat @ W).reshape(*delta.shape[:-1], W.shape[-1])
    else:
        W = decoder_rows(sae, features, delta.device)
        out = delta.to(W.dtype) @ W
    return out.to(dtype)


def latent_grads(g: torch.Tensor, site: Any) -> torch.Tensor:
    """The gradient with respect to a site's latents, from ``g``, the gradient with respect to the activation
    the SAE writes into: ``x' = x + (f' - f) @ W_dec[features]`` gives ``d/df' = g @ W_dec[features].T``.

    >>> latent_grads(run.grads["layers.2"], Site("layers.2", sae=sae, features=[3]))    # (rows, T, 1)
    """
    if is_transcoder(site.sae):
        raise SiteError(f"Site {site.name!r}: the gradient with respect to a transcoder's latents is that of the "
                        f"module's output, which this run did not take (its grads site reads the input); take "
                        f"grads=[Site({site.module!r})] and multiply by W_dec[features].T.")
    W = decoder_rows(site.sae, site.features, g.device)
    return g.to(W.dtype) @ W.T


def latent_mean(full: torch.Tensor, op: Any) -> torch.Tensor:
    """The mean of the site's latents over every row of a source run, (1, T, n_latents) (or (1, n_latents)):
    the SAE encodes each source row (as many at a time as :data:`LATENT_BUDGET` allows) and the latents are
    averaged, at each position over the source prompts that have it. (The mean of the latents, not the latents of
    the mean activation: the encoder is not linear.) Kept on ``op`` for the run's later chunks. (The caller
    checks, with ``source_mean``, that every position the base reads has a source prompt.)"""
    sae, site = op.site.sae, op.site
    memo = op.memo.get(("latent-mean", full.device, tuple(full.shape)))
    if memo is not None:
        return memo
    lengths = op.source.lengths
    ragged = lengths is not None and full.ndim >= 3
    total: torch.Tensor | None = None
    step = rows_at_once(full, sae_dims(sae)[1])
    for i in range(0, len(full), step):
        f = latents(sae, full[i: i + step], site.name)
        if ragged:
            T = full.shape[1]
            real = torch.arange(T)[None, :] < lengths[i: i + step].cpu()[:, None]
            f = f * real.to(device=f.device, dtype=f.dtype)[..., None]
        part = f.sum(0, keepdim=True)
        total = part if total is None else total + part
    assert total is not None  # a source run has rows
    if ragged:
        count = (torch.arange(full.shape[1])[None, :] < lengths.cpu()[:, None]).sum(0).clamp(min=1)
        mean = total / count.to(device=total.device, dtype=total.dtype)[None, :, None]
    else:
        mean = total / len(full)
    op.memo[("latent-mean", full.device, tuple(full.shape))] = mean
    return mean


@dataclass(eq=False)
class TranscoderWrite(Intervention):
    """The second half of a transcoder site's edit: the engine reads the latents at the module's input (the op
    ``reader``) and adds ``(f' - f) @ W_dec[features]`` to the module's output here. Made by the engine only."""

    reader: Any = None

    def key(self) -> tuple:
        return ("TranscoderWrite", id(self.reader))

    def __call__(self, x: torch.Tensor, src: torch.Tensor | None, ctx: Any) -> torch.Tensor:
        raise AssertionError("the engine applies a transcoder's write itself")
