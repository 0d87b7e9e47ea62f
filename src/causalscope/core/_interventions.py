"""Interventions: pure functions of the selected part of an activation.

Each intervention maps ``x`` (the selection, shaped ``(rows, *selection)``) and, for those that read
another run, ``src`` (the same selection of that run) to a new tensor of ``x``'s shape. They are values:
build them once and reuse them across rows; the engine groups rows that share one.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..errors import InterventionError, check_flag, check_int, check_seed


def _check_align(align: Any) -> None:
    if align not in (None, "end"):
        raise InterventionError(f"align must be 'end' (positions from the end read each source prompt's own "
                                f"offsets from its end) or None, got {align!r}.")


def _check_tensor(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t)
        except Exception:
            raise InterventionError(f"{name} must be a tensor or array-like, got {type(t).__name__}.") from None
    if not (t.is_floating_point() or t.is_complex()):
        raise InterventionError(f"{name} must be a floating-point tensor, got dtype {t.dtype}; "
                                f"convert it with .float().")
    if not torch.isfinite(t).all():
        raise InterventionError(f"{name} contains NaN or inf values; interventions must be finite.")
    return t


def _broadcast(name: str, value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if value.is_complex() and not x.is_complex():
        raise InterventionError(f"{name} is complex ({value.dtype}) but the activation is real ({x.dtype}); "
                                f"pass a real tensor.")
    value = value.to(device=x.device, dtype=x.dtype)
    try:
        return torch.broadcast_to(value, x.shape[1:]) if value.ndim < x.ndim else torch.broadcast_to(value, x.shape)
    except RuntimeError:
        raise InterventionError(
            f"{name} has shape {tuple(value.shape)}, but the site selects {tuple(x.shape[1:])} per row "
            f"({tuple(x.shape)} for {x.shape[0]} rows). Give a value of the selection's shape (or one that "
            f"broadcasts to it)."
        ) from None


class Intervention:
    """Base class. ``source`` is ``None`` for interventions that need no other run."""

    source: Any = None
    #: "row" (one source row per row), "all" (every source row, e.g. Mean) or None
    source_mode: str | None = None

    def key(self) -> tuple:
        return (type(self).__name__, id(self))

    def __call__(self, x: torch.Tensor, src: torch.Tensor | None, ctx: ApplyContext) -> torch.Tensor:
        raise NotImplementedError

    def source_rows(self, rows: torch.Tensor, input_index: torch.Tensor, source_size: int,
                    base_size: int) -> torch.Tensor:
        """The source row each of the plan rows ``rows`` reads (for ``source_mode="row"``).

        >>> Patch(clean).source_rows(torch.tensor([0, 2]), torch.tensor([0, 1, 1]), source_size=2, base_size=2)
        tensor([0, 1])

        ``input_index`` holds every plan row's base input, ``source_size`` the source's rows and ``base_size``
        the base inputs'. By default: the intervention's ``row`` if it has one, else row 0 of a one-row source,
        else the row's own base input when the source has one row per base input.
        """
        row = getattr(self, "row", None)
        if row is not None:
            if not 0 <= row < source_size:
                raise InterventionError(f"Patch row {row} is out of range: the source has {source_size} rows.")
            return torch.full((len(rows),), row, dtype=torch.long)
        if source_size == 1:
            return torch.zeros(len(rows), dtype=torch.long)
        if source_size == base_size:
            return input_index[rows]
        raise InterventionError(f"The patch source has {source_size} rows and the base inputs {base_size}; "
                                f"row i of the base reads row i of the source only when they match. "
                                f"Pass Patch(source, row=k).")


@dataclass
class ApplyContext:
    """What an intervention may know about the rows it acts on."""

    input_index: torch.Tensor  # (rows,) index of each row's base input
    site_name: str = ""


@dataclass(eq=False)
class Set(Intervention):
    """Set the selection to a fixed value (broadcast over rows).

    >>> Set(torch.zeros(64))          # residual stream to zero at the selected positions
    """

    value: Any

    def __post_init__(self) -> None:
        self.value = _check_tensor("Set value", self.value)

    def key(self) -> tuple:
        return ("Set", id(self.value))

    def __call__(self, x, src, ctx):
        return _broadcast("Set value", self.value, x).expand_as(x).clone()


@dataclass(eq=False)
class Patch(Intervention):
    """Replace the selection by the same selection of another run.

    ``source`` is a :class:`Run` made with ``cache=`` covering this site, or any model input (the
    engine runs it once and caches what it needs). ``row`` picks the source row; by default row ``i``
    of the base inputs reads row ``i`` of the source, or row 0 when the source has a single row.
    With a site ``basis`` only the subspace coordinates are patched.

    >>> clean = m.run("the cat sat", cache=["layers.2"])
    >>> m.run("the dog sat", edits={Site("layers.2", positions=1): Patch(clean)})
    >>> m.run("a dog", {Site("layers.2", positions=-1): Patch(clean, align="end")})   # last token <- last token

    Prompts of different lengths: positions from the start read the same positions in the source (which
    must have them); positions from the end need equal lengths, or ``align="end"``, which reads each
    source prompt's own offsets from its end; a site of every position needs equal lengths.
    """

    source: Any
    row: int | None = None
    align: Literal["end"] | None = None
    source_mode: str | None = field(default="row", init=False)

    def __post_init__(self) -> None:
        _check_align(self.align)
        if self.row is not None:
            self.row = check_int(self.row, "Patch row", low=0, error=InterventionError,
                                 hint="It picks one row of the source run (None: row i for base row i).")

    def key(self) -> tuple:
        return ("Patch", id(self.source), self.row, self.align)

    def __call__(self, x, src, ctx):
        return src


@dataclass(eq=False)
class Add(Intervention):
    """Add ``strength * direction`` (steering).

    >>> Add(direction, strength=4.0)
    """

    direction: Any
    strength: float = 1.0

    def __post_init__(self) -> None:
        self.direction = _check_tensor("Add direction", self.direction)
        if isinstance(self.strength, torch.Tensor) and self.strength.numel() == 1:
            self.strength = float(self.strength)
        if isinstance(self.strength, bool) or not isinstance(self.strength, numbers.Real) \
                or not math.isfinite(float(self.strength)):
            raise InterventionError(f"Add strength must be finite, got {self.strength!r} (a number: the multiple of "
                                    f"the direction added).")

    def key(self) -> tuple:
        return ("Add", id(self.direction), float(self.strength))

    def __call__(self, x, src, ctx):
        return x + float(self.strength) * _broadcast("Add direction", self.direction, x)


@dataclass(eq=False)
class Scale(Intervention):
    """Multiply the selection by ``factor`` (0 ablates, 1 leaves it, 10 amplifies).

    >>> Scale(0.5)
    """

    factor: float

    def __post_init__(self) -> None:
        try:
            ok = not isinstance(self.factor, bool) and math.isfinite(float(self.factor))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InterventionError(f"Scale factor must be a finite number, got {self.factor!r}.")

    def key(self) -> tuple:
        return ("Scale", float(self.factor))

    def __call__(self, x, src, ctx):
        return x * float(self.factor)


@dataclass(eq=False)
class Zero(Intervention):
    """Zero ablation.

    >>> Zero()
    """

    def key(self) -> tuple:
        return ("Zero",)

    def __call__(self, x, src, ctx):
        return torch.zeros_like(x)


@dataclass(eq=False)
class Mean(Intervention):
    """Replace the selection by its mean over every row of ``source`` (mean ablation).

    >>> Mean(reference_run)          # reference_run = m.run(many_prompts, cache=[...])
    """

    source: Any
    source_mode: str | None = field(default="all", init=False)

    def key(self) -> tuple:
        return ("Mean", id(self.source))

    def __call__(self, x, src, ctx):
        return src  # the engine hands each row the source's mean at that row's own positions


@dataclass(eq=False)
class Resample(Intervention):
    """Replace the selection by the same selection of a random row of ``source`` (resample ablation).

    The source row of every plan row is drawn once from a ``torch.Generator`` seeded with ``seed``,
    so the result does not depend on chunking.

    >>> Resample(other_inputs_run, seed=0)
    """

    source: Any
    seed: int = 0
    align: Literal["end"] | None = None
    source_mode: str | None = field(default="row", init=False)

    def __post_init__(self) -> None:
        _check_align(self.align)
        self.seed = check_seed(self.seed, "Resample seed", InterventionError)

    def key(self) -> tuple:
        return ("Resample", id(self.source), int(self.seed), self.align)

    def __call__(self, x, src, ctx):
        return src

    def source_rows(self, rows: torch.Tensor, input_index: torch.Tensor, source_size: int,
                    base_size: int) -> torch.Tensor:
        """One draw per plan row (seeded, so chunking does not change it), read at ``rows``.

        >>> Resample(other, seed=0).source_rows(torch.tensor([0, 1]), torch.tensor([0, 0]), 10, 1)
        """
        g = torch.Generator().manual_seed(int(self.seed))
        return torch.randint(source_size, (len(input_index),), generator=g)[rows]


@dataclass(eq=False)
class Noise(Intervention):
    """Add Gaussian noise of standard deviation ``std``.

    Draws are made per base input from a generator seeded with ``(seed, input index)``: rows that
    share a base input get the same draw (so a corrupted run is the same in every patching cell),
    and chunking does not change them. ``draws`` gives explicit noise shaped (inputs, *selection),
    e.g. to match another implementation noise-for-noise. ``replace=True`` replaces the selection by
    the noise instead of adding it (ROME's ``replace`` mode).

    >>> Noise(0.3, seed=1)
    """

    std: float = 1.0
    seed: int = 0
    draws: Any = None
    replace: bool = False

    def __post_init__(self) -> None:
        try:
            ok = not isinstance(self.std, bool) and math.isfinite(float(self.std)) and float(self.std) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InterventionError(f"Noise std must be a finite number >= 0, got {self.std!r}.")
        self.seed = check_seed(self.seed, "Noise seed", InterventionError)
        check_flag(self.replace, "Noise replace", InterventionError)
        if self.draws is not None:
            self.draws = _check_tensor("Noise draws", self.draws)

    def key(self) -> tuple:
        return ("Noise", float(self.std), int(self.seed), id(self.draws), bool(self.replace))

    def __call__(self, x, src, ctx):
        if self.draws is not None:
            if self.draws.shape[1:] != x.shape[1:]:
                raise InterventionError(f"Noise draws have shape {tuple(self.draws.shape)}; expected "
                                        f"(inputs, *{tuple(x.shape[1:])}) for this site.")
            idx = ctx.input_index.to(self.draws.device)
            if int(idx.max()) >= self.draws.shape[0]:
                raise InterventionError(f"Noise draws cover {self.draws.shape[0]} inputs, but the run has "
                                        f"input index {int(idx.max())}.")
            return (0 if self.replace else x) + self.draws[idx].to(device=x.device, dtype=x.dtype)
        uniq, inv = torch.unique(ctx.input_index, return_inverse=True)
        draws = [torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(i)),
                             dtype=torch.float32) for i in uniq.tolist()]
        noise = float(self.std) * torch.stack(draws)[inv].to(device=x.device, dtype=x.dtype)
        return noise if self.replace else x + noise


@dataclass(eq=False)
class Project(Intervention):
    """Project the selection onto (``keep="onto"``) or off (``keep="off"``) the span of ``basis`` (d x k).

    >>> Project(B, keep="off")        # remove a concept subspace
    """

    basis: Any
    keep: Literal["onto", "off"] = "onto"

    def __post_init__(self) -> None:
        self.basis = _check_tensor("Project basis", self.basis)
        if self.basis.ndim == 1:
            self.basis = self.basis[:, None]
        if self.basis.ndim != 2:
            raise InterventionError(f"Project basis must be (d, k); got shape {tuple(self.basis.shape)}.")
        if self.keep not in ("onto", "off"):
            raise InterventionError(f"Project keep must be 'onto' or 'off', got {self.keep!r}.")
        d, k = self.basis.shape
        if k > d:
            raise InterventionError(f"Project basis has more vectors ({k}) than dimensions ({d}); pass it as (d, k) "
                                    f"with k <= d (one column per direction).")
        b = self.basis.double()
        rank = int(torch.linalg.matrix_rank(b, rtol=max(d, k) * torch.finfo(self.basis.dtype).eps))
        if rank < k:
            raise InterventionError(f"Project basis {tuple(self.basis.shape)} has rank {rank}, not {k}: "
                                    f"{'its columns are zero' if rank == 0 else 'its columns are linearly dependent'}, "
                                    f"so orthonormalising it would add {k - rank} arbitrary direction(s). Pass "
                                    f"{k - rank} fewer, independent columns (the span you mean).")
        self.basis = torch.linalg.qr(b).Q.to(self.basis.dtype)

    def key(self) -> tuple:
        return ("Project", id(self.basis), self.keep)

    def __call__(self, x, src, ctx):
        if x.shape[-1] != self.basis.shape[0]:
            raise InterventionError(f"Project basis has dimension {self.basis.shape[0]}, but the site's last "
                                    f"dimension is {x.shape[-1]} (selection {tuple(x.shape[1:])}).")
        b = self.basis.to(device=x.device, dtype=x.dtype)
        onto = (x @ b) @ b.T
        return onto if self.keep == "onto" else x - onto


def as_intervention(x: Any) -> Intervention:
    if isinstance(x, Intervention):
        return x
    raise InterventionError(
        f"Expected an intervention (Set, Patch, Add, Scale, Zero, Mean, Resample, Noise, Project), "
        f"got {type(x).__name__}: {x!r:.80}."
    )
