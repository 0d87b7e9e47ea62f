"""Causal traces averaged over many facts by token class, with bootstrap confidence intervals (ROME Fig. 2)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal, cast

import torch

from ..core import Model, SegmentedLM, input_setting
from ..errors import InputError, check_flag, check_int, check_seed
from ..executors import check_executor
from ..results import LabelledArray, quantiles, resolve_backend
from ._average_sharded import per_fact_traces, sharded_traces
from ._grouped import grouped_traces
from ._trace import Kind, TraceResult, _lm, check_noise_std, check_settings, embedding_std

TOKEN_CLASSES = ("first subject token", "middle subject tokens", "last subject token",
                 "first subsequent token", "further tokens", "last token")
_KIND_COLORS = {"hidden": "#6a3d9a", "mlp": "#1b7837", "attn": "#b2182b"}


def token_classes(b: int, e: int, T: int) -> dict[str, list[int]]:
    """ROME's token classes for a subject at tokens ``[b, e)`` of a ``T``-token prompt.

    >>> token_classes(1, 4, 8)["middle subject tokens"]
    [2]
    """
    b, e, T = check_int(b, "b", low=0), check_int(e, "e", low=1), check_int(T, "T", low=1)
    if not b < e <= T:
        raise InputError(f"token_classes needs a subject span 0 <= b < e <= T (tokens [b, e) of a T-token prompt); "
                         f"got b={b}, e={e}, T={T}.")
    return {
        "first subject token": [b],
        "middle subject tokens": list(range(b + 1, e - 1)),
        "last subject token": [e - 1],
        "first subsequent token": [e] if e < T - 1 else [],
        "further tokens": list(range(e + 1, T - 1)),
        "last token": [T - 1],
    }


def _facts(facts: Iterable[Any]) -> list[tuple[str, str, str | None]]:
    if isinstance(facts, (str, bytes)) or not isinstance(facts, Iterable):
        raise InputError(f"facts must be a list of facts, each (prompt, subject[, answer]); got "
                         f"{type(facts).__name__} {facts!r:.60}.")
    out = []
    for f in facts:
        if isinstance(f, (tuple, list)) and len(f) in (2, 3):
            out.append((f[0], f[1], f[2] if len(f) == 3 else None))
        elif hasattr(f, "prompt") and hasattr(f, "subject"):
            out.append((f.prompt, f.subject, getattr(f, "answer", None)))
        elif isinstance(f, dict) and "prompt" in f and "subject" in f:
            out.append((f["prompt"], f["subject"], f.get("answer")))
        else:
            raise InputError(f"Each fact must be (prompt, subject[, answer]), a dict with prompt/subject or an "
                             f"object with .prompt/.subject; got {f!r:.80}.")
    if not out:
        raise InputError("trace_average needs at least one fact.")
    return out


class TraceAverage(LabelledArray):
    """Average indirect effect (restored minus corrupted probability) by kind x token class x layer, with
    bootstrap confidence intervals on the ``stat`` axis (``mean``, ``ci_low``, ``ci_high``).

    >>> avg = causalscope.trace_average("facts-gpt", causalscope.zoo.facts.facts("heldout")[:50])
    >>> avg.sel(kind="mlp", stat="mean").plot()
    >>> avg.plot()                          # ROME Fig. 2 style: one panel per kind
    """

    #: the individual TraceResults (set by trace_average; not saved)
    traces: list

    @classmethod
    def from_array(cls, a: LabelledArray) -> TraceAverage:
        out = cls(a.values, a.dims, a.coords, a.meta, a.name)
        out.traces = []
        return out

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        backend = resolve_backend(backend)
        kinds = list(self.coords["kind"])
        layers = list(self.coords["layer"])
        classes = list(self.coords["token_class"])
        n = self.meta.get("n_facts_per_class", {})
        classes = [c for c in classes if n.get(c, 1) != 0]  # a class no fact has (n=0) has no line to draw
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"{k}" for k in kinds], shared_yaxes=False)
            palette = ["#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#8c564b"]
            for ki, k in enumerate(kinds):
                for ci, c in enumerate(classes):
                    sub = self.sel(kind=k, token_class=c)
                    mean, lo, hi = (sub.sel(stat=s).values.tolist() for s in ("mean", "ci_low", "ci_high"))
                    color = palette[ci % len(palette)]
                    fig.add_trace(go.Scatter(x=layers + layers[::-1], y=hi + lo[::-1], fill="toself", line={"width": 0},
                                             fillcolor=color, opacity=0.15, showlegend=False, hoverinfo="skip"),
                                  row=1, col=ki + 1)
                    fig.add_trace(go.Scatter(x=layers, y=mean, mode="lines+markers", line={"color": color},
                                             name=f"{c} (n={n.get(c, '?')})", legendgroup=c, showlegend=ki == 0),
                                  row=1, col=ki + 1)
                fig.update_xaxes(title_text="layer", tickmode="linear", tick0=0, dtick=1, row=1, col=ki + 1)
            fig.update_yaxes(title_text="average indirect effect", row=1, col=1)
            # the legend goes below the panels, so that they keep the figure's width
            fig.update_layout(title=self.meta.get("title", "Average indirect effect"), height=480,
                              legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.22, "yanchor": "top"},
                              margin={"b": 110})
            return fig
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.2 * len(kinds), 4.0))
        axes = fig.subplots(1, len(kinds), squeeze=False)[0]
        for a, k in zip(axes, kinds):
            for c in classes:
                sub = self.sel(kind=k, token_class=c)
                mean_line = sub.sel(stat="mean").numpy()
                a.fill_between(layers, sub.sel(stat="ci_low").numpy(), sub.sel(stat="ci_high").numpy(), alpha=0.15)
                a.plot(layers, mean_line, marker=".", label=f"{c} (n={n.get(c, '?')})")
            a.set_title(f"{k}", color=_KIND_COLORS.get(k, "black"))
            a.set_xlabel("layer")
        axes[0].set_ylabel("average indirect effect")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.suptitle(self.meta.get("title", "Average indirect effect"))
        fig.tight_layout(rect=(0, 0.14, 1, 1))
        return fig


def trace_average(model: Any, facts: Iterable[Any], *, kinds: Sequence[Kind] = ("hidden", "mlp", "attn"),
                  samples: int = 10, noise: Any = "3x", window: int = 10, seed: int = 0,
                  require_correct: bool = True, n_boot: int = 1000, ci: float = 0.95,
                  schedule: Literal["grouped", "per_fact"] = "grouped", progress: bool | None = None,
                  executor: Any = None, out: str | os.PathLike[str] | None = None,
                  shards: int | None = None) -> TraceAverage:
    """Causal traces of many facts, averaged by token class (ROME Fig. 2), with bootstrap CIs.

    >>> avg = trace_average("facts-gpt", [("Thumtre Lesdurn was born in the city of", "Thumtre Lesdurn")])

    The indirect effect of a cell is its restored score minus the fact's corrupted score. Per fact and
    class it is averaged over the class's tokens (``token_classes``); per class it is averaged over the
    facts that have such tokens, and the ``ci`` interval comes from ``n_boot`` bootstrap resamples of
    those facts (seeded). ``noise="3x"`` means 3 x the embedding std over *all* the facts' subjects, as
    ROME does. With answers given and ``require_correct``, facts the model gets wrong are skipped (ROME
    traces known facts only); ``meta["skipped"]`` lists them.

    ``schedule="grouped"`` (the default) traces facts whose prompts have the same number of tokens and the
    subject at the same tokens together: one clean and one corrupted pass for all of them and all kinds, then
    every block call of :func:`causal_trace`'s compute-floor schedule on the rows of all of them (each fact
    keeps its own noise draws, clean values and answer). ``"per_fact"`` calls :func:`causal_trace` fact by
    fact. Both give the same numbers (up to float rounding of larger batches); ``meta["schedule"]``,
    ``meta["fact_groups"]`` and ``meta["token_layers"]`` say what ran.

    ``executor=causalscope.RayExecutor(workers=N, ...)`` spreads the facts over Ray workers in ``shards`` pieces
    (default: 4 per worker); ``out=folder`` saves each finished shard there at once, and a rerun of the same call
    computes only the shards that are missing (docs/distributed.md). Each fact's noise is drawn from ``seed``
    alone, so the numbers are the same whatever the workers or shards; ``meta["executor"]`` says what ran
    (shards, reused shards, retries).
    """
    sharded = executor is not None or out is not None or shards is not None
    ex = check_executor(executor) if sharded else None
    m, lm = (None, None) if sharded else _lm(model)
    items = _facts(facts)
    if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not kinds:
        raise InputError(f"kinds must be a non-empty list of 'hidden', 'mlp', 'attn' (e.g. kinds=['mlp']); got "
                         f"{kinds!r}.")
    bad = [k for k in kinds if k not in ("hidden", "mlp", "attn")]
    if bad:
        raise InputError(f"kind must be 'hidden', 'mlp' or 'attn', got {bad[0]!r} (in kinds={list(kinds)!r}).")
    if len(set(kinds)) != len(kinds):
        raise InputError(f"kinds lists a kind twice: {list(kinds)!r}; list each of 'hidden', 'mlp', 'attn' once.")
    for k in kinds:
        samples = check_settings(k, window, samples, noise)
    check_int(n_boot, "n_boot", low=1, hint="It is the number of bootstrap resamples of the facts.")
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < ci < 1:
        raise InputError(f"ci must lie in (0, 1), got {ci}.")
    seed = check_seed(seed)
    check_flag(require_correct, "require_correct")
    if progress is not None:
        check_flag(progress, "progress")
    if schedule not in ("grouped", "per_fact"):
        raise InputError(f"schedule must be 'grouped' or 'per_fact', got {schedule!r}.")
    _check_answers(items)
    noise_setting = noise if isinstance(noise, (str, int, float)) else "explicit"
    if isinstance(noise, str):
        try:
            mult = float(noise.lower().rstrip("x"))
        except ValueError:
            raise InputError(f"noise={noise!r}: use a float, a multiple like '3x', or an explicit tensor.") from None
        subjects = [s for _, s, _ in items]
        std = ex.call(model, embedding_std, subjects) if ex is not None else embedding_std(m, subjects)
        noise = mult * std
        check_noise_std(noise, False, f"{mult:g} x the embedding std of the facts' subjects")
    per_kind: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
    traces, used = [], []
    show = progress if progress is not None else len(items) > 5
    run_info = None
    if ex is not None:
        settings = {"kinds": list(kinds), "samples": samples, "noise": noise, "window": window, "seed": seed,
                    "require_correct": require_correct, "schedule": schedule}
        by_fact, skipped, counts, run_info = sharded_traces(model, items, settings, ex, out, shards, progress)
    elif schedule == "grouped":
        m, lm = cast(Model, m), cast(SegmentedLM, lm)
        by_fact, skipped, counts = grouped_traces(m, lm, items, kinds, samples, noise, window, seed, require_correct,
                                                  show)
    else:
        m, lm = cast(Model, m), cast(SegmentedLM, lm)
        by_fact, skipped = per_fact_traces(m, lm, items, kinds, samples, noise, window, seed, require_correct, show)
        counts = {"fact_groups": sum(t is not None for t in by_fact)}
    first = next((t for t in by_fact if t is not None), None)
    L = int(m.n_layers or 0) if m is not None else len(first[kinds[0]].coords["layer"]) if first else 0
    model_name = m.name if m is not None else first[kinds[0]].meta["model"] if first else str(model)
    for (prompt, _, _), fact_traces in zip(items, by_fact):
        if fact_traces is None:
            continue
        used.append(prompt)
        for k in kinds:
            r = fact_traces[k]
            traces.append(r)
            per_kind[k].append(_by_class(r, L))  # (classes, layers)
    if not used:
        raise InputError(f"No fact was traced: the model got all {len(items)} wrong (require_correct=True). "
                         f"First: {skipped[0] if skipped else None}.")
    g = torch.Generator().manual_seed(seed)
    table = torch.zeros(len(kinds), len(TOKEN_CLASSES), L, 3)
    n_per_class: dict[str, int] = {}
    for ki, k in enumerate(kinds):
        data = torch.stack(per_kind[k])  # (facts, classes, layers)
        for ci_, c in enumerate(TOKEN_CLASSES):
            x = data[:, ci_]
            x = x[~torch.isnan(x[:, 0])]
            n_per_class[c] = int(x.shape[0])
            if x.shape[0] == 0:
                table[ki, ci_] = float("nan")
                continue
            idx = torch.randint(x.shape[0], (n_boot, x.shape[0]), generator=g)
            boots = x[idx].mean(1)  # (n_boot, layers)
            q = torch.tensor([(1 - ci) / 2, 1 - (1 - ci) / 2])
            lo, hi = quantiles(boots, q, dim=0)
            table[ki, ci_, :, 0], table[ki, ci_, :, 1], table[ki, ci_, :, 2] = x.mean(0), lo, hi
    meta = {"method": "trace_average", "model": model_name, "kinds": list(kinds), "samples": samples,
            "noise_std": float(noise) if not isinstance(noise, torch.Tensor) else "explicit", "window": window,
            "seed": seed, "n_boot": n_boot, "ci": ci, "n_facts": len(used), "skipped": skipped,
            "noise": noise_setting, "require_correct": require_correct,
            "facts": input_setting([list(f) if isinstance(f, tuple) else f for f in items]),
            "n_facts_per_class": n_per_class, "schedule": schedule, "fact_groups": counts["fact_groups"],
            "token_layers": sum(int(r.meta["token_layers"]) for r in traces),
            "title": f"Average indirect effect over {len(used)} facts ({model_name})"}
    if run_info is not None:
        meta["executor"] = run_info
    res = TraceAverage(table, ["kind", "token_class", "layer", "stat"],
                       {"kind": list(kinds), "token_class": list(TOKEN_CLASSES), "layer": list(range(L)),
                        "stat": ["mean", "ci_low", "ci_high"]}, meta, name="indirect effect")
    res.traces = traces
    return res


def _check_answers(items: list[tuple[str, str, str | None]]) -> None:
    """Every answer a fact gives is a non-empty string (compared with the model's prediction, as text)."""
    for i, (prompt, _, answer) in enumerate(items):
        if answer is not None and (not isinstance(answer, str) or not answer.strip()):
            raise InputError(f"Fact {i} ({prompt!r:.50}): the answer must be a non-empty string (the word the model "
                             f"should predict), got {answer!r}.")


def _by_class(r: TraceResult, n_layers: int) -> torch.Tensor:
    """A trace's indirect effects averaged over each token class's tokens (classes x layers; NaN rows where the
    class has no token)."""
    b, e = r.subject_range
    classes = token_classes(b, e, len(r.tokens))
    ie = r.scores - r.low_score
    return torch.stack([ie[idx].mean(0) if idx else torch.full((n_layers,), float("nan")) for idx in classes.values()])
