"""Reading SAELens's on-disk format (a folder with ``cfg.json`` and ``sae_weights.safetensors``) without sae-lens,
and the SAEs that ship with causalscope.

>>> sae = load_sae("path/to/sae-folder")          # what SAE.save / SAELens's save_model wrote
>>> sae = load_bundled("facts-gpt-layers.2")      # the small SAE trained on facts-gpt's residual stream
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, close_names
from ._sae import CFG_FILE, SAE, WEIGHTS_FILE

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPES.update({f"torch.{k}": v for k, v in DTYPES.items()})
#: SAEs that ship with the package: name -> folder under causalscope/zoo/data
BUNDLED = {"facts-gpt-layers.2": ("facts-gpt-sae", "layers.2")}


def load_sae(path: str | Path, *, name: str | None = None, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None) -> SAE:
    """An SAE (or transcoder) from a folder in SAELens's format: ``cfg.json`` + ``sae_weights.safetensors``.

    >>> sae = load_sae("gpt2-small-res-jb/blocks.8.hook_resid_pre")
    >>> sae.architecture, sae.d_in, sae.n_latents, sae.hook_name
    ('relu', 768, 24576, 'blocks.8.hook_resid_pre')

    Reads the cfg of SAELens 6 (``architecture`` ``standard`` / ``topk`` / ``jumprelu`` / ``transcoder`` /
    ``jumprelu_transcoder`` / ``skip_transcoder``, ``k``, ``apply_b_dec_to_input``, ``metadata.hook_name``) and
    of earlier versions (``activation_fn_str`` / ``activation_fn`` ``"topk"`` with ``activation_fn_kwargs.k``,
    a top-level ``hook_name`` / ``hook_point``). Weights are cast to the cfg's ``dtype`` (or ``dtype=``), as SAELens
    does. ``name`` (default: the folder's name, or the one ``SAE.save`` recorded) names it in site names.
    Activation normalisation per input (``constant_norm_rescale``, ``layer_norm``), ``hook_z`` reshaping and
    other architectures raise an :class:`~causalscope.errors.InputError` rather than load something that would
    encode differently. sae-lens need not be installed.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"load_sae takes a folder path (a str or pathlib.Path) holding {CFG_FILE} and {WEIGHTS_FILE}; "
                         f"got {path!r:.60}.")
    if name is not None and not isinstance(name, str):
        raise InputError(f"name must be a string (or None: the folder's name), got {type(name).__name__} {name!r:.40}.")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise InputError(f"dtype must be a float torch dtype such as torch.float16 (not a string), got {dtype!r}.")
    target = _device(device)
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"load_sae takes a folder holding {CFG_FILE} and {WEIGHTS_FILE} (SAELens's format); "
                         f"{str(folder)!r} is {'a file' if folder.exists() else 'not there'}.")
    missing = [f for f in (CFG_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
    if missing:
        raise InputError(f"{str(folder)!r} lacks {' and '.join(missing)}: an SAE folder in SAELens's format holds "
                         f"{CFG_FILE} and {WEIGHTS_FILE} (it has {sorted(p.name for p in folder.iterdir())}).")
    try:
        cfg = json.loads((folder / CFG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{str(folder / CFG_FILE)!r} is not JSON ({e}).") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{str(folder / CFG_FILE)!r} holds {type(cfg).__name__}, not a JSON object.")
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError) as e:
        raise InputError(f"{str(folder / WEIGHTS_FILE)!r} is not a safetensors file ({e}).") from None
    arch, k = _architecture(cfg)
    _refuse_unsupported(cfg)
    scale = tensors.get("scaling_factor", tensors.get("finetuning_scaling_factor"))
    if scale is not None and bool(torch.all(scale == 1)):
        tensors.pop("scaling_factor", None)
        tensors.pop("finetuning_scaling_factor", None)
    elif scale is not None and not cfg.get("finetuning_scaling_factor"):
        raise InputError(f"{str(folder)!r} has a scaling_factor that is not all ones, but its cfg says "
                         f"finetuning_scaling_factor is false (SAELens refuses this folder too).")
    cfg_dtype = cfg.get("dtype", "float32")
    if dtype is None and cfg_dtype not in DTYPES:
        raise InputError(f"cfg.json's dtype {cfg_dtype!r} is not one of {sorted(DTYPES)}; pass dtype=.")
    meta = cfg.get("metadata") or cfg.get("meta") or {}
    hook = meta.get("hook_name") if isinstance(meta, dict) else None
    hook = hook or cfg.get("hook_name") or cfg.get("hook_point")
    ours: dict[str, Any] = cfg["causalscope"] if isinstance(cfg.get("causalscope"), dict) else {}
    sae = SAE.from_dict(tensors, architecture=arch, k=k, name=name or ours.get("name") or folder.name,
                        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)), hook_name=hook,
                        dtype=dtype or DTYPES[cfg_dtype])
    for key, got in (("d_in", sae.d_in), ("d_sae", sae.n_latents), ("d_out", sae.d_out)):
        if key in cfg and cfg[key] is not None and _cfg_int(cfg, key) != got:
            raise InputError(f"cfg.json says {key}={cfg[key]}, but the weights have {got}.")
    sae.config = cfg
    training = folder / "training.json"
    if training.is_file():
        try:
            sae.info = json.loads(training.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{str(training)!r} is not JSON ({e}): delete it (it only records how the SAE was "
                             f"trained) or write it again.") from None
    if target is None:
        return sae
    try:
        return sae.to(target)
    except (RuntimeError, AssertionError) as e:  # e.g. a CUDA device on a machine without one
        raise InputError(f"cannot move the SAE to {str(target)!r} ({e}); give a device this machine has, e.g. "
                         f"'cpu'.") from None


def _device(device: Any) -> torch.device | None:
    """``device`` as a torch.device (None: stay on the CPU); InputError for a name torch does not know."""
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, (str, int)) or isinstance(device, bool):
        raise InputError(f"device must be a torch device or its name ('cpu', 'cuda:0'), got {device!r}.")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"device={device!r} is not a device torch knows: give 'cpu', 'cuda', 'cuda:0', 'mps', ... "
                         f"(or leave it out: the CPU).") from None


def _cfg_int(cfg: dict[str, Any], key: str, value: Any = None) -> int:
    """An int of cfg.json (``value`` if given, else ``cfg[key]``); InputError when it is not one."""
    v = cfg.get(key) if value is None else value
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"cfg.json's {key} must be an int, got {v!r}: the cfg is damaged or not SAELens's format.")
    return v


def _architecture(cfg: dict[str, Any]) -> tuple[str, int | None]:
    """The architecture (SAELens's name) and TopK's k from a cfg of any SAELens version."""
    arch = cfg.get("architecture") or "standard"
    fn = cfg.get("activation_fn", cfg.get("activation_fn_str")) or "relu"
    kw = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kw.get("k") if isinstance(kw, dict) else None)
    if arch == "standard" and fn == "topk":  # SAELens before 6: a TopK SAE was "standard" with a topk activation
        arch = "topk"
    elif fn not in ("relu", "topk"):
        raise InputError(f"cfg.json's activation function {fn!r} is not supported (causalscope reads relu, topk and "
                         f"jumprelu SAEs).")
    if arch not in ("topk", "topk_transcoder"):
        return arch, None
    if k is None:
        raise InputError("cfg.json describes a TopK SAE but gives no k (neither 'k' nor activation_fn_kwargs.k).")
    return arch, _cfg_int(cfg, "k", k)


def _refuse_unsupported(cfg: dict[str, Any]) -> None:
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, False, "none", "expected_average_only_in"):
        raise InputError(f"cfg.json's normalize_activations={norm!r} rescales every input before encoding; "
                         f"causalscope's SAE sites do not implement it. Fold the normalisation into the weights "
                         f"first, or use an SAE without it.")
    reshape = cfg.get("reshape_activations", "none")
    if reshape not in (None, "none"):
        raise InputError(f"cfg.json's reshape_activations={reshape!r} is not supported: give the SAE a site whose "
                         f"activation has d_in={cfg.get('d_in')} on its last dim.")


def bundled() -> list[str]:
    """The names of the SAEs that ship with causalscope.

    >>> bundled()
    ['facts-gpt-layers.2']
    """
    return sorted(BUNDLED)


def load_bundled(name: str = "facts-gpt-layers.2") -> SAE:
    """An SAE that ships with causalscope (no download).

    >>> sae = load_bundled("facts-gpt-layers.2")      # TopK, 512 latents, on cs.load("facts-gpt")'s "layers.2"
    >>> site = cs.Site("layers.2", sae=sae, features=[0, 1])

    ``sae.info`` holds how it was trained (``python -m causalscope.sae.train_facts_sae``): seconds, steps,
    reconstruction MSE, explained variance and L0 on held-out prompts.
    """
    if name not in BUNDLED:
        near = close_names(str(name), BUNDLED)
        raise InputError(f"No bundled SAE {name!r}" + (f"; did you mean {near[0]!r}?" if near else ".") +
                         f" Bundled: {bundled()}.")
    folder, sub = BUNDLED[name]
    root = resources.files("causalscope.zoo").joinpath("data", folder, sub)
    with resources.as_file(root) as path:
        return load_sae(path, name=name)
