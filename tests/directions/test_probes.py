"""Probes, control tasks and the steering check (causalscope.directions), and the `directions` / `probe` CLI.

References written here: a plain scikit-learn pipeline on activations computed by calling the modules
directly (same split), the control task's definition (one label per input type), and the steering sweep as a
loop over strengths with the edit done by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

import causalscope as cs
from causalscope.zoo import build_tiny_lm

K, D, N = 3, 32, 300


def planted(n: int = N, d: int = D, seed: int = 0, scale: float = 3.0):
    """Inputs x = noise + scale * U[y]: a linear, class-dependent feature along orthonormal U (K, d)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(d, K, generator=g)).Q.T.contiguous()        # (K, d), orthonormal rows
    y = torch.arange(n) % K
    X = torch.randn(n, d, generator=g) + scale * U[y]
    return X, y, U


def hidden_net(d: int = D, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 48), nn.ReLU(), nn.Linear(48, K)).eval()


def readout_net(U: torch.Tensor) -> nn.Sequential:
    """Identity layer (site '0' = the input) then logits = U h: a model that must follow the planted feature."""
    d = U.shape[1]
    net = nn.Sequential(nn.Linear(d, d), nn.Linear(d, K))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(d))
        net[0].bias.zero_()
        net[1].weight.copy_(U)
        net[1].bias.zero_()
    return net.eval()


def reference_probe(H: np.ndarray, y: np.ndarray, seed: int = 0, test_size: float = 0.25):
    train, test = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed, stratify=y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=seed))
    clf.fit(H[train], y[train])
    return clf, train, test, clf.score(H[test], y[test])


# ------------------------------------------------------------------------------------------ probes
def test_planted_feature_probe_high_control_at_chance():
    X, y, _ = planted(scale=5.0)
    r = cs.probe(hidden_net(), (X, y), ["0", "1"])
    assert isinstance(r, cs.ProbeResult) and r.dims == ("site", "metric") and r.coords["site"] == ["0", "1"]
    acc, ctl = r.accuracy.values, r.control_accuracy.values
    assert (acc >= 0.97).all(), acc                      # the feature is linear in the label: ~100%
    assert (abs(ctl - 1 / K) < 0.15).all(), ctl          # random labels per (distinct) input: chance
    torch.testing.assert_close(r.selectivity.values, acc - ctl, rtol=0, atol=0)
    assert (r.sel(metric="majority").values - 1 / K).abs().max() < 0.05
    assert r.meta["n_types"] == {"0": N, "1": N} and r.meta["n_train"] + r.meta["n_test"] == N


def test_probe_equals_plain_sklearn_on_the_same_activations_and_split():
    X, y, _ = planted()
    net = hidden_net()
    r = cs.probe(net, (X, y), ["0", "1"], seed=0)
    with torch.no_grad():
        acts = {"0": net[0](X), "1": net[1](net[0](X))}
    for site, H in acts.items():
        clf, train, test, acc = reference_probe(H.double().numpy(), y.numpy())
        assert np.array_equal(r.train_index, train) and np.array_equal(r.test_index, test)
        assert float(r.sel(site=site, metric="accuracy").values) == acc
        assert float(r.sel(site=site, metric="train_accuracy").values) == clf.score(H.double().numpy()[train],
                                                                                       y.numpy()[train])
        # the probe's directions: each class's weight mapped to activation space (w / sigma), unit norm
        W = clf[-1].coef_ / clf[0].scale_[None]
        W = W / np.linalg.norm(W, axis=1, keepdims=True)
        torch.testing.assert_close(r.directions(site).values, torch.from_numpy(W).float(), rtol=1e-5, atol=1e-6)
        # the control accuracy is the same pipeline on the control labels, same split
        yc = r.control_labels[site]
        ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=0))
        Hd = H.double().numpy()
        ref.fit(Hd[train], yc[train])
        assert float(r.sel(site=site, metric="control_accuracy").values) == ref.score(Hd[test], yc[test])


def test_control_task_definition_and_repeated_types_expose_memorisation():
    """Hewitt & Liang: each input *type* gets one label drawn from the label distribution. With repeated types
    (here 24 prototypes x 10 exact copies) a probe that memorises types scores high on the control too."""
    g = torch.Generator().manual_seed(1)
    protos = torch.randn(24, 40, generator=g)
    proto_y = torch.arange(24) % K
    X, y = protos.repeat(10, 1), proto_y.repeat(10)
    r = cs.probe(nn.Sequential(nn.Identity()), (X, y), ["0"])
    yc = r.control_labels["0"]
    for p in range(24):                                   # one control label per type
        assert len(set(yc[np.arange(p, 240, 24)].tolist())) == 1
    assert r.meta["n_types"] == {"0": 24}
    assert float(r.sel(metric="control_accuracy").values) > 0.9      # memorised: every test type was in train
    assert float(r.selectivity.values) < 0.1

    # explicit types: one label per given type; same seed, same labels
    types = [i % 7 for i in range(240)]
    r2 = cs.probe(nn.Sequential(nn.Identity()), (X, y), ["0"], control=types)
    yc2 = r2.control_labels["0"]
    assert all(len(set(yc2[np.arange(t, 240, 7)].tolist())) == 1 for t in range(7))
    r3 = cs.probe(nn.Sequential(nn.Identity()), (X, y), ["0"], control=types)
    assert np.array_equal(r3.control_labels["0"], yc2) and torch.equal(r3.values, r2.values)
    none = cs.probe(nn.Sequential(nn.Identity()), (X, y), ["0"], control=None)
    assert float(none.accuracy.values) == float(r.accuracy.values) and none.control_accuracy.values.isnan().all()


def test_probe_result_array_plots_and_saves(tmp_path):
    X, y, _ = planted(n=120)
    r = cs.probe(hidden_net(), X, ["0", "1"], labels=[f"c{int(v)}" for v in y])     # labels= and string classes
    assert r.classes == ["c0", "c1", "c2"] and r.meta["classes"] == ["c0", "c1", "c2"]
    assert r.direction("1", "c2").shape == (48,)
    assert "control" in r.summary() and "select." in r.summary()
    fig = r.plot()
    assert len(fig.axes) == 2
    assert len(r.plot(backend="plotly").data) == 4
    back = cs.load_result(r.save(tmp_path / "probe"))
    assert torch.equal(back.values, r.values) and back.coords == r.coords


# ---------------------------------------------------------------------------------- steering check
def test_steering_along_probe_direction_moves_the_output_random_does_not():
    X, y, U = planted(d=64)
    net = readout_net(U)
    r = cs.probe(net, (X, y), ["0"])
    strengths = [0.0, 1.0, 2.0, 4.0, 8.0]
    chk = r.steer_check(net, (X, y), "0", source=0, target=2, strengths=strengths, n_random=5, seed=3)
    assert chk.dims == ("direction", "strength", "stat")
    assert chk.coords["direction"] == ["probe", "random0", "random1", "random2", "random3", "random4"]
    prob = chk.probe.sel(stat="prob").values
    assert (prob.diff() > 0).all(), prob                         # monotone in the strength
    assert float(chk.probe.sel(stat="fraction").values[-1]) == 1.0 and float(prob[-1]) > 0.95
    rnd = chk.random.sel(stat="prob").values
    assert float(rnd[-1] - rnd[0]) < 0.1 and float(chk.random.sel(stat="fraction").values.max()) < 0.1

    # reference: the same sweep as a loop, the edit done by hand (x0 + s * u through the readout)
    X0 = X[y == 0]
    u = r.direction("0", 2)
    rand = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    rand = rand / rand.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        for j, dvec in enumerate([u, *rand]):
            for i, s in enumerate(strengths):
                p = net[1](net[0](X0) + s * dvec).softmax(-1)
                torch.testing.assert_close(chk.values[j, i], torch.stack([
                    (p.argmax(-1) == 2).float().mean(), p[:, 2].mean(), p[:, 0].mean()]), rtol=1e-5, atol=1e-6)
    assert chk.meta["n_inputs"] == int((y == 0).sum())
    assert len(chk.plot().axes) == 2 and len(chk.plot(backend="plotly").data) == 4
    # the function form fits its own probe, with probe(..., seed=seed): the same numbers
    again = cs.probe_steering(net, (X, y), "0", 0, 2, strengths, n_random=5, seed=3)
    ref = cs.probe(net, (X, y), ["0"], seed=3).steer_check(net, (X, y), "0", 0, 2, strengths, n_random=5, seed=3)
    assert torch.equal(again.values, ref.values)


def test_model_unchanged_and_no_hooks():
    X, y, U = planted(n=90)
    net = readout_net(U)
    net.train()
    net[1].eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [m.training for m in net.modules()]
    r = cs.probe(net, (X, y), ["0"])
    r.steer_check(net, (X, y), "0", 0, 1, [0.0, 4.0])
    assert [m.training for m in net.modules()] == flags
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


# -------------------------------------------------------------------------------- any model: GPT-2
WORDS_END = ["cat", "dog", "bird", "fish"]


@pytest.fixture(scope="module")
def gpt2_lm():
    model, tok = build_tiny_lm("gpt2")
    return cs.load(model, tok, name="tiny-gpt2"), tok


def lm_prompts():
    subj = ["king", "queen", "man", "woman", "boy", "girl"]
    prompts, labels = [], []
    for i, s in enumerate(subj):
        for j, w in enumerate(WORDS_END):
            prompts.append(f"the {s} saw the {w}" if (i + j) % 3 else f"the old {s} saw a big {w}")  # 2 lengths
            labels.append(w)
    return prompts * 2, labels * 2


def test_gpt2_token_class_probe_and_steering(gpt2_lm):
    m, tok = gpt2_lm
    prompts, labels = lm_prompts()
    site = cs.Site("layers.1", positions=-1)
    r = cs.probe(m, prompts, [site, cs.Site("layers.3", positions=-1)], labels=labels)
    assert r.coords["site"] == ["layers.1[pos=-1]", "layers.3[pos=-1]"]
    # reference: activations of each prompt on its own, plain sklearn pipeline
    H = torch.cat([m.run(p, cache=[site]).cache[site.name][:, 0] for p in prompts]).double().numpy()
    yi = np.unique(labels, return_inverse=True)[1]
    _, _, _, acc = reference_probe(H, yi)
    assert float(r.sel(site=site.name, metric="accuracy").values) == acc == 1.0
    # control types are the token at the site's position: 4 word types, one random label each
    assert r.meta["n_types"][site.name] == 4
    yc = r.control_labels[site.name]
    for w in WORDS_END:
        assert len({int(c) for c, lab in zip(yc, labels) if lab == w}) == 1
    # lexical identity is decodable, so the control task is too: low selectivity (Hewitt & Liang's warning)
    assert float(r.sel(site=site.name, metric="selectivity").values) < 0.5

    assert r.meta["control"][site.name] == "random label per token type at the site's position"

    # every prompt ends in "on the": one word type, so the default control is per input (a token control would be
    # one constant label); with control="token" it is, and the result says so
    subj = ["king", "queen", "man", "woman", "cat", "dog", "bird", "fish"]
    same_end = [f"the {a} {w} sat on the" for w in subj for a in ["big", "small", "old", "red", "new"]]
    kind = ["person" if i < 20 else "animal" for i in range(40)]
    r1 = cs.probe(m, same_end, [site], labels=kind)
    assert r1.meta["control"][site.name].startswith("random label per input") and r1.meta["n_types"][site.name] == 40
    assert r1.meta["control_degenerate"] == []
    r2 = cs.probe(m, same_end, [site], labels=kind, control="token")
    assert r2.meta["n_types"][site.name] == 1 and r2.meta["control_degenerate"] == [site.name]
    assert float(r2.control_accuracy.values) == 1.0 and "(!)" in r2.summary()     # trivially: one label

    ids = [tok.convert_tokens_to_ids(w) for w in sorted(WORDS_END)]       # classes are sorted: bird cat dog fish
    chk = r.steer_check(m, (prompts, labels), site, "cat", "dog", [0.0, 1.0, 4.0], readout=ids, n_random=2)
    src = [p for p, lab in zip(prompts, labels) if lab == "cat"]
    p0 = torch.cat([m.run(p).output[:, -1].softmax(-1) for p in src])
    torch.testing.assert_close(chk.probe.sel(strength=0.0, stat="prob").values, p0[:, ids[2]].mean())
    torch.testing.assert_close(chk.probe.sel(strength=0.0, stat="source_prob").values, p0[:, ids[1]].mean())
    assert chk.shape == (3, 3, 3) and chk.meta["n_inputs"] == len(src)
    with pytest.raises(cs.InputError, match="readout"):
        r.steer_check(m, (prompts, labels), site, "cat", "dog", [1.0])


# ---------------------------------------------------------------------------------------- errors
def test_bad_input_errors(gpt2_lm):
    X, y, U = planted(n=60)
    net = readout_net(U)
    cases = [
        (lambda: cs.probe(net, X, ["0"]), "needs a label per input"),
        (lambda: cs.probe(net, X, ["0"], labels=y[:10]), "one label per input"),
        (lambda: cs.probe(net, X, ["0"], labels=torch.zeros(60)), "single class"),
        (lambda: cs.probe(net, X, ["0"], labels=torch.rand(60)), "non-integer floats"),
        (lambda: cs.probe(net, (X, y), ["0"], test_size=1.5), "test_size"),
        (lambda: cs.probe(net, (X, y), ["0"], C=0), "C"),
        (lambda: cs.probe(net, (X, y), []), "sites is empty"),
        (lambda: cs.probe(net, (X, y), ["0", "0"]), "repeat"),
        (lambda: cs.probe(net, (X, y), ["0"], control="shuffle"), "control must be"),
        (lambda: cs.probe(net, (X, y), ["0"], control="token"), "control='token' needs a token model"),
        (lambda: cs.probe(net, (X, y), ["0"], control=[1, 2]), "one per input"),
        (lambda: cs.probe(net, (X, torch.tensor([0] * 59 + [1])), ["0"]), "fewer than 2 examples"),
    ]
    for fn, msg in cases:
        with pytest.raises(cs.InputError, match=msg):
            fn()
    with pytest.raises(cs.SiteError, match="Unknown site 'fc9'"):
        cs.probe(net, (X, y), ["fc9"])
    r = cs.probe(net, (X, y), ["0"])
    for kw, msg in [(dict(source=0, target=7), "not one of the probe's classes"),
                    (dict(source=1, target=1), "same class"),
                    (dict(source=0, target=1, strengths=[]), "strengths"),
                    (dict(source=0, target=1, n_random=0), "n_random"),
                    (dict(source=0, target=1, site="1"), "no site '1'")]:
        kw = {"site": "0", "strengths": [1.0], **kw}
        with pytest.raises(cs.InputError, match=msg):
            r.steer_check(net, (X, y), **kw)
    m, _ = gpt2_lm
    prompts, labels = lm_prompts()
    with pytest.raises(cs.InputError, match="positions=-1"):
        cs.probe(m, prompts, ["layers.1"], labels=labels)
    with pytest.raises(cs.InputError, match="selects 2 positions"):
        cs.probe(m, prompts, [cs.Site("layers.1", positions=[-2, -1])], labels=labels)


# ------------------------------------------------------------------------------------------- CLI
def test_cli_probe_json(capsys):
    from causalscope.app.cli import main

    assert main(["probe", "--model", "digits-mlp", "--sites", "act1", "--steer", "3", "8",
                 "--strengths", "0", "16", "--n-random", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["sites"]) == {"act1"} and out["settings"]["n_test"] == 90
    for v in out["sites"].values():
        assert v["accuracy"] > 0.9 and v["control_accuracy"] < 0.3
        assert v["selectivity"] == pytest.approx(v["accuracy"] - v["control_accuracy"], abs=1e-12)
    st = out["steering"]["act1"]
    assert st["strength"] == [0.0, 16.0] and st["probe"]["fraction"][0] == 0.0 and st["probe"]["fraction"][1] > 0.5
    assert main(["probe", "--sites", "act9"]) == 2
    assert "Unknown site 'act9'" in capsys.readouterr().err


def test_cli_directions_json(capsys):
    from causalscope.app.cli import main

    assert main(["directions", "--model", "digits-mlp", "--site", "act2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    sim = np.array(out["similarity"])
    assert sim.shape == (10, 10) and np.allclose(np.diag(sim), 1.0, atol=1e-5) and np.allclose(sim, sim.T, atol=1e-6)
    assert len(out["most_similar"]) == 5
