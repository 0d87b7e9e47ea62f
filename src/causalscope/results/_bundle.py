"""Bundles: a nest of results written as one ``.npz`` in the result format (JSON header + arrays, no pickle).

>>> import tempfile, torch
>>> from causalscope.results import LabelledArray, load_bundle, save_bundle
>>> r = LabelledArray(torch.ones(2), ["layer"], meta={"seed": 0})
>>> path = save_bundle(tempfile.mkdtemp() + "/shard.npz", [{"trace": r, "n": 3}, None])
>>> load_bundle(path)[0]["trace"].meta["seed"]
0

A bundle holds ``None``, bools, ints, floats, strings, lists, tuples, dicts with string keys, tensors and
labelled arrays (subclasses come back as their own class: ``TraceResult`` stays a ``TraceResult``; a subclass's
extra attributes, like ``TraceAverage.traces``, are not kept). The write is atomic: the file appears whole
under its name or not at all (written next to it, then renamed), so a crash never leaves half a bundle.
Reading never unpickles: a file that is not a bundle is an :class:`~causalscope.InputError` naming it.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ._labelled import LabelledArray, array_payload, labelled_from_payload

__all__ = ["load_bundle", "save_bundle"]

_FORMAT = "causalscope.Bundle"
_FORMAT_VERSION = 1


def save_bundle(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` (see the module docstring for what it may hold) to ``path`` atomically; returns the path."""
    path = _path(path, "save_bundle")
    if path.is_dir():
        raise InputError(f"{str(path)!r} is a folder; save_bundle writes one file: give a file path such as "
                         f"{str(path / 'bundle.npz')!r}.")
    if not path.parent.is_dir():
        raise InputError(f"the folder {str(path.parent)!r} does not exist; create it first (or give a path in a "
                         f"folder that exists).")
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(obj, arrays, "obj")
    header = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "tree": tree}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            entries: dict[str, Any] = {"header": np.array(json.dumps(header)), **arrays}
            np.savez_compressed(fh, **entries)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_bundle(path: str | os.PathLike[str]) -> Any:
    """Read a bundle :func:`save_bundle` wrote (exact round trip of values, dims, coords, meta and tokens)."""
    path = _path(path, "load_bundle")
    if not path.is_file():
        raise InputError(f"no bundle at {str(path)!r} ({'a folder' if path.is_dir() else 'no such file'}): give the "
                         f"path save_bundle returned.")
    not_ours = f"{str(path)!r} is not a causalscope bundle (a .npz written by save_bundle); give a file it wrote"
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive["header"][()]))
            arrays = {k: archive[k] for k in archive.files if k != "header"}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, AttributeError) as exc:
        raise InputError(not_ours) from exc
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise InputError(not_ours)
    if header.get("format_version", 0) > _FORMAT_VERSION:
        raise InputError(f"{str(path)!r} uses bundle format version {header['format_version']}; this causalscope "
                         f"reads up to {_FORMAT_VERSION}. Upgrade causalscope.")
    try:
        return _decode(header["tree"], arrays)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{not_ours}: {exc}") from exc


def _path(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"{what} takes a file path (a str or pathlib.Path), got {path!r:.60}.")
    return Path(path).expanduser()


def _encode(obj: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return {"int": str(obj)}  # JSON numbers would lose Python ints over 2**53
    if isinstance(obj, float):
        return {"float": repr(obj)} if not math.isfinite(obj) else obj
    if isinstance(obj, (list, tuple)):
        items = [_encode(x, arrays, f"{where}[{i}]") for i, x in enumerate(obj)]
        return {"tuple": items} if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise InputError(f"{where}: a saved dict needs string keys, got {bad[0]!r}.")
        return {"dict": {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in obj.items()}}
    if isinstance(obj, torch.Tensor):
        key = f"a{len(arrays)}"
        array, dtype, bits = _tensor_array(obj.detach().cpu())
        arrays[key] = array
        return {"tensor": key, "dtype": dtype, "bits": bits}
    if isinstance(obj, LabelledArray):
        header, values = array_payload(obj)
        key = f"a{len(arrays)}"
        arrays[key] = values
        cls = type(obj)
        return {"labelled": key, "header": header, "class": f"{cls.__module__}:{cls.__qualname__}"}
    raise InputError(f"{where}: cannot save a {type(obj).__name__} in a shard (saved: None, bool, int, float, str, "
                     f"list, tuple, dict, torch.Tensor, LabelledArray); return one of these from the function.")


def _decode(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    if tree is None or isinstance(tree, (bool, str, int, float)):
        return tree
    if isinstance(tree, list):
        return [_decode(x, arrays) for x in tree]
    if "int" in tree:
        return int(tree["int"])
    if "float" in tree:
        return float(tree["float"])
    if "tuple" in tree:
        return tuple(_decode(x, arrays) for x in tree["tuple"])
    if "dict" in tree:
        return {k: _decode(v, arrays) for k, v in tree["dict"].items()}
    if "tensor" in tree:
        t = torch.from_numpy(arrays[tree["tensor"]].copy())
        return t.view(getattr(torch, tree["dtype"])) if tree["bits"] else t
    if "labelled" in tree:
        cls = LabelledArray.registered(tree["class"])
        return labelled_from_payload(tree["header"], arrays[tree["labelled"]], cls)
    raise ValueError(f"unknown entry {sorted(tree)!r}")


_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _tensor_array(t: torch.Tensor) -> tuple[np.ndarray, str, bool]:
    t = t.contiguous()
    dtype = str(t.dtype).removeprefix("torch.")
    try:
        return t.numpy(), dtype, False
    except TypeError:  # bfloat16, float8: the raw bits as a same-width int
        return t.view(_INT_OF_SIZE[t.element_size()]).numpy(), dtype, True
