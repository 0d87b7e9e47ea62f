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
    n_vocab = len(case.tokenizer.input_vocab)
    assert case.inputs.shape == (n_vocab ** (case.inputs.shape[1] - 1), case.inputs.shape[1])  # all sequences
    assert case.label_positions == list(range(1, case.inputs.shape[1]))
    with torch.inference_mode():
        pred = case.predict(case.model(case.inputs))
    pos = case.label_positions
    if case.categorical:
        assert case.labels.dtype == torch.long and bool((case.labels[:, 0] == -1).all())
        assert torch.equal(pred[:, pos], case.labels[:, pos])
    else:
        assert bool(case.labels[:, 0].isnan().all())
        assert float((pred[:, pos] - case.labels[:, pos]).abs().max()) <= 1e-4
    with torch.inference_mode():  # float64 gives the same answers
        pred64 = case.predict(case.model.double()(case.inputs))
    if case.categorical:
        assert torch.equal(pred64[:, pos], case.labels[:, pos])
    else:
        assert float((pred64[:, pos] - case.labels[:, pos].double()).abs().max()) <= 1e-4


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


def test_reverse_length_subcircuit_is_constant_on_full_length_inputs():
    case = load_case("reverse")
    assert case.circuit.meta["constant_on_inputs"] == ["a0.h0", "m0", "m1", "m2"]
    eff = case.effective_circuit()
    assert eff.nodes == ["embed", "a3.h0", "logits"] and eff.edges == [("embed", "a3.h0"), ("a3.h0", "logits")]
    for name in CASES:
        if name != "reverse":
            assert load_case(name).circuit.meta["constant_on_inputs"] == []


def test_tokenizer_round_trip_and_clear_errors():
    case = load_case("reverse")
    tok = case.tokenizer
    ids = tok.encode(["a", "b", "c", "c"])
    assert torch.equal(ids, tok.encode(["BOS", "a", "b", "c", "c"])) and torch.equal(ids, tok.encode("abcc"))
    assert tok.decode(ids) == [["BOS", "a", "b", "c", "c"]]
    out = tok.decode_output(case.predict(case.model(ids)))
    assert out == [[None, "c", "c", "b", "a"]]
    assert tok.encode([["a", "b"], ["c", "a"]]).shape == (2, 3)
    with pytest.raises(InputError, match=r"'d' \(position 2\) is not an input.*\['a', 'b', 'c'\]"):
        tok.encode(["a", "d"])
    with pytest.raises(InputError, match="at most 4"):
        tok.encode("abcab")
    with pytest.raises(InputError, match="different lengths"):
        tok.encode([["a"], ["a", "b"]])
    with pytest.raises(InputError, match="not an input"):
        tok.encode(["a", "PAD"])
    sort_tok = load_case("sort").tokenizer
    with pytest.raises(InputError, match="'1'.*not an input"):
        sort_tok.encode(["1", 2])  # 1 and "1" are different items
    assert load_case("frac-prevs").tokenizer.decode_output([float("nan"), 0.5]) [1] == 0.5


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
    pos = case.label_positions
    if case.categorical:
        assert [o[1:] for o in live] == [case.tokenizer.decode_output(case.labels[r, pos]) for r in rows]
    else:
        assert torch.allclose(torch.tensor([o[1:] for o in live]), case.labels[rows][:, pos], atol=1e-6)
