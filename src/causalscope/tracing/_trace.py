"""ROME causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT") at the compute floor."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, cast

import torch

from ..core import Model, Noise, SegmentedLM, Site, segmented
from ..errors import InputError, check_flag, check_int, check_seed
from ..loading import load
from ..results import LabelledArray, resolve_backend
from ._batched import batched_scores
from ._floor import FactRows, floor_scores

Kind = Literal["hidden", "mlp", "attn"]
_COLORS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}


def _lm(model: Any) -> tuple[Model, SegmentedLM]:
    """The model and its segmented forward; causal tracing needs both and a tokenizer."""
    m = load(model)
    lm = segmented(m.adapter)
    if lm is None or m.tokenizer is None:
        raise InputError(f"causal tracing needs a Hugging Face causal LM of a family with canonical sites (GPT-2, "
                         f"GPT-Neo, GPT-J, NeoX, OPT, BLOOM, Falcon, Phi, Llama, Mistral, Mixtral, Qwen, Gemma, OLMo, "
                         f"StableLM: docs/models.md) and a tokenizer; got a {m.adapter.kind} model"
                         f"{'' if m.tokenizer else ' without a tokenizer'}.")
    return m, lm


def subject_range(model: Any, prompt: str, subject: str) -> tuple[int, int]:
    """Token range ``[b, e)`` of ``subject`` in ``prompt`` (the first occurrence).

    >>> subject_range(m, "the capital of france is", "france")
    (3, 4)
    """
    m, lm = _lm(model)
    if not isinstance(prompt, str):
        raise InputError(f"The prompt must be a string (one prompt: the text whose next token states the fact); "
                         f"got {type(prompt).__name__}. For many facts use trace_average.")
    if not prompt.strip():
        raise InputError("The prompt is empty: give the text whose next token states the fact.")
    if not isinstance(subject, str):
        raise InputError(f"The subject must be a string (words of the prompt to corrupt); got "
                         f"{type(subject).__name__} {subject!r:.40}.")
    if not subject.strip():
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

    >>> noise = 3 * causalscope.embedding_std(m, ["Thumtre Lesdurn", "Lunmark"])
    """
    m, lm = _lm(model)
    if isinstance(subjects, str):
        subjects = [subjects]
    if not isinstance(subjects, (list, tuple)) or not all(isinstance(s, str) for s in subjects):
        raise InputError(f"subjects must be a list of strings (the subjects whose token embeddings set the noise "
                         f"scale); got {subjects!r:.80}.")
    ids = [lm.tokenize(s)[0] for s in subjects]
    if not ids:
        raise InputError("embedding_std needs at least one subject.")
    emb = cast(Any, m.module).get_input_embeddings()  # a transformers LM (it has a segmented forward)
    with torch.inference_mode():
        vecs = torch.cat([emb(i.to(lm.device)) for i in ids])
    return float(vecs.float().std())


class TraceResult(LabelledArray):
    """A causal trace: ``scores`` (tokens x layers) plus the clean / corrupted scores and the settings.

    >>> r = causalscope.causal_trace("facts-gpt", "Thumtre Lesdurn was born in the city of", "Thumtre Lesdurn")
    >>> r.scores.shape, r.high_score, r.low_score, r.answer
    >>> r.plot()

    Dims ``("position", "layer")``; the ``token`` auxiliary coordinate holds the prompt's tokens (a column of
    ``to_frame()``).
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

            prob = f"p({self.answer.strip()})"
            fig = go.Figure(go.Heatmap(z=self.numpy(), x=list(range(self.shape[1])), y=list(range(len(labels))),
                                       colorscale=_COLORS[kind], zmin=self.low_score, colorbar={"title": prob},
                                       customdata=[[t] * self.shape[1] for t in labels],
                                       hovertemplate=f"%{{customdata}}, layer %{{x}}<br>{prob} = %{{z:.3f}}"
                                                     f"<extra></extra>"))
            # rows at 0, 1, ... (a token repeated in the prompt keeps its own row); layers as whole numbers
            fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=list(range(len(labels))),
                             ticktext=labels)
            fig.update_xaxes(tickmode="linear", tick0=0, dtick=1)
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


def check_noise_std(std: float, replace: bool, what: str) -> None:
    """A noise std must be finite and >= 0; 0 corrupts nothing (unless the subject is replaced by the noise), so the
    trace would be flat: refused, naming the fix (a subject whose token embeddings are all equal has std 0).

    >>> check_noise_std(0.3, False, "noise")
    """
    if not (math.isfinite(std) and std >= 0):
        raise InputError(f"noise std must be a finite number >= 0, got {std} ({what}).")
    if std == 0 and not replace:
        raise InputError(f"The noise std is 0 ({what}): the corrupted run would equal the clean one and the trace "
                         f"would be flat. A subject whose token embeddings have zero variance gives this with "
                         f"noise='3x': pass an absolute noise (e.g. noise=0.1) or 3 * cs.embedding_std(model, "
                         f"subjects) over many subjects.")


def _noise_draws(m: Model, lm: SegmentedLM, noise: Any, samples: int, n_sub: int, subject: str,
                 seed: int, replace: bool = False) -> tuple[torch.Tensor, float]:
    d = int(lm.d_model)
    if isinstance(noise, torch.Tensor):
        if noise.ndim != 3 or noise.shape[1:] != (n_sub, d):
            raise InputError(f"An explicit noise tensor must be shaped (samples, subject tokens, d_model) = "
                             f"(samples, {n_sub}, {d}); got {tuple(noise.shape)}.")
        if not torch.isfinite(noise).all():
            raise InputError("The explicit noise tensor holds NaN or inf values; draws must be finite.")
        return noise.float(), float("nan")
    if isinstance(noise, str):
        try:
            mult = float(noise.lower().rstrip("x"))
        except ValueError:
            raise InputError(f"noise={noise!r}: use a float (absolute std), a multiple of the subject embedding "
                             f"std such as '3x', or an explicit tensor of draws.") from None
        std = mult * embedding_std(m, [subject])
        check_noise_std(std, replace, f"{noise!r} of the subject's embedding std")
    else:
        if isinstance(noise, bool):
            raise InputError(f"noise must be a float, a string like '3x' or a tensor; got {noise!r}.")
        try:
            std = float(noise)
        except (TypeError, ValueError):
            raise InputError(f"noise must be a float, a string like '3x' or a tensor; "
                             f"got {type(noise).__name__}.") from None
        check_noise_std(std, replace, "the noise std given")
    g = torch.Generator().manual_seed(int(seed))
    return std * torch.randn(samples, n_sub, d, generator=g), std


def check_settings(kind: str, window: Any, samples: Any, noise: Any) -> int:
    """Check a trace's kind, window and samples; returns the samples (an explicit noise tensor's first axis).

    >>> check_settings("mlp", 10, 10, "3x")
    10
    """
    if kind not in ("hidden", "mlp", "attn"):
        raise InputError(f"kind must be 'hidden', 'mlp' or 'attn', got {kind!r}.")
    check_int(window, "window", low=1)
    if isinstance(noise, torch.Tensor):
        samples = int(noise.shape[0]) if noise.ndim == 3 else samples
    return check_int(samples, "samples", low=1)


def causal_trace(model: Any, prompt: str, subject: str, *, kind: Kind = "hidden", window: int = 10,
                 samples: int = 10, noise: Any = "3x", seed: int = 0, target: str | int | None = None,
                 replace: bool = False, sever: Literal["mlp", "attn"] | None = None,
                 schedule: Literal["auto", "floor", "batched"] = "auto", progress: bool | None = None) -> TraceResult:
    """ROME causal tracing of one fact, at the compute floor.

    >>> r = causal_trace("facts-gpt", "Thumtre Lesdurn was born in the city of", "Thumtre Lesdurn", kind="mlp")
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
    samples = check_settings(kind, window, samples, noise)
    seed = check_seed(seed)
    check_flag(replace, "replace")
    if progress is not None:
        check_flag(progress, "progress")
    target_id = _target_id(m, target) if target is not None else None
    b, e = subject_range(m, prompt, subject)
    ids = lm.tokenize(prompt).to(lm.device)
    m.adapter.prepare(ids)  # a run's input checks (no more tokens than the model has positions) before any pass
    L = int(m.n_layers or 0)
    tokens = [m.tokenizer.decode([int(i)]) for i in ids[0]]
    draws, std = _noise_draws(m, lm, noise, samples, e - b, subject, seed, replace)

    block_in = [Site(f"layers.{i}", io="input") for i in range(L)]
    kind_sites = [f"layers.{i}.{kind}" for i in range(L)] if kind != "hidden" else []
    sever_sites = [f"layers.{i}.{sever}" for i in range(L)] if sever else []
    clean = m.run(ids, cache=[f"layers.{i}" for i in range(L)] + kind_sites)
    logits = cast(torch.Tensor, clean.output)[0, -1]  # no metric, so the run keeps its output
    answer_id = target_id if target_id is not None else int(logits.argmax())
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
        rows = FactRows([answer_id], samples)
        fact_scores, token_layers = floor_scores(m, lm, [kind], window, rows, b, clean, corrupted, sever,
                                                 progress)[kind]
        scores = fact_scores[0]
    settings = {"window": window, "samples": samples, "noise_std": std, "noise": "explicit" if std != std else noise,
                "seed": seed, "replace": replace, "sever": sever, "schedule": schedule,
                "target": target if isinstance(target, (int, str)) or target is None else repr(target)}
    return trace_result(m, scores, prompt, subject, kind, settings, high, low, answer_id, tokens, (b, e), token_layers)


def trace_result(m: Model, scores: torch.Tensor, prompt: str, subject: str, kind: str, settings: dict[str, Any],
                 high: float, low: float, answer_id: int, tokens: list[str], span: tuple[int, int],
                 token_layers: int) -> TraceResult:
    """A :class:`TraceResult` of ``scores`` (tokens x layers) with causal_trace's meta; ``settings`` holds the
    window, samples, noise_std, noise, seed, replace, sever and schedule (and anything else to record).

    >>> r = trace_result(m, scores, prompt, subject, "mlp", settings, 0.9, 0.1, 17, tokens, (1, 3), 1200)
    """
    T, L = scores.shape
    answer = m.tokenizer.decode([answer_id])
    meta = {"method": "causal_trace", "model": m.name, "prompt": prompt, "subject": subject, "kind": kind, **settings,
            "high_score": high, "low_score": low, "answer": answer, "answer_id": answer_id, "tokens": tokens,
            "subject_range": list(span), "token_layers": token_layers,
            "title": f"causal trace ({kind}) of {prompt!r} -> {answer!r}"}
    return TraceResult(scores, ["position", "layer"], {"position": list(range(T)), "layer": list(range(L))}, meta,
                       name="p(answer)").with_tokens(tokens)


def _target_id(m: Model, target: str | int) -> int:
    """The token id of a trace's ``target``: an id in the vocabulary, or a word that is one known token."""
    vocab = getattr(getattr(m.adapter, "config", None), "vocab_size", None)
    if isinstance(target, int) and not isinstance(target, bool):
        if target < 0 or (isinstance(vocab, int) and target >= vocab):
            raise InputError(f"target {target} is not a token id of {m.name} "
                             f"(valid: 0 .. {vocab - 1 if vocab else '?'}).")
        return target
    if not isinstance(target, str) or not target.strip():
        raise InputError(f"target must be a token (a non-empty string) or a token id (an int); got "
                         f"{type(target).__name__} {target!r}.")
    ids = m.tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        ids = m.tokenizer(" " + target, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(f"target {target!r} is not a single token (tokens: {ids}); give one token or its id.")
    unk = getattr(m.tokenizer, "unk_token_id", None)
    if unk is not None and int(ids[0]) == unk and target.strip() != str(getattr(m.tokenizer, "unk_token", "")):
        raise InputError(f"target {target!r} is not in the tokenizer's vocabulary (it would be the unknown token "
                         f"{m.tokenizer.unk_token!r}, id {unk}); give a word the model knows, or its token id.")
    return int(ids[0])
