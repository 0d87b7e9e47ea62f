"""The shipped tracr-compiled models: weights, tokenizer and the recorded evaluation data, read from package
data (no JAX). Their ground-truth circuits and the ``Case`` wrapper live in ``causalscope.circuits``.

>>> model, tok = load_tracr_model("reverse")
>>> tok.encode([["a", "b", "c", "c"], ["b", "a"]])  # BOS is prepended, PAD appended
tensor([[0, 2, 3, 4, 4],
        [0, 3, 2, 1, 1]])
>>> tracr_names()
['frac-prevs', 'hist', 'ib3-frac-prevs', 'majority', 'pair-balance', 'reverse', 'sort']
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import InputError
from .compiled import CompiledConfig, CompiledTransformer

DATA = Path(__file__).resolve().parent / "data" / "tracr"


class CaseTokenizer:
    """Maps a case's vocabulary items to token ids and output ids back to items.

    >>> tok = load_tracr_model("hist")[1]
    >>> tok.encode([["a", "b", "a", "c", "c"], ["BOS", "c", "c", "c", "c", "c"]]).shape
    torch.Size([2, 6])
    >>> tok.decode_output([0, 2, 1])
    [0, 2, 1]
    """

    def __init__(self, vocab: Sequence[Any], bos: str, pad: str, max_seq_len: int,
                 output_vocab: Sequence[Any] | None) -> None:
        self.vocab = list(vocab)
        self.bos, self.pad, self.max_seq_len = bos, pad, int(max_seq_len)
        self.output_vocab = None if output_vocab is None else list(output_vocab)
        self._ids = {self._key(v): i for i, v in enumerate(self.vocab)}
        self.input_vocab = [v for v in self.vocab if v not in (bos, pad)]

    @staticmethod
    def _key(item: Any) -> tuple[str, Any]:
        return (type(item).__name__, item)  # 1 and "1" are different tokens

    def _is_seq(self, x: Any) -> bool:
        return isinstance(x, Sequence) and not isinstance(x, str)

    def encode(self, inputs: Sequence[Any] | Sequence[Sequence[Any]]) -> torch.Tensor:
        """Token ids (B, T) for one sequence of items or a list of them; BOS goes first, PAD fills to the longest."""
        if isinstance(inputs, str) and all(isinstance(v, str) and len(v) == 1 for v in self.input_vocab):
            inputs = list(inputs)
        if not self._is_seq(inputs) or len(inputs) == 0:
            raise InputError(f"Expected a sequence of vocabulary items {self.input_vocab} or a list of them; "
                             f"got {inputs!r}.")
        batch = [list(s) for s in inputs] if all(self._is_seq(s) for s in inputs) else [list(inputs)]
        rows = [self._encode_one(seq) for seq in batch]
        width = max(len(r) for r in rows)
        pad = self._ids[self._key(self.pad)]
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)

    def _encode_one(self, seq: list[Any]) -> list[int]:
        if not seq or seq[0] != self.bos:
            seq = [self.bos, *seq]
        if len(seq) - 1 > self.max_seq_len:
            raise InputError(f"{len(seq) - 1} items, but this case was compiled for at most {self.max_seq_len}.")
        ids = []
        for pos, item in enumerate(seq):
            i = self._ids.get(self._key(item))
            if i is None or (pos > 0 and item in (self.bos, self.pad)):
                raise InputError(f"{item!r} (position {pos}) is not an input of this case; "
                                 f"the vocabulary is {self.input_vocab} (BOS {self.bos!r} comes first).")
            ids.append(i)
        return ids

    def decode(self, ids: torch.Tensor | Sequence[Any]) -> list[Any]:
        """Input items for token ids (nested lists for a batch)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return [self.decode(i) if self._is_seq(i) else self.vocab[int(i)] for i in ids]

    def decode_output(self, ids: torch.Tensor | Sequence[Any]) -> list[Any]:
        """Output items for output ids (categorical; -1 reads as None) or the numbers themselves (numerical; nan
        reads as None)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        out: list[Any] = []
        for i in ids:
            if self._is_seq(i):
                out.append(self.decode_output(i))
            elif self.output_vocab is None:
                out.append(None if math.isnan(float(i)) else float(i))
            else:
                out.append(None if int(i) < 0 else self.output_vocab[int(i)])
        return out


def tracr_names() -> list[str]:
    """The shipped tracr-compiled models, sorted."""
    return sorted(tracr_index())


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    path = DATA / "index.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def tracr_index() -> dict[str, str]:
    """Name -> description of every shipped tracr-compiled model."""
    return dict(sorted(_index().items()))


@functools.cache
def _record(name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if name not in _index():
        raise InputError(f"No tracr case {name!r}; the shipped cases are {', '.join(tracr_names())}.")
    folder = DATA / name
    return json.loads((folder / "case.json").read_text()), load_file(str(folder / "model.safetensors"))


def tracr_record(name: str) -> dict[str, Any]:
    """The recorded ``case.json`` of one shipped model (config, vocabulary, inputs, tracr's outputs, circuit)."""
    return _record(name)[0]


def load_tracr_model(name: str) -> tuple[CompiledTransformer, CaseTokenizer]:
    """One shipped tracr-compiled model, freshly built (a new module each call; float32, eval mode), and its
    tokenizer."""
    rec, state = _record(name)
    model = CompiledTransformer(CompiledConfig(**rec["config"]))
    model.load_state_dict(state)
    model.eval()
    tok = CaseTokenizer(rec["vocab"], rec["bos"], rec["pad"], rec["max_seq_len"], rec["output_vocab"])
    return model, tok
