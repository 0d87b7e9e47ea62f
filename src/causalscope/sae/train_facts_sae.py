"""Train the bundled SAE: ``python -m causalscope.sae.train_facts_sae --out src/causalscope/zoo/data``.

A TopK SAE (512 latents, k = 16) on the residual stream of ``cs.load("facts-gpt")`` after block 2 (site
``layers.2``), over every token of the corpus's train prompts (``causalscope.zoo.facts.facts("train")``), with
:func:`causalscope.sae.train_sae`. Writes ``<out>/facts-gpt-sae/layers.2/`` in SAELens's format (``cfg.json``,
``sae_weights.safetensors`` stored in float16, read back as float32) and ``training.json``: the settings, the
training time and the metrics of the shipped (float16-rounded) weights on the train prompts and on the held-out
template's prompts. Seeded: a rerun on the same machine, torch and thread count writes the same files. About 30 s
on 2 CPU cores. The SAE lives in the sae family (not the zoo) because the zoo sits below the families.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import Site
from ..loading import load
from ..zoo.facts import facts
from ._io import load_sae
from ._train import _activations, evaluate, train_sae

SITE = "layers.2"
NAME = "facts-gpt-layers.2"


@dataclass
class SAEConfig:
    """What the shipped SAE was trained with."""

    seed: int = 0
    n_latents: int = 512
    k: int = 16
    steps: int = 3000
    batch_size: int = 1024
    lr: float = 1e-3
    threads: int = 2


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m causalscope.sae.train_facts_sae", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder that receives facts-gpt-sae/layers.2/")
    p.add_argument("--seed", type=int, default=SAEConfig.seed)
    p.add_argument("--steps", type=int, default=SAEConfig.steps)
    p.add_argument("--threads", type=int, default=SAEConfig.threads)
    args = p.parse_args(argv)
    cfg = SAEConfig(seed=args.seed, steps=args.steps, threads=args.threads)
    torch.set_num_threads(cfg.threads)
    m = load("facts-gpt")
    train_prompts = [f.prompt for f in facts("train")]
    held_prompts = [f.prompt for f in facts("heldout")]
    t0 = time.perf_counter()
    sae = train_sae(m, train_prompts, SITE, cfg.n_latents, k=cfg.k, steps=cfg.steps, batch_size=cfg.batch_size,
                    lr=cfg.lr, seed=cfg.seed, name=NAME)
    seconds = time.perf_counter() - t0  # caching the activations included
    folder = args.out / "facts-gpt-sae" / SITE
    history = sae.info.pop("history")
    sae.info = {}
    sae.save(folder, store_dtype=torch.float16)
    shipped = load_sae(folder, name=NAME)  # the metrics are those of the files just written
    site = Site(SITE)
    summary: dict[str, Any] = {
        "name": NAME, "model": "facts-gpt", "site": SITE, "config": asdict(cfg), "architecture": "topk",
        "train_seconds": round(seconds, 1), "torch": torch.__version__, "stored_dtype": "float16",
        "train_prompts": len(train_prompts), "heldout_prompts": len(held_prompts),
        "train": evaluate(shipped, _activations(m, train_prompts, site)),
        "heldout": evaluate(shipped, _activations(m, held_prompts, site)),
        "history": history}
    (folder / "training.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: summary[k] for k in ("train_seconds", "train", "heldout")}, indent=1))
    return summary


if __name__ == "__main__":
    main()
