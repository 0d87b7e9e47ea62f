"""What every lens shares: the model, the layers, the prompts, and one cached pass of the residual stream.

>>> s = stream(m, ["the cat sat", "a dog"], [0, 1, 3], chunk_size=None)
>>> s.hidden[1].shape, s.lengths.tolist(), s.tokens[1]
(torch.Size([2, 3, 64]), [3, 2], ['a', 'dog'])
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core import Model, unembed_fn
from ..core.adapters import Batch
from ..errors import InputError
from ..loading import load

Head = Callable[[torch.Tensor], torch.Tensor]


def lens_model(model: Any) -> tuple[Model, Head]:
    """The wrapped model and its readout (final norm + unembedding); InputError for models without one."""
    m = load(model)
    return m, unembed_fn(m.adapter)


def n_layers_of(m: Model) -> int:
    n = m.n_layers
    if not isinstance(n, int) or n < 1:
        raise InputError(f"{m.name} has no transformer blocks causalscope knows (n_layers={n!r}).")
    return n


def check_layers(layers: Any, n_layers: int, what: str = "layers") -> list[int]:
    """``layers`` as sorted block indices: None (all), an int or a list of ints; negative ints count from the end.

    >>> check_layers([-1, 0], 4)
    [0, 3]
    """
    if layers is None:
        return list(range(n_layers))
    items = [layers] if isinstance(layers, numbers.Integral) else layers
    if isinstance(items, (torch.Tensor, np.ndarray)):
        items = items.tolist()
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise InputError(f"{what} must be None (every layer), a layer index or a non-empty list of them; got "
                         f"{layers!r}.")
    out: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or not -n_layers <= int(item) < n_layers:
            raise InputError(f"{what} holds {item!r}, which is not a layer of this model: give ints from 0 to "
                             f"{n_layers - 1} (or -1 for the last).")
        out.append(int(item) % n_layers)
    if len(set(out)) != len(out):
        raise InputError(f"{what} names a layer twice: {list(items)!r}.")
    return sorted(out)


def check_k(k: Any, vocab: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= int(k) <= vocab:
        raise InputError(f"k (how many top tokens to keep per cell) must be an int from 1 to the vocabulary size "
                         f"{vocab}; got {k!r}.")
    return int(k)


def check_chunk(chunk_size: Any) -> int | None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral)
                                   or int(chunk_size) < 1):
        raise InputError(f"chunk_size must be a positive int (prompts per pass) or None; got {chunk_size!r}.")
    return None if chunk_size is None else int(chunk_size)


@dataclass
class Stream:
    """The residual stream after each asked layer, for a batch of prompts padded on the right.

    ``hidden[l]``: (B, T, d) after block ``l`` (ordinary tensors, usable with autograd); ``last``: after the
    last block (its readout is the model's logits); ``lengths``: each prompt's real length; ``ids``: (B, T);
    ``tokens``: each prompt's tokens as text (its real ones); ``single``: one prompt was given (not a list).
    """

    hidden: dict[int, torch.Tensor]
    last: torch.Tensor
    lengths: torch.Tensor
    ids: torch.Tensor
    tokens: list[list[str]]
    single: bool

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool: True at real tokens."""
        T = self.last.shape[1]
        return torch.arange(T, device=self.lengths.device)[None] < self.lengths[:, None]


def prepared(m: Model, prompts: Any) -> tuple[Batch, torch.Tensor, bool]:
    """The model's batch for ``prompts``, their token ids (B, T) and whether one prompt was given."""
    if prompts is None or (isinstance(prompts, (list, tuple)) and not prompts):
        raise InputError("prompts is empty: give a prompt, a list of prompts or token ids.")
    texts = [prompts] if isinstance(prompts, str) else prompts if isinstance(prompts, (list, tuple)) else []
    blank = [p for p in texts if isinstance(p, str) and not p.strip()]
    if blank:
        raise InputError(f"prompts holds an empty prompt {blank[0]!r}: a lens reads the prompt's tokens, so each "
                         f"prompt needs at least one. Drop it, or give it some text.")
    batch = m.adapter.prepare(prompts)
    ids = m.adapter.token_ids(batch)
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
        raise InputError(f"Lenses read token ids; {m.name} was fed {type(prompts).__name__}. Give prompts or token "
                         f"ids.")
    single = isinstance(prompts, str) or (isinstance(prompts, torch.Tensor) and prompts.ndim == 1)
    return batch, ids, single


def token_texts(m: Model, ids: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
    """Each row's real tokens as text (``str(id)`` where the model has no tokenizer)."""
    rows = [ids[i, : int(n)].tolist() for i, n in enumerate(lengths.tolist())]
    return [[decode(m, t) for t in row] for row in rows]


def decode(m: Model, token: int) -> str:
    tok = m.tokenizer
    if tok is None:
        return str(token)
    try:
        return str(tok.decode([int(token)]))
    except Exception:  # a tokenizer that cannot decode one id
        return str(token)


def stream(m: Model, prompts: Any, layers: Sequence[int], chunk_size: int | None,
           prep: tuple[Batch, torch.Tensor, bool] | None = None) -> Stream:
    """One cached pass over ``prompts``: the residual stream after each of ``layers`` and after the last block
    (``prep``: what :func:`prepared` returned for them, when the caller has it)."""
    batch, ids, single = prep if prep is not None else prepared(m, prompts)
    L = n_layers_of(m)
    sites = [f"layers.{i}" for i in sorted({*layers, L - 1})]
    run = m.run(batch, cache=sites, chunk_size=chunk_size, keep_output=False, progress=False)
    B, T = int(ids.shape[0]), int(ids.shape[1])
    lengths = run.lengths.cpu().long() if run.lengths is not None else torch.full((B,), T, dtype=torch.long)
    # the run's tensors were made under inference_mode: copies are ordinary tensors (training reads them)
    cached = {int(s.split(".")[1]): run.cache[s].clone() for s in sites}
    return Stream({i: cached[i] for i in layers}, cached[L - 1], lengths, ids.cpu(), token_texts(m, ids.cpu(),
                                                                                                  lengths), single)


def answer_ids(m: Model, answer: Any, n_prompts: int) -> torch.Tensor | None:
    """One answer token id per prompt (None without an answer): a token (word or id) for every prompt, or a
    list of one per prompt."""
    if answer is None:
        return None
    items = answer.tolist() if isinstance(answer, torch.Tensor) else answer
    many = isinstance(items, (list, tuple))
    seq = list(items) if many else [items] * n_prompts
    if many and len(seq) != n_prompts:
        raise InputError(f"answer lists {len(seq)} tokens for {n_prompts} prompts: give one token for all, or one "
                         f"per prompt.")
    out = [_one_token(m, a) for a in seq]
    vocab = vocab_size(m)
    bad = [a for a in out if a >= vocab]
    if bad:
        raise InputError(f"answer token id {bad[0]} is outside the vocabulary (0 to {vocab - 1}).")
    return torch.tensor(out, dtype=torch.long)


def _one_token(m: Model, a: Any) -> int:
    if isinstance(a, numbers.Integral) and not isinstance(a, bool):
        if int(a) < 0:
            raise InputError(f"answer {int(a)} is not a token id (ids start at 0).")
        return int(a)
    if not isinstance(a, str) or not a.strip():
        raise InputError(f"answer {a!r} is not a token: give a word (one token) or its int id.")
    tok = m.tokenizer
    if tok is None:
        raise InputError(f"answer {a!r} is text but {m.name} has no tokenizer: give its token id.")
    ids = tok(a, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 and not a.startswith(" "):
        ids = tok(" " + a.strip(), add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(f"answer {a!r} is not one token (it tokenizes to {list(ids)}); give one token or its id.")
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None and int(ids[0]) == unk and a.strip() != str(getattr(tok, "unk_token", "")):
        raise InputError(f"answer {a!r} is not in the tokenizer's vocabulary (it would be {tok.unk_token!r}); give a "
                         f"word the model knows, or its token id.")
    return int(ids[0])


def vocab_size(m: Model) -> int:
    cfg = getattr(m.adapter, "config", None)
    n = getattr(cfg, "vocab_size", None)
    if n is None:
        n = getattr(getattr(m.adapter, "cfg", None), "d_vocab", None)
    if not isinstance(n, int):
        raise InputError(f"causalscope cannot tell {m.name}'s vocabulary size.")
    return n


def rows_per_chunk(chunk_size: int | None, T: int, vocab: int, n: int) -> int:
    """Prompts per step of the lens arithmetic: ``chunk_size`` or what keeps a few (rows, T, vocab) float32
    tensors near 64 MiB."""
    if chunk_size is not None:
        return chunk_size
    return max(1, min(n, (64 << 20) // max(1, 16 * T * vocab)))


def nested(t: torch.Tensor, keep: torch.Tensor | None = None) -> list:
    """``t`` as nested lists for ``meta``, with None where ``keep`` is False (padding) or the value is NaN."""
    values: Any = t.tolist()
    if keep is None:
        keep = torch.ones(t.shape, dtype=torch.bool)
    return _blank(values, keep.expand(t.shape).tolist())


def _blank(v: Any, k: Any) -> Any:
    if isinstance(v, list):
        return [_blank(a, b) for a, b in zip(v, k)]
    if not k or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def tensor_of(values: Any, dtype: torch.dtype) -> torch.Tensor:
    """Nested lists from ``meta`` (None at padding) as a tensor: NaN (floats) or -1 (ints) at the blanks."""
    arr = np.array(values, dtype=np.float64)
    if dtype.is_floating_point:
        return torch.from_numpy(arr).to(dtype)
    return torch.from_numpy(np.where(np.isnan(arr), -1, arr)).to(dtype)
