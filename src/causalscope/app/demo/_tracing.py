"""Demo-report section: causal tracing (ROME) of one held-out fact in three kinds, and averages over facts.

>>> from causalscope.app.report import Report
>>> tracing_section(Report("demo"), n_facts=4)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import cast

import torch

from ...loading import load
from ..report import Report


def tracing_section(rep: Report, n_facts: int = 16, samples: int = 10, window: int = 3) -> None:
    """Causal tracing on the bundled facts model: one held-out fact in three kinds, and averages."""
    from ...tracing import causal_trace, embedding_std, trace_average
    from ...zoo import facts as facts_mod

    m = load("facts-gpt")
    held = facts_mod.facts("heldout")
    noise = 3 * embedding_std(m, sorted({f.subject for f in held}))

    def top_token(prompt: str) -> str:  # no metric, so the run keeps its output
        return m.tokenizer.decode([int(cast(torch.Tensor, m.run(prompt).output)[0, -1].argmax())]).strip()

    fact = next(f for f in held if top_token(f.prompt) == f.answer)
    rep.section("Causal tracing (ROME) on the bundled facts model",
                f"facts-gpt is a small GPT-2 trained by causalscope's own script on a synthetic corpus of facts "
                f"about invented people (multi-token names). The prompt {fact.prompt!r} uses a template held out "
                f"from training; the model answers {fact.answer!r}. Noise: 3 x the std of subject-token "
                f"embeddings over all held-out subjects ({noise:.3f}), {samples} samples, MLP / attention window "
                f"{window} (ROME's 10 is for 48 layers; this model has {m.n_layers}). Each map runs at the "
                f"compute floor (blocks above the restored layer, positions from the restored token on).")
    for kind in ("hidden", "mlp", "attn"):
        r = causal_trace(m, fact.prompt, fact.subject, kind=kind, samples=samples, noise=noise, window=window)
        rep.figure(r.plot(backend="plotly"), caption=f"{kind}: p({r.answer.strip()}) clean {r.high_score:.3f}, "
                                                     f"corrupted {r.low_score:.3f}; "
                                                     f"{r.meta['token_layers']} token-layers executed.")
    avg = trace_average(m, held[:n_facts], samples=samples, noise=noise, window=window, progress=False)
    rep.text(f"Averaged over {avg.meta['n_facts']} held-out facts the model answers correctly "
             f"({len(avg.meta['skipped'])} of the first {n_facts} skipped as wrong), by token class, with 95% "
             f"bootstrap intervals over facts (ROME Fig. 2).")
    rep.figure(avg.plot(backend="plotly"), caption="Average indirect effect: restored minus corrupted p(answer).")
