"""Class directions in activation space: per-class mean minus the global mean, their similarities, plots."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from ..core import Site
from ..errors import InputError
from ..loading import load
from ..results import LabelledArray

Center = Literal["class_means", "samples"]


# -- shared input helpers (also used by _steering and _restoration) ---------------------------------------------------
def as_site_arg(site: Any) -> Site:
    if isinstance(site, Site):
        return site
    if isinstance(site, str) and site:
        return Site(site)
    raise InputError(f"site must be a cs.Site or a module / canonical name such as 'fc2' or 'layers.1'; got "
                     f"{type(site).__name__} {site!r}.")


def _labels_list(y: Any, what: str = "labels") -> list[Any]:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y) if y.dtype.kind in "biuf" else y
    if isinstance(y, torch.Tensor) and y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise InputError(f"{what} must be class labels (ints, strings or bools); got non-integer floats.")
        y = y.long()
    if isinstance(y, torch.Tensor):
        if y.ndim != 1:
            raise InputError(f"{what} must be 1-D (one label per input), got shape {tuple(y.shape)}.")
        return y.tolist()
    if isinstance(y, np.ndarray):
        if y.ndim != 1:
            raise InputError(f"{what} must be 1-D (one label per input), got shape {y.shape}.")
        return y.tolist()
    if isinstance(y, (list, tuple, range)):
        out = [v.item() if isinstance(v, (np.generic, torch.Tensor)) else v for v in y]
        for v in out:
            if not isinstance(v, (int, float, str, bool)) or isinstance(v, float) and not float(v).is_integer():
                raise InputError(f"{what} must be ints, strings or bools (class labels); got {v!r}.")
        return [int(v) if isinstance(v, float) else v for v in out]
    raise InputError(f"{what} must be a 1-D tensor, array or list of class labels; got {type(y).__name__}.")


def split_data(data: Any, labels: Any = None, *, need_labels: bool) -> tuple[Any, list[Any] | None]:
    """``(inputs, labels)`` from ``data``: an ``(X, y)`` pair, an object with ``X`` / ``y`` (or sklearn's
    ``data`` / ``target``), a dict with ``"X"`` / ``"y"``, or inputs alone with ``labels=``."""
    if labels is not None:
        return _tensor(data), _labels_list(labels)
    X = y = None
    if isinstance(data, Mapping) and "X" in data and "y" in data:
        X, y = data["X"], data["y"]
    elif isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], str) \
            and _label_like(data[1]):
        X, y = data
    elif hasattr(data, "X") and hasattr(data, "y"):
        X, y = data.X, data.y
    elif hasattr(data, "data") and hasattr(data, "target"):
        X, y = data.data, data.target
    if X is None:
        if need_labels:
            raise InputError("This method needs class labels: pass data=(inputs, labels), or the inputs with "
                             "labels=[...] (one label per input).")
        return _tensor(data), None
    return _tensor(X), _labels_list(y)


def _label_like(y: Any) -> bool:
    """A 1-D integer / bool tensor or array, or a list of labels: the second item of an (inputs, labels) pair
    (a float tensor there is the second positional input of a model taking two)."""
    if isinstance(y, (torch.Tensor, np.ndarray)):
        return y.ndim == 1 and not (y.dtype.is_floating_point if isinstance(y, torch.Tensor) else y.dtype.kind == "f")
    return isinstance(y, (list, range)) or (isinstance(y, tuple) and not any(isinstance(v, torch.Tensor) for v in y))


def _tensor(X: Any) -> Any:
    """numpy arrays become tensors (floats as float32); anything else is passed to the engine as it is."""
    if isinstance(X, np.ndarray):
        return torch.from_numpy(X).float() if X.dtype.kind == "f" else torch.from_numpy(X)
    return X


def n_inputs(m: Any, X: Any) -> int:
    return int(m.adapter.prepare(X).size)


def check_labels(y: list[Any] | None, n: int) -> None:
    if y is not None and len(y) != n:
        raise InputError(f"Got {len(y)} labels for {n} inputs; give one label per input.")


def as_matrix(acts: torch.Tensor, site: Site, what: str = "class_directions") -> torch.Tensor:
    """``(n, d)`` from a site's selection: singleton axes between the batch and the last are dropped."""
    if acts.ndim == 1:
        return acts[:, None]
    if acts.ndim == 2:
        return acts
    if all(s == 1 for s in acts.shape[1:-1]):
        return acts.reshape(acts.shape[0], acts.shape[-1])
    hint = f"cs.Site({site.module!r}, positions=-1)" if site.positions is None else "one position and one head"
    raise InputError(f"{what} needs one vector per input at the site, but {site.name!r} gives "
                     f"{tuple(acts.shape[1:])} per input (axes between the batch and the last one must have size "
                     f"1). Select one position / head, e.g. {hint}.")


def readout_fn(readout: Callable[[torch.Tensor], torch.Tensor] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The logits of each row: 2-D outputs as they are, LM logits (rows, tokens, vocab) at the last position."""
    if readout is not None:
        if not callable(readout):
            raise InputError(f"readout must be a function output -> (rows, classes) logits; got {readout!r}.")
        return readout

    def default(y: torch.Tensor) -> torch.Tensor:
        if y.ndim == 2:
            return y
        if y.ndim == 3:
            return y[:, -1]
        raise InputError(f"The model output is {tuple(y.shape)}; expected (rows, classes) logits or LM logits "
                         f"(rows, tokens, vocab). Pass readout=lambda out: ... returning (rows, classes).")
    return default


def class_index(label: Any, n_classes: int, what: str) -> int:
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) < n_classes:
        raise InputError(f"{what} {label!r} is not an output class: steering outcomes are measured on output "
                         f"classes 0 .. {n_classes - 1}, so class labels must be those indices. For directions of "
                         f"other labels (strings, token classes) pass the vector, dirs.direction(c), and name the "
                         f"output index to follow with target=.")
    return int(label)


def class_indices(labels: list[Any], n_classes: int, what: str) -> torch.Tensor:
    """``labels`` as a LongTensor of output classes (each checked by :func:`class_index`)."""
    if labels and set(map(type, labels)) <= {int} and 0 <= min(labels) and max(labels) < n_classes:
        return torch.tensor(labels, dtype=torch.long)
    return torch.tensor([class_index(v, n_classes, what) for v in labels], dtype=torch.long)


def progress_for(n_rows: int) -> bool | None:
    """No progress bar for runs of a few seconds at most (CPU chunks are small, so the engine's rule of
    "more than 3 chunks" would show one for a 10k-row run of an MLP); the engine's rule above 200k rows."""
    return None if n_rows > 200_000 else False


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
        data = self.numpy()
        labels = [str(c) for c in self.coords["class_a"]]
        annotate = len(labels) <= 20 if annotate is None else annotate
        title = self.meta.get("title", "cosine similarity of class directions")
        from ..results import annotated_heatmap

        return annotated_heatmap(data, labels, labels, title=title, row_title="class", col_title="class",
                                 value_title="cosine similarity", vmin=-1, vmax=1, cmap="RdBu_r", colorscale="RdBu",
                                 reverse=True, text_dark=lambda v: abs(v) > 0.5, annotate=annotate, backend=backend,
                                 ax=ax, size=(6.4, 5.4), plotly_size=(560, 500), **kw)


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

    def plot(self, kind: str = "bars", ax: Any = None, backend: str = "matplotlib",
             classes: Sequence[Any] | None = None, top: int = 5, **kw: Any) -> Any:
        """``kind="bars"``: one bar chart per class (neuron index across), the ``top`` neurons of largest
        |value| marked (red positive, blue negative) and labelled. ``kind="similarity"``: the annotated
        cosine-similarity heatmap (:meth:`SimilarityMatrix.plot`)."""
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
                tops = set(self.top_neurons(self.classes[i], top))
                colors = ["#d62728" if (n in tops and v[n] > 0) else "#1f77b4" if n in tops else "#b0b0b0"
                          for n in range(d)]
                fig.add_trace(go.Bar(x=list(range(d)), y=v, marker_color=colors, showlegend=False,
                                     hovertemplate="neuron %{x}: %{y:.4f}<extra></extra>"), k // cols + 1, k % cols + 1)
            fig.update_layout(title=title, height=260 * rows + 80, width=260 * cols + 80)
            return fig
        if backend != "matplotlib":
            raise ValueError(f"backend must be 'matplotlib' or 'plotly', got {backend!r}")
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
            "global_mean": centre.to(dtype).tolist(), "title": f"class directions at {st.name}"}
    return DirectionsResult(directions, ("class", "neuron"), {"class": classes}, meta, name="direction")
