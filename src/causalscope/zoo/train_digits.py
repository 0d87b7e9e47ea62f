"""Train the bundled digits MLP: ``python -m causalscope.zoo.train_digits --out src/causalscope/zoo/data``.

Trains :class:`~causalscope.zoo.digits_mlp.DigitsMLP` (64-256-128-64-10, ReLU) on the train split of
``causalscope.data.digits`` (scikit-learn's 8x8 digits, 1437 images) with Adam (lr 1e-3, as the
feature-directions seed) and cross-entropy, and writes ``<out>/digits-mlp/{model.safetensors,
training.json}``. The initial weights come from ``build_digits_mlp(trained=False, seed=seed)``, the minibatch
order from a ``torch.Generator`` seeded with ``seed``; training runs on 1 thread with
``torch.use_deterministic_algorithms(True)`` (both restored afterwards), so the same seed gives identical
weights on the same machine and torch. A few seconds on one CPU core.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .digits_mlp import FOLDER, INFO, WEIGHTS, DigitsMLP, build_digits_mlp, load_trained, training_info

__all__ = ["TrainConfig", "accuracy", "load_trained", "main", "save", "train", "training_info"]



@dataclass
class TrainConfig:
    """The settings. The defaults are what the shipped weights were trained with."""

    seed: int = 0
    data_seed: int = 0      # the train / test split of causalscope.data.digits
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    threads: int = 1


@contextlib.contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` and ``torch.use_deterministic_algorithms(True)`` inside the block;
    the previous settings are restored on exit."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.set_num_threads(old_threads)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose arg-max logit is the label (one batched pass)."""
    was_training = model.training
    model.eval()
    try:
        return int((model(x).argmax(-1) == y).sum()) / len(y)
    finally:
        model.train(was_training)


def train(cfg: TrainConfig | None = None, log: Callable[[str], None] | None = print,
          ) -> tuple[DigitsMLP, dict[str, Any]]:
    """Train from the seeded initial weights (``cfg`` defaults to the shipped model's settings). Returns
    ``(model in eval mode, history)``; ``history["loss"]`` is the mean loss of each epoch, ``history["evals"]``
    the accuracies logged every 10 epochs (only when ``log`` is given), ``history["seconds"]`` the time."""
    from ..data import digits

    cfg = TrainConfig() if cfg is None else cfg

    x, y = digits("train", seed=cfg.data_seed)
    x_test, y_test = digits("test", seed=cfg.data_seed)
    history: dict[str, Any] = {"loss": [], "evals": []}
    with deterministic(cfg.threads):
        model = build_digits_mlp(trained=False, in_features=x.shape[1], seed=cfg.seed).train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        t0 = time.perf_counter()
        total: float | torch.Tensor  # the epoch's summed loss: a float, then a tensor once a batch is added
        for epoch in range(cfg.epochs):
            total, perm = 0.0, torch.randperm(len(y), generator=gen)
            for i in range(0, len(y), cfg.batch_size):
                rows = perm[i: i + cfg.batch_size]
                loss = torch.nn.functional.cross_entropy(model(x[rows]), y[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * len(rows)
            history["loss"].append(float(total) / len(y))
            if log and ((epoch + 1) % 10 == 0 or epoch + 1 == cfg.epochs):
                ev = {"epoch": epoch + 1, "loss": round(history["loss"][-1], 5),
                      "train_acc": round(accuracy(model, x, y), 4),
                      "test_acc": round(accuracy(model, x_test, y_test), 4)}
                history["evals"].append(ev)
                log(json.dumps(ev))
        history["seconds"] = time.perf_counter() - t0
    return model.eval(), history


def save(model: DigitsMLP, info: dict[str, Any], folder: Path) -> None:
    """Write ``model.safetensors`` (the state dict) and ``training.json`` (``info``) into ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / WEIGHTS).chmod(0o644)  # safetensors writes 0600; the package data must be world-readable
    (folder / INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m causalscope.zoo.train_digits", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help=f"folder that receives {FOLDER}/")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    args = p.parse_args(argv)
    cfg = TrainConfig(seed=args.seed, epochs=args.epochs)
    model, history = train(cfg)
    from ..data import digits

    info: dict[str, Any] = {
        "model": "DigitsMLP", "in_features": model.in_features, "n_classes": model.fc4.out_features,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"name": "sklearn.datasets.load_digits / 16 (causalscope.data.digits)", "split_seed": cfg.data_seed,
                 "n_train": len(digits("train", cfg.data_seed)[1]), "n_test": len(digits("test", cfg.data_seed)[1])},
        "config": asdict(cfg), "optimizer": "Adam", "loss": "cross_entropy",
        "final_loss": round(history["loss"][-1], 6), "train_seconds": round(history["seconds"], 2),
        "torch": torch.__version__, "evals": history["evals"]}
    folder = args.out / FOLDER
    save(model, info, folder)
    # the recorded accuracies are those of the files just written, read back
    shipped = load_trained(folder)
    info["train_acc"] = accuracy(shipped, *digits("train", cfg.data_seed))
    info["test_acc"] = accuracy(shipped, *digits("test", cfg.data_seed))
    save(shipped, info, folder)
    print(json.dumps({k: info[k] for k in ("parameters", "final_loss", "train_seconds", "train_acc", "test_acc")}))
    return info


if __name__ == "__main__":
    main()
