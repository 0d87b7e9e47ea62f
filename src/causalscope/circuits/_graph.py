"""The computational graph of a transformer: nodes, edges, and a forward pass with any edges patched.

>>> g = ComputeGraph(model)                   # a causalscope Model or nn.Module whose adapter has graph parts
>>> g.edges[:2]
[('embed', 'a0.h0'), ('embed', 'a0.h1')]
>>> clean, corrupted = g.outputs(clean_tokens), g.outputs(corrupted_tokens)
>>> patch = torch.zeros(3, len(g.edges)); patch[1, g.edge_index(("embed", "logits"))] = 1
>>> g.run(patch, clean, corrupted).shape      # (configurations, rows, positions, outputs)

Senders write into the residual stream: ``embed``, each head ``a{l}.h{h}``, each MLP ``m{l}``. Receivers read
it: each head (its own copy of the input, as query, key and value), each MLP and ``logits``. A receiver's
input is the sum of every upstream sender's output plus the constant biases (the attention output bias
``b_O`` of every layer before it). An edge ``(s, r)`` is the term ``s`` contributes to ``r``'s input; patching
it replaces that term by ``s``'s output in the corrupted run, while unpatched edges carry ``s``'s output in the
current (possibly patched) run, as in ACDC (Conmy et al. 2023) and EAP-IG's graph evaluation (Hanna et al.).
Padding (a compiled model's PAD) belongs to the run being computed: every patched run masks the clean
(base) inputs' PAD positions, whatever the corrupted inputs' lengths.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core import preserved
from ..errors import InputError
from ._circuit import upstream
from ._graph_run import PatchedOutputs, run_configurations

#: most elements of the (configurations x rows x positions x senders x d_model) working tensor per pass
_MAX_ELEMENTS = 2**25


@dataclass
class GraphOutputs:
    """Every sender's output (rows, positions, senders, d_model) and the logits of one run.

    >>> out = g.outputs(tokens); out.senders[:, :, g.sender_index("a0.h1")]   # head 0.1's residual write
    """

    tokens: torch.Tensor
    senders: torch.Tensor
    logits: torch.Tensor
    key_mask: torch.Tensor | None = None
    #: prompts of different lengths (padded on the right, causal attention): each row's real length
    lengths: torch.Tensor | None = None

    def by_sender(self) -> torch.Tensor:
        """The sender outputs as (senders, rows*T*d), made once (runs read them this way)."""
        cached = self.__dict__.get("_by_sender")
        if cached is None or cached[0] is not self.senders:
            N, T, S, d = self.senders.shape
            cached = (self.senders, self.senders.permute(2, 0, 1, 3).reshape(S, N * T * d))
            self.__dict__["_by_sender"] = cached
        return cached[1]

    def minus(self, base: GraphOutputs) -> torch.Tensor:
        """``by_sender() - base.by_sender()``, made once per base (ACDC's passes share a base until it removes).

        >>> XB = corrupted.minus(clean)      # (senders, rows*T*d): what patching each sender adds
        """
        cached = self.__dict__.get("_minus")
        if cached is None or cached[0] is not base.senders or cached[1] is not self.senders:
            cached = (base.senders, self.senders, self.by_sender() - base.by_sender())
            self.__dict__["_minus"] = cached
        return cached[2]


class ComputeGraph:
    """Nodes and edges of a model's computational graph, run with any set of edges patched.

    >>> g = ComputeGraph(cs.load(random_compiled(cfg)))
    >>> len(g.edges), g.senders[:2], g.receivers[-1]
    (57, ['embed', 'a0.h0'], 'logits')

    Needs an adapter with ``graph_parts()``: compiled transformers, TransformerLens ``HookedTransformer`` and
    Hugging Face GPT-2, Llama-family (Llama, Mistral, Qwen2, Qwen3) and GPT-NeoX causal LMs (parallel attention
    and MLP included). The model is never changed: no hooks,
    no parameter updates; runs happen in eval mode with gradients only with respect to activations.
    """

    def __init__(self, model: Any) -> None:
        from ..loading import load

        m = load(model)
        fn = getattr(m.adapter, "graph_parts", None)
        if fn is None:
            raise InputError(f"{m.name!r} ({m.adapter.kind} adapter) has no computational graph of heads and MLPs: "
                             f"circuit discovery needs an adapter with graph_parts(): a compiled transformer "
                             f"(causalscope.circuits.load_case, zoo.compiled), a TransformerLens HookedTransformer or "
                             f"a Hugging Face GPT-2, Llama-family or GPT-NeoX causal LM.")
        self.model = m
        self.parts = fn()
        L, H = int(self.parts.n_layers), int(self.parts.n_heads)
        self.n_layers, self.n_heads = L, H
        self.senders: list[str] = ["embed"]
        self.receivers: list[str] = []
        for layer in range(L):
            heads = [f"a{layer}.h{h}" for h in range(H)]
            self.senders += heads + [f"m{layer}"]
            self.receivers += heads + [f"m{layer}"]
        self.receivers.append("logits")
        self.nodes: list[str] = self.senders + ["logits"]
        # parallel attention + MLP (GPT-NeoX use_parallel_residual): MLP l reads the block input, not layer l's heads
        self.parallel_mlp = bool(getattr(self.parts, "parallel_mlp", False))
        self.edges: list[tuple[str, str]] = [(s, r) for r in self.receivers for s in self.senders if upstream(s, r)
                                             and not (self.parallel_mlp and r[0] == "m" and s.startswith(f"a{r[1:]}."))]
        self._sidx = {s: i for i, s in enumerate(self.senders)}
        self._ridx = {r: i for i, r in enumerate(self.receivers)}
        self._eidx = {e: i for i, e in enumerate(self.edges)}
        self.edge_sender = torch.tensor([self._sidx[s] for s, _ in self.edges])
        self.edge_receiver = torch.tensor([self._ridx[r] for _, r in self.edges])
        # stages run in order: heads of layer l (2l), MLP l (2l + 1), logits (2L); upstream senders are a prefix
        self._stage_of_receiver = torch.tensor([self._stage(r) for r in self.receivers])
        self.edge_stage = self._stage_of_receiver[self.edge_receiver]

    # ------------------------------------------------------------------ names
    def _stage(self, receiver: str) -> int:
        if receiver == "logits":
            return 2 * self.n_layers
        if receiver.startswith("m"):
            return 2 * int(receiver[1:]) + 1
        return 2 * int(receiver[1:].split(".")[0])

    def _n_upstream(self, stage: int) -> int:
        """How many senders (a prefix of ``senders``) write before ``stage`` reads."""
        layer, part = divmod(stage, 2)
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if part and not self.parallel_mlp else 0)

    def _first_written(self, stage: int) -> int:
        """The index of the first sender ``stage`` writes (its receivers' outputs); ``_n_upstream`` but for
        a parallel MLP, which does not read the heads written just before it."""
        layer, part = divmod(stage, 2)
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if part else 0)

    def _receivers_of(self, stage: int) -> list[int]:
        layer, part = divmod(stage, 2)
        if stage == 2 * self.n_layers:
            return [len(self.receivers) - 1]
        start = layer * (self.n_heads + 1)
        return [start + self.n_heads] if part else list(range(start, start + self.n_heads))

    def _bias(self, stage: int) -> torch.Tensor:
        """The attention output biases summed into the residual stream before ``stage`` reads it."""
        n = stage // 2 + (stage % 2 and not self.parallel_mlp)  # heads l: layers < l; MLP l, logits: <= l
        out = torch.zeros(())
        for layer in range(min(n, self.n_layers)):
            out = out + self.parts.attn_bias(layer)
        return out

    def sender_index(self, name: str) -> int:
        if name not in self._sidx:
            raise InputError(f"{name!r} is not a sender of this graph (senders: {', '.join(self.senders)}).")
        return self._sidx[name]

    def edge_index(self, edge: Sequence[str] | str) -> int:
        """Index of an edge ``("a0.h1", "m1")`` or ``"a0.h1->m1"`` in :attr:`edges`."""
        key = tuple(edge.split("->")) if isinstance(edge, str) else tuple(edge)
        if key not in self._eidx:
            raise InputError(f"{edge!r} is not an edge of this graph ({len(self.edges)} edges, e.g. "
                             f"{self.edges[0][0]}->{self.edges[0][1]}); edges run forward from a sender to a receiver.")
        return self._eidx[key]

    def edge_names(self) -> list[str]:
        return [f"{s}->{r}" for s, r in self.edges]

    def mask(self, edges: Sequence[Sequence[str] | str]) -> torch.Tensor:
        """A boolean mask over :attr:`edges` with the named edges set."""
        out = torch.zeros(len(self.edges), dtype=torch.bool)
        for e in edges:
            out[self.edge_index(e)] = True
        return out

    def __repr__(self) -> str:
        return (f"ComputeGraph({self.model.name!r}: {len(self.senders)} senders, {len(self.receivers)} receivers, "
                f"{len(self.edges)} edges)")

    # ------------------------------------------------------------------ runs
    def _check_tokens(self, tokens: Any) -> torch.Tensor:
        return self._tokens_and_lengths(tokens)[0]

    def _tokens_and_lengths(self, tokens: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token ids (rows, T) and, for prompts of different lengths, each row's real length.

        Prompts of different lengths are padded on the right; with causal attention no real position reads
        the padding, so the graph runs them unmasked and the metrics leave the padding out. A graph whose
        attention is not causal refuses them."""
        batch = self.model.adapter.prepare(tokens)
        t = batch.args[0] if batch.args else batch.kwargs.get("input_ids")
        if not isinstance(t, torch.Tensor):
            raise InputError(f"Circuit discovery needs token ids (rows, positions); {self.model.name} got none.")
        if t.shape[0] == 0:
            raise InputError("No inputs: give at least one row of token ids.")
        mask = batch.kwargs.get("attention_mask")
        lengths = batch.lengths
        if mask is not None and not bool(torch.as_tensor(mask).all()) and lengths is None:
            raise InputError("Padded inputs (an attention_mask with zeros) are not supported for this model's graph: "
                             "pass equal-length token ids.")
        if lengths is not None and not getattr(self.parts, "causal", False):
            raise InputError(f"Prompts of different lengths {sorted(set(lengths.tolist()))}: {self.model.name}'s graph "
                             f"does not attend causally, so padding would be read; pass prompts of one length.")
        return t.to(self.parts.embed_device), None if lengths is None else lengths.cpu()

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """(rows, T) bool, False at padding no position attends to; None for models without padding."""
        fn = getattr(self.parts, "key_mask", None)
        return None if fn is None else fn(tokens)

    def trace(self, embed: torch.Tensor, key_mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Unpatched graph forward from the embedding node's output ``(rows, T, d)``.

        Returns the logits, every sender's output (rows, T, senders, d) and every stage's receiver input:
        (rows, T, heads, d) for a layer's heads (one copy per head, so gradients come per head), (rows, T, d)
        for an MLP and for the logits. Differentiable with respect to ``embed``. ``key_mask``: see
        :meth:`key_mask` (the padding of the inputs ``embed`` came from; repeated to its rows).
        """
        outs = [embed]
        inputs: list[torch.Tensor] = []
        resid = embed
        for layer in range(self.n_layers):
            xh = resid.unsqueeze(2).repeat(1, 1, self.n_heads, 1)
            inputs.append(xh)
            heads = self._heads(layer, xh, key_mask)
            outs += list(heads.unbind(2))
            block_in = resid
            resid = resid + heads.sum(2) + self.parts.attn_bias(layer)
            xm = (block_in if self.parallel_mlp else resid).clone()  # the MLP's own copy: its own gradient
            inputs.append(xm)
            mlp = self.parts.mlp(layer, xm)
            outs.append(mlp)
            resid = resid + mlp
        inputs.append(resid)
        return self.parts.logits(resid), torch.stack(outs, 2), inputs

    def outputs(self, tokens: Any) -> GraphOutputs:
        """Sender outputs and logits of an unpatched run on ``tokens`` (rows, positions)."""
        return self.outputs_of(*self._tokens_and_lengths(tokens))

    def outputs_of(self, t: torch.Tensor, lengths: torch.Tensor | None = None) -> GraphOutputs:
        """:meth:`outputs` of checked token ids (rows, T) and their real ``lengths`` (None: all of length T).

        >>> g.outputs_of(torch.tensor([[1, 2, 3]]))
        """
        mask = self.key_mask(t)
        with preserved(self.model.module), torch.inference_mode():
            logits, senders, _ = self.trace(self.parts.embed(t), mask)
        return GraphOutputs(t, senders, logits, mask, lengths)

    def run(self, patch: torch.Tensor, clean: GraphOutputs, corrupted: GraphOutputs, *,
            base: GraphOutputs | None = None, base_patch: torch.Tensor | None = None,
            return_outputs: bool = False) -> Any:
        """Logits (configurations, rows, T, outputs) with, per configuration, the edges in ``patch`` patched.

        >>> logits = g.run(torch.eye(len(g.edges)), clean, corrupted)     # each edge patched alone, batched

        ``patch``: (configurations, edges), 1 where the edge carries the corrupted run's sender output, 0 where
        it carries the current run's (values in between interpolate). ``base`` / ``base_patch``: the cached
        outputs of a run with ``base_patch`` applied (default: the clean run, nothing patched); only the
        stages from the first receiver where a configuration differs from ``base_patch`` are computed.
        ``return_outputs``: also return each configuration's sender outputs, as a :class:`PatchedOutputs` whose
        item ``i`` is configuration ``i``'s (rows, T, senders, d), built when asked for.
        """
        patch = torch.as_tensor(patch, dtype=clean.senders.dtype, device=clean.senders.device)
        if patch.ndim == 1:
            patch = patch[None]
        if patch.ndim != 2 or patch.shape[1] != len(self.edges):
            raise InputError(f"patch must be (configurations, {len(self.edges)} edges); "
                             f"got shape {tuple(patch.shape)}.")
        if clean.senders.shape != corrupted.senders.shape:
            raise InputError(f"Clean and corrupted runs differ in shape: {tuple(clean.senders.shape)} vs "
                             f"{tuple(corrupted.senders.shape)}; give corrupted inputs shaped like the clean ones.")
        if base is None:
            base, base_patch = clean, torch.zeros(len(self.edges))
        elif base_patch is None:
            raise InputError("A base run needs its base_patch (the edges patched when it was made).")
        base_patch = torch.as_tensor(base_patch, dtype=patch.dtype, device=patch.device)
        C = patch.shape[0]
        N, T, S, d = clean.senders.shape
        chunk = max(1, _MAX_ELEMENTS // max(1, N * T * S * d))
        logits = []
        outs = PatchedOutputs()
        with preserved(self.model.module), torch.inference_mode():
            for i in range(0, C, chunk):
                lg, state = self._run_chunk(patch[i:i + chunk], corrupted, base, base_patch, return_outputs)
                logits.append(lg)
                outs._add(state, lg.shape[0])
        out = torch.cat(logits)
        return (out, outs) if return_outputs else out

    def _run_chunk(self, patch: torch.Tensor, corrupted: GraphOutputs, base: GraphOutputs,
                   base_patch: torch.Tensor, keep: bool) -> tuple[torch.Tensor, Any]:
        return run_configurations(self, patch, corrupted, base, base_patch, keep)

    def probe(self, patch: torch.Tensor, corrupted: GraphOutputs, base: GraphOutputs,
              base_patch: torch.Tensor) -> torch.Tensor:
        """How much each configuration changes the outputs of the first stage it changes, that stage only.

        >>> change = g.probe(torch.eye(len(g.edges)), corrupted, clean, torch.zeros(len(g.edges)))   # (edges,)

        A configuration whose first changed stage gives the same outputs leaves the logits as they are: a cheap
        test before a full :meth:`run` (one stage per configuration, all of a stage's configurations batched).
        Returns the largest absolute change per configuration (0 for one equal to ``base_patch``).
        """
        patch = torch.as_tensor(patch, dtype=base.senders.dtype, device=base.senders.device)
        base_patch = torch.as_tensor(base_patch, dtype=patch.dtype, device=patch.device)
        N, T, S, d = base.senders.shape
        end = 2 * self.n_layers
        starts = torch.where(patch != base_patch[None], self.edge_stage.to(patch.device)[None], end + 1).amin(1)
        out = torch.zeros(patch.shape[0], dtype=torch.float64)
        B, XB = base.by_sender(), corrupted.minus(base)
        with preserved(self.model.module), torch.inference_mode():
            for stage in sorted(set(starts.tolist()) - {end + 1}):
                idx = (starts == stage).nonzero().ravel()
                p, rs = self._n_upstream(stage), self._receivers_of(stage)
                n, R = len(idx), len(rs)
                A = torch.zeros(n, len(self.receivers), S, dtype=patch.dtype, device=patch.device)
                A[:, self.edge_receiver, self.edge_sender] = patch[idx]
                x = torch.addmm((B[:p].sum(0).view(N * T, d) + self._bias(stage)).view(1, -1),
                                A[:, rs, :p].reshape(n * R, p), XB[:p]).view(n, R, N, T, d)
                layer, part = divmod(stage, 2)
                if stage == end:
                    change = self.parts.logits(x[:, 0]) - base.logits
                elif part == 0:
                    mask = None if base.key_mask is None else base.key_mask.repeat(n, 1)
                    h = self._heads(layer, x.permute(0, 2, 3, 1, 4).reshape(n * N, T, R, d), mask)
                    change = h.view(n, N, T, R, d).permute(0, 3, 1, 2, 4).reshape(n, R, -1) - B[p:p + R]
                else:
                    w = self._first_written(stage)  # a parallel MLP reads fewer senders than come before it
                    change = self.parts.mlp(layer, x[:, 0].reshape(n * N, T, d)).reshape(n, -1) - B[w]
                out[idx.cpu()] = change.flatten(1).abs().amax(1).double().cpu()
        return out

    def _heads(self, layer: int, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        return self.parts.heads(layer, x) if key_mask is None else self.parts.heads(layer, x, key_mask=key_mask)

    def connected(self, kept: torch.Tensor) -> torch.Tensor:
        """The kept edges that lie on a path from ``embed`` to ``logits`` through kept edges (MIB's pruning)."""
        kept = torch.as_tensor(kept, dtype=torch.bool)
        nodes = self.nodes
        idx = {n: i for i, n in enumerate(nodes)}
        fwd = torch.zeros(len(nodes), dtype=torch.bool)
        fwd[idx["embed"]] = True
        for e in sorted(range(len(self.edges)), key=lambda i: self.edge_stage[i]):
            s, r = self.edges[e]
            if kept[e] and fwd[idx[s]]:
                fwd[idx[r]] = True
        bwd = torch.zeros(len(nodes), dtype=torch.bool)
        bwd[idx["logits"]] = True
        for e in sorted(range(len(self.edges)), key=lambda i: -int(self.edge_stage[i])):
            s, r = self.edges[e]
            if kept[e] and bwd[idx[r]]:
                bwd[idx[s]] = True
        ok = torch.tensor([bool(fwd[idx[s]] and bwd[idx[r]]) for s, r in self.edges])
        return kept & ok
