"""Strict Interchange Intervention Training (SIIT; Gupta et al., "InterpBench", 2024): train a small transformer so
that a known circuit implements a compiled tracr program.

>>> from causalscope import circuits
>>> t = circuits.siit("frac-prevs", steps=3000, seed=0)          # ~1-3 min on one CPU core
>>> t.record["accuracy"], t.record["iia"]                       # held-out agreement with the compiled model
>>> t.save("siit-frac-prevs")                                    # model.safetensors + siit.json
>>> circuits.node_effects(t.case())                              # the seed's evaluation on the trained model

The high-level (HL) model is the case's compiled transformer; the low-level (LL) model is a
``CompiledTransformer`` of the same depth, heads, vocabularies and context, but its own (small) widths and
random initial weights. The *correspondence* maps each HL circuit node to the LL node that must implement it;
the default is the identity by name (``a1.h0`` -> ``a1.h0``, ``m0`` -> ``m0``), and it is saved with the model.
Every other LL node is *outside* the circuit.

Each step draws a batch of base inputs and a batch of source inputs from the training split and runs three
groups of rows in one differentiable LL pass:

- **behaviour**: the LL output on the base against the HL output on the base;
- **IIT**: each row patches one aligned node (drawn per row) with its value on the row's source, in the LL and
  at the corresponding HL node; LL against HL;
- **strictness**: each row resample-ablates one LL node outside the circuit (drawn per row); LL against the HL
  output on the unpatched base.

Categorical outputs use cross-entropy against the HL's argmax (positions where the HL output ties are left out),
numerical outputs the squared error. Losses are weighted ``weights = (behaviour, iit, strict)``; ``l2`` adds
an L2 penalty on the parameters that only nodes outside the circuit use (their query/key/value/output weights,
their MLP), the trained counterpart of tracr's zero weights: without it a node outside the circuit can write a
constant that later layers rely on, which resampling cannot see but zeroing (scale 0) can (docs/decisions/0008).

Training interventions are per-row replacements in the LL's forward written out node by node (``node_forward``,
one batched differentiable pass), because they need gradients of the parameters; the engine (``Model.run``) gives
activation gradients only and never changes a model. Evaluation (``record``: accuracy, IIA, node effects) runs
through the engine: ``evaluate_siit``.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import save_file

from ..core import tqdm
from ..errors import InputError, check_int, check_number, check_seed
from ..zoo.compiled import Block, CompiledConfig, CompiledTransformer
from ..zoo.siit import DATA as SIIT_DATA
from ..zoo.siit import FORMAT, read_siit_folder, siit_names
from ._ablation_inputs import NO_PREDICTION, predict
from ._cases import Case, case_names, load_case, split_inputs
from ._siit_eval import evaluate_siit, label_mask


@dataclass
class SIITModel:
    """A low-level model trained with SIIT against a case's compiled model, with its correspondence and record.

    >>> t = circuits.load_siit("frac-prevs")           # a shipped trained model
    >>> t.correspondence                               # HL circuit node -> LL node
    {'m0': 'm0', 'a1.h0': 'a1.h0'}
    >>> case = t.case()                                # the case, with the trained model in place of the compiled one
    """

    name: str
    model: CompiledTransformer
    correspondence: dict[str, str]
    record: dict[str, Any] = field(default_factory=dict)

    def case(self) -> Case:
        """The HL case with this LL model as its ``model`` (same inputs, labels and circuit)."""
        hl = load_case(self.name)
        hl.model, hl.correspondence, hl.training = self.model, dict(self.correspondence), dict(self.record)
        return hl

    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``siit.json`` (config, correspondence, training record) to ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.model.state_dict().items()},
                  str(out / "model.safetensors"))
        head = {"format": FORMAT, "case": self.name, "config": self.model.cfg.to_dict(),
                "correspondence": self.correspondence, "record": self.record}
        (out / "siit.json").write_text(json.dumps(head, indent=1) + "\n")
        return out


def read_siit(folder: str | Path) -> SIITModel:
    """Read a model written by ``SIITModel.save``; refuses a folder that is not one.

    >>> t = read_siit("runs/siit-reverse")
    """
    model, head = read_siit_folder(folder)
    return SIITModel(str(head["case"]), model, dict(head["correspondence"]), dict(head.get("record", {})))


def load_siit(name: str) -> SIITModel:
    """A shipped SIIT-trained model (``causalscope.circuits.train_siit`` wrote it), as an :class:`SIITModel`.

    >>> t = load_siit("reverse"); t.record["accuracy"]
    """
    if name not in siit_names():
        raise InputError(f"No shipped SIIT-trained model for {name!r}; the shipped ones are "
                         f"{', '.join(siit_names())} (train one with circuits.siit({name!r})).")
    return read_siit(SIIT_DATA / name)


# ---------------------------------------------------------------------------------------------------------------------
# Nodes of a compiled transformer, for training (differentiable hooks on its own modules)
# ---------------------------------------------------------------------------------------------------------------------
def all_nodes(cfg: CompiledConfig) -> list[str]:
    """Every node of a compiled transformer in graph order: heads ``a{l}.h{h}`` then ``m{l}`` per layer."""
    out = []
    for layer in range(cfg.n_layers):
        out += [f"a{layer}.h{h}" for h in range(cfg.n_heads)] + [f"m{layer}"]
    return out


def node_forward(model: CompiledTransformer, tokens: torch.Tensor,
                 replace: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                 grab: Iterable[str] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's forward written out node by node, with per-row replacements: ``replace[node] = (rows, values)``
    writes ``values`` (len(rows), T, d_model) as ``node``'s output on those rows. Returns the output and the
    grabbed nodes' outputs (B, T, d_model). Differentiable; the same operations as ``model(tokens)``."""
    replace = replace or {}
    wanted = set(grab)
    grabbed: dict[str, torch.Tensor] = {}

    def put(node: str, value: torch.Tensor, head: int | None = None) -> torch.Tensor:
        if node in replace:
            rows, new = replace[node]
            value = value.clone()
            if head is None:
                value[rows] = new
            else:
                value[rows, :, head] = new
        if node in wanted:
            grabbed[node] = value if head is None else value[:, :, head]
        return value

    x = model.embed(tokens)
    mask = model.key_mask(tokens)
    for layer, block in enumerate(cast(Sequence[Block], model.blocks)):
        heads = block.attn.heads(x, mask)
        for h in range(heads.shape[2]):
            heads = put(f"a{layer}.h{h}", heads, h)
        x = x + heads.sum(-2) + block.attn.b_O
        x = x + put(f"m{layer}", block.mlp(x))
    return model.unembed(x @ model.W_U), grabbed


def outside_parameters(model: CompiledTransformer, outside: Sequence[str]) -> list[torch.Tensor]:
    """The parameters only the given nodes use: a head's Q/K/V/O slices and biases, an MLP's weights."""
    blocks = cast(Sequence[Block], model.blocks)
    out: list[torch.Tensor] = []
    for n in outside:
        if n.startswith("a"):
            layer, head = (int(x) for x in n[1:].split(".h"))
            at = blocks[layer].attn
            out += [at.W_Q[head], at.W_K[head], at.W_V[head], at.W_O[head], at.b_Q[head], at.b_K[head], at.b_V[head]]
        else:
            mlp = blocks[int(n[1:])].mlp
            out += [p for p in mlp.parameters()]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------
def _targets(y_hl: torch.Tensor, categorical: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if categorical:
        t = predict(y_hl, True, "no_prediction")
        return t.clamp_min(0), t != NO_PREDICTION
    return y_hl[..., 0], torch.isfinite(y_hl[..., 0])


def _loss(y_ll: torch.Tensor, y_hl: torch.Tensor, mask: torch.Tensor, categorical: bool) -> torch.Tensor:
    t, ok = _targets(y_hl, categorical)
    m = mask & ok
    if not bool(m.any()):
        return y_ll.sum() * 0.0
    if categorical:
        return torch.nn.functional.cross_entropy(y_ll[m], t[m])
    return ((y_ll[..., 0][m] - t[m]) ** 2).mean()


def _init(model: CompiledTransformer, gen: torch.Generator) -> None:
    """Biases 0; embeddings N(0, 4/sqrt(d_model)); every other weight N(0, 1/sqrt(fan_in)) (fan_in: its
    second-to-last dimension, the one it reads from)."""
    d = model.cfg.d_model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1].startswith("b_") or name.endswith("bias"):
                p.zero_()
            elif name in ("W_E", "W_pos"):
                p.copy_(torch.randn(p.shape, generator=gen) * (4.0 / math.sqrt(d)))
            else:
                fan_in = p.shape[-2] if p.dim() >= 2 else p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))


def siit(case: str | Case, *, d_model: int = 32, d_head: int = 8, d_mlp: int = 32, steps: int = 3000,
         batch_size: int = 256, lr: float = 1e-3, weights: Sequence[float] = (1.0, 1.0, 0.4), l2: float = 0.1,
         holdout: float = 0.2, seed: int = 0, split_seed: int = 1234,
         correspondence: Mapping[str, str] | None = None, evaluate: bool = True,
         progress: bool | None = None) -> SIITModel:
    """Train a low-level transformer with SIIT so that the case's circuit implements its compiled program.

    >>> t = circuits.siit("frac-prevs")                               # 3000 steps, seeded; ~1-3 min on a CPU core
    >>> t.record["accuracy"], min(t.record["iia"].values())
    (1.0, 0.97)
    >>> circuits.node_effects(t.case(), scales=[0, 1]).table()

    ``case``: a shipped case name or a :class:`Case`. ``d_model``/``d_head``/``d_mlp``: the LL widths (depth,
    heads, vocabularies and context are the HL's). ``weights``: behaviour, IIT and strictness loss weights.
    ``l2``: penalty on the parameters only nodes outside the circuit use. ``holdout``: the fraction of the
    case's inputs held out (seeded by ``split_seed``) for the record's evaluation. ``correspondence``: HL circuit
    node -> LL node (default: the identity by name). ``evaluate=False`` skips the record's evaluation.
    Adam at ``lr``; everything is seeded by ``seed``, so a rerun on the same machine gives the same weights.
    """
    hl_case = load_case(case) if isinstance(case, str) else case
    if not isinstance(hl_case, Case):
        raise InputError(f"siit trains against a shipped case: give its name ({', '.join(case_names())}) or a "
                         f"circuits.Case; got {type(case).__name__}.")
    steps = check_int(steps, "steps", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    d_model, d_head, d_mlp = (check_int(v, n, low=1) for v, n in ((d_model, "d_model"), (d_head, "d_head"),
                                                                    (d_mlp, "d_mlp")))
    lr = check_number(lr, "lr", low=0.0, open_low=True)
    l2 = check_number(l2, "l2", low=0.0)
    holdout = check_number(holdout, "holdout", low=0.0, high=1.0, open_high=True)
    seed, split_seed = check_seed(seed), check_seed(split_seed, "split_seed")
    w = [check_number(x, "weights", low=0.0) for x in weights]
    if len(w) != 3:
        raise InputError(f"weights are (behaviour, iit, strict), three numbers; got {list(weights)}.")
    HL = hl_case.model  # only read, under no_grad (its training flag and weights stay as they are)
    hc = HL.cfg
    nodes = all_nodes(hc)
    corr = _correspondence(hl_case, correspondence, nodes)
    inside = [n for n in nodes if n in set(corr.values())]
    outside = [n for n in nodes if n not in inside]
    cfg = CompiledConfig(n_layers=hc.n_layers, d_model=d_model, n_heads=hc.n_heads, d_head=d_head, d_mlp=d_mlp,
                         d_vocab=hc.d_vocab, d_vocab_out=hc.d_vocab_out, n_ctx=hc.n_ctx, causal=hc.causal,
                         pad_id=hc.pad_id)
    gen = torch.Generator().manual_seed(seed)
    LL = CompiledTransformer(cfg)
    _init(LL, gen)
    train_idx, test_idx = split_inputs(len(hl_case.inputs), holdout, split_seed)
    tr = hl_case.inputs[train_idx]
    cat = hl_case.categorical
    opt = torch.optim.Adam(LL.parameters(), lr=lr)
    penal = outside_parameters(LL, outside)
    hl_nodes = list(corr)
    losses: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"SIIT {hl_case.name}", disable=progress is False, leave=False)
    for step in bar:
        b = tr[torch.randint(len(tr), (batch_size,), generator=gen)]
        s = tr[torch.randint(len(tr), (batch_size,), generator=gen)]
        mask = label_mask(b, hc.pad_id)
        pick = torch.randint(len(hl_nodes), (batch_size,), generator=gen)
        with torch.no_grad():
            _, hl_src = node_forward(HL, s, grab=hl_nodes)
            hl_rep = {n: (rows + batch_size, hl_src[n][rows]) for i, n in enumerate(hl_nodes)
                      if len(rows := (pick == i).nonzero()[:, 0])}
            y_hl = node_forward(HL, torch.cat([b, b]), hl_rep)[0]
        _, ll_src = node_forward(LL, s, grab=nodes)
        rep: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, n in enumerate(hl_nodes):
            rows = (pick == i).nonzero()[:, 0]
            if len(rows):
                rep[corr[n]] = (rows + batch_size, ll_src[corr[n]][rows])
        groups = 2
        if outside and w[2] > 0:
            out_pick = torch.randint(len(outside), (batch_size,), generator=gen)
            for i, n in enumerate(outside):
                rows = (out_pick == i).nonzero()[:, 0]
                if len(rows):
                    rep[n] = (rows + 2 * batch_size, ll_src[n][rows])
            groups = 3
        y_ll = node_forward(LL, torch.cat([b] * groups), rep)[0]
        lb = _loss(y_ll[:batch_size], y_hl[:batch_size], mask, cat)
        li = _loss(y_ll[batch_size:2 * batch_size], y_hl[batch_size:], mask, cat)
        ls = _loss(y_ll[2 * batch_size:], y_hl[:batch_size], mask, cat) if groups == 3 else torch.zeros(())
        reg = torch.stack([(p ** 2).sum() for p in penal]).sum() if penal and l2 > 0 else torch.zeros(())
        loss = w[0] * lb + w[1] * li + w[2] * ls + l2 * reg
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            row = {"step": step, **{k: round(float(v.detach()), 6) for k, v in
                                    (("behaviour", lb), ("iit", li), ("strict", ls), ("l2", reg))}}
            losses.append(row)
            bar.set_postfix(behaviour=f"{row['behaviour']:.3g}", iit=f"{row['iit']:.3g}", strict=f"{row['strict']:.3g}")
    bar.close()
    LL.eval()
    for p in LL.parameters():
        p.requires_grad_(False)
    record: dict[str, Any] = {
        "method": "siit", "seed": int(seed), "steps": steps, "batch_size": batch_size, "lr": lr,
        "weights": {"behaviour": w[0], "iit": w[1], "strict": w[2]}, "l2_outside": l2,
        "d_model": d_model, "d_head": d_head, "d_mlp": d_mlp, "holdout": holdout, "split_seed": int(split_seed),
        "n_train": len(train_idx), "n_test": len(test_idx), "train_seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(), "losses": losses, "nodes_outside": outside}
    out = SIITModel(hl_case.name, LL, corr, record)
    if evaluate and len(test_idx):
        record.update(evaluate_siit(out, hl_case, test_idx))
    return out


def _correspondence(case: Case, given: Mapping[str, str] | None, nodes: list[str]) -> dict[str, str]:
    hl_inside = [n for n in nodes if n in case.circuit.nodes]
    if given is None:
        return {n: n for n in hl_inside}
    if not isinstance(given, Mapping):
        raise InputError(f"correspondence maps each HL circuit node to an LL node, e.g. {{'m0': 'm0'}}; got "
                         f"{type(given).__name__}.")
    corr = {str(k): str(v) for k, v in given.items()}
    missing = [n for n in hl_inside if n not in corr]
    extra = [k for k in corr if k not in hl_inside]
    bad = [v for v in corr.values() if v not in nodes]
    if missing or extra or bad or len(set(corr.values())) != len(corr):
        raise InputError(f"correspondence must map every HL circuit node ({', '.join(hl_inside)}) to a distinct LL "
                         f"node among {', '.join(nodes)}; missing {missing}, not in the circuit {extra}, unknown LL "
                         f"nodes {bad}.")
    return corr
