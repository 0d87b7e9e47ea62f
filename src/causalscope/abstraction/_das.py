"""Distributed alignment search (Geiger et al. 2023): learn the subspace of a site that carries a variable."""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F

from ..core import ApplyContext, Intervention, Site, call_metric, callable_setting, takes_lengths
from ..errors import InputError, SiteError
from ..loading import load
from ..results import LabelledArray, resolve_backend
from ._causal_model import CausalModel, positive_int
from ._iia_common import (
    AlignmentSiteError,
    alignment_sites,
    bootstrap_iia,
    check_align,
    check_iia_options,
    check_pair_lengths,
    class_logits,
    high_level_data,
    iia_hits,
    output_readout,
    patched_values,
)


class DASResult(LabelledArray):
    """What :func:`das` learned: the training loss per optimiser step (dims ``("step",)``), the subspace
    ``basis`` (d x k, orthonormal columns), and train / held-out IIA of the subspace interchange.

    >>> r = cs.das("adder-rotated", cs.adder_causal_model(), "A", "l1", k=1)
    >>> r.test_iia, r.basis.shape            # ~1.0, (3, 1)
    >>> m.run(x, {r.site: cs.Patch(source_run)})     # the learned interchange, as a subspace patch
    >>> r.plot()                             # loss curve + IIA

    Everything lives in ``meta`` (JSON), so ``save`` / ``load_result`` keep it; ``DASResult.from_array``
    turns a loaded array back into a ``DASResult``.
    """

    @property
    def loss(self) -> torch.Tensor:
        return self.values

    @functools.cached_property
    def basis(self) -> torch.Tensor:
        """(d, k) float32 tensor with orthonormal columns: the learned subspace of the site. The same tensor on
        every access, so ``r.site == r.site`` (sites with a basis compare by the basis tensor's identity)."""
        return torch.tensor(self.meta["basis"], dtype=torch.float32)

    @property
    def site(self) -> Site:
        """The site restricted to the learned subspace: ``Patch`` there performs the DAS interchange."""
        s = self.meta["site"]
        return Site(s["module"], io=s["io"], positions=_index_from_json(s["positions"]),
                    neurons=_index_from_json(s["neurons"]), heads=_index_from_json(s["heads"]),
                    n_heads=s["n_heads"], basis=self.basis)

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def variable(self) -> str:
        return str(self.meta["variable"])

    @property
    def train_iia(self) -> float:
        return float(self.meta["train_iia"])

    @property
    def test_iia(self) -> float:
        return float(self.meta["test_iia"])

    @property
    def test_interval(self) -> tuple[float, float]:
        lo, hi = self.meta["test_iia_interval"]
        return float(lo), float(hi)

    def plot(self, ax: Any = None, backend: str = "matplotlib", **kw: Any) -> Any:
        """Left: the training loss per step (log scale; a line where L-BFGS refinement starts). Right: IIA
        on the training and held-out pairs, with the held-out bootstrap interval."""
        backend = resolve_backend(backend)
        steps = list(range(len(self.values)))
        loss = self.numpy()
        adam = int(self.meta.get("adam_steps", len(steps)))
        lo, hi = self.test_interval
        title = str(self.meta.get("title", "DAS"))
        if backend == "plotly":
            import plotly.graph_objects as go
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=1, cols=2, column_widths=[0.7, 0.3], subplot_titles=("loss", "IIA"))
            fig.add_trace(go.Scatter(x=steps, y=loss, mode="lines", name="loss", **kw), row=1, col=1)
            fig.add_trace(go.Bar(x=["train", "test"], y=[self.train_iia, self.test_iia], name="IIA",
                                 error_y={"type": "data", "symmetric": False, "array": [0, hi - self.test_iia],
                                          "arrayminus": [0, self.test_iia - lo]}), row=1, col=2)
            fig.update_yaxes(type="log", exponentformat="power", title_text=str(self.meta.get("loss", "loss")),
                             row=1, col=1)  # 10^-6, not plotly's SI "1μ"
            fig.update_xaxes(title_text="step", row=1, col=1)
            fig.update_yaxes(range=[0, 1.05], row=1, col=2)
            fig.update_layout(title={"text": title}, showlegend=False)
            return fig
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(9, 3.5), layout="constrained")
            ax_loss, ax_iia = fig.subplots(1, 2, width_ratios=[2.3, 1])
        else:  # one axes given: the loss curve only
            fig, ax_loss, ax_iia = ax.figure, ax, None
        ax_loss.plot(steps, loss, **kw)
        ax_loss.set_yscale("log")
        if 0 < adam < len(steps):
            ax_loss.axvline(adam - 0.5, color="grey", lw=0.8, ls="--")
        ax_loss.set_xlabel("step (Adam, then L-BFGS evaluations)" if adam < len(steps) else "step")
        ax_loss.set_ylabel(str(self.meta.get("loss", "loss")))
        ax_loss.set_title(title)
        if ax_iia is not None:
            ax_iia.bar([0, 1], [self.train_iia, self.test_iia], color="#A59FD9",
                       yerr=[[0, self.test_iia - lo], [0, hi - self.test_iia]], capsize=4)
            ax_iia.set_xticks([0, 1])
            ax_iia.set_xticklabels(["train", "test"])
            ax_iia.set_ylim(0, 1.05)
            ax_iia.set_ylabel("IIA")
        return fig


@dataclass(eq=False)
class _RowValues(Intervention):
    """Private: replace the selection of each row by ``values[slot[row's base input]]`` (the DAS interchange,
    computed outside the engine, where the rotation's autograd graph lives)."""

    values: torch.Tensor
    slot: torch.Tensor

    def key(self) -> tuple:
        return ("DASRowValues", id(self.values))

    def __call__(self, x: torch.Tensor, src: torch.Tensor | None, ctx: ApplyContext) -> torch.Tensor:
        rows = self.slot[ctx.input_index.cpu()].to(self.values.device)
        return self.values[rows].to(device=x.device, dtype=x.dtype)


def _index_json(v: Any) -> Any:
    if isinstance(v, slice):
        return ["slice", v.start, v.stop, v.step]
    return None if v is None else list(v)


def _index_from_json(v: Any) -> Any:
    if isinstance(v, list) and v and v[0] == "slice":
        return slice(*v[1:])
    return None if v is None else tuple(v)


def _random_orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def das(model: Any, causal_model: CausalModel, variable: str, site: Site | str, k: int = 1, *,
        n_train: int = 512, n_test: int = 256, epochs: int = 10, lr: float = 0.05, batch_size: int = 64,
        refine: int = 100, data: Any = None, test_data: Any = None, tol: float = 1e-3, metric: Any = None,
        n_boot: int = 1000, ci: float = 0.95, seed: int = 0, align: Literal["end"] | None = None) -> DASResult:
    """Learn a k-dimensional subspace of ``site`` whose interchange behaves like interchanging ``variable``.

    >>> cm = cs.adder_causal_model()
    >>> r = cs.das("adder-rotated", cm, "A", "l1", k=1, seed=0)
    >>> r.test_iia                     # >= 0.95, where every single neuron of l1 scores ~0.1
    >>> r.basis                        # (3, 1): the direction of l1 that carries A

    Distributed alignment search (Geiger et al. 2023). An orthogonal rotation ``R`` (d x d, with d the
    width of the site's selection) is parametrised as ``R = matrix_exp(S - S^T) @ R0``, ``R0`` a seeded
    random rotation and ``S`` the trained parameter (starting at 0), so R stays exactly orthogonal. Its
    first k columns ``B`` span the subspace; the interchange of a (base, source) pair writes

        x' = x_base + (x_source - x_base) @ B @ B^T

    at the site, i.e. the first k rotated coordinates come from the source, the rest from the base.
    The loss compares the network's output after that interchange with the causal model's output after
    ``variable := variable(source)``: mean squared error for a numeric output, cross-entropy of the
    logits for a categorical one. Training: ``epochs`` of Adam (``lr``, mini-batches of ``batch_size``
    pairs, linear decay), then up to ``refine`` L-BFGS iterations on the whole training set (0 to skip;
    on small regression tasks it turns a near-miss into an exact alignment).

    Gradients: each step runs the frozen model through the engine (``Model.run``) with a private
    intervention that writes ``x'`` at the site, asking for ``grads=[site]`` of the per-row loss; the
    engine returns dLoss/dx' (activations only), and ``torch.autograd.backward(x', grad)`` carries it
    into ``S``. The model's parameters get no ``.grad`` and are not changed; hooks live in the engine only.

    IIA (train and held out) is measured through the engine with ``cs.Site(site, basis=B)`` and
    ``cs.Patch(source)``, within ``tol`` (or same class). Data: ``n_train`` + ``n_test`` pairs of
    independent base and source inputs drawn with ``seed`` (``data`` / ``test_data`` replace them).
    Same seed, same result.

    Prompts of different lengths (an ``encode`` that writes text): as in :func:`abstraction_iia`, a site of
    every position needs the base and source of each pair of equal lengths, and positions from the end
    need equal lengths or ``align="end"``; this is checked before training starts.
    """
    m = load(model)
    if not isinstance(causal_model, CausalModel):
        raise InputError(f"causal_model must be a cs.CausalModel, got {type(causal_model).__name__}.")
    causal_model._check_var(variable)
    check_iia_options(tol, n_boot, ci)
    check_align(align)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k (the subspace dimension) must be an int >= 1, got {k!r}.")
    n_train, n_test = positive_int(n_train, "n_train"), positive_int(n_test, "n_test")
    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise InputError(f"refine must be an int >= 0 (L-BFGS iterations), got {refine!r}.")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr!r}.")
    (the_site,) = alignment_sites(m, variable, site)
    if the_site.sae is not None:
        raise InputError(f"das learns a subspace of the activation itself; give the site without sae= (got "
                         f"{the_site.name!r}).")
    if the_site.basis is not None:
        raise InputError(f"das learns the subspace itself; give the site without basis= (got {the_site.name!r}).")

    if data is None or test_data is None:
        drawn = causal_model.counterfactuals(n=n_train + n_test, seed=seed)
        halves = [{v: col[sl] for v, col in vals.items()} for sl in (slice(0, n_train), slice(n_train, None))
                  for vals in (drawn.base_values, drawn.source_values)]
    if data is not None:
        base_tr, src_tr, *in_tr = high_level_data(causal_model, data)[:4]
    else:
        base_tr, src_tr = halves[0], halves[1]
        in_tr = [causal_model.encode(base_tr), causal_model.encode(src_tr)]
    if test_data is not None:
        base_te, src_te, *in_te = high_level_data(causal_model, test_data)[:4]
    else:
        base_te, src_te = halves[2], halves[3]
        in_te = [causal_model.encode(base_te), causal_model.encode(src_te)]
    y_tr = causal_model.labels(base_tr, src_tr, variable)
    y_te = causal_model.labels(base_te, src_te, variable)
    P = len(y_tr)
    check_pair_lengths(m, [the_site], in_tr[0], in_tr[1], align, "das")
    check_pair_lengths(m, [the_site], in_te[0], in_te[1], align, "das")

    try:
        xb = m.run(in_tr[0], cache=[the_site], progress=False).cache[the_site.name]
        xs = m.run(in_tr[1], cache=[the_site], progress=False).cache[the_site.name]
    except SiteError as e:  # e.g. neurons out of range, found when the activation is seen
        if isinstance(e, InputError):
            raise
        raise AlignmentSiteError(f"DAS site of {variable!r}: {e}") from None
    d = int(xb.shape[-1])
    if k > d:
        raise InputError(f"k={k} exceeds the width of site {the_site.name!r} (d={d}); choose 1 <= k <= {d}.")
    if not xb.is_floating_point():
        raise InputError(f"The activation at {the_site.name!r} is {xb.dtype}, not floating point.")

    readout, _ = output_readout(causal_model, metric)
    g = torch.Generator().manual_seed(int(seed))
    R0 = _random_orthogonal(d, g)
    S = torch.zeros(d, d, dtype=torch.float64, requires_grad=True)

    def basis() -> torch.Tensor:
        return (torch.linalg.matrix_exp(S - S.T) @ R0)[:, :k]

    def loss_and_backward(idx: torch.Tensor, scale: float) -> float:
        """Loss of the pairs ``idx`` (one engine pass); accumulates scale * dLoss/dS into S.grad."""
        B = basis().to(xb.dtype)
        new = xb[idx] + ((xs[idx] - xb[idx]) @ B) @ B.T
        slot = torch.full((P,), -1, dtype=torch.long)
        slot[idx] = torch.arange(len(idx))
        run = m.run(in_tr[0], [{the_site: _RowValues(new.detach(), slot)}] * len(idx), input_index=idx.tolist(),
                    grads=[the_site], metric=_row_loss(causal_model, metric, y_tr[idx]), chunk_size=len(idx),
                    progress=False)
        torch.autograd.backward(new, run.grads[the_site.name] * scale)
        return float(cast(torch.Tensor, run.metric).sum())  # metric= given: never None

    losses: list[float] = []
    opt = torch.optim.Adam([S], lr=float(lr))
    n_batches = -(-P // batch_size)
    total = epochs * n_batches
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / total)
    for _ in range(epochs):
        perm = torch.randperm(P, generator=g)
        for b0 in range(0, P, batch_size):
            idx = perm[b0:b0 + batch_size]
            opt.zero_grad()
            losses.append(loss_and_backward(idx, 1.0 / len(idx)) / len(idx))
            opt.step()
            sched.step()
    adam_steps = len(losses)
    if refine:
        lbfgs = torch.optim.LBFGS([S], lr=1.0, max_iter=refine, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-12, tolerance_change=1e-14)
        order = torch.arange(P)

        def closure() -> torch.Tensor:
            lbfgs.zero_grad()
            tot = sum(loss_and_backward(order[b0:b0 + batch_size], 1.0 / P) for b0 in range(0, P, batch_size))
            losses.append(tot / P)
            return torch.tensor(tot / P, dtype=torch.float64)
        lbfgs.step(closure)

    with torch.no_grad():
        B = torch.linalg.qr(basis()).Q.float()   # orthonormal to float precision
    sub = Site(the_site.module, io=the_site.io, positions=the_site.positions, neurons=the_site.neurons,
               heads=the_site.heads, n_heads=the_site.n_heads, basis=B)

    def iia(ins: list[Any], labels: torch.Tensor) -> torch.Tensor:
        vals = patched_values(m, [(sub,)], ins[0], ins[1], len(labels), readout, None, align)
        return iia_hits(vals, labels[None], causal_model.categorical, tol)

    tr_iia = bootstrap_iia(iia(in_tr, y_tr), n_boot, ci, seed)[0]
    te_iia = bootstrap_iia(iia(in_te, y_te), n_boot, ci, seed)[0]
    meta = {"method": "das", "model": m.name, "causal_model": causal_model.name, "variable": variable,
            "site": {"module": the_site.module, "io": the_site.io, "positions": _index_json(the_site.positions),
                     "neurons": _index_json(the_site.neurons), "heads": _index_json(the_site.heads),
                     "n_heads": the_site.n_heads},
            "site_name": the_site.name, "k": k, "d": d, "basis": B.tolist(),
            "train_iia": float(tr_iia[0]), "train_iia_interval": tr_iia[1:].tolist(),
            "test_iia": float(te_iia[0]), "test_iia_interval": te_iia[1:].tolist(),
            "n_train": P, "n_test": len(y_te), "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "refine": refine, "adam_steps": adam_steps, "align": align,
            "metric": callable_setting(metric),
            "data": "given" if data is not None else f"{n_train} drawn pairs",
            "test_data": "given" if test_data is not None else f"{n_test} drawn pairs",
            "tol": tol, "n_boot": n_boot, "ci": ci, "seed": seed,
            "loss": "cross-entropy" if causal_model.categorical else "MSE",
            "parametrisation": "R = matrix_exp(S - S^T) @ R0; basis = R[:, :k]",
            "title": f"DAS: {variable} at {the_site.name} (k={k})"}
    return DASResult(torch.tensor(losses, dtype=torch.float32), ("step",), {"step": list(range(len(losses)))}, meta,
                     name="loss")


def _row_loss(cm: CausalModel, metric: Any, labels: torch.Tensor) -> Callable[..., torch.Tensor]:
    """The per-row loss of the rows labelled ``labels``, as an engine metric (it takes each row's real length
    where the prompts differ in length, as the readout does)."""
    if cm.categorical:
        def ce(y: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
            logits = class_logits(metric, y, lengths)
            return F.cross_entropy(logits.float(), labels.to(logits.device), reduction="none")
        ce.takes_lengths = metric is None or takes_lengths(metric)  # type: ignore[attr-defined]
        return ce
    readout, _ = output_readout(cm, metric)

    def mse(y: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return (call_metric(readout, y, None, lengths).float() - labels.to(y.device)) ** 2
    mse.takes_lengths = takes_lengths(readout)  # type: ignore[attr-defined]
    return mse
