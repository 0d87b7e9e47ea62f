"""The result of activation patching: scores per direction, raw metric values, asymmetry, plots."""
from __future__ import annotations

from typing import Any

import torch

from ..errors import check_int
from ..results import LabelledArray, axis_labels, resolve_backend

EXPLANATION = """\
Denoising (clean activation into the corrupted run) asks whether a site is *sufficient*: does it alone
bring the clean behaviour back? Noising (corrupted activation into the clean run) asks whether it is
*necessary*: does the behaviour break without it? Scores are fractions of the clean-corrupted gap.

The two disagree when components act together. In an AND-like circuit (every input needed), restoring
one input does little (low denoise) but removing one breaks everything (high noise): asymmetry =
noise - denoise > 0. In an OR-like circuit (any input suffices), restoring one input brings the
behaviour back (high denoise) while removing one is compensated by the others (low noise): asymmetry
< 0. A sweep in one direction alone therefore misses half of such a circuit: denoising misses AND
components, noising misses OR components. Integrated gradients with the corrupted input as baseline
credits both kinds.
"""


class PatchingResult(LabelledArray):
    """Activation-patching scores with dims ``("direction", ...)``; see :func:`activation_patching`.

    >>> r = cs.activation_patching(m, clean, corrupted, "resid_pre", metric)
    >>> r.denoise, r.noise, r.asymmetry, r.raw
    >>> r.top(5)          # the cells with the largest |score| in each direction
    >>> print(r.explain()); fig = r.plot()
    """

    def _direction(self, name: str) -> LabelledArray:
        if name not in self.coords["direction"]:
            raise ValueError(f"this result has no {name!r} direction (it has {self.coords['direction']}); run "
                             f"activation_patching(..., direction='both').")
        return self.sel(direction=name)

    @property
    def denoise(self) -> LabelledArray:
        """Clean activation into the corrupted run: 0 = corrupted, 1 = clean behaviour restored."""
        return self._direction("denoise")

    @property
    def noise(self) -> LabelledArray:
        """Corrupted activation into the clean run: fraction of the clean behaviour lost."""
        return self._direction("noise")

    @property
    def asymmetry(self) -> LabelledArray:
        """``noise - denoise`` per cell: > 0 AND-like (necessary, not sufficient), < 0 OR-like."""
        a = self.noise.values - self.denoise.values
        dims = self.dims[1:]
        return LabelledArray(a, dims, {k: self.coords[k] for k in dims}, {**self.meta, "title": "asymmetry "
                             "(noise - denoise)"}, name="asymmetry", aux_coords=self.aux_coords)

    @property
    def raw(self) -> LabelledArray:
        """The metric values themselves (mean over prompts), before normalisation."""
        return LabelledArray(torch.tensor(self.meta["raw"]), self.dims, self.coords, self.meta, name="metric",
                             aux_coords=self.aux_coords)

    def explain(self) -> str:
        """What the two directions and their asymmetry mean, plus the cells where they disagree most."""
        text = EXPLANATION
        if len(self.coords["direction"]) == 2:
            asym = self.asymmetry
            flat = asym.values.flatten()
            idx = flat.abs().argsort(descending=True)[:5]
            lines = []
            for i in idx.tolist():
                label = _label(asym, i)
                kind = "AND-like" if flat[i] > 0 else "OR-like"
                lines.append(f"  {label}: denoise {self.denoise.values.flatten()[i]:+.3f}, noise "
                             f"{self.noise.values.flatten()[i]:+.3f}, asymmetry {flat[i]:+.3f} ({kind})")
            text += "\nLargest asymmetries:\n" + "\n".join(lines) + "\n"
        return text

    def top(self, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` cells with the largest |score| per direction, as dicts (direction, cell, score)."""
        k = check_int(k, "k", low=1, hint="It is how many cells to list per direction.")
        out = []
        for name in self.coords["direction"]:
            a = self.sel(direction=name)
            flat = a.values.flatten()
            for i in flat.abs().argsort(descending=True)[:k].tolist():
                out.append({"direction": name, "cell": _label(a, i), "score": float(flat[i])})
        return out

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """Denoise and noise side by side (and their asymmetry): heatmaps for 2-D sweeps, bars for 1-D; a
        ``per_example`` result is drawn as its mean over the examples."""
        backend = resolve_backend(backend)
        if "example" in self.dims:
            return PatchingResult.from_array(self.mean("example")).plot(ax, backend, **kw)
        panels = [(n, self.sel(direction=n)) for n in self.coords["direction"]]
        if len(panels) == 2:
            panels.append(("asymmetry (noise - denoise)", self.asymmetry))
        if backend == "plotly":
            return _plotly(panels, self.meta.get("title", "activation patching"))
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.6 * len(panels), 3.8), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for a, (title, arr) in zip(axes, panels):
            data = arr.numpy()
            if arr.ndim == 1:
                labels = axis_labels(arr.coords[arr.dims[0]], arr.aux_coords, arr.dims[0])
                a.bar(range(len(labels)), data, color=["#b2182b" if v < 0 else "#2166ac" for v in data])
                a.set_xticks(range(len(labels)))
                a.set_xticklabels(labels, rotation=60 if len(labels) > 6 else 0, fontsize=8)
                a.axhline(0, color="k", lw=0.5)
                a.set_xlabel(arr.dims[0])
            else:
                lim = max(float(abs(data).max()), 1e-9)
                im = a.imshow(data, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
                rows, cols = arr.dims
                a.set_xlabel(cols)
                a.set_ylabel(rows)
                a.set_xticks(range(data.shape[1]))
                a.set_xticklabels(axis_labels(arr.coords[cols], arr.aux_coords, cols), fontsize=7,
                                  rotation=60 if cols == "position" and data.shape[1] > 6 else 0)
                a.set_yticks(range(data.shape[0]))
                a.set_yticklabels(axis_labels(arr.coords[rows], arr.aux_coords, rows), fontsize=7)
                fig.colorbar(im, ax=a)
            a.set_title(title)
        return fig


def _label(a: LabelledArray, flat_index: int) -> str:
    idx = torch.unravel_index(torch.tensor(flat_index), a.shape)
    return ", ".join(f"{d}={a.coords[d][int(i)]}" for d, i in zip(a.dims, idx))


def _plotly(panels: list[tuple[str, LabelledArray]], title: str) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    # No fixed width: the panels share the figure's width. Each heatmap has its own colour scale, so each
    # gets its own slim colour bar just right of it (the gap between panels leaves room for it).
    grid = all(arr.ndim == 2 for _, arr in panels)
    gap = 0.1 if grid else 0.06
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for t, _ in panels], shared_yaxes=grid,
                        horizontal_spacing=gap)
    for k, (_, arr) in enumerate(panels, start=1):
        data = arr.numpy()
        if arr.ndim == 1:
            bars = axis_labels(arr.coords[arr.dims[0]], arr.aux_coords, arr.dims[0])
            fig.add_trace(go.Bar(x=bars, y=data, showlegend=False,
                                 hovertemplate="%{x}: %{y:.4~g}<extra></extra>"), 1, k)
            fig.update_xaxes(type="category", title_text=arr.dims[0], row=1, col=k)
        else:
            rows, cols = arr.dims
            lim = max(float(abs(data).max()), 1e-9)
            right = fig.get_subplot(1, k).xaxis.domain[1]
            fig.add_trace(go.Heatmap(z=data, x=axis_labels(arr.coords[cols], arr.aux_coords, cols),
                                     y=axis_labels(arr.coords[rows], arr.aux_coords, rows), colorscale="RdBu", zmid=0,
                                     zmin=-lim, zmax=lim,
                                     colorbar={"x": right + 0.008, "xanchor": "left", "thickness": 10, "len": 0.9,
                                               "tickfont": {"size": 10}},
                                     hovertemplate=f"{rows} %{{y}}, {cols} %{{x}}: %{{z:.4~g}}<extra></extra>"), 1, k)
            fig.update_yaxes(autorange="reversed", type="category", row=1, col=k)
            fig.update_xaxes(type="category", title_text=cols, row=1, col=k)
            if k == 1:
                fig.update_yaxes(title_text=rows, row=1, col=k)
    fig.update_layout(title=title, height=420, margin={"r": 70})
    return fig
