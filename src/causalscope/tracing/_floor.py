"""The compute-floor schedule of causal tracing, for one fact or for several facts of one shape at once.

>>> rows = FactRows([answer_id], samples=10)               # one fact: causal_trace's floor schedule
>>> scores, token_layers = floor_scores(m, lm, ["hidden"], 10, rows, b, clean, corrupted, None, False)["hidden"]

Facts whose prompts have the same number of tokens and the subject at the same tokens trace on the same
schedule, so they share every block call: their corrupted copies are the rows of one run (fact f's sample i
is row ``f * samples + i``), each block call runs the stacked rows of all of them, and every restored value
is read from the fact's own clean row (``trace_average`` does this; scores per fact are those of tracing it
alone, up to float rounding of the larger batches).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch

from ..core import Model, Patch, SegmentedLM, Site, block_step, tqdm

#: on a CPU, block calls run at most this many tokens (rows x positions) at once: the activations of larger
#: calls fall out of cache (200 facts of facts-gpt: 4,096-token calls took 0.87x the time of unchunked ones)
CPU_BLOCK_TOKENS = 4096


class _AnswerProb:
    """Metric: the probability of each row's fact's answer at the last position (rows in groups of ``size``)."""

    takes_input_index = True  # the engine passes each row's base input

    def __init__(self, answer: torch.Tensor) -> None:
        self.answer = answer  # (size,) the answer id of every row of one group

    def __call__(self, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ans = self.answer[index.cpu() % len(self.answer)].to(y.device)
        return y[:, -1].float().softmax(-1).gather(1, ans[:, None])[:, 0]


class FactRows:
    """``n_facts`` facts x ``samples`` corrupted copies as rows of one run: fact f's sample i is row f*samples+i.

    >>> rows = FactRows([17, 4], samples=3)
    >>> rows.fact.tolist(), rows.size
    ([0, 0, 0, 1, 1, 1], 6)

    ``fact[r]`` is row r's fact (its row in the clean run); ``metric`` scores each row's own answer at the
    last position; :meth:`per_fact` averages a value per row over each fact's samples.
    """

    def __init__(self, answers: Sequence[int], samples: int) -> None:
        self.n_facts, self.samples = len(answers), int(samples)
        self.size = self.n_facts * self.samples
        self.fact = torch.arange(self.n_facts).repeat_interleave(self.samples)
        self.metric = _AnswerProb(torch.tensor([int(a) for a in answers], dtype=torch.long)[self.fact])
        self._on: dict[torch.device, torch.Tensor] = {}

    def fact_on(self, device: torch.device) -> torch.Tensor:
        """``fact`` on ``device`` (to index the clean run's cached values there)."""
        if device not in self._on:
            self._on[device] = self.fact.to(device)
        return self._on[device]

    def per_fact(self, values: Any) -> torch.Tensor:
        """Values per row of stacked groups of rows (groups x size) -> their mean per group and fact (groups, facts)."""
        v = cast(torch.Tensor, values)
        return v.reshape(-1, self.n_facts, self.samples).mean(2).float().cpu()

    def head_scores(self, lm: SegmentedLM, h: torch.Tensor) -> torch.Tensor:
        """Each fact's answer probability from last-position states ``h`` (groups x size, 1, d_model), per group
        and fact."""
        y = _head(lm, h)
        return self.per_fact(self.metric(y, torch.arange(y.shape[0])))


@dataclass(eq=False)
class FactPatch(Patch):
    """``Patch(clean)`` for stacked groups of :class:`FactRows`: row i of each group reads clean row ``fact[i]``.

    >>> FactPatch(clean, fact=rows.fact)
    """

    fact: Any = None

    def key(self) -> tuple:
        return ("FactPatch", id(self.source), id(self.fact))

    def source_rows(self, rows: torch.Tensor, input_index: torch.Tensor, source_size: int,
                    base_size: int) -> torch.Tensor:
        fact = cast(torch.Tensor, self.fact)
        return fact[input_index[rows] % len(fact)]


def floor_scores(m: Model, lm: SegmentedLM, kinds: Sequence[str], window: int, rows: FactRows, b: int, clean: Any,
                 corrupted: Any, sever: str | None, progress: bool | None) -> dict[str, tuple[torch.Tensor, int]]:
    """Per kind: scores (facts, T, L) of every cell of the facts of ``rows``, and the token-layers it ran.

    ``clean``: a run of one row per fact caching every block's output (and the kinds' outputs);
    ``corrupted``: the run of ``rows`` (metric ``rows.metric``) caching every block's input, the last block's
    output (and, for mlp, the MLP outputs), with its keys / values. Cells before token ``b`` keep the
    corrupted score. At each token the kinds' cells run together: every block runs once, on the stacked
    states of all of them (each kind's token-layers count its own rows).
    """
    L = int(m.n_layers or 0)
    block_in = [Site(f"layers.{i}", io="input") for i in range(L)]
    T = int(corrupted.cache[block_in[0].name].shape[1])
    low = rows.per_fact(corrupted.metric)[0]
    scores = {k: low[:, None, None].repeat(1, T, L) for k in kinds}
    token_layers = dict.fromkeys(kinds, 0)
    entries: dict[str, dict[int, torch.Tensor]] = {k: {} for k in kinds}
    show = progress if progress is not None else (T - b) * L * len(kinds) > 200
    for t in tqdm(range(b, T), desc=f"causal trace ({', '.join(kinds)})", unit="token", disable=not show):
        chunk = max(1, CPU_BLOCK_TOKENS // (T - t)) if lm.device.type == "cpu" else None
        streams: dict[str, _Hidden | _Windows] = {
            k: _Hidden(lm, t, sever, rows, clean, corrupted, block_in) if k == "hidden" else
            _Windows(m, lm, t, k, window, rows, clean, corrupted, block_in, entries[k], b) for k in kinds}
        for j in range(L):
            jobs = {k: s.jobs(j) for k, s in streams.items()}
            states = [h for js in jobs.values() for h, _ in js]
            if not states:
                continue
            own_site = Site(f"layers.{j}.mlp")  # cached over the segment's positions; position t is index 0
            split = any(s.needs_own for s in streams.values())
            edits = [r for js in jobs.values() for _, rs in js for r in rs]
            run, _ = block_step(m, lm, corrupted.kv, states, j, t, edits, last_only=j == L - 1,
                                cache=[own_site] if split else [], chunk_size=chunk)
            outs = list(cast(torch.Tensor, run.output).split(rows.size))  # no metric: the run keeps its output
            own = list(run.cache[own_site.name][:, 0].split(rows.size)) if split else [None] * len(outs)
            for k, s in streams.items():
                n = len(jobs[k])
                s.take(j, outs[:n], own[:n])
                del outs[:n], own[:n]
        finals = {k: s.finals() for k, s in streams.items()}
        stacked = [h for hs in finals.values() for h in hs]
        probs = rows.head_scores(lm, torch.cat(stacked)) if stacked else torch.zeros(0, rows.n_facts)
        for k, s in streams.items():
            n = len(finals[k])
            scores[k][:, t] = s.scores(probs[:n], low).T
            probs = probs[n:]
            token_layers[k] += s.token_layers
    return {k: (scores[k], token_layers[k]) for k in kinds}


def _window(layer: int, n_layers: int, window: int) -> range:
    """ROME's window of restored layers centred on ``layer``."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


class _Hidden:
    """The cells restoring the block output at token ``t`` in every layer: a staircase over blocks.

    Cell l's state enters at block l+1 (the corrupted block input with position t set to the clean
    block-l output); block j then runs once on the stacked states of all cells l < j, on positions
    t..T-1 only, against the corrupted run's cached keys / values (as :func:`block_staircase` does). The
    last block runs only what the last position needs, and the restored last layer needs the head alone.

    >>> s = _Hidden(lm, t, None, rows, clean, corrupted, block_in); s.jobs(1)   # [(cell 0's state, its rows)]
    """

    needs_own = False

    def __init__(self, lm: SegmentedLM, t: int, sever: str | None, rows: FactRows, clean: Any, corrupted: Any,
                 block_in: list[Site]) -> None:
        self.lm = lm
        self.t, self.sever, self.rows, self.clean, self.corrupted, self.block_in = \
            t, sever, rows, clean, corrupted, block_in
        self.L, self.T = len(block_in), int(corrupted.cache[block_in[0].name].shape[1])
        # with sever, row i keeps its own corrupted value of that kind's output at t, in every cell
        self.frozen = [Patch(corrupted, row=i) for i in range(rows.size)] if sever else []
        self.states: list[torch.Tensor] = []
        self.token_layers = 0

    def _carry(self, j: int) -> list[dict]:  # the rows of every cell's group at block j
        if self.sever and not (j == self.L - 1 and self.t < self.T - 1):  # the last layer: only the last position
            site = Site(f"layers.{j}.{self.sever}", positions=self.t)
            return [{site: f} for f in self.frozen]
        return [{}] * self.rows.size

    def jobs(self, j: int) -> list[tuple[torch.Tensor, list[dict]]]:
        """The states block ``j`` runs (the running cells, then cell j-1 entering) with their rows of edits."""
        if j > 0:  # cell j-1 enters at block j
            h = self.corrupted.cache[self.block_in[j].name][:, self.t:].clone()
            h[:, 0] = self.clean.cache[f"layers.{j - 1}"][self.rows.fact_on(h.device), self.t]
            self.states.append(h)
        if not self.states:
            return []
        keep = self._carry(j)
        self.token_layers += sum(int(h.shape[0] * h.shape[1]) for h in self.states)
        return [(h, keep) for h in self.states]

    def take(self, j: int, outs: list[torch.Tensor], own: list[Any]) -> None:
        self.states = outs

    def finals(self) -> list[torch.Tensor]:
        return [h[:, -1:] for h in self.states]

    def scores(self, probs: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """(L, facts) from the final states' scores (cells 0..L-2, in the order they entered)."""
        L, rows = self.L, self.rows
        scores = low.repeat(L, 1)
        scores[: len(probs)] = probs
        if self.t == self.T - 1:  # restoring the last block's output changes the output at its own position only
            y = _head(self.lm, self.clean.cache[f"layers.{L - 1}"][:, -1:])  # one clean row per fact
            scores[L - 1] = rows.metric(y, torch.arange(rows.n_facts) * rows.samples).float().cpu()
        return scores


class _Windows:
    """The cells restoring ``kind``'s outputs in the window of layers around each layer, at token ``t``, with
    shared prefixes computed once.

    Cells whose restore sets agree on blocks ``0..j`` have identical states after block ``j``, so they
    form one group until their sets first differ (a prefix tree over layers). Groups not yet restored
    are the cached corrupted run and cost nothing.

    A group's first restored block j has the corrupted input, and inside one block restoring the module
    output at position t changes that block's output at position t only (attention reads keys / values
    of the block input). So one pass of block j over the corrupted input, restoring every position
    from the subject on at once, gives every token's entry state (``entries[j]``, shared by all t).

    >>> s = _Windows(m, lm, t, "mlp", 10, rows, clean, corrupted, block_in, entries, b); s.jobs(0)
    """

    def __init__(self, m: Model, lm: SegmentedLM, t: int, kind: str, window: int, rows: FactRows, clean: Any,
                 corrupted: Any, block_in: list[Site], entries: dict[int, torch.Tensor], b: int) -> None:
        self.m, self.lm, self.t, self.kind, self.rows, self.clean, self.corrupted, self.block_in = \
            m, lm, t, kind, rows, clean, corrupted, block_in
        self.entries, self.b = entries, b
        L, T = len(block_in), int(corrupted.cache[block_in[0].name].shape[1])
        self.L = L
        # restoring the last layer's module at t < T-1 changes only position t of the output: no effect
        top = L if t == T - 1 else L - 1
        self.wins = [range(w.start, min(w.stop, top)) for w in (_window(l, L, window) for l in range(L))]
        self.patch = FactPatch(clean, fact=rows.fact)
        # the MLP output is the last term added to a block's output (GPT-2, NeoX, Llama), so restoring it at t
        # changes the block output at t by exactly (clean - own) MLP output: a group splitting into restored and
        # unrestored cells at block j needs one run of block j, not two
        self.derive = kind == "mlp"
        self.groups: list[tuple[torch.Tensor | None, list[int]]] = [(None, list(range(L)))]
        self.pending: list[tuple[bool, list[int], list[int] | None]] = []
        self.nxt: list[tuple[torch.Tensor | None, list[int]]] = []
        self.needs_own = False
        self.token_layers = 0

    def jobs(self, j: int) -> list[tuple[torch.Tensor, list[dict]]]:
        """The groups block ``j`` runs, with their rows (the restore at t where their cells restore block j)."""
        t, P = self.t, self.rows.size
        self.nxt, self.pending = [], []
        jobs: list[tuple[torch.Tensor, list[dict]]] = []
        site = Site(f"layers.{j}.{self.kind}", positions=t)
        restore: list[dict] = [{site: self.patch}] * P
        keep: list[dict] = [{}] * P
        for h, members in self.groups:
            on = [l for l in members if j in self.wins[l]]
            off = [l for l in members if j not in self.wins[l]]
            if h is None:
                if off:
                    self.nxt.append((None, off))
                if on:  # entering: the corrupted block output with position t from entries[j]
                    if j not in self.entries:
                        self.entries[j], tl = _entry(self.m, self.lm, j, self.kind, self.b, self.rows, self.clean,
                                                     self.corrupted, self.block_in)
                        self.token_layers += tl
                    out = (self.corrupted.cache[self.block_in[j + 1].name] if j + 1 < self.L else
                           self.corrupted.cache[f"layers.{self.L - 1}"])[:, t:].clone()
                    out[:, 0] = self.entries[j][:, t - self.b]
                    self.nxt.append((out, on))
            elif on and off and self.derive:
                self.pending.append((False, off, on))
                jobs.append((h, keep))
            else:
                if off:
                    self.pending.append((False, off, None))
                    jobs.append((h, keep))
                if on:
                    self.pending.append((True, on, None))
                    jobs.append((h, restore))
        self.needs_own = any(d is not None for *_, d in self.pending)
        self.token_layers += sum(int(h.shape[0] * h.shape[1]) for h, _ in jobs)
        if not jobs:
            self.groups = self.nxt
        return jobs

    def take(self, j: int, outs: list[torch.Tensor], own: list[Any]) -> None:
        for (_, members, derived), out, mlp_t in zip(self.pending, outs, own):
            self.nxt.append((out, members))
            if derived is not None:
                restored = out.clone()
                clean_t = self.clean.cache[f"layers.{j}.{self.kind}"][:, self.t]
                restored[:, 0] += clean_t[self.rows.fact_on(clean_t.device)] - mlp_t
                self.nxt.append((restored, derived))
        self.groups = self.nxt

    def finals(self) -> list[torch.Tensor]:
        return [h[:, -1:] for h, _ in self.groups if h is not None]

    def scores(self, probs: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """(L, facts): each live group's score for its cells; cells never restored (an empty window) stay low."""
        scores = low.repeat(self.L, 1)
        for (_, members), p in zip([g for g in self.groups if g[0] is not None], probs):
            for l in members:
                scores[l] = p
        return scores


def _entry(m: Model, lm: SegmentedLM, j: int, kind: str, b: int, rows: FactRows, clean: Any, corrupted: Any,
           block_in: list[Site]) -> tuple[torch.Tensor, int]:
    """Block j's output on the corrupted input with its ``kind`` output restored at every position >= b.

    For mlp no block runs: the MLP output is the last term of the block output, so the restored output is
    the corrupted one plus (clean - corrupted) MLP output.
    """
    T = int(corrupted.cache[block_in[0].name].shape[1])
    L = len(block_in)
    if kind == "mlp":
        out = corrupted.cache[block_in[j + 1].name] if j + 1 < L else corrupted.cache[f"layers.{L - 1}"]
        clean_mlp = clean.cache[f"layers.{j}.mlp"][:, b:]
        delta = clean_mlp[rows.fact_on(clean_mlp.device)] - corrupted.cache[f"layers.{j}.mlp"][:, b:]
        return out[:, b:] + delta, 0
    seg = lm.segment(corrupted.cache[block_in[j].name][:, b:], layer=j, stop=j + 1, pos=b, past=corrupted.kv,
                     head=False)
    run = m.run(seg, {Site(f"layers.{j}.{kind}", positions=range(b, T)): FactPatch(clean, fact=rows.fact)})
    return cast(torch.Tensor, run.output), int(run.meta["token_layers"] or 0)  # no metric: the output is kept


def _head(lm: SegmentedLM, h: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return lm.forward_from(h, layer=lm.n_layers, pos=0)
