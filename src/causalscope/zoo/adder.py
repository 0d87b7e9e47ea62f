"""The causal-mediation tutorial's toy network: Linear(3,3) -> Linear(3,3) -> Linear(3,1) computing A + B + C.

Weights are ours, chosen so the hidden neurons play the roles the tutorial finds, disguised by constants:
h12 = A + 7.1 carries A, h13 = B + C + 7.3 carries B + C, h22 = (A + B + C) / 2 + 0.705 carries the sum,
h23 = -0.271 is dead; h11 = A + B + C + 4.89 and h21 = h11 / 10 + 4.9249 feed nothing. For (1, 2, 3)
the activations are the tutorial's: h1 = [10.89, 8.10, 12.30], h2 = [6.01, 3.71, -0.27], output 6.0.

>>> net = build_adder()
>>> net(torch.tensor([[1., 2., 3.]]))
tensor([[6.]])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError

W1 = [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
B1 = [4.89, 7.10, 7.30]
W2 = [[0.1, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]]
B2 = [4.9249, -6.495, -0.271]
W3 = [[0.0, 2.0, 0.0]]
B3 = [-1.41]


class Adder(nn.Module):
    """``l1``, ``l2``, ``l3`` as in the tutorial (no nonlinearity); takes (batch, 3) or a list of 3 numbers.

    >>> Adder()([1, 2, 3]).shape
    torch.Size([1, 1])
    """

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(3, 3)
        self.l2 = nn.Linear(3, 3)
        self.l3 = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor | Sequence[float]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.tensor([list(x)], dtype=torch.float32)
        if x.ndim == 0 or x.shape[-1] != 3:
            raise InputError(f"The adder takes inputs shaped (batch, 3): the columns A, B, C; got "
                             f"{tuple(x.shape)}.")
        return self.l3(self.l2(self.l1(x.float())))


def build_adder(rotated: bool = False, seed: int = 0) -> Adder:
    """The tutorial's adder; ``rotated=True`` rotates layer 1 by a random orthogonal matrix (seeded), so
    no single neuron of ``l1`` carries A any more while the function is unchanged (for DAS).

    >>> build_adder(rotated=True)(torch.tensor([[1., 2., 3.]]))   # still 6
    """
    net = Adder()
    w1, b1, w2 = torch.tensor(W1), torch.tensor(B1), torch.tensor(W2)
    if rotated:
        g = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
        rot = (q * torch.sign(torch.diagonal(r))).float()  # a uniformly random orthogonal matrix
        w1, b1, w2 = rot @ w1, rot @ b1, w2 @ rot.T
    with torch.no_grad():
        for lin, w, b in ((net.l1, w1, b1), (net.l2, w2, torch.tensor(B2)),
                          (net.l3, torch.tensor(W3), torch.tensor(B3))):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return net.eval()
