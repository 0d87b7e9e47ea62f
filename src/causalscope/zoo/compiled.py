"""A compiled (tracr-style) transformer in plain PyTorch: no layer norm, ReLU MLPs, per-head hook points.

Weights laid out as TransformerLens names them (``W_Q`` is heads x d_model x d_head), so a tracr program's
weights copy in exactly. Every part a circuit method touches is a module whose output is a site:
``blocks.i.attn.hook_z`` (B, T, H, d_head), ``blocks.i.attn.hook_result`` (B, T, H, d_model: each head's
write into the residual stream), ``blocks.i.mlp.hook_post`` (B, T, d_mlp), ``blocks.i.mlp`` and ``hook_embed``.

>>> cfg = CompiledConfig(n_layers=2, d_model=16, n_heads=2, d_head=4, d_mlp=8, d_vocab=5, d_vocab_out=3, n_ctx=6)
>>> net = CompiledTransformer(cfg)
>>> net(torch.tensor([[0, 1, 2]])).shape
torch.Size([1, 3, 3])
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CompiledConfig:
    """Shape of a compiled transformer. ``causal=False`` is tracr's default (attention sees every position).

    ``pad_id``: the token id of tracr's PAD, or None. Where set, no position attends to a PAD position
    (tracr's input mask), so sequences of different lengths share one batch, padded at the end.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    causal: bool = False
    pad_id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class HeadAttention(nn.Module):
    """Multi-head attention with each head's residual write exposed (``hook_result``).

    ``heads(x)`` takes one input (B, T, d_model) shared by all heads or one per head (B, T, H, d_model),
    which is what edge patching needs; ``forward`` sums the heads and adds ``b_O``.
    """

    def __init__(self, cfg: CompiledConfig) -> None:
        super().__init__()
        H, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.zeros(H, d, dh))
        self.W_K = nn.Parameter(torch.zeros(H, d, dh))
        self.W_V = nn.Parameter(torch.zeros(H, d, dh))
        self.W_O = nn.Parameter(torch.zeros(H, dh, d))
        self.b_Q = nn.Parameter(torch.zeros(H, dh))
        self.b_K = nn.Parameter(torch.zeros(H, dh))
        self.b_V = nn.Parameter(torch.zeros(H, dh))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.hook_pattern = nn.Identity()
        self.hook_z = nn.Identity()
        self.hook_result = nn.Identity()

    def heads(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head residual writes (B, T, H, d_model) for input (B, T, d_model) or (B, T, H, d_model).

        ``key_mask`` (B, T) bool: False at positions no query may attend to (PAD); tracr's -1e30 fill.

        Computed head-major, (H, B, T, ...), with batched matrix products: Q, K and V of all heads come from
        one ``baddbmm`` (weights concatenated to (H, d_model, 3 d_head); a shared input is broadcast to the
        heads without a copy), scores and ``pattern @ V`` are (H*B)-batched products, and every head's
        write is one ``bmm`` with ``W_O``; on a CPU the softmax is written out. The hooks see views in the
        usual layouts (``hook_pattern`` (B, H, T, T), ``hook_z`` (B, T, H, d_head), ``hook_result``
        (B, T, H, d_model)); what a hook returns is used downstream. The same numbers as the einsum form
        up to float32 rounding (other summation orders), and faster for compiled models' small T and d_head.
        """
        B, T = x.shape[0], x.shape[1]
        H, d, dh = self.W_Q.shape
        W = torch.cat([self.W_Q, self.W_K, self.W_V], -1)  # (H, d, 3 dh)
        b = torch.cat([self.b_Q, self.b_K, self.b_V], -1)[:, None, :]  # (H, 1, 3 dh)
        if x.ndim == 3:
            xh = x.reshape(1, B * T, d).expand(H, B * T, d)  # every head reads the same rows
        else:
            xh = x.permute(2, 0, 1, 3).reshape(H, B * T, d)  # a view for (B, T, H, d) contiguous
        q, k, v = torch.baddbmm(b, xh, W).view(H, B, T, 3 * dh).split(dh, -1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dh)  # (H, B, T, T)
        if self.cfg.causal:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[None, :, None, :], -1e30)
        if scores.device.type == "cpu":  # torch's CPU softmax is ~10x slower on rows this short (T <= 10)
            e = (scores - scores.amax(-1, keepdim=True).detach()).exp()
            pattern = e / e.sum(-1, keepdim=True)
        else:
            pattern = torch.softmax(scores, dim=-1)
        pattern = self.hook_pattern(pattern.transpose(0, 1)).transpose(0, 1)
        z = torch.matmul(pattern, v)  # (H, B, T, dh)
        z = self.hook_z(z.permute(1, 2, 0, 3)).permute(2, 0, 1, 3)
        out = torch.bmm(z.reshape(H, B * T, dh), self.W_O).view(H, B, T, d)
        return self.hook_result(out.permute(1, 2, 0, 3))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.heads(x, key_mask).sum(-2) + self.b_O


class ReluMLP(nn.Module):
    """``W_in`` -> ReLU (``hook_post``) -> ``W_out``."""

    def __init__(self, cfg: CompiledConfig) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.zeros(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_post = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_post(torch.relu(x @ self.W_in + self.b_in)) @ self.W_out + self.b_out


class Block(nn.Module):
    """Attention then MLP, each added to the residual stream (no layer norm)."""

    def __init__(self, cfg: CompiledConfig) -> None:
        super().__init__()
        self.attn = HeadAttention(cfg)
        self.mlp = ReluMLP(cfg)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(x, key_mask)
        return x + self.mlp(x)


class CompiledTransformer(nn.Module):
    """Token + position embeddings, ``n_layers`` blocks, a linear unembedding to ``d_vocab_out`` outputs.

    >>> net = CompiledTransformer(cfg)
    >>> logits = net(tokens)          # (B, T, d_vocab_out); tracr reads positions 1.. (0 is BOS)
    """

    def __init__(self, cfg: CompiledConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.zeros(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.zeros(cfg.n_ctx, cfg.d_model))
        self.hook_embed = nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.W_U = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_vocab_out))
        self.unembed = nn.Identity()

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The residual stream before block 0 (token + position embeddings)."""
        T = tokens.shape[1]
        if T > self.cfg.n_ctx:
            raise ValueError(f"{T} positions, but this model has n_ctx={self.cfg.n_ctx}.")
        return self.hook_embed(self.W_E[tokens] + self.W_pos[:T])

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """False at PAD positions (no query attends there); None when the model has no PAD token."""
        return None if self.cfg.pad_id is None else tokens != self.cfg.pad_id

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        mask = self.key_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.unembed(x @ self.W_U)


def random_compiled(cfg: CompiledConfig, seed: int = 0, scale: float = 0.5) -> CompiledTransformer:
    """A CompiledTransformer with random weights (tests build graphs from configs, never from downloads).

    >>> net = random_compiled(CompiledConfig(2, 8, 2, 4, 8, 5, 3, 6), seed=1)
    """
    net = CompiledTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale / math.sqrt(max(p.shape[-1], 1)) ** 0.5)
    return net.eval()
