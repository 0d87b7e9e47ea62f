"""Causal abstraction: high-level causal models, alignments to sites, and interchange-intervention accuracy."""
from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..core import Model, Patch, Site, as_site, output_value
from ..errors import InputError, SiteError, close_names
from ..loading import load
from ..results import LabelledArray
from ._counterfactuals import CounterfactualDataset

Values = dict[str, list[Any]]


class AlignmentSiteError(InputError, SiteError):
    """A site of an alignment does not exist in the model (both an ``InputError`` and a ``SiteError``)."""


# -- the high-level model -------------------------------------------------------------------------------------------
class CausalModel:
    """A high-level causal model: variables, their parents, a mechanism for each non-input, value sets.

    >>> cm = cs.CausalModel(parents={"A": [], "B": [], "C": [], "BC": ["B", "C"], "Y": ["A", "BC"]},
    ...                     mechanisms={"BC": lambda b, c: b + c, "Y": lambda a, bc: a + bc},
    ...                     values={"A": range(10), "B": range(10), "C": range(10)})
    >>> cm.run({"A": 1, "B": 2, "C": 3})
    {'A': 1, 'B': 2, 'C': 3, 'BC': 5, 'Y': 6}
    >>> cm.interchange({"A": 1, "B": 2, "C": 3}, {"BC": {"A": 0, "B": 4, "C": 5}})["Y"]
    10

    ``parents`` lists every variable (in a display order) with its parents; variables without parents
    are the *inputs* and need a value set in ``values``. Each other variable needs a mechanism: a
    callable of its parents' values, passed positionally in the order of ``parents[var]``. ``output`` is
    the variable the low-level model's output is compared with (default: the one variable no other
    variable reads). Giving ``values[output]`` (a list of classes) makes the output categorical: the
    low-level model's output is then read as logits over those classes, in that order.

    ``encode`` turns high-level inputs into a low-level model input: it receives ``{input: [values of
    n rows]}`` and returns what ``Model.run`` takes, batch on dim 0. The default stacks the inputs, in
    the order of ``parents``, as float columns: ``(n, n_inputs)`` (for the adder: A, B, C).

    Invariants: the graph is acyclic (checked), every run evaluates mechanisms in topological order,
    and :meth:`interchange` recomputes exactly the descendants of the interchanged variables.
    """

    def __init__(self, parents: Mapping[str, Sequence[str]], mechanisms: Mapping[str, Callable[..., Any]],
                 values: Mapping[str, Sequence[Any]], *, output: str | None = None,
                 encode: Callable[[Values], Any] | None = None, name: str = "causal model") -> None:
        if not isinstance(parents, Mapping) or not parents:
            raise InputError("parents must be a non-empty dict {variable: [parent, ...]} listing every variable "
                             "(inputs with an empty list).")
        self.parents: dict[str, tuple[str, ...]] = {}
        for var, ps in parents.items():
            if not isinstance(var, str) or not var:
                raise InputError(f"Variable names must be non-empty strings, got {var!r}.")
            if isinstance(ps, str):
                ps = [ps]
            ps = tuple(ps)
            unknown = [p for p in ps if p not in parents]
            if unknown:
                raise InputError(f"Variable {var!r} has unknown parent(s) {unknown}; every parent must be listed in "
                                 f"parents too. Variables: {list(parents)}.")
            if len(set(ps)) != len(ps):
                raise InputError(f"Variable {var!r} lists a parent twice: {list(ps)}.")
            self.parents[var] = ps
        self.inputs = tuple(v for v, ps in self.parents.items() if not ps)
        self.variables = self._topological_order()
        self.mechanisms: dict[str, Callable[..., Any]] = {}
        for var, fn in dict(mechanisms).items():
            if var not in self.parents:
                raise InputError(f"A mechanism is given for {var!r}, which is not a variable. "
                                 f"{_close(var, self.parents)}")
            if not self.parents[var]:
                raise InputError(f"{var!r} is an input (no parents), so it takes a value set, not a mechanism.")
            if not callable(fn):
                raise InputError(f"The mechanism of {var!r} must be callable, got {type(fn).__name__}.")
            _check_arity(var, fn, self.parents[var])
            self.mechanisms[var] = fn
        missing = [v for v in self.variables if self.parents[v] and v not in self.mechanisms]
        if missing:
            raise InputError(f"Variables {missing} have parents but no mechanism; give mechanisms={{var: fn}}.")
        self.values: dict[str, list[Any]] = {}
        for var, vs in dict(values).items():
            if var not in self.parents:
                raise InputError(f"A value set is given for {var!r}, which is not a variable. {_close(var, self.parents)}")
            vs = list(vs)
            if not vs:
                raise InputError(f"The value set of {var!r} is empty.")
            self.values[var] = vs
        no_values = [v for v in self.inputs if v not in self.values]
        if no_values:
            raise InputError(f"Inputs {no_values} need a value set: values={{{no_values[0]!r}: [...], ...}}.")
        if output is None:
            read = {p for ps in self.parents.values() for p in ps}
            sinks = [v for v in self.variables if v not in read and self.parents[v]]
            if len(sinks) != 1:
                raise InputError(f"Cannot tell the output variable: the candidates are {sinks}. Pass output=...")
            output = sinks[0]
        elif output not in self.parents:
            raise InputError(f"output {output!r} is not a variable. {_close(output, self.parents)}")
        self.output = output
        if encode is not None and not callable(encode):
            raise InputError(f"encode must be a callable {{input: [values]}} -> model input, got {type(encode).__name__}.")
        self._encode = encode
        self.name = name

    def _topological_order(self) -> tuple[str, ...]:
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(v: str, path: list[str]) -> None:
            if state.get(v) == 2:
                return
            if state.get(v) == 1:
                cycle = path[path.index(v):] + [v]
                raise InputError(f"The causal graph has a cycle: {' -> '.join(reversed(cycle))}.")
            state[v] = 1
            for p in self.parents[v]:
                visit(p, path + [v])
            state[v] = 2
            order.append(v)

        for v in self.parents:
            visit(v, [])
        return tuple(order)

    def __repr__(self) -> str:
        edges = ", ".join(f"{v} <- {'+'.join(ps)}" for v, ps in self.parents.items() if ps)
        return f"<CausalModel {self.name!r} inputs={list(self.inputs)} {edges} output={self.output!r}>"

    @property
    def categorical(self) -> bool:
        """Whether the output takes values from a declared list of classes."""
        return self.output in self.values

    def children(self, var: str) -> list[str]:
        return [v for v in self.variables if var in self.parents[v]]

    def descendants(self, var: str) -> list[str]:
        """Every variable downstream of ``var``, in topological order."""
        self._check_var(var)
        down = {var}
        for v in self.variables:
            if any(p in down for p in self.parents[v]):
                down.add(v)
        return [v for v in self.variables if v in down and v != var]

    def _check_var(self, var: Any, what: str = "variable") -> str:
        if not isinstance(var, str) or var not in self.parents:
            raise InputError(f"Unknown {what} {var!r}. {_close(str(var), self.parents)}")
        return var

    # -- evaluation ------------------------------------------------------------------------------------------------
    def run(self, inputs: Mapping[str, Any], do: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every variable's value for ``inputs``; ``do={var: value}`` fixes variables (their mechanisms are
        not evaluated) and everything downstream is computed from the fixed values.

        >>> cm.run({"A": 1, "B": 2, "C": 3}, do={"BC": 0})["Y"]
        1
        """
        if not isinstance(inputs, Mapping):
            raise InputError(f"inputs must be a dict {{input: value}}, got {type(inputs).__name__}.")
        do = dict(do or {})
        for v in list(inputs) + list(do):
            self._check_var(v)
        extra = [v for v in inputs if v not in self.inputs]
        if extra:
            raise InputError(f"{extra} are not inputs of the causal model (its inputs are {list(self.inputs)}); "
                             f"fix intermediate variables with do={{...}}.")
        missing = [v for v in self.inputs if v not in inputs and v not in do]
        if missing:
            raise InputError(f"Missing input value(s) for {missing}; the inputs are {list(self.inputs)}.")
        out: dict[str, Any] = {}
        for v in self.variables:
            if v in do:
                out[v] = do[v]
            elif not self.parents[v]:
                out[v] = inputs[v]
            else:
                out[v] = self.mechanisms[v](*(out[p] for p in self.parents[v]))
        return {v: out[v] for v in self.parents}

    def interchange(self, base: Mapping[str, Any], sources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Run ``base`` with each variable of ``sources`` set to its value under that variable's source
        inputs (an interchange intervention); its descendants are recomputed, everything else is as in base.

        >>> cm.interchange({"A": 1, "B": 2, "C": 3}, {"A": {"A": 7, "B": 0, "C": 0}})
        {'A': 7, 'B': 2, 'C': 3, 'BC': 5, 'Y': 12}
        """
        if not isinstance(sources, Mapping):
            raise InputError("sources must be a dict {variable: source inputs}.")
        fixed = {self._check_var(v): self.run(src)[v] for v, src in sources.items()}
        return self.run(base, do=fixed)

    # -- data sets -------------------------------------------------------------------------------------------------
    def sample_inputs(self, n: int, seed: int = 0) -> Values:
        """``n`` input rows drawn uniformly from the value sets (seeded): ``{input: [n values]}``."""
        n = _positive_int(n, "n")
        g = torch.Generator().manual_seed(int(seed))
        out: Values = {}
        for v in self.inputs:
            idx = torch.randint(len(self.values[v]), (n,), generator=g).tolist()
            out[v] = [self.values[v][i] for i in idx]
        return out

    def encode(self, inputs: Values) -> Any:
        """The low-level model input for ``{input: [values]}`` (see the class docstring)."""
        if self._encode is not None:
            return self._encode(inputs)
        try:
            return torch.tensor([list(row) for row in zip(*(inputs[v] for v in self.inputs))], dtype=torch.float32)
        except (TypeError, ValueError):
            raise InputError(f"The default encode stacks the inputs {list(self.inputs)} as float columns, but their "
                             f"values are not numbers; pass encode=... to CausalModel.") from None

    def labels(self, base: Values, source: Values, intervene: str | Sequence[str]) -> torch.Tensor:
        """The high-level output after interchanging ``intervene`` from ``source`` into ``base``, per row:
        floats, or class indices into ``values[output]`` for a categorical output."""
        names = [intervene] if isinstance(intervene, str) else list(intervene)
        for v in names:
            self._check_var(v)
        n = len(base[self.inputs[0]])
        ys = []
        for i in range(n):
            b = {v: base[v][i] for v in self.inputs}
            s = {v: source[v][i] for v in self.inputs}
            ys.append(self.interchange(b, {v: s for v in names})[self.output])
        return self._as_labels(ys)

    def _as_labels(self, ys: list[Any]) -> torch.Tensor:
        if self.categorical:
            classes = self.values[self.output]
            try:
                return torch.tensor([classes.index(y) for y in ys], dtype=torch.long)
            except ValueError:
                bad = next(y for y in ys if y not in classes)
                raise InputError(f"The output {self.output!r} took the value {bad!r}, which is not in its class list "
                                 f"{classes}.") from None
        if not all(isinstance(y, numbers.Real) or (isinstance(y, torch.Tensor) and y.numel() == 1) for y in ys):
            raise InputError(f"The output {self.output!r} is not a number; declare its classes with "
                             f"values={{{self.output!r}: [...]}} to make it categorical.")
        return torch.tensor([float(y) for y in ys], dtype=torch.float32)

    def counterfactuals(self, vary: str | Sequence[str] | None = None, n: int = 100, *,
                        intervene: str | Sequence[str] | None = None, seed: int = 0) -> InterchangeDataset:
        """Base / source input pairs, encoded for the low-level model, with high-level counterfactual labels.

        >>> ds = cm.counterfactuals(n=200, intervene="BC", seed=0)   # independent base and source inputs
        >>> ds.base.shape, ds.labels[:3]                             # (200, 3); Y after BC := BC(source)
        >>> ds = cm.counterfactuals(vary="A", n=50)                  # source = base with A redrawn (differs)

        ``vary=None`` draws base and source independently; ``vary=[inputs]`` copies the base and redraws
        those inputs to a different value (as :func:`counterfactuals`). ``labels`` hold the output after
        interchanging ``intervene`` (default: the varied inputs, which gives the source's output); with
        neither, ``labels`` is None.
        """
        n = _positive_int(n, "n")
        varied = [] if vary is None else ([vary] if isinstance(vary, str) else list(vary))
        for v in varied:
            if v not in self.inputs:
                raise InputError(f"vary={v!r}: only inputs can be varied; the inputs are {list(self.inputs)}.")
            if len(self.values[v]) < 2:
                raise InputError(f"Cannot vary {v!r}: its value set has a single value.")
        g = torch.Generator().manual_seed(int(seed))
        base_idx = {v: torch.randint(len(self.values[v]), (n,), generator=g) for v in self.inputs}
        src_idx = {}
        for v in self.inputs:
            k = len(self.values[v])
            if not varied:
                src_idx[v] = torch.randint(k, (n,), generator=g)
            elif v in varied:
                src_idx[v] = (base_idx[v] + torch.randint(1, k, (n,), generator=g)) % k
            else:
                src_idx[v] = base_idx[v]
        base = {v: [self.values[v][i] for i in base_idx[v].tolist()] for v in self.inputs}
        source = {v: [self.values[v][i] for i in src_idx[v].tolist()] for v in self.inputs}
        names = intervene if intervene is not None else (varied or None)
        return InterchangeDataset.build(self, base, source, varied, names)


class InterchangeDataset(CounterfactualDataset):
    """A :class:`CounterfactualDataset` made by a :class:`CausalModel`: encoded ``base`` / ``source`` inputs,
    their high-level values (``base_values`` / ``source_values``: ``{input: [n values]}``), and ``labels``,
    the high-level output after interchanging ``intervene`` (None when no variable was named).

    >>> ds = cs.adder_causal_model().counterfactuals(n=100, intervene="A", seed=0)
    >>> ds.base_values["A"][:3], ds.labels[:3]
    """

    base_values: Values
    source_values: Values
    intervene: tuple[str, ...]
    labels: torch.Tensor | None

    @classmethod
    def build(cls, cm: CausalModel, base: Values, source: Values, varied: Sequence[str],
              intervene: str | Sequence[str] | None) -> InterchangeDataset:
        ds = cls(cm.encode(base), cm.encode(source), varied, cm.inputs)
        ds.base_values, ds.source_values = base, source
        ds.intervene = () if intervene is None else ((intervene,) if isinstance(intervene, str) else tuple(intervene))
        ds.labels = cm.labels(base, source, ds.intervene) if ds.intervene else None
        return ds


def adder_causal_model(values: Sequence[float] = tuple(range(10))) -> CausalModel:
    """The tutorial's finding as a causal model: inputs A, B, C; BC = B + C; Y = A + BC.

    >>> cm = cs.adder_causal_model()
    >>> cm.run({"A": 1, "B": 2, "C": 3})
    {'A': 1, 'B': 2, 'C': 3, 'BC': 5, 'Y': 6}

    Aligned with the ``adder`` network: A <-> ``l1`` neuron 1 (h12), BC <-> ``l1`` neuron 2 (h13),
    Y <-> ``l2`` neuron 1 (h22). Its ``encode`` gives the (n, 3) float tensor of A, B, C the adder takes.
    """
    vals = list(values)
    return CausalModel(parents={"A": [], "B": [], "C": [], "BC": ["B", "C"], "Y": ["A", "BC"]},
                       mechanisms={"BC": lambda b, c: b + c, "Y": lambda a, bc: a + bc},
                       values={"A": vals, "B": vals, "C": vals}, name="adder: Y = A + (B + C)")


# -- results -----------------------------------------------------------------------------------------------------------
class AbstractionResult(LabelledArray):
    """Interchange-intervention accuracy per aligned variable (or per candidate site): dims
    ``(*cells, "value")`` with ``value`` = ``mean``, ``lo``, ``hi`` (a percentile bootstrap interval).

    >>> r = cs.abstraction_iia("adder", cs.adder_causal_model(), {"A": cs.Site("l1", neurons=1)})
    >>> r.iia("A")              # 1.0
    >>> r.iia().values          # the means, one per variable
    >>> r.plot()
    """

    def iia(self, variable: str | None = None) -> Any:
        """The mean IIA: a float for one ``variable``, else a labelled array over the cells."""
        means = self.sel(value="mean")
        if variable is None:
            return means
        if "variable" not in self.dims:
            raise InputError("This result is a grid over sites, not per variable; use .iia() or .best().")
        if variable not in self.coords["variable"]:
            raise InputError(f"No IIA for {variable!r}; the result has {self.coords['variable']}.")
        return float(means.sel(variable=variable).values)

    def interval(self, variable: str) -> tuple[float, float]:
        """The bootstrap interval ``(lo, hi)`` of one variable's IIA."""
        a = self.sel(variable=variable)
        return float(a.sel(value="lo").values), float(a.sel(value="hi").values)

    def best(self) -> tuple[Site, float]:
        """Grids from :func:`alignment_search`: the best single-neuron site and its IIA."""
        if self.dims[:2] != ("layer", "neuron"):
            raise InputError("best() applies to the (layer, neuron) grid of alignment_search.")
        means = torch.nan_to_num(self.sel(value="mean").values, nan=-1.0)
        i = int(means.argmax())
        layer, neuron = divmod(i, means.shape[1])
        return Site(str(self.coords["layer"][layer]), neurons=int(self.coords["neuron"][neuron])), float(means.max())

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """Bars per variable with the bootstrap interval (1-D), or a heatmap of the mean IIA (a grid)."""
        if self.ndim == 3:
            a = LabelledArray(self.sel(value="mean").values, self.dims[:2],
                              {d: self.coords[d] for d in self.dims[:2]}, self.meta, name="IIA")
            if backend == "matplotlib":
                kw.setdefault("cmap", "Purples")
                kw.setdefault("vmin", 0.0)
                kw.setdefault("vmax", 1.0)
            return a.plot(ax=ax, backend=backend, **kw)
        labels = [str(x) for x in self.coords[self.dims[0]]]
        mean, lo, hi = (self.sel(value=v).numpy() for v in ("mean", "lo", "hi"))
        title = str(self.meta.get("title", "IIA"))
        if backend == "plotly":
            import plotly.graph_objects as go

            fig = go.Figure(go.Bar(x=labels, y=mean, error_y={"type": "data", "symmetric": False,
                                                               "array": hi - mean, "arrayminus": mean - lo}, **kw))
            fig.update_layout(title={"text": title}, xaxis_title=self.dims[0], yaxis_title="IIA",
                              yaxis_range=[0, 1.05])
            return fig
        if backend != "matplotlib":
            raise ValueError(f"backend must be 'matplotlib' or 'plotly', got {backend!r}")
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(max(3.5, 1.1 * len(labels) + 1.5), 3.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        kw.setdefault("color", "#A59FD9")
        ax.bar(range(len(labels)), mean, yerr=[mean - lo, hi - mean], capsize=4, **kw)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(self.dims[0])
        ax.set_ylabel("IIA")
        ax.set_title(title)
        return fig


# -- shared machinery --------------------------------------------------------------------------------------------------
def _close(name: str, valid: Any) -> str:
    close = close_names(name, list(valid))
    return (f"Did you mean {', '.join(map(repr, close))}? " if close else "") + f"Variables: {list(valid)}."


def _check_arity(var: str, fn: Callable[..., Any], parents: tuple[str, ...]) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*parents)
    except TypeError:
        raise InputError(f"The mechanism of {var!r} cannot take its {len(parents)} parent value(s) {list(parents)} "
                         f"as positional arguments (signature {sig}).") from None


def _positive_int(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{what} must be a positive int, got {n!r}.")
    return n


def _high_level(cm: CausalModel, data: Any) -> tuple[Values, Values, Any, Any, tuple[str, ...]]:
    """(base values, source values, encoded base, encoded source, varied) of a data set."""
    if isinstance(data, InterchangeDataset):
        return data.base_values, data.source_values, data.base, data.source, data.varied
    if isinstance(data, CounterfactualDataset):
        cols = list(data.variables)
        missing = [v for v in cm.inputs if v not in cols]
        if missing or not isinstance(data.base, torch.Tensor) or data.base.ndim != 2 or data.base.shape[1] != len(cols):
            raise InputError(f"The data set's columns {cols} do not cover the causal model's inputs "
                             f"{list(cm.inputs)}; build it with causal_model.counterfactuals(...).")

        def decode(t: torch.Tensor) -> Values:
            return {v: t[:, cols.index(v)].tolist() for v in cm.inputs}
        return decode(data.base), decode(data.source), data.base, data.source, data.varied
    raise InputError(f"data must be a CounterfactualDataset (e.g. causal_model.counterfactuals(...)) or None, "
                     f"got {type(data).__name__}.")


def _as_sites(m: Model, var: str, where: Any) -> tuple[Site, ...]:
    items = [where] if isinstance(where, (str, Site)) else where
    if not isinstance(items, (list, tuple)) or not items:
        raise InputError(f"The alignment of {var!r} must be a Site, a site name or a list of them; got {where!r}.")
    sites = []
    for s in items:
        try:
            site = as_site(s)
            m.adapter.resolve(site)
        except SiteError as e:
            raise AlignmentSiteError(f"Alignment of {var!r}: {e}") from None
        sites.append(site)
    return tuple(sites)


def _judge(cm: CausalModel, metric: Any) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The per-row readout of the low-level output compared with the labels, and its description."""
    if cm.categorical:
        n_cls = len(cm.values[cm.output])

        def top(y: torch.Tensor) -> torch.Tensor:
            logits = metric(y) if metric is not None else (y[:, -1] if y.ndim == 3 else y)
            if logits.ndim != 2 or logits.shape[-1] != n_cls:
                raise InputError(f"The output {cm.output!r} has {n_cls} classes, but the model's logits are "
                                 f"{tuple(logits.shape)}; pass metric= mapping the output to (rows, {n_cls}) logits.")
            return logits.argmax(-1)
        return top, "same class"
    fn = metric if metric is not None else output_value()
    if not callable(fn):
        raise InputError(f"metric must be a callable output -> (rows,), got {fn!r}.")
    return fn, "within tol"


def _patched_values(m: Model, cells: Sequence[tuple[Site, ...]], base_in: Any, source_in: Any, P: int,
                    readout: Callable[[torch.Tensor], torch.Tensor], chunk_size: int | None) -> torch.Tensor:
    """readout(output) with every cell's sites patched from the source, one engine row per (cell, pair):
    (cells, pairs). The source runs once, caching each touched module."""
    full: dict[tuple[str, str], Site] = {}
    for cell in cells:
        for s in cell:
            full.setdefault((s.module, s.io), Site(s.module, io=s.io))
    try:
        src = m.run(source_in, cache=list(full.values()), chunk_size=chunk_size, progress=False)
        patch = Patch(src)
        rows = [{s: patch for s in cell} for cell in cells for _ in range(P)]
        run = m.run(base_in, rows, input_index=[p for _ in cells for p in range(P)], metric=readout,
                    chunk_size=chunk_size, progress=False)
    except SiteError as e:
        if isinstance(e, InputError):
            raise
        raise AlignmentSiteError(str(e)) from None
    return run.metric.view(len(cells), P).cpu()


def _hits(values: torch.Tensor, labels: torch.Tensor, categorical: bool, tol: float) -> torch.Tensor:
    if categorical:
        return (values.long() == labels.long()).float()
    return ((values.float() - labels.float()).abs() <= tol).float()


def _bootstrap(hits: torch.Tensor, n_boot: int, ci: float, seed: int) -> torch.Tensor:
    """(cells, pairs) 0/1 hits -> (cells, 3): mean, lo, hi (percentile bootstrap over pairs, seeded)."""
    P = hits.shape[-1]
    idx = torch.randint(P, (n_boot, P), generator=torch.Generator().manual_seed(int(seed)))
    boot = hits[..., idx].mean(-1)
    q = torch.tensor([(1 - ci) / 2, 1 - (1 - ci) / 2])
    lo_hi = torch.quantile(boot, q, dim=-1).T
    return torch.cat([hits.mean(-1, keepdim=True), lo_hi], -1)


def _check_common(tol: float, n_boot: int, ci: float) -> None:
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise InputError(f"tol must be a number >= 0, got {tol!r}.")
    _positive_int(n_boot, "n_boot")
    if not 0 < ci < 1:
        raise InputError(f"ci must be in (0, 1), got {ci}.")


def _data(cm: CausalModel, data: Any, n: int, seed: int) -> tuple[Values, Values, Any, Any, tuple[str, ...]]:
    if data is None:
        data = cm.counterfactuals(n=n, seed=seed)
    return _high_level(cm, data)


# -- methods -----------------------------------------------------------------------------------------------------------
def abstraction_iia(model: Any, causal_model: CausalModel, alignment: Mapping[str, Any], data: Any = None, *,
                    n: int = 200, tol: float = 1e-3, metric: Any = None, n_boot: int = 1000, ci: float = 0.95,
                    seed: int = 0, chunk_size: int | None = None) -> AbstractionResult:
    """Interchange-intervention accuracy of an alignment between a causal model and a network.

    >>> cm = cs.adder_causal_model()
    >>> r = cs.abstraction_iia("adder", cm, {"A": cs.Site("l1", neurons=1), "BC": cs.Site("l1", neurons=2),
    ...                                      "Y": cs.Site("l2", neurons=1)})
    >>> r.iia().values                      # tensor([1., 1., 1.]): the tutorial's reading holds
    >>> cs.abstraction_iia("adder", cm, {"A": cs.Site("l1", neurons=0)}).iia("A")   # ~0.1: wrong neuron

    For each aligned variable V and each pair (base x, source x'): run the network on x with V's site(s)
    patched from its run on x' (an interchange intervention), and compare its output with the causal
    model's output after ``V := V(x')`` (``causal_model.interchange``). A hit is an output within ``tol``
    (numbers) or the same class (categorical outputs, argmax of the logits). IIA = the fraction of
    hits, with a percentile bootstrap interval (``n_boot`` resamples of the pairs, level ``ci``).

    ``alignment``: ``{variable: Site | site name | [sites]}`` (several sites are patched together).
    ``data``: a :class:`CounterfactualDataset` whose columns are the causal model's inputs (e.g.
    ``causal_model.counterfactuals(...)`` or ``cs.counterfactuals(...)``); by default ``n`` pairs of
    independent base and source inputs drawn with ``seed``. ``metric`` maps the network's output to the
    output variable's value per row (default: the output itself), or to logits for a categorical output.
    All variables x pairs are rows of one batched engine run; the model is not changed.
    """
    m = load(model)
    if not isinstance(causal_model, CausalModel):
        raise InputError(f"causal_model must be a cs.CausalModel, got {type(causal_model).__name__}.")
    if not isinstance(alignment, Mapping) or not alignment:
        raise InputError("alignment must be a non-empty dict {variable: site}, e.g. {'A': cs.Site('l1', neurons=1)}.")
    _check_common(tol, n_boot, ci)
    variables = [causal_model._check_var(v, "variable in the alignment") for v in alignment]
    cells = [_as_sites(m, v, alignment[v]) for v in variables]
    base, source, base_in, src_in, varied = _data(causal_model, data, n, seed)
    P = len(base[causal_model.inputs[0]])
    readout, rule = _judge(causal_model, metric)
    values = _patched_values(m, cells, base_in, src_in, P, readout, chunk_size)
    labels = torch.stack([causal_model.labels(base, source, v) for v in variables])
    hits = _hits(values, labels, causal_model.categorical, tol)
    out = _bootstrap(hits, n_boot, ci, seed)
    meta = {"method": "abstraction_iia", "model": m.name, "causal_model": causal_model.name,
            "alignment": {v: [s.name for s in c] for v, c in zip(variables, cells)}, "n_pairs": P, "tol": tol,
            "varied": list(varied), "n_boot": n_boot, "ci": ci, "seed": seed,
            "iia_rule": "same class" if causal_model.categorical else f"|y - y_high| <= {tol}",
            "title": "interchange-intervention accuracy per variable"}
    return AbstractionResult(out, ("variable", "value"), {"variable": variables, "value": ["mean", "lo", "hi"]},
                             meta, name="IIA")


def _hidden_linears(m: Model) -> list[str]:
    linears = [name for name, mod in m.module.named_children() if isinstance(mod, torch.nn.Linear)]
    if not linears:
        raise InputError(f"alignment_search sweeps the neurons of a model's top-level Linear layers; {m.name} has "
                         f"none. Pass layers=[site names].")
    return linears[:-1] or linears  # the last Linear is the output itself


def alignment_search(model: Any, causal_model: CausalModel, variable: str, layers: Sequence[str] | None = None,
                     data: Any = None, *, n: int = 200, tol: float = 1e-3, metric: Any = None, n_boot: int = 1000,
                     ci: float = 0.95, seed: int = 0, chunk_size: int | None = None) -> AbstractionResult:
    """IIA of every single-neuron alignment of one variable: a (layer, neuron) grid.

    >>> g = cs.alignment_search("adder", cs.adder_causal_model(), "A")
    >>> g.iia().values            # [[0., 1., 0.], [0., 1., 0.]]: h12 and h22 carry A
    >>> g.best()                  # (Site('l1', neurons=(1,)), 1.0)
    >>> g.plot()

    The tutorial's IIA grid (:func:`mediation` ``.iia()`` with ``"neurons"``) with the causal model's
    interchange as the reference: for an input variable and data that vary only it, both agree.
    ``layers``: site names whose last dimension is swept (default: every top-level ``nn.Linear`` but
    the output layer). Layers of different widths leave NaN in the cells they lack. Arguments as in
    :func:`abstraction_iia`; one batched engine run for the whole grid.
    """
    m = load(model)
    if not isinstance(causal_model, CausalModel):
        raise InputError(f"causal_model must be a cs.CausalModel, got {type(causal_model).__name__}.")
    causal_model._check_var(variable)
    _check_common(tol, n_boot, ci)
    layers = _hidden_linears(m) if layers is None else [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise InputError("layers is empty.")
    base, source, base_in, src_in, varied = _data(causal_model, data, n, seed)
    P = len(base[causal_model.inputs[0]])
    layer_sites = [_as_sites(m, variable, lay)[0] for lay in layers]
    for s in layer_sites:
        if s.neurons is not None or s.basis is not None:
            raise InputError(f"layers must name whole sites to sweep neuron by neuron; {s.name!r} already selects.")
    probe = m.run(base_in, cache=layer_sites, chunk_size=chunk_size, progress=False)
    widths = [int(probe.cache[s.name].shape[-1]) for s in layer_sites]
    cells, where = [], []
    for li, (s, w) in enumerate(zip(layer_sites, widths)):
        for j in range(w):
            cells.append((Site(s.module, io=s.io, positions=s.positions, heads=s.heads, neurons=j,
                               n_heads=s.n_heads),))
            where.append((li, j))
    readout, _ = _judge(causal_model, metric)
    values = _patched_values(m, cells, base_in, src_in, P, readout, chunk_size)
    labels = causal_model.labels(base, source, variable)[None].expand_as(values)
    out = _bootstrap(_hits(values, labels, causal_model.categorical, tol), n_boot, ci, seed)
    grid = torch.full((len(layers), max(widths), 3), float("nan"))
    for (li, j), row in zip(where, out):
        grid[li, j] = row
    meta = {"method": "alignment_search", "model": m.name, "causal_model": causal_model.name, "variable": variable,
            "n_pairs": P, "tol": tol, "varied": list(varied), "n_boot": n_boot, "ci": ci, "seed": seed,
            "iia_rule": "same class" if causal_model.categorical else f"|y - y_high| <= {tol}",
            "title": f"IIA of single-neuron alignments of {variable}"}
    return AbstractionResult(grid, ("layer", "neuron", "value"),
                             {"layer": [s.name for s in layer_sites], "neuron": list(range(max(widths))),
                              "value": ["mean", "lo", "hi"]}, meta, name="IIA")
