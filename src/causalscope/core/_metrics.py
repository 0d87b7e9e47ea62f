"""Metrics: functions of a model's output that give one number per batch row.

Every method that scores an intervention takes ``metric=``: any callable ``output -> (rows,)``, or one of
these. The ones here read only the last position of an LM's logits, which lets segmented runs unembed
that position alone (``metric.last_only``).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import InputError

Metric = Callable[[torch.Tensor], torch.Tensor]


class _LastPosition:
    """A metric of the last position's logits (or of a (rows, classes) output).

    With one answer token per prompt (``n_answers`` > 1), row ``r`` reads the answer of prompt
    ``input_index[r] % n_answers``: the engine passes each row's input index (``takes_input_index``), so a
    chunked run picks the same answers as one pass. Called without an index, rows repeat the prompts in order.
    """

    last_only = True
    takes_input_index = True
    takes_lengths = True

    def __init__(self, name: str, fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                 n_answers: int = 1, max_id: int | None = None) -> None:
        self.name, self._fn, self.n_answers, self.max_id = name, fn, int(n_answers), max_id

    def __call__(self, y: torch.Tensor, index: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
        if y.ndim == 3:  # the last real token of each row (prompts of different lengths are padded on the right)
            y = y[:, -1] if lengths is None else y[torch.arange(len(y), device=y.device), lengths.to(y.device) - 1]
        if self.max_id is not None and self.max_id >= y.shape[-1]:
            raise InputError(f"{self.name} reads token id {self.max_id}, but the output has {y.shape[-1]} entries "
                             f"per row (ids 0 .. {y.shape[-1] - 1}); give an id (or word) of this model's vocabulary.")
        return self._fn(y, index)

    def __repr__(self) -> str:
        return self.name


def _ids(model: Any, tokens: Any, what: str) -> torch.Tensor:
    """Token ids from ints, strings (single tokens) or per-prompt lists of them."""
    items = tokens if isinstance(tokens, (list, tuple, torch.Tensor)) else [tokens]
    if isinstance(items, torch.Tensor):
        items = items.reshape(-1).tolist() if not items.is_floating_point() else items.reshape(-1)
    if len(items) == 0:
        raise InputError(f"{what} is empty: give one token (a word or an id), or one per prompt.")
    out = []
    for t in items:
        if isinstance(t, bool) or (isinstance(t, torch.Tensor) and t.is_floating_point()) or isinstance(t, float):
            raise InputError(f"{what} {t!r} is not a token: give a word or an int token id.")
        if isinstance(t, (int, torch.Tensor)):
            if int(t) < 0:
                raise InputError(f"{what} {int(t)} is not a token id (ids start at 0).")
            out.append(int(t))
            continue
        if not isinstance(t, str):
            raise InputError(f"{what} {t!r} is not a token: give a word or an int token id.")
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise InputError(f"{what} {t!r} is text but the model has no tokenizer: give token ids.")
        ids = tok(t, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            ids = tok(" " + t.strip(), add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise InputError(f"{what} {t!r} is not a single token (it tokenizes to {ids}); give one token or its id.")
        unk = getattr(tok, "unk_token_id", None)
        if unk is not None and int(ids[0]) == unk and t.strip() != str(getattr(tok, "unk_token", "")):
            raise InputError(f"{what} {t!r} is not in the tokenizer's vocabulary (it would be the unknown token "
                             f"{tok.unk_token!r}, id {unk}); give a word the model knows, or its token id.")
        out.append(int(ids[0]))
    return torch.tensor(out, dtype=torch.long)


def _pick(logits: torch.Tensor, ids: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """``logits[r, ids[r]]`` (one id per row, or one id for all rows); with ``index``, row ``r`` reads the id of
    prompt ``index[r] % len(ids)``."""
    if ids.numel() == 1:
        return logits[:, int(ids[0])]
    if index is not None:
        rows = index.to(logits.device) % ids.numel()
        return logits.gather(1, ids.to(logits.device)[rows][:, None])[:, 0]
    if ids.numel() != logits.shape[0]:
        # rows of a sweep repeat the prompts: cell c, prompt p is row c * P + p
        if logits.shape[0] % ids.numel():
            raise InputError(f"{ids.numel()} answer tokens for {logits.shape[0]} rows: give one per prompt.")
        ids = ids.repeat(logits.shape[0] // ids.numel())
    return logits.gather(1, ids.to(logits.device)[:, None])[:, 0]


def logit_diff(correct: Any, wrong: Any, model: Any = None) -> _LastPosition:
    """Logit of ``correct`` minus logit of ``wrong`` at the last position (one token, or one per prompt).

    >>> metric = cs.logit_diff(" Mary", " John", model=m)      # or token ids: cs.logit_diff(5, 9)
    """
    a, b = _ids(model, correct, "correct"), _ids(model, wrong, "wrong")
    if a.numel() != b.numel() and 1 not in (a.numel(), b.numel()):
        raise InputError(f"{a.numel()} correct and {b.numel()} wrong tokens: give one of each, or one per prompt.")
    return _LastPosition(f"logit_diff({correct!r}, {wrong!r})", lambda y, i: _pick(y, a, i) - _pick(y, b, i),
                         max(a.numel(), b.numel()), int(torch.cat([a, b]).max()))


def logit(token: Any, model: Any = None) -> _LastPosition:
    """The logit of ``token`` at the last position.

    >>> metric = cs.logit(7)
    """
    a = _ids(model, token, "token")
    return _LastPosition(f"logit({token!r})", lambda y, i: _pick(y, a, i), a.numel(), int(a.max()))


def prob(token: Any, model: Any = None) -> _LastPosition:
    """The softmax probability of ``token`` at the last position.

    >>> metric = cs.prob(" Paris", model=m)
    """
    a = _ids(model, token, "token")
    return _LastPosition(f"prob({token!r})", lambda y, i: _pick(y.float().softmax(-1), a, i), a.numel(),
                         int(a.max()))


class _Output:
    """The output itself, one value per row."""

    last_only = False
    takes_lengths = True  # it reads no position

    def __call__(self, y: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if y[0].numel() != 1:
            raise InputError(f"The output has {y[0].numel()} values per row; give a metric that reduces it to "
                             f"one number per row (e.g. cs.logit_diff(...) or a lambda).")
        return y.reshape(y.shape[0])

    def __repr__(self) -> str:
        return "output"


def output_value() -> _Output:
    """The output itself, for models with one output value per row (e.g. a sigmoid unit).

    >>> metric = cs.output_value()
    """
    return _Output()


def resolve_metric(metric: Any, model: Any) -> Metric:
    if metric is None:
        return output_value()
    if callable(metric):
        return metric
    raise InputError(f"metric must be a callable output -> (rows,), e.g. cs.logit_diff(...); got {metric!r}.")


def call_metric(metric: Callable[..., torch.Tensor], y: torch.Tensor, index: torch.Tensor | None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
    """``metric(y)``; also given each row's base input (``index``) if it ``takes_input_index``, and each row's
    real length (``lengths=``, prompts of different lengths) where it takes lengths.

    >>> call_metric(cs.logit_diff([5, 6], [9, 3]), logits, torch.tensor([0, 1, 0, 1]))
    """
    args = (y, index) if getattr(metric, "takes_input_index", False) else (y,)
    if lengths is not None:
        return metric(*args, lengths=lengths)
    return metric(*args)


def takes_lengths(metric: Any) -> bool:
    """Whether ``metric`` reads each row's real length: ``metric.takes_lengths`` or a ``lengths`` parameter.

    >>> takes_lengths(cs.logit(5)), takes_lengths(lambda y: y[:, -1, 5]), takes_lengths(lambda y, lengths: y)
    (True, False, True)
    """
    flag = getattr(metric, "takes_lengths", None)  # an explicit attribute wins (wrappers that forward lengths)
    if flag is not None:
        return bool(flag)
    try:
        return "lengths" in inspect.signature(metric).parameters
    except (TypeError, ValueError):
        return False


def is_last_only(metric: Any) -> bool:
    return bool(getattr(metric, "last_only", False))


__all__: Sequence[str] = ["logit_diff", "logit", "prob", "output_value"]
