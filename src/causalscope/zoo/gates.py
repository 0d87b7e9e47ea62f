"""Single-neuron AND / OR gates (Linear(2, 1) + Sigmoid): the latent-circuit toy models.

The weights the seed notebook trained (BCE, SGD lr 0.1, 1000 epochs on the four truth-table rows) are
shipped as ``weights="seed"``; :func:`train_gate` reproduces that training deterministically.

>>> net = build_gate("and")                       # the seed's trained AND weights
>>> net(torch.tensor([[1., 1.], [0., 0.]]))       # tensor([[0.7872], [0.0082]])
"""
from __future__ import annotations

from typing import Literal, cast

import torch
from torch import nn

from ..errors import InputError

#: (weight, bias) printed by the seed notebook after training (model.0.weight, model.0.bias)
SEED_WEIGHTS: dict[str, tuple[tuple[float, float], float]] = {
    "and": ((3.0482, 3.0556), -4.7946),
    "or": ((4.0211, 4.0242), -1.4725),
}
TRUTH = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


class GateNet(nn.Module):
    """``model = Sequential(Linear(2, 1), Sigmoid())``; site ``"model.0"`` with ``io="input"`` is the two inputs.

    >>> GateNet()(torch.ones(3, 2)).shape
    torch.Size([3, 1])
    """

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _check(kind: str) -> Literal["and", "or"]:
    kind = str(kind).lower()
    if kind not in SEED_WEIGHTS:
        raise InputError(f"gate kind must be 'and' or 'or', got {kind!r}.")
    return cast(Literal["and", "or"], kind)


def build_gate(kind: Literal["and", "or"] = "and", weights: Literal["seed", "trained"] = "seed",
               seed: int = 0) -> GateNet:
    """An AND or OR gate network with the seed notebook's weights, or trained here with ``seed``.

    >>> build_gate("or").model[0].weight
    """
    kind = _check(kind)
    if weights == "trained":
        return train_gate(kind, seed=seed)
    if weights != "seed":
        raise InputError(f"weights must be 'seed' or 'trained', got {weights!r}.")
    net = GateNet()
    (w0, w1), b = SEED_WEIGHTS[kind]
    linear = cast(nn.Linear, net.model[0])
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[w0, w1]]))
        linear.bias.copy_(torch.tensor([b]))
    return net.eval()


def train_gate(kind: Literal["and", "or"] = "and", seed: int = 0, epochs: int = 1000, lr: float = 0.1) -> GateNet:
    """Train the gate as the seed notebook does (BCE, SGD, shuffled truth table each epoch), seeded.

    >>> net = train_gate("and", seed=0)
    >>> (net(TRUTH) > 0.5).flatten().tolist()
    [False, False, False, True]
    """
    kind = _check(kind)
    y = (TRUTH.sum(1, keepdim=True) >= (2 if kind == "and" else 1)).float()
    g = torch.Generator().manual_seed(seed)
    net = GateNet()
    linear = cast(nn.Linear, net.model[0])
    with torch.no_grad():  # deterministic init from our generator (not the global RNG)
        linear.weight.copy_(torch.empty(1, 2).uniform_(-0.7071, 0.7071, generator=g))
        linear.bias.copy_(torch.empty(1).uniform_(-0.7071, 0.7071, generator=g))
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.BCELoss()
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(4, generator=g)
            opt.zero_grad()
            loss = loss_fn(net(TRUTH[order]), y[order])
            loss.backward()
            opt.step()
    for p in net.parameters():
        p.grad = None
    return net.eval()
