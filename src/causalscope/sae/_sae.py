"""Sparse autoencoders and transcoders (ReLU, TopK, JumpReLU), with the encode / decode of SAELens.

>>> sae = SAE(d_in=128, n_latents=512, architecture="topk", k=16, seed=0)
>>> f = sae.encode(x)                  # (..., 512), at most 16 non-zero per token
>>> x_hat = sae.decode(f)              # f @ W_dec + b_dec

``encode``: ``pre = (x - b_dec) @ W_enc + b_enc`` (without ``- b_dec`` where ``apply_b_dec_to_input`` is False, and
always for a transcoder, whose ``b_dec`` is in the output space), then ``relu(pre)`` (``"relu"``, SAELens's
``"standard"``), ``relu`` of the ``k`` largest entries of ``pre`` (``"topk"``), or ``relu(pre) * (pre >
threshold)`` (``"jumprelu"``). ``decode``: ``f @ W_dec + b_dec``. These are SAELens's formulas
(``sae_lens/saes/{standard,topk,jumprelu}_sae.py``, ``transcoder.py``).
"""
from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..errors import InputError, check_flag, check_int, check_seed

#: our architecture names -> SAELens's (cfg.json ``architecture``) for an SAE / a transcoder
SAELENS_NAMES = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}
TRANSCODER_NAMES = {"relu": "transcoder", "topk": "topk_transcoder", "jumprelu": "jumprelu_transcoder"}
#: SAELens's names (and ours) -> (our architecture, is a transcoder)
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    **{a: (a, False) for a in SAELENS_NAMES}, "standard": ("relu", False),
    **{t: (a, True) for a, t in TRANSCODER_NAMES.items()}, "skip_transcoder": ("relu", True)}
#: the tensors each architecture reads (SAELens's key names); "W_skip" only for a skip transcoder
KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")
#: SAELens's on-disk files (sae_lens/constants.py)
CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"


def architecture_of(name: Any) -> tuple[str, bool]:
    """``(architecture, transcoder)`` for an architecture name, ours or SAELens's; else an InputError."""
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise InputError(f"Unknown SAE architecture {name!r}: causalscope reads {', '.join(map(repr, ARCHITECTURES))} "
                         f"(SAELens's 'gated', 'batchtopk' and other variants are not supported).")
    return ARCHITECTURES[name]


class SAE(nn.Module):
    """A sparse autoencoder over one site's activation: ``encode`` to latents, ``decode`` back.

    >>> sae = SAE(d_in=128, n_latents=512, architecture="relu", seed=0)      # random, unit-norm decoder rows
    >>> site = cs.Site("layers.2", sae=sae, features=[3, 7])                 # its latents as a site
    >>> sae = SAE.from_dict({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, architecture="topk",
    ...                     k=32)

    Parameters: ``W_enc`` (d_in, n_latents), ``b_enc`` (n_latents), ``W_dec`` (n_latents, d_out), ``b_dec`` (d_out),
    and ``threshold`` (n_latents) for JumpReLU (SAELens's names and shapes). ``name`` names the SAE in its sites'
    names (``layers.2[sae=<name>, features=3,7]``). ``info`` holds what trained it (:func:`train_sae`). The
    module is an ``nn.Module``: ``sae.to(device)`` moves it next to the model. Encoding reads the activation in
    the SAE's dtype (as SAELens does).
    """

    is_transcoder = False

    def __init__(self, d_in: int, n_latents: int, *, architecture: str = "relu", k: int | None = None,
                 seed: int = 0, apply_b_dec_to_input: bool = True, name: str | None = None,
                 d_out: int | None = None, hook_name: str | None = None) -> None:
        super().__init__()
        arch, coder = architecture_of(architecture)
        if coder != self.is_transcoder:
            raise InputError(f"Architecture {architecture!r} is a {'transcoder' if coder else 'plain SAE'}: build it "
                             f"with {'Transcoder' if coder else 'SAE'}(...) or SAE.from_dict(..., architecture=...).")
        d_in = check_int(d_in, "d_in", low=1)
        n_latents = check_int(n_latents, "n_latents", low=1)
        d_out = d_in if d_out is None else check_int(d_out, "d_out", low=1)
        if not self.is_transcoder and d_out != d_in:
            raise InputError(f"d_out={d_out} differs from d_in={d_in}: an SAE decodes into the activation it encodes. "
                             f"Leave d_out out, or build a Transcoder(d_in, n_latents, d_out=...) to predict another "
                             f"module's output.")
        check_flag(apply_b_dec_to_input, "apply_b_dec_to_input")
        for what, text in (("name", name), ("hook_name", hook_name)):
            if text is not None and not isinstance(text, str):
                raise InputError(f"{what} must be a string (or None), got {type(text).__name__} {text!r:.40}.")
        if arch == "topk":
            if k is None:
                raise InputError("A TopK SAE needs k= (the number of latents kept per token).")
            k = check_int(k, "k", low=1, high=n_latents)
        elif k is not None:
            raise InputError(f"k= is the TopK SAE's number of active latents; a {arch!r} SAE takes none.")
        self.architecture, self.k, self.name, self.hook_name = arch, k, name, hook_name
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input) and not self.is_transcoder
        self.info: dict[str, Any] = {}  # how it was trained (train_sae), saved as training.json
        self.config: dict[str, Any] = {}  # the cfg.json it was loaded from (load_sae)
        g = torch.Generator().manual_seed(check_seed(seed))
        W_dec = torch.randn(n_latents, d_out, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        W_enc = W_dec.T.clone() if d_out == d_in else torch.randn(d_in, n_latents, generator=g) / d_in ** 0.5
        self.W_enc = nn.Parameter(W_enc.contiguous())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.threshold = nn.Parameter(torch.zeros(n_latents)) if arch == "jumprelu" else None
        self.W_skip: nn.Parameter | None = None

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def n_latents(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_sae(self) -> int:  # SAELens's name for n_latents
        return self.n_latents

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[1])

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - b_dec) @ W_enc + b_enc`` (no ``- b_dec`` without ``apply_b_dec_to_input``), in the SAE's dtype."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The latents from the pre-activation: ReLU, TopK (ReLU of the k largest, zeros elsewhere) or JumpReLU."""
        if self.architecture == "topk":
            assert self.k is not None
            top = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        if self.architecture == "jumprelu":
            assert self.threshold is not None
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``(..., n_latents)`` of activations ``(..., d_in)``."""
        if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[-1] != self.d_in:
            raise InputError(f"The SAE reads {self.d_in} dimensions; got an activation of shape "
                             f"{tuple(getattr(x, 'shape', ()))}: give activations (..., {self.d_in}) of the site it "
                             f"was trained on.")
        return self.activation(self.pre_activation(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """``f @ W_dec + b_dec``: the reconstruction (for a transcoder, the predicted output)."""
        if not isinstance(f, torch.Tensor) or f.ndim == 0 or f.shape[-1] != self.n_latents:
            raise InputError(f"decode takes latents (..., {self.n_latents}) (what encode returns); got "
                             f"{type(f).__name__} {tuple(getattr(f, 'shape', ()))}.")
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))`` (a skip transcoder adds ``x @ W_skip.T``)."""
        out = self.decode(self.encode(x))
        if self.W_skip is not None:
            out = out + x.to(self.W_skip.dtype) @ self.W_skip.T
        return out

    def saelens_architecture(self) -> str:
        """The architecture's name in SAELens's cfg.json (``"standard"`` for ReLU)."""
        return SAELENS_NAMES[self.architecture]

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (f"{self.architecture}{k}, d_in={self.d_in}, n_latents={self.n_latents}"
                f"{f', d_out={self.d_out}' if self.is_transcoder else ''}, name={self.name!r}")

    # -- plain tensors and SAELens's folders -------------------------------------------------------------------
    def save(self, path: str | Path, *, store_dtype: torch.dtype | None = None) -> Path:
        """Write the SAE as SAELens does: ``path/cfg.json`` and ``path/sae_weights.safetensors``, plus
        ``path/training.json`` when it was trained here (``info``). Returns the folder.

        >>> sae.save("my-sae"); cs.load_sae("my-sae")       # or sae_lens.SAE.load_from_disk("my-sae")

        ``store_dtype`` stores the tensors in another dtype (e.g. ``torch.float16``: half the bytes); the cfg keeps
        the SAE's dtype, to which loading casts them back (SAELens reads it the same way).
        """
        from safetensors.torch import save_file

        if not isinstance(path, (str, PathLike)) or not str(path).strip():
            raise InputError(f"save takes a folder path (a str or pathlib.Path), got {path!r:.60}.")
        if store_dtype is not None and (not isinstance(store_dtype, torch.dtype) or not store_dtype.is_floating_point):
            raise InputError(f"store_dtype must be a float torch dtype such as torch.float16, got {store_dtype!r}.")
        folder = Path(path).expanduser()
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{str(folder)!r} is a file; SAE.save writes a folder (cfg.json and "
                             f"sae_weights.safetensors): give a folder path.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create the folder {str(folder)!r} ({err.strerror}); give a folder you can write "
                             f"to.") from None
        dtype = str(self.W_enc.dtype).removeprefix("torch.")
        cfg: dict[str, Any] = {
            "architecture": self.saelens_architecture(), "d_in": self.d_in, "d_sae": self.n_latents, "dtype": dtype,
            "device": "cpu", "apply_b_dec_to_input": self.apply_b_dec_to_input, "normalize_activations": "none",
            "reshape_activations": "none"}
        if self.k is not None:
            cfg["k"] = self.k
        if self.is_transcoder:
            cfg["d_out"] = self.d_out
        cfg["metadata"] = {"hook_name": self.hook_name, "sae_lens_version": "6.0.0",
                           "sae_lens_training_version": None}
        cfg["causalscope"] = {"name": self.name, "version": __version__}
        tensors = {k: v.to("cpu", store_dtype or v.dtype).contiguous() for k, v in self.state_tensors().items()}
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        (folder / WEIGHTS_FILE).chmod(0o644)  # (safetensors writes it readable by its owner only)
        (folder / CFG_FILE).write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
        if self.info:
            (folder / "training.json").write_text(json.dumps(self.info, indent=1) + "\n", encoding="utf-8")
        return folder

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The weights under SAELens's key names (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, ``threshold``, ...)."""
        out = {k: getattr(self, k).detach() for k in KEYS}
        if self.threshold is not None:
            out["threshold"] = self.threshold.detach()
        if self.W_skip is not None:
            out["W_skip"] = self.W_skip.detach()
        return out

    @classmethod
    def from_dict(cls, tensors: dict[str, torch.Tensor], *, architecture: str = "relu", k: int | None = None,
                  apply_b_dec_to_input: bool = True, name: str | None = None, hook_name: str | None = None,
                  dtype: torch.dtype | None = None) -> SAE:
        """An SAE (or a transcoder, by ``architecture``) from a dict of tensors under SAELens's key names.

        >>> sae = SAE.from_dict(safetensors.torch.load_file("sae_weights.safetensors"), architecture="jumprelu")

        Reads ``W_enc`` (d_in, n), ``b_enc`` (n), ``W_dec`` (n, d_out), ``b_dec`` (d_out); ``threshold`` (n) (or
        ``log_threshold``, SAELens's training form) for JumpReLU; ``W_skip`` (d_out, d_in) for a skip transcoder; a
        ``scaling_factor`` / ``finetuning_scaling_factor`` (n) is folded into ``W_dec``'s rows. Any other key, a
        missing key or a shape that does not fit raises an :class:`~causalscope.errors.InputError`. ``dtype``:
        the weights' dtype (default: as given). The parameters come frozen (``requires_grad`` False).
        """
        arch, coder = architecture_of(architecture)
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise InputError(f"from_dict takes a dict of tensors under SAELens's names ({', '.join(KEYS)}, ...); "
                             f"got {type(tensors).__name__}.")
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise InputError(f"dtype must be a float torch dtype such as torch.float32 (not a string), got {dtype!r}.")
        ints = sorted(k for k, v in tensors.items() if not v.is_floating_point())
        if ints and dtype is None:
            raise InputError(f"The SAE's tensors {ints} are not floats ({tensors[ints[0]].dtype}); give float tensors, "
                             f"or dtype=torch.float32 to cast them.")
        # NaN / inf anywhere (a log threshold of -inf is a threshold of 0: only NaN is damage there)
        bad_values = sorted(k for k, v in tensors.items() if v.is_floating_point() and
                            bool((v.isnan() if k == "log_threshold" else ~v.isfinite()).any()))
        if bad_values:
            raise InputError(f"The SAE's tensors {bad_values} hold NaN or inf values: the weights are damaged (or "
                             f"training diverged); an SAE with them would give NaN latents.")
        t = dict(tensors)
        if "log_threshold" in t and "threshold" not in t:
            t["threshold"] = t.pop("log_threshold").exp()
        scale = t.pop("finetuning_scaling_factor", t.pop("scaling_factor", None))
        want = [*KEYS, *(["threshold"] if arch == "jumprelu" else []),
                *(["W_skip"] if architecture == "skip_transcoder" else [])]
        missing, extra = [k for k in want if k not in t], sorted(set(t) - set(want))
        if missing or extra:
            raise InputError(f"A {architecture!r} SAE's tensors are {want}; "
                             + (f"missing {missing}" if missing else "") + ("; " if missing and extra else "")
                             + (f"unexpected {extra} (a different architecture?)" if extra else "") + ".")
        W_enc, W_dec = t["W_enc"], t["W_dec"]
        if W_enc.ndim != 2 or W_dec.ndim != 2:
            raise InputError(f"W_enc and W_dec must be 2-D; got {tuple(W_enc.shape)} and {tuple(W_dec.shape)}.")
        d_in, n = W_enc.shape
        d_out = W_dec.shape[1]
        shapes = {"W_enc": (d_in, n), "b_enc": (n,), "W_dec": (n, d_out), "b_dec": (d_out,), "threshold": (n,),
                  "W_skip": (d_out, d_in)}
        bad = [f"{key} {tuple(v.shape)} (expected {shapes[key]})" for key, v in t.items()
               if tuple(v.shape) != shapes[key]]
        if not coder and d_out != d_in:
            bad.append(f"W_dec {tuple(W_dec.shape)} writes {d_out} dims but W_enc reads {d_in} (a transcoder? say "
                       f"architecture='transcoder')")
        if scale is not None and tuple(scale.shape) != (n,):
            bad.append(f"scaling_factor {tuple(scale.shape)} (expected ({n},))")
        if bad:
            raise InputError(f"The SAE's tensors do not fit one another: {'; '.join(bad)}. W_enc is (d_in, n_latents) "
                             f"and W_dec (n_latents, d_out), as SAELens stores them.")
        maker = Transcoder if coder else SAE
        sae = maker(int(d_in), int(n), architecture=architecture, k=k, apply_b_dec_to_input=apply_b_dec_to_input,
                    name=name, d_out=int(d_out), hook_name=hook_name)
        if scale is not None:
            t["W_dec"] = W_dec * scale.to(W_dec.dtype)[:, None]
        for key, v in t.items():  # frozen: an SAE read in is used, not trained (sae.requires_grad_() to train it)
            setattr(sae, key, nn.Parameter(v.detach().to(dtype or v.dtype).clone(), requires_grad=False))
        return sae


class Transcoder(SAE):
    """A transcoder: latents read from a module's input predict its output (``W_dec`` is (n_latents, d_out)).

    >>> tc = Transcoder(d_in=64, n_latents=256, d_out=64, seed=0)
    >>> cs.Site("layers.1.mlp", sae=tc, features=[5])       # latents of the MLP's input, written into its output

    As a site it reads ``f = encode(mlp input)[..., features]`` and an edit ``f -> f'`` adds ``(f' - f) @
    W_dec[features]`` to the MLP's output (the transcoder's error is kept, as for an SAE). ``b_dec`` lives in the
    output space, so encoding never subtracts it (as in SAELens).
    """

    is_transcoder = True

    def __init__(self, d_in: int, n_latents: int, *, architecture: str = "transcoder", k: int | None = None,
                 seed: int = 0, apply_b_dec_to_input: bool = False, name: str | None = None,
                 d_out: int | None = None, hook_name: str | None = None) -> None:
        architecture = TRANSCODER_NAMES.get(architecture, architecture)  # "topk" -> "topk_transcoder"
        super().__init__(d_in, n_latents, architecture=architecture, k=k, seed=seed, apply_b_dec_to_input=False,
                         name=name, d_out=d_out, hook_name=hook_name)
        self.skip = architecture == "skip_transcoder"
        if self.skip:
            self.W_skip = nn.Parameter(torch.zeros(self.d_out, self.d_in))

    def saelens_architecture(self) -> str:
        return "skip_transcoder" if self.skip else TRANSCODER_NAMES[self.architecture]
