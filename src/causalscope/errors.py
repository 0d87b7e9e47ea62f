"""Error types. Every error names the problem and, where one exists, the fix."""
from __future__ import annotations

import difflib
import math
import numbers
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


class ExecutionError(RuntimeError):
    """A sharded run could not finish: a shard lost its worker more often than allowed, or the workers could not
    start. The message names the items; the shards finished before are kept."""


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


# -- argument checks shared by every family: each raises before anything is computed ------------------------------
def check_int(value: object, what: str, *, low: int | None = None, high: int | None = None,
              error: type[CausalScopeError] = InputError, hint: str = "") -> int:
    """``value`` as an int if it is one (not a bool, not a float, not a string) within ``[low, high]``; else
    ``error`` naming the argument, the bound and the value.

    >>> check_int(3, "n", low=1)
    3
    >>> check_int(-1, "n_boot", low=1)      # InputError: n_boot must be an int >= 1, got -1.
    """
    bound = (f" from {low} to {high}" if low is not None and high is not None else
             f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and ((low is not None and int(value) < low) or (high is not None and int(value) > high)):  # type: ignore[call-overload]
        ok = False
    if not ok:
        kind = " (a bool)" if isinstance(value, bool) else ""
        raise error(f"{what} must be an int{bound}, got {value!r}{kind}.{' ' + hint if hint else ''}")
    return int(value)  # type: ignore[call-overload]


def check_seed(seed: object, what: str = "seed", error: type[CausalScopeError] = InputError) -> int:
    """A seed: an int >= 0 (seeded generators make equal seeds give equal results; a string or a float is refused
    rather than converted).

    >>> check_seed(0)
    0
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2 ** 63:
        raise error(f"{what} must be an int >= 0 (e.g. seed=0), got {seed!r}: a seed is an int, so equal seeds "
                    f"give equal results.")
    return int(seed)


def check_number(value: object, what: str, *, low: float | None = None, high: float | None = None,
                 open_low: bool = False, open_high: bool = False, error: type[CausalScopeError] = InputError,
                 hint: str = "") -> float:
    """``value`` as a finite float (an int or float, not a bool or a string) within its bounds (``open_low`` /
    ``open_high``: strictly inside them); else ``error``.

    >>> check_number(0.5, "tol", low=0)
    0.5
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)  # type: ignore[arg-type]
        if low is not None and (v <= low if open_low else v < low):
            ok = False
        if high is not None and (v >= high if open_high else v > high):
            ok = False
    if not ok:
        if low is not None and high is not None:
            bound = f" in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        elif low is not None:
            bound = f" {'>' if open_low else '>='} {low}"
        else:
            bound = f" {'<' if open_high else '<='} {high}" if high is not None else ""
        raise error(f"{what} must be a finite number{bound}, got {value!r}.{' ' + hint if hint else ''}")
    return float(value)  # type: ignore[arg-type]


def check_flag(value: object, what: str, error: type[CausalScopeError] = InputError) -> bool:
    """``value`` if it is a bool (numpy's too); a string such as ``"no"`` is refused, not read as True.

    >>> check_flag(False, "replace")
    False
    """
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise error(f"{what} must be True or False, got {value!r}.")
