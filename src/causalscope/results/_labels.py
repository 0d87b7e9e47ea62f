"""Coordinate labels, auxiliary coordinates and meta in their stored form. Auxiliary coordinates are labels
along a dim besides its coords, e.g. the token at each position of a patching map (a column of ``to_frame()``).

>>> token_labels([["the", " cat", " sat"]], [0, -1])
['the', ' sat']
>>> token_labels([["the", " cat"], ["a", " cat"]], [0, 1])     # prompts that disagree get None
[None, ' cat']
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

Label = Any  # int | float | str | bool | None | tuple of these
#: name -> (the dim it runs along, one label per element of that dim)
AuxCoords = dict[str, tuple[str, list[Label]]]


def normalise_label(x: Any, dim: str) -> Label:
    """A coordinate label in its stored form: numpy / torch scalars become Python ones, lists tuples."""
    if isinstance(x, (np.generic, torch.Tensor)) and np.ndim(x) == 0:
        x = x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (tuple, list)):
        return tuple(normalise_label(i, dim) for i in x)
    raise TypeError(
        f"coordinate labels must be int, float, str, bool, None or tuples of these; "
        f"got {type(x).__name__} {x!r} for dim {dim!r}"
    )


def check_aux(aux: Mapping[str, Any] | None, dims: tuple[str, ...], shape: Sequence[int], name: str) -> AuxCoords:
    """``aux`` as ``{name: (dim, labels)}``, each running along one dim with one label per element of it."""
    out: AuxCoords = {}
    if aux is None:
        return out
    if not isinstance(aux, Mapping):
        raise ValueError(f"aux_coords must be a mapping {{name: (dim, labels)}}, got {type(aux).__name__}")
    for key, entry in aux.items():
        if not isinstance(key, str) or key in dims or key == name:
            why = "a dim" if key in dims else "the array's name" if key == name else "not a string"
            raise ValueError(f"aux coordinate name {key!r} is {why}; give each auxiliary coordinate a name of its own "
                             f"(dims are {dims})")
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and entry[0] in dims):
            raise ValueError(f"aux_coords[{key!r}] must be (dim, labels) with dim one of {dims}, got {entry!r}")
        dim, raw = entry
        if isinstance(raw, (torch.Tensor, np.ndarray)):
            raw = raw.tolist()
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise ValueError(f"aux_coords[{key!r}] needs a sequence of labels, got {raw!r}")
        size = shape[dims.index(dim)]
        if len(raw) != size:
            raise ValueError(f"aux_coords[{key!r}] has {len(raw)} labels but dim {dim!r} has size {size}")
        out[key] = (dim, [normalise_label(x, dim) for x in raw])
    return out


def token_labels(tokens: Sequence[Sequence[str]], positions: Sequence[Label]) -> list[str | None]:
    """The token at each position label, read from every prompt's tokens (a label p reads ``tokens[p]``, so
    negative labels count back from each prompt's end): the token where every prompt has the same one there,
    else None (also for a label that is not an int position of every prompt)."""
    out: list[str | None] = []
    for p in positions:
        seen = {t[p] for t in tokens if _is_int(p) and -len(t) <= p < len(t)}
        complete = _is_int(p) and all(-len(t) <= p < len(t) for t in tokens)
        out.append(str(seen.pop()) if complete and len(seen) == 1 else None)
    return out


def axis_labels(coords: Sequence[Label], aux: Mapping[str, tuple[str, Sequence[Label]]], dim: str) -> list[str]:
    """Tick labels of ``dim``: each coordinate label, with the token there when a ``token`` auxiliary coordinate
    runs along ``dim`` (``"3: Paris"``; the token's surrounding spaces dropped, a blank token shown quoted).

    >>> axis_labels([0, 1, 2], {"token": ("position", ["The", " Eiffel", None])}, "position")
    ['0: The', '1: Eiffel', '2']
    >>> axis_labels([0, 1], {}, "layer")
    ['0', '1']
    """
    tokens = aux.get("token")
    if tokens is None or tokens[0] != dim:
        return [str(c) for c in coords]
    return [str(c) if t is None else f"{c}: {_token_text(t)}" for c, t in zip(coords, tokens[1])]


def _token_text(t: Label) -> str:
    text = str(t)
    return text.strip() or repr(text)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def tuplify(x: Any) -> Label:
    """A label read back from JSON: lists become tuples again."""
    return tuple(tuplify(i) for i in x) if isinstance(x, list) else x


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.generic, np.ndarray, torch.Tensor)):
        return x.tolist()
    if isinstance(x, (set, frozenset)):
        return sorted(x, key=repr)
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"meta values must be JSON-able; got {type(x).__name__} {x!r}")


def jsonable_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """``meta`` in its JSON form (tuples become lists, numpy / torch scalars Python numbers), as saved."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a mapping, got {type(meta).__name__}")
    try:
        return json.loads(json.dumps(dict(meta), default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta is not JSON-able: {exc}") from exc
