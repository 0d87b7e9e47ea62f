"""The latent-circuits seed: on AND / OR gates, patching in one direction misses half of the circuit."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_gate, train_gate
from causalscope.zoo.gates import TRUTH


def _seed_patching(model, baseline, corrupt):
    """The seed notebook's toy_activation_patching, written plainly: (f(base) - f(patched)) / (f(base) - f(corrupt))."""
    with torch.no_grad():
        gap = model(baseline) - model(corrupt)
        out = []
        for i in range(2):
            x = baseline.clone()
            x[:, i] = corrupt[:, i]
            out.append(float((model(baseline) - model(x)) / gap))
    return out


@pytest.fixture(scope="module")
def result() -> cs.LatentCircuits:
    return cs.latent_circuits()


def test_gates_compute_and_or():
    assert (build_gate("and")(TRUTH) > 0.5).flatten().tolist() == [False, False, False, True]
    assert (build_gate("or")(TRUTH) > 0.5).flatten().tolist() == [False, True, True, True]
    for kind in ("and", "or"):
        net = train_gate(kind, seed=3)
        want = [False, False, False, True] if kind == "and" else [False, True, True, True]
        assert (net(TRUTH) > 0.5).flatten().tolist() == want
        assert all(p.grad is None for p in net.parameters())


def test_seed_table_and_conclusion(result):
    clean, corrupt = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.0]])
    den = lambda g: result.sel(gate=g, method=cs.patching.LATENT_METHODS[0]).values  # noqa: E731
    noi = lambda g: result.sel(gate=g, method=cs.patching.LATENT_METHODS[1]).values  # noqa: E731
    # the seed's numbers: AND denoise 0.18 / noise 0.82; OR the reverse (0.91 / 0.09)
    assert torch.allclose(den("and"), torch.tensor([0.18, 0.18]), atol=0.01)
    assert torch.allclose(noi("and"), torch.tensor([0.82, 0.82]), atol=0.01)
    assert torch.allclose(den("or"), torch.tensor([0.91, 0.91]), atol=0.015)
    assert torch.allclose(noi("or"), torch.tensor([0.09, 0.09]), atol=0.015)
    for g in ("and", "or"):  # and exactly the notebook's own loop (its "Clean->Corrupt" is denoising)
        net = build_gate(g)
        assert den(g).tolist() == pytest.approx(_seed_patching(net, corrupt, clean), abs=1e-5)
        assert noi(g).tolist() == pytest.approx(_seed_patching(net, clean, corrupt), abs=1e-5)
        ig = result.sel(gate=g, method=cs.patching.LATENT_METHODS[2]).values
        rev = result.sel(gate=g, method=cs.patching.LATENT_METHODS[3]).values
        assert abs(float(ig[0] - ig[1])) < 0.02 * float(ig.abs().max())     # IG: about equal for both inputs
        torch.testing.assert_close(rev, -ig, rtol=0, atol=1e-5)              # direction only flips the sign
        with torch.no_grad():
            gap = float(net(clean) - net(corrupt))
        assert float(ig.sum()) == pytest.approx(gap, abs=1e-4)               # completeness
    text = result.conclusion()
    assert "Denoising alone would call both inputs unimportant" in text.split("\n")[0]
    assert "Noising alone would call both inputs unimportant" in text.split("\n")[1]


def test_table_plot_and_cli(result, capsys):
    assert "IG (input clean, baseline corrupted)" in result.table()
    assert len(result.plot().axes) == 2
    assert result.plot(backend="plotly").data
    from causalscope.app.cli import main

    assert main(["patch", "--model", "or-gate", "--clean", "1,1", "--corrupted", "0,0", "--sites", "model.0",
                 "--io", "input", "--per", "neuron", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["scores"][0][0] == pytest.approx(float(result.sel(gate="or", method=cs.patching.LATENT_METHODS[0])
                                                      .values[0]), abs=1e-6)
    assert main(["attribute", "--model", "and-gate", "--input", "1,1", "--baseline", "0,0", "--site", "model.0",
                 "--io", "input", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ig = result.sel(gate="and", method=cs.patching.LATENT_METHODS[2]).values
    assert out["attributions"][0] == pytest.approx(ig.tolist(), abs=1e-5)
