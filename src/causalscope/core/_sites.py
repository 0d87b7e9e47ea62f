"""Sites: a named place in a model and the part of it an intervention reads or writes."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from ..errors import SiteError

Index = None | int | Sequence[int] | slice | range


def _as_index(value: Index, what: str) -> tuple[int, ...] | slice | None:
    if value is None or isinstance(value, slice):
        return value
    if isinstance(value, bool):
        raise SiteError(f"{what} must be ints, got a bool ({value!r}).")
    if isinstance(value, int):
        return (value,)
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise SiteError(f"{what} must be an int, a list of ints, a range or a slice; got {value!r}.") from None
    if any(not isinstance(v, int) or isinstance(v, bool) for v in value):
        raise SiteError(f"{what} must be ints; got {value!r}.")
    if len(set(out)) != len(out):
        raise SiteError(f"{what} repeat an index ({list(out)}); list each index once.")
    if not out:
        raise SiteError(f"{what} is empty: select at least one index, or pass None for all of them.")
    return out


@dataclass(frozen=True, eq=False)
class Site:
    """A place in a model and the part of it to read or write.

    >>> Site("layers.3.mlp")                                  # a whole module output
    >>> Site("layers.3", positions=[4])                      # the residual stream after block 3, token 4
    >>> Site("layers.2.attn.z", heads=[0, 5])                # two attention heads (per-head outputs)
    >>> Site("layers.1.mlp", positions=-1, neurons=[7, 9])   # two neurons at the last token
    >>> Site("layers.4", basis=torch.linalg.qr(torch.randn(64, 2)).Q)  # a 2-d subspace

    ``module`` is an adapter's canonical name (``layers.i``, ``layers.i.attn``, ``layers.i.mlp``,
    ``layers.i.attn.z``, ``embed``, ``final_norm``, ``unembed``) or any module path of the model.
    ``io`` picks the module's output (default) or its first input. ``positions`` index dim 1 of the
    activation (negative counts from the end), ``heads`` split the last dim into ``n_heads`` heads
    (the adapter knows ``n_heads`` for canonical head sites), ``neurons`` index the last dim (within
    a head when heads are given), and ``basis`` (d x k, orthonormal columns) makes the site the
    k coordinates of the activation in that subspace. Sites are values: equal specs compare equal.
    """

    module: str
    io: Literal["output", "input"] = "output"
    # __post_init__ normalises every index to a tuple of ints, a slice or None
    positions: tuple[int, ...] | slice | None = None
    neurons: tuple[int, ...] | slice | None = None
    heads: tuple[int, ...] | slice | None = None
    basis: torch.Tensor | None = field(default=None, repr=False)
    n_heads: int | None = None

    if TYPE_CHECKING:  # the constructor takes any Index; the fields hold its normalised form
        def __init__(self, module: str, io: Literal["output", "input"] = "output", positions: Index = None,
                     neurons: Index = None, heads: Index = None, basis: torch.Tensor | None = None,
                     n_heads: int | None = None) -> None: ...

    def __post_init__(self) -> None:
        if not isinstance(self.module, str) or not self.module:
            raise SiteError(f"Site module must be a non-empty string, got {self.module!r}.")
        if self.io not in ("output", "input"):
            raise SiteError(f"Site io must be 'output' or 'input', got {self.io!r}.")
        object.__setattr__(self, "positions", _as_index(self.positions, "positions"))
        object.__setattr__(self, "neurons", _as_index(self.neurons, "neurons"))
        object.__setattr__(self, "heads", _as_index(self.heads, "heads"))
        if self.basis is not None:
            b = self.basis
            if not isinstance(b, torch.Tensor) or b.ndim != 2 or not b.is_floating_point():
                raise SiteError(f"Site basis must be a float tensor shaped (d, k); got {type(b).__name__} "
                                f"{tuple(getattr(b, 'shape', ()))}.")
            if b.shape[1] > b.shape[0]:
                raise SiteError(f"Site basis has more vectors ({b.shape[1]}) than dimensions ({b.shape[0]}); "
                                "pass it as (d, k) with k <= d.")
            gram = b.T.double() @ b.double()
            if not torch.allclose(gram, torch.eye(b.shape[1], dtype=torch.float64), atol=1e-4):
                raise SiteError("Site basis columns are not orthonormal; orthonormalise it first, "
                                "e.g. basis = torch.linalg.qr(basis).Q.")
        if self.n_heads is not None and (not isinstance(self.n_heads, int) or self.n_heads <= 0):
            raise SiteError(f"n_heads must be a positive int, got {self.n_heads!r}.")

    def key(self) -> tuple:
        """A hashable identity: everything but the positions (used to group rows into one op)."""
        return (self.module, self.io, self.neurons, self.heads,
                None if self.basis is None else id(self.basis), self.n_heads)

    def _full_key(self) -> tuple:
        pos: object = self.positions
        if isinstance(pos, slice):
            pos = ("slice", pos.start, pos.stop, pos.step)
        return (*self.key(), pos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Site) and self._full_key() == other._full_key()

    def __getstate__(self) -> dict:
        # the cached hash is per process (str hashes are salted): never carry it into a pickle or a copy
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:  # a frozen value: hash it once (plans hash the same site for every row)
            h = hash(self._full_key())
            object.__setattr__(self, "_hash", h)
        return h

    def at(self, positions: Index) -> Site:
        """The same site at other positions: ``Site("layers.2").at(5)``."""
        return Site(self.module, self.io, positions, self.neurons, self.heads, self.basis, self.n_heads)

    @property
    def name(self) -> str:
        """A readable label, e.g. ``layers.2.mlp[pos=3]``."""
        parts = []
        if self.io == "input":
            parts.append("input")
        for label, v in (("pos", self.positions), ("heads", self.heads), ("neurons", self.neurons)):
            if v is not None:
                parts.append(f"{label}={_fmt(v)}")
        if self.basis is not None:
            parts.append(f"subspace={self.basis.shape[1]}")
        return self.module + (f"[{', '.join(parts)}]" if parts else "")

    def __str__(self) -> str:
        return self.name


def _fmt(v: tuple[int, ...] | slice) -> str:
    if isinstance(v, slice):
        return f"{'' if v.start is None else v.start}:{'' if v.stop is None else v.stop}"
    return str(v[0]) if len(v) == 1 else ",".join(map(str, v))


def as_site(x: Site | str) -> Site:
    """``"layers.3.mlp"`` -> ``Site("layers.3.mlp")``; a Site passes through."""
    if isinstance(x, Site):
        return x
    if isinstance(x, str):
        return Site(x)
    raise SiteError(f"Expected a Site or a module name, got {type(x).__name__}: {x!r}.")
