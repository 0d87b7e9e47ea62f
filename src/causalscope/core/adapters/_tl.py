"""TransformerLens ``HookedTransformer``: its hook points are sites, plus the canonical names."""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...errors import InputError
from .._sites import Site
from ._base import Adapter, Batch

if TYPE_CHECKING:
    from ._graph_parts_tl import TransformerLensParts

_HEAD_HOOKS = ("hook_z", "hook_q", "hook_k", "hook_v", "hook_result")


class TransformerLensAdapter(Adapter):
    """A TransformerLens ``HookedTransformer``. Every hook point (``blocks.3.hook_resid_pre``,
    ``blocks.3.attn.hook_z``, ...) is a site, and the canonical names map onto them:
    ``layers.i`` -> ``blocks.i.hook_resid_post``, ``layers.i.attn`` -> ``hook_attn_out``,
    ``layers.i.mlp`` -> ``hook_mlp_out``, ``layers.i.attn.z`` -> ``attn.hook_z`` (heads on dim 2).

    >>> m = causalscope.load(hooked_transformer)
    >>> m.run(tokens, cache=["blocks.0.hook_resid_pre", "layers.1.attn.z"])
    """

    kind = "transformer-lens"
    #: a transformer_lens HookedTransformer (duck-typed: its methods and ``cfg`` are not on nn.Module)
    module: Any

    def __init__(self, module: nn.Module, tokenizer: Any = None, name: str | None = None) -> None:
        super().__init__(module, tokenizer or getattr(module, "tokenizer", None), name or "HookedTransformer")
        self.cfg: Any = self.module.cfg
        self.n_layers = int(self.cfg.n_layers)
        self.n_heads = int(self.cfg.n_heads)

    @functools.cached_property
    def _aliases(self) -> dict[str, tuple[str, str, int | None]]:
        out: dict[str, tuple[str, str, int | None]] = {"embed": ("hook_embed", "output", None)}
        if "hook_pos_embed" in self._modules:
            out["pos_embed"] = ("hook_pos_embed", "output", None)
        for i in range(self.n_layers):
            out[f"layers.{i}"] = (f"blocks.{i}.hook_resid_post", "output", None)
            out[f"layers.{i}.attn"] = (f"blocks.{i}.hook_attn_out", "output", None)
            out[f"layers.{i}.attn.z"] = (f"blocks.{i}.attn.hook_z", "output", None)
            out[f"layers.{i}.mlp"] = (f"blocks.{i}.hook_mlp_out", "output", None)
        if "ln_final.hook_normalized" in self._modules:
            out["final_norm"] = ("ln_final.hook_normalized", "output", None)
        out["unembed"] = ("unembed", "output", None)
        return out

    def aliases(self) -> Mapping[str, tuple[str, str, int | None]]:
        return self._aliases

    def _heads_in_shape(self, path: str) -> bool:
        return path.rsplit(".", 1)[-1] in _HEAD_HOOKS

    def prepare(self, inputs: Any) -> Batch:
        if isinstance(inputs, Batch):
            return inputs
        if isinstance(inputs, str) or (isinstance(inputs, Sequence) and inputs and
                                       all(isinstance(s, str) for s in inputs)):
            if self.tokenizer is None:
                raise InputError("This HookedTransformer has no tokenizer: pass token ids.")
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            ids = [self.module.to_tokens(t, prepend_bos=False)[0].tolist() for t in texts]
            if any(not i for i in ids):
                raise InputError(f"Prompt {texts[[bool(i) for i in ids].index(False)]!r} tokenizes to no tokens: give "
                                 f"each prompt at least one word (or token ids).")
            inputs = ids
        lengths = None
        if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, (list, tuple)) for x in inputs):
            # prompts of different lengths: pad on the right (causal attention: real tokens never see padding)
            T = max(len(x) for x in inputs)
            pad = int(getattr(self.tokenizer, "pad_token_id", None) or 0)
            lens = [len(x) for x in inputs]
            inputs = torch.tensor([list(x) + [pad] * (T - len(x)) for x in inputs], dtype=torch.long)
            lengths = None if len(set(lens)) == 1 else torch.tensor(lens)
        if not isinstance(inputs, torch.Tensor) or inputs.is_floating_point():
            raise InputError(f"Expected token ids (an integer tensor) for a HookedTransformer; "
                             f"got {type(inputs).__name__}.")
        if inputs.ndim == 1:
            inputs = inputs[None]
        if int(inputs.min()) < 0 or int(inputs.max()) >= self.cfg.d_vocab:
            raise InputError(f"Token ids must lie in [0, {self.cfg.d_vocab}).")
        n_ctx = getattr(self.cfg, "n_ctx", None)
        uses_table = getattr(self.cfg, "positional_embedding_type", "standard") == "standard"
        if uses_table and isinstance(n_ctx, int) and inputs.shape[1] > n_ctx:
            raise InputError(f"The input has {inputs.shape[1]} tokens, but this HookedTransformer has position "
                             f"embeddings for at most n_ctx={n_ctx}. Shorten the prompt.")
        return Batch((inputs,), {}, int(inputs.shape[0]), int(inputs.shape[1]), lengths=lengths)

    def token_layers(self, batch: Batch) -> int | None:
        return self.n_layers * int(batch.seq_len or 0) * batch.size

    def resid_pre_site(self, layer: int) -> Site:
        return Site(f"blocks.{layer}.hook_resid_pre")

    def token_ids(self, batch: Batch) -> Any:
        ids = super().token_ids(batch)
        return batch.args[0] if ids is None and batch.args else ids

    def graph_parts(self) -> TransformerLensParts:
        """The pieces a circuit graph runs (``causalscope.circuits.ComputeGraph``).

        >>> circuits.ComputeGraph(cs.load(hooked_transformer)).edges[:1]
        [('embed', 'a0.h0')]
        """
        from ._graph_parts_tl import TransformerLensParts

        return TransformerLensParts(self.module)

    def describe(self) -> dict[str, Any]:
        return {"adapter": self.kind, "model": self.name, "n_layers": self.n_layers, "n_heads": self.n_heads}


def is_hooked_transformer(obj: Any) -> bool:
    return isinstance(obj, nn.Module) and any(c.__name__ == "HookedTransformer" for c in type(obj).__mro__)
