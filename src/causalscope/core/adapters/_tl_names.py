"""TransformerLens hook names on any model with canonical sites: ``blocks.3.hook_resid_pre``, ``hook_embed``,
``blocks.3.attn.hook_z`` ... resolve to the canonical site they name, so TransformerLens code carries over to
Hugging Face models (a HookedTransformer takes them natively, and takes the canonical names too).

>>> tl_alias(adapter.aliases(), "blocks.2.hook_resid_pre")     # block 2's input
('transformer.h.2', 'input', None)
"""
from __future__ import annotations

import re
from collections.abc import Mapping

Alias = tuple[str, str, int | None]

#: TransformerLens hook name (with ``{i}`` for the block) -> the canonical site, and whether it is that site's input
_PER_BLOCK: dict[str, tuple[str, bool]] = {
    "hook_resid_pre": ("layers.{i}", True),
    "hook_resid_post": ("layers.{i}", False),
    "hook_attn_out": ("layers.{i}.attn", False),
    "hook_mlp_out": ("layers.{i}.mlp", False),
    "attn.hook_z": ("layers.{i}.attn.z", False),
}
_GLOBAL: dict[str, str] = {"hook_embed": "embed", "hook_pos_embed": "pos_embed",
                           "ln_final.hook_normalized": "final_norm", "unembed": "unembed"}
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")

#: TransformerLens names with no module of their own on a Hugging Face model, and what to use instead
UNMAPPED: dict[str, str] = {
    "hook_resid_mid": "the residual stream between attention and MLP has no module here: use 'layers.{i}.mlp' "
                      "with io='input' on models whose MLP reads it unnormalised, or the MLP's norm input by path",
    "attn.hook_pattern": "attention probabilities are computed inside the attention module: patch "
                         "'layers.{i}.attn.z' (per-head outputs) instead, or load the model in TransformerLens",
    "attn.hook_attn_scores": "attention scores are computed inside the attention module: use 'layers.{i}.attn.z'",
}


def tl_alias(aliases: Mapping[str, Alias], name: str) -> Alias | None:
    """The canonical site a TransformerLens hook name stands for, as an alias entry; None if it names none."""
    if name in _GLOBAL:
        return aliases.get(_GLOBAL[name])
    match = _BLOCK.fullmatch(name)
    if match is None or match.group(2) not in _PER_BLOCK:
        return None
    canonical, is_input = _PER_BLOCK[match.group(2)]
    target = aliases.get(canonical.format(i=match.group(1)))
    if target is None:
        return None
    return (target[0], "input", target[2]) if is_input else target


def tl_hint(name: str) -> str | None:
    """Why a TransformerLens hook name has no site on this model, and what to use instead (None: not a TL name)."""
    match = _BLOCK.fullmatch(name)
    key = match.group(2) if match else name
    if key in UNMAPPED:
        return UNMAPPED[key].format(i=match.group(1) if match else "i")
    return None


def tl_names(aliases: Mapping[str, Alias]) -> list[str]:
    """Every TransformerLens hook name that resolves on a model with these canonical aliases."""
    out = [n for n, c in _GLOBAL.items() if c in aliases]
    blocks = sorted({int(k.split(".")[1]) for k in aliases if re.fullmatch(r"layers\.\d+", k)})
    out += [f"blocks.{i}.{h}" for i in blocks for h, (c, _) in _PER_BLOCK.items() if c.format(i=i) in aliases]
    return out
