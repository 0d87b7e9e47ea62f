"""Causal abstraction methods: interchange-intervention accuracy of an alignment between a high-level causal
model and a network (:func:`abstraction_iia`), and the search over single-neuron alignments
(:func:`alignment_search`).

>>> r = cs.abstraction_iia("adder", cs.adder_causal_model(), {"A": cs.Site("l1", neurons=1)})
>>> r.iia("A")              # 1.0
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from ..core import Model, Site, callable_setting
from ..errors import InputError
from ..executors import check_executor
from ..loading import load
from ..results import LabelledArray, resolve_backend
from ._causal_model import CausalModel, Values
from ._iia_common import (
    alignment_sites,
    bootstrap_iia,
    check_align,
    check_iia_options,
    check_pair_lengths,
    high_level_data,
    iia_hits,
    output_readout,
    patched_values,
)
from ._sharded import callable_key, check_pair_metric, metric_setting, run_pairs


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
        backend = resolve_backend(backend)
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


# -- data --------------------------------------------------------------------------------------------------------------
def _data(cm: CausalModel, data: Any, n: int, seed: int) -> tuple[Values, Values, Any, Any, tuple[str, ...]]:
    if data is None:
        data = cm.counterfactuals(n=n, seed=seed)
    return high_level_data(cm, data)


# -- methods -----------------------------------------------------------------------------------------------------------
def abstraction_iia(model: Any, causal_model: CausalModel, alignment: Mapping[str, Any], data: Any = None, *,
                    n: int = 200, tol: float = 1e-3, metric: Any = None, n_boot: int = 1000, ci: float = 0.95,
                    seed: int = 0, chunk_size: int | None = None, align: Literal["end"] | None = None,
                    executor: Any = None, out: str | os.PathLike[str] | None = None,
                    shards: int | None = None) -> AbstractionResult:
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

    Prompts of different lengths (an ``encode`` that writes text): pairs may differ in length from each
    other. Within a pair, a site of every position needs base and source of equal lengths, and a site at
    positions from the end (``positions=-1``) needs equal lengths or ``align="end"`` (each prompt's own
    last token); a ``metric`` that reads positions takes a ``lengths`` parameter (each row's real length).

    ``executor=cs.RayExecutor(workers=N)`` spreads the pairs over Ray workers in ``shards`` pieces (``shards=k``
    alone: in this process); ``out=folder`` saves each finished shard, and a rerun computes only the missing
    ones. The pairs (and their high-level labels) are fixed here first, so every shard count uses the same
    pairs; each shard computes its pairs' hits, and the IIA and its seeded bootstrap are taken here over all
    of them as without shards. ``meta["executor"]`` says what ran.
    """
    sharded = executor is not None or out is not None or shards is not None
    m = None if sharded else load(model)
    if not isinstance(causal_model, CausalModel):
        raise InputError(f"causal_model must be a cs.CausalModel, got {type(causal_model).__name__}.")
    if not isinstance(alignment, Mapping) or not alignment:
        raise InputError("alignment must be a non-empty dict {variable: site}, e.g. {'A': cs.Site('l1', neurons=1)}.")
    check_iia_options(tol, n_boot, ci)
    check_align(align)
    variables = [causal_model._check_var(v, "variable in the alignment") for v in alignment]
    cells = [] if m is None else [alignment_sites(m, v, alignment[v]) for v in variables]
    base, source, base_in, src_in, varied = _data(causal_model, data, n, seed)
    P = len(base[causal_model.inputs[0]])
    readout, rule = output_readout(causal_model, metric)
    run_info = None
    if m is None:  # on an executor: the pairs and their labels fixed here, each shard's hits computed there
        ex = check_executor(executor)
        check_pair_metric(metric, P, "abstraction_iia", answers_per_pair=False)
        name, sites = ex.call(model, _plan_iia, variables, alignment, base_in, src_in, align)
        labels = torch.stack([causal_model.labels(base, source, v) for v in variables])
        settings = {"alignment": alignment, "tol": tol, "metric": metric_setting(metric), "align": align,
                    "categorical": causal_model.categorical, "classes": causal_model.values.get(causal_model.output),
                    **({"metric_data": callable_key(metric)} if out is not None else {})}
        hits, _, run_info = run_pairs(shard_hits, (causal_model, metric, variables, alignment, tol, chunk_size, align),
                                      model=model, base=base_in, source=src_in, extra=labels, ex=ex,
                                      method="abstraction_iia", settings=settings, out=out, shards=shards)
    else:
        check_pair_lengths(m, [s for c in cells for s in c], base_in, src_in, align, "abstraction_iia")
        values = patched_values(m, cells, base_in, src_in, P, readout, chunk_size, align)
        labels = torch.stack([causal_model.labels(base, source, v) for v in variables])
        hits = iia_hits(values, labels, causal_model.categorical, tol)
        name, sites = m.name, {v: [s.name for s in c] for v, c in zip(variables, cells)}
    meta = {"method": "abstraction_iia", "model": name, "causal_model": causal_model.name,
            "alignment": sites, "n_pairs": P, "tol": tol,
            "varied": list(varied), "n_boot": n_boot, "ci": ci, "seed": seed, "metric": callable_setting(metric),
            "data": "given" if data is not None else f"{n} drawn pairs", "n": None if data is not None else n,
            "chunk_size": chunk_size, "align": align,
            "iia_rule": "same class" if causal_model.categorical else f"|y - y_high| <= {tol}",
            "title": "interchange-intervention accuracy per variable"}
    return iia_result(hits, variables, meta, n_boot, ci, seed, run_info)


def iia_result(hits: torch.Tensor, variables: list[str], meta: dict[str, Any], n_boot: int, ci: float, seed: int,
               run_info: dict[str, Any] | None = None) -> AbstractionResult:
    """The result from every pair's 0 / 1 hits ``(variables, pairs)`` in pair order: the IIA and its seeded
    bootstrap interval per variable. The one reduction of the call in one piece and the sharded one.

    >>> iia_result(torch.tensor([[1.0, 0.0, 1.0]]), ["A"], {"method": "abstraction_iia"}, 100, 0.95, 0).iia("A")
    0.6666...
    """
    out = bootstrap_iia(hits, n_boot, ci, seed)
    if run_info is not None:
        meta = {**meta, "executor": run_info}
    return AbstractionResult(out, ("variable", "value"), {"variable": variables, "value": ["mean", "lo", "hi"]},
                             meta, name="IIA")


def _plan_iia(m: Model, variables: list[str], alignment: Mapping[str, Any], base_in: Any, src_in: Any,
              align: Literal["end"] | None) -> tuple[str, dict[str, list[str]]]:
    """Where the model is, before sharding: the alignment's sites and the pairs' lengths checked over all pairs
    (their errors raise as in the call in one piece); the model's name and each variable's site names."""
    cells = [alignment_sites(m, v, alignment[v]) for v in variables]
    check_pair_lengths(m, [s for c in cells for s in c], base_in, src_in, align, "abstraction_iia")
    return m.name, {v: [s.name for s in c] for v, c in zip(variables, cells)}


def shard_hits(m: Model, base_in: Any, src_in: Any, labels: torch.Tensor | None, args: tuple[Any, ...], first: int,
               k: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """One shard's pairs: their (variables, pairs) 0 / 1 hits against their high-level ``labels``."""
    assert labels is not None  # the sharded call passes every pair's labels
    causal_model, metric, variables, alignment, tol, chunk_size, align = args
    cells = [alignment_sites(m, v, alignment[v]) for v in variables]
    readout, _ = output_readout(causal_model, metric)
    values = patched_values(m, cells, base_in, src_in, k, readout, chunk_size, align)
    return iia_hits(values, labels, causal_model.categorical, tol), {}


def _hidden_linears(m: Model) -> list[str]:
    linears = [name for name, mod in m.module.named_children() if isinstance(mod, torch.nn.Linear)]
    if not linears:
        raise InputError(f"alignment_search sweeps the neurons of a model's top-level Linear layers; {m.name} has "
                         f"none. Pass layers=[site names].")
    return linears[:-1] or linears  # the last Linear is the output itself


def alignment_search(model: Any, causal_model: CausalModel, variable: str, layers: Sequence[str] | None = None,
                     data: Any = None, *, n: int = 200, tol: float = 1e-3, metric: Any = None, n_boot: int = 1000,
                     ci: float = 0.95, seed: int = 0, chunk_size: int | None = None,
                     align: Literal["end"] | None = None) -> AbstractionResult:
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
    check_iia_options(tol, n_boot, ci)
    check_align(align)
    layers = _hidden_linears(m) if layers is None else [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise InputError("layers is empty.")
    base, source, base_in, src_in, varied = _data(causal_model, data, n, seed)
    P = len(base[causal_model.inputs[0]])
    layer_sites = [alignment_sites(m, variable, lay)[0] for lay in layers]
    for s in layer_sites:
        if s.neurons is not None or s.basis is not None or s.sae is not None:
            raise InputError(f"layers must name whole sites to sweep neuron by neuron; {s.name!r} already selects.")
    probe = m.run(base_in, cache=layer_sites, chunk_size=chunk_size, progress=False)
    widths = [int(probe.cache[s.name].shape[-1]) for s in layer_sites]
    cells, where = [], []
    for li, (s, w) in enumerate(zip(layer_sites, widths)):
        for j in range(w):
            cells.append((Site(s.module, io=s.io, positions=s.positions, heads=s.heads, neurons=j,
                               n_heads=s.n_heads),))
            where.append((li, j))
    readout, _ = output_readout(causal_model, metric)
    check_pair_lengths(m, layer_sites, base_in, src_in, align, "alignment_search")
    values = patched_values(m, cells, base_in, src_in, P, readout, chunk_size, align)
    labels = causal_model.labels(base, source, variable)[None].expand_as(values)
    out = bootstrap_iia(iia_hits(values, labels, causal_model.categorical, tol), n_boot, ci, seed)
    grid = torch.full((len(layers), max(widths), 3), float("nan"))
    for (li, j), row in zip(where, out):
        grid[li, j] = row
    meta = {"method": "alignment_search", "model": m.name, "causal_model": causal_model.name, "variable": variable,
            "n_pairs": P, "tol": tol, "varied": list(varied), "n_boot": n_boot, "ci": ci, "seed": seed,
            "layers": [s.name for s in layer_sites], "metric": callable_setting(metric),
            "data": "given" if data is not None else f"{n} drawn pairs", "n": None if data is not None else n,
            "chunk_size": chunk_size, "align": align,
            "iia_rule": "same class" if causal_model.categorical else f"|y - y_high| <= {tol}",
            "title": f"IIA of single-neuron alignments of {variable}"}
    return AbstractionResult(grid, ("layer", "neuron", "value"),
                             {"layer": [s.name for s in layer_sites], "neuron": list(range(max(widths))),
                              "value": ["mean", "lo", "hi"]}, meta, name="IIA")
