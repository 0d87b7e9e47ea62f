"""Prompts as token ids: tokenizing, right padding with an attention mask, and the generic adapter with a tokenizer.

>>> padded([[5, 6, 7], [8]], pad=0)["attention_mask"]
tensor([[1, 1, 1],
        [1, 0, 0]])
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ...errors import InputError, UnknownTokenWarning
from ._base import Adapter, Batch


def token_lists(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids, without special tokens (no BOS is added); an empty tokenization raises.

    >>> token_lists(tok, ["the cat", "a dog ran"])
    [[1, 3], [2, 4, 12]]
    """
    if tokenizer is None:
        raise InputError("This model has no tokenizer: pass token ids (a LongTensor), or load it with "
                         "causalscope.load(model, tokenizer=...).")
    ids = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    empty = [t for t, i in zip(texts, ids) if not i]
    if empty:
        raise InputError(f"Prompt {empty[0]!r} tokenizes to no tokens: give each prompt at least one word "
                         f"(or token ids).")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None:
        for text, row in zip(texts, ids):
            if unk in row and str(getattr(tokenizer, "unk_token", "")) not in text:
                warnings.warn(f"Prompt {text!r}: {unknown_words(tokenizer, text) or 'some words'} are not in the "
                              f"tokenizer's vocabulary and became {tokenizer.unk_token!r} (the command line's "
                              f"--strict refuses such prompts).", UnknownTokenWarning, stacklevel=4)
    return ids


def unknown_words(tokenizer: Any, text: str) -> list[str]:
    """The whitespace-separated words of ``text`` that tokenize to the unknown token."""
    unk = tokenizer.unk_token_id
    return [w for w in text.split() if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]


def one_length_ids(tokenizer: Any, text: str | Sequence[str]) -> torch.Tensor:
    """Token ids (B, T) of prompts of one length; different lengths raise (``prepare`` pads them instead)."""
    ids = token_lists(tokenizer, [text] if isinstance(text, str) else list(text))
    lengths = sorted({len(i) for i in ids})
    if len(lengths) > 1:
        raise InputError(f"The prompts tokenize to different lengths {lengths}; this method needs prompts of "
                         f"one length for now (Model.run takes prompts of any lengths). Group them by length, "
                         f"or run them separately.")
    return torch.tensor(ids, dtype=torch.long)


def is_id_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(i, int) and not isinstance(i, bool)
                                                               for i in x)


def padded(ids: list[list[int]], pad: int) -> Any:
    """Token id lists as a (B, T) tensor, or, when their lengths differ, right-padded ids and their mask."""
    T = max(len(i) for i in ids)
    if all(len(i) == T for i in ids):
        return torch.tensor(ids, dtype=torch.long)
    return {"input_ids": torch.tensor([i + [pad] * (T - len(i)) for i in ids], dtype=torch.long),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids], dtype=torch.long)}


def pad_id(tokenizer: Any, config: Any, vocab: int | None) -> int:
    """The token that fills padding (never read: padding follows every real token, and is masked)."""
    for cand in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None),
                 getattr(config, "pad_token_id", None), getattr(config, "eos_token_id", None)):
        if isinstance(cand, int) and cand >= 0 and (vocab is None or cand < vocab):
            return cand
    return 0


def right_padded_lengths(mask: Any, ids: torch.Tensor) -> torch.Tensor | None:
    """Each row's real length from an attention mask that pads on the right; None when nothing is padded.
    Any other mask (left padding, holes) raises: positions would not be each prompt's own."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(ids.shape):
        raise InputError(f"attention_mask must be a tensor shaped like input_ids {tuple(ids.shape)}; got "
                         f"{tuple(getattr(mask, 'shape', ()))}.")
    m = mask.cpu()
    if bool(((m != 0) & (m != 1)).any()):
        raise InputError("attention_mask must hold 0 (padding) and 1 (real tokens).")
    lengths = m.long().sum(1)
    if bool((lengths == ids.shape[1]).all()):
        return None
    if bool((lengths == 0).any()):
        raise InputError("A row of attention_mask is all padding (a prompt with no tokens).")
    if not torch.equal(m.long(), (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()):
        raise InputError("causalscope pads on the right (real tokens first, then padding): this attention_mask "
                         "pads on the left or has holes. Re-pad on the right (tokenizer.padding_side = 'right'), "
                         "or pass the prompts as a list of strings.")
    return lengths


def _is_text(x: Any) -> bool:
    return isinstance(x, str) or (isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(s, str) for s in x))


def _forward_params(module: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


class TokenizedAdapter(Adapter):
    """The generic adapter (module paths only) for a model loaded with a tokenizer: prompts are tokenized
    (without special tokens, as for known architectures) and fed as ``input_ids``; prompts of different
    lengths are padded on the right with an ``attention_mask``.

    >>> m = causalscope.load(unknown_hf_lm, tokenizer)          # no site map: module paths, prompts still work
    >>> m.run("the cat sat", cache=["model.layers.0"]).output.shape
    """

    def tokenize(self, text: str | Sequence[str]) -> torch.Tensor:
        """Token ids (B, T) of prompts of one length (different lengths raise; ``prepare`` pads them)."""
        return one_length_ids(self.tokenizer, text).to(self._device())

    def prepare(self, inputs: Any) -> Batch:
        if not _is_text(inputs):
            return super().prepare(inputs)
        ids = token_lists(self.tokenizer, [inputs] if isinstance(inputs, str) else list(inputs))
        config = getattr(self.module, "config", None)
        out = padded(ids, pad_id(self.tokenizer, config, getattr(config, "vocab_size", None)))
        dev = self._device()
        if isinstance(out, torch.Tensor):
            return super().prepare(out.to(dev))
        params = _forward_params(self.module)
        if "attention_mask" not in params and "kwargs" not in params:
            raise InputError(f"The prompts tokenize to different lengths {sorted({len(i) for i in ids})} and "
                             f"{self.name}.forward takes no attention_mask to pad them: pass prompts of one length.")
        kwargs = {k: v.to(dev) for k, v in out.items()}
        lengths = right_padded_lengths(out["attention_mask"], out["input_ids"])
        return Batch((), kwargs, len(ids), int(out["input_ids"].shape[1]), lengths=lengths)

    def _device(self) -> torch.device:
        p = next(iter(self.module.parameters()), None)
        return p.device if p is not None else torch.device("cpu")
