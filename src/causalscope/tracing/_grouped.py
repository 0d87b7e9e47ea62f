"""trace_average's grouped schedule: facts of one shape traced together, sharing every pass.

>>> traces, skipped, counts = grouped_traces(m, lm, items, ("hidden", "mlp"), 10, 0.3, 10, 0, True, False)

Facts whose prompts tokenize to the same length with the subject at the same tokens run the same floor
schedule (:func:`floor_scores`), so they run it together: one clean pass (one row per fact), one corrupted
pass (each fact's ``samples`` copies, each with its own noise draws: the draws ``causal_trace`` makes for it
alone) shared by every kind, then every block call of the schedule on the rows of all of them and of all
kinds. Each fact's scores are those of ``causal_trace`` on it alone, up to float rounding of the larger
batches, and the token-layers are the sum of theirs; the engine runs are those of one fact.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch

from ..core import Model, Noise, SegmentedLM, Site, tqdm
from ..errors import InputError
from ..executors import report_progress
from ._floor import FactRows, floor_scores
from ._trace import TraceResult, _noise_draws, check_settings, subject_range, trace_result

#: at most this many activation floats (rows x tokens x layers x d_model) per group of facts traced together
MAX_FLOATS = 1 << 25


@dataclass
class _Fact:
    index: int
    prompt: str
    subject: str
    answer: str | None
    ids: torch.Tensor | None = None  # (1, T)
    span: tuple[int, int] | None = None
    error: InputError | None = None  # the prompt / subject did not check out


def grouped_traces(m: Model, lm: SegmentedLM, items: Sequence[tuple[str, str, str | None]], kinds: Sequence[str],
                   samples: int, noise: Any, window: int, seed: int, require_correct: bool,
                   progress: bool | None) -> tuple[list[dict[str, TraceResult] | None], list[dict], dict[str, int]]:
    """Every fact's causal traces (by kind; None where the fact is skipped), the skipped facts (in order), and
    counts: ``fact_groups`` (the groups of facts traced together).

    A fact with an answer the model gets wrong is skipped when ``require_correct`` (before its subject is
    looked for, as in a loop over :func:`causal_trace`).
    """
    for k in kinds:
        samples = check_settings(k, window, samples, noise)
    facts = [_Fact(i, p, s, a) for i, (p, s, a) in enumerate(items)]
    for f in facts:
        try:
            f.span = subject_range(m, f.prompt, f.subject)
            f.ids = lm.tokenize(f.prompt)
        except InputError as err:
            f.error = err
    skipped: dict[int, dict] = {}
    for f in facts:  # a fact that does not check out is an error unless it is skipped anyway
        if f.error is not None:
            if f.answer is None or not require_correct:
                raise f.error
            ids = lm.tokenize(f.prompt).to(lm.device)
            pred = m.tokenizer.decode([int(cast(torch.Tensor, m.run(ids).output)[0, -1].argmax())]).strip()
            if pred == str(f.answer).strip():
                raise f.error
            skipped[f.index] = {"prompt": f.prompt, "answer": f.answer, "predicted": pred}
    groups: dict[tuple[int, int, int], list[_Fact]] = {}
    for f in facts:
        if f.error is None:
            assert f.ids is not None and f.span is not None
            groups.setdefault((int(f.ids.shape[1]), *f.span), []).append(f)
    L, d = int(m.n_layers or 0), int(lm.d_model)
    out: list[dict[str, TraceResult] | None] = [None] * len(facts)
    counts = {"fact_groups": 0}
    show = progress if progress is not None else len(facts) > 5
    bar = tqdm(total=len(facts) - len(skipped), desc="trace_average", unit="fact", disable=not show)
    for (T, _, _), members in groups.items():
        size = max(1, MAX_FLOATS // (samples * T * L * d))
        for c0 in range(0, len(members), size):
            part = members[c0:c0 + size]
            done = _trace_group(m, lm, part, kinds, samples, noise, window, seed, require_correct, skipped)
            for f, traces in zip(part, done):
                out[f.index] = traces
            counts["fact_groups"] += int(any(t is not None for t in done))
            bar.update(len(part))
            report_progress(len(part))  # a sharded run's bar (no-op otherwise)
    bar.close()
    return out, [skipped[i] for i in sorted(skipped)], counts


def _trace_group(m: Model, lm: SegmentedLM, part: list[_Fact], kinds: Sequence[str], samples: int, noise: Any,
                 window: int, seed: int, require_correct: bool,
                 skipped: dict[int, dict]) -> list[dict[str, TraceResult] | None]:
    """The traces of facts of one shape, run together (None for the facts the model gets wrong)."""
    L = int(m.n_layers or 0)
    kind_sites = [f"layers.{i}.{k}" for k in ("mlp", "attn") if k in kinds for i in range(L)]
    ids = torch.cat([cast(torch.Tensor, f.ids) for f in part]).to(lm.device)
    clean = m.run(ids, cache=[f"layers.{i}" for i in range(L)] + kind_sites)
    logits = cast(torch.Tensor, clean.output)[:, -1]  # no metric, so the run keeps its output
    answers = logits.argmax(-1).tolist()
    if require_correct:
        keep = []
        for i, (f, a) in enumerate(zip(part, answers)):
            pred = m.tokenizer.decode([int(a)]).strip()
            if f.answer is not None and pred != str(f.answer).strip():
                skipped[f.index] = {"prompt": f.prompt, "answer": f.answer, "predicted": pred}
            else:
                keep.append(i)
        if not keep:
            return [None] * len(part)
        if len(keep) < len(part):  # trace the others alone
            done = _trace_group(m, lm, [part[i] for i in keep], kinds, samples, noise, window, seed, False, skipped)
            some: list[dict[str, TraceResult] | None] = [None] * len(part)
            for i, traces in zip(keep, done):
                some[i] = traces
            return some
    high = logits.softmax(-1).gather(1, torch.tensor(answers, device=logits.device)[:, None])[:, 0].tolist()
    b, e = cast(tuple[int, int], part[0].span)
    noised = [_noise_draws(m, lm, noise, samples, e - b, f.subject, seed) for f in part]
    rows = FactRows(answers, samples)
    block_in = [Site(f"layers.{i}", io="input") for i in range(L)]
    corrupted = m.run(ids.repeat_interleave(samples, 0),
                      {Site("embed", positions=range(b, e)): Noise(draws=torch.cat([x for x, _ in noised]))},
                      metric=rows.metric, keep_kv=True,
                      cache=[*block_in, f"layers.{L - 1}", *(f"layers.{i}.mlp" for i in range(L) if "mlp" in kinds)])
    low = rows.per_fact(corrupted.metric)[0].tolist()
    res: list[dict[str, TraceResult]] = [{} for _ in part]
    for k, (scores, token_layers) in floor_scores(m, lm, kinds, window, rows, b, clean, corrupted, None,
                                                  progress=False).items():
        for i, f in enumerate(part):
            std = noised[i][1]
            settings = {"window": window, "samples": samples, "noise_std": std,
                        "noise": "explicit" if std != std else noise, "seed": seed, "replace": False, "sever": None,
                        "schedule": "floor", "facts_per_pass": len(part)}
            tokens = [m.tokenizer.decode([int(t)]) for t in ids[i]]
            res[i][k] = trace_result(m, scores[i], f.prompt, f.subject, k, settings, high[i], low[i], answers[i],
                                     tokens, (b, e), token_layers // len(part))
    return cast(list[dict[str, TraceResult] | None], res)
