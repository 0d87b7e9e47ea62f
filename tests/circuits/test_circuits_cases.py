"""The shipped tracr cases: exact copies of tracr's models, valid ground-truth circuits, clear tokenizer errors."""
from __future__ import annotations

import importlib.util

import pytest
import torch

import causalscope as cs
from causalscope import InputError
from causalscope.circuits import Case, Circuit, case_names, load_case, upstream
from causalscope.zoo.compiled import CompiledTransformer

CASES = case_names()
HAVE_TRACR = all(importlib.util.find_spec(m) is not None for m in ("tracr", "jax", "haiku"))


def _heads_mlps(model: CompiledTransformer) -> dict[str, list[torch.Tensor]]:
    """Every graph node's weights (the parts only that node uses)."""
    out = {"embed": [model.W_E, model.W_pos], "logits": [model.W_U]}
    for l, b in enumerate(model.blocks):
        a = b.attn
        for h in range(model.cfg.n_heads):
            out[f"a{l}.h{h}"] = [a.W_Q[h], a.W_K[h], a.W_V[h], a.W_O[h], a.b_Q[h], a.b_K[h], a.b_V[h]]
        out[f"m{l}"] = [b.mlp.W_in, b.mlp.b_in, b.mlp.W_out, b.mlp.b_out]
    return out


def _support_edges(model: CompiledTransformer, nodes: list[str]) -> set[tuple[str, str]]:
    """Edges read off the weights: the rows a receiver reads meet the columns a sender writes."""
    nz_rows = lambda *ws: set().union(*[set((w != 0).any(-1).nonzero().flatten().tolist()) for w in ws])  # noqa: E731
    nz_cols = lambda *ws: set().union(*[set((w != 0).any(0).nonzero().flatten().tolist()) for w in ws])  # noqa: E731
    reads, writes = {"logits": nz_rows(model.W_U)}, {"embed": nz_cols(model.W_E, model.W_pos)}
    for l, b in enumerate(model.blocks):
        a = b.attn
        for h in range(model.cfg.n_heads):
            reads[f"a{l}.h{h}"] = nz_rows(a.W_Q[h], a.W_K[h], a.W_V[h])
            writes[f"a{l}.h{h}"] = nz_cols(a.W_O[h])
        reads[f"m{l}"], writes[f"m{l}"] = nz_rows(b.mlp.W_in), nz_cols(b.mlp.W_out)
    return {(s, r) for s in nodes for r in nodes
            if s in writes and r in reads and upstream(s, r) and writes[s] & reads[r]}


def test_the_issue_cases_ship():
    assert len(CASES) >= 5
    assert {"reverse", "hist", "sort", "frac-prevs", "pair-balance", "majority"} <= set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_converted_model_reproduces_tracr_on_every_shipped_input(name):
    case = load_case(name)
    assert isinstance(case, Case) and not case.model.training
    n_vocab, T = len(case.tokenizer.input_vocab), case.inputs.shape[1]
    assert case.inputs.shape == (sum(n_vocab ** n for n in range(1, T)), T)  # every sequence of every length
    assert case.label_positions == list(range(1, T))
    pad = case.model.cfg.pad_id
    assert pad == case.tokenizer.vocab.index("PAD")
    lengths = (case.inputs != pad).sum(1) - 1
    assert sorted(set(lengths.tolist())) == list(range(1, T))
    # a label exactly at the tokens: not BOS, not PAD
    assert torch.equal(case.has_label, (case.inputs != pad) & (torch.arange(T) > 0))
    has = case.has_label
    with torch.inference_mode():
        pred = case.predict(case.model(case.inputs))
    if case.categorical:
        assert case.labels.dtype == torch.long and bool((case.labels[~has] == -1).all())
        assert torch.equal(pred[has], case.labels[has])
    else:
        assert bool(case.labels[~has].isnan().all())
        assert float((pred[has] - case.labels[has]).abs().max()) <= 1e-4
    with torch.inference_mode():  # float64 gives the same answers
        pred64 = case.predict(case.model.double()(case.inputs))
    if case.categorical:
        assert torch.equal(pred64[has], case.labels[has])
    else:
        assert float((pred64[has] - case.labels[has].double()).abs().max()) <= 1e-4


@pytest.mark.parametrize("name", CASES)
def test_padding_does_not_change_a_rows_outputs(name):
    """The PAD mask: each input run alone, unpadded, gives the outputs it has in the padded batch."""
    case = load_case(name)
    pad = case.model.cfg.pad_id
    with torch.inference_mode():
        batch = case.model(case.inputs)
        for i in range(0, len(case.inputs), 17):
            n = int((case.inputs[i] != pad).sum())
            alone = case.model(case.inputs[i:i + 1, :n])
            assert torch.allclose(alone[0], batch[i, :n], atol=1e-6), i


@pytest.mark.parametrize("name", CASES)
def test_circuit_is_valid_and_matches_the_weights(name):
    case = load_case(name)
    c = case.circuit
    assert Circuit.from_json(c.to_json()) == c and c.meta["case"] == name
    assert c.nodes[0] == "embed" and c.nodes[-1] == "logits"
    weights = _heads_mlps(case.model)
    for node, ws in weights.items():
        nonzero = any(bool((w != 0).any()) for w in ws)
        assert nonzero == (node in c.nodes), node  # inside: nonzero weights; outside: all zero
    for node in c.nodes:
        if node not in ("embed", "logits"):
            assert c.meta["nodes"][node]["rasp"], node  # every compiled node names its RASP expression(s)
    assert _support_edges(case.model, c.nodes) == c.edge_set()
    senders = {s for s, _ in c.edges}
    receivers = {r for _, r in c.edges}
    assert set(c.nodes) - {"logits"} <= senders and set(c.nodes) - {"embed"} <= receivers


def test_no_circuit_node_is_constant_on_the_inputs():
    """With inputs of every length, what a program computes from the length varies too (reverse's length)."""
    for name in CASES:
        case = load_case(name)
        assert case.circuit.meta["constant_on_inputs"] == []
        assert case.effective_circuit() == case.circuit
        enc = {n: v.get("encoding") for n, v in case.circuit.meta["nodes"].items() if n not in ("embed", "logits")}
        assert set(enc.values()) <= {"categorical", "numerical"}, enc
    assert load_case("reverse").circuit.meta["nodes"]["a0.h0"]["encoding"] == "numerical"  # SelectorWidth's head
    assert load_case("reverse").circuit.meta["nodes"]["m2"]["encoding"] == "categorical"


def test_tokenizer_round_trip_and_clear_errors():
    case = load_case("reverse")
    tok = case.tokenizer
    ids = tok.encode(["a", "b", "c", "c"])
    assert torch.equal(ids, tok.encode(["BOS", "a", "b", "c", "c"])) and torch.equal(ids, tok.encode("abcc"))
    assert tok.decode(ids) == [["BOS", "a", "b", "c", "c"]]
    out = tok.decode_output(case.predict(case.model(ids)))
    assert out == [[None, "c", "c", "b", "a"]]
    assert tok.encode([["a", "b"], ["c", "a"]]).shape == (2, 3)
    padded = tok.encode([["a"], ["a", "b"]])
    assert padded.tolist() == [[0, 2, 1], [0, 2, 3]]  # PAD (id 1) fills the shorter row
    ids = tok.encode([["a", "b", "c"], ["c", "a"]])
    assert tok.decode_output(case.predict(case.model(ids), ids)) == [[None, "c", "b", "a"], [None, "a", "c", None]]
    frac = load_case("frac-prevs")
    ids = frac.tokenizer.encode([["x", "y"], ["x"]])
    assert frac.tokenizer.decode_output(frac.predict(frac.model(ids), ids)) == [[None, 1.0, 0.5], [None, 1.0, None]]
    with pytest.raises(InputError, match=r"'d' \(position 2\) is not an input.*\['a', 'b', 'c'\]"):
        tok.encode(["a", "d"])
    with pytest.raises(InputError, match="at most 4"):
        tok.encode("abcab")
    with pytest.raises(InputError, match="not an input"):
        tok.encode(["a", "PAD"])
    sort_tok = load_case("sort").tokenizer
    with pytest.raises(InputError, match="'1'.*not an input"):
        sort_tok.encode(["1", 2])  # 1 and "1" are different items
    assert load_case("frac-prevs").tokenizer.decode_output([float("nan"), 0.5]) == [None, 0.5]


def test_unknown_case_names_the_shipped_ones():
    with pytest.raises(InputError, match="reverse"):
        load_case("reversed")


def test_zoo_loads_each_case_with_the_compiled_adapter():
    for name in CASES:
        assert f"tracr-{name}" in cs.zoo.names() and cs.zoo.describe()[f"tracr-{name}"]
    m = cs.load("tracr-hist")
    assert m.adapter.kind == "compiled-transformer"
    case = load_case("hist")
    logits = m.run(m.adapter.encode(["a", "b", "a", "c", "a"])).output
    assert case.tokenizer.decode_output(case.predict(logits)) == [[None, 3, 1, 3, 1, 3]]


def test_load_case_gives_a_fresh_model_each_call():
    a, b = load_case("hist"), load_case("hist")
    assert a.model is not b.model
    with torch.no_grad():
        a.model.W_U.zero_()
    assert bool((b.model.W_U != 0).any())


@pytest.mark.tracr
@pytest.mark.skipif(not HAVE_TRACR, reason="tracr / JAX / dm-haiku not importable: install the optional extra "
                                           "(pip install causalscope[tracr]) to recompile the cases live")
@pytest.mark.parametrize("name", ["reverse", "pair-balance"])
def test_live_recompile_matches_the_shipped_case(name):
    from causalscope.circuits._tracr_compile import compile_case, tracr_outputs

    case = load_case(name)
    built = compile_case(name)
    shipped = case.model.state_dict()
    for key, value in built.model.state_dict().items():
        assert torch.equal(value, shipped[key]), key
    assert built.circuit.nodes == case.circuit.nodes and built.circuit.edges == case.circuit.edges
    rows = list(range(0, case.inputs.shape[0], max(1, case.inputs.shape[0] // 25)))
    seqs = case.tokenizer.decode(case.inputs[rows])
    live = tracr_outputs(built, seqs)
    assert [len(o) for o in live] == [int(case.has_label[r].sum()) + 1 for r in rows]  # tracr ran them unpadded
    for o, r in zip(live, rows):
        want = case.labels[r, case.has_label[r]]
        if case.categorical:
            assert o[1:] == case.tokenizer.decode_output(want)
        else:
            assert torch.allclose(torch.tensor(o[1:]), want, atol=1e-6)
