"""Demo-report section: language-model workflows on facts-gpt: steering while the model writes, the logit lens
of a fact, and its attention patterns.

>>> from causalscope.app.report import Report
>>> language_section(Report("demo"))  # doctest: +SKIP
"""
from __future__ import annotations

import pandas as pd

from ...core import Site
from ...loading import load
from ..report import Report

TARGET = "Estrova"  # the birthplace the training corpus names most often
LAYER = 2


def language_section(rep: Report, n_prompts: int = 8, max_new_tokens: int = 3) -> None:
    """Steered generation (before / after and the target's frequency against the strength), the logit lens and
    the attention patterns of one held-out fact."""
    from ...generation import steer_generation
    from ...lenses import attention_patterns, logit_lens
    from ...zoo import facts as facts_mod

    m = load("facts-gpt")
    train = [f for f in facts_mod.facts("train") if f.relation == "birthplace"]
    held = [f for f in facts_mod.facts("heldout") if f.relation == "birthplace" and f.answer != TARGET][:n_prompts]
    site = Site(f"layers.{LAYER}", positions=-1)
    to = m.run([f.prompt for f in train if f.answer == TARGET][:60], cache=[site]).cache[site.name][:, 0].mean(0)
    rest = m.run([f.prompt for f in train if f.answer != TARGET][:300], cache=[site]).cache[site.name][:, 0].mean(0)
    v = to - rest
    strengths = [0.0, 0.5, 1.0, 2.0, 4.0]
    r = steer_generation(m, [f.prompt for f in held], f"layers.{LAYER}", v, strengths, target=TARGET,
                         max_new_tokens=max_new_tokens)
    rep.section("Language-model workflows: steering while generating, the logit lens, attention",
                f"A steering vector for the birthplace {TARGET!r}: the mean residual stream after block {LAYER} at "
                f"the last token of training prompts whose answer is {TARGET!r}, minus the mean over the other "
                f"birthplace prompts ({v.norm():.1f} long). Added at every position of every step while the model "
                f"writes {max_new_tokens} tokens after {len(held)} held-out prompts about people born elsewhere "
                f"(one KV-cached, batched generate call for all strengths and prompts: {r.meta['forwards']} "
                f"forwards).")
    rep.figure(r.plot(backend="plotly"),
               caption=f"Fraction of continuations that name {TARGET!r}, against the steering strength.")
    top = strengths[-1]
    rep.table(pd.DataFrame({"prompt": [f.prompt for f in held], "answer": [f.answer for f in held],
                            "plain": r.texts(0.0), f"steered x{top:g}": r.texts(top)}),
              caption="The continuations without and with the steering vector (greedy).")
    fact = held[0]
    lens = logit_lens(m, fact.prompt, answer=fact.answer)
    rep.text(f"The logit lens of {fact.prompt!r}: each layer's residual stream read through the model's own final "
             f"layer norm and unembedding. The answer {fact.answer!r} becomes the top token at the last position "
             f"in the later layers.")
    rep.figure(lens.plot(backend="plotly"), caption="Logit lens: the top token of each (layer, position) and its "
                                                    "probability.")
    pats = attention_patterns(m, fact.prompt, layers=[m.n_layers - 1 if m.n_layers else 0])
    rep.figure(pats.plot(backend="plotly"), caption="Attention patterns of the last layer's heads (query x key).")
