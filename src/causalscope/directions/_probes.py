"""Linear probes per site, with a control task (selectivity) and a causal check by steering.

>>> r = cs.probe("digits-mlp", cs.data.digits("test"), ["act1", "act2", "act3"])
>>> r.accuracy.values, r.control_accuracy.values, r.selectivity.values
>>> chk = r.steer_check("digits-mlp", cs.data.digits("test"), "act2", source=3, target=8,
...                     strengths=[0, 2, 4, 8])
>>> chk.probe.sel(stat="fraction").values       # share of 3s now classified as 8, per strength

A probe answers "is the label linearly decodable from this activation?"; the control task (Hewitt & Liang
2019) answers "could the same probe have memorised it anyway?"; the steering check answers "does the model
*use* the probe's direction?". Only the last one is causal.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core import Add, Site, as_site
from ..errors import InputError
from ..loading import load
from ..results import LabelledArray

CONTROLS = ("random", "token", "input")
METRICS = ("accuracy", "control_accuracy", "selectivity", "train_accuracy", "control_train_accuracy", "majority")
STEER_STATS = ("fraction", "prob", "source_prob")
MAX_ITER = 5000


# --------------------------------------------------------------------------------------------- data
def _n_inputs(inputs: Any) -> int:
    if isinstance(inputs, str):
        return 1
    if isinstance(inputs, torch.Tensor):
        return 1 if inputs.ndim == 1 and not inputs.is_floating_point() else int(inputs.shape[0])
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(s, str) for s in inputs):
        return len(inputs)
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
        return int(inputs[0].shape[0])
    if isinstance(inputs, Mapping):
        for v in inputs.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0])
    raise InputError(f"Cannot count the inputs of a {type(inputs).__name__}: pass a tensor (batch on dim 0), a list "
                     f"of prompts, token ids, a tuple of tensors or a dict of keyword tensors.")


def _take(inputs: Any, idx: np.ndarray, n: int) -> Any:
    """The inputs at ``idx`` (in that order), in the same form."""
    ti = torch.as_tensor(idx, dtype=torch.long)
    if isinstance(inputs, str):
        return [inputs] * len(idx)
    if isinstance(inputs, torch.Tensor):
        return inputs[None][ti] if n == 1 and inputs.ndim == 1 else inputs[ti]
    if isinstance(inputs, (list, tuple)) and all(isinstance(s, str) for s in inputs):
        return [inputs[i] for i in idx.tolist()]
    if isinstance(inputs, (list, tuple)):
        return tuple(t[ti] for t in inputs)
    return {k: v[ti] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n else v
            for k, v in inputs.items()}


def _is_label_vector(y: Any, n: int) -> bool:
    if isinstance(y, torch.Tensor):
        return y.ndim == 1 and y.shape[0] == n and not y.is_floating_point()
    if isinstance(y, np.ndarray):
        return y.ndim == 1 and y.shape[0] == n
    return isinstance(y, (list, tuple)) and len(y) == n and not all(isinstance(v, torch.Tensor) for v in y)


def _split_data(data: Any, labels: Any) -> tuple[Any, np.ndarray, int]:
    """``(inputs, labels as a numpy vector, n)`` from ``data`` = inputs (with ``labels=``), ``(inputs, labels)``
    or an object with ``.X`` / ``.y`` (or ``.inputs`` / ``.labels``)."""
    if labels is None:
        for a, b in (("X", "y"), ("inputs", "labels")):
            if hasattr(data, a) and hasattr(data, b):
                data, labels = getattr(data, a), getattr(data, b)
                break
        else:
            if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], str):
                try:
                    n0 = _n_inputs(data[0])
                except InputError:
                    n0 = -1
                if n0 > 0 and _is_label_vector(data[1], n0):
                    data, labels = data
    if labels is None:
        raise InputError("Probing needs a label per input: pass data=(inputs, labels), or data=inputs with "
                         "labels=[...] (ints or strings, one per input).")
    n = _n_inputs(data)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"labels must be one label per input: got shape {tuple(y.shape)} for {n} inputs.")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InputError("labels are class labels (ints or strings), got non-integer floats; a probe here is a "
                             "classifier, not a regression.")
        y = y.astype(np.int64)
    return data, y, n


def _classes(y: np.ndarray, min_count: int = 2) -> tuple[list[Any], np.ndarray]:
    classes, yi = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"The labels hold a single class ({classes.tolist()}): a probe needs at least two.")
    counts = np.bincount(yi)
    few = [classes[i].item() for i in np.flatnonzero(counts < min_count)]
    if few:
        raise InputError(f"Classes {few} have fewer than {min_count} examples, too few for a stratified train/test "
                         f"split. Add examples or drop those classes.")
    return [c.item() for c in classes], yi


def _groups(m: Any, inputs: Any, n: int) -> list[tuple[np.ndarray, Any]]:
    """Equal-length groups of a list of prompts (causalscope batches equal-length prompts); one group otherwise."""
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(s, str) for s in inputs):
        lengths = np.array([m.adapter.prepare(p).seq_len or 0 for p in inputs])
        return [(np.flatnonzero(lengths == L), _take(inputs, np.flatnonzero(lengths == L), n))
                for L in np.unique(lengths)]
    return [(np.arange(n), inputs)]


def _token_ids(m: Any, inputs: Any) -> torch.Tensor | None:
    batch = m.adapter.prepare(inputs)
    if batch.seq_len is None:
        return None
    ids = batch.kwargs.get("input_ids", batch.args[0] if batch.args else None)
    return ids if isinstance(ids, torch.Tensor) and not ids.is_floating_point() else None


def _input_hashes(inputs: Any, idx: np.ndarray) -> list[str]:
    """One hash per input of its content: identical inputs are one type."""
    if isinstance(inputs, torch.Tensor):
        parts = [inputs]
    elif isinstance(inputs, (list, tuple)) and not all(isinstance(s, str) for s in inputs):
        parts = list(inputs)
    elif isinstance(inputs, Mapping):
        parts = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
    else:  # prompts
        return [hashlib.sha1(str(inputs[i]).encode()).hexdigest() for i in range(len(idx))]
    out = []
    for i in range(len(idx)):
        h = hashlib.sha1()
        for t in parts:
            h.update(t[i].detach().cpu().contiguous().numpy().tobytes())
        out.append(h.hexdigest())
    return out


# ----------------------------------------------------------------------------------- activations
def _features(name: str, act: torch.Tensor, site: Site, is_seq: bool) -> torch.Tensor:
    """(rows, features): a single selected position is squeezed; several positions are refused."""
    if site.positions is not None:
        npos = act.shape[1]
        if npos != 1:
            raise InputError(f"Site {name!r} selects {npos} positions; a probe reads one vector per input. Select "
                             f"one position, e.g. Site({site.module!r}, positions=-1).")
        act = act[:, 0]
    elif is_seq and act.ndim >= 3:
        raise InputError(f"Site {name!r} has a token axis (activation {tuple(act.shape)}); a probe reads one vector "
                         f"per input. Select one position, e.g. Site({site.module!r}, positions=-1).")
    return act


def _activations(m: Any, inputs: Any, n: int, sites: list[Site], chunk_size: int | None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, ...]], dict[str, np.ndarray | None]]:
    """Activations of every site (one cached run per equal-length group), their per-row shapes, and for
    single-position sites of a token model the token id at that position (the control task's word type)."""
    feats: dict[str, list] = {s.name: [] for s in sites}
    tokens: dict[str, list | None] = {s.name: [] for s in sites}
    order = []
    for idx, sub in _groups(m, inputs, n):
        run = m.run(sub, cache=sites, chunk_size=chunk_size, progress=False)
        ids = _token_ids(m, sub)
        for s in sites:
            a = _features(s.name, run.cache[s.name], s, ids is not None)
            feats[s.name].append(a.detach().float().cpu())
            if ids is not None and s.positions is not None and not isinstance(s.positions, slice):
                tokens[s.name].append(ids[:, s.positions[0]].cpu().numpy())  # type: ignore[union-attr]
            else:
                tokens[s.name] = None
        order.append(idx)
    perm = np.argsort(np.concatenate(order), kind="stable")
    out = {k: torch.cat(v)[torch.as_tensor(perm)] for k, v in feats.items()}
    shapes = {k: tuple(v.shape[1:]) for k, v in out.items()}
    toks = {k: (None if v is None else np.concatenate(v)[perm]) for k, v in tokens.items()}
    return out, shapes, toks


# ----------------------------------------------------------------------------------------- probes
def _pipeline(C: float, seed: int, standardize: bool) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lr = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed)
    return make_pipeline(StandardScaler(), lr) if standardize else make_pipeline(lr)


def _fit(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, C: float, seed: int,
         standardize: bool) -> tuple[Any, float, float, bool]:
    """(fitted pipeline or None, train accuracy, test accuracy, converged)."""
    if len(np.unique(y[train])) < 2:  # e.g. a control task whose few types all drew one label
        only = y[train][0]
        return None, float(np.mean(y[train] == only)), float(np.mean(y[test] == only)), True
    from sklearn.exceptions import ConvergenceWarning

    clf = _pipeline(C, seed, standardize)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(X[train], y[train])
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf, float(clf.score(X[train], y[train])), float(clf.score(X[test], y[test])), converged


def _directions(clf: Any, n_classes: int) -> torch.Tensor:
    """Unit directions (classes, features) in activation space: the gradient of each class's probe logit.

    With a standardising probe, logit_c = w_c . (x - mu) / sigma + b_c, so the direction is w_c / sigma. A binary
    probe has one weight vector w (for the second class); the first class's direction is -w."""
    lr = clf[-1]
    W = np.asarray(lr.coef_, dtype=np.float64)
    if len(clf) > 1:
        W = W / np.asarray(clf[0].scale_, dtype=np.float64)[None]
    if W.shape[0] == 1 and n_classes == 2:
        W = np.concatenate([-W, W])
    D = torch.from_numpy(W).float()
    return D / D.norm(dim=-1, keepdim=True).clamp_min(1e-12)


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
        if backend != "matplotlib":
            raise ValueError(f"backend must be 'matplotlib' or 'plotly', got {backend!r}")
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
    if not 0 < test_size < 1:
        raise InputError(f"test_size must be a fraction in (0, 1), got {test_size!r}.")
    if not (isinstance(C, (int, float)) and C > 0):
        raise InputError(f"C (inverse regularisation strength) must be a positive number, got {C!r}.")
    site_list = [as_site(s) for s in ([sites] if isinstance(sites, (Site, str)) else list(sites))]
    if not site_list:
        raise InputError("sites is empty: name at least one site, e.g. ['act1', 'act2'].")
    names = [s.name for s in site_list]
    if len(set(names)) != len(names):
        raise InputError(f"sites repeat a site: {names}.")
    inputs, y_raw, n = _split_data(data, labels)
    classes, y = _classes(y_raw)
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
    acts, shapes, toks = _activations(m, inputs, n, site_list, chunk_size)

    prior = np.bincount(y, minlength=len(classes)) / n
    hashes: list[str] | None = None
    values = np.zeros((len(site_list), len(METRICS)))
    probes_: dict[str, Any] = {}
    dirs: dict[str, torch.Tensor] = {}
    control_labels: dict[str, np.ndarray] = {}
    converged: dict[str, bool] = {}
    control_desc: dict[str, str] = {}
    degenerate: list[str] = []
    n_types: dict[str, int] = {}
    maj = int(np.argmax(np.bincount(y[train], minlength=len(classes))))
    for i, s in enumerate(site_list):
        X = acts[s.name].reshape(n, -1).double().numpy()
        clf, tr, te, ok = _fit(X, y, train, test, C, seed, standardize)
        probes_[s.name], converged[s.name] = clf, ok
        dirs[s.name] = _directions(clf, len(classes))
        row = {"accuracy": te, "train_accuracy": tr, "majority": float(np.mean(y[test] == maj))}
        if control is not None:
            mode = control if isinstance(control, str) else "given"
            tok = toks[s.name]
            if mode == "token" and tok is None:
                raise InputError(f"control='token' needs a token model and a site with one position; {s.name!r} has "
                                 f"no token at a single position. Use control='input' or pass types.")
            if mode == "random":  # word types where there are enough of them, else each input its own type
                mode = "token" if tok is not None and len(np.unique(tok)) >= max(2, len(classes)) else "input"
            if mode == "given":
                types_raw, control_desc[s.name] = np.asarray([str(t) for t in control]), "random label per given type"
            elif mode == "token":
                types_raw, control_desc[s.name] = tok, "random label per token type at the site's position"
            else:
                if hashes is None:
                    hashes = _input_hashes(inputs if not isinstance(inputs, str) else [inputs], np.arange(n))
                types_raw = np.asarray(hashes)
                control_desc[s.name] = "random label per input (identical inputs share one)"
            kinds, t_idx = np.unique(types_raw, return_inverse=True)
            rng = np.random.default_rng(seed)
            behaviour = rng.choice(len(classes), size=len(kinds), p=prior)   # C(v) for every type v
            yc = behaviour[t_idx]
            control_labels[s.name], n_types[s.name] = yc, len(kinds)
            if len(np.unique(yc[train])) < 2:
                degenerate.append(s.name)
            _, ctr, cte, cok = _fit(X, yc, train, test, C, seed, standardize)
            converged[s.name] = converged[s.name] and cok
            row.update(control_accuracy=cte, control_train_accuracy=ctr, selectivity=te - cte)
        else:
            row.update(control_accuracy=float("nan"), control_train_accuracy=float("nan"), selectivity=float("nan"))
        values[i] = [row[k] for k in METRICS]

    import sklearn

    meta = {"method": "probe", "model": m.name, "sites": names, "n_inputs": n, "n_train": len(train),
            "n_test": len(test), "test_size": test_size, "seed": seed, "C": C, "standardize": standardize,
            "max_iter": MAX_ITER, "classes": [str(c) for c in classes], "control": control_desc,
            "n_types": n_types, "control_degenerate": degenerate, "converged": converged, "sklearn": sklearn.__version__,
            "title": f"linear probes on {m.name}"}
    r = ProbeResult(torch.from_numpy(values), ("site", "metric"), {"site": names, "metric": list(METRICS)}, meta,
                    name="accuracy")
    r.probes, r.classes, r._dirs = probes_, classes, dirs
    r.train_index, r.test_index, r.control_labels, r.feature_shapes = train, test, control_labels, shapes
    return r


# ------------------------------------------------------------------------------------ steering check
class SteeringCheck(LabelledArray):
    """The causal check of a probe direction: dims ``("direction", "strength", "stat")``.

    ``direction``: ``probe`` (the target class's unit probe direction) and ``random0`` ... (random unit
    directions, the control); ``stat``: ``fraction`` (share of the steered inputs the model assigns to the
    target class), ``prob`` (mean probability of the target class), ``source_prob`` (mean probability of the
    inputs' own class).

    >>> chk.probe.sel(stat="prob").values, chk.random.sel(stat="prob").values
    >>> chk.plot()
    """

    @property
    def probe(self) -> LabelledArray:
        """(strength, stat) along the probe direction."""
        return self.sel(direction="probe")

    @property
    def random(self) -> LabelledArray:
        """(strength, stat), mean over the random directions."""
        rand = [d for d in self.coords["direction"] if d != "probe"]
        return self.sel(direction=rand).mean("direction")

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """Fraction predicted as the target and its mean probability vs strength: probe direction against the
        random directions (mean and min-max band)."""
        s = np.asarray(self.coords["strength"], dtype=float)
        rand = [d for d in self.coords["direction"] if d != "probe"]
        R = self.sel(direction=rand).values.numpy()                # (random, strength, stat)
        P = self.probe.values.numpy()
        tgt, src = self.meta["target"], self.meta["source"]
        titles = {"fraction": f"fraction classified as {tgt}", "prob": f"mean p({tgt})"}
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=1, cols=2, subplot_titles=tuple(titles.values()))
            for j, k in enumerate(titles):
                c = STEER_STATS.index(k)
                fig.add_trace(go.Scatter(x=s, y=P[:, c], mode="lines+markers", name="probe direction",
                                         line={"color": "#5A4FCF"}, showlegend=j == 0), row=1, col=j + 1)
                fig.add_trace(go.Scatter(x=s, y=R[:, :, c].mean(0), mode="lines+markers", name="random direction",
                                         line={"color": "#999999", "dash": "dash"}, showlegend=j == 0),
                              row=1, col=j + 1)
            fig.update_yaxes(range=[0, 1.05])
            fig.update_xaxes(title_text="strength")
            fig.update_layout(title={"text": f"steering {src} -> {tgt} at {self.meta['site']}"})
            return fig
        if backend != "matplotlib":
            raise ValueError(f"backend must be 'matplotlib' or 'plotly', got {backend!r}")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.6), layout="constrained")
        axes = fig.subplots(1, 2)
        for a, k in zip(axes, titles):
            c = STEER_STATS.index(k)
            a.plot(s, P[:, c], "o-", color="#5A4FCF", label="probe direction")
            a.plot(s, R[:, :, c].mean(0), "s--", color="#999999", label=f"random directions ({len(rand)})")
            a.fill_between(s, R[:, :, c].min(0), R[:, :, c].max(0), color="#999999", alpha=0.2)
            a.set_ylim(-0.02, 1.05)
            a.set_xlabel("strength (activation units, unit direction)")
            a.set_title(titles[k])
            a.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"steering inputs of class {src} toward {tgt} at {self.meta['site']}")
        return fig


def _resolve_readout(readout: Any, classes: list[Any]) -> Callable[[torch.Tensor], torch.Tensor] | list[int]:
    if callable(readout):
        return readout
    if readout is None:
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes):
            raise InputError(f"The classes {classes[:6]} are not output indices, so the model's output cannot be read "
                             f"per class. Pass readout=[output index of each class] (e.g. token ids), or a function "
                             f"of the output returning (rows, {len(classes)}) class scores.")
        return [int(c) for c in classes]
    cols = [int(c) for c in readout]
    if len(cols) != len(classes):
        raise InputError(f"readout has {len(cols)} output indices for {len(classes)} classes {classes}.")
    return cols


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
    strengths = [float(s) for s in strengths]
    if not strengths or not all(np.isfinite(strengths)):
        raise InputError(f"strengths must be a non-empty list of finite numbers, got {strengths!r}.")
    if not isinstance(n_random, int) or n_random < 1:
        raise InputError(f"n_random must be a positive int (random control directions), got {n_random!r}.")
    s_obj = as_site(site)
    inputs, y_raw, n = _split_data(data, labels)
    if probe is None:
        from . import _probes

        probe = _probes.probe(m, (inputs, y_raw), [s_obj], seed=seed, chunk_size=chunk_size)
    key = probe._site_key(s_obj)
    ti, si = probe._class_index(target), probe._class_index(source)
    if ti == si:
        raise InputError(f"source and target are the same class ({source!r}): steer toward another class.")
    src_label = probe.classes[si]
    idx = np.flatnonzero(np.array([y == src_label or str(y) == str(src_label) for y in y_raw.tolist()]))
    if idx.size == 0:
        raise InputError(f"No input of class {source!r} in data (its labels: {sorted(set(y_raw.tolist()))[:10]}).")
    if max_inputs is not None:
        idx = idx[:max_inputs]
    cols = _resolve_readout(readout, probe.classes)
    shape = probe.feature_shapes[key]
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(n_random, int(np.prod(shape)), generator=g)
    rand = rand / rand.norm(dim=-1, keepdim=True)
    dirs = [probe.direction(key, probe.classes[ti])] + [r.reshape(shape) for r in rand]

    def metric(out: torch.Tensor) -> torch.Tensor:
        y = out[:, -1] if out.ndim == 3 else out.reshape(out.shape[0], -1)
        if callable(cols):
            scores = cols(out)
            if not isinstance(scores, torch.Tensor) or scores.shape != (out.shape[0], len(probe.classes)):
                raise InputError(f"readout must return (rows, {len(probe.classes)}) class scores, got "
                                 f"{tuple(getattr(scores, 'shape', ()))}.")
            p = scores.float().softmax(-1)
            t, s_, top = ti, si, scores.argmax(-1)
        else:
            if max(cols) >= y.shape[-1]:
                raise InputError(f"readout index {max(cols)} is out of range for an output of width {y.shape[-1]}.")
            p = y.float().softmax(-1)
            t, s_, top = cols[ti], cols[si], y.argmax(-1)
        return torch.stack([(top == t).float(), p[:, t], p[:, s_]], -1)

    sub = _take(inputs, idx, n)
    k = len(idx)
    res = torch.zeros(len(dirs), len(strengths), len(STEER_STATS))
    for gidx, ginputs in _groups(m, sub, k):
        ivs = [[Add(d, strength=s) for s in strengths] for d in dirs]
        rows = [row for per_dir in ivs for row in ({s_obj: iv} for iv in per_dir) for _ in range(len(gidx))]
        index = list(range(len(gidx))) * (len(dirs) * len(strengths))
        run = m.run(ginputs, rows, input_index=index, metric=metric, chunk_size=chunk_size, progress=False)
        res += run.metric.float().cpu().reshape(len(dirs), len(strengths), len(gidx), len(STEER_STATS)).sum(2)
    res /= k
    meta = {"method": "probe_steering", "model": m.name, "site": key, "source": str(src_label),
            "target": str(probe.classes[ti]), "n_inputs": int(k), "n_random": n_random, "seed": seed,
            "readout": "function" if callable(cols) else cols, "probe_seed": probe.meta.get("seed"),
            "title": f"steering {src_label} -> {probe.classes[ti]} at {key}"}
    return SteeringCheck(res, ("direction", "strength", "stat"),
                         {"direction": ["probe"] + [f"random{i}" for i in range(n_random)], "strength": strengths,
                          "stat": list(STEER_STATS)}, meta, name="value")
