"""The generic adapter: any ``nn.Module``; sites are its module paths."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import InputError, SiteError, unknown_site
from .._sites import Site
from ._tl_names import tl_alias, tl_hint


@dataclass(frozen=True)
class Resolved:
    """A site resolved against a model: the module that produces it and how to read it."""

    path: str
    io: str
    module: nn.Module
    n_heads: int | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.io)


@dataclass
class Batch:
    """A model input split into positional / keyword tensors, batch on dim 0."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    size: int = 1
    seq_len: int | None = None
    #: a segmented run covers positions pos_offset .. seq_len-1 only (site positions stay absolute)
    pos_offset: int = 0
    #: prompts of different lengths, padded on the right: each row's real length (None when all are seq_len)
    lengths: torch.Tensor | None = None

    def take(self, index: torch.Tensor) -> Batch:
        """The rows ``index`` (with repeats), as a new Batch."""
        def pick(v: Any) -> Any:
            if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == self.size:
                return v.index_select(0, index.to(v.device))
            if isinstance(v, (list, tuple)):
                return type(v)(pick(x) for x in v)
            return v
        lengths = None if self.lengths is None else self.lengths[index.to(self.lengths.device)]
        return Batch(tuple(pick(a) for a in self.args), {k: pick(v) for k, v in self.kwargs.items()},
                     int(index.numel()), self.seq_len, self.pos_offset, lengths)

    def stack(self, other: Batch) -> Batch | None:
        """This batch's rows, then ``other``'s, as one batch; None where the two do not stack (another
        structure, length or offset, or a value without a batch dim that differs).

        >>> both = base.stack(source)      # one run of 2P rows instead of two runs of P
        """
        if (self.seq_len, self.pos_offset, len(self.args), sorted(self.kwargs)) != \
                (other.seq_len, other.pos_offset, len(other.args), sorted(other.kwargs)):
            return None

        def join(a: Any, b: Any) -> Any:
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                if a.ndim > 0 and b.ndim > 0 and a.shape[0] == self.size and b.shape[0] == other.size \
                        and a.shape[1:] == b.shape[1:] and a.dtype == b.dtype and a.device == b.device:
                    return torch.cat([a, b])
                raise _NoStack
            if a is b or (not isinstance(a, (list, tuple, torch.Tensor)) and a == b):
                return a
            raise _NoStack

        try:
            args = tuple(join(a, b) for a, b in zip(self.args, other.args))
            kwargs = {k: join(v, other.kwargs[k]) for k, v in self.kwargs.items()}
        except _NoStack:
            return None
        lengths = None
        if self.lengths is not None or other.lengths is not None:
            full = [t.lengths if t.lengths is not None else torch.full((t.size,), int(t.seq_len or 0))
                    for t in (self, other)]
            lengths = torch.cat([x.cpu() for x in full])
        return Batch(args, kwargs, self.size + other.size, self.seq_len, self.pos_offset, lengths)


class _NoStack(Exception):
    """Two batches that cannot be one."""


class Adapter:
    """Maps a model onto sites and turns user inputs into a model call.

    >>> adapter = Adapter(my_mlp)
    >>> adapter.resolve(Site("net.0")).module
    Linear(in_features=4, out_features=8, bias=True)
    """

    kind = "module"

    def __init__(self, module: nn.Module, tokenizer: Any = None, name: str | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise InputError(f"Expected a torch.nn.Module, got {type(module).__name__}.")
        self.module = module
        self.tokenizer = tokenizer
        self.name = name or type(module).__name__
        self._modules: dict[str, nn.Module] = dict(module.named_modules())

    # -- sites -------------------------------------------------------------------------------------
    def aliases(self) -> Mapping[str, tuple[str, str, int | None]]:
        """Canonical name -> (module path, io, n_heads). Empty for a plain module."""
        return {}

    def site_names(self) -> list[str]:
        aliases = self.aliases()
        return list(aliases) + [p for p in self._modules if p and p not in aliases]

    def resolve(self, site: Site) -> Resolved:
        aliases = self.aliases()
        alias = aliases.get(site.module)
        if alias is None and aliases and site.module not in self._modules:
            alias = tl_alias(aliases, site.module)  # a TransformerLens hook name for a canonical site
        path, io, n_heads = alias if alias is not None else (site.module, site.io, None)
        if alias is not None and site.io == "input":
            io = "input"
        mod = self._modules.get(path)
        if mod is None or not path:
            hint = tl_hint(site.module)
            if hint is not None:
                raise SiteError(f"Site {site.module!r} is a TransformerLens name with no module on this model: {hint}.")
            raise unknown_site(site.module, self.site_names())
        if site.n_heads is not None:
            n_heads = site.n_heads
        if site.heads is not None and n_heads is None and not self._heads_in_shape(path):
            raise SiteError(f"Site {site.name!r} selects heads, but causalscope does not know how many heads "
                            f"{path!r} has. Pass n_heads=..., or use a canonical head site such as "
                            f"'layers.0.attn.z'.")
        return Resolved(path, io, mod, n_heads)

    def _heads_in_shape(self, path: str) -> bool:
        """True where the activation already has a heads axis (B, T, H, d_head)."""
        return False

    def resid_pre_site(self, layer: int) -> Site:
        """The residual stream entering block ``layer`` (the ``resid_pre`` sweep's site).

        >>> adapter.resid_pre_site(2).name
        'layers.2'
        """
        return Site(f"layers.{layer}", io="input")

    # -- inputs / outputs --------------------------------------------------------------------------
    def prepare(self, inputs: Any) -> Batch:
        if isinstance(inputs, Batch):
            return inputs
        if isinstance(inputs, torch.Tensor):
            return Batch((inputs,), {}, _batch_size(inputs), None)
        if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
            sizes = {_batch_size(t) for t in inputs}
            if len(sizes) != 1:
                raise InputError(f"Input tensors disagree on the batch size (dim 0): {sorted(sizes)}.")
            return Batch(tuple(inputs), {}, sizes.pop(), None)
        if isinstance(inputs, Mapping) and inputs:
            tens = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            sizes = {_batch_size(v) for v in tens.values()}
            if len(sizes) != 1:
                raise InputError(f"Input tensors disagree on the batch size (dim 0): {sorted(sizes)}.")
            return Batch((), dict(inputs), sizes.pop(), None)
        text = isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and bool(inputs)
                                           and all(isinstance(s, str) for s in inputs))
        hint = " Prompts need a tokenizer: causalscope.load(model, tokenizer)." if text else ""
        raise InputError(f"Cannot feed {type(inputs).__name__} to {self.name}: pass a tensor (batch on dim 0), "
                         f"a tuple of tensors or a dict of keyword tensors.{hint}")

    def call(self, batch: Batch) -> Any:
        return self.module(*batch.args, **batch.kwargs)

    def token_ids(self, batch: Batch) -> Any:
        """The token ids a prepared batch feeds the model (None where it feeds none by name).

        >>> adapter.token_ids(adapter.prepare({"input_ids": ids})) is ids
        True
        """
        return batch.kwargs.get("input_ids")

    def token_layers(self, batch: Batch) -> int | None:
        """Transformer blocks x positions x rows this batch's call executes (None where not a transformer)."""
        return None

    def last_position_cuts(self, batch: Batch) -> list[tuple[str, str]]:
        """Modules whose input the engine may cut to the last position for this batch.

        Each entry is ``(module path, scope path)``: when only the last position of a run's output is
        read (a segment with ``last_only``), the final block's MLP needs only that position; its output
        broadcasts back over the block's residual sum. The engine makes the cut only when no site of the
        plan lies in ``scope`` (the final block), so every value a plan reads is exact.
        """
        return []

    def output(self, out: Any) -> torch.Tensor:
        """The tensor a metric sees (logits for LMs)."""
        return primary(out)

    def describe(self) -> dict[str, Any]:
        return {"adapter": self.kind, "model": self.name}


def _batch_size(t: torch.Tensor) -> int:
    if t.ndim == 0:
        raise InputError("Model input is a 0-d tensor; give it a batch dimension (dim 0).")
    return int(t.shape[0])


def primary(out: Any) -> torch.Tensor:
    """The main tensor of a module's output (first element of tuples, ``logits`` of HF outputs)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping):
        for v in out.values():
            if isinstance(v, torch.Tensor):
                return v
    if isinstance(out, Sequence) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise InputError(f"The model returned {type(out).__name__}, which holds no tensor causalscope can read.")
