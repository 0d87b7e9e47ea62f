"""The feature-directions seed's MLP (input-256-128-64-10, ReLU), for the 8x8 digits data by default.

>>> net = build_digits_mlp(trained=False)      # random weights (seeded); trained=True loads shipped weights
>>> net(torch.zeros(2, 64)).shape
torch.Size([2, 10])

Sites (module paths): ``fc1`` ... ``fc4`` (Linear outputs; ``fc4`` is the logits) and ``act1``, ``act2``,
``act3``: the ReLU outputs, which are what the seed's ``get_layer_activations`` returns.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError

FOLDER = "digits-mlp"
WEIGHTS, INFO = "model.safetensors", "training.json"


class DigitsMLP(nn.Module):
    """``fc1 -> act1 -> fc2 -> act2 -> fc3 -> act3 -> fc4``; inputs are flattened to ``in_features``.

    >>> DigitsMLP(in_features=784)(torch.zeros(1, 28, 28)).shape    # MNIST-sized, as in the seed
    torch.Size([1, 10])
    """

    def __init__(self, in_features: int = 64, n_classes: int = 10) -> None:
        super().__init__()
        self.in_features = in_features
        self.fc1 = nn.Linear(in_features, 256)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(256, 128)
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(128, 64)
        self.act3 = nn.ReLU()
        self.fc4 = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0 or x[0].numel() != self.in_features:
            raise InputError(f"The digits MLP takes {self.in_features} values per input ((batch, {self.in_features}), "
                             f"or images of that many pixels); got inputs shaped {tuple(x.shape)}.")
        x = x.reshape(x.shape[0], self.in_features).float()
        return self.fc4(self.act3(self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))))


def build_digits_mlp(trained: bool = True, in_features: int = 64, seed: int = 0) -> DigitsMLP:
    """The MLP with the weights shipped in the package (``trained=True``), or seeded random weights."""
    if trained:
        return load_trained()
    g = torch.Generator().manual_seed(seed)
    net = DigitsMLP(in_features)
    with torch.no_grad():
        for lin in (net.fc1, net.fc2, net.fc3, net.fc4):
            bound = 1 / lin.in_features ** 0.5
            lin.weight.copy_(torch.empty_like(lin.weight).uniform_(-bound, bound, generator=g))
            lin.bias.copy_(torch.empty_like(lin.bias).uniform_(-bound, bound, generator=g))
    return net.eval()


def _read(folder: Path | None, name: str) -> bytes:
    if folder is not None:
        return (Path(folder) / name).read_bytes()
    return (resources.files(__package__) / "data" / FOLDER / name).read_bytes()


def training_info(folder: str | Path | None = None) -> dict[str, Any]:
    """The ``training.json`` of the shipped weights (or of ``folder``): settings, accuracies, time, versions."""
    return json.loads(_read(None if folder is None else Path(folder), INFO).decode("utf-8"))


def load_trained(folder: str | Path | None = None) -> DigitsMLP:
    """The trained MLP (float32, eval mode) from the package data, or from a ``folder`` written by
    :func:`save`. Never downloads."""
    from safetensors.torch import load as load_safetensors

    src = None if folder is None else Path(folder)
    info = training_info(src)
    state = load_safetensors(_read(src, WEIGHTS))
    model = DigitsMLP(in_features=info["in_features"], n_classes=info["n_classes"])
    model.load_state_dict(state, strict=True)
    return model.eval()
