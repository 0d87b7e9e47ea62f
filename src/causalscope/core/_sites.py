"""Sites: a named place in a model and the part of it an intervention reads or writes."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import torch

from ..errors import SiteError
from ._sae_sites import check_features, check_sae, check_width, is_transcoder, sae_label

Index = None | int | Sequence[int] | slice | range


def _as_index(value: Index, what: str) -> tuple[int, ...] | slice | None:
    if isinstance(value, slice):
        if what != "positions":  # a neuron / head slice has no size to resolve against until the run
            raise SiteError(f"{what} takes an int, a list of ints or a range, not a slice ({value!r}); write "
                            f"{what}=range({value.start or 0}, {value.stop}) for a run of indices.")
        if value.step == 0:
            raise SiteError(f"{what} slice step cannot be zero ({value!r}).")
        for v in (value.start, value.stop, value.step):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise SiteError(f"{what} slice bounds must be ints or None, got {value!r}.")
        return value
    if value is None:
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
    >>> Site("layers.2", sae=sae, features=[3, 7])           # two latents of a sparse autoencoder

    ``module`` is an adapter's canonical name (``layers.i``, ``layers.i.attn``, ``layers.i.mlp``,
    ``layers.i.attn.z``, ``embed``, ``final_norm``, ``unembed``) or any module path of the model.
    ``io`` picks the module's output (default) or its first input. ``positions`` index dim 1 of the
    activation (negative counts from the end), ``heads`` split the last dim into ``n_heads`` heads
    (the adapter knows ``n_heads`` for canonical head sites), ``neurons`` index the last dim (within
    a head when heads are given), and ``basis`` (d x k, orthonormal columns) makes the site the
    k coordinates of the activation in that subspace. ``sae`` (a sparse autoencoder: ``encode``, ``W_dec``,
    ``d_in``; see ``causalscope.sae``) makes the site its latents ``sae.encode(x)[..., features]`` (every
    latent for ``features=None``); an edit of the latents ``f -> f'`` writes ``x + (f' - f) @ W_dec[features]``,
    which keeps the SAE's reconstruction error, so an edit that leaves the latents unchanged leaves the model's
    output bit for bit unchanged. A transcoder reads the module's input and writes into its output (its sites
    have ``io="input"``). Sites are values: equal specs compare equal (sites of two SAE objects never do).
    """

    module: str
    io: Literal["output", "input"] = "output"
    # __post_init__ normalises every index to a tuple of ints, a slice or None
    positions: tuple[int, ...] | slice | None = None
    neurons: tuple[int, ...] | slice | None = None
    heads: tuple[int, ...] | slice | None = None
    basis: torch.Tensor | None = field(default=None, repr=False)
    n_heads: int | None = None
    sae: Any = field(default=None, repr=False)
    features: tuple[int, ...] | None = None

    if TYPE_CHECKING:  # the constructor takes any Index; the fields hold its normalised form
        def __init__(self, module: str, io: Literal["output", "input"] = "output", positions: Index = None,
                     neurons: Index = None, heads: Index = None, basis: torch.Tensor | None = None,
                     n_heads: int | None = None, sae: Any = None, features: Index = None) -> None: ...

    def __post_init__(self) -> None:
        if not isinstance(self.module, str) or not self.module:
            raise SiteError(f"Site module must be a non-empty string, got {self.module!r}.")
        if "[" in self.module or "]" in self.module:  # a site's name puts its selection in brackets
            raise SiteError(f"Site module {self.module!r} holds a bracket: give the module path alone and the "
                            f"selection as arguments (Site('layers.2', positions=[3])), or read a site's name back "
                            f"with as_site({self.module!r}).")
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
        self._check_sae()
        if self.n_heads is not None and (isinstance(self.n_heads, bool) or not isinstance(self.n_heads, int)
                                         or self.n_heads <= 0):
            raise SiteError(f"n_heads must be a positive int, got {self.n_heads!r}.")

    def _check_sae(self) -> None:
        """Normalise ``features``; refuse an SAE combined with another selection of the activation's own dims."""
        if self.sae is None:
            if self.features is not None:
                raise SiteError("features= selects latents of a sparse autoencoder: pass sae=... too (the "
                                "activation's own dimensions are neurons=).")
            return
        object.__setattr__(self, "features", _as_index(self.features, "features"))
        check_sae(self.sae)
        other = [k for k in ("neurons", "heads", "basis") if getattr(self, k) is not None]
        if other:
            raise SiteError(f"A site with sae= selects the SAE's latents (features=); it cannot also select "
                            f"{' / '.join(other)} of the activation. Drop {other[0]}=.")
        check_features(cast(tuple, self.features), self.sae)
        if is_transcoder(self.sae):  # it reads the module's input (and writes its output)
            object.__setattr__(self, "io", "input")

    def key(self) -> tuple:
        """A hashable identity: everything but the positions (used to group rows into one op)."""
        return (self.module, self.io, self.neurons, self.heads,
                None if self.basis is None else id(self.basis), self.n_heads,
                None if self.sae is None else id(self.sae), self.features)

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
        return Site(self.module, self.io, positions, self.neurons, self.heads, self.basis, self.n_heads, self.sae,
                    self.features)

    @property
    def name(self) -> str:
        """The site as text, e.g. ``layers.2.mlp[pos=3]``: the module, then what it selects.

        >>> Site("act1", neurons=range(128)).name, Site("layers.1", positions=[0, 1, 2, 3, 7, 9, 10, 11]).name
        ('act1[neurons=0..127]', 'layers.1[pos=0..3,7,9..11]')
        >>> Site("layers.3", io="input", positions=slice(-2, None)).name
        'layers.3[input, pos=-2:]'

        Index lists keep their order; a run of three or more consecutive ascending indices is written
        ``a..b`` (both ends included), a slice ``start:stop[:step]`` as in Python. The name is the site's key in
        a run's cache: two sites that differ (other than in their subspace's basis, named by its size, or in
        SAEs of one name) have different names, and :func:`as_site` reads a name back into its site.

        An SAE site names its SAE (its ``name``) and the features: ``layers.2[sae=facts-gpt-layers.2,
        features=0..9]``; a transcoder site ``layers.1.mlp[transcoder=tc, features=4]`` (it reads the input).
        """
        parts = []
        coder = self.sae is not None and is_transcoder(self.sae)
        if self.io == "input" and not coder:
            parts.append("input")
        for label, v in (("pos", self.positions), ("heads", self.heads), ("neurons", self.neurons)):
            if v is not None:
                parts.append(f"{label}={_fmt(v)}")
        if self.sae is not None:
            parts.append(f"{'transcoder' if coder else 'sae'}={sae_label(self.sae)}")
            if self.features is not None:
                parts.append(f"features={_fmt(self.features)}")
        if self.n_heads is not None:
            parts.append(f"n_heads={self.n_heads}")
        if self.basis is not None:
            parts.append(f"subspace={self.basis.shape[1]}")
        return self.module + (f"[{', '.join(parts)}]" if parts else "")

    @classmethod
    def from_name(cls, name: str) -> Site:
        """The site a :attr:`name` describes: ``Site.from_name("act1[neurons=0..127]")``.

        >>> Site.from_name("layers.3[input, pos=-2:]") == Site("layers.3", io="input", positions=slice(-2, None))
        True

        Raises :class:`~causalscope.errors.SiteError` for text that is not a site's name, and for a subspace
        site (its name gives the basis's size, not the basis: pass ``basis=`` to :class:`Site`).
        """
        if not isinstance(name, str):
            raise SiteError(f"A site name is a string, got {type(name).__name__}: {name!r}.")
        module, bracket, rest = name.partition("[")
        if not bracket:
            return cls(name)
        if not rest.endswith("]") or "[" in rest[:-1] or "]" in rest[:-1]:
            raise SiteError(f"{name!r} is not a site name: write the module, then one bracket of selections, "
                            f"e.g. 'layers.2.mlp[pos=3, neurons=0..63]'.")
        kw: dict[str, Any] = {}
        for part in rest[:-1].split(", "):
            key, eq, value = part.partition("=")
            if part == "input" and "io" not in kw:
                kw["io"] = "input"
            elif eq and key in _NAME_KEYS and _NAME_KEYS[key] not in kw:
                if key == "subspace":
                    raise SiteError(f"{name!r} names a subspace site: its name gives the basis's size, not the basis; "
                                    f"build it as Site({module!r}, basis=...).")
                if key in ("sae", "transcoder", "features"):
                    raise SiteError(f"{name!r} names a site of SAE latents: its name gives the SAE's name, not the "
                                    f"SAE; build it as Site({module!r}, sae=..., features=[...]).")
                kw[_NAME_KEYS[key]] = _parse_index(value, name) if key != "n_heads" else _parse_int(value, name)
            else:
                raise SiteError(f"{name!r} is not a site name: {part!r} is not one of 'input', "
                                f"{', '.join(repr(k + '=...') for k in _NAME_KEYS)} (each at most once, "
                                f"separated by ', ').")
        return cls(module, **kw)

    def __str__(self) -> str:
        return self.name


#: the most indices one ``a..b`` run of a name may hold (a typo such as 0..10000000000 is refused, not allocated)
_MAX_RUN = 1 << 24
#: the selections a site's name may list (its text -> the Site field)
_NAME_KEYS = {"pos": "positions", "heads": "heads", "neurons": "neurons", "n_heads": "n_heads",
              "subspace": "basis", "sae": "sae", "transcoder": "sae", "features": "features"}


def _fmt(v: tuple[int, ...] | slice) -> str:
    """An index in a site's name: a slice as ``start:stop[:step]``, a list with its runs of three or more
    consecutive ascending indices as ``a..b``.

    >>> _fmt((0, 1, 2, 3, 7, 9, 10)), _fmt(slice(None, 4)), _fmt(slice(0, 8, 2))
    ('0..3,7,9,10', ':4', '0:8:2')
    """
    if isinstance(v, slice):
        ends = ["" if x is None else str(x) for x in (v.start, v.stop)]
        return ":".join(ends if v.step is None else [*ends, str(v.step)])
    out, start = [], 0
    for i in range(1, len(v) + 1):
        if i == len(v) or v[i] != v[i - 1] + 1:
            run = v[start:i]
            out += [f"{run[0]}..{run[-1]}"] if len(run) >= 3 else [str(x) for x in run]
            start = i
    return ",".join(out)


def _parse_int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SiteError(f"{name!r} is not a site name: {text!r} is not an integer.") from None


def _parse_index(text: str, name: str) -> tuple[int, ...] | slice:
    """What :func:`_fmt` wrote: ``start:stop[:step]`` (a slice) or integers and ``a..b`` runs, comma-separated."""
    if ":" in text:
        ends = text.split(":")
        if len(ends) > 3:
            raise SiteError(f"{name!r} is not a site name: the slice {text!r} has more than three parts.")
        return slice(*(None if e == "" else _parse_int(e, name) for e in ends))
    out: list[int] = []
    for piece in text.split(","):
        a, dots, b = piece.partition("..")
        if dots:
            lo, hi = _parse_int(a, name), _parse_int(b, name)
            if hi < lo:
                raise SiteError(f"{name!r} is not a site name: the run {piece!r} counts down; write a..b with a <= b.")
            if hi - lo >= _MAX_RUN:
                raise SiteError(f"{name!r}: the run {piece!r} holds over {_MAX_RUN} indices; no activation is that "
                                f"wide.")
            out += range(lo, hi + 1)
        else:
            out.append(_parse_int(piece, name))
    return tuple(out)


def as_site(x: Site | str) -> Site:
    """``"layers.3.mlp"`` -> ``Site("layers.3.mlp")``; a site's name reads back into its site
    (``"layers.3[pos=2]"`` -> ``Site("layers.3", positions=[2])``, see :meth:`Site.from_name`); a Site passes
    through."""
    if isinstance(x, Site):
        return x
    if isinstance(x, str):
        return Site.from_name(x)
    raise SiteError(f"Expected a Site or a module name, got {type(x).__name__}: {x!r}.")


def check_site(site: Site, seq_len: int | None, offset: int = 0) -> None:
    """Raise when the site's positions lie outside ``seq_len`` tokens, or before a segment starting at ``offset``.

    >>> check_site(Site("layers.0", positions=9), seq_len=4)   # SiteError: out of range for 4 tokens

    A slice of positions must step forward and select at least one of the ``seq_len`` tokens (a slice past the
    end would otherwise edit nothing without a word).
    """
    if isinstance(site.positions, slice):
        sl = site.positions
        if sl.step is not None and sl.step < 0:
            raise SiteError(f"Site {site.name!r}: a slice of positions steps backwards ({sl!r}); list the positions "
                            f"instead (e.g. positions=[4, 3, 2, 1]), or use a forward step.")
        if seq_len is not None and not range(seq_len)[sl]:
            raise SiteError(f"Site {site.name!r}: positions {sl.start}:{sl.stop} select no position of {seq_len} "
                            f"tokens (valid: {-seq_len} .. {seq_len - 1}).")
    if seq_len is not None and isinstance(site.positions, tuple):
        bad = [p for p in site.positions if not -seq_len <= p < seq_len]
        if bad:
            raise SiteError(f"Site {site.name!r}: positions {bad} are out of range for {seq_len} tokens "
                            f"(valid: {-seq_len} .. {seq_len - 1}).")
        early = [p for p in site.positions if p % seq_len < offset]
        if early:
            raise SiteError(f"Site {site.name!r}: positions {early} lie before the segment, which starts at "
                            f"position {offset}; a segmented run recomputes positions {offset} .. {seq_len - 1}.")


def check_shape(act: torch.Tensor, site: Site, n_heads: int | None, pos: torch.Tensor | None,
                writing: bool = False) -> None:
    """Raise when ``site`` does not fit ``act`` (positions, heads, neurons or basis out of range, an SAE of another
    width; ``writing``: ``act`` is the output a transcoder site writes into)."""
    if site.positions is not None and act.ndim < 3:
        raise SiteError(f"Site {site.name!r} selects positions, but the activation is {tuple(act.shape)}: "
                        f"positions index dim 1 of a (batch, positions, ...) activation.")
    if pos is not None:
        T = act.shape[1]
        lo, hi = int(pos.min()), int(pos.max())
        if lo < -T or hi >= T:
            raise SiteError(f"Site {site.name!r}: positions out of range for {T} positions "
                            f"(got {lo} .. {hi}; valid {-T} .. {T - 1}).")
    split = site.heads is not None and n_heads is not None and act.ndim in (2, 3)
    last = act.shape[-1] // n_heads if split and n_heads else act.shape[-1]
    if split and act.shape[-1] % cast(int, n_heads):  # split implies n_heads
        raise SiteError(f"Site {site.name!r}: last dimension {act.shape[-1]} does not split into {n_heads} heads.")
    if site.heads is not None and isinstance(site.heads, tuple):
        H = cast(int, n_heads) if split else act.shape[-2]  # split implies n_heads
        bad = [h for h in site.heads if not 0 <= h < H]
        if bad:
            raise SiteError(f"Site {site.name!r}: heads {bad} out of range (the site has {H} heads: 0 .. {H - 1}).")
    if isinstance(site.neurons, tuple):
        bad = [i for i in site.neurons if not 0 <= i < last]
        if bad:
            raise SiteError(f"Site {site.name!r}: neurons {bad} out of range (size {last}: 0 .. {last - 1}).")
    if site.basis is not None and site.basis.shape[0] != last:
        raise SiteError(f"Site {site.name!r}: basis is {tuple(site.basis.shape)} but the activation's last "
                        f"dimension is {last}.")
    if site.sae is not None:
        check_width(site, int(act.shape[-1]), writing)
