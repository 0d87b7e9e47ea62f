"""Class directions in activation space: per-class mean minus the global mean, their similarities, plots."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from ..core import Site, input_setting
from ..errors import InputError
from ..loading import load
from ..results import LabelledArray, heatmap, resolve_backend
from ._inputs import as_matrix, as_site_arg, check_labels, n_inputs, progress_for, split_data

Center = Literal["class_means", "samples"]


def _sorted_unique(y: list[Any]) -> list[Any]:
    uniq = list(dict.fromkeys(y))
    try:
        return sorted(uniq)
    except TypeError:
        return uniq


# -- result types -----------------------------------------------------------------------------------------------------
class SimilarityMatrix(LabelledArray):
    """Cosine similarities between class directions, dims ``("class_a", "class_b")``.

    >>> sim = cs.class_directions(m, (X, y), "act2").similarity()
    >>> sim.sel(class_a=3, class_b=8).values          # cos(direction 3, direction 8)
    >>> sim.most_similar(5); sim.plot()               # annotated heatmap
    """

    def most_similar(self, k: int = 10) -> list[tuple[Any, Any, float]]:
        """The ``k`` pairs (a, b, cosine) with a before b, by |cosine|, largest first (the seed's ranking)."""
        labels = self.coords["class_a"]
        v = self.values
        pairs = [(labels[i], labels[j], float(v[i, j])) for i in range(len(labels)) for j in range(i + 1, len(labels))]
        pairs.sort(key=lambda p: abs(p[2]), reverse=True)
        return pairs[: max(0, int(k))]

    def plot(self, ax: Any = None, backend: str = "matplotlib", annotate: bool | None = None, **kw: Any) -> Any:
        """Heatmap (RdBu_r, -1 .. 1) with each cell's value written in it (up to 20 classes by default)."""
        backend = resolve_backend(backend)
        data = self.numpy()
        labels = [str(c) for c in self.coords["class_a"]]
        annotate = len(labels) <= 20 if annotate is None else annotate
        title = self.meta.get("title", "cosine similarity of class directions")
        return heatmap(data, labels, labels, title=title, row_title="class", col_title="class",
                       value_title="cosine similarity", vmin=-1, vmax=1, cmap="RdBu_r", colorscale="RdBu", reverse=True,
                       text_dark=lambda v: abs(v) > 0.5, annotate=annotate, backend=backend, ax=ax, size=(6.4, 5.4),
                       plotly_size=(None, 500), **kw)


class DirectionsResult(LabelledArray):
    """One direction per class at a site, dims ``("class", "neuron")``; see :func:`class_directions`.

    >>> r = cs.class_directions(m, (X, y), "act2")
    >>> r.direction(7)                  # tensor (d,): mean activation of class 7 minus the global mean
    >>> r.diff_of_means(3, 8)           # mean of class 3 minus mean of class 8
    >>> r.similarity().most_similar(5)  # the most similar pairs of class directions
    >>> r.plot(); r.plot("similarity")  # bars with the top neurons marked; annotated cosine heatmap
    """

    @property
    def classes(self) -> list[Any]:
        return list(self.coords["class"])

    @property
    def site(self) -> str:
        return str(self.meta["site"])

    @property
    def directions(self) -> torch.Tensor:
        """All directions, ``(classes, d)``, in the order of :attr:`classes`."""
        return self.values

    @property
    def class_means(self) -> torch.Tensor:
        """Mean activation of each class, ``(classes, d)``."""
        return torch.tensor(self.meta["class_means"], dtype=self.values.dtype)

    @property
    def global_mean(self) -> torch.Tensor:
        """The centre the directions are measured from, ``(d,)`` (see ``meta["center"]``)."""
        return torch.tensor(self.meta["global_mean"], dtype=self.values.dtype)

    @property
    def counts(self) -> dict[Any, int]:
        return dict(zip(self.classes, self.meta["counts"]))

    def _index(self, c: Any) -> int:
        try:
            return self.classes.index(c)
        except ValueError:
            raise InputError(f"Unknown class {c!r}; the classes are {self.classes}.") from None

    def direction(self, c: Any, normalize: bool = False) -> torch.Tensor:
        """The direction of class ``c`` (``(d,)``), unit length with ``normalize=True``."""
        v = self.values[self._index(c)].clone()
        return v / v.norm().clamp_min(1e-12) if normalize else v

    def diff_of_means(self, a: Any, b: Any) -> torch.Tensor:
        """Mean activation of class ``a`` minus that of class ``b`` (``(d,)``): a direction from b to a."""
        means = self.class_means
        return means[self._index(a)] - means[self._index(b)]

    def similarity(self) -> SimilarityMatrix:
        """Cosine similarity between every pair of class directions (``(classes, classes)``)."""
        v = self.values.double()
        unit = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sim = (unit @ unit.T).to(self.values.dtype)
        meta = {**self.meta, "title": f"cosine similarity of class directions at {self.site}"}
        meta.pop("class_means", None)
        meta.pop("global_mean", None)
        return SimilarityMatrix(sim, ("class_a", "class_b"), {"class_a": self.classes, "class_b": self.classes},
                                meta, name="cosine similarity")

    def most_similar(self, k: int = 10) -> list[tuple[Any, Any, float]]:
        """The ``k`` most similar pairs of class directions by |cosine|: ``[(a, b, cosine), ...]``."""
        return self.similarity().most_similar(k)

    def top_neurons(self, c: Any, k: int = 5) -> list[int]:
        """The ``k`` neurons with the largest |value| in the direction of class ``c``, largest first."""
        v = self.values[self._index(c)]
        return v.abs().argsort(descending=True)[: max(0, int(k))].tolist()

    def plot(self, kind: str = "bars", ax: Any = None,  # type: ignore[override]  # public API: kind= comes first
             backend: str = "matplotlib", classes: Sequence[Any] | None = None, top: int = 5, **kw: Any) -> Any:
        """``kind="bars"``: one bar chart per class (neuron index across), the ``top`` neurons of largest
        |value| marked (red positive, blue negative) and labelled. ``kind="similarity"``: the annotated
        cosine-similarity heatmap (:meth:`SimilarityMatrix.plot`)."""
        backend = resolve_backend(backend)
        if kind == "similarity":
            return self.similarity().plot(ax=ax, backend=backend, **kw)
        if kind != "bars":
            raise ValueError(f"kind must be 'bars' or 'similarity', got {kind!r}")
        chosen = self.classes if classes is None else list(classes)
        idx = [self._index(c) for c in chosen]
        data = self.numpy()
        d = data.shape[1]
        cols = min(5, len(idx))
        rows = -(-len(idx) // cols)
        title = f"class directions at {self.site}"
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"class {c}" for c in chosen])
            for k, i in enumerate(idx):
                v = data[i]
                marked = set(self.top_neurons(self.classes[i], top))
                colors = ["#d62728" if (n in marked and v[n] > 0) else "#1f77b4" if n in marked else "#b0b0b0"
                          for n in range(d)]
                fig.add_trace(go.Bar(x=list(range(d)), y=v, marker_color=colors, showlegend=False,
                                     hovertemplate="neuron %{x}: %{y:.4f}<extra></extra>"), k // cols + 1, k % cols + 1)
            fig.update_layout(title=title, height=260 * rows + 80)  # no fixed width: the panels share it
            return fig
        from matplotlib.figure import Figure

        if ax is not None and len(idx) != 1:
            raise ValueError("ax= draws one class: pass classes=[c] with it")
        if ax is None:
            fig = Figure(figsize=(3.4 * cols, 2.6 * rows + 0.4), layout="constrained")
            axes = list(np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel()))
        else:
            fig, axes = ax.figure, [ax]
        for a, i in zip(axes, idx):
            v = data[i]
            tops = self.top_neurons(self.classes[i], top)
            a.bar(range(d), v, color="#b0b0b0", width=1.0)
            for n in tops:
                a.bar(n, v[n], color="#d62728" if v[n] > 0 else "#1f77b4", width=1.0)
                a.annotate(str(n), (n, v[n]), ha="center", va="bottom" if v[n] > 0 else "top", fontsize=6)
            a.axhline(0, color="k", lw=0.5)
            a.set_title(f"class {self.classes[i]}", fontsize=9)
            a.set_xlabel("neuron", fontsize=8)
            a.tick_params(labelsize=7)
        for a in axes[len(idx):]:
            a.set_visible(False)
        fig.suptitle(f"{title} (top {top} |value| marked: red > 0, blue < 0)", fontsize=10)
        return fig


# -- the method -------------------------------------------------------------------------------------------------------
def class_directions(model: Any, data: Any, site: Site | str, *, labels: Any = None, center: Center = "class_means",
                     chunk_size: int | None = None) -> DirectionsResult:
    """The direction of each class at a site: its mean activation minus the global mean.

    >>> X, y = cs.data.digits()                                  # or any (inputs, labels) pair
    >>> r = cs.class_directions("digits-mlp", (X, y), "act2")    # post-ReLU of fc2, as in the seed
    >>> r.direction(7).shape, r.classes                          # torch.Size([128]), [0, 1, ..., 9]
    >>> r.most_similar(3)                                        # [(a, b, cosine), ...] by |cosine|
    >>> r.plot(); r.plot("similarity")

    ``data``: ``(inputs, labels)``, an object with ``X`` and ``y``, or the inputs with ``labels=`` (ints,
    strings or bools: any class labels). The activations come from one engine run with ``cache=[site]``
    (chunked by the engine). The site may be any site of any model, as long as its selection is one
    vector per input: on a language model select a position, e.g. ``cs.Site("layers.1", positions=-1)``.

    ``center="class_means"`` (default, the seed's definition) subtracts the unweighted mean of the class
    means, so the directions sum to zero whatever the class sizes; ``center="samples"`` subtracts the mean
    over all inputs. ``r.diff_of_means(a, b)`` is the plain difference of two class means. The model is not
    changed.
    """
    if center not in ("class_means", "samples"):
        raise InputError(f"center must be 'class_means' (the mean of the class means) or 'samples' (the mean over "
                         f"all inputs); got {center!r}.")
    m = load(model)
    st = as_site_arg(site)
    X, y = split_data(data, labels, need_labels=True)
    assert y is not None
    n = n_inputs(m, X)
    check_labels(y, n)
    classes = _sorted_unique(y)
    if len(classes) < 2:
        raise InputError(f"class_directions needs at least 2 classes; the labels hold only {classes}.")
    run = m.run(X, cache=[st], keep_output=False, chunk_size=chunk_size,
                progress=progress_for(n))
    acts = as_matrix(run.cache[st.name], st).detach().cpu()
    dtype = acts.dtype if acts.is_floating_point() else torch.float32
    a64 = acts.double()
    pos = {c: i for i, c in enumerate(classes)}
    idx = torch.tensor([pos[v] for v in y], dtype=torch.long)
    counts = torch.bincount(idx, minlength=len(classes))
    sums = torch.zeros(len(classes), a64.shape[1], dtype=torch.float64).index_add_(0, idx, a64)
    means = sums / counts[:, None]
    centre = means.mean(0) if center == "class_means" else a64.mean(0)
    directions = (means - centre).to(dtype)
    meta = {"method": "class_directions", "model": m.name, "site": st.name, "center": center, "n_inputs": n,
            "classes": classes, "counts": counts.tolist(), "class_means": means.to(dtype).tolist(),
            "global_mean": centre.to(dtype).tolist(), "data": input_setting(data),
            "labels": None if labels is None else "given", "chunk_size": chunk_size,
            "title": f"class directions at {st.name}"}
    return DirectionsResult(directions, ("class", "neuron"), {"class": classes}, meta, name="direction")
