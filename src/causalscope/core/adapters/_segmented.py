"""The segmented-forward capability: adapters that run a transformer LM block by block, from any layer and
position on, against cached keys / values. Methods ask for it with :func:`segmented`, never by adapter kind.

>>> lm = segmented(m.adapter)                  # None where the model has no segmented forward
>>> if lm is not None:
...     logits = lm.forward_from(lm.embed(ids), layer=0)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from ._base import Adapter, Batch

#: per-layer (keys, values), each (batch, kv_heads, tokens, d_head)
KV = list[tuple[torch.Tensor, torch.Tensor]]


class BlockPaths(Protocol):
    """Module paths of an LM's parts (the Hugging Face adapter's ``Arch``): block ``i`` is ``f"{layers}.{i}"``."""

    @property
    def layers(self) -> str: ...

    @property
    def final_norm(self) -> str: ...


@runtime_checkable
class SegmentedLM(Protocol):
    """A transformer LM adapter with a segmented forward (Hugging Face causal LMs: :class:`HFCausalLMAdapter`).

    >>> lm = segmented(m.adapter)
    >>> seg = lm.segment(h, layer=3, stop=4, pos=5, past=lm.stacked_past(run.kv, 3, groups=2, pos=5))
    >>> m.run(seg, edits)                          # block 3 only, positions 5.., site positions stay absolute
    """

    @property
    def arch(self) -> BlockPaths: ...

    @property
    def n_layers(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def unembed_path(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    def tokenize(self, text: str | Sequence[str]) -> torch.Tensor: ...

    def embed(self, input_ids: torch.Tensor, start_pos: int = 0) -> torch.Tensor: ...

    def kv_cache(self, out: Any) -> KV: ...

    def segment(self, hidden: torch.Tensor, layer: int = 0, pos: int = 0, past: KV | None = None,
                stop: int | None = None, last_only: bool = False, head: bool = True) -> Batch: ...

    def stacked_past(self, kv: KV, layer: int, groups: int, pos: int) -> KV: ...

    def forward_from(self, hidden: torch.Tensor, layer: int = 0, pos: int = 0, past: KV | None = None,
                     stop: int | None = None, head: bool = True, last_only: bool = False) -> torch.Tensor: ...


def segmented(adapter: Adapter) -> SegmentedLM | None:
    """``adapter`` as a :class:`SegmentedLM` where it has a segmented forward, else None.

    >>> segmented(cs.load("tiny-gpt2").adapter) is not None, segmented(cs.load(my_mlp).adapter)
    (True, None)
    """
    return adapter if isinstance(adapter, SegmentedLM) else None
