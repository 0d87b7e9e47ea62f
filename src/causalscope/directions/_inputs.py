"""The one reader of ``data`` / ``labels`` for the directions family, and the input helpers its methods share.

>>> X, y = split_data((X, y), need_labels=True)              # also [X, y], X with labels=y, {"X": X, "y": y}, ...
>>> X, y = split_data(cs.data.digits("test"), need_labels=True)

Every method of the family (``class_directions``, ``steer``, ``steering_matrix``, ``corrupt_and_restore``,
``probe``, ``probe_steering``) reads its ``data`` with :func:`split_data`, so they all accept the same forms:

- ``(inputs, labels)`` or ``[inputs, labels]``: labels a 1-D int / bool tensor, a 1-D numpy array, a list, tuple
  or range (a float *tensor* second is read as the second input of a two-input model, not as labels);
- the inputs alone with ``labels=`` (then ``data`` is taken as the inputs whatever its form);
- a dict with ``"X"`` and ``"y"``; an object with ``.X`` / ``.y``, ``.inputs`` / ``.labels`` or scikit-learn's
  ``.data`` / ``.target`` (a ``Bunch``);
- the inputs alone, for methods whose labels are optional (``steer``, ``corrupt_and_restore``).

Numpy inputs become tensors (floats as float32); other inputs (tensors, prompts, token ids, dicts of keyword
tensors) go to the engine as they are. Labels come back as a list of Python values: ints, bools or strings
(integer-valued floats become ints; a pandas Series or any array-like works too).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..core import Site
from ..errors import InputError

NEEDS_CLASS_LABELS = ("This method needs class labels: pass data=(inputs, labels), or the inputs with labels=[...] "
                      "(one label per input).")
PROBE_NEEDS_LABELS = ("Probing needs a label per input: pass data=(inputs, labels), or data=inputs with labels=[...] "
                      "(ints or strings, one per input).")
_ATTRIBUTE_PAIRS = (("X", "y"), ("inputs", "labels"), ("data", "target"))


# -- data and labels --------------------------------------------------------------------------------------------------
def split_data(data: Any, labels: Any = None, *, need_labels: bool,
               missing: str = NEEDS_CLASS_LABELS) -> tuple[Any, list[Any] | None]:
    """``(inputs, labels as a list)`` from any accepted form of ``data`` (see the module docstring).

    >>> split_data((torch.zeros(3, 2), torch.tensor([0, 1, 1])), need_labels=True)
    (tensor([[0., 0.], ...]), [0, 1, 1])

    Without labels found, ``need_labels=True`` raises :class:`InputError` with ``missing``; otherwise the
    labels are ``None``. The number of labels is checked against the inputs by the caller
    (:func:`check_labels`), who knows how to count them.
    """
    if labels is not None:
        return _tensor(data), labels_list(labels)
    X, y = _find_pair(data)
    if X is None:
        if need_labels:
            raise InputError(missing)
        return _tensor(data), None
    return _tensor(X), labels_list(y)


def _find_pair(data: Any) -> tuple[Any, Any]:
    """``(inputs, labels)`` held in ``data``, or ``(None, None)`` when ``data`` is the inputs alone."""
    if isinstance(data, Mapping) and "X" in data and "y" in data:
        return data["X"], data["y"]
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], str) and _label_like(data[1]):
        return data[0], data[1]
    for a, b in _ATTRIBUTE_PAIRS:
        if not isinstance(data, (torch.Tensor, np.ndarray)) and hasattr(data, a) and hasattr(data, b):
            return getattr(data, a), getattr(data, b)
    return None, None


def _label_like(y: Any) -> bool:
    """A 1-D integer / bool tensor, a 1-D array, or a list / range / tuple of labels: the second item of an
    ``(inputs, labels)`` pair (a float tensor there is the second positional input of a model taking two)."""
    if isinstance(y, torch.Tensor):
        return y.ndim == 1 and not y.is_floating_point()
    if isinstance(y, np.ndarray):
        return y.ndim == 1
    if isinstance(y, tuple):
        return not (y and all(isinstance(v, torch.Tensor) for v in y))
    return isinstance(y, (list, range))


def _tensor(X: Any) -> Any:
    """numpy arrays become tensors (floats as float32); anything else is passed to the engine as it is."""
    if isinstance(X, np.ndarray):
        return torch.from_numpy(X).float() if X.dtype.kind == "f" else torch.from_numpy(X)
    return X


def _non_integer(what: str) -> InputError:
    return InputError(f"{what} must be class labels (ints, strings or bools); got non-integer floats: these methods "
                      f"classify, they do not regress.")


def labels_list(y: Any, what: str = "labels") -> list[Any]:
    """Class labels as a list of Python ints, bools or strings; :class:`InputError` naming what is wrong."""
    if not isinstance(y, (torch.Tensor, np.ndarray, list, tuple, range, str)) and hasattr(y, "__array__"):
        y = np.asarray(y)  # a pandas Series, an xarray, ...
    if isinstance(y, (torch.Tensor, np.ndarray)):
        if y.ndim != 1:
            raise InputError(f"{what} must be 1-D (one label per input), got shape {tuple(y.shape)}.")
        if isinstance(y, torch.Tensor):
            y = y.detach()
            if y.is_floating_point():
                if not (torch.isfinite(y).all() and torch.equal(y, y.round())):
                    raise _non_integer(what)
                y = y.long()
            return y.tolist()
        if y.dtype.kind == "f":
            if not (np.isfinite(y).all() and np.array_equal(y, np.round(y))):
                raise _non_integer(what)
            y = y.astype(np.int64)
        if y.dtype.kind != "O":
            return y.tolist()
    if isinstance(y, (list, tuple, range, np.ndarray)):
        out = [v.item() if isinstance(v, np.generic) or isinstance(v, torch.Tensor) and v.numel() == 1 else v
               for v in y]
        for v in out:
            if isinstance(v, float) and not v.is_integer():
                raise _non_integer(what)
            if not isinstance(v, (int, float, str, bool)):
                raise InputError(f"{what} must be ints, strings or bools (class labels); got {v!r}.")
        return [int(v) if isinstance(v, float) else v for v in out]
    raise InputError(f"{what} must be a 1-D tensor, array or list of class labels; got {type(y).__name__}.")


def check_labels(y: list[Any] | None, n: int) -> None:
    if y is not None and len(y) != n:
        raise InputError(f"Got {len(y)} labels for {n} inputs; give one label per input.")


# -- counting and taking inputs ---------------------------------------------------------------------------------------
def n_inputs(m: Any, X: Any) -> int:
    """How many inputs the model's adapter reads in ``X`` (any form the engine takes)."""
    return int(m.adapter.prepare(X).size)


def count_inputs(inputs: Any) -> int:
    """How many inputs ``inputs`` holds, without a model: the forms :func:`take_inputs` can subset."""
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


def take_inputs(inputs: Any, idx: np.ndarray, n: int) -> Any:
    """The inputs at ``idx`` (in that order), in the same form (``n``: :func:`count_inputs` of ``inputs``)."""
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


# -- sites, readouts, classes -----------------------------------------------------------------------------------------
def as_site_arg(site: Any) -> Site:
    if isinstance(site, Site):
        return site
    if isinstance(site, str) and site:
        return Site(site)
    raise InputError(f"site must be a cs.Site or a module / canonical name such as 'fc2' or 'layers.1'; got "
                     f"{type(site).__name__} {site!r}.")


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
