"""The causal check of a probe: steer inputs along a probe direction, against random directions.

>>> chk = cs.probe_steering("digits-mlp", cs.data.digits("test"), "act2", source=3, target=8,
...                         strengths=[0, 2, 4, 8])
>>> chk.probe.sel(stat="fraction").values, chk.random.sel(stat="fraction").values

:class:`SteeringCheck` is the result; :func:`steer_along_probe` runs the check with a fitted probe (the
public :func:`~causalscope.directions.probe_steering` reads the data and fits the probe when none is given).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..core import Add, Site
from ..errors import InputError
from ..results import LabelledArray, resolve_backend
from ._inputs import take_inputs
from ._probe_fit import length_groups

STEER_STATS = ("fraction", "prob", "source_prob")


class SteeringCheck(LabelledArray):
    """The causal check of a probe direction: dims ``("direction", "strength", "stat")``.

    ``direction``: ``probe`` (the target class's unit probe direction) and ``random0`` ... (random unit
    directions, the control); ``stat``: ``fraction`` (share of the steered inputs the model assigns to the
    target class), ``prob`` (mean probability of the target class), ``source_prob`` (mean probability of the
    inputs' own class).

    >>> chk.probe.sel(stat="prob").values, chk.random.sel(stat="prob").values
    >>> chk.plot()
    """

    @property
    def probe(self) -> LabelledArray:
        """(strength, stat) along the probe direction."""
        return self.sel(direction="probe")

    @property
    def random(self) -> LabelledArray:
        """(strength, stat), mean over the random directions."""
        rand = [d for d in self.coords["direction"] if d != "probe"]
        return self.sel(direction=rand).mean("direction")

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """Fraction predicted as the target and its mean probability vs strength: probe direction against the
        random directions (mean and min-max band)."""
        backend = resolve_backend(backend)
        s = np.asarray(self.coords["strength"], dtype=float)
        rand = [d for d in self.coords["direction"] if d != "probe"]
        R = self.sel(direction=rand).values.numpy()                # (random, strength, stat)
        P = self.probe.values.numpy()
        tgt, src = self.meta["target"], self.meta["source"]
        titles = {"fraction": f"fraction classified as {tgt}", "prob": f"mean p({tgt})"}
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=1, cols=2, subplot_titles=tuple(titles.values()))
            for j, k in enumerate(titles):
                c = STEER_STATS.index(k)
                fig.add_trace(go.Scatter(x=s, y=P[:, c], mode="lines+markers", name="probe direction",
                                         line={"color": "#5A4FCF"}, showlegend=j == 0), row=1, col=j + 1)
                fig.add_trace(go.Scatter(x=s, y=R[:, :, c].mean(0), mode="lines+markers", name="random direction",
                                         line={"color": "#999999", "dash": "dash"}, showlegend=j == 0),
                              row=1, col=j + 1)
            fig.update_yaxes(range=[0, 1.05])
            fig.update_xaxes(title_text="strength")
            fig.update_layout(title={"text": f"steering {src} -> {tgt} at {self.meta['site']}"})
            return fig
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.6), layout="constrained")
        axes = fig.subplots(1, 2)
        for a, k in zip(axes, titles):
            c = STEER_STATS.index(k)
            a.plot(s, P[:, c], "o-", color="#5A4FCF", label="probe direction")
            a.plot(s, R[:, :, c].mean(0), "s--", color="#999999", label=f"random directions ({len(rand)})")
            a.fill_between(s, R[:, :, c].min(0), R[:, :, c].max(0), color="#999999", alpha=0.2)
            a.set_ylim(-0.02, 1.05)
            a.set_xlabel("strength (activation units, unit direction)")
            a.set_title(titles[k])
            a.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"steering inputs of class {src} toward {tgt} at {self.meta['site']}")
        return fig


def _resolve_readout(readout: Any, classes: list[Any]) -> Callable[[torch.Tensor], torch.Tensor] | list[int]:
    if callable(readout):
        return readout
    if readout is None:
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes):
            raise InputError(f"The classes {classes[:6]} are not output indices, so the model's output cannot be read "
                             f"per class. Pass readout=[output index of each class] (e.g. token ids), or a function "
                             f"of the output returning (rows, {len(classes)}) class scores.")
        return [int(c) for c in classes]
    cols = [int(c) for c in readout]
    if len(cols) != len(classes):
        raise InputError(f"readout has {len(cols)} output indices for {len(classes)} classes {classes}.")
    return cols


def steer_along_probe(m: Any, inputs: Any, y_raw: np.ndarray, n: int, probe: Any, s_obj: Site, source: Any,
                      target: Any, strengths: list[float], *, n_random: int, seed: int, readout: Any,
                      max_inputs: int | None, chunk_size: int | None) -> SteeringCheck:
    """The steering check with a fitted ``probe`` (a ``ProbeResult`` holding ``s_obj``) on the loaded model ``m``,
    the inputs and their labels as :func:`~causalscope.directions.probe_steering` read them.

    >>> steer_along_probe(m, X, y, len(y), r, cs.Site("act2"), 3, 8, [0.0, 4.0], n_random=5, seed=0,
    ...                   readout=None, max_inputs=None, chunk_size=None)
    """
    key = probe._site_key(s_obj)
    ti, si = probe._class_index(target), probe._class_index(source)
    if ti == si:
        raise InputError(f"source and target are the same class ({source!r}): steer toward another class.")
    src_label = probe.classes[si]
    idx = np.flatnonzero(np.array([y == src_label or str(y) == str(src_label) for y in y_raw.tolist()]))
    if idx.size == 0:
        raise InputError(f"No input of class {source!r} in data (its labels: {sorted(set(y_raw.tolist()))[:10]}).")
    if max_inputs is not None:
        idx = idx[:max_inputs]
    cols = _resolve_readout(readout, probe.classes)
    shape = probe.feature_shapes[key]
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(n_random, int(np.prod(shape)), generator=g)
    rand = rand / rand.norm(dim=-1, keepdim=True)
    dirs = [probe.direction(key, probe.classes[ti])] + [r.reshape(shape) for r in rand]

    def metric(out: torch.Tensor) -> torch.Tensor:
        y = out[:, -1] if out.ndim == 3 else out.reshape(out.shape[0], -1)
        if callable(cols):
            scores = cols(out)
            if not isinstance(scores, torch.Tensor) or scores.shape != (out.shape[0], len(probe.classes)):
                raise InputError(f"readout must return (rows, {len(probe.classes)}) class scores, got "
                                 f"{tuple(getattr(scores, 'shape', ()))}.")
            p = scores.float().softmax(-1)
            t, s_, top = ti, si, scores.argmax(-1)
        else:
            if max(cols) >= y.shape[-1]:
                raise InputError(f"readout index {max(cols)} is out of range for an output of width {y.shape[-1]}.")
            p = y.float().softmax(-1)
            t, s_, top = cols[ti], cols[si], y.argmax(-1)
        return torch.stack([(top == t).float(), p[:, t], p[:, s_]], -1)

    sub = take_inputs(inputs, idx, n)
    k = len(idx)
    res = torch.zeros(len(dirs), len(strengths), len(STEER_STATS))
    for gidx, ginputs in length_groups(m, sub, k):
        ivs = [[Add(d, strength=s) for s in strengths] for d in dirs]
        rows = [row for per_dir in ivs for row in ({s_obj: iv} for iv in per_dir) for _ in range(len(gidx))]
        index = list(range(len(gidx))) * (len(dirs) * len(strengths))
        run = m.run(ginputs, rows, input_index=index, metric=metric, chunk_size=chunk_size, progress=False)
        res += run.metric.float().cpu().reshape(len(dirs), len(strengths), len(gidx), len(STEER_STATS)).sum(2)
    res /= k
    meta = {"method": "probe_steering", "model": m.name, "site": key, "source": str(src_label),
            "target": str(probe.classes[ti]), "n_inputs": int(k), "n_random": n_random, "seed": seed,
            "readout": "function" if callable(cols) else cols, "probe_seed": probe.meta.get("seed"),
            "title": f"steering {src_label} -> {probe.classes[ti]} at {key}"}
    return SteeringCheck(res, ("direction", "strength", "stat"),
                         {"direction": ["probe"] + [f"random{i}" for i in range(n_random)], "strength": strengths,
                          "stat": list(STEER_STATS)}, meta, name="value")
