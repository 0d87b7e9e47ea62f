"""Per-head attention arithmetic shared by the circuit-graph parts of rotary Hugging Face LMs (Llama family,
GPT-NeoX): per-head projections, rotary positions, causal (sliding-window) attention, per-head output writes.

>>> q = project(xn, wq, bq)                      # (B, T, H, e) from (B, T, d) or per-head copies (B, T, H, d)
>>> q, k = rotate(q, cos, sin), rotate(k, cos, sin)
>>> writes = out_proj(attend(q, k, v, scale, None), o_proj.weight)     # (B, T, H, d)
"""
from __future__ import annotations

import torch
from torch import nn


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` (B, T, H, e) with ``cos`` / ``sin`` (1 or B, T, r): the first ``r`` dims rotate
    (``rotate_half`` pairs i and i + r/2), the rest pass (partial rotary), as transformers' apply_rotary_pos_emb.
    """
    r = cos.shape[-1]
    cos, sin = cos[:, :, None], sin[:, :, None]
    rot, rest = x[..., :r], x[..., r:]
    half = torch.cat((-rot[..., r // 2:], rot[..., : r // 2]), dim=-1)
    out = rot * cos + half * sin
    return out if rest.shape[-1] == 0 else torch.cat((out, rest), dim=-1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, key_mask: torch.Tensor | None,
           window: int | None = None) -> torch.Tensor:
    """Causal attention per head: (B, T, H, e) queries, keys, values -> (B, T, H, e) head outputs ``z``.

    Softmax in float32 (as transformers' eager attention), then the values' dtype. ``window``: a key ``k`` is
    seen from query ``q`` only when ``k > q - window`` (transformers' sliding-window overlay). ``key_mask``:
    (B, T) bool, False at padding no query attends to.
    """
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * scale
    T = q.shape[1]
    pos = torch.arange(T, device=scores.device)
    hidden = pos[None, :] > pos[:, None]
    if window is not None:
        hidden = hidden | (pos[None, :] <= pos[:, None] - int(window))
    low = torch.finfo(scores.dtype).min
    scores = scores.masked_fill(hidden, low)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :].to(scores.device), low)
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    return torch.einsum("bhqk,bkhe->bqhe", pattern, v)


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Per-head projection: ``x`` (B, T, d) or per-head copies (B, T, H, d), ``weight`` (H, e, d), ``bias``
    (H, e) or None -> (B, T, H, e)."""
    spec = "btd,hed->bthe" if x.ndim == 3 else "bthd,hed->bthe"
    out = torch.einsum(spec, x, weight)
    return out if bias is None else out + bias


def out_proj(z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-head writes (B, T, H, d) from head outputs ``z`` (B, T, H, e) and an output projection's
    ``nn.Linear`` weight (d, H * e): head ``h``'s write is ``z_h`` times its columns ``h*e : (h+1)*e``."""
    H, e = z.shape[2], z.shape[3]
    return torch.einsum("bqhe,dhe->bqhd", z, weight.view(-1, H, e))


def zero_bias(linear: nn.Linear) -> torch.Tensor:
    """An output projection's bias, or zeros (d_model,) where it has none."""
    if linear.bias is not None:
        return linear.bias
    return torch.zeros(linear.weight.shape[0], dtype=linear.weight.dtype, device=linear.weight.device)


def positions(rotary: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own rotary module on positions 0 .. T-1: cos, sin (1, T, rotary dims) in ``x``'s dtype."""
    pos = torch.arange(x.shape[1], device=x.device)[None]
    cos, sin = rotary(x, pos)
    return cos, sin
