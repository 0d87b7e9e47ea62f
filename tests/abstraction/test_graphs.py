"""Causal-graph pictures (cs.forward_graph / cs.interchange_graph): values against the tutorial's printed
activations and a plain forward pass computed here, edges against the adder's weights, the SVG against an
XML parser, interchange outputs against a naive patch computed here, and the model left untouched."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import torch

import causalscope as cs
from causalscope.abstraction._graph_render import HIGHLIGHT, fmt
from causalscope.zoo import build_adder

SVG = "{http://www.w3.org/2000/svg}"
HIDDEN = ["h11", "h12", "h13", "h21", "h22", "h23"]


def plain_forward(x, patch_from=None, patch=()):
    """The adder by hand: layer outputs [inputs, h1, h2, y], with ``patch`` ((layer, j) pairs) taken from
    ``patch_from`` (a list of layer outputs of another input), layer 0 being the inputs."""
    net = build_adder()
    acts = [torch.tensor([float(v) for v in x])]
    with torch.no_grad():
        for k, lin in enumerate((None, net.l1, net.l2, net.l3)):
            if lin is not None:
                acts.append(acts[-1] @ lin.weight.T + lin.bias)
            for layer, j in patch:
                if layer == k:
                    acts[k][j] = patch_from[k][j]
    return acts


def as_dict(acts):
    names = [["A", "B", "C"], ["h11", "h12", "h13"], ["h21", "h22", "h23"], ["y"]]
    return {n: float(v) for ns, a in zip(names, acts) for n, v in zip(ns, a)}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def node_groups(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "cs-node" in g.get("class", "").split()]


# -- values -------------------------------------------------------------------------------------------------
def test_values_are_the_tutorials_and_a_plain_forward_pass():
    g = cs.forward_graph("adder", [1, 2, 3])
    tutorial = {"h11": 10.89, "h12": 8.10, "h13": 12.30, "h21": 6.01, "h22": 3.71, "h23": -0.27, "y": 6.0}
    for name, v in tutorial.items():
        assert g.values[name] == pytest.approx(v, abs=1e-2), name
    plain = as_dict(plain_forward([1, 2, 3]))
    assert g.node_names == list(plain)
    for name, v in plain.items():
        assert g.values[name] == pytest.approx(v, abs=1e-5), name
    assert g.outputs == {"forward": {"y": pytest.approx(6.0, abs=1e-5)}}
    # labels are the tutorial's rounding
    assert [fmt(g.values[n]) for n in HIDDEN + ["y"]] == ["10.89", "8.1", "12.3", "6.01", "3.71", "-0.27", "6.0"]


def test_tensor_inputs_give_the_same_graph():
    a = cs.forward_graph("adder", [1, 2, 4]).values
    assert cs.forward_graph("adder", torch.tensor([[1.0, 2.0, 4.0]])).values == a
    assert cs.forward_graph(build_adder(), torch.tensor([1.0, 2.0, 4.0])).values == a
    assert a["h23"] == pytest.approx(-0.271, abs=1e-6)  # h23 does not move with the input


def test_edges_are_the_nonzero_weights():
    net = build_adder()
    g = cs.forward_graph(net, [1, 2, 3])
    n_nonzero = sum(int((lin.weight != 0).sum()) for lin in (net.l1, net.l2, net.l3))
    assert len(g.edges) == n_nonzero == 10
    layer_of = {"A": 0, "B": 0, "C": 0, "h11": 1, "h12": 1, "h13": 1, "h21": 2, "h22": 2, "h23": 2, "y": 3}
    lins = (net.l1, net.l2, net.l3)
    for e in g.edges:
        k = layer_of[e.source]
        assert layer_of[e.target] == k + 1
        i, j = g.node_names.index(e.source), g.node_names.index(e.target)
        i -= [0, 3, 6][k]
        j -= [3, 6, 9][k]
        assert e.weight == lins[k].weight[j, i].item() != 0
    assert not [e for e in g.edges if e.source == "h23"]            # the dead neuron feeds nothing
    assert not [e for e in g.edges if "h23" in (e.source, e.target)]  # ... and reads nothing
    assert [e.target for e in g.edges if e.source == "h22"] == ["y"]


# -- pictures -----------------------------------------------------------------------------------------------
def test_svg_parses_with_one_circle_and_labels_per_node():
    g = cs.forward_graph("adder", [1, 2, 3])
    root = parse(g.svg())
    assert root.tag == f"{SVG}svg"
    assert len(list(root.iter(f"{SVG}circle"))) == len(g.nodes) == 10
    groups = node_groups(root)
    assert [grp.get("data-node") for grp in groups] == g.node_names
    for grp in groups:
        texts = [t.text for t in grp.iter(f"{SVG}text")]
        assert texts == [grp.get("data-node"), fmt(g.values[grp.get("data-node")])]
    assert len(list(root.iter(f"{SVG}line"))) == len(g.edges)
    assert g._repr_svg_() == g.svg()


def test_plotly_figure_has_the_same_nodes():
    g = cs.forward_graph("adder", [1, 2, 3])
    fig = g.plot()
    nodes = [t for t in fig.data if t.meta == "nodes"]
    assert sum(len(t.x) for t in nodes) == len(g.nodes)
    assert any("10.89" in s for s in nodes[0].text)
    gi = cs.interchange_graph("adder", [1, 2, 3], [4, 2, 3], ["h12"])
    fig = gi.plot()
    assert sum(len(t.x) for t in fig.data if t.meta == "nodes") == 2 * len(gi.nodes)
    assert len([t for t in fig.data if t.meta == "patch-link"]) == 1
    from causalscope.app.report import Report

    assert Report("graphs").figure(fig, caption="interchange").n_figures == 1


def test_text_is_escaped():
    g = cs.forward_graph("adder", [1, 2, 3], input_names=["a<b", "B&", 'C"'])
    root = parse(g.svg())
    names = [grp.get("data-node") for grp in node_groups(root)]
    assert names[:3] == ["a<b", "B&", 'C"']
    assert "a&lt;b" in g.svg()


def test_save_svg_and_html(tmp_path):
    g = cs.interchange_graph("adder", [1, 2, 3], [4, 2, 3], ["h12"])
    p = g.save(tmp_path / "sub" / "g.svg")
    parse(p.read_text(encoding="utf-8"))
    h = g.save(tmp_path / "g.html").read_text(encoding="utf-8")
    assert h.startswith("<!DOCTYPE html>") and "<svg" in h and "<script" not in h


# -- interventions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base,source,patch,expected", [
    ([1, 2, 3], [4, 2, 3], ["h12"], 9.0),        # the tutorial: h12 carries A
    ([1, 2, 3], [1, 5, 3], ["h12"], 6.0),        # ... but not B
    ([1, 2, 3], [4, 2, 3], ["A"], 9.0),          # total effect of A
    ([1, 2, 3], [1, 4, 5], ["h13"], 10.0),       # h13 carries B + C
    ([1, 2, 3], [4, 5, 6], ["h22"], 15.0),       # h22 carries A + B + C
    ([1, 2, 3], [4, 5, 6], ["h23", "h21"], 6.0),  # neither matters
    ([1, 2, 3], [4, 5, 6], ["h12", "h13"], 15.0),
])
def test_interchange_outputs_match_a_naive_patch(base, source, patch, expected):
    g = cs.interchange_graph("adder", base, source, patch)
    where = {"A": (0, 0), "B": (0, 1), "C": (0, 2), **{f"h{l}{j}": (l, j - 1) for l in (1, 2) for j in (1, 2, 3)}}
    naive = as_dict(plain_forward(base, plain_forward(source), [where[p] for p in patch]))
    assert naive["y"] == pytest.approx(expected, abs=1e-4)
    for name, v in naive.items():
        assert g.panel("base").values[name] == pytest.approx(v, abs=1e-4), name
    assert g.panel("source").values == pytest.approx(as_dict(plain_forward(source)), abs=1e-4)
    assert g.outputs["intervened"]["y"] == pytest.approx(expected, abs=1e-4)
    assert g.outputs["base"]["y"] == pytest.approx(sum(base), abs=1e-4)
    assert g.outputs["source"]["y"] == pytest.approx(sum(source), abs=1e-4)


def test_interchange_marks_patched_nodes():
    g = cs.interchange_graph("adder", [1, 2, 3], [4, 2, 3], ["h12"])
    root = parse(g.svg())
    assert len(list(root.iter(f"{SVG}circle"))) == 2 * len(g.nodes)
    patched = [grp for grp in node_groups(root) if "cs-patched" in grp.get("class", "").split()]
    assert [grp.get("data-node") for grp in patched] == ["h12"]
    assert patched[0].find(f"{SVG}circle").get("stroke") == HIGHLIGHT
    assert [grp.get("data-node") for grp in node_groups(root) if "cs-patch-source" in grp.get("class", "")] == ["h12"]
    links = [p for p in root.iter(f"{SVG}path") if p.get("class") == "cs-patch-link"]
    assert len(links) == 1 and links[0].get("stroke-dasharray")
    assert [grp.find(f"{SVG}text").text for grp in node_groups(root)
            if grp.find(f"{SVG}circle").get("stroke") == HIGHLIGHT] == ["h12", "h12"]
    assert g.links == [(1, 0, "h12")] and g.marks == {"h12": "patched"}


def test_forward_interventions_are_set_and_marked():
    g = cs.forward_graph("adder", [1, 2, 3], interventions={"h23": -100})
    assert g.values["h23"] == -100 and g.outputs["intervened"]["y"] == pytest.approx(6.0, abs=1e-4)
    g = cs.forward_graph("adder", [1, 2, 3], interventions={"h12": 12.1, "A": 7})
    acts = plain_forward([1, 2, 3])
    acts[0][0] = 7.0
    net = build_adder()
    with torch.no_grad():
        h1 = acts[0] @ net.l1.weight.T + net.l1.bias
        h1[1] = 12.1
        y = net.l3(net.l2(h1)).item()
    assert g.outputs["intervened"]["y"] == pytest.approx(y, abs=1e-4)
    assert g.outputs["forward"]["y"] == pytest.approx(6.0, abs=1e-4)
    assert g.values["A"] == 7 and g.values["h11"] == pytest.approx(16.89, abs=1e-4)
    root = parse(g.svg())
    assert sorted(grp.get("data-node") for grp in node_groups(root) if "cs-set" in grp.get("class", "")) == ["A", "h12"]


def test_wider_networks_use_underscored_names():
    g = cs.forward_graph("mlp", list(range(16)))
    assert g.node_names[:2] == ["A", "B"] and "h1_32" in g.node_names and g.node_names[-4:] == ["y1", "y2", "y3", "y4"]
    full = cs.forward_graph("mlp", torch.linspace(-1, 1, 16))
    # a graph that starts inside the model still takes the model's input; its input units are net.2's input
    g = cs.forward_graph("mlp", torch.linspace(-1, 1, 16), layers=["net.2", "net.4"])
    assert g.node_names[:2] == ["x0", "x1"] and len(g.nodes) == 32 + 32 + 4 and g.layer_names[0] == "net.2 in"
    relu = [max(full.values[f"h1_{j}"], 0.0) for j in range(1, 33)]
    assert [g.values[f"x{i}"] for i in range(32)] == pytest.approx(relu, abs=1e-6)
    assert [g.values[f"y{j}"] for j in range(1, 5)] == pytest.approx([full.values[f"y{j}"] for j in range(1, 5)])
    with pytest.raises(cs.InputError, match="model failed on an input of shape"):
        cs.forward_graph("mlp", [1.0, 2.0], layers=["net.2", "net.4"])


# -- the model is left alone --------------------------------------------------------------------------------
def test_model_unchanged():
    net = build_adder()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cs.forward_graph(net, [1, 2, 3], interventions={"h12": 3.0, "B": 1})
    cs.interchange_graph(net, [1, 2, 3], [4, 5, 6], ["h12", "A", "y"])
    with pytest.raises(cs.InputError):
        cs.interchange_graph(net, [1, 2, 3], [4, 5, 6], ["h12", "nope"])
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for mod in net.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks
        assert not mod._forward_hooks_with_kwargs and not mod._forward_pre_hooks_with_kwargs
    assert not net.training


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,match", [
    (lambda: cs.forward_graph("adder", [1, 2]), r"inputs has 2 values but the network takes 3 \(A, B, C\)"),
    (lambda: cs.forward_graph("adder", torch.zeros(2, 3)), r"one input"),
    (lambda: cs.forward_graph("adder", "123"), r"list of 3 numbers"),
    (lambda: cs.forward_graph("adder", [1, 2, float("nan")]), r"NaN"),
    (lambda: cs.forward_graph("adder", [1, 2, 3], interventions={"h99": 1}), r"unknown node 'h99'.*Nodes: A, B"),
    (lambda: cs.forward_graph("adder", [1, 2, 3], interventions={"h12": "x"}), r"finite number"),
    (lambda: cs.forward_graph("adder", [1, 2, 3], layers=["l3", "l1"]), r"do not form a chain"),
    (lambda: cs.forward_graph("adder", [1, 2, 3], layers=["l9"]), r"no module"),
    (lambda: cs.forward_graph("adder", [1, 2, 3], input_names=["A", "B"]), r"input_names has 2 names"),
    (lambda: cs.forward_graph("adder", [1, 2, 3], input_names=["A", "B", "y"]), r"unique"),
    (lambda: cs.interchange_graph("adder", [1, 2, 3], [4, 2], ["h12"]), r"source has 2 values"),
    (lambda: cs.interchange_graph("adder", [1, 2, 3], [4, 2, 3], ["h21", "H12"]), r"unknown node 'H12'.*'h12'"),
    (lambda: cs.interchange_graph("adder", [1, 2, 3], [4, 2, 3], []), r"non-empty list"),
    (lambda: cs.forward_graph("adder", [1, 2, 3]).plot(backend="matplotlib"), r"plotly"),
    (lambda: cs.forward_graph("adder", [1, 2, 3]).save("graph.png"), r"\.svg or \.html"),
])
def test_bad_input_raises_input_error(call, match):
    with pytest.raises(cs.InputError, match=match):
        call()
