"""Attribution patching: the first-order (gradient) approximation of activation patching for every cell."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch

from ..core import (
    Engine,
    Model,
    Site,
    check_align,
    flag_span,
    for_pairs,
    input_setting,
    model_dtype,
    positions_setting,
    resolve_metric,
    seq_len,
    sweep_cells,
    unique_full_sites,
)
from ..errors import InputError, check_flag
from ..loading import load
from ..results import resolve_backend
from ._attribution_latent import LatentSweep, latent_estimates, latent_sweep
from ._pairs import Pairs, Part, split_pairs
from ._result import PatchingResult
from ._sharded import is_sharded, per_pair, run_pairs, shard_pairs


class AttributionPatchingResult(PatchingResult):
    """Attribution-patching estimates, normalised like :class:`PatchingResult`; compare with exact patching.

    >>> atp = cs.attribution_patching(m, clean, corrupted, "resid_pre", metric)
    >>> exact = cs.activation_patching(m, clean, corrupted, "resid_pre", metric)
    >>> atp.disagreement(exact)[:3]        # the cells where the linear estimate is furthest off
    >>> atp.plot_against(exact)
    """

    def disagreement(self, exact: PatchingResult, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` cells (per direction) where the estimate differs most from exact patching."""
        out = []
        for name in self.coords["direction"]:
            a, e = self.sel(direction=name), exact.sel(direction=name)
            if a.shape != e.shape:
                raise InputError(f"The exact result has shape {e.shape}, this one {a.shape}: run both on the same "
                                 f"sweep.")
            diff = (a.values - e.values).flatten()
            for i in diff.abs().argsort(descending=True)[:k].tolist():
                idx = torch.unravel_index(torch.tensor(i), a.shape)
                cell = ", ".join(f"{d}={a.coords[d][int(j)]}" for d, j in zip(a.dims, idx))
                out.append({"direction": name, "cell": cell, "estimate": float(a.values.flatten()[i]),
                            "exact": float(e.values.flatten()[i]), "error": float(diff[i])})
        return out

    def agreement(self, exact: PatchingResult) -> dict[str, float]:
        """Pearson and Spearman correlation with exact patching, per direction."""
        out = {}
        for name in self.coords["direction"]:
            a = self.sel(direction=name).values.flatten().double()
            e = exact.sel(direction=name).values.flatten().double()
            out[f"{name} pearson"] = float(torch.corrcoef(torch.stack([a, e]))[0, 1])
            out[f"{name} spearman"] = float(torch.corrcoef(torch.stack([_ranks(a), _ranks(e)]))[0, 1])
        return out

    def plot_against(self, exact: PatchingResult, backend: str = "matplotlib") -> Any:
        """Scatter of the estimate against exact patching (one panel per direction), the worst cells labelled."""
        backend = resolve_backend(backend)
        dirs = self.coords["direction"]
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=1, cols=len(dirs), subplot_titles=list(dirs))
            for k, name in enumerate(dirs, start=1):
                a, e = self.sel(direction=name).numpy().ravel(), exact.sel(direction=name).numpy().ravel()
                lo, hi = float(min(a.min(), e.min())), float(max(a.max(), e.max()))
                fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line={"color": "grey", "width": 1},
                              row=1, col=k)  # y = x: a perfect estimate
                fig.add_trace(go.Scatter(x=e, y=a, mode="markers", showlegend=False,
                                         hovertemplate="exact %{x:.3f}<br>estimate %{y:.3f}<extra></extra>"), 1, k)
                fig.update_xaxes(title_text="exact patching", row=1, col=k)
            fig.update_yaxes(title_text="attribution patching", row=1, col=1)
            fig.update_layout(title={"text": "attribution patching (estimate) against exact patching"})
            return fig
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5 * len(dirs), 4), layout="constrained")
        for ax, name in zip(fig.subplots(1, len(dirs), squeeze=False)[0], dirs):
            a, e = self.sel(direction=name).numpy().ravel(), exact.sel(direction=name).numpy().ravel()
            ax.scatter(e, a, s=10)
            lo, hi = float(min(a.min(), e.min())), float(max(a.max(), e.max()))
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.7)
            for row in self.disagreement(exact, k=3):
                if row["direction"] == name:
                    ax.annotate(row["cell"], (row["exact"], row["estimate"]), fontsize=7)
            ax.set_xlabel("exact patching")
            ax.set_ylabel("attribution patching")
            ax.set_title(name)
        return fig


def attribution_patching(model: Any, clean: Any, corrupted: Any, sites: Any = "resid_pre", metric: Any = None, *,
                         direction: Literal["denoise", "noise", "both"] = "denoise", per: str | None = None,
                         positions: Any = None, chunk_size: int | None = None,
                         align: Literal["start", "end"] | None = None,
                         per_example: bool = False, executor: Any = None, out: str | os.PathLike[str] | None = None,
                         shards: int | None = None) -> AttributionPatchingResult:
    """First-order estimate of :func:`activation_patching` for every cell, from a few passes.

    >>> atp = cs.attribution_patching(m, clean, corrupted, "resid_pre", cs.logit_diff(5, 9))
    >>> atp.sel(direction="denoise")

    Denoising estimate of a cell: ``grad_corrupted . (a_clean - a_corrupted)`` summed over the cell's
    selection, where ``grad_corrupted`` is the gradient of the metric with respect to the site's
    activation in the corrupted run (Nanda 2023, "Attribution patching"; Syed et al. 2023). Noising uses
    the clean run's gradient and ``a_corrupted - a_clean``. Scores are normalised as in
    :func:`activation_patching`. Cost: one clean pass (cached), one corrupted pass with one backward
    (gradients with respect to activations only), plus a backward on the clean run for ``"noise"``.

    Several prompt pairs: the estimate is averaged over them (``per_example=True`` keeps one score per pair on an
    ``example`` dim, the estimate of that pair's patched metric normalised by the averaged span, as
    :func:`activation_patching` does, so its mean over examples is the default result). Pairs of different
    lengths (each clean prompt as long as its corrupted one) run length by length and combine exactly as the
    pairs would alone; a position sweep over them needs ``align="end"`` or ``"start"``, as in
    :func:`activation_patching`.

    >>> atp = cs.attribution_patching(m, ["the cat sat on the mat", "a dog ran"], ["the dog sat on the mat",
    ...                               "a cat ran"], "resid_pre", cs.logit_diff(5, 9), align="end")

    ``executor=cs.RayExecutor(workers=N)`` / ``out=folder`` / ``shards=k`` spread a data set of pairs over workers
    in checkpointed shards, as in :func:`activation_patching`: each shard computes its pairs' estimates, and they
    are combined here by the same reduction as one call on all pairs (``meta["executor"]`` says what ran).

    >>> atp = cs.attribution_patching("facts-gpt", clean_prompts, corrupted_prompts, "resid_pre", metric, shards=4)

    SAE and transcoder sites (``cs.Site(module, sae=sae, features=[...])``, see docs/sae.md) get a score for every
    latent at every position they select, on dims ``("direction", "site", "position", "feature")`` (no
    ``position`` for an activation without one), the ``feature`` coordinate holding the latents' indices: the
    same first-order estimate, ``grad_f . (f_clean - f_corrupted)`` with ``grad_f = grad_x @ W_dec[features].T``
    (``grad_x`` where the SAE writes its edit ``x + (f' - f) @ W_dec``: a transcoder's module output), from the same
    passes and backward. A site's scores summed over its positions and features estimate patching the whole site,
    as ``cs.activation_patching`` over the same site does exactly. Every SAE site of a call selects the same
    features and positions; pairs of different lengths need listed positions (e.g. ``positions=[-2, -1]``), which
    then label the ``position`` dim as given.

    >>> site = cs.Site("layers.2", sae=sae, features=[3, 7, 11], positions=[-1])
    >>> atp = cs.attribution_patching(m, clean, corrupted, [site], cs.logit_diff(5, 9), direction="both")
    >>> atp.sel(direction="denoise", site=site.name).dims                   # ('position', 'feature')
    """
    sharded = is_sharded(executor, out, shards)
    m = None if sharded else load(model)
    if direction not in ("denoise", "noise", "both"):
        raise InputError(f"direction must be 'denoise', 'noise' or 'both', got {direction!r}.")
    check_align(align)
    check_flag(per_example, "per_example")
    dirs: list[str] = ["denoise", "noise"] if direction == "both" else [str(direction)]
    latent = latent_sweep(sites, per)
    call = {"sites": sites, "per": per, "positions": positions, "align": align, "chunk_size": chunk_size,
            "per_example": per_example, "direction": direction, "dirs": dirs, "clean": clean,
            "corrupted": corrupted, "latent": latent}
    if m is None:
        settings = {"sites": sites, "per": per, "positions": positions, "align": align, "dirs": dirs,
                    "chunk_size": chunk_size}
        try:
            got = run_pairs("attribution_patching", _shard_estimates, model, clean, corrupted, metric, settings,
                            executor=executor, out=out, shards=shards, progress=None)
        except InputError as err:  # shards of one length each, but lengths that differ: the open positions differ
            if latent is not None and str(err).startswith("The sweep has a different number of cells"):
                latent.check_lengths(True)
            raise
        if latent is not None:
            latent.check_lengths("lengths" in got.plan["meta"])
        first = got.runs[0]  # the sweep as the shard that holds the first pair swept it
        gathered = _Gathered(tuple(first["dims"]), dict(first["coords"]), got.values, got.clean, got.corrupted)
        return _result(gathered, call, resolve_metric(metric, None), got.plan["model"], got.plan["dtype"],
                       got.plan["meta"], got.plan["tokens"], {"executor": got.info})
    metric_fn = resolve_metric(metric, m)
    pairs = split_pairs(m, clean, corrupted, sites, per, positions, align, "attribution_patching")
    if latent is not None:
        latent.check_lengths(pairs.groups is not None)
    gathered = _gather(m, pairs, sites, metric_fn, dirs, per, chunk_size)
    return _result(gathered, call, metric_fn, m.name, model_dtype(m.module), pairs.meta(), pairs.tokens(m))


@dataclass
class _Gathered:
    """Every pair's estimates in pair order (before any reduction) and the sweep."""

    dims: tuple[str, ...]
    coords: dict[str, list]
    est: torch.Tensor  # (dirs, cells, pairs): grad . (a_clean - a_corrupted)
    clean: torch.Tensor  # (pairs,)
    corrupted: torch.Tensor


def _gather(m: Model, pairs: Pairs, sites: Any, metric_fn: Any, dirs: list[str], per: str | None,
            chunk_size: int | None) -> _Gathered:
    """Every pair's estimate per cell (length by length), in the pairs' order."""
    values = [_estimates(m, part, sites, metric_fn, dirs, per, chunk_size) for part in pairs.parts]
    dims, coords = values[0].dims, dict(values[0].coords)
    pairs.check_cells([v.est.shape[1] for v in values])
    if pairs.labels is not None:
        coords["position"] = list(pairs.labels)
    P = sum(v.est.shape[-1] for v in values)
    est = pairs.gather([v.est for v in values], P)
    clean_all, corr_all = pairs.gather([v.clean for v in values], P), pairs.gather([v.corrupted for v in values], P)
    return _Gathered(dims, coords, est, clean_all, corr_all)


def _result(g: _Gathered, call: dict[str, Any], metric_fn: Any, model_name: str, dtype: torch.dtype,
            pairs_meta: dict[str, Any], tokens: Any, extra: dict[str, Any] | None = None) -> AttributionPatchingResult:
    """The reduction: every pair's estimates -> scores normalised by the averaged span (mean over pairs, or one
    score per pair with ``per_example``), and the result's meta. One call and its shards both end here."""
    dirs, dims, coords, est = call["dirs"], g.dims, g.coords, g.est
    latent: LatentSweep | None = call.get("latent")
    if latent is not None and "position" in coords and "lengths" in pairs_meta:  # one label for every length
        coords = {**coords, "position": latent.position_labels()}
    clean_all, corr_all = g.clean, g.corrupted
    P = est.shape[-1]
    m_clean, m_corr = float(clean_all.mean()), float(corr_all.mean())
    span = m_clean - m_corr
    if abs(span) < 1e-12 * max(1.0, abs(m_clean)):
        raise InputError(f"The metric is the same on the clean and corrupted inputs ({m_clean:.6g}).")
    shape = (len(dirs), *[len(coords[k]) for k in dims])
    meta: dict[str, Any] = {
        "method": "attribution_patching", "model": model_name, "per": call["per"], "metric": repr(metric_fn),
        "sites": _site_names(call["sites"], None),
        "positions": positions_setting(call["positions"]), "chunk_size": call["chunk_size"],
        "per_example": call["per_example"], "align": call["align"],
        "clean": input_setting(call["clean"]), "corrupted": input_setting(call["corrupted"]),
        "direction": call["direction"], "clean_metric": m_clean, "corrupted_metric": m_corr, "n_prompts": P,
        "title": f"attribution patching ({', '.join(dirs)})", **pairs_meta}
    flag_span(meta, span, m_clean, m_corr, dtype, "attribution_patching")
    meta.update(extra or {})
    if call["per_example"]:  # each pair's estimated patched metric, scored against the averaged ends like exact
        raw_all = torch.stack([corr_all + est[k] if n == "denoise" else clean_all - est[k]
                               for k, n in enumerate(dirs)])
        offset = torch.stack([(corr_all.double() - m_corr) if n == "denoise" else (m_clean - clean_all.double())
                              for n in dirs])  # (dirs, pairs): the pair's own base metric off the averaged one
        scores = ((offset[:, None, :] + est.double()) / span).float()
        meta["raw"] = raw_all.view(*shape, P).tolist()
        return AttributionPatchingResult(scores.reshape(*shape, P), ("direction", *dims, "example"),
                                         {"direction": dirs, **coords, "example": list(range(P))}, meta,
                                         name="attribution score").with_tokens(tokens)
    scores = est.mean(-1)  # the metric is averaged over prompts
    scores /= span
    meta["raw"] = (m_corr + scores * span if dirs == ["denoise"] else
                   torch.stack([m_corr + scores[k] * span if n == "denoise" else m_clean - scores[k] * span
                                for k, n in enumerate(dirs)])).view(shape).tolist()
    return AttributionPatchingResult(scores.view(shape), ("direction", *dims), {"direction": dirs, **coords}, meta,
                                     name="attribution score").with_tokens(tokens)


def _shard_estimates(m: Model, clean: Any, corrupted: Any, metric_fn: Any,
                     s: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One shard of pairs (on a worker): every pair's estimates as :func:`_gather` computes them for a call, and the
    shard's sweep."""
    pairs = shard_pairs(m, clean, corrupted, s["sites"], s["per"], s["positions"], s["align"],
                        "attribution_patching", s["labels"])
    latent = latent_sweep(s["sites"], s["per"])
    if latent is not None:
        latent.check_lengths(pairs.groups is not None)
    g = _gather(m, pairs, s["sites"], metric_fn, s["dirs"], s["per"], s["chunk_size"])
    return per_pair(g.est, g.clean, g.corrupted), {"dims": list(g.dims), "coords": g.coords}


@dataclass
class _Estimates:
    dims: tuple[str, ...]
    coords: dict[str, list]
    est: torch.Tensor  # (dirs, cells, pairs): each pair's first-order change, toward clean (denoise) / lost (noise)
    clean: torch.Tensor  # (pairs,) the metric on each clean / corrupted input
    corrupted: torch.Tensor


def _estimates(m: Model, part: Part, sites: Any, metric_fn: Any, dirs: list[str], per: str | None,
               chunk_size: int | None) -> _Estimates:
    """Every cell's estimate per pair (the directions asked), for pairs of one length."""
    metric_fn = for_pairs(metric_fn, part.index)  # one answer per pair: each row reads its own pair's
    clean_in, corr_in = part.clean, part.corrupted
    dims, coords, cells = sweep_cells(m, sites, per, part.positions, seq_len(clean_in), clean_in)
    if any(c.site.sae is not None for c in cells):  # SAE latents: a score per site, position and feature
        return _Estimates(*latent_estimates(m, clean_in, corr_in, cells, metric_fn, dirs, chunk_size))
    full = unique_full_sites(cells)
    runs = {}
    for name, inp, grads in (("clean", clean_in, "noise" in dirs), ("corrupted", corr_in, "denoise" in dirs)):
        runs[name] = m.run(inp, cache=full, grads=full if grads else (), metric=metric_fn, chunk_size=chunk_size)
    # both runs were given a metric
    y_clean, y_corr = (cast(torch.Tensor, runs[k].metric).float().cpu() for k in ("clean", "corrupted"))
    P = runs["clean"].n_rows
    est = torch.zeros(len(dirs), len(cells), P)
    resolved = {(s.module, s.io): (s, m.adapter.resolve(s)) for s in full}
    for i, name in enumerate(dirs):
        g_run = runs["corrupted"] if name == "denoise" else runs["clean"]
        # grad . (a_clean - a_corrupted), elementwise, once per site; each cell sums its selection of it
        prods = {k: (runs["clean"].cache[s.name] - runs["corrupted"].cache[s.name]) * g_run.grads[s.name]
                 for k, (s, _) in resolved.items()}
        for j, c in enumerate(cells):
            key = (c.site.module, c.site.io)
            est[i, j] = Engine._view(prods[key], c.site, resolved[key][1]).reshape(P, -1).sum(1).float().cpu()
    return _Estimates(dims, coords, est, y_clean, y_corr)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks with ties sharing their average rank (Spearman's definition)."""
    values, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return ((ends - counts.double() + ends - 1) / 2)[inverse]


def _site_names(sites: Any, cells: Any) -> Any:
    """The sweep as the call named it: a sweep's name, else each cell's site name."""
    if isinstance(sites, Site):
        sites = [sites]
    if isinstance(sites, str) or cells is None:
        return sites if isinstance(sites, str) else [str(getattr(s, "name", s)) for s in sites]
    return [str(c.site.name) for c in cells]
