"""Activation patching in both directions (denoising and noising), batched at the compute floor."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from ._errors import InputError, SiteError
from ._interventions import Patch
from ._load import load
from ._metrics import is_last_only, resolve_metric
from ._model import Model
from ._patching_result import PatchingResult
from ._sites import Site

Direction = Literal["denoise", "noise", "both"]
_GRIDS = ("resid_pre", "resid_post", "attn", "mlp", "heads")


@dataclass(frozen=True)
class _Cell:
    label: tuple
    site: Site


def activation_patching(model: Any, clean: Any, corrupted: Any, sites: Any = "resid_pre", metric: Any = None, *,
                        direction: Direction = "both", per: str | None = None,
                        positions: Sequence[int] | None = None, chunk_size: int | None = None,
                        progress: bool | None = None) -> PatchingResult:
    """Patch activations between a clean and a corrupted input, at every site of a sweep, in both directions.

    >>> r = cs.activation_patching(m, "the cat sat on the mat", "the dog sat on the mat", "resid_pre",
    ...                            metric=cs.logit_diff(" mat", " rug", model=m))
    >>> r.sel(direction="denoise")          # (layer, position): 0 = corrupted, 1 = clean
    >>> r.asymmetry                          # noise - denoise per cell: > 0 AND-like, < 0 OR-like
    >>> print(r.explain()); r.plot()

    **Denoising** runs the corrupted input and restores one clean activation: score
    ``(m(patched) - m(corrupted)) / (m(clean) - m(corrupted))``: how much of the clean behaviour this
    site alone brings back (is it *sufficient*?). **Noising** runs the clean input and puts in one
    corrupted activation: score ``(m(clean) - m(patched)) / (m(clean) - m(corrupted))``: how much of the
    behaviour is lost (is it *necessary*?). Both are 1 for a site that carries everything and 0 for one
    that carries nothing. ``result.raw`` holds the unnormalised metric values. With several prompt
    pairs the metric is averaged over them.

    ``sites``: a sweep, ``"resid_pre"`` / ``"resid_post"`` / ``"attn"`` / ``"mlp"`` (layer x position of
    the block input, block output, attention or MLP output), ``"heads"`` (layer x head, all positions);
    a list of sites or module names (one cell each, whole activation); or one site with ``per="neuron"``
    / ``"position"`` / ``"head"``. ``positions`` restricts position sweeps. ``metric``: any callable
    ``output -> (rows,)``, e.g. ``cs.logit_diff``, ``cs.prob``; by default the output itself (for
    models with one output per row).

    Cost: every cell is a row of a batched engine run, not a pass of its own. On Hugging Face LMs
    cells inside blocks run only the blocks from the patched one on, only positions from the first one
    that can change (the patched position, and never before the first token where clean and corrupted
    differ), against cached keys / values, with the cells of one position stacked into each block call;
    ``result.meta["token_layers"]`` counts it. The model is not changed.
    """
    m = load(model)
    if direction not in ("denoise", "noise", "both"):
        raise InputError(f"direction must be 'denoise', 'noise' or 'both', got {direction!r}.")
    metric_fn = resolve_metric(metric, m)
    clean_in, corr_in = _pair(m, clean, corrupted)
    T = _seq_len(clean_in)
    dims, coords, cells = _cells(m, sites, per, positions, T, clean_in)
    if not cells:
        raise InputError("The sweep has no cells.")
    fast = _fast_path_ok(m, cells)
    L = int(m.n_layers or 0)
    key_sites = _unique_full_sites(cells)
    extra = [Site(f"layers.{i}", io="input") for i in range(L)] if fast else []
    keep_out = fast and not is_last_only(metric_fn)
    runs = {name: m.run(inp, cache=key_sites + extra, metric=metric_fn, keep_kv=fast, keep_output=keep_out,
                        chunk_size=chunk_size)
            for name, inp in (("clean", clean_in), ("corrupted", corr_in))}
    m_clean, m_corr = (float(runs[k].metric.float().mean()) for k in ("clean", "corrupted"))
    if abs(m_clean - m_corr) < 1e-12 * max(1.0, abs(m_clean)):
        raise InputError(f"The metric is the same on the clean and corrupted inputs ({m_clean:.6g}): there is "
                         f"nothing to patch. Check the inputs and the metric.")
    d = _first_difference(clean_in, corr_in) if fast else 0
    P = runs["clean"].n_rows
    dirs = ["denoise", "noise"] if direction == "both" else [direction]
    raw = torch.zeros(len(dirs), len(cells))
    token_layers = 0
    for i, name in enumerate(dirs):
        base, source = (runs["corrupted"], runs["clean"]) if name == "denoise" else (runs["clean"], runs["corrupted"])
        base_in = corr_in if name == "denoise" else clean_in
        if fast:
            vals, tl = _staircase(m, cells, base, source, P, T, d, metric_fn, progress, name)
        else:
            vals, tl = _rows(m, cells, base_in, source, P, metric_fn, chunk_size, progress)
        raw[i] = vals.mean(1)
        token_layers += tl
    span = m_clean - m_corr
    scores = torch.stack([(raw[i] - m_corr) / span if n == "denoise" else (m_clean - raw[i]) / span
                          for i, n in enumerate(dirs)])
    shape = (len(dirs), *[len(coords[k]) for k in dims])
    meta = {"method": "activation_patching", "model": m.name, "sites": sites if isinstance(sites, str) else
            [str(c.site.name) for c in cells], "per": per, "metric": repr(metric_fn), "direction": direction,
            "clean_metric": m_clean, "corrupted_metric": m_corr, "raw": raw.view(shape).tolist(),
            "n_prompts": P, "first_difference": d, "fast_path": fast, "token_layers": token_layers,
            "title": f"activation patching ({', '.join(dirs)})"}
    return PatchingResult(scores.view(shape), ("direction", *dims), {"direction": dirs, **coords}, meta,
                          name="patching score")


# -- inputs and cells ------------------------------------------------------------------------------------------------
def _pair(m: Model, clean: Any, corrupted: Any) -> tuple[Any, Any]:
    tok = getattr(m.adapter, "tokenize", None)
    out = []
    for what, x in (("clean", clean), ("corrupted", corrupted)):
        if isinstance(x, str) or (isinstance(x, (list, tuple)) and x and all(isinstance(s, str) for s in x)):
            if tok is None:
                raise InputError(f"The {what} input is text but {m.name} takes tensors.")
            x = tok(x)
        out.append(x)
    a, b = out
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.ndim == 1 and not a.is_floating_point():
            a, b = a[None], b[None] if b.ndim == 1 else b
        if a.shape != b.shape:
            raise InputError(f"Clean and corrupted inputs must have the same shape (one corrupted input per clean "
                             f"one, same length); got {tuple(a.shape)} and {tuple(b.shape)}.")
    return a, b


def _seq_len(x: Any) -> int:
    if isinstance(x, torch.Tensor) and x.ndim >= 2 and not x.is_floating_point():
        return int(x.shape[1])
    return 0


def _first_difference(a: Any, b: Any) -> int:
    """First position where any clean prompt differs from its corrupted one (causal models: earlier
    positions are the same in both runs, so patching them changes nothing)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.is_floating_point():
        return 0
    diff = (a != b).any(0).nonzero()
    return int(diff[0]) if len(diff) else int(a.shape[1])


def _resid_pre(m: Model, layer: int) -> Site:
    if m.adapter.kind == "transformer-lens":
        return Site(f"blocks.{layer}.hook_resid_pre")
    return Site(f"layers.{layer}", io="input")


def _cells(m: Model, sites: Any, per: str | None, positions: Sequence[int] | None, T: int,
           clean_in: Any) -> tuple[tuple[str, ...], dict[str, list], list[_Cell]]:
    L = int(m.n_layers or 0)
    if isinstance(sites, str) and sites in _GRIDS:
        if not L:
            raise InputError(f"The sweep {sites!r} needs a transformer with layers; {m.name} has none known. "
                             f"Give a list of sites instead.")
        if per is not None:
            raise InputError(f"per= applies to a single site, not to the {sites!r} sweep.")
        if sites == "heads":
            H = int(getattr(m.adapter, "n_heads", 0) or 0)
            cells = [_Cell((l, h), Site(f"layers.{l}.attn.z", heads=h)) for l in range(L) for h in range(H)]
            return ("layer", "head"), {"layer": list(range(L)), "head": list(range(H))}, cells
        pos = _positions(positions, T)
        make = {"resid_pre": lambda l, t: Site(_resid_pre(m, l).module, io=_resid_pre(m, l).io, positions=t),
                "resid_post": lambda l, t: Site(f"layers.{l}", positions=t),
                "attn": lambda l, t: Site(f"layers.{l}.attn", positions=t),
                "mlp": lambda l, t: Site(f"layers.{l}.mlp", positions=t)}[sites]
        cells = [_Cell((l, t), make(l, t)) for l in range(L) for t in pos]
        return ("layer", "position"), {"layer": list(range(L)), "position": pos}, cells
    if per is not None:
        site = sites if isinstance(sites, Site) else Site(str(sites))
        return _per(m, site, per, positions, T, clean_in)
    if isinstance(sites, (str, Site)):
        sites = [sites]
    if not isinstance(sites, (list, tuple)) or not sites:
        raise InputError(f"sites must be one of {', '.join(map(repr, _GRIDS))}, a list of sites, or one site with "
                         f"per='neuron' | 'position' | 'head'; got {sites!r}.")
    cells = [_Cell((str(s.name if isinstance(s, Site) else s),), s if isinstance(s, Site) else Site(str(s)))
             for s in sites]
    for c in cells:
        try:
            m.adapter.resolve(c.site)  # unknown names fail here, with suggestions
        except SiteError as e:
            raise SiteError(f"{e} (Or a sweep: {', '.join(_GRIDS)}.)") from None
    return ("site",), {"site": [c.label[0] for c in cells]}, cells


def _positions(positions: Sequence[int] | None, T: int) -> list[int]:
    if positions is None:
        if not T:
            raise InputError("A position sweep needs token inputs (batch, positions).")
        return list(range(T))
    pos = [int(p) % T if T else int(p) for p in positions]
    if T and any(not -T <= int(p) < T for p in positions):
        raise InputError(f"positions {list(positions)} out of range for {T} tokens.")
    return pos


def _per(m: Model, site: Site, per: str, positions: Sequence[int] | None, T: int,
         clean_in: Any) -> tuple[tuple[str, ...], dict[str, list], list[_Cell]]:
    if per not in ("neuron", "position", "head"):
        raise InputError(f"per must be 'neuron', 'position' or 'head', got {per!r}.")
    probe = m.run(clean_in, cache=[Site(site.module, io=site.io)]).cache[Site(site.module, io=site.io).name]
    res = m.adapter.resolve(site)
    base = dict(module=site.module, io=site.io, positions=site.positions, neurons=site.neurons, heads=site.heads)
    if per == "position":
        if probe.ndim < 3:
            raise InputError(f"per='position' needs a (batch, positions, ...) activation; {site.name!r} is "
                             f"{tuple(probe.shape)}.")
        pos = _positions(positions, int(probe.shape[1]))
        cells = [_Cell((t,), Site(**{**base, "positions": t})) for t in pos]
        return ("position",), {"position": pos}, cells
    if per == "head":
        H = res.n_heads or (probe.shape[-2] if probe.ndim == 4 else None)
        if not H:
            raise InputError(f"per='head' needs a per-head site such as 'layers.0.attn.z'; {site.name!r} has no heads.")
        cells = [_Cell((h,), Site(**{**base, "heads": h})) for h in range(int(H))]
        return ("head",), {"head": list(range(int(H)))}, cells
    width = int(probe.shape[-1]) // (res.n_heads if site.heads is not None and res.n_heads else 1)
    cells = [_Cell((n,), Site(**{**base, "neurons": n})) for n in range(width)]
    return ("neuron",), {"neuron": list(range(width))}, cells


def _unique_full_sites(cells: list[_Cell]) -> list[Site]:
    seen: dict[tuple, Site] = {}
    for c in cells:
        seen.setdefault((c.site.module, c.site.io), Site(c.site.module, io=c.site.io))
    return list(seen.values())


# -- the two schedules -----------------------------------------------------------------------------------------------
def _rows(m: Model, cells: list[_Cell], base_in: Any, source: Any, P: int, metric: Any, chunk_size: int | None,
          progress: bool | None) -> tuple[torch.Tensor, int]:
    """Any model: one engine row per (cell, prompt), full forwards, chunked. Returns (cells, prompts)."""
    patch = Patch(source)
    rows = [{c.site: patch} for c in cells for _ in range(P)]
    run = m.run(base_in, rows, input_index=[p for _ in cells for p in range(P)], metric=metric,
                chunk_size=chunk_size, progress=progress if progress is False else None)
    vals = run.metric.float()
    return vals.view(len(cells), P, *vals.shape[1:]), int(run.meta["token_layers"] or 0)


def _block_of(m: Model, site: Site) -> int | None:
    res = m.adapter.resolve(site)
    prefix = m.adapter.arch.layers + "."  # type: ignore[attr-defined]
    if not res.path.startswith(prefix):
        return None
    return int(res.path[len(prefix):].split(".")[0])


def _fast_path_ok(m: Model, cells: list[_Cell]) -> bool:
    if m.adapter.kind != "hf-causal-lm":
        return False
    return all(_block_of(m, c.site) is not None for c in cells)


def _first_position(site: Site, T: int) -> int:
    p = site.positions
    if p is None:
        return 0
    if isinstance(p, slice):
        r = range(T)[p]
        return min(r) if len(r) else T
    return min(int(x) % T for x in p)


def _from(site: Site, p0: int, T: int) -> Site | None:
    """The site restricted to positions >= p0 (None if nothing is left to patch)."""
    p = site.positions
    if p is None:
        return site
    kept = [t for t in (range(T)[p] if isinstance(p, slice) else [int(x) % T for x in p]) if t >= p0]
    if not kept:
        return None
    return Site(site.module, io=site.io, positions=tuple(kept), neurons=site.neurons, heads=site.heads,
                basis=site.basis, n_heads=site.n_heads)


def _staircase(m: Model, cells: list[_Cell], base: Any, source: Any, P: int, T: int, d: int, metric: Any,
               progress: bool | None, name: str) -> tuple[torch.Tensor, int]:
    """Hugging Face LMs: cells grouped by the first position they can change; within a group every block
    call runs the stacked states of all cells already patched, on positions from that one on. Returns the
    metric per (cell, prompt[, the metric's own columns])."""
    L = int(m.n_layers or 0)
    last_only = is_last_only(metric)
    patches = [Patch(source, row=p) for p in range(P)]
    # cells that patch nothing keep the base run's value (of this metric: the base output, where kept)
    own = metric(base.output).float() if base.output is not None else base.metric.float()
    values = own[None].repeat(len(cells), *[1] * own.ndim)
    groups: dict[int, list[tuple[int, int, Site]]] = {}
    for i, c in enumerate(cells):
        p0 = max(d, _first_position(c.site, T))
        site = _from(c.site, p0, T) if p0 < T else None
        if site is None:
            continue  # patches only positions where clean and corrupted agree: the base run's value
        groups.setdefault(p0, []).append((i, int(_block_of(m, c.site)), site))  # type: ignore[arg-type]
    token_layers = 0
    bar = tqdm(sorted(groups.items()), desc=f"activation patching ({name})", unit="position",
               disable=not (progress if progress is not None else len(cells) * P > 2000))
    for t, members in bar:
        states: list[torch.Tensor] = []
        order: list[int] = []
        first = min(b for _, b, _ in members)
        for j in range(first, L):
            new = [(i, s) for i, b, s in members if b == j]
            entering = base.cache[Site(f"layers.{j}", io="input").name][:, t:]
            hidden = torch.cat(states + [entering] * len(new)) if (states or new) else None
            if hidden is None:
                continue
            rows: list[dict] = [{}] * (len(states) * P)
            rows += [{s: patches[p]} for _, s in new for p in range(P)]
            order += [i for i, _ in new]
            last = j == L - 1
            seg = m.adapter.segment(hidden, layer=j, stop=j + 1, pos=t,  # type: ignore[attr-defined]
                                    past=m.adapter.stacked_past(base.kv, j, len(order), t),  # type: ignore
                                    head=last, last_only=last and last_only)
            run = m.run(seg, rows, metric=metric if last and last_only else None)
            token_layers += int(run.meta["token_layers"] or 0)
            if not last:
                states = list(run.output.split(P))
                continue
            if last_only:
                vals = run.metric.float()
            else:  # the metric may read any position: put back the base run's logits before t
                prefix = base.output[:, :t]
                vals = torch.cat([metric(torch.cat([prefix, y], 1)).float() for y in run.output.split(P)])
            values[order] = vals.view(len(order), P, *vals.shape[1:])
    return values, token_layers
