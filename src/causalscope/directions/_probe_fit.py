"""Fitting the probes: activations per site, the scikit-learn pipeline, probe directions and the control task.

>>> acts, shapes, toks = activations(m, inputs, n, [cs.Site("act2")], chunk_size=None)
>>> clf, train_acc, test_acc, converged = fit_probe(X, y, train, test, C=1.0, seed=0, standardize=True)

The pieces :func:`~causalscope.directions.probe` is made of (see its docstring for what they compute).
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from ..core import Site
from ..errors import InputError
from ._inputs import take_inputs

CONTROLS = ("random", "token", "input")
METRICS = ("accuracy", "control_accuracy", "selectivity", "train_accuracy", "control_train_accuracy", "majority")
MAX_ITER = 5000


# --------------------------------------------------------------------------------------------- labels, inputs
def class_codes(y: np.ndarray, min_count: int = 2) -> tuple[list[Any], np.ndarray]:
    classes, yi = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"The labels hold a single class ({classes.tolist()}): a probe needs at least two.")
    counts = np.bincount(yi)
    few = [classes[i].item() for i in np.flatnonzero(counts < min_count)]
    if few:
        raise InputError(f"Classes {few} have fewer than {min_count} examples, too few for a stratified train/test "
                         f"split. Add examples or drop those classes.")
    return [c.item() for c in classes], yi


def length_groups(m: Any, inputs: Any, n: int) -> list[tuple[np.ndarray, Any]]:
    """Equal-length groups of a list of prompts (causalscope batches equal-length prompts); one group otherwise."""
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(s, str) for s in inputs):
        lengths = np.array([m.adapter.prepare(p).seq_len or 0 for p in inputs])
        return [(np.flatnonzero(lengths == L), take_inputs(inputs, np.flatnonzero(lengths == L), n))
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


def activations(m: Any, inputs: Any, n: int, sites: list[Site], chunk_size: int | None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, ...]], dict[str, np.ndarray | None]]:
    """Activations of every site (one cached run per equal-length group), their per-row shapes, and for
    single-position sites of a token model the token id at that position (the control task's word type)."""
    feats: dict[str, list] = {s.name: [] for s in sites}
    tokens: dict[str, list | None] = {s.name: [] for s in sites}
    order = []
    for idx, sub in length_groups(m, inputs, n):
        run = m.run(sub, cache=sites, chunk_size=chunk_size, progress=False)
        ids = _token_ids(m, sub)
        for s in sites:
            a = _features(s.name, run.cache[s.name], s, ids is not None)
            feats[s.name].append(a.detach().float().cpu())
            if ids is not None and s.positions is not None and not isinstance(s.positions, slice):
                pos = s.positions  # Site normalises an int to a 1-tuple
                cast(list, tokens[s.name]).append(ids[:, pos[0]].cpu().numpy())  # a list while the site has one
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


def fit_probe(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, C: float, seed: int,
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


def probe_directions(clf: Any, n_classes: int) -> torch.Tensor:
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

# ------------------------------------------------------------------------------------------ control task
def control_labels(control: str | Sequence[Any], site: Site, tok: np.ndarray | None, n_classes: int,
                   prior: np.ndarray, seed: int, inputs: Any, n: int, hashes: list[str] | None
                   ) -> tuple[np.ndarray, str, int, list[str] | None]:
    """The control task of one site (Hewitt & Liang 2019): every input type gets a label drawn once from
    ``prior``. Returns (control labels, what the types are, the number of types, the input hashes, computed
    once and passed back in for the next site).

    >>> yc, desc, n_types, hashes = control_labels("random", site, toks[site.name], 10, prior, 0, X, n, None)
    """
    mode = control if isinstance(control, str) else "given"
    if mode == "token" and tok is None:
        raise InputError(f"control='token' needs a token model and a site with one position; {site.name!r} has "
                         f"no token at a single position. Use control='input' or pass types.")
    if mode == "random":  # word types where there are enough of them, else each input its own type
        mode = "token" if tok is not None and len(np.unique(tok)) >= max(2, n_classes) else "input"
    if mode == "given":
        types_raw, desc = np.asarray([str(t) for t in control]), "random label per given type"
    elif mode == "token":
        assert tok is not None
        types_raw, desc = tok, "random label per token type at the site's position"
    else:
        if hashes is None:
            hashes = _input_hashes(inputs if not isinstance(inputs, str) else [inputs], np.arange(n))
        types_raw = np.asarray(hashes)
        desc = "random label per input (identical inputs share one)"
    kinds, t_idx = np.unique(types_raw, return_inverse=True)
    rng = np.random.default_rng(seed)
    behaviour = rng.choice(n_classes, size=len(kinds), p=prior)   # C(v) for every type v
    return behaviour[t_idx], desc, len(kinds), hashes
