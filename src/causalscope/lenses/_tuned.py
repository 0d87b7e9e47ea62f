"""The tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens"): one
affine translator per layer, trained so that the model's head reads the translated residual stream as the final
layer's distribution.

>>> import causalscope as cs
>>> from causalscope.zoo.facts import facts
>>> lens = cs.tuned_lens("facts-gpt", [f.prompt for f in facts("train")[:400]], steps=100, seed=0)
>>> lens.compare([f.prompt for f in facts("heldout")[:200]]).values      # mean KL per layer: logit lens, tuned lens
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from causalscope._version import __version__

from ..core import Model, input_setting, preserved, tqdm
from ..errors import InputError, check_flag, check_int, check_number, check_seed
from ._cells import kl_from, lens_cells, log_probs, mean_kl
from ._compare import LensComparison, side_by_side
from ._inputs import (
    Head,
    Stream,
    answer_ids,
    check_chunk,
    check_k,
    check_layers,
    lens_model,
    n_layers_of,
    prepared,
    rows_per_chunk,
    stream,
    vocab_size,
)
from ._logit import LensResult, lens_result, logit_lens

_FORMAT = "causalscope.TunedLens"
_FORMAT_VERSION = 1


class TunedLens:
    """Per-layer affine translators for one model: layer ``l``'s residual ``h`` is read as
    ``head(h + W_l h + b_l)`` (``A_l = I + W_l``; ``W_l`` and ``b_l`` start at zero, so training starts from the
    logit lens). The last block needs no translator: its read-out is the model's output.

    >>> lens = cs.tuned_lens(m, train_prompts, steps=250, seed=0)
    >>> r = lens.apply("Stailu Heilpes was born in the city of", answer="Arvena")   # a LensResult, as logit_lens
    >>> lens.compare(heldout_prompts).plot()           # mean KL to the final layer per layer, both lenses
    >>> lens.plot("Stailu Heilpes was born in the city of")   # logit lens and tuned lens side by side
    >>> lens.save("facts.lens"); cs.TunedLens.load("facts.lens", m)

    ``translators``: ``{layer: (W, b)}`` (float32, on the model's device); ``meta``: the training settings and
    the mean training KL of each layer at the last step.
    """

    def __init__(self, model: Any, translators: dict[int, tuple[torch.Tensor, torch.Tensor]],
                 meta: dict[str, Any]) -> None:
        self.model: Model
        self.model, self.head = lens_model(model)
        self.n_layers = n_layers_of(self.model)
        self.translators = _checked(translators, self.n_layers, _model_width(self.model))
        if not isinstance(meta, dict):
            raise InputError(f"meta must be a dict of the lens's settings (what tuned_lens records; {{}} for none), "
                             f"got {type(meta).__name__}.")
        self.meta = meta

    def __repr__(self) -> str:
        return (f"<TunedLens of {self.model.name!r}: translators for layers {sorted(self.translators)} "
                f"(+ the last block, read as is)>")

    @property
    def layers(self) -> list[int]:
        """Every layer the lens reads: the trained ones and the last block."""
        return sorted({*self.translators, self.n_layers - 1})

    def translate(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s residual ``h`` (..., d) translated (``h + W h + b``), in ``h``'s dtype; the last block's
        as it is."""
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise InputError(f"layer must be an int (a block index, one of {self.layers}), got {layer!r}.")
        if not isinstance(h, torch.Tensor) or not h.is_floating_point():
            raise InputError(f"h must be a float tensor (..., d) of layer {layer}'s residual stream, got "
                             f"{type(h).__name__}.")
        if layer == self.n_layers - 1 and layer not in self.translators:
            return h
        if layer not in self.translators:
            raise InputError(f"This tuned lens has no translator for layer {layer}; it has layers {self.layers}.")
        w, b = self.translators[layer]
        if h.shape[-1] != w.shape[0]:
            raise InputError(f"h is {tuple(h.shape)}, but the translators read the model's width {w.shape[0]} on "
                             f"the last dim: give the residual stream after block {layer}.")
        x = h.to(w.dtype)
        return (x + x @ w.T + b).to(h.dtype)

    def _layers(self, layers: Any) -> list[int]:
        if layers is None:
            return self.layers
        chosen = check_layers(layers, self.n_layers)
        missing = [i for i in chosen if i not in self.layers]
        if missing:
            raise InputError(f"This tuned lens was trained for layers {self.layers}; it has no translator for "
                             f"{missing}. Pass layers from that list (or train one with those layers).")
        return chosen

    def apply(self, prompts: Any, *, layers: Any = None, answer: Any = None, k: int = 5,
              chunk_size: int | None = None) -> LensResult:
        """The tuned-lens read-out of ``prompts``: the same :class:`LensResult` as :func:`logit_lens` (top-k tokens,
        the answer's probability and rank, KL to the final layer per cell), through the translators.

        >>> lens.apply(["the cat sat on the", "a dog ran by the"], answer="mat").answer_rank
        """
        m = self.model
        chosen = self._layers(layers)
        vocab = vocab_size(m)
        k = check_k(k, vocab)
        chunk = check_chunk(chunk_size)
        prep = prepared(m, prompts)
        answers = answer_ids(m, answer, int(prep[1].shape[0]))  # checked before the model runs
        s = stream(m, prompts, chosen, chunk, prep)
        with preserved(m.module):
            cells = lens_cells(self.head, self.translate, s, chosen, k, answers,
                               rows_per_chunk(chunk, int(s.ids.shape[1]), vocab, len(s.tokens)))
        meta = {"method": "tuned_lens", "lens": "tuned lens", "model": m.name, "prompts": input_setting(prompts),
                "layers": chosen, "answer": input_setting(answer), "k": k, "chunk_size": chunk_size,
                "training": self.meta, "title": "tuned lens"}
        return lens_result(m, s, cells, chosen, answers, meta)

    def compare(self, prompts: Any, *, layers: Any = None, chunk_size: int | None = None) -> LensComparison:
        """Mean KL(final layer || lens) over every token of ``prompts``, per layer, for the logit lens and this
        tuned lens (dims ``("lens", "layer")``). Use prompts the lens was not trained on.

        >>> c = lens.compare(heldout_prompts)
        >>> bool((c.sel(lens="tuned lens").values < c.sel(lens="logit lens").values)[:-1].all())
        True
        """
        m = self.model
        chosen = self._layers(layers)
        chunk = check_chunk(chunk_size)
        s = stream(m, prompts, chosen, chunk)
        rows = rows_per_chunk(chunk, int(s.ids.shape[1]), vocab_size(m), len(s.tokens))
        with preserved(m.module):
            both = torch.stack([mean_kl(self.head, None, s, chosen, rows),
                                mean_kl(self.head, self.translate, s, chosen, rows)])
        meta = {"method": "tuned_lens.compare", "model": m.name, "prompts": input_setting(prompts), "layers": chosen,
                "chunk_size": chunk_size, "n_tokens": int(s.lengths.sum()), "training": self.meta,
                "title": "KL to the final layer (held-out tokens)"}
        return LensComparison(both, ("lens", "layer"), {"lens": ["logit lens", "tuned lens"], "layer": chosen}, meta,
                              name="KL(final || lens) [nats]")

    def plot(self, prompt: Any, *, answer: Any = None, backend: str = "matplotlib") -> Any:
        """The logit lens and the tuned lens of one prompt, side by side: layers down, tokens across, each cell
        coloured by its top token's probability and labelled with that token.

        >>> lens.plot("Stailu Heilpes was born in the city of")
        """
        if not isinstance(prompt, str) and not (isinstance(prompt, torch.Tensor) and prompt.ndim == 1):
            raise InputError(f"plot draws one prompt (a string or 1-D token ids); got {type(prompt).__name__}. For "
                             f"many prompts, compare(prompts).plot() draws the mean KL per layer.")
        return side_by_side(logit_lens(self.model, prompt, layers=self.layers, answer=answer),
                            self.apply(prompt, answer=answer), backend)

    # -- files ---------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the translators to one safetensors file (tensors ``layers.{l}.weight`` / ``layers.{l}.bias`` and
        the settings as JSON in its header); returns the path.

        >>> lens.save("facts-gpt.lens.safetensors")
        """
        from safetensors.torch import save_file

        p = _path(path, "save")
        if p.is_dir():
            raise InputError(f"{str(p)!r} is a folder; give a file path such as "
                             f"{str(p / 'lens.safetensors')!r}.")
        if p.suffix != ".safetensors":
            p = p.with_name(p.name + ".safetensors")
        tensors: dict[str, torch.Tensor] = {}
        for layer, (w, b) in sorted(self.translators.items()):
            tensors[f"layers.{layer}.weight"] = w.detach().cpu().contiguous()
            tensors[f"layers.{layer}.bias"] = b.detach().cpu().contiguous()
        header = {"format": _FORMAT, "format_version": str(_FORMAT_VERSION), "n_layers": str(self.n_layers),
                  "d_model": str(_d_model(self.translators)), "meta": json.dumps(self.meta)}
        p.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(p), metadata=header)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any) -> TunedLens:
        """Read a lens written by :meth:`save`, for ``model`` (the model it was trained on, or one of the same
        shape). Only tensors are read (safetensors): no code runs.

        >>> lens = cs.TunedLens.load("facts-gpt.lens.safetensors", "facts-gpt")
        """
        from safetensors import SafetensorError, safe_open

        p = _path(path, "load")
        if not p.is_file() and p.with_name(p.name + ".safetensors").is_file():
            p = p.with_name(p.name + ".safetensors")
        if not p.is_file():
            raise InputError(f"No tuned lens file at {str(p)!r}: give the path TunedLens.save returned.")
        try:
            with safe_open(str(p), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{str(p)!r} is not a tuned lens file (a safetensors file written by "
                             f"TunedLens.save): {exc}") from exc
        if header.get("format") != _FORMAT:
            raise InputError(f"{str(p)!r} is a safetensors file but not a causalscope tuned lens.")
        if _header_int(header, "format_version", p) > _FORMAT_VERSION:
            raise InputError(f"{str(p)!r} uses tuned-lens format version {header['format_version']}; this "
                             f"causalscope ({__version__}) reads up to {_FORMAT_VERSION}. Upgrade causalscope.")
        m, _ = lens_model(model)
        n_file, d = _header_int(header, "n_layers", p), _header_int(header, "d_model", p)
        try:
            meta = json.loads(header.get("meta", "{}"))
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise InputError(f"{str(p)!r}: its header's settings ('meta') are not a JSON object: the file is damaged; "
                             f"save the lens again.")
        L = n_layers_of(m)
        model_d = _model_width(m)
        if n_file != L or (model_d is not None and model_d != d):
            raise InputError(f"This tuned lens was trained on a model with {n_file} layers of width {d}; "
                             f"{m.name} has {L} layers of width {model_d}. Load it with the model it was trained on.")
        bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise InputError(f"{str(p)!r} holds NaN or inf values in {bad[:3]}: the lens is damaged (or its training "
                             f"diverged); train it again, e.g. with a lower lr.")
        device = _device(m)
        translators = {}
        for name in tensors:
            parts = name.split(".")
            if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() or parts[2] not in ("weight", "bias") \
                    or f"layers.{parts[1]}.{'bias' if parts[2] == 'weight' else 'weight'}" not in tensors:
                raise InputError(f"{str(p)!r} holds a tensor {name!r} that is not a translator's weight or bias (or "
                                 f"lacks its pair): the file is damaged or not a tuned lens.")
            if parts[2] == "weight":
                layer = int(parts[1])
                translators[layer] = (tensors[name].to(device), tensors[f"layers.{layer}.bias"].to(device))
        return cls(m, translators, meta)


def _checked(translators: Any, n_layers: int, width: int | None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``translators`` if it maps layers of the model to (W (d, d), b (d,)) float tensors; else InputError."""
    if not isinstance(translators, dict):
        raise InputError(f"translators must be a dict {{layer: (W, b)}}, got {type(translators).__name__}.")
    for layer, pair in translators.items():
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise InputError(f"translators has key {layer!r}, which is not a layer of the model (0 to {n_layers - 1}).")
        ok = isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair)
        if ok:
            w, b = pair
            d = width if width is not None else int(w.shape[-1])
            ok = w.is_floating_point() and tuple(w.shape) == (d, d) and tuple(b.shape) == (d,)
        if not ok:
            got = (tuple(f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}" for t in pair)
                   if isinstance(pair, tuple) and all(isinstance(t, torch.Tensor) for t in pair)
                   else f"{type(pair).__name__} {tuple(getattr(pair, 'shape', ()))}")
            raise InputError(f"translators[{layer}] must be (W, b): float tensors shaped (d, d) and (d,) with d the "
                             f"model's width {width}; got {got}.")
    return dict(translators)


def _path(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"TunedLens.{what} takes a file path (a str or pathlib.Path), e.g. 'facts.lens.safetensors'; "
                         f"got {path!r:.60}.")
    return Path(path).expanduser()


def _header_int(header: dict[str, str], key: str, p: Path) -> int:
    """An int field of a lens file's header; InputError naming the file when it is missing or not a number."""
    value = header.get(key)
    if value is None or not str(value).strip().isdigit():
        raise InputError(f"{str(p)!r}: its header's {key!r} is {'missing' if value is None else repr(value)}, not a "
                         f"number: the file is damaged or was not written by TunedLens.save; save the lens again.")
    return int(value)


def _d_model(translators: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> int:
    return int(next(iter(translators.values()))[0].shape[0]) if translators else 0


def _model_width(m: Model) -> int | None:
    d = getattr(m.adapter, "d_model", None)
    if d is None:
        d = getattr(getattr(m.adapter, "cfg", None), "d_model", None)
    return int(d) if isinstance(d, int) else None


def _device(m: Model) -> torch.device:
    p = next(iter(m.module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def tuned_lens(model: Any, prompts: Any, *, layers: Any = None, steps: int = 250, lr: float = 1e-3,
               batch_size: int = 2048, seed: int = 0, chunk_size: int | None = None,
               progress: bool = True) -> TunedLens:
    """Train a tuned lens on ``prompts``: for each layer, an affine translator ``h -> h + W h + b`` (starting at the
    identity) that minimises KL(final layer's distribution || head(translated residual)) over the prompts' tokens.

    >>> lens = cs.tuned_lens("facts-gpt", train_prompts, steps=250, seed=0)
    >>> lens.compare(heldout_prompts).plot()

    One cached forward pass gives every layer's residual stream (through the engine); then ``steps`` Adam steps
    (learning rate ``lr``, decaying linearly to 0), each on ``batch_size`` tokens drawn from all prompts' tokens
    with a generator seeded by ``seed`` (same seed, same lens). The head (final norm + unembedding) is the model's
    own and stays frozen: gradients are taken with respect to the translators only, so no model parameter gets a
    ``.grad``, and the model is left unchanged. ``layers``: which blocks get a translator (default: all but the
    last, whose read-out is the model's output). ``chunk_size``: prompts per forward pass. ``progress``: show a
    progress bar with the current loss.
    """
    m, head = lens_model(model)
    L = n_layers_of(m)
    chosen = [i for i in check_layers(layers, L) if i != L - 1]
    if layers is not None and not chosen:
        raise InputError(f"layers={layers!r} names only the last block ({L - 1}), whose read-out is the model's "
                         f"output and needs no translator: give earlier layers (0 to {L - 2}), or leave layers out.")
    steps = check_int(steps, "steps", low=1)
    lr = check_number(lr, "lr", low=0.0, open_low=True)
    batch_size = check_int(batch_size, "batch_size", low=1)
    seed = check_seed(seed)
    chunk = check_chunk(chunk_size)
    check_flag(progress, "progress")
    s = stream(m, prompts, chosen, chunk)
    meta: dict[str, Any] = {"method": "tuned_lens", "model": m.name, "prompts": input_setting(prompts),
                            "layers": chosen, "steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed,
                            "chunk_size": chunk_size, "progress": progress, "n_tokens": int(s.lengths.sum()),
                            "optimizer": "Adam, linear decay to 0", "loss": "KL(final || translated), nats"}
    if not chosen:
        return TunedLens(m, {}, {**meta, "final_kl": []})
    with preserved(m.module):
        translators, final = _train(head, s, chosen, steps, lr, batch_size, seed, progress)
    meta["final_kl"] = final
    return TunedLens(m, translators, meta)


def _train(head: Head, s: Stream, layers: list[int], steps: int, lr: float, batch_size: int, seed: int,
           progress: bool) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], list[float]]:
    """Adam on every layer's translator at once (the losses are independent: one sum, one gradient call)."""
    mask = s.mask.to(s.last.device)
    real = {layer: s.hidden[layer][mask] for layer in layers}          # (N, d) per layer
    last = s.last[mask]
    N, d = int(last.shape[0]), int(last.shape[1])
    device = last.device
    params = {layer: (torch.zeros(d, d, device=device, requires_grad=True),
                      torch.zeros(d, device=device, requires_grad=True)) for layer in layers}
    flat = [t for pair in params.values() for t in pair]
    opt = torch.optim.Adam(flat, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    gen = torch.Generator().manual_seed(seed)
    size = min(batch_size, N)
    bar = tqdm(range(steps), desc="tuned lens", unit="step", disable=not progress)
    losses = torch.zeros(len(layers))
    for _ in bar:
        idx = torch.randint(0, N, (size,), generator=gen).to(device)
        with torch.no_grad():
            target = log_probs(head, last[idx])
        per_layer = []
        for layer in layers:
            w, b = params[layer]
            x = real[layer][idx]
            z = x.to(w.dtype)
            z = (z + z @ w.T + b).to(x.dtype)
            per_layer.append(kl_from(target, log_probs(head, z)).mean())
        stacked = torch.stack(per_layer)
        grads = torch.autograd.grad(stacked.sum(), flat)  # the translators only: no model parameter gets a .grad
        for p, g in zip(flat, grads):
            p.grad = g
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses = stacked.detach().cpu()
        if progress:
            bar.set_postfix(kl=f"{float(losses.mean()):.3f}")
    out = {layer: (w.detach(), b.detach()) for layer, (w, b) in params.items()}
    return out, [float(v) for v in losses]
