"""The logit lens: read the residual stream after each layer through the model's own final norm and unembedding.

>>> import causalscope as cs
>>> r = cs.logit_lens("facts-gpt", "Stailu Heilpes was born in the city of", answer="Arvena")
>>> r.dims, r.top_tokens[-1][-1][0]          # the last layer's top token at the last position
(('layer', 'position'), 'Arvena')
"""
from __future__ import annotations

from typing import Any

import torch

from ..core import input_setting
from ..errors import InputError
from ..results import LabelledArray, axis_labels, heatmap, resolve_backend
from ._cells import Cells, lens_cells
from ._inputs import (
    answer_ids,
    check_chunk,
    check_k,
    check_layers,
    decode,
    lens_model,
    n_layers_of,
    nested,
    prepared,
    rows_per_chunk,
    stream,
    tensor_of,
    vocab_size,
)

#: cells above this many are drawn without their top token written in them
MAX_ANNOTATED = 600


class LensResult(LabelledArray):
    """A lens read-out (logit lens or tuned lens) of the residual stream, cell by cell.

    >>> r = cs.logit_lens(m, prompts, answer="Paris")
    >>> r.values                     # the top token's probability per (layer, position[, prompt])
    >>> r.top_tokens[2][5]           # the k most likely tokens at layer index 2, position 5 (one prompt)
    >>> r.kl.mean("position")        # KL(final layer || lens) per layer, in nats
    >>> r.plot()                     # layers x tokens, each cell coloured by its value and labelled by its top token

    Dims ``("layer", "position")`` for one prompt, ``("layer", "position", "prompt")`` for several; positions are
    each prompt's own (prompts of different lengths are padded on the right: cells past a prompt's end hold NaN,
    and -1 / None in the integer / token arrays). The ``token`` auxiliary coordinate holds the token at each
    position (None where the prompts differ). Everything is in ``meta`` (so ``save`` / ``load_result`` keep it):
    ``top_ids``, ``top_probs``, ``top_tokens`` (dims + k), ``kl``, ``answer_prob``, ``answer_rank`` (rank 1 = the
    most likely token), ``tokens`` and ``lengths`` of each prompt.
    """

    @property
    def lens(self) -> str:
        """``"logit lens"`` or ``"tuned lens"``."""
        return str(self.meta.get("lens", "logit lens"))

    @property
    def tokens(self) -> list[list[str]]:
        """Each prompt's tokens."""
        return [list(t) for t in self.meta["tokens"]]

    @property
    def lengths(self) -> list[int]:
        return [int(n) for n in self.meta["lengths"]]

    @property
    def top_tokens(self) -> list:
        """The top-k tokens of every cell as text, nested like ``values`` plus a last level of k (None at padding)."""
        return self.meta["top_tokens"]

    @property
    def top_ids(self) -> torch.Tensor:
        """(dims..., k) token ids, most likely first; -1 at padding."""
        return tensor_of(self.meta["top_ids"], torch.long)

    @property
    def top_probs(self) -> torch.Tensor:
        """(dims..., k) their probabilities; NaN at padding."""
        return tensor_of(self.meta["top_probs"], torch.float32)

    def _cell_array(self, key: str, name: str, dtype: torch.dtype = torch.float32) -> LabelledArray:
        if self.meta.get(key) is None:
            raise InputError(f"This lens has no {name}: pass answer=... (a token, or one per prompt) to get it.")
        return LabelledArray(tensor_of(self.meta[key], dtype), self.dims, self.coords,
                             {"method": self.meta.get("method"), "model": self.meta.get("model"), "title": name},
                             name=name, aux_coords=self.aux_coords)

    @property
    def kl(self) -> LabelledArray:
        """KL(final layer's distribution || the lens's) per cell, in nats (0 at the last layer)."""
        return self._cell_array("kl", "KL(final || lens)")

    @property
    def answer_prob(self) -> LabelledArray:
        """The answer's probability per cell (needs ``answer=``)."""
        return self._cell_array("answer_prob", "p(answer)")

    @property
    def answer_rank(self) -> LabelledArray:
        """The answer's rank per cell, 1 = the most likely token (needs ``answer=``); -1 at padding."""
        return self._cell_array("answer_rank", "answer rank", torch.long)

    def kl_per_layer(self) -> LabelledArray:
        """Mean KL(final || lens) over every real token (all prompts), per layer."""
        kl = self.kl.values
        if "prompt" in self.dims:
            kl = kl.flatten(1)
        real = ~torch.isnan(kl)
        mean = torch.where(real, kl, 0.0).double().sum(1) / real.sum(1)
        return LabelledArray(mean, ("layer",), {"layer": self.coords["layer"]},
                             {"method": self.meta.get("method"), "model": self.meta.get("model"),
                              "title": f"{self.lens}: KL to the final layer"}, name="KL(final || lens)")

    def _prompt(self, prompt: int | None) -> tuple[int, str]:
        n = len(self.meta["tokens"])
        if prompt is None:
            return 0, "" if n == 1 else f" (prompt 0 of {n}: plot(prompt=i) for another)"
        if isinstance(prompt, bool) or not isinstance(prompt, int) or not -n <= prompt < n:
            raise InputError(f"prompt must be an int from 0 to {n - 1}, got {prompt!r}.")
        return prompt % n, "" if n == 1 else f" (prompt {prompt % n})"

    def plot(self, ax: Any = None, backend: str = "matplotlib", prompt: int | None = None, **kw: Any) -> Any:
        """Layers down, the prompt's tokens across; each cell coloured by its top token's probability and labelled
        with that token (up to 600 cells). ``prompt``: which prompt (several prompts). ``r.answer_prob.plot()``
        draws the answer's probability instead."""
        backend = resolve_backend(backend)
        p, note = self._prompt(prompt)
        n = self.lengths[p]
        chosen = self.values if "prompt" not in self.dims else self.values[..., p]
        values = chosen[:, :n].float().numpy()
        top = [[(row[t] if "prompt" not in self.dims else row[t][p]) for t in range(n)] for row in self.top_tokens]
        cells = [[_short(c[0]) if c else "" for c in row] for row in top]
        rows = [str(x) for x in self.coords["layer"]]
        cols = axis_labels(list(range(n)), {"token": ("position", self.tokens[p])}, "position")
        title = f"{self.lens}: {self.name}{note}"
        annotate = values.size <= MAX_ANNOTATED
        if backend == "plotly":
            extra = {"text": cells, "texttemplate": "%{text}", "textfont": {"size": 9}} if annotate else {}
            return heatmap(values, rows, cols, title=title, row_title="layer", col_title="position",
                           value_title=self.name, backend="plotly", vmin=0.0, vmax=1.0, colorscale="Blues",
                           categorical=False, **{**extra, **kw})
        fig = heatmap(values, rows, cols, title=title, row_title="layer", col_title="position",
                      value_title=self.name, ax=ax, vmin=0.0, vmax=1.0, cmap="Blues",
                      size=(max(5.0, 0.7 * n + 2), max(3.0, 0.4 * len(rows) + 1.5)), rotate_over=6, title_size=None,
                      categorical=False, **kw)
        if annotate:
            axes = ax if ax is not None else fig.axes[0]
            for i, row in enumerate(cells):
                for j, text in enumerate(row):
                    axes.text(j, i, text, ha="center", va="center", fontsize=7,
                              color="white" if values[i, j] > 0.6 else "black")
        return fig


def _short(token: str, most: int = 8) -> str:
    text = token.strip() or repr(token)
    return text if len(text) <= most else text[: most - 1] + "…"


def lens_result(m: Any, s: Any, cells: Cells, layers: list[int], answers: torch.Tensor | None,
                meta: dict[str, Any]) -> LensResult:
    """The :class:`LensResult` of ``cells`` (layer, prompt, position, ...) for the prompts of stream ``s``."""
    def order(t: torch.Tensor) -> torch.Tensor:  # (L, B, T, ...) -> (L, T[, B], ...)
        t = t.transpose(1, 2)
        return t[:, :, 0] if s.single else t

    keep = order(s.mask[None].expand(len(layers), -1, -1))
    ids = order(cells.top_ids)
    vocab_text: dict[int, str] = {}

    def text(i: int) -> str | None:
        if i < 0:
            return None
        if i not in vocab_text:
            vocab_text[i] = decode(m, i)
        return vocab_text[i]

    def strings(v: Any) -> Any:
        return [strings(x) for x in v] if isinstance(v, list) else text(v)

    top_ids = ids.tolist()
    value = order(cells.top_probs)[..., 0]
    name = "p(top-1 token)"
    full = {**meta, "value": name, "tokens": s.tokens, "lengths": s.lengths.tolist(),
            "answer_ids": None if answers is None else answers.tolist(),
            "top_ids": top_ids, "top_tokens": strings(top_ids),
            "top_probs": nested(order(cells.top_probs), keep[..., None]), "kl": nested(order(cells.kl), keep),
            "answer_prob": None if cells.answer_prob is None else nested(order(cells.answer_prob), keep),
            "answer_rank": None if cells.answer_rank is None else order(cells.answer_rank).tolist()}
    T = int(s.ids.shape[1])
    dims = ("layer", "position") if s.single else ("layer", "position", "prompt")
    coords: dict[str, list] = {"layer": list(layers), "position": list(range(T))}
    if not s.single:
        coords["prompt"] = list(range(len(s.tokens)))
    return LensResult(value, dims, coords, full, name=name).with_tokens(s.tokens)


def logit_lens(model: Any, prompts: Any, *, layers: Any = None, answer: Any = None, k: int = 5,
               chunk_size: int | None = None) -> LensResult:
    """The logit lens (nostalgebraist 2020): each layer's residual stream read through the model's own final norm
    and unembedding, as if the layers after it were skipped.

    >>> r = cs.logit_lens("facts-gpt", "Stailu Heilpes was born in the city of", answer="Arvena")
    >>> r.answer_rank.values[:, -1]          # the answer's rank at the last position, per layer
    >>> r.plot()

    ``model``: a model :func:`causalscope.load` accepts (Hugging Face causal LMs of a mapped family,
    TransformerLens models). ``prompts``: a prompt, a list of prompts (of any lengths: padded on the right, each
    position is its prompt's own) or token ids. ``layers``: block indices (default: every block); the residual
    stream *after* block ``l`` is the canonical site ``layers.l``, and the last block's read-out is the model's
    logits. ``answer``: a token (word or id) or one per prompt, whose probability and rank each cell records.
    ``k``: top tokens kept per cell. ``chunk_size``: prompts per pass (default: chosen from memory).

    One cached forward pass (through the engine) gives every layer; the read-out is chunked over prompts. The model
    is left unchanged. Returns a :class:`LensResult`.
    """
    m, head = lens_model(model)
    L = n_layers_of(m)
    chosen = check_layers(layers, L)
    vocab = vocab_size(m)
    k = check_k(k, vocab)
    chunk = check_chunk(chunk_size)
    prep = prepared(m, prompts)
    answers = answer_ids(m, answer, int(prep[1].shape[0]))  # checked before the model runs
    s = stream(m, prompts, chosen, chunk, prep)
    cells = lens_cells(head, None, s, chosen, k, answers, rows_per_chunk(chunk, int(s.ids.shape[1]), vocab,
                                                                          len(s.tokens)))
    meta = {"method": "logit_lens", "lens": "logit lens", "model": m.name, "prompts": input_setting(prompts),
            "layers": chosen, "answer": input_setting(answer), "k": k, "chunk_size": chunk_size,
            "title": "logit lens"}
    return lens_result(m, s, cells, chosen, answers, meta)
