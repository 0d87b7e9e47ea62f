"""High-level causal models: variables, parents, mechanisms and value sets; their interchange interventions
and the counterfactual data sets they label.

>>> cm = cs.adder_causal_model()
>>> cm.interchange({"A": 1, "B": 2, "C": 3}, {"BC": {"A": 0, "B": 4, "C": 5}})["Y"]
10
"""
from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from ..errors import InputError, check_seed, close_names
from ._counterfactuals import CounterfactualDataset

Values = dict[str, list[Any]]


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
        if not isinstance(mechanisms, Mapping):
            raise InputError(f"mechanisms must be a dict {{variable: function of its parents}}, got "
                             f"{type(mechanisms).__name__}.")
        if not isinstance(values, Mapping):
            raise InputError(f"values must be a dict {{input variable: [possible values]}}, got "
                             f"{type(values).__name__}.")
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
                raise InputError(f"A value set is given for {var!r}, which is not a variable. "
                                 f"{_close(var, self.parents)}")
            if isinstance(vs, (str, bytes, Mapping)) or not isinstance(vs, Iterable):
                raise InputError(f"The value set of {var!r} must be a list of values (e.g. range(10) or ['a', 'b']), "
                                 f"got {type(vs).__name__} {vs!r:.40}.")
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
            raise InputError(f"encode must be a callable {{input: [values]}} -> model input, "
                             f"got {type(encode).__name__}.")
        self._encode = encode
        if not isinstance(name, str):
            raise InputError(f"name must be a string, got {type(name).__name__} {name!r}.")
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
        n = positive_int(n, "n")
        g = torch.Generator().manual_seed(check_seed(seed))
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
        n = positive_int(n, "n")
        varied = [] if vary is None else ([vary] if isinstance(vary, str) else list(vary))
        for v in varied:
            if v not in self.inputs:
                raise InputError(f"vary={v!r}: only inputs can be varied; the inputs are {list(self.inputs)}.")
            if len(self.values[v]) < 2:
                raise InputError(f"Cannot vary {v!r}: its value set has a single value.")
        g = torch.Generator().manual_seed(check_seed(seed))
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


# -- helpers -----------------------------------------------------------------------------------------------------------
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


def positive_int(n: Any, what: str) -> int:
    """``n`` if it is a positive int, else a clear ``InputError`` (shared by the family's methods).

    >>> positive_int(3, "n")
    3
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{what} must be a positive int, got {n!r}.")
    return n
