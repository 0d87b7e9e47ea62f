"""Demo-report section: language-model workflows on facts-gpt: steering while the model writes, SAE features of a
fact (and what zeroing each does), the logit lens of a fact, and its attention patterns.

>>> from causalscope.app.report import Report
>>> language_section(Report("demo"))  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, cast

import pandas as pd
import torch

from ...core import Scale, Site
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
    rep.figure(*sae_features(m, fact))
    lens = logit_lens(m, fact.prompt, answer=fact.answer)
    rep.text(f"The logit lens of {fact.prompt!r}: each layer's residual stream read through the model's own final "
             f"layer norm and unembedding. The answer {fact.answer!r} becomes the top token at the last position "
             f"in the later layers.")
    rep.figure(lens.plot(backend="plotly"), caption="Logit lens: the top token of each (layer, position) and its "
                                                    "probability.")
    pats = attention_patterns(m, fact.prompt, layers=[m.n_layers - 1 if m.n_layers else 0])
    rep.figure(pats.plot(backend="plotly"), caption="Attention patterns of the last layer's heads (query x key).")


def sae_features(m: Any, fact: Any, top: int = 8) -> tuple[Any, str]:
    """The bundled SAE's most active latents at the last token of ``fact``'s subject (after block 2), and the
    change of the answer's logit when each alone is zeroed (one batched run: a row per feature)."""
    from ...sae import load_bundled
    from ...tracing import subject_range

    sae = load_bundled("facts-gpt-layers.2")
    t = subject_range(m, fact.prompt, fact.subject)[1] - 1
    site = Site("layers.2", sae=sae, positions=[t])
    lat = m.run(fact.prompt, cache=[site]).cache[site.name][0, 0]
    feats = [int(i) for i in lat.argsort(descending=True)[:top]]
    answer = m.tokenizer(" " + fact.answer, add_special_tokens=False)["input_ids"][0]

    def p_answer(logits: torch.Tensor) -> torch.Tensor:  # the answer's logit: p(answer) saturates near 1
        return logits[:, -1, answer]
    base = float(cast(torch.Tensor, m.run(fact.prompt, metric=p_answer).metric)[0])
    rows = [{Site("layers.2", sae=sae, features=[f], positions=[t]): Scale(0.0)} for f in feats]
    drop = cast(torch.Tensor, m.run(fact.prompt, rows, input_index=[0] * len(rows), metric=p_answer).metric) - base
    import plotly.graph_objects as go

    labels = [f"{f} (a={float(lat[f]):.1f})" for f in feats]
    fig = go.Figure(go.Bar(x=labels, y=drop.float().tolist(), marker_color="#2166ac",
                           hovertemplate="latent %{x}: change %{y:.3f}<extra></extra>"))
    fig.update_layout(title={"text": f"SAE latents at {fact.subject.split()[-1]!r} (layers.2): zeroing each alone"},
                      xaxis={"title": {"text": "latent (activation)"}, "type": "category"},
                      yaxis={"title": {"text": "change of the answer's logit"}}, height=380)
    ev = float(sae.info.get("heldout", {}).get("explained_variance", float("nan")))
    caption = (f"The bundled sparse autoencoder (TopK, {sae.n_latents} latents, k={sae.k}; {ev:.1%} of the variance "
               f"explained on held-out prompts) at the last subject token of {fact.prompt!r}: its {top} most "
               f"active latents and the change of the logit of {fact.answer!r} ({base:.2f}) when each alone is "
               f"zeroed "
               f"(the reconstruction error is kept, so only that latent's part of the residual stream changes).")
    return fig, caption

