"""The shipped ground-truth cases: tracr-compiled models with their circuits, inputs and tracr's outputs.

No JAX needed: the weights, circuits and tracr's recorded outputs are package data written by
``python -m causalscope.circuits.build_cases``.

>>> case = load_case("reverse")
>>> logits = case.model(case.inputs)                          # (N, T, d_vocab_out); inputs padded with PAD
>>> bool((case.predict(logits) == case.labels)[case.has_label].all())
True
>>> case.tokenizer.encode([["a", "b", "c", "c"], ["b", "a"]])  # BOS is prepended, PAD appended
tensor([[0, 2, 3, 4, 4],
        [0, 3, 2, 1, 1]])
>>> case.circuit.nodes
['embed', 'a0.h0', 'm0', 'm1', 'm2', 'a3.h0', 'logits']
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .._errors import InputError
from ..zoo.compiled import CompiledConfig, CompiledTransformer
from ._circuit import Circuit

DATA = Path(__file__).resolve().parent.parent / "zoo" / "data" / "tracr"


class CaseTokenizer:
    """Maps a case's vocabulary items to token ids and output ids back to items.

    >>> tok = load_case("hist").tokenizer
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
        out = []
        for i in ids:
            if self._is_seq(i):
                out.append(self.decode_output(i))
            elif self.output_vocab is None:
                out.append(None if math.isnan(float(i)) else float(i))
            else:
                out.append(None if int(i) < 0 else self.output_vocab[int(i)])
        return out


@dataclass
class Case:
    """A compiled RASP program with its exact model, evaluation data and ground-truth circuit.

    >>> case = load_case("frac-prevs")
    >>> err = (case.predict(case.model(case.inputs)) - case.labels)[case.has_label].abs().max()

    ``labels`` is -1 (categorical) or NaN (numerical) where there is no label: position 0 (BOS) and PAD.
    """

    name: str
    description: str
    program: str
    model: CompiledTransformer
    tokenizer: CaseTokenizer
    inputs: torch.Tensor
    labels: torch.Tensor
    categorical: bool
    label_positions: list[int]
    circuit: Circuit

    @property
    def has_label(self) -> torch.Tensor:
        """(N, T) bool: the positions that carry a label (not BOS, not PAD)."""
        return labelled(self.labels)

    def predict(self, logits: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Labels-like predictions: argmax over the output vocabulary, or the numerical output column.

        >>> ids = case.tokenizer.encode([["a", "b", "c"], ["c", "a"]])
        >>> case.tokenizer.decode_output(case.predict(case.model(ids), ids))
        [[None, 'c', 'b', 'a'], [None, 'a', 'c', None]]

        Position 0 (BOS) reads -1 (categorical) or nan (numerical), as in ``labels``; so do PAD positions
        when the ``tokens`` the logits came from are given.
        """
        none = -1 if self.categorical else float("nan")
        pred = logits.argmax(-1) if self.categorical else logits[..., 0].clone()
        pred[..., 0] = none
        pad = getattr(self.model.cfg, "pad_id", None)
        if tokens is not None and pad is not None:
            pred = pred.masked_fill(tokens.to(pred.device) == pad, none)
        return pred

    def effective_circuit(self) -> Circuit:
        """The circuit without nodes whose output is constant on ``inputs`` (``meta['constant_on_inputs']``).

        Those nodes are part of the compiled program but resample or mean ablation cannot move them.
        """
        drop = set(self.circuit.meta.get("constant_on_inputs", []))
        return Circuit([n for n in self.circuit.nodes if n not in drop],
                       [e for e in self.circuit.edges if not drop & set(e)], dict(self.circuit.meta))


def labelled(labels: torch.Tensor) -> torch.Tensor:
    """Where ``labels`` hold a label: output ids >= 0 (long) or finite numbers (float); -1 / NaN mean none.

    >>> labelled(torch.tensor([[-1, 2, 0]])), labelled(torch.tensor([float("nan"), 0.5]))
    (tensor([[False,  True,  True]]), tensor([False,  True]))
    """
    return torch.isfinite(labels) if labels.is_floating_point() else labels >= 0


def case_names() -> list[str]:
    """The shipped cases, sorted.

    >>> case_names()
    ['frac-prevs', 'hist', 'majority', 'pair-balance', 'reverse', 'sort']
    """
    return sorted(_index())


def describe_cases() -> dict[str, str]:
    return dict(sorted(_index().items()))


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    path = DATA / "index.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=None)
def _record(name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if name not in _index():
        raise InputError(f"No tracr case {name!r}; the shipped cases are {', '.join(case_names())}.")
    folder = DATA / name
    return json.loads((folder / "case.json").read_text()), load_file(str(folder / "model.safetensors"))


def load_case(name: str) -> Case:
    """One shipped case, freshly built (its model is a new module each call; float32, eval mode)."""
    rec, state = _record(name)
    model = CompiledTransformer(CompiledConfig(**rec["config"]))
    model.load_state_dict(state)
    model.eval()
    tok = CaseTokenizer(rec["vocab"], rec["bos"], rec["pad"], rec["max_seq_len"], rec["output_vocab"])
    inputs = torch.tensor(rec["inputs"], dtype=torch.long)
    T = inputs.shape[1]
    if rec["categorical"]:
        out_ids = {CaseTokenizer._key(v): i for i, v in enumerate(rec["output_vocab"])}
        labels = torch.tensor([[-1] + [out_ids[CaseTokenizer._key(v)] for v in row[1:]] + [-1] * (T - len(row))
                               for row in rec["outputs"]], dtype=torch.long)
    else:
        nan = float("nan")
        labels = torch.tensor([[nan] + row[1:] + [nan] * (T - len(row)) for row in rec["outputs"]],
                              dtype=torch.float32)
    return Case(name=name, description=rec["description"], program=rec["program"], model=model, tokenizer=tok,
                inputs=inputs, labels=labels, categorical=bool(rec["categorical"]),
                label_positions=list(rec["label_positions"]), circuit=Circuit.from_dict(rec["circuit"]))
