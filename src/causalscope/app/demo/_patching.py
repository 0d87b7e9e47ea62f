"""Demo-report section: activation patching both ways, attribution patching, IG, and the AND / OR seed."""
from __future__ import annotations

from typing import Any

from ...loading import load
from ..report import Report


def fact_pair(m: Any) -> tuple[Any, Any]:
    """Two held-out birthplace facts of equal token length whose answers differ and that the model gets right."""
    from ...zoo import facts as facts_mod

    held = [f for f in facts_mod.facts("heldout") if f.relation == "birthplace"]
    right = [f for f in held
             if m.tokenizer.decode([int(m.run(f.prompt).output[0, -1].argmax())]).strip() == f.answer]
    for i, a in enumerate(right):
        for b in right[i + 1:]:
            if a.answer != b.answer and len(m.tokens(a.prompt)) == len(m.tokens(b.prompt)):
                return a, b
    raise RuntimeError("no pair of held-out facts of equal length found")


def patching_section(rep: Report) -> None:
    from ...core import logit_diff
    from ...patching import activation_patching, attribution_patching, integrated_gradients, latent_circuits

    lc = latent_circuits()
    rep.section("Activation patching both ways: the latent-circuits seed (AND / OR gates)",
                "Single-neuron gates Linear(2,1)+Sigmoid with the seed notebook's trained weights; inputs A and B, "
                "clean (1, 1) vs corrupted (0, 0). Denoising restores one clean input into the corrupted run, "
                "noising puts one corrupted input into the clean run (both as fractions of the output gap); "
                "integrated gradients is attributed to the layer input with the other input as baseline.")
    rep.figure(lc.plot(backend="plotly"), caption="Scores of inputs A and B by method, per gate.")
    rep.text(lc.conclusion())
    m = load("facts-gpt")
    a, b = fact_pair(m)
    metric = logit_diff(" " + a.answer, " " + b.answer, model=m)
    ap = activation_patching(m, a.prompt, b.prompt, "resid_pre", metric, direction="both")
    rep.section("Activation patching both ways on the facts model",
                f"Clean {a.prompt!r} (answer {a.answer!r}) vs corrupted {b.prompt!r} (answer {b.answer!r}); "
                f"metric: logit({a.answer}) - logit({b.answer}) at the last position. Every block input "
                f"(layer x position) is patched in both directions; cells before the first differing token cost "
                f"nothing, the rest run only the blocks from the patched one on "
                f"({ap.meta['token_layers']} token-layers for both maps).")
    rep.figure(ap.plot(backend="plotly"), caption="Denoising, noising and their asymmetry (noise - denoise).")
    atp = attribution_patching(m, a.prompt, b.prompt, "resid_pre", metric, direction="both")
    agree = atp.agreement(ap)
    rep.figure(atp.plot_against(ap, backend="plotly"),
               caption="Attribution patching (one backward) against exact patching, per cell. Agreement: "
                       + ", ".join(f"{k} {v:.2f}" for k, v in agree.items()) + ".")
    worst = atp.disagreement(ap, k=3)
    rep.text("Largest disagreements: " + "; ".join(f"{w['direction']} {w['cell']}: estimate {w['estimate']:+.2f}, "
                                                   f"exact {w['exact']:+.2f}" for w in worst))
    ig = integrated_gradients(m, a.prompt, b.prompt, "layers.1", metric=metric, steps=32)
    rep.figure(ig.plot(backend="plotly"),
               caption=f"Layer integrated gradients at layers.1 (block 1 output), corrupted prompt as baseline, "
                       f"summed over d_model per position; completeness delta {float(ig.delta.abs().max()):.2e}.")
