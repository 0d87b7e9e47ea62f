"""Error types. Every error names the problem and, where one exists, the fix."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class CausalScopeError(ValueError):
    """Base class of every error causalscope raises on bad input (a ``ValueError``)."""


class SiteError(CausalScopeError):
    """A site names no place in the model, or selects outside it."""


class InterventionError(CausalScopeError):
    """An intervention cannot be applied (shape, dtype, NaN, bad parameter)."""


class PlanError(CausalScopeError):
    """A run's plan is malformed: empty, mismatched batch, bad chunk size, ..."""


class InputError(CausalScopeError):
    """The model input or the object handed to ``load`` is not usable."""


class CausalScopeWarning(UserWarning):
    """Base class of every warning causalscope gives: the result is computed, but read it with care."""


class UnknownTokenWarning(CausalScopeWarning):
    """A prompt holds words the tokenizer does not know: they became its unknown token (``<unk>``)."""


class PrecisionWarning(CausalScopeWarning):
    """A result is below what the model's number format resolves (fp16 / bf16 models, tiny effects)."""


def close_names(name: str, valid: Iterable[str], n: int = 5) -> list[str]:
    """The valid names closest to ``name``, best first (prefix matches help for deep module paths)."""
    valid = list(valid)
    best = difflib.get_close_matches(name, valid, n=n, cutoff=0.4)
    if len(best) < n:
        stem = name.rsplit(".", 1)[0]
        best += [v for v in valid if v.startswith(stem) and v not in best][: n - len(best)]
    return best


def unknown_site(name: str, valid: Iterable[str]) -> SiteError:
    close = close_names(name, valid)
    hint = f" Closest valid names: {', '.join(repr(c) for c in close)}." if close else ""
    return SiteError(
        f"Unknown site {name!r}: the model has no module or canonical site of that name.{hint} "
        "List every name with `model.site_names()`."
    )
