"""A steering matrix while generating: steer toward each of several words and count which words the
continuations then contain (one KV-cached generate call for every direction and prompt).

>>> M = cs.steering_matrix_generation("facts-gpt", prompts, "layers.2", {"Estrova": v1, "Arvena": v2}, 4.0)
>>> M.values          # (direction, word): fraction of continuations containing the word
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..core import ApplyContext, Intervention, Site, as_site, input_setting
from ..errors import InputError, InterventionError, check_flag, check_int, check_number
from ..loading import load
from ..results import LabelledArray, resolve_backend


class SteeringMatrixGeneration(LabelledArray):
    """Fraction of continuations containing each word (``word``) when steering along each direction
    (``direction``; ``"none"`` first when ``baseline``); the continuations in ``meta["texts"]``.

    >>> M.sel(direction="Estrova", word="Estrova").values    # how often steering toward a word writes it
    >>> M.plot()
    """

    def texts(self, direction: str) -> list[str]:
        """The continuations written when steering along ``direction``."""
        names = list(self.coords["direction"])
        if direction not in names:
            raise InputError(f"No direction {direction!r}; the matrix has {names}.")
        return list(self.meta["texts"][names.index(direction)])

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """A heatmap: rows the directions steered along, columns the words counted."""
        backend = resolve_backend(backend)
        if backend == "matplotlib":
            kw.setdefault("cmap", "Purples")
            kw.setdefault("vmin", 0.0)
            kw.setdefault("vmax", 1.0)
        return LabelledArray(self.values, self.dims, self.coords, self.meta, name=self.name).plot(
            ax=ax, backend=backend, **kw)


@dataclass(eq=False)
class RowVector(Intervention):
    """Add ``strength * vectors[row's input]``: each generated row its own vector (the family's steering rows).

    >>> RowVector(torch.stack([v1, v2]), 4.0)     # row 0 steers along v1, row 1 along v2
    """

    vectors: torch.Tensor  # (rows, d)
    strength: float

    def key(self) -> tuple:
        return ("RowVector", id(self.vectors), float(self.strength))

    def __call__(self, x: torch.Tensor, src: torch.Tensor | None, ctx: ApplyContext) -> torch.Tensor:
        if x.shape[-1] != self.vectors.shape[-1]:
            raise InterventionError(f"The direction has {self.vectors.shape[-1]} dims, but the site "
                                    f"{ctx.site_name!r} is {x.shape[-1]} wide (its selection is {tuple(x.shape)}): "
                                    f"give a vector of width {x.shape[-1]}, or steer at the site it was made for.")
        v = self.vectors[ctx.input_index.cpu()].to(device=x.device, dtype=x.dtype)
        return x + self.strength * v.view(v.shape[0], *([1] * (x.ndim - 2)), v.shape[-1])


def check_writable(m: Any, words: Sequence[str], what: str) -> None:
    """Raise when a word to look for in the continuations holds a token the model's tokenizer does not know (it
    would decode as the unknown token, so no continuation could ever contain it)."""
    tok = m.tokenizer
    unk = getattr(tok, "unk_token_id", None)
    if tok is None or unk is None:
        return
    for w in words:
        ids = list(tok(w.strip(), add_special_tokens=False)["input_ids"])
        if unk in ids and w.strip() != str(getattr(tok, "unk_token", "")):
            raise InputError(f"{what} holds {w!r}, which {m.name}'s tokenizer does not know (it becomes "
                             f"{tok.unk_token!r}): no continuation can contain it. Give words of the model's "
                             f"vocabulary.")


def steering_matrix_generation(model: Any, prompts: Sequence[str], site: Site | str,
                               directions: Mapping[str, torch.Tensor], strength: float = 4.0, *,
                               words: Sequence[str] | None = None, baseline: bool = True,
                               max_new_tokens: int = 5, positions: Literal["all", "prompt", "new"] = "all",
                               seed: int = 0) -> SteeringMatrixGeneration:
    """The steering matrix of a language model: steer along each direction while generating, and count how
    often each word appears in the continuations.

    >>> M = cs.steering_matrix_generation("facts-gpt", prompts, "layers.2", {"Estrova": v1, "Arvena": v2}, 4.0)
    >>> M.values                               # rows: directions (and "none"), columns: the words

    ``directions`` maps a name to a vector of the site's width (by default the words counted are the names);
    each (direction, prompt) is one row of a single greedy :meth:`Model.generate` call adding
    ``strength * vector`` at ``site`` at every step (``positions``), so the texts equal one ``generate`` per
    direction with ``cs.Add(vector, strength)``. ``baseline`` adds an unsteered row ``"none"`` first. A
    continuation contains a word when the word appears in its decoded text.
    """
    m = load(model)
    items = list(prompts) if isinstance(prompts, (list, tuple)) else None
    if not items or not all(isinstance(p, str) and p.strip() for p in items):
        raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}.")
    if not isinstance(directions, Mapping) or not directions:
        raise InputError("directions must be a non-empty dict {name: vector}, e.g. {'Estrova': v}.")
    vecs = []
    for name, v in directions.items():
        if not isinstance(name, str) or not isinstance(v, torch.Tensor) or v.ndim != 1 or not v.is_floating_point():
            raise InputError(f"directions maps names to 1-D float vectors; got {name!r}: "
                             f"{type(v).__name__} {tuple(getattr(v, 'shape', ()))}.")
        if not bool(torch.isfinite(v).all()):
            raise InputError(f"The direction {name!r} holds NaN or inf values; give finite vectors.")
        vecs.append(v.detach().float())
    if len({v.shape[0] for v in vecs}) != 1:
        raise InputError(f"The direction vectors differ in width: {[v.shape[0] for v in vecs]}.")
    check_flag(baseline, "baseline")
    if baseline and "none" in directions:
        raise InputError("A direction is named 'none', the name of the unsteered row baseline=True adds: rename "
                         "it, or pass baseline=False.")
    if isinstance(words, str):
        raise InputError(f"words must be a list of words to count, got the string {words!r} (it would be read as "
                         f"its characters): write words=[{words!r}].")
    if words is not None and not isinstance(words, (list, tuple)):
        raise InputError(f"words must be a non-empty list of words to count, got {type(words).__name__}.")
    counted = list(directions) if words is None else list(words)
    if not counted or not all(isinstance(w, str) and w.strip() for w in counted):
        raise InputError(f"words must be a non-empty list of words to count, got {words!r}.")
    if len(set(counted)) != len(counted):
        raise InputError(f"words lists a word twice: {counted}; list each word once.")
    check_writable(m, counted, "words")
    check_number(strength, "strength")
    check_int(max_new_tokens, "max_new_tokens", low=1)
    st = as_site(site)
    names = (["none"] if baseline else []) + list(directions)
    table = torch.stack(([torch.zeros_like(vecs[0])] if baseline else []) + vecs)
    P = len(items)
    per_row = table.repeat_interleave(P, 0)  # row r: direction r // P, prompt r % P
    g = m.generate([p for _ in names for p in items], {st: RowVector(per_row, float(strength))},
                   max_new_tokens=max_new_tokens, positions=positions, seed=seed)
    texts = [g.text[i * P:(i + 1) * P] for i in range(len(names))]
    frac = torch.tensor([[sum(w.strip() in t for t in row) / P for w in counted] for row in texts])
    meta = {"method": "steering_matrix_generation", "model": m.name, "site": st.name, "strength": float(strength),
            "prompts": input_setting(items), "directions": list(directions), "words": counted, "baseline": baseline,
            "direction_norms": [float(v.norm()) for v in vecs], "max_new_tokens": max_new_tokens,
            "positions": positions, "seed": seed, "texts": texts, "forwards": g.meta["forwards"],
            "title": f"steering matrix while generating (strength {float(strength):g} at {st.name})"}
    return SteeringMatrixGeneration(frac, ("direction", "word"), {"direction": names, "word": counted}, meta,
                                    name="fraction of continuations")
