"""The labelled-array result type returned by every causalscope method."""

from __future__ import annotations

import copy
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import torch

from causalscope._version import __version__

from ..errors import InputError
from ._figures import DEFAULT_BACKEND, resolve_backend
from ._heatmap import heatmap
from ._html import result_html, show_figures_inline
from ._labels import AuxCoords, axis_labels, check_aux, jsonable_meta, normalise_label, token_labels, tuplify
from ._lines import line

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["LabelledArray", "load_result"]

Label = Any  # int | float | str | bool | None | tuple of these
_FORMAT = "causalscope.LabelledArray"
_FORMAT_VERSION = 1
_MAX_TICK_LABELS = 40
_A = TypeVar("_A", bound="LabelledArray")


class LabelledArray:
    """An array with named dimensions, coordinate labels and provenance metadata.

    >>> import torch
    >>> from causalscope.results import LabelledArray
    >>> a = LabelledArray(torch.arange(6.0).reshape(2, 3), dims=("layer", "token"),
    ...                   coords={"token": ["The", "cat", "sat"]},
    ...                   meta={"method": "demo"}, name="effect")
    >>> a
    <LabelledArray 'effect' (layer: 2, token: 3) float32 method='demo'>
    >>> a.sel(token="cat").values
    tensor([1., 4.])
    >>> a.mean("layer").coords
    {'token': ['The', 'cat', 'sat']}
    >>> a.to_frame().head(2)
       layer token  effect
    0      0   The     0.0
    1      0   cat     1.0

    Invariants:

    * ``values`` is a detached CPU ``torch.Tensor``; ``values.ndim == len(dims)``.
    * ``dims`` is a tuple of unique strings, one per axis.
    * ``coords`` has one list per dim, of length equal to that axis (default
      ``list(range(n))``). Labels are ints, floats, strings, bools, ``None`` or
      tuples of these; lists given as labels are stored as tuples.
    * ``meta`` is a JSON-able dict, kept in its JSON form (tuples become lists,
      numpy/torch scalars become Python numbers), so that save/load is exact.
      ``meta["versions"]`` defaults to the causalscope and torch versions.
    * Every operation returns a new ``LabelledArray`` carrying a copy of ``meta``
      and the same ``name``.
    * ``aux_coords`` (optional) are more labels along a dim, ``{name: (dim, labels)}``,
      e.g. the token at each position: kept by ``isel`` / ``sel`` / ``transpose``,
      one more column of ``to_frame()``, saved and loaded.

    In Jupyter a result shows as a compact table with its figure (``_repr_html_``;
    ``LabelledArray.html_figure = "plotly"`` or ``None`` picks the figure's backend or none).
    """

    __slots__ = ("_values", "_dims", "_coords", "_meta", "_name", "_aux")
    #: the backend of the figure in ``_repr_html_``: "matplotlib" (a PNG), "plotly" (plotly.js from its CDN) or None
    html_figure: str | None = "matplotlib"
    #: every labelled-array class by "module:qualname", so that a bundle brings a result back as its own class
    _classes: dict[str, type[LabelledArray]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        LabelledArray._classes[f"{cls.__module__}:{cls.__qualname__}"] = cls

    @classmethod
    def registered(cls, name: str) -> type[LabelledArray]:
        """The labelled-array class named ``"module:qualname"`` (``LabelledArray`` where no such class is loaded)."""
        return cls._classes.get(name, LabelledArray)

    def __init__(
        self,
        values: torch.Tensor | np.ndarray,
        dims: Sequence[str],
        coords: Mapping[str, Sequence[Label]] | None = None,
        meta: Mapping[str, Any] | None = None,
        name: str = "value",
        aux_coords: Mapping[str, tuple[str, Sequence[Label]]] | None = None,
    ) -> None:
        if isinstance(values, torch.Tensor):
            tensor = values.detach().cpu()
        else:
            tensor = torch.from_numpy(np.array(values, copy=True))
        dims_t = (dims,) if isinstance(dims, str) else tuple(dims)
        if len(dims_t) != tensor.ndim:
            raise ValueError(
                f"got {len(dims_t)} dims {dims_t} for values of shape {tuple(tensor.shape)} "
                f"({tensor.ndim} axes); give exactly one dim name per axis"
            )
        for d in dims_t:
            if not isinstance(d, str):
                raise ValueError(f"dim names must be strings, got {d!r} in dims {dims_t}")
        duplicated = sorted({d for d in dims_t if dims_t.count(d) > 1})
        if duplicated:
            raise ValueError(f"duplicate dim names {duplicated} in dims {dims_t}; dims must be unique")
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}")

        coords = dict(coords or {})
        unknown = [k for k in coords if k not in dims_t]
        if unknown:
            raise ValueError(f"coords given for unknown dims {unknown}; dims are {dims_t}")
        coords_n: dict[str, list[Label]] = {}
        for axis, d in enumerate(dims_t):
            size = tensor.shape[axis]
            if coords.get(d) is None:
                coords_n[d] = list(range(size))
                continue
            raw = coords[d]
            if isinstance(raw, (torch.Tensor, np.ndarray)):
                raw = raw.tolist()
            if isinstance(raw, str):
                raise ValueError(f"coords[{d!r}] must be a sequence of labels, not the string {raw!r}")
            labels = [normalise_label(x, d) for x in raw]
            if len(labels) != size:
                raise ValueError(
                    f"coords[{d!r}] has {len(labels)} labels but dim {d!r} has size {size} "
                    f"(values shape {tuple(tensor.shape)}, dims {dims_t})"
                )
            coords_n[d] = labels

        meta_n = jsonable_meta(meta)
        meta_n.setdefault("versions", {"causalscope": __version__, "torch": str(torch.__version__)})

        self._values = tensor
        self._dims = dims_t
        self._coords = coords_n
        self._meta = meta_n
        self._name = name
        self._aux = check_aux(aux_coords, dims_t, tensor.shape, name)

    # ------------------------------------------------------------------ properties

    @classmethod
    def from_array(cls, a: LabelledArray) -> Any:
        """This result type over a plain array, e.g. one read back by :func:`load_result`.

        >>> a = LabelledArray(torch.zeros(2), dims=("layer",), coords={"layer": [0, 1]})
        >>> type(LabelledArray.from_array(a)).__name__   # TraceResult.from_array(load_result(path)) likewise
        'LabelledArray'
        """
        return cls(a.values, a.dims, a.coords, a.meta, a.name, a.aux_coords)

    @property
    def values(self) -> torch.Tensor:
        return self._values

    @property
    def dims(self) -> tuple[str, ...]:
        return self._dims

    @property
    def coords(self) -> dict[str, list[Label]]:
        return self._coords

    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    @property
    def name(self) -> str:
        return self._name

    @property
    def aux_coords(self) -> AuxCoords:
        """Labels along a dim besides its coords, ``{name: (dim, labels)}``: e.g. ``{"token": ("position", [...])}``."""
        return self._aux

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._values.shape)

    @property
    def ndim(self) -> int:
        return self._values.ndim

    def numpy(self) -> np.ndarray:
        """The values as a numpy array (a copy; bfloat16 and other types numpy lacks become float32)."""
        try:
            return self._values.numpy().copy()
        except TypeError:
            return self._values.float().numpy()

    def __repr__(self) -> str:
        dims = ", ".join(f"{d}: {n}" for d, n in zip(self._dims, self.shape))
        dtype = str(self._values.dtype).removeprefix("torch.")
        method = self._meta.get("method")
        tail = f" method={method!r}" if method is not None else ""
        return f"<LabelledArray {self._name!r} ({dims}) {dtype}{tail}>"

    def _repr_html_(self) -> str:
        """Jupyter's view: dims, coords, key settings, a few values (rounded) and the default plot."""
        return result_html(self, type(self).html_figure)

    def with_tokens(self: _A, tokens: Sequence[str] | Sequence[Sequence[str]] | None, dim: str = "position",
                    name: str = "token") -> _A:
        """This result with the token at each ``dim`` label as the auxiliary coordinate ``name``.

        >>> r = LabelledArray(torch.zeros(2, 3), ("layer", "position"))
        >>> r.with_tokens(["the", " cat", " sat"]).to_frame().columns.tolist()
        ['layer', 'position', 'token', 'value']

        ``tokens``: one prompt's tokens or one list per prompt. A label p reads ``tokens[p]`` of each prompt
        (negative labels count back from its end): the token where all prompts agree, else None. With
        ``tokens=None`` or no ``dim``, the result is returned as it is.
        """
        if tokens is None or dim not in self._dims:
            return self
        if isinstance(tokens, str):
            raise ValueError(f"tokens must be a list of tokens (or one list per prompt), not the string {tokens!r}")
        one = all(isinstance(t, str) for t in tokens)
        lists: Sequence[Sequence[str]] = [cast(Sequence[str], tokens)] if one else tokens
        labels = token_labels(lists, self._coords[dim])
        out = type(self)(self._values, self._dims, self._coords, self._meta, self._name,
                         {**self._aux, name: (dim, labels)})
        if hasattr(self, "__dict__"):  # a subclass's own attributes
            out.__dict__.update(self.__dict__)
        return out

    # ------------------------------------------------------------------ derived arrays
    def _new(self, values: torch.Tensor, dims: Sequence[str], coords: Mapping[str, list[Label]],
             aux: AuxCoords | None = None) -> LabelledArray:
        if aux is None:  # the auxiliary coords of the dims kept
            aux = {k: v for k, v in self._aux.items() if v[0] in dims}
        return LabelledArray(values, dims, coords, copy.deepcopy(self._meta), self._name, aux)

    def _axis(self, dim: str) -> int:
        if dim not in self._dims:
            raise ValueError(f"unknown dim {dim!r}; dims are {self._dims}")
        return self._dims.index(dim)

    def isel(self, **indexers: int | slice | Sequence[int]) -> LabelledArray:
        """Select by position: an int drops the dim; a slice or list of ints keeps it."""
        values = self._values
        dims = list(self._dims)
        coords = {d: list(c) for d, c in self._coords.items()}
        aux = {k: (d, list(c)) for k, (d, c) in self._aux.items()}
        for dim, idx in indexers.items():
            axis = self._axis(dim)
            ax = dims.index(dim)
            size = self._values.shape[axis]
            if isinstance(idx, (int, np.integer)) and not isinstance(idx, bool):
                i = int(idx)
                if not -size <= i < size:
                    raise IndexError(f"index {i} out of range for dim {dim!r} of size {size}")
                values = values.select(ax, i)
                dims.pop(ax)
                del coords[dim]
                aux = {k: v for k, v in aux.items() if v[0] != dim}
                continue
            if isinstance(idx, slice):
                positions = list(range(size))[idx]
            elif isinstance(idx, (list, tuple, range, np.ndarray, torch.Tensor)):
                positions = [int(i) for i in (idx.tolist() if hasattr(idx, "tolist") else idx)]
            else:
                raise TypeError(
                    f"isel({dim}=...) takes an int, a slice or a list of ints, got {type(idx).__name__}"
                )
            bad = [i for i in positions if not -size <= i < size]
            if bad:
                raise IndexError(f"indices {bad} out of range for dim {dim!r} of size {size}")
            positions = [i % size for i in positions]
            values = values.index_select(ax, torch.tensor(positions, dtype=torch.long))
            coords[dim] = [coords[dim][i] for i in positions]
            aux = {k: (d, [c[i] for i in positions] if d == dim else c) for k, (d, c) in aux.items()}
        return self._new(values, dims, coords, aux)

    def sel(self, **indexers: Label | list[Label]) -> LabelledArray:
        """Select by coordinate label: a label drops the dim; a list of labels keeps it.

        A tuple is one label (coords may hold tuples); pass a list for several labels.
        """
        positional: dict[str, int | list[int]] = {}
        for dim, want in indexers.items():
            self._axis(dim)
            labels = self._coords[dim]
            if isinstance(want, (list, np.ndarray, torch.Tensor)):
                items = want.tolist() if hasattr(want, "tolist") else want
                positional[dim] = [self._find(dim, labels, normalise_label(x, dim)) for x in items]
            else:
                positional[dim] = self._find(dim, labels, normalise_label(want, dim))
        return self.isel(**positional)

    @staticmethod
    def _find(dim: str, labels: list[Label], label: Label) -> int:
        hits = [i for i, x in enumerate(labels) if x == label]
        if not hits:
            shown = labels if len(labels) <= 20 else labels[:20] + ["..."]
            raise KeyError(f"label {label!r} not in coords[{dim!r}]: {shown}")
        if len(hits) > 1:
            raise KeyError(
                f"label {label!r} occurs {len(hits)} times in coords[{dim!r}] (positions {hits}); "
                f"use .isel({dim}=...) to pick one"
            )
        return hits[0]

    def _reduce(self, dim: str | Sequence[str] | None, op: str) -> LabelledArray:
        names = self._dims if dim is None else ((dim,) if isinstance(dim, str) else tuple(dim))
        axes = sorted({self._axis(d) for d in names})
        values = self._values
        if op == "mean" and not (values.is_floating_point() or values.is_complex()):
            values = values.to(torch.float64)  # like numpy: integer means are float64
        if axes:
            values = getattr(values, op)(dim=axes)
        keep = [d for d in self._dims if d not in names]
        return self._new(values, keep, {d: self._coords[d] for d in keep})

    def sum(self, dim: str | Sequence[str] | None = None) -> LabelledArray:
        """Sum over the named dim(s) (all dims when ``None``)."""
        return self._reduce(dim, "sum")

    def mean(self, dim: str | Sequence[str] | None = None) -> LabelledArray:
        """Mean over the named dim(s) (all dims when ``None``); integer values give float64."""
        return self._reduce(dim, "mean")

    def transpose(self, *dims: str) -> LabelledArray:
        """Reorder the dims (all of them, each once); no arguments reverses them."""
        order = tuple(dims) if dims else self._dims[::-1]
        if sorted(order) != sorted(self._dims):
            raise ValueError(f"transpose needs a permutation of {self._dims}, got {order}")
        values = self._values.permute(*[self._dims.index(d) for d in order])
        return self._new(values, order, self._coords)

    # ------------------------------------------------------------------ export
    def to_frame(self) -> pd.DataFrame:
        """Long-form DataFrame: one column per dim (coordinate labels) plus a ``name`` column."""
        import pandas as pd

        if self._name in self._dims:
            raise ValueError(f"name {self._name!r} clashes with a dim; rename the array first")
        flat = np.indices(self.shape).reshape(self.ndim, -1) if self.ndim else np.zeros((0, 1), int)
        columns: dict[str, Any] = {}
        for axis, d in enumerate(self._dims):  # auxiliary coords right after their dim
            for k, labels in [(d, self._coords[d]), *[(k, c) for k, (dd, c) in self._aux.items() if dd == d]]:
                objects = np.empty(len(labels), dtype=object)
                for i, label in enumerate(labels):
                    objects[i] = label  # tuples stay tuples
                columns[k] = pd.Series(objects[flat[axis]], dtype=object).infer_objects()
        columns[self._name] = self.numpy().reshape(-1)
        return pd.DataFrame(columns)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one ``.npz`` file (values + JSON header); returns the path written.

        numpy appends ``.npz`` when the path lacks it. Tuple labels are stored as
        JSON lists and read back as tuples.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        header, array = array_payload(self)
        header = {"format": _FORMAT, "format_version": _FORMAT_VERSION, **header}
        np.savez_compressed(path, values=array, header=np.array(json.dumps(header)))
        return path

    # ------------------------------------------------------------------ plotting
    def plot(self, ax: Axes | None = None, backend: str = DEFAULT_BACKEND, **kw: Any) -> Any:
        """1-D: line plot against the coords; 2-D: heatmap. Returns a matplotlib Figure,
        or a plotly ``go.Figure`` with ``backend="plotly"`` (``ax`` is then ignored).
        Extra keywords go to ``ax.plot``/``ax.imshow`` or ``go.Scatter``/``go.Heatmap``.

        A dim with a ``token`` auxiliary coordinate is labelled with its tokens (``"3: Paris"``); an axis of
        integer coordinates (layers) ticks at whole numbers only."""
        if self.ndim == 0:
            raise ValueError(f"nothing to plot: {self._name!r} is a single value ({self._values.item()!r})")
        if self.ndim > 2:
            d = self._dims[0]
            raise ValueError(
                f"can plot only 1-D or 2-D arrays; {self._name!r} has dims {self._dims} with shape "
                f"{self.shape}. Reduce it first, e.g. .sel({d}=<label>), .isel({d}=0) or .mean({d!r})"
            )
        backend = resolve_backend(backend)
        if self.ndim == 2:
            rows, cols = self._dims
            return heatmap(self.numpy(), self._ticks(rows), self._ticks(cols), title=self._title, row_title=rows,
                           col_title=cols, value_title=self._name, backend=backend, ax=ax, size=(7, 4.5),
                           max_ticks=_MAX_TICK_LABELS, rotate_over=8, title_size=None, categorical=False, **kw)
        (d,) = self._dims
        return line(self.numpy(), self._coords[d], self._ticks(d) if "token" in self._aux else None, x_title=d,
                    name=self._name, title=self._title, backend=backend, ax=ax, max_ticks=_MAX_TICK_LABELS, **kw)

    @property
    def _title(self) -> str:
        return str(self._meta.get("title") or self._name)

    def _ticks(self, dim: str) -> list[str]:
        """The tick labels of ``dim``: its coords, with the tokens where a ``token`` coordinate runs along it."""
        return axis_labels(self._coords[dim], self._aux, dim)


def load_result(path: str | os.PathLike[str]) -> LabelledArray:
    """Read a file written by :meth:`LabelledArray.save` (exact round trip).

    >>> import tempfile
    >>> saved = LabelledArray(torch.ones(2), ["x"], meta={"seed": 0}).save(os.path.join(tempfile.mkdtemp(), "r"))
    >>> load_result(saved).meta["seed"]      # the same result, meta and coordinates included
    0

    A path that holds no such file raises :class:`~causalscope.InputError` naming it (the file is missing, a
    folder, another program's archive, truncated or garbage); a newer format version says to upgrade.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"load_result takes the path of a saved result (str or Path), got {type(path).__name__} "
                         f"{path!r:.60}.")
    path = Path(path)
    if not path.exists() and path.suffix != ".npz" and path.with_name(path.name + ".npz").exists():
        path = path.with_name(path.name + ".npz")
    if not path.is_file():
        what = "a folder" if path.is_dir() else "nothing there"
        raise InputError(f"no causalscope result file at {str(path)!r} ({what}): give the path a result's "
                         f".save(...) returned.")
    not_ours = f"{str(path)!r} is not a causalscope result file (expected a .npz written by LabelledArray.save)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(not_ours) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a bare .npy array
        raise InputError(not_ours)
    with archive:
        if {"values", "header"} - set(archive.files):
            raise InputError(not_ours)
        try:
            header = json.loads(str(archive["header"][()]))
            array = archive["values"]
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise InputError(not_ours) from exc
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise InputError(not_ours)
    if header.get("format_version", 0) > _FORMAT_VERSION:
        raise InputError(
            f"{str(path)!r} uses result format version {header['format_version']}; this causalscope "
            f"({__version__}) reads up to {_FORMAT_VERSION}. Upgrade causalscope."
        )
    aux_raw = header.get("aux_coords", {})  # files written before auxiliary coords have none
    if not isinstance(aux_raw, dict) or not all(isinstance(v, list) and len(v) == 2 for v in aux_raw.values()):
        raise InputError(not_ours)
    return labelled_from_payload(header, array, LabelledArray)


def array_payload(a: LabelledArray) -> tuple[dict[str, Any], np.ndarray]:
    """The JSON header (dtype, dims, coords, meta, name, aux coords) and the value array of ``a``, as saved."""
    values = a.values.contiguous()
    try:
        array, bits = values.numpy(), False
    except TypeError:  # bfloat16, float8...: store the raw bits as a same-width int
        array, bits = values.view(_INT_OF_SIZE[values.element_size()]).numpy(), True
    header = {"dtype": str(values.dtype).removeprefix("torch."), "stored_as_bits": bits, "dims": list(a.dims),
              "coords": a.coords, "meta": a.meta, "name": a.name,
              "aux_coords": {k: [d, c] for k, (d, c) in a.aux_coords.items()}}
    return header, array


def labelled_from_payload(header: Mapping[str, Any], array: np.ndarray, cls: type[_A]) -> _A:
    """The labelled array (of class ``cls``) that :func:`array_payload` wrote as ``header`` and ``array``."""
    values = torch.from_numpy(array)
    if header["stored_as_bits"]:
        values = values.view(getattr(torch, header["dtype"]))
    coords = {d: [tuplify(x) for x in labels] for d, labels in header["coords"].items()}
    aux = {k: (d, [tuplify(x) for x in c] if isinstance(c, list) else c)
           for k, (d, c) in header.get("aux_coords", {}).items()}
    return cls(values, header["dims"], coords, header["meta"], header["name"], aux)


# ---------------------------------------------------------------------- helpers
_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


show_figures_inline()  # Jupyter shows the figures plot() returns, without %matplotlib inline
