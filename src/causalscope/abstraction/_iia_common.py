"""Family-internal machinery shared by the abstraction methods (:func:`abstraction_iia`,
:func:`alignment_search` and :func:`das`): reading a data set's high-level values, resolving an
alignment's sites, patched engine runs, the hit rule and the bootstrap interval of an IIA.

>>> hits = iia_hits(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 3.0]]), categorical=False, tol=1e-3)
>>> bootstrap_iia(hits, n_boot=100, ci=0.95, seed=0)[0, 0]      # the mean IIA
tensor(0.5000)

Not part of the public API: the names carry no underscore so that sibling modules can import them
without borrowing another module's privates; the package ``__init__`` does not export them (except
:class:`AlignmentSiteError`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import torch

from ..core import Model, Patch, Site, as_site, call_metric, output_value, takes_lengths
from ..errors import InputError, SiteError
from ..results import quantiles
from ._causal_model import CausalModel, InterchangeDataset, Values, positive_int
from ._counterfactuals import CounterfactualDataset


class AlignmentSiteError(InputError, SiteError):
    """A site of an alignment does not exist in the model (both an ``InputError`` and a ``SiteError``)."""


def high_level_data(cm: CausalModel, data: Any) -> tuple[Values, Values, Any, Any, tuple[str, ...]]:
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


def alignment_sites(m: Model, var: str, where: Any) -> tuple[Site, ...]:
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


def output_readout(cm: CausalModel, metric: Any) -> tuple[Callable[..., torch.Tensor], str]:
    """The per-row readout of the low-level output compared with the labels, and its description.

    The readout takes each row's real length (``lengths=``) when the prompts differ in length: the default
    reads each prompt's own last token, and a user ``metric`` receives the lengths if it has a ``lengths``
    parameter (one without it raises on such a batch in the engine, rather than read padding)."""
    if metric is not None and not callable(metric):
        raise InputError(f"metric must be a callable output -> (rows,), got {metric!r}.")
    if cm.categorical:
        n_cls = len(cm.values[cm.output])

        def top(y: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
            logits = class_logits(metric, y, lengths)
            if logits.ndim != 2 or logits.shape[-1] != n_cls:
                raise InputError(f"The output {cm.output!r} has {n_cls} classes, but the model's logits are "
                                 f"{tuple(logits.shape)}; pass metric= mapping the output to (rows, {n_cls}) logits.")
            return logits.argmax(-1)
        top.takes_lengths = metric is None or takes_lengths(metric)  # type: ignore[attr-defined]
        return top, "same class"
    fn = metric if metric is not None else output_value()

    def value(y: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return call_metric(fn, y, None, lengths)
    value.takes_lengths = takes_lengths(fn)  # type: ignore[attr-defined]
    return value, "within tol"


def class_logits(metric: Any, y: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """The logits a categorical output is read from: ``metric(y)`` (given each row's length where it takes
    them), by default the output at each row's last real position."""
    if metric is not None:
        return call_metric(metric, y, None, lengths)
    return last_real(y, lengths) if y.ndim == 3 else y


def last_real(y: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(rows, T, ...) -> (rows, ...): each row's last real position (its own length in a ragged batch)."""
    if lengths is None:
        return y[:, -1]
    return y[torch.arange(len(y), device=y.device), lengths.to(y.device) - 1]


def check_align(align: Any) -> None:
    if align not in (None, "end"):
        raise InputError(f"align must be 'end' (positions from the end read each prompt's own offsets from its "
                         f"end) or None, got {align!r}.")


def check_pair_lengths(m: Model, sites: Sequence[Site], base_in: Any, source_in: Any, align: Literal["end"] | None,
                       fn: str) -> None:
    """Before any compute: the base and source prompt of each pair must line up at every site, i.e. equal
    lengths for a site of every position, equal lengths or ``align="end"`` for positions from the end.

    >>> check_pair_lengths(m, [Site("layers.1", positions=-1)], ["a b c"], ["a b"], "end", "das")   # fine
    """
    b, s = m.adapter.prepare(base_in), m.adapter.prepare(source_in)
    if b.seq_len is None or s.seq_len is None or (b.lengths is None and s.lengths is None and b.seq_len == s.seq_len):
        return
    base = b.lengths.cpu() if b.lengths is not None else torch.full((b.size,), int(b.seq_len))
    src = s.lengths.cpu() if s.lengths is not None else torch.full((s.size,), int(s.seq_len))
    if len(base) != len(src) or torch.equal(base, src):
        return
    i = int((base != src).nonzero()[0, 0])
    pair = f"pair {i} has a base prompt of {int(base[i])} tokens and a source prompt of {int(src[i])}"
    for site in sites:
        if site.positions is None:
            raise InputError(f"{fn}: site {site.name!r} covers every position, but {pair}. Pair prompts of equal "
                             f"lengths, or give the site positions (e.g. positions=-1 with align='end': each "
                             f"prompt's own last token).")
        if isinstance(site.positions, tuple) and any(p < 0 for p in site.positions) and align != "end":
            raise InputError(f"{fn}: site {site.name!r} counts positions from the end, but {pair}, so the same "
                             f"position is a different token in each. Pass align='end' to read each prompt's own "
                             f"offsets from its end, or pair prompts of equal lengths.")


def patched_values(m: Model, cells: Sequence[tuple[Site, ...]], base_in: Any, source_in: Any, P: int,
                   readout: Callable[..., torch.Tensor], chunk_size: int | None,
                   align: Literal["end"] | None = None) -> torch.Tensor:
    """readout(output) with every cell's sites patched from the source, one engine row per (cell, pair):
    (cells, pairs). The source runs once, caching each touched module; ``align="end"``: positions from the
    end read each source prompt's own offsets from its end."""
    full: dict[tuple[str, str], Site] = {}
    for cell in cells:
        for s in cell:
            full.setdefault((s.module, s.io), Site(s.module, io=s.io))
    try:
        src = m.run(source_in, cache=list(full.values()), chunk_size=chunk_size, progress=False)
        patch = Patch(src, align=align)
        rows = [{s: patch for s in cell} for cell in cells for _ in range(P)]
        run = m.run(base_in, rows, input_index=[p for _ in cells for p in range(P)], metric=readout,
                    chunk_size=chunk_size, progress=False)
    except SiteError as e:
        if isinstance(e, InputError):
            raise
        raise AlignmentSiteError(str(e)) from None
    return cast(torch.Tensor, run.metric).view(len(cells), P).cpu()  # metric= given: never None


def iia_hits(values: torch.Tensor, labels: torch.Tensor, categorical: bool, tol: float) -> torch.Tensor:
    if categorical:
        return (values.long() == labels.long()).float()
    return ((values.float() - labels.float()).abs() <= tol).float()


def bootstrap_iia(hits: torch.Tensor, n_boot: int, ci: float, seed: int) -> torch.Tensor:
    """(cells, pairs) 0/1 hits -> (cells, 3): mean, lo, hi (percentile bootstrap over pairs, seeded)."""
    P = hits.shape[-1]
    idx = torch.randint(P, (n_boot, P), generator=torch.Generator().manual_seed(int(seed)))
    boot = hits[..., idx].mean(-1)
    q = torch.tensor([(1 - ci) / 2, 1 - (1 - ci) / 2])
    lo_hi = quantiles(boot, q, dim=-1).T
    return torch.cat([hits.mean(-1, keepdim=True), lo_hi], -1)


def check_iia_options(tol: float, n_boot: int, ci: float) -> None:
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise InputError(f"tol must be a number >= 0, got {tol!r}.")
    positive_int(n_boot, "n_boot")
    if not 0 < ci < 1:
        raise InputError(f"ci must be in (0, 1), got {ci}.")
