"""Corrupt the inputs, then restore one site's clean activation at a time: how much of the clean prediction returns."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from ..core import ApplyContext, Intervention, Site, input_setting
from ..errors import InputError, check_flag, check_seed
from ..loading import load
from ..results import LabelledArray, index_runs, quantiles, resolve_backend
from ._inputs import as_site_arg, n_inputs, progress_for, readout_fn, split_data
from ._steering import softmax

CORRUPTIONS = ("noise", "zero", "uniform", "shuffle")
Corruption = str | Callable[[torch.Tensor], torch.Tensor]
SPREADS = ("std", "iqr", "sem", "minmax")


def corrupt(x: torch.Tensor, corruption: Corruption = "noise", *, scale: float = 0.5, seed: int = 0) -> torch.Tensor:
    """A corrupted copy of the inputs ``x`` (batch on dim 0); ``x`` itself is not changed.

    >>> cs.corrupt(X, "noise", scale=0.5, seed=0)     # X + 0.5 * N(0, 1)
    >>> cs.corrupt(X, "shuffle", seed=0)              # each input's features permuted (its own permutation)

    - ``"noise"``: ``x + scale * eps``, ``eps ~ N(0, 1)`` (the seed's default corruption, scale 0.5);
    - ``"zero"``: all zeros;
    - ``"uniform"``: ``U[0, 1)`` values, like the seed's ``"random"`` (``"random"`` is accepted too);
    - ``"shuffle"``: the features of each input (everything but dim 0, flattened) permuted, a different
      permutation per input (the seed's pixel shuffle); works on token ids too;
    - a callable ``f(x) -> tensor`` of ``x``'s shape.

    Randomness comes from a ``torch.Generator`` seeded with ``seed``, never the global RNG: the same seed
    gives the same corruption.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"corrupt() needs a tensor of inputs (batch on dim 0), got {type(x).__name__}.")
    if callable(corruption) and not isinstance(corruption, str):
        out = corruption(x.clone())
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise InputError(f"The corruption function must return a tensor of the inputs' shape {tuple(x.shape)}; got "
                             f"{tuple(getattr(out, 'shape', ())) or type(out).__name__}.")
        return out.to(x.dtype)
    kind = {"random": "uniform"}.get(corruption, corruption) if isinstance(corruption, str) else corruption
    if kind not in CORRUPTIONS:
        raise InputError(f"Unknown corruption {corruption!r}; choose from {', '.join(map(repr, CORRUPTIONS))} or pass "
                         f"a function inputs -> corrupted inputs.")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale < 0:
        raise InputError(f"scale must be a finite number >= 0, got {scale!r}.")
    g = torch.Generator(device="cpu").manual_seed(check_seed(seed))
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "shuffle":
        n = x.shape[0]
        flat = x.reshape(n, -1)
        perm = torch.rand(flat.shape, generator=g).argsort(1).to(x.device)
        return flat.gather(1, perm).reshape(x.shape)
    if not x.is_floating_point():
        raise InputError(f"corruption {kind!r} needs floating-point inputs; these are {x.dtype} (token ids?). Use "
                         f"'shuffle', 'zero' or a function of the inputs.")
    if kind == "noise":
        return x + float(scale) * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    return torch.rand(x.shape, generator=g, dtype=x.dtype).to(x.device)


@dataclass(eq=False)
class _Restore(Intervention):
    """Write the clean run's selection back: row ``r`` (base input ``i``) gets clean row ``i % n``."""

    clean: torch.Tensor

    def key(self) -> tuple:
        return ("Restore", id(self.clean))

    def __call__(self, x: torch.Tensor, src: Any, ctx: ApplyContext) -> torch.Tensor:
        rows = (ctx.input_index % self.clean.shape[0]).to(self.clean.device)
        return self.clean.index_select(0, rows).to(device=x.device, dtype=x.dtype)


class RestorationResult(LabelledArray):
    """Recovered probability of the clean prediction, dims ``("corruption", "site", "example")``.

    Each value is the probability, after restoring the clean activation at that site into the corrupted
    run, of the class the clean run predicts for that example. The site ``"all"`` restores every site at
    once. ``clean_prob`` / ``corrupted_prob`` are the two baselines.

    >>> r = cs.corrupt_and_restore(m, X, ["noise", "shuffle"], ["act1", "act2", "act3"])
    >>> r.summary().sel(corruption="noise")      # (site, stat): mean, std, sem, q25, median, q75
    >>> r.effect.mean("example")                 # restored - corrupted, per corruption and site
    >>> r.plot()                                 # mean line with a spread band per site
    """

    @property
    def sites(self) -> list[str]:
        return list(self.coords["site"])

    @property
    def corruptions(self) -> list[str]:
        return list(self.coords["corruption"])

    @property
    def clean_prob(self) -> torch.Tensor:
        """Probability of the clean prediction in the clean run, ``(example,)``."""
        return torch.tensor(self.meta["clean_prob"], dtype=self.values.dtype)

    @property
    def corrupted_prob(self) -> torch.Tensor:
        """Probability of the clean prediction in the corrupted run, ``(corruption, example)``."""
        return torch.tensor(self.meta["corrupted_prob"], dtype=self.values.dtype)

    @property
    def clean_pred(self) -> torch.Tensor:
        return torch.tensor(self.meta["clean_pred"], dtype=torch.long)

    @property
    def effect(self) -> LabelledArray:
        """Restored minus corrupted probability, per example (the seed's "effect")."""
        v = self.values - self.corrupted_prob[:, None, :]
        return LabelledArray(v, self.dims, self.coords, {**self.meta, "title": "restoration effect"}, name="effect")

    def recovered_fraction(self) -> LabelledArray:
        """``(mean restored - mean corrupted) / (mean clean - mean corrupted)`` per corruption and site:
        0 = nothing comes back, 1 = the clean probability (means first, so near-equal examples do not blow up)."""
        clean = float(self.clean_prob.double().mean())
        corr = self.corrupted_prob.double().mean(1)
        gap = clean - corr
        v = (self.values.double().mean(-1) - corr[:, None]) / torch.where(gap.abs() < 1e-12, torch.nan, gap)[:, None]
        return LabelledArray(v.float(), ("corruption", "site"), {k: self.coords[k] for k in ("corruption", "site")},
                             {**self.meta, "title": "recovered fraction"}, name="recovered fraction")

    def summary(self) -> LabelledArray:
        """``(corruption, site, stat)``: mean, std, sem, q25, median, q75 over the examples."""
        v = self.values.double()
        n = v.shape[-1]
        q = quantiles(v, [0.25, 0.5, 0.75], dim=-1).permute(1, 2, 0)
        std = v.std(-1, unbiased=False)
        stats = torch.stack([v.mean(-1), std, std / max(n, 1) ** 0.5, q[..., 0], q[..., 1], q[..., 2]], -1)
        return LabelledArray(stats.float(), ("corruption", "site", "stat"),
                             {"corruption": self.corruptions, "site": self.sites,
                              "stat": ["mean", "std", "sem", "q25", "median", "q75"]}, self.meta, name=self.name)

    def _band(self, spread: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if spread not in SPREADS:
            raise ValueError(f"spread must be one of {SPREADS}, got {spread!r}")
        v = self.values.double()
        mean = v.mean(-1)
        if spread == "iqr":
            q = quantiles(v, [0.25, 0.75], dim=-1)
            lo, hi = q[0], q[1]
        elif spread == "minmax":
            lo, hi = v.min(-1).values, v.max(-1).values
        else:
            s = v.std(-1, unbiased=False)
            if spread == "sem":
                s = s / max(v.shape[-1], 1) ** 0.5
            lo, hi = mean - s, mean + s
        return mean.numpy(), lo.numpy(), hi.numpy()

    def plot(self, ax: Any = None, backend: str = "matplotlib", spread: str = "std", **kw: Any) -> Any:
        """One panel per corruption: the mean recovered probability per site (line) with a band
        (``spread``: ``"std"`` = mean +- std, ``"iqr"`` = 25-75%, ``"sem"``, ``"minmax"``), and the clean and
        corrupted means as dashed lines."""
        backend = resolve_backend(backend)
        mean, lo, hi = self._band(spread)
        sites = self.sites
        clean = float(self.clean_prob.double().mean())
        corr = self.corrupted_prob.double().mean(1).numpy()
        n = self.shape[-1]
        title = f"restoring clean activations ({n} examples; band: {spread})"
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            # sites at 0, 1, ... with short tick labels (a site with a neuron list has a name hundreds of
            # characters long; the hover shows it whole); no fixed width; the legend goes under the panels
            fig = make_subplots(rows=1, cols=len(self.corruptions), subplot_titles=self.corruptions, shared_yaxes=True,
                                horizontal_spacing=0.04)
            pos = list(range(len(sites)))
            for k, _ in enumerate(self.corruptions):
                col = k + 1
                fig.add_trace(go.Scatter(x=pos + pos[::-1], y=list(hi[k]) + list(lo[k][::-1]), mode="lines",
                                         fill="toself", fillcolor="rgba(31,119,180,0.2)", line={"width": 0},
                                         hoverinfo="skip",
                                         showlegend=k == 0, name=spread), 1, col)
                fig.add_trace(go.Scatter(x=pos, y=mean[k], mode="lines+markers", name="restored (mean)",
                                         line={"color": "#1f77b4"}, showlegend=k == 0, customdata=sites,
                                         hovertemplate="%{customdata}: %{y:.3f}<extra>restored (mean)</extra>"),
                              1, col)
                fig.add_trace(go.Scatter(x=pos, y=[clean] * len(sites), mode="lines", name="clean",
                                         line={"dash": "dash", "color": "#2ca02c"}, showlegend=k == 0,
                                         hovertemplate="clean: %{y:.3f}<extra></extra>"), 1, col)
                fig.add_trace(go.Scatter(x=pos, y=[corr[k]] * len(sites), mode="lines", name="corrupted",
                                         line={"dash": "dash", "color": "#d62728"}, showlegend=k == 0,
                                         hovertemplate="corrupted: %{y:.3f}<extra></extra>"), 1, col)
                fig.update_xaxes(tickmode="array", tickvals=pos, ticktext=[_short_site(s) for s in sites],
                                 range=[-0.3, len(sites) - 0.7], title_text="site restored", row=1, col=col)
            fig.update_yaxes(title_text="p(clean prediction)", range=[0, 1.02], row=1, col=1)
            fig.update_layout(title=title, height=460, margin={"b": 120},
                              legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.25, "yanchor": "top"})
            return fig
        from matplotlib.figure import Figure

        C = len(self.corruptions)
        if ax is not None and C != 1:
            raise ValueError("ax= draws one corruption: pass r.isel(corruption=[k]) wrapped in RestorationResult")
        if ax is None:
            fig = Figure(figsize=(4.2 * C + 0.6, 3.8), layout="constrained")
            axes = list(fig.subplots(1, C, squeeze=False, sharey=True)[0])
        else:
            fig, axes = ax.figure, [ax]
        x = np.arange(len(sites))
        for k, a in enumerate(axes):
            a.fill_between(x, lo[k], hi[k], alpha=0.25, color="#1f77b4", label=spread)
            a.plot(x, mean[k], "o-", color="#1f77b4", label="restored (mean)", **kw)
            a.axhline(clean, ls="--", color="#2ca02c", label="clean")
            a.axhline(corr[k], ls="--", color="#d62728", label="corrupted")
            a.set_xticks(x)
            a.set_xticklabels(sites, rotation=45 if len(sites) > 5 else 0, fontsize=8)
            a.set_xlabel("site restored")
            a.set_title(str(self.corruptions[k]))
            a.set_ylim(-0.02, 1.02)
            a.grid(True, alpha=0.3)
        axes[0].set_ylabel("p(clean prediction)")
        axes[0].legend(fontsize=7)
        fig.suptitle(title, fontsize=10)
        return fig


def _short_site(name: str, limit: int = 16) -> str:
    """A site's name for a tick label: runs of neuron (or head, position) indices as ``a-b``, the selection on
    a second line, each line cut at ``limit`` characters.

    >>> _short_site("act1[neurons=0,1,2,3,4,5,6,7]"), _short_site("act2")
    ('act1<br>[neurons=0-7]', 'act2')
    >>> _short_site("blocks.11.attn.hook_z[heads=1,5,9,10,11,12,13,14]")
    'blocks.11.attn.…<br>[heads=1,5,9-14]'
    """
    module, bracket, rest = index_runs(name).partition("[")
    lines = [module] + ([bracket + rest] if bracket else [])
    return "<br>".join(line if len(line) <= limit + 2 else line[:limit - 1] + "…" for line in lines)


def _name(c: Corruption, i: int) -> str:
    if isinstance(c, str):
        return {"random": "uniform"}.get(c, c)
    return str(getattr(c, "__name__", f"custom{i}"))


def corrupt_and_restore(model: Any, inputs: Any, corruption: Corruption | Sequence[Corruption] = "noise",
                        sites: Sequence[Any] | None = None, *, scale: float = 0.5, seed: int = 0,
                        all_sites: bool = True, readout: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        chunk_size: int | None = None) -> RestorationResult:
    """Corrupt the inputs, then restore the clean activation at one site at a time; measure what comes back.

    >>> r = cs.corrupt_and_restore("digits-mlp", X[:500], ["noise", "zero", "shuffle"],
    ...                            [cs.Site("act1", neurons=range(128)), "act2", "act3"], scale=0.5, seed=0)
    >>> r.summary().sel(stat="mean")     # (corruption, site): mean p(clean prediction) after restoring
    >>> r.clean_prob.mean(), r.corrupted_prob.mean(1)
    >>> r.plot(spread="iqr")

    For every example, corruption (see :func:`corrupt`; a list runs several) and site, the value is the
    probability of the clean run's predicted class after the site's clean activation is written into
    the corrupted run; site ``"all"`` restores every site at once (``all_sites=False`` drops it). The
    corrupted run itself and the clean run are the baselines (``corrupted_prob``, ``clean_prob``).
    Restoring a site that everything downstream depends on alone (the last layer; on a plain chain MLP
    any whole layer) gives back the clean output exactly; a part of a layer (``cs.Site("act1",
    neurons=...)``) or a position of a transformer's residual stream is where it gets informative.

    One clean run caches the sites; then all (corruption, site, example) rows run in batched engine passes
    on the original model (the seed copies the model for every layer and example). ``readout`` maps the
    output to ``(rows, classes)`` logits (default: the output, or the last position of LM logits). The
    model is not changed.
    """
    m = load(model)
    seed = check_seed(seed)
    check_flag(all_sites, "all_sites")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale < 0:
        raise InputError(f"scale must be a finite number >= 0, got {scale!r}.")
    X, _ = split_data(inputs, None, need_labels=False)
    if isinstance(X, (str, list)) and (tokenize := getattr(m.adapter, "tokenize", None)) is not None:
        X = tokenize(X)
    if not isinstance(X, torch.Tensor):
        raise InputError(f"corrupt_and_restore needs the inputs as one tensor (batch on dim 0), or prompts for a "
                         f"language model; got {type(X).__name__}.")
    if sites is None:
        L = m.n_layers
        if not L:
            raise InputError(f"Pass sites=[...]: the sites to restore, e.g. {m.site_names()[:6]}.")
        sites = [f"layers.{i}" for i in range(int(L))]
    if isinstance(sites, (str, Site)):
        sites = [sites]
    st = [as_site_arg(s) for s in sites]
    if not st:
        raise InputError("sites is empty: give at least one site to restore.")
    names = [s.name for s in st]
    if len(set(names)) != len(names):
        raise InputError(f"sites repeat: {names}.")
    corruptions: list[Corruption] = (list(corruption) if isinstance(corruption, (list, tuple))
                                     else [cast(Corruption, corruption)])
    if not corruptions:
        raise InputError("corruption is empty: give one corruption or a list.")
    labels = [_name(c, i) for i, c in enumerate(corruptions)]
    if len(set(labels)) != len(labels):
        raise InputError(f"corruptions repeat: {labels} (give functions distinct __name__s).")
    n = n_inputs(m, X)
    metric_all = readout_fn(readout)
    clean = m.run(X, cache=st, metric=lambda y: softmax(metric_all(y).float()),
                  chunk_size=chunk_size, progress=progress_for(n))
    p_clean_all = cast(torch.Tensor, clean.metric)  # metric= given: never None
    pred = p_clean_all.argmax(-1)
    uniq, pos = torch.unique(pred, return_inverse=True)
    p_clean = p_clean_all.gather(1, pred[:, None])[:, 0]

    def metric(y: torch.Tensor) -> torch.Tensor:  # only the classes some clean run predicts
        return softmax(metric_all(y).float())[:, uniq.to(y.device)]

    corrupted = torch.cat([corrupt(X, c, scale=scale, seed=seed) for c in corruptions])
    restores = {s: _Restore(clean.cache[s.name]) for s in st}
    groups: list[dict] = [{}] + [{s: restores[s]} for s in st] + ([dict(restores)] if all_sites else [])
    C, G = len(corruptions), len(groups)
    rows: list[dict] = []
    index: list[int] = []
    for c in range(C):
        block = list(range(c * n, (c + 1) * n))
        for g in groups:
            rows += [g] * n
            index += block
    run = m.run(corrupted, rows, input_index=index, metric=metric,
                chunk_size=chunk_size, progress=progress_for(len(rows)))
    probs = cast(torch.Tensor, run.metric)  # metric= given: never None
    p = probs.cpu().view(C, G, n, -1).gather(3, pos.view(1, 1, n, 1).expand(C, G, n, 1))[..., 0]
    site_labels = names + (["all"] if all_sites else [])
    meta = {"method": "corrupt_and_restore", "model": m.name, "sites": names, "corruptions": labels, "scale": scale,
            "seed": seed, "n_examples": n, "clean_prob": p_clean.tolist(), "clean_pred": pred.tolist(),
            "corrupted_prob": p[:, 0].tolist(), "readout": repr(readout), "inputs": input_setting(inputs),
            "corruption": labels, "all_sites": all_sites, "chunk_size": chunk_size,
            "title": "p(clean prediction) after restoring each site"}
    return RestorationResult(p[:, 1:].contiguous(), ("corruption", "site", "example"),
                             {"corruption": labels, "site": site_labels}, meta, name="p(clean prediction)")
