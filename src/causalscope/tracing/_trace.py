"""ROME causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT") at the compute floor."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
from tqdm.auto import tqdm

from ..core import Model, Noise, Patch, SegmentedLM, Site, block_staircase, block_step, segmented
from ..errors import InputError
from ..loading import load
from ..results import LabelledArray, resolve_backend
from ._batched import batched_scores

Kind = Literal["hidden", "mlp", "attn"]
_COLORS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}


def _lm(model: Any) -> tuple[Model, SegmentedLM]:
    """The model and its segmented forward; causal tracing needs both and a tokenizer."""
    m = load(model)
    lm = segmented(m.adapter)
    if lm is None or m.tokenizer is None:
        raise InputError(f"causal tracing needs a Hugging Face causal LM with a tokenizer (GPT-2, GPT-NeoX, Llama "
                         f"family); got a {m.adapter.kind} model{'' if m.tokenizer else ' without a tokenizer'}.")
    return m, lm


def subject_range(model: Any, prompt: str, subject: str) -> tuple[int, int]:
    """Token range ``[b, e)`` of ``subject`` in ``prompt`` (the first occurrence).

    >>> subject_range(m, "the capital of france is", "france")
    (3, 4)
    """
    m, lm = _lm(model)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("The prompt is empty: give the text whose next token states the fact.")
    if not isinstance(subject, str) or not subject.strip():
        raise InputError("The subject is empty: give the words of the prompt to corrupt.")
    tok = m.tokenizer
    ids = lm.tokenize(prompt)[0].tolist()
    tokens = [tok.decode([i]) for i in ids]
    start = prompt.find(subject)
    if start >= 0:
        try:
            enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, TypeError, KeyError):
            offsets = None
        if offsets is not None and len(offsets) == len(ids):
            end = start + len(subject)
            hit = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
            if hit:
                return hit[0], hit[-1] + 1
    for variant in (subject, " " + subject, subject.strip()):
        sub = tok(variant, add_special_tokens=False)["input_ids"]
        for b in range(len(ids) - len(sub) + 1):
            if sub and ids[b:b + len(sub)] == sub:
                return b, b + len(sub)
    raise InputError(f"Subject {subject!r} is not in the prompt. The prompt's tokens are {tokens}; give a subject "
                     f"that is a contiguous run of them.")


def embedding_std(model: Any, subjects: Sequence[str]) -> float:
    """Standard deviation of the input embeddings of the subjects' tokens (ROME's noise scale unit).

    ROME corrupts with Gaussian noise of 3 x this value, measured over all subjects of the data set.

    >>> noise = 3 * causalscope.embedding_std(m, ["paris", "tomas veldran"])
    """
    m, lm = _lm(model)
    if isinstance(subjects, str):
        subjects = [subjects]
    ids = [lm.tokenize(s)[0] for s in subjects]
    if not ids:
        raise InputError("embedding_std needs at least one subject.")
    emb = cast(Any, m.module).get_input_embeddings()  # a transformers LM (it has a segmented forward)
    with torch.inference_mode():
        vecs = torch.cat([emb(i.to(lm.device)) for i in ids])
    return float(vecs.float().std())


def _window(layer: int, n_layers: int, window: int) -> range:
    """ROME's window of restored layers centred on ``layer``."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


class TraceResult(LabelledArray):
    """A causal trace: ``scores`` (tokens x layers) plus the clean / corrupted scores and the settings.

    >>> r = causalscope.causal_trace("facts-gpt", "tomas veldran was born in the city of", "tomas veldran")
    >>> r.scores.shape, r.high_score, r.low_score, r.answer
    >>> r.plot()
    """

    @property
    def scores(self) -> torch.Tensor:
        return self.values

    @property
    def high_score(self) -> float:
        return float(self.meta["high_score"])

    @property
    def low_score(self) -> float:
        return float(self.meta["low_score"])

    @property
    def tokens(self) -> list[str]:
        return list(self.meta["tokens"])

    @property
    def subject_range(self) -> tuple[int, int]:
        b, e = self.meta["subject_range"]
        return int(b), int(e)

    @property
    def answer(self) -> str:
        return str(self.meta["answer"])

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """ROME-style heatmap: tokens down, layers across; purple / green / red for hidden / mlp / attn."""
        backend = resolve_backend(backend)
        labels = [t + ("*" if self.subject_range[0] <= i < self.subject_range[1] else "")
                  for i, t in enumerate(self.tokens)]
        kind = self.kind
        what = {"hidden": "single restored layer", "mlp": f"center of {self.meta['window']} restored MLP layers",
                "attn": f"center of {self.meta['window']} restored attention layers"}[kind]
        title = {"hidden": "Impact of restoring state after corrupted input",
                 "mlp": "Impact of restoring MLP after corrupted input",
                 "attn": "Impact of restoring attention after corrupted input"}[kind]
        if backend == "plotly":
            import plotly.graph_objects as go

            fig = go.Figure(go.Heatmap(z=self.numpy(), x=list(range(self.shape[1])), y=labels,
                                       colorscale=_COLORS[kind], zmin=self.low_score,
                                       colorbar={"title": f"p({self.answer.strip()})"}))
            fig.update_yaxes(autorange="reversed", type="category")
            fig.update_layout(title=title, xaxis_title=what, height=max(300, 28 * len(labels) + 120))
            return fig
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(5, 0.3 * len(labels) + 1.2))
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        h = ax.pcolor(self.numpy(), cmap=_COLORS[kind], vmin=self.low_score)
        ax.invert_yaxis()
        ax.set_yticks([0.5 + i for i in range(len(labels))])
        ax.set_yticklabels(labels)
        ax.set_xticks([0.5 + i for i in range(self.shape[1])])
        ax.set_xticklabels(list(range(self.shape[1])))
        ax.set_title(title)
        ax.set_xlabel(what)
        cb = fig.colorbar(h, ax=ax)
        cb.ax.set_title(f"p({self.answer.strip()})", fontsize=9)
        return fig


def _noise_draws(m: Model, lm: SegmentedLM, noise: Any, samples: int, n_sub: int, subject: str,
                 seed: int) -> tuple[torch.Tensor, float]:
    d = int(lm.d_model)
    if isinstance(noise, torch.Tensor):
        if noise.ndim != 3 or noise.shape[1:] != (n_sub, d):
            raise InputError(f"An explicit noise tensor must be shaped (samples, subject tokens, d_model) = "
                             f"(samples, {n_sub}, {d}); got {tuple(noise.shape)}.")
        return noise.float(), float("nan")
    if isinstance(noise, str):
        try:
            mult = float(noise.lower().rstrip("x"))
        except ValueError:
            raise InputError(f"noise={noise!r}: use a float (absolute std), a multiple of the subject embedding "
                             f"std such as '3x', or an explicit tensor of draws.") from None
        std = mult * embedding_std(m, [subject])
    else:
        try:
            std = float(noise)
        except (TypeError, ValueError):
            raise InputError(f"noise must be a float, a string like '3x' or a tensor; "
                             f"got {type(noise).__name__}.") from None
    if not std >= 0:
        raise InputError(f"noise std must be >= 0, got {std}.")
    g = torch.Generator().manual_seed(int(seed))
    return std * torch.randn(samples, n_sub, d, generator=g), std


def causal_trace(model: Any, prompt: str, subject: str, *, kind: Kind = "hidden", window: int = 10,
                 samples: int = 10, noise: Any = "3x", seed: int = 0, target: str | int | None = None,
                 replace: bool = False, sever: Literal["mlp", "attn"] | None = None,
                 schedule: Literal["auto", "floor", "batched"] = "auto", progress: bool | None = None) -> TraceResult:
    """ROME causal tracing of one fact, at the compute floor.

    >>> r = causal_trace("facts-gpt", "tomas veldran was born in the city of", "tomas veldran", kind="mlp")
    >>> r.scores[r.subject_range[1] - 1]      # restoring MLPs at the last subject token, per layer
    >>> r.plot()

    Semantics are ROME's ``calculate_hidden_flow``: ``samples`` copies of the prompt get Gaussian noise
    on the subject tokens' input embeddings (added, or with ``replace=True`` substituted); restoring the
    clean value at (token t, layer l) — the block output for ``kind="hidden"``, the MLP / attention
    outputs of the ``window`` layers centred on l for ``"mlp"`` / ``"attn"`` — and scoring the probability
    of the clean prediction (or ``target``) at the last position, averaged over the corrupted copies.
    ``sever="mlp"`` / ``"attn"`` restores a state while keeping that kind's outputs at the restored token
    at their corrupted values in every layer (ROME's ``trace_with_repatch``).

    ``noise``: a float (absolute std), ``"3x"`` (a multiple of the std of this subject's token
    embeddings; ROME uses 3 x the std over all subjects of a data set: pass
    ``3 * embedding_std(model, subjects)``), or a tensor of draws shaped (samples, subject tokens,
    d_model) to match another implementation noise-for-noise. Draws come from a ``torch.Generator``
    seeded with ``seed``.

    Cost: one clean and one corrupted pass (cached), then for every cell only the blocks above the
    restored layer (from the window's first layer for mlp / attn) on the positions from t on, against
    the corrupted run's cached keys and values; cells before the subject equal the corrupted score and
    cost nothing. ``result.meta["token_layers"]`` counts what ran. The model is not changed.

    ``schedule``: ``"floor"`` is the schedule above (fewest token-layers: what a CPU pays for);
    ``"batched"`` runs every cell x sample as a row of a few full batched passes (fewest kernel launches:
    what a GPU pays for); ``"auto"`` picks ``"batched"`` when the model is on an accelerator. Both give
    the naive loop's scores (docs/decisions/0002-segment-schedules.md).
    """
    m, lm = _lm(model)
    if kind not in ("hidden", "mlp", "attn"):
        raise InputError(f"kind must be 'hidden', 'mlp' or 'attn', got {kind!r}.")
    if sever not in (None, "mlp", "attn"):
        raise InputError(f"sever must be None, 'mlp' or 'attn', got {sever!r}.")
    if sever is not None and kind != "hidden":
        raise InputError("sever applies to kind='hidden' (restore a state, freeze a kind of module above it).")
    if schedule not in ("auto", "floor", "batched"):
        raise InputError(f"schedule must be 'auto', 'floor' or 'batched', got {schedule!r}.")
    if not isinstance(window, int) or window < 1:
        raise InputError(f"window must be an int >= 1, got {window!r}.")
    if isinstance(noise, torch.Tensor):
        samples = int(noise.shape[0]) if noise.ndim == 3 else samples
    if not isinstance(samples, int) or samples < 1:
        raise InputError(f"samples must be an int >= 1, got {samples!r}.")
    b, e = subject_range(m, prompt, subject)
    ids = lm.tokenize(prompt).to(lm.device)
    T, L = ids.shape[1], int(m.n_layers or 0)
    tokens = [m.tokenizer.decode([int(i)]) for i in ids[0]]
    draws, std = _noise_draws(m, lm, noise, samples, e - b, subject, seed)

    block_in = [Site(f"layers.{i}", io="input") for i in range(L)]
    kind_sites = [f"layers.{i}.{kind}" for i in range(L)] if kind != "hidden" else []
    sever_sites = [f"layers.{i}.{sever}" for i in range(L)] if sever else []
    clean = m.run(ids, cache=[f"layers.{i}" for i in range(L)] + kind_sites)
    logits = cast(torch.Tensor, clean.output)[0, -1]  # no metric, so the run keeps its output
    answer_id = _target_id(m, target) if target is not None else int(logits.argmax())
    high = float(logits.softmax(-1)[answer_id])
    metric = lambda y: y[:, -1].float().softmax(-1)[:, answer_id]  # noqa: E731

    corrupt_edit = {Site("embed", positions=range(b, e)): Noise(draws=draws, replace=replace)}
    corrupted = m.run(ids.expand(samples, -1), corrupt_edit, metric=metric,
                      cache=[*block_in, f"layers.{L - 1}", *sever_sites, *(kind_sites if kind == "mlp" else [])],
                      keep_kv=True)
    low = float(cast(torch.Tensor, corrupted.metric).mean())  # a metric was requested

    if schedule == "auto":
        schedule = "floor" if ids.device.type == "cpu" else "batched"
    if schedule == "batched":
        scores, token_layers = batched_scores(m, ids, kind, window, samples, b, corrupt_edit, clean, corrupted,
                                              sever, metric, low, progress)
    else:
        scores = torch.full((T, L), low)
        token_layers = 0
        entries: dict[int, torch.Tensor] = {}
        show = progress if progress is not None else (T - b) * L > 200
        for t in tqdm(range(b, T), desc=f"causal trace ({kind})", unit="token", disable=not show):
            if kind == "hidden":
                per_layer, tl = _states_at(m, lm, t, sever, samples, clean, corrupted, block_in, metric)
            else:
                per_layer, tl = _windows_at(m, lm, t, kind, window, samples, clean, corrupted, block_in, metric,
                                            entries, b)
            scores[t] = torch.tensor(per_layer)
            token_layers += tl
    meta = {"method": "causal_trace", "model": m.name, "prompt": prompt, "subject": subject, "kind": kind,
            "window": window, "samples": samples, "noise_std": std, "noise": "explicit" if std != std else noise,
            "seed": seed, "replace": replace, "sever": sever, "schedule": schedule, "high_score": high,
            "low_score": low,
            "answer": m.tokenizer.decode([answer_id]), "answer_id": answer_id, "tokens": tokens,
            "subject_range": [b, e], "token_layers": token_layers,
            "title": f"causal trace ({kind}) of {prompt!r} -> {m.tokenizer.decode([answer_id])!r}"}
    return TraceResult(scores, ["token", "layer"], {"token": list(range(T)), "layer": list(range(L))}, meta,
                       name="p(answer)")


def _states_at(m: Model, lm: SegmentedLM, t: int, sever: str | None, samples: int, clean: Any, corrupted: Any,
               block_in: list[Site], metric: Any) -> tuple[list[float], int]:
    """Scores of restoring the block output at token ``t`` in every layer: a staircase over blocks.

    Cell l's state enters at block l+1 (the corrupted block input with position t set to the clean
    block-l output); block j then runs once on the stacked states of all cells l < j, on positions
    t..T-1 only, against the corrupted run's cached keys / values (:func:`block_staircase`). The last
    block runs only what the last position needs, and the restored last layer needs the head alone.
    """
    L, T = lm.n_layers, int(corrupted.cache[block_in[0].name].shape[1])
    frozen = [Patch(corrupted, row=i) for i in range(samples)]  # sample i's corrupted value, in every copy

    def carry(j: int) -> list[dict]:  # the rows of every cell's group at block j
        if sever and not (j == L - 1 and t < T - 1):  # at the last layer only the last position is read
            site = Site(f"layers.{j}.{sever}", positions=t)
            return [{site: frozen[i]} for i in range(samples)]
        return [{}] * samples

    def enter(j: int) -> list[tuple[torch.Tensor, list[dict]]]:  # cell j-1 enters at block j
        if j == 0:
            return []
        h = corrupted.cache[block_in[j].name][:, t:].clone()
        h[:, 0] = clean.cache[f"layers.{j - 1}"][0, t]
        return [(h, carry(j))]

    run, token_layers = block_staircase(m, lm, corrupted.kv, t, samples, enter, carry, metric, last_only=True)
    scores = [0.0] * L
    if run is not None:
        scores[: L - 1] = cast(torch.Tensor, run.metric).view(L - 1, samples).mean(1).tolist()  # metric requested
    # restoring the last block's output changes the output only at its own position: run the head alone
    scores[L - 1] = float(metric(_head(lm, clean.cache[f"layers.{L - 1}"][:, -1:]))[0]) if t == T - 1 else \
        float(corrupted.metric.mean())
    return scores, token_layers


def _windows_at(m: Model, lm: SegmentedLM, t: int, kind: str, window: int, samples: int, clean: Any, corrupted: Any,
                block_in: list[Site], metric: Any, entries: dict[int, torch.Tensor], b: int) -> tuple[list[float], int]:
    """Scores of every window cell at token ``t`` with shared prefixes computed once.

    Cells whose restore sets agree on blocks ``0..j`` have identical states after block ``j``, so they
    form one group until their sets first differ (a prefix tree over layers). Groups not yet restored
    are the cached corrupted run and cost nothing. Every block call batches all groups that need it.

    A group's first restored block j has the corrupted input, and inside one block restoring the module
    output at position t changes that block's output at position t only (attention reads keys / values
    of the block input). So one pass of block j over the corrupted input, restoring every position
    from the subject on at once, gives every token's entry state (``entries[j]``, shared by all t).
    """
    L, T = lm.n_layers, int(corrupted.cache[block_in[0].name].shape[1])
    # restoring the last layer's module at t < T-1 changes only position t of the output: no effect
    top = L if t == T - 1 else L - 1
    wins = [range(w.start, min(w.stop, top)) for w in (_window(l, L, window) for l in range(L))]
    patch = Patch(clean)
    # the MLP output is the last term added to a block's output (GPT-2, NeoX, Llama), so restoring it at t
    # changes the block output at t by exactly (clean - own) MLP output: a group splitting into restored and
    # unrestored cells at block j needs one run of block j, not two
    derive = kind == "mlp"
    groups: list[tuple[torch.Tensor | None, list[int]]] = [(None, list(range(L)))]
    token_layers = 0
    for j in range(L):
        nxt: list[tuple[torch.Tensor | None, list[int]]] = []
        jobs: list[tuple[torch.Tensor, bool, list[int], list[int] | None]] = []
        for h, members in groups:
            on = [l for l in members if j in wins[l]]
            off = [l for l in members if j not in wins[l]]
            if h is None:
                if off:
                    nxt.append((None, off))
                if on:  # entering: the corrupted block output with position t from entries[j]
                    if j not in entries:
                        entries[j], tl = _entry(m, lm, j, kind, b, samples, clean, corrupted, block_in)
                        token_layers += tl
                    out = (corrupted.cache[block_in[j + 1].name] if j + 1 < L else
                           corrupted.cache[f"layers.{L - 1}"])[:, t:].clone()
                    out[:, 0] = entries[j][:, t - b]
                    nxt.append((out, on))
            elif on and off and derive:
                jobs.append((h, False, off, on))
            else:
                if off:
                    jobs.append((h, False, off, None))
                if on:
                    jobs.append((h, True, on, None))
        if jobs:
            site = Site(f"layers.{j}.{kind}", positions=t)
            rows = [{site: patch} if restore else {} for _, restore, _, _ in jobs for _ in range(samples)]
            split = any(d is not None for *_, d in jobs)
            whole = Site(f"layers.{j}.{kind}")  # cached over the segment's positions; position t is index 0
            run, tl = block_step(m, lm, corrupted.kv, [h for h, *_ in jobs], j, t, rows, last_only=j == L - 1,
                                 cache=[whole] if split else [])
            token_layers += tl
            own = run.cache[whole.name][:, 0].split(samples) if split else [None] * len(jobs)
            outs = cast(torch.Tensor, run.output).split(samples)  # no metric, so the run keeps its output
            for (_, _, members, derived), out, mlp_t in zip(jobs, outs, own):
                nxt.append((out, members))
                if derived is not None:
                    restored = out.clone()
                    restored[:, 0] += clean.cache[f"layers.{j}.{kind}"][0, t] - mlp_t
                    nxt.append((restored, derived))
        groups = nxt
    scores = [float(corrupted.metric.mean())] * L  # cells never restored (an empty window) stay corrupted
    live = [(h, members) for h, members in groups if h is not None]
    if not live:
        return scores, token_layers
    probs = metric(_head(lm, torch.cat([h[:, -1:] for h, _ in live]))).view(len(live), samples).mean(1)
    for (_, members), p in zip(live, probs.tolist()):
        for l in members:
            scores[l] = p
    return scores, token_layers


def _entry(m: Model, lm: SegmentedLM, j: int, kind: str, b: int, samples: int, clean: Any, corrupted: Any,
           block_in: list[Site]) -> tuple[torch.Tensor, int]:
    """Block j's output on the corrupted input with its ``kind`` output restored at every position >= b.

    For mlp no block runs: the MLP output is the last term of the block output, so the restored output is
    the corrupted one plus (clean - corrupted) MLP output.
    """
    T = int(corrupted.cache[block_in[0].name].shape[1])
    L = len(block_in)
    if kind == "mlp":
        out = corrupted.cache[block_in[j + 1].name] if j + 1 < L else corrupted.cache[f"layers.{L - 1}"]
        delta = clean.cache[f"layers.{j}.mlp"][:, b:] - corrupted.cache[f"layers.{j}.mlp"][:, b:]
        return out[:, b:] + delta, 0
    seg = lm.segment(corrupted.cache[block_in[j].name][:, b:], layer=j, stop=j + 1, pos=b, past=corrupted.kv,
                     head=False)
    run = m.run(seg, {Site(f"layers.{j}.{kind}", positions=range(b, T)): Patch(clean)})
    return cast(torch.Tensor, run.output), int(run.meta["token_layers"] or 0)  # no metric: the output is kept


def _head(lm: SegmentedLM, h: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return lm.forward_from(h, layer=lm.n_layers, pos=0)


def _target_id(m: Model, target: str | int) -> int:
    if isinstance(target, int):
        return target
    ids = m.tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        ids = m.tokenizer(" " + target, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(f"target {target!r} is not a single token (tokens: {ids}); give one token or its id.")
    return int(ids[0])
