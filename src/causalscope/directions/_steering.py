"""Steering: add strength x direction at a site, for sweeps of strengths and source x target class matrices.

Every strength and every (direction, input) pair is a row of batched engine passes with ``cs.Add`` at the
site: no model copies, no hooks outside the engine.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from ..core import Add, input_setting
from ..errors import InputError, check_flag
from ..loading import load
from ..results import LabelledArray, heatmap, resolve_backend
from ._classes import DirectionsResult
from ._inputs import (
    as_site_arg,
    check_labels,
    class_index,
    class_indices,
    n_inputs,
    progress_for,
    readout_fn,
    split_data,
)

MEASURES = ("prob", "predicted")
MATRIX_STATS = ("frac_target", "frac_source", "p_target", "p_source")


def _direction_tensor(direction: Any, what: str = "direction") -> torch.Tensor:
    if isinstance(direction, np.ndarray):
        direction = torch.from_numpy(direction)
    if isinstance(direction, (list, tuple)):
        direction = torch.tensor(direction, dtype=torch.float32)
    if not isinstance(direction, torch.Tensor):
        raise InputError(f"{what} must be a tensor (the vector to add at the site), got {type(direction).__name__}.")
    if not direction.is_floating_point():
        direction = direction.float()
    if direction.ndim == 0 or not torch.isfinite(direction).all():
        raise InputError(f"{what} must be a finite vector shaped like the site's selection (e.g. (d,)); got "
                         f"shape {tuple(direction.shape)}" + ("" if direction.ndim == 0 else " with NaN / inf") + ".")
    if not bool(direction.any()):
        raise InputError(f"{what} is all zeros (shape {tuple(direction.shape)}): adding it changes nothing, so every "
                         f"strength would give the unsteered output. Pass the vector to steer along.")
    return direction.detach()


def _strengths(strengths: Any) -> list[float]:
    if isinstance(strengths, (int, float)) and not isinstance(strengths, bool):
        strengths = [strengths]
    if isinstance(strengths, (torch.Tensor, np.ndarray)):
        strengths = strengths.tolist()
    if not isinstance(strengths, Sequence) or isinstance(strengths, str) or not strengths:
        raise InputError(f"strengths must be a number or a non-empty list of numbers, got {strengths!r}.")
    out = []
    for s in strengths:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(float(s)):
            raise InputError(f"strengths must be finite numbers; got {s!r} in {list(strengths)!r}.")
        out.append(float(s))
    if len(set(out)) != len(out):
        raise InputError(f"strengths repeat a value: {out}; list each strength once.")
    return out


def _probs_metric(readout: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def probs(y: torch.Tensor) -> torch.Tensor:
        logits = readout(y)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise InputError(f"readout must return (rows, classes) logits; got "
                             f"{tuple(getattr(logits, 'shape', ())) or type(logits).__name__}.")
        return softmax(logits.float())
    return probs


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.softmax(-1)``, written out: on CPU torch's kernel is ~6x slower for a few classes per row."""
    e = (logits - logits.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


# -- results ----------------------------------------------------------------------------------------------------------
class SteeringResult(LabelledArray):
    """A steering sweep, dims ``("strength", "measure", "class")``; see :func:`steer`.

    ``measure``: ``"prob"`` (the mean probability of each output class over the inputs) and
    ``"predicted"`` (the fraction of inputs predicted as each class: the predicted-class histogram).

    >>> r = cs.steer(m, (X7, y7), "fc2", dirs.direction(7), [0, 0.5, 1, 2, 5], target=7)
    >>> r.accuracy.values, r.p_target.values, r.counts     # per strength; counts: (strength, class) ints
    >>> r.summary().to_frame(); r.plot()
    """

    @property
    def strengths(self) -> list[float]:
        return list(self.coords["strength"])

    @property
    def target(self) -> int | None:
        return self.meta.get("target")

    @property
    def probs(self) -> LabelledArray:
        """Mean probability of each class, ``(strength, class)``."""
        return self._named(self.sel(measure="prob"), "mean probability")

    @property
    def predicted(self) -> LabelledArray:
        """Fraction of inputs predicted as each class, ``(strength, class)``."""
        return self._named(self.sel(measure="predicted"), "fraction predicted")

    @property
    def counts(self) -> torch.Tensor:
        """Predicted-class histogram: number of inputs predicted as each class, ``(strength, class)`` ints."""
        return (self.sel(measure="predicted").values.double() * int(self.meta["n_inputs"])).round().long()

    def _per_strength(self, key: str, name: str) -> LabelledArray:
        if self.meta.get(key) is None:
            raise InputError(f"This sweep has no {name}: pass labels (data=(inputs, labels) or labels=) to steer().")
        return LabelledArray(torch.tensor(self.meta[key], dtype=torch.float32), ("strength",),
                             {"strength": self.strengths}, {**self.meta, "title": name}, name=name)

    @property
    def accuracy(self) -> LabelledArray:
        """Fraction of inputs predicted as their own label, per strength (needs labels)."""
        return self._per_strength("accuracy", "accuracy")

    @property
    def p_true(self) -> LabelledArray:
        """Mean probability of each input's own label (its source class), per strength (needs labels)."""
        return self._per_strength("p_true", "p(true class)")

    @property
    def p_target(self) -> LabelledArray:
        """Mean probability of the target class, per strength (needs ``target=``)."""
        if self.target is None:
            raise InputError("This sweep has no target class: pass target= to steer().")
        return self._named(self.probs.sel(**{"class": self.target}), f"p(class {self.target})")

    @property
    def frac_target(self) -> LabelledArray:
        """Fraction of inputs predicted as the target class, per strength (needs ``target=``)."""
        if self.target is None:
            raise InputError("This sweep has no target class: pass target= to steer().")
        return self._named(self.predicted.sel(**{"class": self.target}), f"predicted {self.target}")

    @staticmethod
    def _named(a: LabelledArray, name: str) -> LabelledArray:
        return LabelledArray(a.values, a.dims, a.coords, {**a.meta, "title": name}, name=name)

    def summary(self) -> LabelledArray:
        """``(strength, stat)``: accuracy and p(true class) (with labels), p(target) and the fraction predicted
        as the target (with ``target=``)."""
        cols: list[tuple[str, torch.Tensor]] = []
        if self.meta.get("accuracy") is not None:
            cols += [("accuracy", self.accuracy.values), ("p_true", self.p_true.values)]
        if self.target is not None:
            cols += [("p_target", self.p_target.values), ("frac_target", self.frac_target.values)]
        if not cols:
            raise InputError("Nothing to summarise without labels or a target: read r.probs / r.predicted.")
        return LabelledArray(torch.stack([c for _, c in cols], 1), ("strength", "stat"),
                             {"strength": self.strengths, "stat": [n for n, _ in cols]}, self.meta, name="value")

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """Left: the summary lines against strength (accuracy, p(true), p(target), fraction predicted as the
        target). Right: the predicted-class histogram (class x strength). ``ax`` is not used (two panels)."""
        backend = resolve_backend(backend)
        has_summary = self.meta.get("accuracy") is not None or self.target is not None
        lines = self.summary() if has_summary else None
        pred = self.predicted.numpy()
        x = self.strengths
        classes = [str(c) for c in self.coords["class"]]
        title = self.meta.get("title", "steering")
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=1, cols=2, subplot_titles=["outcomes", "predicted class (fraction)"],
                                horizontal_spacing=0.1)
            if lines is not None:
                for j, stat in enumerate(lines.coords["stat"]):
                    fig.add_trace(go.Scatter(x=x, y=lines.numpy()[:, j], mode="lines+markers",
                                             name=str(stat).replace("_", " "),
                                             hovertemplate="strength %{x}: %{y:.3f}<extra>%{fullData.name}</extra>"),
                                  1, 1)
            fig.add_trace(go.Heatmap(z=pred.T, x=[f"{s:g}" for s in x], y=classes, colorscale="Viridis", zmin=0,
                                     zmax=1, colorbar={"title": {"text": "fraction"}, "thickness": 12},
                                     hovertemplate="strength %{x}, class %{y}: %{z:.3f}<extra></extra>"), 1, 2)
            fig.update_xaxes(title_text="strength", row=1, col=1)
            fig.update_yaxes(title_text="fraction / probability", range=[-0.02, 1.02], row=1, col=1)
            fig.update_xaxes(title_text="strength", type="category", row=1, col=2)
            fig.update_yaxes(title_text="predicted class", type="category", autorange="reversed", row=1, col=2)
            # no fixed width; the legend sits under the line panel, away from the colour bar on the right
            fig.update_layout(title=title, height=460, margin={"b": 100},
                              legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top"})
            return fig
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 4), layout="constrained")
        a1, a2 = fig.subplots(1, 2)
        if lines is not None:
            for j, stat in enumerate(lines.coords["stat"]):
                a1.plot(x, lines.numpy()[:, j], "o-", label=stat, **kw)
            a1.legend(fontsize=8)
        a1.set_ylim(-0.02, 1.02)
        a1.set_xlabel("strength")
        a1.set_ylabel("fraction / probability")
        a1.grid(True, alpha=0.3)
        a1.set_title(title)
        im = a2.imshow(pred.T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        a2.set_xticks(range(len(x)))
        a2.set_xticklabels([f"{s:g}" for s in x], rotation=90 if len(x) > 8 else 0)
        if len(classes) <= 40:
            a2.set_yticks(range(len(classes)))
            a2.set_yticklabels(classes)
        a2.set_xlabel("strength")
        a2.set_ylabel("predicted class")
        a2.set_title("predicted class (fraction of inputs)")
        fig.colorbar(im, ax=a2)
        return fig


class SteeringMatrix(LabelledArray):
    """Source x target steering outcomes, dims ``("source", "target", "stat")``; see :func:`steering_matrix`.

    Row ``s``, column ``t``: the inputs of class ``s`` with the direction of class ``t`` added. ``stat``:
    ``frac_target`` (fraction predicted ``t``), ``frac_source`` (fraction still predicted ``s``: their
    accuracy), ``p_target`` / ``p_source`` (mean probability of ``t`` / of ``s``).

    >>> M = cs.steering_matrix(m, (X, y), "fc2", dirs, strength=1.0)
    >>> M.stat("frac_target")           # (source, target): how often adding t's direction makes it t
    >>> M.accuracy.values.T * 100       # the seed's cross-digit matrix (rows: direction, cols: inputs), in %
    >>> M.plot("frac_target")
    """

    @property
    def sources(self) -> list[Any]:
        return list(self.coords["source"])

    @property
    def targets(self) -> list[Any]:
        return list(self.coords["target"])

    @property
    def strength(self) -> float:
        return float(self.meta["strength"])

    def stat(self, name: str) -> LabelledArray:
        """One statistic as a ``(source, target)`` array."""
        if name not in MATRIX_STATS:
            raise InputError(f"Unknown stat {name!r}; choose from {', '.join(MATRIX_STATS)}.")
        a = self.sel(stat=name)
        return LabelledArray(a.values, a.dims, a.coords, {**self.meta, "title": f"{name} (strength {self.strength:g})"},
                             name=name)

    @property
    def accuracy(self) -> LabelledArray:
        """Fraction of each source class still predicted as itself, per added direction (``frac_source``)."""
        return self.stat("frac_source")

    @property
    def baseline(self) -> LabelledArray:
        """Without steering: the fraction of each source class predicted as each class, ``(source, class)``."""
        if self.meta.get("baseline_predicted") is None:
            raise InputError("This matrix was computed with baseline=False.")
        v = torch.tensor(self.meta["baseline_predicted"], dtype=torch.float32)
        return LabelledArray(v, ("source", "class"), {"source": self.sources}, {**self.meta, "title": "baseline"},
                             name="fraction predicted")

    def plot(self, stat: str = "frac_target", ax: Any = None,  # type: ignore[override]  # public API: stat= first
             backend: str = "matplotlib", annotate: bool | None = None, **kw: Any) -> Any:
        """Annotated heatmap of one statistic: source class down, added direction (target) across."""
        backend = resolve_backend(backend)
        a = self.stat(stat)
        data = a.numpy()
        src = [str(c) for c in self.sources]
        tgt = [str(c) for c in self.targets]
        annotate = max(len(src), len(tgt)) <= 20 if annotate is None else annotate
        title = f"steering at {self.meta['site']}, strength {self.strength:g}: {stat}"
        return heatmap(data, src, tgt, title=title, row_title="source class (inputs)",
                       col_title="target class (direction added)", value_title=stat, vmin=0, vmax=1, cmap="viridis",
                       colorscale="Viridis", text_dark=lambda v: v < 0.5, annotate=annotate, backend=backend, ax=ax,
                       **{"reverse": False, "plotly_size": (None, 520), **kw})


# -- methods ----------------------------------------------------------------------------------------------------------
def steer(model: Any, inputs: Any, site: Any, direction: Any, strengths: Any = (0.0, 0.5, 1.0, 2.0, 5.0), *,
          labels: Any = None, target: int | None = None, readout: Callable[[torch.Tensor], torch.Tensor] | None = None,
          chunk_size: int | None = None) -> SteeringResult:
    """Add ``strength * direction`` at a site for every strength of a sweep, and measure the outputs.

    >>> dirs = cs.class_directions(m, (X, y), "act2")
    >>> sevens = (X[y == 7], y[y == 7])
    >>> r = cs.steer(m, sevens, "fc2", dirs.direction(7), [0, 0.2, 0.5, 1, 2, 5], target=7)
    >>> r.accuracy.values                # class accuracy per strength (the seed's sweep)
    >>> r.probs.sel(strength=2.0)        # mean probability of every class at strength 2
    >>> r.counts                         # predicted-class histogram per strength
    >>> r.plot()

    ``inputs``: the inputs, or ``(inputs, labels)`` (or ``labels=``); labels give the accuracy and the
    mean probability of each input's own class (``p_true``). ``direction``: a vector that broadcasts to the
    site's selection (``(d,)``), or a :class:`DirectionsResult` with ``target=`` naming its class.
    ``target``: the output class whose probability to follow (``p_target``, ``frac_target``).
    ``readout``: maps the model output to ``(rows, classes)`` logits (default: the output itself when 2-D,
    the last position of LM logits).

    Every (strength, input) pair is one row of batched engine passes with ``cs.Add(direction, strength)``
    at the site, on the original model: no copies, no hooks outside the engine. The model is not changed.
    """
    m = load(model)
    st = as_site_arg(site)
    X, y = split_data(inputs, labels, need_labels=False)
    if isinstance(direction, DirectionsResult):
        if target is None:
            raise InputError("direction is a DirectionsResult: name the class whose direction to add with target=.")
        direction = direction.direction(target)
    vec = _direction_tensor(direction)
    ks = _strengths(strengths)
    n = n_inputs(m, X)
    check_labels(y, n)
    adds = [Add(vec, strength=s) for s in ks]
    rows: list[dict] = []
    index: list[int] = []
    base = list(range(n))
    for a in adds:
        rows += [{st: a}] * n  # one dict per strength, shared by its n rows
        index += base
    run = m.run(X, rows, input_index=index, metric=_probs_metric(readout_fn(readout)),
                chunk_size=chunk_size, progress=progress_for(len(rows)))
    probs = cast(torch.Tensor, run.metric).view(len(ks), n, -1).cpu()  # metric= given: never None
    C = probs.shape[-1]
    pred = probs.argmax(-1)
    hist = torch.nn.functional.one_hot(pred, C).sum(1)
    values = torch.stack([probs.double().mean(1), hist.double() / n], 1).float()
    meta: dict[str, Any] = {"method": "steer", "model": m.name, "site": st.name, "strengths": ks, "n_inputs": n,
                            "direction_norm": float(vec.norm()), "n_classes": C, "readout": repr(readout),
                            "inputs": input_setting(inputs), "direction": input_setting(direction),
                            "labels": None if labels is None else "given", "target": target,
                            "chunk_size": chunk_size, "title": f"steering at {st.name}"}
    if target is not None:
        meta["target"] = class_index(target, C, "target")
        meta["title"] = f"steering at {st.name} toward class {meta['target']}"
    if y is not None:
        yt = class_indices(y, C, "label")
        meta["accuracy"] = (pred == yt).double().mean(1).tolist()
        meta["p_true"] = probs.gather(2, yt.view(1, n, 1).expand(len(ks), n, 1)).double().mean((1, 2)).tolist()
    return SteeringResult(values, ("strength", "measure", "class"),
                          {"strength": ks, "measure": list(MEASURES), "class": list(range(C))}, meta,
                          name="value")


def _directions_of(directions: Any) -> tuple[list[Any], list[torch.Tensor]]:
    if isinstance(directions, DirectionsResult):
        return directions.classes, [directions.direction(c) for c in directions.classes]
    if isinstance(directions, Mapping):
        if not directions:
            raise InputError("directions is empty.")
        return list(directions), [_direction_tensor(v, f"directions[{k!r}]") for k, v in directions.items()]
    if isinstance(directions, (torch.Tensor, np.ndarray)):
        t = _direction_tensor(directions, "directions")
        if t.ndim < 2:
            raise InputError(f"directions as a tensor must be (classes, d), one row per target class; got shape "
                             f"{tuple(t.shape)}. For one direction use cs.steer().")
        return list(range(t.shape[0])), list(t)
    raise InputError(f"directions must be a DirectionsResult, a dict {{class: vector}} or a (classes, d) tensor; got "
                     f"{type(directions).__name__}.")


def steering_matrix(model: Any, data: Any, site: Any, directions: Any, strength: float = 1.0, *, labels: Any = None,
                    baseline: bool = True, readout: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    chunk_size: int | None = None) -> SteeringMatrix:
    """For every source class s and target class t: the inputs of class s with t's direction added.

    >>> dirs = cs.class_directions(m, (X, y), "act2")
    >>> M = cs.steering_matrix(m, (X, y), "fc2", dirs, strength=1.0)
    >>> M.stat("frac_target")            # (source, target): fraction predicted t
    >>> M.stat("p_source")               # mean probability that is left on the inputs' own class
    >>> M.plot("frac_target")

    This is the seed's cross-digit experiment, all cells at once: every input runs once per target
    direction (plus once unsteered, for ``M.baseline``, unless ``baseline=False``), all as rows of batched
    engine passes with ``cs.Add(direction_t, strength)`` at the site. The seed's matrix (accuracy on the
    inputs of one digit with another digit's direction added, direction down, inputs across, in %) is
    ``M.accuracy.values.T * 100``. ``directions``: a :class:`DirectionsResult`, a dict ``{class: vector}``
    or a ``(classes, d)`` tensor (classes 0..k-1). Labels and target classes must be output class indices.
    The model is not changed.
    """
    m = load(model)
    check_flag(baseline, "baseline")
    st = as_site_arg(site)
    X, y = split_data(data, labels, need_labels=True)
    assert y is not None
    n = n_inputs(m, X)
    check_labels(y, n)
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not math.isfinite(float(strength)):
        raise InputError(f"strength must be a finite number, got {strength!r}. For a sweep call steering_matrix once "
                         f"per strength, or use cs.steer().")
    targets, vecs = _directions_of(directions)
    rows: list[dict] = []
    index: list[int] = []
    base = list(range(n))
    if baseline:
        rows += [{}] * n
        index += base
    for v in vecs:
        rows += [{st: Add(v, strength=float(strength))}] * n
        index += base
    run = m.run(X, rows, input_index=index, metric=_probs_metric(readout_fn(readout)),
                chunk_size=chunk_size, progress=progress_for(len(rows)))
    probs = cast(torch.Tensor, run.metric).cpu().view(len(vecs) + int(baseline), n, -1).double()  # metric= given
    C = probs.shape[-1]
    t_idx = torch.tensor([class_index(t, C, "target class") for t in targets], dtype=torch.long)
    y_idx = class_indices(y, C, "label")
    sources = sorted(set(y_idx.tolist()))
    s_idx = torch.tensor(sources, dtype=torch.long)
    K, S, R = len(targets), len(sources), probs.shape[0]
    pos = torch.searchsorted(s_idx, y_idx)                              # each input's source class (0 .. S-1)
    counts = torch.bincount(pos, minlength=S).double()
    mean_p = probs.new_zeros(R, S, C).index_add_(1, pos, probs) / counts[None, :, None]      # (rows, S, C)
    hits = torch.bincount((torch.arange(R)[:, None] * S + pos[None]).mul(C).add(probs.argmax(-1)).flatten(),
                          minlength=R * S * C).view(R, S, C)
    frac = hits.double() / counts[None, :, None]                        # fraction of each source predicted c
    off = int(baseline)
    kk = torch.arange(K)
    out = torch.empty(S, K, len(MATRIX_STATS), dtype=torch.float64)
    for i, s in enumerate(sources):
        out[i, :, 0] = frac[off + kk, i, t_idx]
        out[i, :, 1] = frac[off + kk, i, s]
        out[i, :, 2] = mean_p[off + kk, i, t_idx]
        out[i, :, 3] = mean_p[off + kk, i, s]
    meta: dict[str, Any] = {"method": "steering_matrix", "model": m.name, "site": st.name, "strength": float(strength),
                            "n_inputs": n, "counts": counts.long().tolist(), "n_classes": C,
                            "direction_norms": [float(v.norm()) for v in vecs], "readout": repr(readout),
                            "data": input_setting(data), "directions": input_setting(directions),
                            "labels": None if labels is None else "given", "baseline": baseline,
                            "chunk_size": chunk_size, "title": f"steering matrix at {st.name}"}
    if baseline:
        meta["baseline_predicted"] = frac[0].float().tolist()
        meta["baseline_prob"] = mean_p[0].float().tolist()
    return SteeringMatrix(out.float(), ("source", "target", "stat"),
                          {"source": sources, "target": [int(t) for t in t_idx], "stat": list(MATRIX_STATS)}, meta,
                          name="value")
