"""Steering while generating: one batched, KV-cached generation over every (strength, prompt) pair, each row
adding its own multiple of a direction at every step.

>>> r = cs.steer_generation("facts-gpt", prompts, "layers.1", v, [0.0, 8.0], target="Harrowgate", max_new_tokens=3)
>>> r.fraction(), r.texts(8.0)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..core import Site, as_site, input_setting
from ..errors import InputError, check_int, check_number
from ..loading import load
from ..results import LabelledArray, resolve_backend
from ._matrix import RowVector, check_writable


class SteeringGeneration(LabelledArray):
    """Whether each continuation contains the target (1.0 / 0.0), dims ``("strength", "prompt")``; the
    continuations themselves in ``meta["texts"]`` (strength x prompt).

    >>> r.fraction()        # a labelled array over strengths
    >>> r.texts(4.0)        # the continuations at strength 4
    >>> r.plot()
    """

    def fraction(self) -> LabelledArray:
        """The fraction of prompts whose continuation contains the target, per strength."""
        return self.mean("prompt")

    def texts(self, strength: float) -> list[str]:
        """The continuations written at ``strength``."""
        ks = [float(k) for k in self.coords["strength"]]
        if float(strength) not in ks:
            raise InputError(f"No strength {strength!r}; the result has {ks}.")
        return list(self.meta["texts"][ks.index(float(strength))])

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """The fraction of continuations containing the target against the strength."""
        backend = resolve_backend(backend)
        ks = [float(k) for k in self.coords["strength"]]
        frac = self.fraction().numpy()
        title = str(self.meta.get("title", "steering while generating"))
        if backend == "plotly":
            import plotly.graph_objects as go

            fig = go.Figure(go.Scatter(x=ks, y=frac, mode="lines+markers", **kw))
            fig.update_layout(title={"text": title}, xaxis_title="strength",
                              yaxis_title=f"fraction containing {self.meta['target']!r}", yaxis_range=[0, 1.05])
            return fig
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(5, 3.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        ax.plot(ks, frac, marker="o", **kw)
        ax.set_xlabel("strength")
        ax.set_ylabel(f"fraction containing {self.meta['target']!r}")
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        return fig


def steer_generation(model: Any, prompts: Sequence[str] | str, site: Site | str, direction: Any,
                     strengths: Sequence[float] = (0.0, 2.0, 4.0, 8.0), *, target: str | Sequence[str],
                     max_new_tokens: int = 10, positions: Literal["all", "prompt", "new"] = "all",
                     do_sample: bool = False,
                     temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> SteeringGeneration:
    """Steer while generating: how often the continuation contains ``target`` as the strength grows.

    >>> v = cs.class_directions(...)  # or any vector of the site's width
    >>> r = cs.steer_generation("facts-gpt", prompts, "layers.1", v, [0.0, 4.0, 8.0], target="Harrowgate")
    >>> r.fraction().values, r.texts(8.0)

    Every (strength, prompt) pair is one row of a single :meth:`Model.generate` call (KV-cached, prompts of
    different lengths padded on the left), whose edit adds ``strength * direction`` at ``site`` at every step
    (``positions``: ``"all"``, ``"prompt"`` or ``"new"``), so the result equals one ``generate`` per strength
    with ``cs.Add(direction, strength)``. A continuation contains the target when one of the ``target`` words
    (or phrases) appears in its decoded text, spaces trimmed. Greedy by default; sampling as in ``generate``.
    """
    m = load(model)
    items = [prompts] if isinstance(prompts, str) else list(prompts) if isinstance(prompts, (list, tuple)) else None
    if not items or not all(isinstance(p, str) and p.strip() for p in items):
        raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}.")
    words = [target] if isinstance(target, str) else list(target) if isinstance(target, (list, tuple)) else []
    if not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise InputError(f"target must be a word (or a list of words) to look for in the continuations, got "
                         f"{target!r}.")
    if isinstance(strengths, (str, bytes)) or not isinstance(strengths, (list, tuple)) or not strengths:
        raise InputError(f"strengths must be a non-empty list of numbers, got {strengths!r}.")
    ks = [check_number(k, "each strength") for k in strengths]
    if len(set(ks)) != len(ks):
        raise InputError(f"strengths repeat a value: {ks}; list each strength once.")
    check_int(max_new_tokens, "max_new_tokens", low=1)
    st = as_site(site)
    if not isinstance(direction, torch.Tensor) or not direction.is_floating_point() or direction.ndim != 1:
        raise InputError(f"direction must be a 1-D float tensor (the site's width), got "
                         f"{type(direction).__name__} {tuple(getattr(direction, 'shape', ()))}.")
    if not bool(torch.isfinite(direction).all()):
        raise InputError("direction holds NaN or inf values; give a finite vector.")
    check_writable(m, words, "target")
    P = len(items)
    rows = [p for _ in ks for p in items]
    k = torch.tensor([k for k in ks for _ in items], dtype=direction.dtype)
    g = m.generate(rows, {st: RowVector(k[:, None] * direction.detach(), 1.0)}, max_new_tokens=max_new_tokens,
                   positions=positions, do_sample=do_sample, temperature=temperature, top_p=top_p,
                   seed=seed)
    texts = [g.text[i * P:(i + 1) * P] for i in range(len(ks))]
    hits = torch.tensor([[float(any(w.strip() in t for w in words)) for t in row] for row in texts])
    meta = {"method": "steer_generation", "model": m.name, "site": st.name, "strengths": ks,
            "prompts": input_setting(items), "target": words[0] if len(words) == 1 else words,
            "direction": input_setting(direction), "direction_norm": float(direction.norm()),
            "max_new_tokens": max_new_tokens, "positions": positions, "do_sample": do_sample,
            "temperature": temperature, "top_p": top_p, "seed": seed, "texts": texts,
            "forwards": g.meta["forwards"],
            "title": f"steering at {st.name} while generating: continuations containing {words[0]!r}"}
    return SteeringGeneration(hits, ("strength", "prompt"), {"strength": ks, "prompt": list(range(P))}, meta,
                              name="contains target")
