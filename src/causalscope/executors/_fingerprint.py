"""Stable fingerprints of a run's arguments, so that a rerun finds the shards it already wrote.

>>> fingerprint({"seed": 0, "facts": [("Paris is in", "Paris", "France")]}) == fingerprint(
...     {"facts": [("Paris is in", "Paris", "France")], "seed": 0})
True

A fingerprint is a hex digest of the data itself (dict order aside), never of an object's address: plain data,
tensors and arrays (their bytes), labelled arrays, dataclasses, functions (module, name and code) and models (their
parameters and buffers) are fingerprinted; anything else must have a ``repr`` that shows its data, or it is refused
with a clear error, because a shard checkpoint keyed on an address would be reused wrongly (or never).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import zoo
from ..core import Model
from ..errors import InputError
from ..loading import ModelSpec
from ..results import LabelledArray

__all__ = ["fingerprint", "model_fingerprint"]


def fingerprint(obj: Any) -> str:
    """A hex digest of ``obj``'s data (see the module docstring)."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, obj, "obj")
    return h.hexdigest()


def model_fingerprint(model: Any) -> str:
    """A hex digest that changes when the model's weights or the way to load it change.

    >>> model_fingerprint("facts-gpt") == model_fingerprint("facts-gpt")
    True

    A bundled model and a model object are fingerprinted by every parameter and buffer (hashing runs at about
    1 GB/s); a local folder by its files' names, sizes and modification times; a Hub id by its name and load
    arguments only (pin ``revision=`` so that a checkpoint folder never meets other weights under one name).
    """
    h = hashlib.blake2b(digest_size=16)
    if isinstance(model, ModelSpec):
        _feed(h, [model.name, model.generic, sorted(model.kwargs.items(), key=lambda kv: kv[0])], "spec")
        model = model.source
    if isinstance(model, str) and model in zoo.REGISTRY:  # a bundled model: its weights (they change by release)
        h.update(f"zoo:{model};".encode())
        model = zoo.REGISTRY[model][0]()[0]
    if isinstance(model, (str, os.PathLike)):
        h.update(str(model).encode())
        path = Path(model).expanduser()
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    st = f.stat()
                    h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()
    module = model.module if isinstance(model, Model) else model
    if not isinstance(module, nn.Module):
        raise InputError(f"cannot fingerprint a {type(model).__name__} as a model: give a bundled name, a folder, a "
                         f"Hub id, a causalscope.Model or a torch.nn.Module.")
    h.update(type(module).__qualname__.encode())
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    try:
        return t.numpy().tobytes()
    except TypeError:  # bfloat16, float8: numpy has no such type, so the raw bytes
        return t.view(torch.uint8).numpy().tobytes()


def _feed(h: Any, obj: Any, where: str) -> None:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, bytes):
        h.update(b"bytes:" + obj + b";")
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}[{len(obj)}".encode())
        for i, x in enumerate(obj):
            _feed(h, x, f"{where}[{i}]")
        h.update(b"]")
    elif isinstance(obj, dict):
        h.update(f"dict[{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k, where)
            _feed(h, obj[k], f"{where}[{k!r}]")
        h.update(b"]")
    elif isinstance(obj, torch.Tensor):
        h.update(f"tensor:{tuple(obj.shape)}:{obj.dtype};".encode())
        h.update(_tensor_bytes(obj))
    elif isinstance(obj, np.ndarray):
        h.update(f"ndarray:{obj.shape}:{obj.dtype};".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, LabelledArray):
        _feed(h, [obj.values, list(obj.dims), obj.coords, json.dumps(obj.meta, sort_keys=True), obj.name], where)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _feed(h, [type(obj).__qualname__, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}], where)
    elif callable(obj) and hasattr(obj, "__code__"):
        code = obj.__code__
        _feed(h, [obj.__module__, obj.__qualname__, code.co_code, repr(code.co_consts), code.co_names], where)
    elif isinstance(obj, (nn.Module, Model, ModelSpec)):
        h.update(model_fingerprint(obj).encode())
    else:
        text = repr(obj)
        if " at 0x" in text:
            raise InputError(f"{where}: a {type(obj).__name__} cannot be fingerprinted for the out= checkpoint (its "
                             f"repr shows only an address: {text[:80]}). Give items as plain data (str, numbers, "
                             f"lists, dicts, tensors, dataclasses), or run without out=.")
        h.update(f"{type(obj).__qualname__}:{text};".encode())
