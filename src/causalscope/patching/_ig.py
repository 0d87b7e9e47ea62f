"""Layer integrated gradients (Sundararajan et al. 2017) at any site, batched through the engine."""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch

from ..core import (
    ApplyContext,
    Intervention,
    Model,
    Run,
    SegmentedLM,
    Site,
    as_site,
    input_setting,
    segment_safe,
    segmented,
)
from ..core.adapters import Batch
from ..errors import InputError
from ..loading import load
from ._ig_result import IGResult

Method = Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
METHODS: tuple[str, ...] = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
#: keyword inputs that say how to read the data rather than being data: a zero baseline keeps them
_NOT_DATA = ("attention_mask", "position_ids", "token_type_ids", "past_key_values", "cache", "cache_position")


# ---------------------------------------------------------------------------------------------- quadrature
def approximation(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of an integration rule on [0, 1], as captum's ``approximation_methods`` defines them.

    >>> approximation("riemann_middle", 4)[0]
    array([0.125, 0.375, 0.625, 0.875])

    Gauss-Legendre: the ``steps``-point rule mapped from [-1, 1] to [0, 1]. Riemann: weights ``1/steps``;
    ``riemann_trapezoid`` takes ``alphas = linspace(0, 1, steps)`` and halves the two end weights, so, as in
    captum, its weights sum to ``1 - 1/steps`` (its completeness error shrinks like ``1/steps``).
    """
    if method not in METHODS:
        raise InputError(f"Unknown integration method {method!r}; choose one of {', '.join(METHODS)}.")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be an int >= 1, got {steps!r}.")
    n = int(steps)
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (x + 1.0), 0.5 * w
    if n < 2:
        raise InputError(f"{method} needs steps >= 2 (got {n}); use more steps or method='gausslegendre'.")
    weights = np.full(n, 1.0 / n)
    if method == "riemann_left":
        alphas = np.arange(n) / n
    elif method == "riemann_right":
        alphas = np.arange(1, n + 1) / n
    elif method == "riemann_middle":
        alphas = (np.arange(n) + 0.5) / n
    else:  # trapezoid, captum's variant: step 1/(n-1) between alphas, weights 1/n with halved ends
        alphas = np.linspace(0.0, 1.0, n)
        weights[0] /= 2
        weights[-1] /= 2
    return alphas, weights


# ---------------------------------------------------------------------------------------------- pieces
@dataclass(eq=False)
class _PathPoint(Intervention):
    """Set the selection of row r (base input i) to ``start[i] + alpha * diff[i]`` (one point of the path)."""

    alpha: float
    start: torch.Tensor  # (inputs, *selection): baseline activation
    diff: torch.Tensor   # (inputs, *selection): input activation - baseline activation

    def key(self) -> tuple:
        return ("IGPathPoint", id(self.start), float(self.alpha))

    def __call__(self, x: torch.Tensor, src: torch.Tensor | None, ctx: ApplyContext) -> torch.Tensor:
        i = ctx.input_index.to(self.start.device)
        value = self.start[i] + float(self.alpha) * self.diff[i]
        return value.to(device=x.device, dtype=x.dtype)


class _Objective:
    """The scalar per row whose gradient IG integrates: ``metric(output)`` or the ``target`` logit.

    The engine passes each row's input index (``takes_input_index``), which picks per-input targets and,
    for padded inputs, each input's end (one past its last real token: ``ends``, from its attention mask, or
    the ``lengths`` the engine passes for prompts of different lengths). With padding, ``target`` reads the
    last real token and ``metric`` must take ``lengths`` (it gets the ends).
    """

    takes_input_index = True
    takes_lengths = True

    def __init__(self, target: int | torch.Tensor | None, metric: Callable | None,
                 ends: torch.Tensor | None = None) -> None:
        self.target, self.metric, self.ends = target, metric, ends

    def __call__(self, y: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        n = int(y.shape[0])
        ends = lengths if lengths is not None else None if self.ends is None else self.ends[rows]
        if self.metric is not None:
            if ends is None:
                v = self.metric(y)
            elif _takes_lengths(self.metric):
                v = self.metric(y, lengths=ends)
            else:
                raise InputError("integrated_gradients: the inputs are padded (an attention_mask with zeros), so a "
                                 "metric that reads positions (e.g. logits[:, -1]) would read padding. Pass target= "
                                 "(it reads each input's last real token), or give the metric a `lengths` "
                                 "parameter: def metric(logits, lengths): ... (each row's real length).")
            if not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != n or v[0].numel() != 1:
                raise InputError(f"metric must return one value per row, a tensor shaped ({n},); it returned "
                                 f"{type(v).__name__} {tuple(getattr(v, 'shape', ()))} for an output of shape "
                                 f"{tuple(y.shape)}.")
            return v.reshape(n)
        if self.target is None:
            if y[0].numel() != 1:
                raise InputError(f"The model's output is {tuple(y.shape[1:])} per row, not a single value: pass "
                                 f"target=<index into the last dim> (the last position for a language model) or "
                                 f"metric=<function of the output returning one value per row>.")
            return y.reshape(n)
        if y.ndim not in (2, 3):
            raise InputError(f"target= picks output[:, target] of a (batch, classes) output or "
                             f"output[:, -1, target] of a (batch, positions, vocab) one; this output is "
                             f"{tuple(y.shape)}. Pass metric= instead.")
        t = self.target if isinstance(self.target, int) else self.target[rows]
        size = int(y.shape[-1])
        hi = t if isinstance(t, int) else int(t.max())
        lo = t if isinstance(t, int) else int(t.min())
        if hi >= size or lo < -size:
            raise InputError(f"target {hi if hi >= size else lo} is out of range for an output with {size} values "
                             f"in its last dim (valid 0 .. {size - 1}).")
        if y.ndim == 2:
            last = y
        elif ends is not None:  # padded inputs: each row's last real token
            last = y[torch.arange(n, device=y.device), ends.to(y.device) - 1]
        else:
            last = y[:, -1]
        if isinstance(t, int):
            return last[:, t]
        return last.gather(1, t.to(last.device)[:, None])[:, 0]


def _check_target(target: Any, n_inputs: int) -> int | torch.Tensor | None:
    if target is None:
        return None
    if isinstance(target, torch.Tensor) and target.ndim == 0:
        target = target.item()
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target)
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or t.ndim != 1 or t.is_floating_point() or t.dtype == torch.bool:
        raise InputError(f"target must be an int or one int per input (a list or 1-D tensor of {n_inputs}); "
                         f"got {target!r:.80}.")
    if t.numel() != n_inputs:
        raise InputError(f"target has {t.numel()} entries for {n_inputs} inputs; give one per input, or an int.")
    return t.long().cpu()


def _takes_lengths(fn: Callable) -> bool:
    if getattr(fn, "takes_lengths", False):
        return True
    try:
        return "lengths" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _ends(batch: Batch) -> torch.Tensor | None:
    """Each row's end (one past its last real token) where the batch's ``attention_mask`` pads it (None where
    nothing is padded).

    >>> _ends(m.adapter.prepare({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0]])}))
    tensor([3])
    """
    mask = batch.kwargs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or bool((mask != 0).all()):
        return None
    real = (mask != 0).long().cpu()
    if not bool(real.any(1).all()):
        raise InputError("A row of the inputs' attention_mask has no real token (all zeros); drop that row.")
    return real.shape[1] - real.flip(1).argmax(1)


def _zero_baseline(batch: Batch) -> Batch:
    """The inputs with every data tensor zeroed (captum's default baseline); masks etc. are kept."""
    def zero(k: str | None, v: Any) -> Any:
        if isinstance(v, torch.Tensor) and k not in _NOT_DATA:
            return torch.zeros_like(v)
        if isinstance(v, (list, tuple)) and k not in _NOT_DATA:
            return type(v)(zero(None, x) for x in v)
        return v
    return dataclasses.replace(batch, args=tuple(zero(None, a) for a in batch.args),
                               kwargs={k: zero(k, v) for k, v in batch.kwargs.items()})


def _flat(batch: Batch) -> list[tuple[str, Any]]:
    out = [(f"argument {i}", a) for i, a in enumerate(batch.args)]
    return out + [(f"keyword {k!r}", v) for k, v in batch.kwargs.items()]


def _check_shapes(batch: Batch, base: Batch) -> None:
    """The baseline must be the same kind of input as the inputs, row for row."""
    mine, theirs = _flat(batch), _flat(base)
    if [k for k, _ in mine] != [k for k, _ in theirs]:
        raise InputError(f"The baseline is not the same kind of input as the inputs: the inputs have "
                         f"{[k for k, _ in mine]}, the baseline {[k for k, _ in theirs]}.")
    for (k, a), (_, b) in zip(mine, theirs):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            raise InputError(f"The inputs' {k} is {type(a).__name__}, the baseline's {type(b).__name__}.")
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype != b.dtype:
            raise InputError(f"dtype mismatch between inputs and baseline ({k}): the inputs are {a.dtype}, the "
                             f"baseline {b.dtype}. The path between them needs one dtype: convert the baseline with "
                             f"baseline.to({a.dtype}).")
        if isinstance(a, torch.Tensor) and a.ndim > 0 and a.shape[1:] != b.shape[1:]:
            raise InputError(f"Shape mismatch between inputs and baseline ({k}): the inputs are "
                             f"{tuple(a.shape)}, the baseline {tuple(b.shape)}. Give a baseline shaped like one "
                             f"input per row, (1 or {a.shape[0]}, {', '.join(map(str, a.shape[1:]))}).")


@dataclass
class _Segment:
    """Run blocks ``layer..L`` only: the grad run's input is the block-``layer`` input of the inputs."""

    layer: int
    site: Site          # the attribution site in the segment (block outputs become the next block's input)
    entry: Site         # the activation that feeds the segment (cached on the inputs' run)
    lm: SegmentedLM     # the model's segmented forward


def _segment_plan(m: Model, site: Site) -> _Segment | None:
    """Where an LM with a segmented forward can start the grad run for ``site`` (None: run the whole model)."""
    lm = segmented(m.adapter)
    if lm is None:
        return None
    L, arch = lm.n_layers, lm.arch
    res = m.adapter.resolve(site)
    entry = lambda j: Site(f"layers.{j}", io="input") if j < L else Site(f"layers.{L - 1}")  # noqa: E731
    prefix = arch.layers + "."
    if res.path.startswith(prefix):
        head, _, rest = res.path[len(prefix):].partition(".")
        if not head.isdigit():
            return None
        i = int(head)
        if rest or res.io == "input":  # inside block i, or block i's input: start at block i
            return _Segment(i, site, entry(i), lm)
        # block i's output is block i+1's input (the final norm's input after the last block)
        nxt = dataclasses.replace(site, module=f"layers.{i + 1}" if i + 1 < L else "final_norm", io="input")
        return _Segment(i + 1, nxt, entry(i + 1), lm)
    if res.path in (arch.final_norm, lm.unembed_path):
        return _Segment(L, site, entry(L), lm)
    return None  # embeddings: before block 0, the whole model runs


def _clean(t: torch.Tensor) -> torch.Tensor:
    """A normal (non-inference) copy, usable inside the autograd pass."""
    return t.clone() if t.is_inference() else t


def _meta_value(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


# ---------------------------------------------------------------------------------------------- method
def integrated_gradients(model: Any, inputs: Any, baseline: Any, site: Site | str, *, target: Any = None,
                         metric: Callable[[torch.Tensor], torch.Tensor] | None = None, steps: int = 50,
                         method: Method | str = "gausslegendre",
                         attribute_to: Literal["output", "input"] | str = "output",
                         chunk_size: int | None = None, progress: bool | None = None) -> IGResult:
    """Layer integrated gradients of a metric with respect to the activation at ``site``.

    >>> import causalscope as cs
    >>> r = cs.integrated_gradients("tiny-gpt2", "the cat sat on the mat", "the dog ran by the tree",
    ...                             "layers.1", target=7, steps=32)
    >>> r.attributions.shape                      # (1, 6, 64): inputs x positions x d_model
    >>> r.delta                                   # sum of attributions - (f(x) - f(baseline)), per input
    >>> r.plot()

    With ``a_x`` / ``a_b`` the site's activation on the inputs / the baseline, and ``F(a)`` the metric
    when the site's activation is replaced by ``a`` (everything else computed from the inputs):

        attribution = (a_x - a_b) * sum_k w_k dF/da (a_b + alpha_k (a_x - a_b))

    with the ``steps`` points ``alpha_k`` and weights ``w_k`` of ``method`` (see :func:`approximation`):
    captum's ``LayerIntegratedGradients(..., multiply_by_inputs=True).attribute(inputs, baseline, target,
    n_steps=steps, method=method, attribute_to_layer_input=attribute_to == "input")``.

    - ``model``: anything :func:`causalscope.load` accepts. It is left unchanged: parameters, buffers,
      hooks and train/eval flags are as before, also when this raises; parameters get no ``.grad``.
    - ``inputs``: what ``m.run`` takes (prompts, token ids, tensors, dicts of keyword tensors such as
      ``{"input_ids": ..., "attention_mask": ...}``, batch first). ``baseline``: the same kind of input with
      one row per input (or one row for all); a corrupted prompt must have the same token count. ``None``
      means a zero input, as in captum (every data tensor zeroed; for a language model that is token id 0
      at every position, rarely a meaningful baseline; a mask is kept). A padding ``attention_mask`` holds
      on every run of the path (they run the whole model), and ``target`` reads each input's last real
      token (a ``metric`` must then take ``lengths``: each row's real length), so a padded prompt gets the
      attributions of the same prompt unpadded.
    - ``site``: a :class:`Site` or a name (``"layers.1"``, ``"layers.0.mlp"``, ``"net.2"``). Selections
      (positions, neurons, heads, basis) attribute to that part only; the rest keeps the inputs' values.
      ``attribute_to="input"`` uses the module's input (``io="input"``) instead of its output.
    - ``target``: an int, or one per input, indexing the last dim of the output at the last position for
      a ``(batch, positions, vocab)`` output (``output[:, -1, target]``), or of a ``(batch, classes)``
      output (``output[:, target]``). Or ``metric``: a function of the output returning one value per row.
      Exactly one of them, unless the output holds one value per row.
    - ``chunk_size`` / ``progress``: rows per forward pass and the progress bar, as in ``m.run``.

    Cost: two cached runs (inputs, baseline) and one of the path start, then ``steps x inputs`` rows in
    batched passes (``chunk_size`` rows each) with gradients with respect to the site's activation only.
    For Hugging Face causal LMs those rows run only the blocks from the site's block on, from the cached
    input of that block (a segmented forward; with ``target`` only the last position reaches the head),
    so the prefix below the site is computed once. ``meta["token_layers"]`` counts the blocks x positions
    x rows executed in all runs.
    """
    m = load(model)
    if metric is not None and not callable(metric):
        raise InputError(f"metric must be a function of the model output, got {type(metric).__name__}.")
    if target is not None and metric is not None:
        raise InputError("Give target= or metric=, not both: target picks output[:, -1, target] (or "
                         "output[:, target]); metric is any function of the output returning one value per row.")
    if attribute_to not in ("output", "input"):
        raise InputError(f"attribute_to must be 'output' or 'input', got {attribute_to!r}.")
    alphas, weights = approximation(str(method), steps)
    site = as_site(site)
    if attribute_to == "input" and site.io != "input":
        site = dataclasses.replace(site, io="input")
    m.adapter.resolve(site)  # unknown names fail here, before anything runs

    batch = m.adapter.prepare(inputs)
    B = batch.size
    tgt = _check_target(target, B)
    if baseline is None:
        base = _zero_baseline(batch)
    else:
        base = m.adapter.prepare(baseline)
        if base.size not in (1, B):
            raise InputError(f"The baseline has {base.size} rows and the inputs {B}; give one baseline row per "
                             f"input, or a single row for all of them.")
        if base.seq_len is not None and batch.seq_len is not None and base.seq_len != batch.seq_len:
            raise InputError(f"The baseline has {base.seq_len} tokens and the inputs {batch.seq_len}; IG "
                             f"interpolates activations position by position, so give a baseline (e.g. a "
                             f"corrupted prompt) of the same token length.")
        _check_shapes(batch, base)
        if base.size == 1 and B > 1:
            base = base.take(torch.zeros(B, dtype=torch.long))

    # a segmented forward rebuilds positions and the causal mask itself: inputs with more (a padding mask,
    # position ids) run the whole model on every row, so the mask holds along the whole path
    seg = _segment_plan(m, site) if segment_safe(batch) else None
    work_site = seg.site if seg is not None else site
    x_cache = [work_site] + ([seg.entry] if seg is not None and seg.entry != work_site else [])
    ends_x = _ends(batch)
    x_obj, b_obj = _Objective(tgt, metric, ends_x), _Objective(tgt, metric, _ends(base))
    run_x = m.run(batch, cache=x_cache, metric=x_obj, chunk_size=chunk_size, progress=False)
    run_b = m.run(base, cache=[work_site], metric=b_obj, chunk_size=chunk_size, progress=False)
    a_x, a_b = _clean(run_x.cache[work_site]), _clean(run_b.cache[work_site])
    if a_x.shape != a_b.shape:
        raise InputError(f"The activation at {site.name!r} is {tuple(a_x.shape)} on the inputs but "
                         f"{tuple(a_b.shape)} on the baseline; give a baseline of the inputs' shape.")
    diff = a_x - a_b

    if seg is not None:
        entry = _clean(run_x.cache[seg.entry])
        own_metric = metric is None
        grad_input: Any = seg.lm.segment(entry, layer=seg.layer, pos=0,
                                         last_only=own_metric and seg.layer < seg.lm.n_layers)
    else:
        grad_input = batch

    # the path start (alpha = 0): one cheap forward, for the path-completeness check
    s_obj = _Objective(tgt, metric, ends_x)
    run_s = m.run(grad_input, {work_site: _PathPoint(0.0, a_b, diff)}, metric=s_obj, chunk_size=chunk_size,
                  progress=False)

    S = len(alphas)
    points = [_PathPoint(float(al), a_b, diff) for al in alphas]
    rows = [{work_site: p} for p in points for _ in range(B)]
    index = [i for _ in range(S) for i in range(B)]
    g_obj = _Objective(tgt, metric, ends_x)
    run_g = m.run(grad_input, rows, input_index=index, grads=[work_site], metric=g_obj, chunk_size=chunk_size,
                  progress=progress)
    grads = run_g.grads[work_site].reshape(S, B, *diff.shape[1:])
    w = torch.as_tensor(weights, dtype=grads.dtype, device=grads.device)
    total = torch.tensordot(w, grads, dims=([0], [0]))
    attributions = (diff.to(total.device) * total).detach()

    # each of these runs was given a metric
    f_x, f_b, f_s = (cast(torch.Tensor, r.metric).detach().double().cpu() for r in (run_x, run_b, run_s))
    summed = attributions.reshape(B, -1).double().sum(1).cpu()
    delta, path_delta = summed - (f_x - f_b), summed - (f_x - f_s)

    runs: list[Run] = [run_x, run_b, run_s, run_g]
    tls = [r.meta.get("token_layers") for r in runs]
    token_layers = None if any(t is None for t in tls) else int(sum(tls))  # type: ignore[arg-type]
    dims, coords = _dims(attributions, site, batch.seq_len)
    tokens = _tokens(m, batch)
    metric_name = None if metric is None else getattr(metric, "__name__", type(metric).__name__)
    meta = {
        "method": "integrated_gradients", "model": m.name, "adapter": m.adapter.kind, "site": site.name,
        "attribute_to": site.io, "target": _meta_value(tgt), "metric": metric_name, "steps": int(steps),
        "approximation": str(method), "alphas": alphas.tolist(), "weights": weights.tolist(),
        "baseline": "zero input" if baseline is None else input_setting(baseline), "multiply_by_inputs": True,
        "inputs": input_setting(inputs),
        "n_inputs": B, "seq_len": batch.seq_len, "chunk_size": run_g.meta.get("chunk_size"),
        "segment": None if seg is None else {"layer": seg.layer, "site": seg.site.name},
        "token_layers": token_layers, "rows": run_g.n_rows,
        "f_inputs": f_x.tolist(), "f_baseline": f_b.tolist(), "f_path_start": f_s.tolist(),
        "delta": delta.tolist(), "path_delta": path_delta.tolist(), "tokens": tokens,
        "title": f"integrated gradients at {site.name} ({method}, {steps} steps)",
    }
    return IGResult(attributions, dims, coords, meta, name="attribution").with_tokens(tokens)


def _dims(a: torch.Tensor, site: Site, seq_len: int | None) -> tuple[list[str], dict[str, list]]:
    n = a.ndim
    if n == 1:
        return ["input"], {}
    if n == 2:
        dims = ["input", "neuron"]
    elif n == 3:
        dims = ["input", "position", "d"]
    elif n == 4 and (site.heads is not None or seq_len is not None):  # (rows, tokens, heads, d_head)
        dims = ["input", "position", "head", "d"]
    elif n == 4:
        dims = ["input", "channel", "height", "width"]
    else:
        dims = ["input"] + [f"axis{k}" for k in range(1, n)]
    coords: dict[str, list] = {}
    if "position" in dims:
        T = seq_len or a.shape[1]
        if isinstance(site.positions, tuple):
            coords["position"] = [p % T for p in site.positions]
        elif isinstance(site.positions, slice):
            coords["position"] = list(range(T))[site.positions]
    if "head" in dims and isinstance(site.heads, tuple):
        coords["head"] = list(site.heads)
    last = dims[-1]
    if isinstance(site.neurons, tuple) and last in ("neuron", "d"):
        coords[last] = list(site.neurons)
    if any(len(v) != a.shape[dims.index(k)] for k, v in coords.items()):
        coords = {}
    return dims, coords


def _tokens(m: Model, batch: Batch) -> list[list[str]] | None:
    ids = m.adapter.token_ids(batch)
    if not isinstance(ids, torch.Tensor) or m.tokenizer is None or ids.ndim != 2:
        return None
    try:
        return [[m.tokenizer.decode([int(i)]) for i in row] for row in ids.tolist()]
    except Exception:  # a tokenizer that cannot decode single ids: no labels
        return None


__all__ = ["IGResult", "integrated_gradients", "approximation", "METHODS"]
