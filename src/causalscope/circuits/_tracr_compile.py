"""Compile the shipped RASP programs with tracr, copy the weights into a CompiledTransformer, derive the truth.

Needs the optional extra (``pip install causalscope[tracr]``: tracr, JAX, dm-haiku); nothing here imports
them until a function runs. The package's shipped cases were written by ``python -m
causalscope.circuits.build_cases``, which calls :func:`compile_case`.

>>> built = compile_case("reverse")                     # doctest: +SKIP
>>> built.model(torch.tensor([[0, 2, 3, 4, 2]])).argmax(-1)[0, 1:]   # BOS a b c a -> a c b a
tensor([0, 2, 1, 0])
>>> built.circuit.nodes
['embed', 'a0.h0', 'm0', 'm1', 'm2', 'a3.h0', 'logits']

**Ground-truth rule.** tracr compiles every RASP expression the output depends on into one craft block:
a categorical or numerical ``Aggregate`` into one attention head, a ``Map`` / ``SequenceMap`` into an MLP,
a ``SelectorWidth`` into one head followed by one MLP. Each block reads named subspaces of the residual
stream (the value spaces of the expressions it takes as input; a head's query, key and value spaces
together, the ``one`` direction for constants and the ``tokens:BOS`` direction it attends to by default)
and writes exactly the value space of the expression it computes. The nodes of the ground-truth circuit
are ``embed`` (writes the ``tokens``, ``indices`` and ``one`` directions), every head that holds a
compiled block, every MLP layer that holds at least one compiled MLP (several RASP MLPs placed side by
side in one layer are one node ``m{layer}``) and ``logits`` (reads the output expression's space). An
edge ``sender -> receiver`` is in the circuit when the receiver reads at least one basis direction that
the sender writes. Zero-padded heads and empty MLP slots are outside the circuit; every node outside has
all-zero weights, every node inside has nonzero weights, and the edges equal those read off the weights
(the support of a sender's output matrix meets the support of a receiver's input matrices). The rule is
structural: a node whose output is the same on every evaluation input (``reverse`` computes ``length``,
which is constant when all inputs have the full length) is in the circuit yet has no resample-ablation
effect on those inputs; ``build_cases`` lists such nodes in ``meta["constant_on_inputs"]`` (the evaluation
inputs have every length up to ``max_seq_len``, padded, so that the length varies).
"""
from __future__ import annotations

import inspect
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from ..zoo.compiled import Block, CompiledConfig, CompiledTransformer
from ._circuit import Circuit, upstream

BOS = "BOS"
PAD = "PAD"
MAX_INPUTS = 8000

RULE = ("Nodes: embed, each attention head and each MLP layer that holds a compiled RASP block, logits. "
        "Edge s -> r when r reads (query, key or value space of a head; input space of an MLP; the output "
        "space for logits) at least one residual basis direction that s writes (embed writes tokens, indices "
        "and one). Padded heads and empty MLP slots are outside and have zero weights.")


@dataclass(frozen=True)
class CaseSpec:
    """One shipped case: a RASP program (source run with ``rasp`` and ``lib`` in scope) and its vocabulary.

    >>> CASES["hist"].max_seq_len
    5
    """

    name: str
    description: str
    source: str
    vocab: tuple[Any, ...]
    max_seq_len: int
    lib_functions: tuple[str, ...] = ()


CASES: dict[str, CaseSpec] = {c.name: c for c in [
    CaseSpec("reverse", "reverse the input sequence (lib.make_reverse)",
             "program = lib.make_reverse(rasp.tokens)", ("a", "b", "c"), 4, ("make_length", "make_reverse")),
    CaseSpec("hist", "histogram: how often each position's token occurs in the sequence (lib.make_hist)",
             "program = lib.make_hist()", ("a", "b", "c"), 5, ("make_hist",)),
    CaseSpec("sort", "sort the tokens ascending, ties kept in input order (lib.make_sort)",
             "program = lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=4, min_key=1)", (1, 2, 3, 4), 4,
             ("make_sort", "make_sort_unique")),
    CaseSpec("frac-prevs", "numerical: fraction of the tokens so far that are 'x' (lib.make_frac_prevs)",
             'program = lib.make_frac_prevs(rasp.tokens == "x")', ("x", "y", "z"), 5, ("make_frac_prevs",)),
    CaseSpec("pair-balance", "numerical: fraction of '(' minus fraction of ')' so far (lib.make_pair_balance; "
             "its last step is a numerical MLP)",
             'program = lib.make_pair_balance(rasp.tokens, "(", ")")', ("(", ")", "a"), 5,
             ("make_pair_balance", "make_frac_prevs")),
    CaseSpec("majority", "numerical MLP: 1 where more than half of the tokens so far are 'x', else 0 (a "
             "discretising numerical MLP on lib.make_frac_prevs)",
             'frac = lib.make_frac_prevs(rasp.tokens == "x")\n'
             'program = rasp.numerical(rasp.Map(lambda f: 1.0 if f > 0.5 else 0.0, frac)).named("majority")',
             ("x", "y", "z"), 5, ("make_frac_prevs",)),
    CaseSpec("ib3-frac-prevs", "InterpBench case 3, the ground-truth-circuits seed's model: numerical fraction of "
             "the tokens so far that are 'x', over {a, b, c, x}, up to 5 tokens (lib.make_frac_prevs)",
             'program = lib.make_frac_prevs(rasp.tokens == "x")', ("a", "b", "c", "x"), 5, ("make_frac_prevs",)),
]}


def _require_tracr() -> tuple[Any, Any]:
    try:
        from tracr.compiler import lib
        from tracr.rasp import rasp
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"Compiling RASP programs needs tracr and JAX ({e}). Install the optional extra: "
                          f"pip install causalscope[tracr]") from e
    return rasp, lib


def case_spec(name: str) -> CaseSpec:
    if name not in CASES:
        raise KeyError(f"No tracr case {name!r}; the cases are {', '.join(CASES)}.")
    return CASES[name]


def program_text(spec: CaseSpec) -> str:
    """The case's RASP source followed by the source of the tracr ``lib`` functions it calls."""
    _, lib = _require_tracr()
    parts = [spec.source.strip(), ""]
    for fn in spec.lib_functions:
        parts += [f"# tracr.compiler.lib.{fn}", inspect.getsource(getattr(lib, fn)).rstrip(), ""]
    return "\n".join(parts).rstrip() + "\n"


def build_program(spec: CaseSpec) -> Any:
    """Run the case's source and give every expression a fixed id (tracr's ids count globally per process).

    Labels (``name_id``) name the residual directions and tracr sorts the residual basis by them, so fixed
    ids make the compiled weights the same whatever was compiled before in the process.
    """
    rasp, lib = _require_tracr()
    scope: dict[str, Any] = {"rasp": rasp, "lib": lib}
    exec(spec.source, scope)  # noqa: S102 - our own shipped source text
    program = scope["program"]
    order: list[Any] = []
    seen: set[int] = set()

    def visit(expr: Any) -> None:
        if id(expr) in seen:
            return
        seen.add(id(expr))
        for child in expr.children:
            visit(child)
        order.append(expr)

    visit(program)
    for i, expr in enumerate(order, start=1):
        expr.__dict__["unique_id"] = i
    return program


@dataclass
class TracrBuild:
    """A compiled case: tracr's assembled model, our copy of it, vocabularies and the ground-truth circuit."""

    spec: CaseSpec
    assembled: Any
    model: CompiledTransformer
    vocab: list[Any]
    output_vocab: list[Any] | None
    circuit: Circuit
    residual_labels: list[str]
    program: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def categorical(self) -> bool:
        return self.output_vocab is not None


def compile_case(name: str) -> TracrBuild:
    """Compile one shipped case with tracr; return tracr's model, its exact PyTorch copy and the circuit."""
    rasp, _ = _require_tracr()
    from tracr.compiler import (
        assemble,
        basis_inference,
        craft_graph_to_model,
        craft_model_to_transformer,
        expr_to_craft_graph,
        nodes,
        rasp_to_graph,
    )
    from tracr.craft import bases

    spec = case_spec(name)
    program = build_program(spec)
    # The steps of tracr's compiling.compile_rasp_to_model, kept apart so the graph stays at hand.
    extracted = rasp_to_graph.extract_rasp_graph(program)
    graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
    basis_inference.infer_bases(graph, sink, set(spec.vocab), spec.max_seq_len)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        graph, bos_dir=bases.BasisDirection(rasp.tokens.label, BOS), mlp_exactness=100)
    craft_model = craft_graph_to_model.craft_graph_to_model(graph, sources)
    assembled = craft_model_to_transformer.craft_model_to_transformer(
        craft_model=craft_model, graph=graph, sink=sink, max_seq_len=spec.max_seq_len,
        compiler_bos=BOS, compiler_pad=PAD)

    vocab = [v for v, _ in sorted(assembled.input_encoder.encoding_map.items(), key=lambda kv: kv[1])]
    categorical = rasp.is_categorical(sink[nodes.EXPR])
    out_dirs = list(bases.VectorSpaceWithBasis(sink[nodes.OUTPUT_BASIS]).basis)
    output_vocab = None
    if categorical:
        output_vocab = [v for v, _ in sorted(assembled.output_encoder.encoding_map.items(), key=lambda kv: kv[1])]
        assert [d.value for d in out_dirs] == output_vocab
    labels = list(assembled.residual_labels)
    model = _to_torch(assembled, labels, [str(d) for d in out_dirs])
    _, module_names = assemble._get_model_config_and_module_names(craft_model)
    circuit = _ground_truth(spec, graph, sources, craft_model, module_names, labels, [str(d) for d in out_dirs])
    return TracrBuild(spec, assembled, model, vocab, output_vocab, circuit, labels, program_text(spec))


def _to_torch(assembled: Any, labels: list[str], out_labels: list[str]) -> CompiledTransformer:
    """Copy tracr's haiku parameters into a CompiledTransformer (reshapes only; float32 as tracr runs)."""
    p = {k: {kk: np.array(vv, dtype=np.float32) for kk, vv in v.items()} for k, v in assembled.params.items()}
    mc = assembled.model_config
    H, dh = int(mc.num_heads), int(mc.key_size)
    d_vocab, d_model = p["token_embed"]["embeddings"].shape
    cfg = CompiledConfig(n_layers=int(mc.num_layers), d_model=int(d_model), n_heads=H, d_head=dh,
                         d_mlp=int(mc.mlp_hidden_size), d_vocab=int(d_vocab),
                         d_vocab_out=len(out_labels), n_ctx=int(p["pos_embed"]["embeddings"].shape[0]),
                         causal=bool(mc.causal), pad_id=int(assembled.input_encoder.encoding_map[PAD]))
    assert len(labels) == d_model and not mc.layer_norm
    net = CompiledTransformer(cfg)
    t = torch.from_numpy
    W_U = np.zeros((d_model, len(out_labels)), dtype=np.float32)
    for j, lab in enumerate(out_labels):
        W_U[labels.index(lab), j] = 1.0
    with torch.no_grad():
        net.W_E.copy_(t(p["token_embed"]["embeddings"]))
        net.W_pos.copy_(t(p["pos_embed"]["embeddings"]))
        net.W_U.copy_(t(W_U))
        for i, block in enumerate(cast(Iterable[Block], net.blocks)):
            a, m = f"transformer/layer_{i}/attn", f"transformer/layer_{i}/mlp"
            for part in ("query", "key", "value"):
                w = t(p[f"{a}/{part}"]["w"]).reshape(d_model, H, dh).permute(1, 0, 2)
                b = t(p[f"{a}/{part}"]["b"]).reshape(H, dh)
                getattr(block.attn, f"W_{part[0].upper()}").copy_(w)
                getattr(block.attn, f"b_{part[0].upper()}").copy_(b)
            block.attn.W_O.copy_(t(p[f"{a}/linear"]["w"]).reshape(H, dh, d_model))
            block.attn.b_O.copy_(t(p[f"{a}/linear"]["b"]))
            block.mlp.W_in.copy_(t(p[f"{m}/linear_1"]["w"]))
            block.mlp.b_in.copy_(t(p[f"{m}/linear_1"]["b"]))
            block.mlp.W_out.copy_(t(p[f"{m}/linear_2"]["w"]))
            block.mlp.b_out.copy_(t(p[f"{m}/linear_2"]["b"]))
    return net.eval()


def _describe(expr: Any) -> str:
    kids = ", ".join(c.label for c in expr.children)
    return f"{expr.label} = {type(expr).__name__}({kids})"


def _ground_truth(spec: CaseSpec, graph: Any, sources: Any, craft_model: Any, module_names: list[str],
                  labels: list[str], out_labels: list[str]) -> Circuit:
    """Place every compiled block in its layer / head and connect blocks through the spaces they share."""
    from tracr.compiler import craft_graph_to_model as c2m
    from tracr.compiler import nodes
    from tracr.craft import transformers
    from tracr.rasp import rasp

    allocation = c2m._allocate_modules_to_layers(graph, sources)
    by_half: dict[int, list[tuple[Any, Any]]] = {}
    for node_id, half in allocation.items():
        node = graph.nodes[node_id]
        block, expr = node.get(nodes.MODEL_BLOCK), node[nodes.EXPR]
        if c2m._node_is_residual_block(node):  # SelectorWidth: a head, then an MLP in the next half-layer
            by_half.setdefault(half, []).append((expr, block.blocks[0]))
            by_half.setdefault(half + 1, []).append((expr, block.blocks[1]))
        elif block is not None:
            by_half.setdefault(half, []).append((expr, block))
    halves = sorted(h for h, blocks in by_half.items() if blocks)
    assert len(halves) == len(craft_model.blocks) == len(module_names)

    reads: dict[str, set[str]] = {"embed": set(), "logits": set(out_labels)}
    writes: dict[str, set[str]] = {"logits": set()}
    writes["embed"] = {lab for lab in labels if lab.startswith(("tokens:", "indices:")) or lab == "one"}
    rasp_of: dict[str, list[str]] = {}
    encoding: dict[str, str] = {}  # what a node writes: one-hot values (categorical) or numbers (numerical)

    def enc(parts: list[tuple[Any, bool]]) -> str:
        return "numerical" if any(num for _, num in parts) else "categorical"

    for half, craft_block, module in zip(halves, craft_model.blocks, module_names):
        layer = int(module.split("/")[1].split("_")[1])
        if module.endswith("attn"):
            compiled_heads = list(craft_block.as_multi().heads())
            ours = [(expr, head) for expr, blk in by_half[half] for head in blk.as_multi().heads()]
            assert len(ours) == len(compiled_heads) and all(a is b for (_, a), b in zip(ours, compiled_heads))
            for h, (expr, head) in enumerate(ours):
                n = f"a{layer}.h{h}"
                reads[n] = {str(d) for sp in (head.w_qk.left_space, head.w_qk.right_space, head.w_ov.input_space)
                            for d in sp.basis}
                writes[n] = {str(d) for d in head.w_ov.output_space.basis}
                rasp_of[n] = [_describe(expr)]
                # a SelectorWidth head writes a number (the attention paid to BOS), its MLP the categorical width
                width_head = c2m._node_is_residual_block(graph.nodes[expr.label])
                encoding[n] = enc([(expr, width_head or rasp.is_numerical(expr))])
        else:
            assert isinstance(craft_block, transformers.MLP)
            n = f"m{layer}"
            reads[n] = {str(d) for _, blk in by_half[half] for d in blk.fst.input_space.basis}
            writes[n] = {str(d) for _, blk in by_half[half] for d in blk.snd.output_space.basis}
            rasp_of[n] = [_describe(expr) for expr, _ in by_half[half]]
            encoding[n] = enc([(expr, rasp.is_numerical(expr)) for expr, _ in by_half[half]])

    names = list(reads)
    edges, edge_spaces = [], {}
    for s, r in itertools.product(names, names):
        shared = writes[s] & reads[r]
        if shared and upstream(s, r):
            edges.append((s, r))
            edge_spaces[f"{s}->{r}"] = sorted({lab.split(":")[0] for lab in shared})
    space = lambda dirs: sorted({lab.split(":")[0] for lab in dirs})  # noqa: E731
    meta = {"case": spec.name, "source": "tracr", "rule": RULE,
            "nodes": {n: {"rasp": rasp_of.get(n, []), "reads": space(reads[n]), "writes": space(writes[n]),
                          **({"encoding": encoding[n]} if n in encoding else {})} for n in names},
            "edge_spaces": edge_spaces}
    return Circuit(names, edges, meta)


def evaluation_inputs(spec: CaseSpec, seed: int = 0) -> list[list[Any]]:
    """Every sequence of every length 1 .. ``max_seq_len`` over the vocabulary, BOS first, PAD after.

    Lengths vary so that what a program computes from the length (``reverse``'s ``length``, ``sort``'s
    positions) varies between inputs, as resample ablations and patching need. A length with more than
    ``MAX_INPUTS // max_seq_len`` sequences contributes a seeded sample of that many.
    """
    cap = MAX_INPUTS // spec.max_seq_len
    rng = random.Random(seed)
    out = []
    for n in range(1, spec.max_seq_len + 1):
        seqs = [list(s) for s in itertools.product(spec.vocab, repeat=n)]
        if len(seqs) > cap:
            seqs = [seqs[i] for i in sorted(rng.sample(range(len(seqs)), cap))]
        out += [[BOS, *s] + [PAD] * (spec.max_seq_len - n) for s in seqs]
    return out


def tracr_outputs(build: TracrBuild, inputs: list[list[Any]]) -> list[list[Any]]:
    """tracr's own decoded outputs (``assembled.apply`` on each input without its PAD), one list per input;
    position 0 is BOS, and the list is as long as the unpadded input."""
    out = []
    for seq in inputs:
        seq = [v for v in seq if v != PAD]
        decoded = build.assembled.apply(seq).decoded
        out.append([decoded[0]] + [float(v) if not build.categorical else v for v in decoded[1:]])
    return out
