"""Compiled (tracr-style) transformers: canonical sites and the parts a circuit graph is built from."""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard, cast

import torch

from ...errors import InputError
from ...zoo.compiled import Block, CompiledTransformer
from ._base import Adapter, Batch

_HEAD_HOOKS = ("hook_z", "hook_result")


class CompiledAdapter(Adapter):
    """A :class:`~causalscope.zoo.compiled.CompiledTransformer`.

    Canonical sites: ``embed`` (token + position embedding), ``layers.i`` (block output), ``layers.i.attn``,
    ``layers.i.attn.z`` and ``layers.i.attn.result`` (heads on dim 2), ``layers.i.mlp``,
    ``layers.i.mlp.post`` (the ReLU output) and ``unembed`` (logits).

    >>> m = causalscope.load("tracr-reverse")
    >>> m.run(m.adapter.encode(["BOS", 1, 2, 3]), cache=["layers.0.attn.result"])
    """

    kind = "compiled-transformer"
    module: CompiledTransformer

    def __init__(self, module: CompiledTransformer, tokenizer: Any = None, name: str | None = None) -> None:
        super().__init__(module, tokenizer, name or "CompiledTransformer")
        self.cfg = module.cfg
        self.n_layers = int(self.cfg.n_layers)
        self.n_heads = int(self.cfg.n_heads)

    @functools.cached_property
    def _aliases(self) -> dict[str, tuple[str, str, int | None]]:
        out: dict[str, tuple[str, str, int | None]] = {"embed": ("hook_embed", "output", None)}
        for i in range(self.n_layers):
            b = f"blocks.{i}"
            out[f"layers.{i}"] = (b, "output", None)
            out[f"layers.{i}.attn"] = (f"{b}.attn", "output", None)
            out[f"layers.{i}.attn.z"] = (f"{b}.attn.hook_z", "output", None)
            out[f"layers.{i}.attn.result"] = (f"{b}.attn.hook_result", "output", None)
            out[f"layers.{i}.mlp"] = (f"{b}.mlp", "output", None)
            out[f"layers.{i}.mlp.post"] = (f"{b}.mlp.hook_post", "output", None)
        out["unembed"] = ("unembed", "output", None)
        return out

    def aliases(self) -> Mapping[str, tuple[str, str, int | None]]:
        return self._aliases

    def _heads_in_shape(self, path: str) -> bool:
        return path.rsplit(".", 1)[-1] in _HEAD_HOOKS

    def encode(self, inputs: Any) -> torch.Tensor:
        """Token ids for a sequence (or list of sequences) of vocabulary items, via the tokenizer."""
        if self.tokenizer is None:
            raise InputError("This compiled model has no vocabulary: pass token ids (a LongTensor).")
        return self.tokenizer.encode(inputs)

    def prepare(self, inputs: Any) -> Batch:
        if isinstance(inputs, Batch):
            return inputs
        if not isinstance(inputs, torch.Tensor):
            if isinstance(inputs, Sequence) and not isinstance(inputs, str):
                inputs = self.encode(inputs)
            else:
                raise InputError(f"Expected token ids (an integer tensor) or a list of vocabulary items; "
                                 f"got {type(inputs).__name__}.")
        if inputs.is_floating_point():
            raise InputError("Expected token ids (an integer tensor), got a float tensor.")
        if inputs.ndim == 1:
            inputs = inputs[None]
        if inputs.ndim != 2:
            raise InputError(f"Token ids must be (batch, positions); got shape {tuple(inputs.shape)}.")
        if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= self.cfg.d_vocab):
            raise InputError(f"Token ids must lie in [0, {self.cfg.d_vocab}).")
        if inputs.shape[1] > self.cfg.n_ctx:
            raise InputError(f"{inputs.shape[1]} positions, but this model takes at most n_ctx={self.cfg.n_ctx}.")
        return Batch((inputs,), {}, int(inputs.shape[0]), int(inputs.shape[1]))

    def token_layers(self, batch: Batch) -> int | None:
        return self.n_layers * int(batch.seq_len or 0) * batch.size

    def graph_parts(self) -> CompiledParts:
        return CompiledParts(self.module)

    def describe(self) -> dict[str, Any]:
        return {"adapter": self.kind, "model": self.name, "n_layers": self.n_layers, "n_heads": self.n_heads}


class CompiledParts:
    """The pieces a circuit graph runs (see ``causalscope.circuits``), as plain functions of tensors.

    ``embed(tokens)`` is the embedding node's output; ``heads(l, x, key_mask)`` the per-head writes of layer
    ``l`` for a shared (B, T, d) or per-head (B, T, H, d) input, no query attending where ``key_mask``
    (B, T) is False; ``key_mask(tokens)`` that mask (PAD) or None; ``attn_bias(l)`` the constant every head sum
    adds; ``mlp(l, x)``; ``logits(resid)``.
    """

    def __init__(self, module: CompiledTransformer) -> None:
        self.module = module
        self.n_layers = module.cfg.n_layers
        self.n_heads = module.cfg.n_heads
        self.d_model = module.cfg.d_model

    @property
    def embed_device(self) -> torch.device:
        """Where the weights (and so the token ids) live."""
        return self.module.W_E.device

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.module.embed(tokens)

    def _block(self, layer: int) -> Block:
        return cast(Block, self.module.blocks[layer])  # an nn.ModuleList of Blocks

    def heads(self, layer: int, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._block(layer).attn.heads(x, key_mask)

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        return self.module.key_mask(tokens)

    def attn_bias(self, layer: int) -> torch.Tensor:
        return self._block(layer).attn.b_O

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self._block(layer).mlp(x)

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        return self.module.unembed(resid @ self.module.W_U)


def is_compiled_transformer(obj: Any) -> TypeGuard[CompiledTransformer]:
    return isinstance(obj, CompiledTransformer)
