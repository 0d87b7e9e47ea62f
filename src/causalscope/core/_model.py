"""The wrapped model: one object that knows its sites and runs plans."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from ..errors import InputError, PlanError, check_flag
from ._engine import Engine, Run
from ._engine_generate import Generation, generate
from ._engine_ops import compile_ops
from ._guard import preserved
from ._sites import Site
from .adapters import Adapter, segmented


class Model:
    """A model wrapped for causal work. Get one from :func:`causalscope.load`.

    The wrapped ``nn.Module`` is never changed: every call leaves its parameters, buffers, hooks and
    train/eval mode as they were (also when the call raises). Runs happen in eval mode.

    >>> m = causalscope.load("tiny-gpt2")
    >>> clean = m.run("the cat sat on the mat", cache=["layers.1"])
    >>> rows = [{Site("layers.1", positions=t): Patch(clean)} for t in range(6)]
    >>> m.run("the dog sat on the mat", rows, metric=lambda logits: logits[:, -1].softmax(-1)[:, 7]).metric
    """

    def __init__(self, adapter: Adapter, name: str | None = None) -> None:
        self.adapter = adapter
        self.name = name or adapter.name
        self.engine = Engine(adapter)

    @property
    def module(self) -> nn.Module:
        return self.adapter.module

    @property
    def tokenizer(self) -> Any:
        return self.adapter.tokenizer

    @property
    def n_layers(self) -> int | None:
        return getattr(self.adapter, "n_layers", None)

    def __repr__(self) -> str:
        return f"causalscope.Model({self.name!r}, adapter={self.adapter.kind!r})"

    def generate(self, prompts: Any, edits: Any = None, *, max_new_tokens: int = 20, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 positions: Literal["all", "prompt", "new"] = "all",
                 metric: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Generation:
        """Generate ``max_new_tokens`` tokens per prompt with ``edits`` applied at every step (KV-cached).

        >>> g = m.generate(["the cat sat on", "a dog"], max_new_tokens=5)          # greedy, as transformers
        >>> steered = m.generate("the cat sat on", {cs.Site("layers.1"): cs.Add(v, 4.0)}, max_new_tokens=5)
        >>> steered.text, steered.ids

        Prompts of different lengths are padded on the left (as transformers' batched generation), so every
        step appends one token to all of them; step 0 runs the prompts, every later step one new token against
        the cached keys and values (``meta["forwards"]`` counts one forward per new token). ``edits``:
        ``{site: intervention}`` as in :meth:`run`, sites without ``positions=``; ``positions`` says where they
        act: ``"all"`` (the prompt and every new token), ``"prompt"`` or ``"new"``. Interventions that read
        another run (Patch, Mean, Resample) and Noise are refused. Greedy by default; ``do_sample=True``
        samples with ``temperature`` and nucleus ``top_p`` from a generator seeded with ``seed`` (same seed,
        same tokens). ``metric``: a function of each step's last-position logits (prompts, vocab) -> (prompts,),
        kept per step in ``Generation.metric``. No token is special: exactly ``max_new_tokens`` are generated
        (an end-of-text token does not stop a row). Hugging Face causal LMs and TransformerLens models (with
        TransformerLens's own key/value cache); the model is not changed.
        """
        return generate(self.adapter, prompts, edits, max_new_tokens=max_new_tokens, do_sample=do_sample,
                        temperature=temperature, top_p=top_p, seed=seed, positions=positions, metric=metric,
                        model_name=self.name)

    def site_names(self, pattern: str | None = None) -> list[str]:
        """Every site name (canonical names first), optionally filtered by a glob: ``m.site_names("layers.*.mlp")``."""
        if pattern is not None and not isinstance(pattern, str):
            raise InputError(f"pattern must be a glob string such as 'layers.*.mlp', got {type(pattern).__name__}.")
        names = self.adapter.site_names()
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names

    def tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` as strings (for labelling plots)."""
        batch = self.adapter.prepare(text)
        ids = batch.kwargs.get("input_ids", batch.args[0] if batch.args else None)
        if ids is None or self.tokenizer is None:
            raise TypeError("tokens() needs a language model with a tokenizer.")
        return [self.tokenizer.decode([int(i)]) for i in ids[0]]

    def plan(self, inputs: Any, edits: Any = None, *, input_index: Sequence[int] | None = None) -> dict[str, list[int]]:
        """Dry run: how the engine groups a plan's rows into ops, one vectorised write per op, per hooked module.
        The model does not run; sites are resolved and checked as in :meth:`run`.

        >>> rows = [{Site(f"layers.{l}", positions=t): Zero()} for l in range(4) for t in range(6)]
        >>> m.plan("the cat sat on the mat", rows)           # 24 cells: 4 ops of 6 rows, not 24 steps
        {'transformer.h.0': [6], 'transformer.h.1': [6], 'transformer.h.2': [6], 'transformer.h.3': [6]}

        Keys are module paths (``"path (input)"`` for input sites); values list the rows of each op there.
        """
        batch = self.adapter.prepare(inputs)
        ops = compile_ops(self.adapter, batch, self.engine.plan_blocks(batch, edits, input_index)[0])
        return {path if io == "output" else f"{path} (input)": [len(op.rows) for op in lst]
                for (path, io), lst in ops.items()}

    def run(self, inputs: Any, edits: Any = None, *, cache: Sequence[Site | str] = (),
            grads: Sequence[Site | str] = (), metric: Callable[..., torch.Tensor] | None = None,
            input_index: Sequence[int] | None = None, chunk_size: int | None = None,
            keep_output: bool | None = None, keep_kv: bool = False, progress: bool | None = None) -> Run:
        """Run the model on ``inputs`` with per-row interventions, caching and activation gradients.

        >>> m.run("the cat sat")                                        # plain run: run.output == model logits
        >>> m.run("the cat sat", {"layers.0.mlp": Zero()})               # the same edit on every input row
        >>> m.run("the cat sat", [{Site("layers.0", positions=t): Zero()} for t in range(3)])  # 3 rows, 1 pass
        >>> m.run(x, cache=["layers.2"], grads=["layers.1"], metric=lambda y: y[:, -1, 5])

        ``edits``: ``None``; a dict ``{site: intervention}`` applied to every input row; or a list of such
        dicts, one per plan row. With one input, every row runs on it; with B inputs and B rows, row i runs
        on input i; ``input_index`` names each row's input otherwise. Rows are executed in batched passes
        of ``chunk_size`` rows (chosen from free memory when omitted); results do not depend on it.
        ``cache``: sites whose (post-intervention) activations to keep. ``grads``: sites whose gradient of
        ``metric(output).sum()`` to return (gradients with respect to activations only; parameters get no
        ``.grad``). ``metric``: a function of the output tensor returning one value per row.
        ``keep_kv``: keep Hugging Face key/value caches (for segmented forwards).
        """
        for what, sites in (("cache", cache), ("grads", grads)):
            if isinstance(sites, (str, Site)):
                raise PlanError(f"{what} must be a list of sites, got the single site {sites!r}: write "
                                f"{what}=[{sites!r}] (a string would be read as a list of its characters).")
        if metric is not None and not callable(metric):
            raise PlanError(f"metric must be a function of the output returning one value per row (e.g. "
                            f"cs.logit_diff(...) or lambda y: y[:, -1, 5]), got {type(metric).__name__} "
                            f"{metric!r:.60}.")
        for what, flag in (("keep_kv", keep_kv), ("keep_output", keep_output), ("progress", progress)):
            if flag is not None:
                check_flag(flag, what, PlanError)
        return self.engine.run(inputs, edits, cache=cache, grads=grads, metric=metric, input_index=input_index,
                               chunk_size=chunk_size, keep_output=keep_output, keep_kv=keep_kv, progress=progress)

    def forward_from(self, hidden: torch.Tensor, layer: int = 0, pos: int = 0, past: Any = None,
                     stop: int | None = None, head: bool = True, last_only: bool = False) -> torch.Tensor:
        """Segmented forward (transformer LMs): see ``HFCausalLMAdapter.forward_from``."""
        lm = segmented(self.adapter)
        if lm is None:
            raise TypeError(f"{self.adapter.kind} models have no segmented forward; it needs a transformer LM "
                            f"adapter (Hugging Face GPT-2 / GPT-NeoX / Llama family).")
        with preserved(self.module), torch.inference_mode():
            return lm.forward_from(hidden, layer=layer, pos=pos, past=past, stop=stop, head=head,
                                   last_only=last_only)
