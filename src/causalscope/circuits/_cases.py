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

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError, check_flag
from ..zoo.compiled import CompiledTransformer
from ..zoo.siit import DATA as SIIT_DATA
from ..zoo.siit import read_siit_folder, siit_names
from ..zoo.tracr import CaseTokenizer, load_tracr_model, tracr_index, tracr_names, tracr_record
from ._circuit import Circuit


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
    #: for a SIIT-trained model (``load_case(name, trained=True)``): HL circuit node -> LL node, and the training
    #: record (seed, steps, losses, held-out accuracy, IIA, node effects); None for the compiled model
    correspondence: dict[str, str] | None = None
    training: dict[str, Any] | None = None

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

    @property
    def held_out(self) -> torch.Tensor | None:
        """A SIIT-trained case's held-out inputs (indices into ``inputs``, never trained on); None when compiled.

        >>> case = load_case("reverse", trained=True)
        >>> circuits.node_effects(case.model, case.inputs[case.held_out], circuit=case.circuit,
        ...                       labels=case.labels[case.held_out])
        """
        if self.training is None:
            return None
        return split_inputs(len(self.inputs), float(self.training["holdout"]), int(self.training["split_seed"]))[1]

    def effective_circuit(self) -> Circuit:
        """The circuit without nodes whose output is constant on ``inputs`` (``meta['constant_on_inputs']``).

        Those nodes are part of the compiled program but resample or mean ablation cannot move them.
        """
        drop = set(self.circuit.meta.get("constant_on_inputs", []))
        return Circuit([n for n in self.circuit.nodes if n not in drop],
                       [e for e in self.circuit.edges if not drop & set(e)], dict(self.circuit.meta))


def split_inputs(n: int, holdout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) indices of ``n`` inputs: a seeded ``holdout`` fraction is held out (sorted indices).

    >>> split_inputs(10, 0.2, 1234)[1]
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(round(holdout * n))
    return perm[k:].sort().values, perm[:k].sort().values


def labelled(labels: torch.Tensor) -> torch.Tensor:
    """Where ``labels`` hold a label: output ids >= 0 (long) or finite numbers (float); -1 / NaN mean none.

    >>> labelled(torch.tensor([[-1, 2, 0]])), labelled(torch.tensor([float("nan"), 0.5]))
    (tensor([[False,  True,  True]]), tensor([False,  True]))
    """
    return torch.isfinite(labels) if labels.is_floating_point() else labels >= 0


def case_names() -> list[str]:
    """The shipped cases, sorted.

    >>> case_names()
    ['frac-prevs', 'hist', 'ib3-frac-prevs', 'majority', 'pair-balance', 'reverse', 'sort']
    """
    return tracr_names()


def describe_cases() -> dict[str, str]:
    return tracr_index()


def load_case(name: str, trained: bool = False) -> Case:
    """One shipped case, freshly built (its model is a new module each call; float32, eval mode).

    >>> load_case("reverse").model                    # the tracr-compiled model: exact
    >>> load_case("reverse", trained=True).model      # a transformer trained with SIIT to implement the same circuit

    ``trained=True``: the model is the shipped SIIT-trained one (``circuits.siit``), with ``correspondence``
    (HL circuit node -> LL node) and ``training`` (its record) set; inputs, labels and circuit are the case's.
    """
    check_flag(trained, "trained")
    model, tok = load_tracr_model(name)
    correspondence, training = None, None
    if trained:
        if name not in siit_names():
            raise InputError(f"No shipped SIIT-trained model for {name!r}; the shipped ones are "
                             f"{', '.join(siit_names())} (train one with circuits.siit({name!r})).")
        model, head = read_siit_folder(SIIT_DATA / name)
        correspondence, training = dict(head["correspondence"]), dict(head.get("record", {}))
    rec = tracr_record(name)
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
                label_positions=list(rec["label_positions"]), circuit=Circuit.from_dict(rec["circuit"]),
                correspondence=correspondence, training=training)
