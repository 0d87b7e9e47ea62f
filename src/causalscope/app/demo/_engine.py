"""Demo-report sections on the engine itself: cached activations, one batched patching map, neuron ablation.

>>> from causalscope.app.demo import patching_map
>>> patching_map().dims
('layer', 'token')
"""
from __future__ import annotations

from typing import cast

import torch

from ...core import Patch, Site, Zero
from ...loading import load
from ...results import LabelledArray
from ..report import Report


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
    clean_out = cast(torch.Tensor, clean_run.output)  # no metric, so the run keeps its output
    answer = int(clean_out[0, -1].argmax())
    metric = lambda logits: logits[:, -1].log_softmax(-1)[:, answer]  # noqa: E731
    hi = float(metric(clean_out)[0])
    lo = float(cast(torch.Tensor, m.run(corrupted, metric=metric).metric)[0])  # a metric was requested
    T = clean_out.shape[1]
    rows = [{Site(f"layers.{l}", positions=t): Patch(clean_run)} for l in range(L) for t in range(T)]
    scores = cast(torch.Tensor, m.run(corrupted, rows, metric=metric).metric).view(L, T)  # a metric was requested
    norm = (scores - lo) / (hi - lo) if hi != lo else torch.zeros_like(scores)
    answer_tok = m.tokenizer.decode([answer])
    return LabelledArray(norm, ["layer", "token"], {"layer": list(range(L)), "token": m.tokens(corrupted)},
                         meta={"method": "activation patching (denoising)", "model": model_name, "clean": clean,
                               "corrupted": corrupted, "answer": answer_tok, "metric": "log p(answer), normalised",
                               "clean_score": hi, "corrupted_score": lo, "passes": 1, "rows": L * T,
                               "title": f"Restoring the clean block output at each layer and token: recovery of "
                                        f"log p({answer_tok!r})"},
                         name="recovery")


def neuron_ablation(seed: int = 0) -> LabelledArray:
    """Zero each hidden unit of the zoo MLP's first ReLU: change of the top output, one row per neuron."""
    m = load("mlp")
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(seed))
    base = cast(torch.Tensor, m.run(x).output)  # no metric, so the run keeps its output
    top = base.argmax(-1)
    n = 32
    rows = [{Site("net.1", neurons=i): Zero()} for i in range(n)]
    runs = m.run(x, [r for r in rows for _ in range(len(x))], input_index=[j for _ in rows for j in range(len(x))])
    out = cast(torch.Tensor, runs.output).view(n, len(x), -1)
    drop = (base.gather(1, top[:, None])[None, :, 0] - out.gather(2, top[None, :, None].expand(n, -1, 1))[..., 0])
    return LabelledArray(drop.mean(1), ["neuron"], {"neuron": list(range(n))},
                         meta={"method": "zero ablation", "model": "mlp", "site": "net.1", "inputs": len(x),
                               "title": "MLP: mean drop of the top logit when one hidden unit is zeroed"},
                         name="logit drop")


def engine_section(rep: Report) -> None:
    """The three engine sections: residual-stream norms, the batched patching map (and its table), MLP ablation."""
    rep.section("Engine: cached activations",
                "One plain run of the bundled tiny GPT-2 (random weights, word-level tokenizer) with the residual "
                "stream cached after every block. The run reproduces the model's own logits exactly.")
    norms = activation_norms()
    rep.figure(norms.plot(backend="plotly"), caption="L2 norm of each block's output (sites layers.0 to layers.3) "
                                                     "per token.")
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
