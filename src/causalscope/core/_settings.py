"""Call arguments as a result's ``meta`` records them: plain JSON that says what was given without copying
large data into every result.

>>> input_setting(["the cat sat", "a dog ran"]), input_setting(torch.zeros(363, 6, dtype=torch.long))
(['the cat sat', 'a dog ran'], {'tensor': [363, 6], 'dtype': 'int64'})
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

#: lists up to this long are recorded whole (prompts, token ids); longer ones by their size and first items
LIST_LIMIT = 20


def input_setting(x: Any) -> Any:
    """A data argument (prompts, token ids, tensors, dicts of model kwargs, data sets) as JSON.

    >>> input_setting("the cat sat")
    'the cat sat'
    >>> input_setting([f"prompt {i}" for i in range(100)])["items"]
    100
    """
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    if isinstance(x, torch.Tensor):
        if x.numel() <= LIST_LIMIT and x.ndim <= 2 and not x.is_floating_point():
            return x.tolist()
        return {"tensor": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
    if isinstance(x, Mapping):
        return {str(k): input_setting(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        if len(x) <= LIST_LIMIT and all(isinstance(v, (str, int, float, bool)) or v is None for v in x):
            return list(x)
        if len(x) <= LIST_LIMIT and all(isinstance(v, (list, tuple)) and len(v) <= LIST_LIMIT for v in x):
            return [input_setting(v) for v in x]
        return {"items": len(x), "first": [input_setting(v) for v in list(x[:3])]}
    size = len(x) if hasattr(x, "__len__") else None
    return {"type": type(x).__name__, **({"items": size} if size is not None else {})}


def callable_setting(fn: Any) -> Any:
    """A metric / function argument as text (its name or repr), None when not given.

    >>> callable_setting(None), callable_setting(len)
    (None, 'len')
    """
    if fn is None or isinstance(fn, str):
        return fn
    name = getattr(fn, "__name__", None)  # functions (lambdas: '<lambda>'); metric objects print their repr
    return name if name else repr(fn)
