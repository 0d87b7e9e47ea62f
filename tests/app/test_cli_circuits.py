"""``causalscope circuits``: the JSON numbers are the library's numbers; clear errors for bad input."""
from __future__ import annotations

import json

import pytest
import torch

from causalscope import circuits
from causalscope.app.cli import main


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_list_json_matches_the_cases(capsys):
    rows = _json(capsys, ["circuits", "list", "--json"])
    assert [r["name"] for r in rows] == circuits.case_names()
    for r in rows:
        c = circuits.load_case(r["name"])
        assert r["n_inputs"] == c.inputs.shape[0] and r["n_layers"] == c.model.cfg.n_layers
        assert r["kind"] == ("categorical" if c.categorical else "numerical")
        assert (r["circuit_nodes"], r["circuit_edges"]) == (len(c.circuit.nodes), len(c.circuit.edges))
    assert main(["circuits", "list"]) == 0
    assert "reverse" in capsys.readouterr().out


def test_ablate_json_equals_node_effects(capsys, tmp_path):
    out = tmp_path / "effects.png"
    d = _json(capsys, ["circuits", "ablate", "--case", "reverse", "--scales", "0,1,2", "--pairs", "100",
                       "--json", "--plot", str(out)])
    lib = circuits.node_effects(circuits.load_case("reverse"), scales=[0, 1, 2], pairs=100, seed=0)
    assert d["nodes"] == lib.nodes and d["scales"] == [0.0, 1.0, 2.0] and d["status"] == lib.meta["status"]
    torch.testing.assert_close(torch.tensor(d["effects"], dtype=torch.float64), lib.values.double())
    assert out.stat().st_size > 0
    d = _json(capsys, ["circuits", "ablate", "--case", "hist", "--ablation", "zero", "--scales", "0", "--json"])
    zero = circuits.node_effects(circuits.load_case("hist"), ablation="zero", scales=[0])
    assert d["effects"] == zero.values.tolist()


@pytest.mark.parametrize("cli,lib", [("eap", "eap"), ("eap-ig", "eap_ig"), ("acdc", "acdc"), ("edge", "edge_patching"),
                                     ("node", "node_patching")])
def test_discover_json_equals_the_library(capsys, cli, lib):
    d = _json(capsys, ["circuits", "discover", "--case", "hist", "--method", cli, "--corrupted", "zero",
                       "--top", "3", "--json"])
    case = circuits.load_case("hist")
    r = circuits.discover(case, corrupted="zero", method=lib)
    assert d["method"] == lib and list(d["scores"]) == r.names
    torch.testing.assert_close(torch.tensor(list(d["scores"].values()), dtype=torch.float64), r.values.double())
    assert [t[r.level] for t in d["top"]] == list(r.top(3)[r.level])
    if lib == "acdc":
        assert d["kept"] == r.kept.tolist()
        assert [tuple(e) for e in d["circuit"]["edges"]] == r.circuit().edges
    if r.level == "edge":
        assert d["auroc"] == pytest.approx(circuits.roc(r, case.circuit).auroc)


def test_discover_threshold_picks_the_circuit(capsys):
    d = _json(capsys, ["circuits", "discover", "--case", "hist", "--method", "eap", "--threshold", "1e-3", "--json"])
    r = circuits.discover(circuits.load_case("hist"), method="eap")
    assert [tuple(e) for e in d["circuit"]["edges"]] == r.circuit(threshold=1e-3).edges
    d = _json(capsys, ["circuits", "discover", "--case", "hist", "--method", "acdc", "--threshold", "0.5", "--json"])
    assert d["kept"] == circuits.acdc(circuits.load_case("hist"), threshold=0.5).kept.tolist()


def test_score_json_equals_roc(capsys, tmp_path):
    out = tmp_path / "roc.png"
    d = _json(capsys, ["circuits", "score", "--case", "reverse", "--corrupted", "zero", "--json", "--plot", str(out)])
    case = circuits.load_case("reverse")
    assert list(d["methods"]) == ["eap", "eap-ig", "acdc", "edge"]
    for label, lib in [("eap", "eap"), ("eap-ig", "eap_ig"), ("acdc", "acdc"), ("edge", "edge_patching")]:
        c = circuits.roc(circuits.discover(case, corrupted="zero", method=lib), case.circuit)
        assert d["methods"][label]["auroc"] == pytest.approx(c.auroc)
        assert d["methods"][label]["tpr"] == pytest.approx(c.tpr.tolist())
    assert out.stat().st_size > 0
    # node scores on hist: every scored node is in the circuit, so no ROC; reported, not a crash
    d = _json(capsys, ["circuits", "score", "--case", "hist", "--methods", "eap,node", "--json"])
    assert d["methods"]["node"]["auroc"] is None and "positives and negatives" in d["methods"]["node"]["error"]
    assert main(["circuits", "score", "--case", "hist", "--methods", "eap"]) == 0
    assert "AUROC" in capsys.readouterr().out


def test_trained_flag_runs_on_the_siit_trained_model(capsys):
    d = _json(capsys, ["circuits", "score", "--case", "frac-prevs", "--trained", "--methods", "eap,edge", "--json"])
    case = circuits.load_case("frac-prevs", trained=True)
    for label, lib in [("eap", "eap"), ("edge", "edge_patching")]:
        c = circuits.roc(circuits.discover(case, method=lib), case.circuit)
        assert d["methods"][label]["auroc"] == pytest.approx(c.auroc)
    compiled = circuits.roc(circuits.discover(circuits.load_case("frac-prevs"), method="eap"), case.circuit)
    assert d["methods"]["eap"]["tpr"] != pytest.approx(compiled.tpr.tolist())  # another model's scores


@pytest.mark.parametrize("argv,msg", [
    (["circuits", "ablate", "--case", "nope"], "No tracr case 'nope'"),
    (["circuits", "discover", "--case", "nope", "--method", "eap"], "No tracr case 'nope'"),
    (["circuits", "score", "--case", "nope"], "No tracr case 'nope'"),
    (["circuits", "discover", "--case", "hist", "--method", "magic"], "Unknown method 'magic'"),
    (["circuits", "score", "--case", "hist", "--methods", "eap,magic"], "Unknown method 'magic'"),
    (["circuits", "ablate", "--case", "hist", "--scales", "0,x"], "--scales"),
    (["circuits", "ablate", "--case", "hist", "--pairs", "many"], "--pairs"),
])
def test_errors_name_the_problem(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    # what a terminal shows: one line (a progress bar drawn before the error, on a slow start, is cleared)
    shown = [line.split("\r")[-1] for line in err.split("\n")]
    assert shown[1:] == [""] and shown[0].startswith("causalscope: error:") and msg in shown[0], err


def test_bad_ablation_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["circuits", "ablate", "--case", "hist", "--ablation", "nope"])
    assert e.value.code == 2
