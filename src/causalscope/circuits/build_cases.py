"""Rebuild the shipped tracr cases: compile each RASP program, check the PyTorch copy, write package data.

>>> # pip install -e .[tracr]
>>> # python -m causalscope.circuits.build_cases                 # all cases, into the package
>>> # python -m causalscope.circuits.build_cases --out /tmp/cases reverse

Each case is a folder ``<out>/<case>/`` holding ``model.safetensors`` (the CompiledTransformer's weights) and
``case.json`` (config, vocabularies, BOS / PAD, the RASP source, the ground-truth circuit, the evaluation
inputs as token ids, padded with PAD to ``max_seq_len``, and tracr's own decoded outputs on each unpadded
input, from ``assembled_model.apply``). ``index.json``
lists the cases with their descriptions. Nothing is written unless the copy reproduces tracr on every input.
"""
from __future__ import annotations

import argparse
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..zoo.compiled import CompiledTransformer
from ._siit import node_forward
from ._tracr_compile import BOS, CASES, PAD, compile_case, evaluation_inputs, tracr_outputs

DATA = Path(__file__).resolve().parent.parent / "zoo" / "data" / "tracr"
NUMERICAL_TOL = 1e-4


@torch.inference_mode()
def node_outputs(model: CompiledTransformer, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each graph node writes into the residual stream: ``embed``, ``a{l}.h{h}``, ``m{l}`` (B, T, d_model).

    >>> outs = node_outputs(model, tokens); outs["a0.h0"].shape       # doctest: +SKIP
    torch.Size([81, 5, 35])
    """
    nodes = [f"a{layer}.h{h}" for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)] + \
        [f"m{layer}" for layer in range(model.cfg.n_layers)]
    return {"embed": model.embed(tokens), **node_forward(model, tokens, grab=nodes)[1]}


def constant_nodes(model: CompiledTransformer, tokens: torch.Tensor, nodes: list[str]) -> list[str]:
    """Circuit nodes whose output is the same on every input (position by position): no resample effect."""
    outs = node_outputs(model, tokens)
    real = model.key_mask(tokens)
    real = torch.ones_like(tokens, dtype=torch.bool) if real is None else real
    both = (real & real[:1])[..., None]  # compare positions that hold a token in both inputs
    return [n for n in nodes if n in outs and bool((((outs[n] - outs[n][:1]).abs() <= 1e-6) | ~both).all())]


def _check(built: Any, ids: torch.Tensor, outputs: list[list[Any]]) -> None:
    with torch.inference_mode():
        logits = built.model(ids)
    bad, err = 0, 0.0
    for row, o in zip(logits, outputs):  # only the unpadded positions carry tracr's output
        got = row[1:len(o)]
        if built.categorical:
            want = torch.tensor([built.output_vocab.index(v) for v in o[1:]])
            bad += int((got.argmax(-1) != want).sum())
        else:
            err = max(err, float((got[:, 0] - torch.tensor(o[1:])).abs().max()))
    if bad:
        raise RuntimeError(f"{built.spec.name}: the PyTorch copy disagrees with tracr at {bad} positions.")
    if not err <= NUMERICAL_TOL:
        raise RuntimeError(f"{built.spec.name}: the PyTorch copy is {err:.2e} away from tracr.")


def build_case(name: str, out: Path = DATA) -> dict[str, Any]:
    """Compile, check and write one case; returns a short summary (sizes, circuit, agreement)."""
    built = compile_case(name)
    spec = built.spec
    inputs = evaluation_inputs(spec)
    outputs = tracr_outputs(built, inputs)
    ids = torch.tensor([[built.vocab.index(v) for v in seq] for seq in inputs])
    _check(built, ids, outputs)
    circuit = built.circuit
    circuit.meta["constant_on_inputs"] = constant_nodes(built.model, ids, circuit.nodes)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in built.model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    record = {
        "name": name, "description": spec.description, "program": built.program,
        "tracr_version": _version("tracr-pypi"), "config": built.model.cfg.to_dict(),
        "vocab": built.vocab, "output_vocab": built.output_vocab, "categorical": built.categorical,
        "bos": BOS, "pad": PAD, "max_seq_len": spec.max_seq_len,
        "label_positions": list(range(1, spec.max_seq_len + 1)),
        "residual_labels": built.residual_labels, "circuit": circuit.to_dict(),
        "inputs": ids.tolist(),
        "outputs": [[o[0], *[_plain(v) for v in o[1:]]] for o in outputs],
    }
    (folder / "case.json").write_text(json.dumps(record, separators=(",", ":")) + "\n")
    return {"name": name, "config": record["config"], "n_inputs": len(inputs), "nodes": circuit.nodes,
            "edges": len(circuit.edges), "constant": circuit.meta["constant_on_inputs"]}


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        raise RuntimeError(f"tracr produced a non-finite output {v}.")
    return v


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def write_index(out: Path = DATA) -> None:
    """``index.json``: every case folder under ``out`` with its description (the zoo reads this)."""
    index = {}
    for folder in sorted(p for p in out.iterdir() if (p / "case.json").is_file()):
        index[folder.name] = json.loads((folder / "case.json").read_text())["description"]
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m causalscope.circuits.build_cases",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to build (default: all of {', '.join(CASES)})")
    parser.add_argument("--out", type=Path, default=DATA, help="output folder (default: the package data)")
    args = parser.parse_args(argv)
    for name in args.cases or list(CASES):
        s = build_case(name, args.out)
        c = s["config"]
        print(f"{name:13s} layers={c['n_layers']} d_model={c['d_model']} heads={c['n_heads']} d_mlp={c['d_mlp']} "
              f"inputs={s['n_inputs']} nodes={' '.join(s['nodes'])} edges={s['edges']} "
              f"constant={','.join(s['constant']) or '-'}  ok")
    write_index(args.out)


if __name__ == "__main__":
    main()
