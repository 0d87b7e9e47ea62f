"""Linear probes per site, with a control task (selectivity) and a causal check by steering.

>>> r = cs.probe("digits-mlp", cs.data.digits("test"), ["act1", "act2", "act3"])
>>> r.accuracy.values, r.control_accuracy.values, r.selectivity.values
>>> chk = r.steer_check("digits-mlp", cs.data.digits("test"), "act2", source=3, target=8,
...                     strengths=[0, 2, 4, 8])
>>> chk.probe.sel(stat="fraction").values       # share of 3s now classified as 8, per strength

A probe answers "is the label linearly decodable from this activation?"; the control task (Hewitt & Liang
2019) answers "could the same probe have memorised it anyway?"; the steering check answers "does the model
*use* the probe's direction?". Only the last one is causal.

This module holds the three entry points that need each other (``ProbeResult.steer_check`` calls
:func:`probe_steering`, which fits with :func:`probe` when no probe is given); the fitting and the control task
are in ``_probe_fit``, :class:`SteeringCheck` and the steering run in ``_probe_steering``, and the reading of
``data`` / ``labels`` (shared with the rest of the family) in ``_inputs``.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..core import Site, as_site, input_setting
from ..errors import InputError, check_flag, check_int, check_seed
from ..loading import load
from ..results import LabelledArray, resolve_backend
from ._inputs import PROBE_NEEDS_LABELS, check_labels, count_inputs, split_data
from ._probe_fit import (
    CONTROLS,
    MAX_ITER,
    METRICS,
    activations,
    class_codes,
    control_labels,
    fit_probe,
    probe_directions,
)
from ._probe_steering import SteeringCheck, steer_along_probe


def _probe_data(data: Any, labels: Any) -> tuple[Any, np.ndarray, int]:
    """``(inputs, labels as a numpy vector, n)``: ``data`` in any form :func:`split_data` reads, counted without a
    model (the probe takes subsets of the inputs)."""
    inputs, y = split_data(data, labels, need_labels=True, missing=PROBE_NEEDS_LABELS)
    n = count_inputs(inputs)
    check_labels(y, n)
    return inputs, np.asarray(y), n


class ProbeResult(LabelledArray):
    """Probe and control-task accuracies per site: dims ``("site", "metric")``.

    ``metric``: ``accuracy`` (held-out accuracy of the probe on the task), ``control_accuracy`` (held-out
    accuracy of the same probe trained on the control task), ``selectivity`` (= accuracy - control_accuracy),
    ``train_accuracy``, ``control_train_accuracy`` (what the probe fits on its training split: a high control
    train accuracy means the probe can memorise random labels of the types it has seen), ``majority`` (accuracy
    of always predicting the training split's most frequent class).

    >>> r = cs.probe(model, (X, y), ["act1", "act2"])
    >>> r.accuracy.values, r.selectivity.values
    >>> r.directions("act2")          # (class, feature) unit probe directions in activation space
    >>> r.probes["act2"]              # the fitted scikit-learn pipeline
    >>> r.plot()                      # accuracy and control accuracy per site, selectivity bars

    Beyond the array (which ``save`` writes), the object holds the fitted probes, their directions, the
    train / test indices and the control labels; ``load_result`` gives back the array only.
    """

    probes: dict[str, Any]
    classes: list[Any]
    train_index: np.ndarray
    test_index: np.ndarray
    control_labels: dict[str, np.ndarray]
    feature_shapes: dict[str, tuple[int, ...]]
    _dirs: dict[str, torch.Tensor]

    def _metric(self, name: str) -> LabelledArray:
        a = self.sel(metric=name)
        return LabelledArray(a.values, a.dims, a.coords, {**a.meta, "title": name.replace("_", " ")}, name=name)

    @property
    def accuracy(self) -> LabelledArray:
        """Held-out accuracy of the probe per site."""
        return self._metric("accuracy")

    @property
    def control_accuracy(self) -> LabelledArray:
        """Held-out accuracy of the same probe on the control task per site."""
        return self._metric("control_accuracy")

    @property
    def selectivity(self) -> LabelledArray:
        """``accuracy - control_accuracy`` per site (Hewitt & Liang's selectivity)."""
        return self._metric("selectivity")

    def _site_key(self, site: Site | str) -> str:
        name = as_site(site).name
        if name not in self.coords["site"]:
            raise InputError(f"This probe result has no site {name!r}; it has {self.coords['site']}.")
        return name

    def _class_index(self, label: Any) -> int:
        hits = [i for i, c in enumerate(self.classes) if c == label or str(c) == str(label)]
        if not hits:
            raise InputError(f"Class {label!r} is not one of the probe's classes {self.classes}.")
        return hits[0]

    def directions(self, site: Site | str) -> LabelledArray:
        """The probe's unit class directions at ``site`` in activation space, dims ``("class", "feature")``."""
        key = self._site_key(site)
        return LabelledArray(self._dirs[key], ("class", "feature"), {"class": self.classes},
                             {**self.meta, "site": key, "title": f"probe directions at {key}"}, name="weight")

    def direction(self, site: Site | str, label: Any) -> torch.Tensor:
        """One class's unit direction, shaped like the site's selection of one input (e.g. ``(d,)``, ``(1, d)``)."""
        key = self._site_key(site)
        return self._dirs[key][self._class_index(label)].reshape(self.feature_shapes[key])

    def steer_check(self, model: Any, data: Any, site: Site | str, source: Any, target: Any,
                    strengths: Sequence[float], **kw: Any) -> SteeringCheck:
        """:func:`probe_steering` with this result's probe: add ``strength x`` the ``target`` class direction at
        ``site`` to the inputs of class ``source``; compare with random directions of the same norm."""
        return probe_steering(model, data, site, source, target, strengths, probe=self, **kw)

    def summary(self) -> str:
        kinds = sorted(set(self.meta["control"].values()))
        lines = [f"probes on {self.meta['n_train']} train / {self.meta['n_test']} test inputs, "
                 f"{len(self.classes)} classes, control: {'; '.join(kinds) if kinds else 'none'}"]
        if self.meta.get("control_degenerate"):
            lines.append(f"  (!) the control labels of {self.meta['control_degenerate']} are a single class (too few "
                         f"types): their control accuracy is trivially high")
        lines.append(f"  {'site':24s} {'accuracy':>9s} {'control':>8s} {'select.':>8s} {'majority':>9s}")
        for s in self.coords["site"]:
            v = {k: float(self.sel(site=s, metric=k).values) for k in METRICS}
            lines.append(f"  {s:24s} {v['accuracy']:9.3f} {v['control_accuracy']:8.3f} {v['selectivity']:+8.3f} "
                         f"{v['majority']:9.3f}")
        return "\n".join(lines)

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """Left: accuracy and control accuracy per site (with the majority baseline); right: selectivity bars."""
        backend = resolve_backend(backend)
        sites = [str(s) for s in self.coords["site"]]
        vals = {k: self.sel(metric=k).values.numpy() for k in METRICS}
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=1, cols=2, subplot_titles=("probe accuracy per site", "selectivity"))
            for k, dash in (("accuracy", None), ("control_accuracy", None), ("majority", "dot")):
                fig.add_trace(go.Scatter(x=sites, y=vals[k], mode="lines+markers", name=k.replace("_", " "),
                                         line={"dash": dash}), row=1, col=1)
            fig.add_trace(go.Bar(x=sites, y=vals["selectivity"], name="selectivity", marker_color="#A59FD9"),
                          row=1, col=2)
            fig.update_yaxes(range=[0, 1.05], row=1, col=1)
            fig.update_layout(title={"text": self.meta.get("title", "probes")})
            return fig
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(10, 3.8), layout="constrained")
            ax1, ax2 = fig.subplots(1, 2)
        else:
            fig, ax1, ax2 = ax.figure, ax, None
        x = np.arange(len(sites))
        ax1.plot(x, vals["accuracy"], "o-", label="probe (task)", color="#5A4FCF")
        ax1.plot(x, vals["control_accuracy"], "s--", label="probe (control task)", color="#999999")
        ax1.plot(x, vals["majority"], ":", label="majority class", color="#cc6666")
        for i, v in enumerate(vals["accuracy"]):
            ax1.annotate(f"{v:.2f}", (i, v), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
        ax1.set_xticks(x, sites, rotation=30, ha="right")
        ax1.set_ylim(0, 1.08)
        ax1.set_ylabel("held-out accuracy")
        ax1.set_title("probe accuracy per site")
        ax1.legend(fontsize=8, loc="center right")
        ax1.grid(alpha=0.3)
        if ax2 is not None:
            bars = ax2.bar(x, vals["selectivity"], color="#A59FD9")
            ax2.bar_label(bars, fmt="%.2f", fontsize=8)
            ax2.set_xticks(x, sites, rotation=30, ha="right")
            ax2.axhline(0, color="k", lw=0.8)
            ax2.set_ylabel("accuracy - control accuracy")
            ax2.set_title("selectivity")
        return fig


def probe(model: Any, data: Any, sites: Site | str | Sequence[Site | str], *, labels: Any = None,
          control: str | Sequence[Any] | None = "random", test_size: float = 0.25, seed: int = 0, C: float = 1.0,
          standardize: bool = True, chunk_size: int | None = None) -> ProbeResult:
    """Logistic-regression probes per site, held-out accuracy, and a control task for selectivity.

    >>> X, y = cs.data.digits("test")
    >>> r = cs.probe("digits-mlp", (X, y), ["act1", "act2", "act3"])
    >>> print(r.summary())
    >>> m = cs.load(hf_model, tok)
    >>> r = cs.probe(m, prompts, cs.Site("layers.1", positions=-1), labels=last_words)

    - **Activations**: one engine run over ``data`` caching every site in the same pass (prompts of different
      token lengths: one run per length). A site must give one vector per input: for token models select one
      position; extra axes (heads) are flattened. The model is never changed.
    - **Probe**: scikit-learn ``StandardScaler + LogisticRegression(C=C, max_iter=5000, random_state=seed)``
      (``standardize=False`` drops the scaler), fitted on a stratified split (``train_test_split(...,
      test_size=test_size, random_state=seed, stratify=labels)``); the accuracy is on the held-out part.
    - **Control task** (Hewitt & Liang 2019): every input *type* v gets a label C(v) drawn once, at random, from
      the empirical label distribution, and all inputs of that type share it. ``control="token"``: the type is
      the token id at the site's position (the paper's word type); ``"input"``: the input itself (identical
      inputs are one type, found by hashing them); a sequence: one type per input (e.g. cluster ids);
      ``None``: no control. ``"random"`` (default) picks per site: ``"token"`` for a single-position site of a
      token model whose position holds at least ``max(2, n_classes)`` distinct tokens, ``"input"`` otherwise
      (with one or two word types, e.g. every prompt ending in "the", the token control would be a constant
      label, trivially decodable). The control probe uses the same split and settings; **selectivity** =
      accuracy - control accuracy. With every input its own type no probe can beat chance on held-out control
      labels, so selectivity is accuracy minus chance; with repeating types (tokens) a probe that can read the
      type identity scores high on the control too, and low selectivity exposes it. ``meta["control"]``
      says which control each site got; ``meta["control_degenerate"]`` lists sites whose control labels came
      out as one class.
    - **Directions**: ``r.directions(site)``: each class's probe weight mapped to activation space
      (``w / sigma`` with the scaler), unit norm; :meth:`ProbeResult.steer_check` tests them causally.

    Returns a :class:`ProbeResult` (dims ``site x metric``).
    """
    m = load(model)
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or not 0 < test_size < 1:
        raise InputError(f"test_size must be a fraction in (0, 1), got {test_size!r}.")
    seed = check_seed(seed)
    check_flag(standardize, "standardize")
    if not (isinstance(C, (int, float)) and C > 0):
        raise InputError(f"C (inverse regularisation strength) must be a positive number, got {C!r}.")
    site_list = [as_site(s) for s in ([sites] if isinstance(sites, (Site, str)) else list(sites))]
    if not site_list:
        raise InputError("sites is empty: name at least one site, e.g. ['act1', 'act2'].")
    names = [s.name for s in site_list]
    if len(set(names)) != len(names):
        raise InputError(f"sites repeat a site: {names}.")
    inputs, y_raw, n = _probe_data(data, labels)
    classes, y = class_codes(y_raw)
    if control is not None and not isinstance(control, str) and len(control) != n:
        raise InputError(f"control types must be one per input: got {len(control)} for {n} inputs.")
    if isinstance(control, str) and control not in CONTROLS:
        raise InputError(f"control must be 'random' (random labels per input type: 'token' or 'input', chosen per "
                         f"site), 'token', 'input', a sequence of types (one per input) or None; got {control!r}.")

    from sklearn.model_selection import train_test_split

    n_test = int(np.ceil(test_size * n))
    if n_test < len(classes) or n - n_test < len(classes):
        raise InputError(f"{n} inputs split {n - n_test} / {n_test} (test_size={test_size}) leave fewer than one "
                         f"example per class ({len(classes)} classes) on a side. Use more inputs or another test_size.")
    train, test = train_test_split(np.arange(n), test_size=test_size, random_state=seed, stratify=y)
    acts, shapes, toks = activations(m, inputs, n, site_list, chunk_size)

    prior = np.bincount(y, minlength=len(classes)) / n
    hashes: list[str] | None = None
    values = np.zeros((len(site_list), len(METRICS)))
    probes_: dict[str, Any] = {}
    dirs: dict[str, torch.Tensor] = {}
    controls: dict[str, np.ndarray] = {}
    converged: dict[str, bool] = {}
    control_desc: dict[str, str] = {}
    degenerate: list[str] = []
    n_types: dict[str, int] = {}
    maj = int(np.argmax(np.bincount(y[train], minlength=len(classes))))
    for i, s in enumerate(site_list):
        X = acts[s.name].reshape(n, -1).double().numpy()
        clf, tr, te, ok = fit_probe(X, y, train, test, C, seed, standardize)
        probes_[s.name], converged[s.name] = clf, ok
        dirs[s.name] = probe_directions(clf, len(classes))
        row = {"accuracy": te, "train_accuracy": tr, "majority": float(np.mean(y[test] == maj))}
        if control is not None:
            yc, control_desc[s.name], n_types[s.name], hashes = control_labels(
                control, s, toks[s.name], len(classes), prior, seed, inputs, n, hashes)
            controls[s.name] = yc
            if len(np.unique(yc[train])) < 2:
                degenerate.append(s.name)
            _, ctr, cte, cok = fit_probe(X, yc, train, test, C, seed, standardize)
            converged[s.name] = converged[s.name] and cok
            row.update(control_accuracy=cte, control_train_accuracy=ctr, selectivity=te - cte)
        else:
            row.update(control_accuracy=float("nan"), control_train_accuracy=float("nan"), selectivity=float("nan"))
        values[i] = [row[k] for k in METRICS]

    import sklearn

    meta = {"method": "probe", "model": m.name, "sites": names, "n_inputs": n, "n_train": len(train),
            "n_test": len(test), "test_size": test_size, "seed": seed, "C": C, "standardize": standardize,
            "max_iter": MAX_ITER, "classes": [str(c) for c in classes], "control": control_desc,
            "n_types": n_types, "control_degenerate": degenerate, "converged": converged,
            "sklearn": sklearn.__version__, "data": input_setting(data),
            "labels": None if labels is None else "given", "chunk_size": chunk_size,
            "title": f"linear probes on {m.name}"}
    r = ProbeResult(torch.from_numpy(values), ("site", "metric"), {"site": names, "metric": list(METRICS)}, meta,
                    name="accuracy")
    r.probes, r.classes, r._dirs = probes_, classes, dirs
    r.train_index, r.test_index, r.control_labels, r.feature_shapes = train, test, controls, shapes
    return r


def _fit_probes(*args: Any, **kwargs: Any) -> ProbeResult:
    """:func:`probe`, for :func:`probe_steering`, whose ``probe=`` argument hides the function's name."""
    return probe(*args, **kwargs)


def probe_steering(model: Any, data: Any, site: Site | str, source: Any, target: Any,
                   strengths: Sequence[float], *, probe: ProbeResult | None = None, labels: Any = None,
                   n_random: int = 5, seed: int = 0, readout: Any = None, max_inputs: int | None = None,
                   chunk_size: int | None = None) -> SteeringCheck:
    """Does the model use the probe's direction? Steer inputs of class ``source`` along the ``target`` probe
    direction and watch the output, against random directions of the same norm.

    >>> chk = cs.probe_steering("digits-mlp", cs.data.digits("test"), "act2", source=3, target=8,
    ...                         strengths=[0, 2, 4, 8, 16])
    >>> chk.probe.sel(stat="fraction").values, chk.random.sel(stat="fraction").values

    For every input of class ``source`` in ``data`` (at most ``max_inputs``), every strength ``s`` and every
    direction ``u`` (the unit probe direction of ``target`` at ``site`` from ``probe``, fitted here with
    :func:`probe` if not given, and ``n_random`` seeded random unit directions), one engine row adds ``s * u``
    at the site (``cs.Add``); all rows run in batched passes, without copying the model. Strengths are in
    activation units (the directions have norm 1).

    Reading the output: ``readout=None`` takes the classes as output indices (digit ``c`` is logit ``c``;
    for LM logits, the last position); a list gives each class's output index (e.g. the token id of each class
    word). Probabilities are then the model's own softmax over its whole output, and ``fraction`` counts
    inputs whose top output is the target's index. A function ``readout(output) -> (rows, n_classes)`` gives
    class scores instead; the softmax is then over those.
    """
    m = load(model)
    if isinstance(strengths, (str, bytes)) or not isinstance(strengths, Iterable) or not all(
            isinstance(s, numbers.Real) and not isinstance(s, bool) for s in strengths):
        raise InputError(f"strengths must be a non-empty list of finite numbers, got {strengths!r:.60}.")
    strengths = [float(s) for s in strengths]
    if not strengths or not all(np.isfinite(strengths)):
        raise InputError(f"strengths must be a non-empty list of finite numbers, got {strengths!r}.")
    seed = check_seed(seed)
    if max_inputs is not None:
        check_int(max_inputs, "max_inputs", low=1, hint="It caps the inputs of the source class that are steered "
                                                        "(None: all of them).")
    if not isinstance(n_random, int) or n_random < 1:
        raise InputError(f"n_random must be a positive int (random control directions), got {n_random!r}.")
    s_obj = as_site(site)
    inputs, y_raw, n = _probe_data(data, labels)
    given_probe = probe is not None
    if probe is None:
        probe = _fit_probes(m, inputs, [s_obj], labels=y_raw, seed=seed, chunk_size=chunk_size)
    res = steer_along_probe(m, inputs, y_raw, n, probe, s_obj, source, target, strengths, n_random=n_random,
                            seed=seed, readout=readout, max_inputs=max_inputs, chunk_size=chunk_size)
    res.meta.update(data=input_setting(data), strengths=[float(s) for s in strengths],
                    probe="given" if given_probe else "fitted here", labels=None if labels is None else "given",
                    max_inputs=max_inputs, chunk_size=chunk_size)
    return res
