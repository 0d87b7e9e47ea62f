"""The end-to-end demo behind ``make demo`` / ``causalscope demo``: writes one offline HTML report."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..._version import __version__
from ...core import Patch, Site, Zero
from ...loading import load
from ...results import LabelledArray
from ..report._html import Report


def activation_norms(model_name: str = "tiny-gpt2", prompt: str = "the cat sat on the mat") -> LabelledArray:
    """L2 norm of the residual stream after every block, per token, from one cached run."""
    m = load(model_name)
    names = [f"layers.{i}" for i in range(m.n_layers or 0)]
    run = m.run(prompt, cache=names)
    norms = torch.stack([run.cache[n][0].norm(dim=-1) for n in names])
    return LabelledArray(norms, ["layer", "token"], {"layer": list(range(len(names))), "token": m.tokens(prompt)},
                         meta={"method": "activation norms", "model": model_name, "prompt": prompt,
                               "sites": names, "title": "Residual-stream norm after each block"}, name="norm")


def patching_map(model_name: str = "tiny-gpt2", clean: str = "the cat sat on the mat",
                 corrupted: str = "the dog sat on the mat") -> LabelledArray:
    """Denoising map: restore the clean residual stream at (layer, token) into the corrupted run.

    Score: log-probability of the clean run's top next token at the last position, normalised so that
    0 = corrupted run and 1 = clean run. All L x T cells run as rows of one batched engine call.
    """
    m = load(model_name)
    L = m.n_layers or 0
    names = [f"layers.{i}" for i in range(L)]
    clean_run = m.run(clean, cache=names)
    answer = int(clean_run.output[0, -1].argmax())
    metric = lambda logits: logits[:, -1].log_softmax(-1)[:, answer]  # noqa: E731
    hi = float(metric(clean_run.output)[0])
    lo = float(m.run(corrupted, metric=metric).metric[0])
    T = clean_run.output.shape[1]
    rows = [{Site(f"layers.{l}", positions=t): Patch(clean_run)} for l in range(L) for t in range(T)]
    scores = m.run(corrupted, rows, metric=metric).metric.view(L, T)
    norm = (scores - lo) / (hi - lo) if hi != lo else torch.zeros_like(scores)
    answer_tok = m.tokenizer.decode([answer])
    return LabelledArray(norm, ["layer", "token"], {"layer": list(range(L)), "token": m.tokens(corrupted)},
                         meta={"method": "activation patching (denoising)", "model": model_name, "clean": clean,
                               "corrupted": corrupted, "answer": answer_tok, "metric": "log p(answer), normalised",
                               "clean_score": hi, "corrupted_score": lo, "passes": 1, "rows": L * T,
                               "title": f"Restoring clean layers.l at each token: recovery of log p({answer_tok!r})"},
                         name="recovery")


def neuron_ablation(seed: int = 0) -> LabelledArray:
    """Zero each hidden unit of the zoo MLP's first ReLU: change of the top output, one row per neuron."""
    m = load("mlp")
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(seed))
    base = m.run(x).output
    top = base.argmax(-1)
    n = 32
    rows = [{Site("net.1", neurons=i): Zero()} for i in range(n)]
    runs = m.run(x, [r for r in rows for _ in range(len(x))], input_index=[j for _ in rows for j in range(len(x))])
    out = runs.output.view(n, len(x), -1)
    drop = (base.gather(1, top[:, None])[None, :, 0] - out.gather(2, top[None, :, None].expand(n, -1, 1))[..., 0])
    return LabelledArray(drop.mean(1), ["neuron"], {"neuron": list(range(n))},
                         meta={"method": "zero ablation", "model": "mlp", "site": "net.1", "inputs": len(x),
                               "title": "MLP: mean drop of the top logit when one hidden unit is zeroed"},
                         name="logit drop")


def build_report(out: str | Path = "report/causalscope-report.html") -> Path:
    """Run the demo and write the report; returns its path.

    The demo's models are tiny, so it runs on one intra-op thread (on a busy 2-core machine two threads
    stall every small op); the previous thread count is restored afterwards.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build_report(out)
    finally:
        torch.set_num_threads(threads)


def _build_report(out: str | Path) -> Path:
    t0 = time.perf_counter()
    rep = Report("causalscope demo report", meta={"causalscope": __version__, "models": "tiny-gpt2, mlp, facts-gpt, and-gate, or-gate, adder, digits-mlp, tracr cases (bundled)"})
    rep.section("Engine: cached activations",
                "One plain run of the bundled tiny GPT-2 (random weights, word-level tokenizer) with the residual "
                "stream cached after every block. The run reproduces the model's own logits exactly.")
    norms = activation_norms()
    rep.figure(norms.plot(backend="plotly"), caption="L2 norm of layers.i output per token.")
    rep.section("Engine: one batched patching map",
                "Denoising activation patching: the clean residual stream at (layer, token) is restored into the "
                "corrupted run. Every cell is one row of a single batched engine call, so the map costs one "
                "forward pass of L x T rows instead of L x T separate passes. The model has random weights, so the "
                "map shows the machinery, not a finding: the corrupted token and the last token carry the effect.")
    pm = patching_map()
    rep.figure(pm.plot(backend="plotly"), caption="0 = corrupted run, 1 = clean run.")
    import pandas as pd

    table = pd.DataFrame(pm.numpy().round(3), index=pd.Index(pm.coords["layer"], name="layer"),
                         columns=[f"{i}:{t}" for i, t in enumerate(pm.coords["token"])])
    rep.table(table, caption="The same map as numbers (columns: position:token).")
    rep.section("Any nn.Module: neuron ablation on an MLP",
                "The bundled MLP is a plain nn.Module; sites are its module paths. Each of the 32 hidden units of "
                "net.1 is zeroed in its own batch rows, for 64 inputs: one pass of 2048 rows.")
    ab = neuron_ablation()
    rep.figure(ab.plot(backend="plotly"), caption="Mean drop of the unablated top logit.")
    tracing_section(rep)
    from ._patching import patching_section

    patching_section(rep)
    from ._mediation import mediation_section

    mediation_section(rep)
    from ._directions import directions_section

    directions_section(rep)
    from ._circuits import circuits_section

    circuits_section(rep)
    rep.text(f"Generated in {time.perf_counter() - t0:.1f} s.")
    return rep.save(out)


def tracing_section(rep: Report, n_facts: int = 16, samples: int = 10, window: int = 3) -> None:
    """Causal tracing on the bundled facts model: one held-out fact in three kinds, and averages."""
    from ...tracing import causal_trace, embedding_std, trace_average
    from ...zoo import facts as facts_mod

    m = load("facts-gpt")
    held = facts_mod.facts("heldout")
    noise = 3 * embedding_std(m, sorted({f.subject for f in held}))
    fact = next(f for f in held if m.tokenizer.decode([int(m.run(f.prompt).output[0, -1].argmax())]).strip()
                == f.answer)
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
