"""class_directions: per-class mean minus the global mean, checked against numpy computations written here;
similarities, plots, save / load, errors, the model left unchanged; and a GPT-2 config with token-class labels."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_tiny_lm
from causalscope.zoo.digits_mlp import build_digits_mlp


def _data(n: int = 150, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 8x8 'images' in [0, 1] and labels 0..4 with UNEQUAL class sizes (so the two centres differ)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 64, generator=g)
    y = torch.tensor([0] * 50 + [1] * 40 + [2] * 30 + [3] * 20 + [4] * (n - 140))
    return X, y[torch.randperm(n, generator=g)]


def _np_act2(net: torch.nn.Module, X: torch.Tensor) -> np.ndarray:
    """The seed's get_layer_activations(x, 'fc2') in numpy: relu(W2 relu(W1 x + b1) + b2), float64."""
    p = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    h = np.maximum(X.double().numpy() @ p["fc1.weight"].T + p["fc1.bias"], 0)
    return np.maximum(h @ p["fc2.weight"].T + p["fc2.bias"], 0)


def _snapshot(net: torch.nn.Module) -> tuple[dict, list, list]:
    hooks = [(len(mod._forward_hooks), len(mod._forward_pre_hooks)) for mod in net.modules()]
    return ({k: v.clone() for k, v in net.state_dict().items()}, hooks, [mod.training for mod in net.modules()])


def _assert_unchanged(net: torch.nn.Module, snap: tuple[dict, list, list]) -> None:
    state, hooks, training = snap
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert [(len(mod._forward_hooks), len(mod._forward_pre_hooks)) for mod in net.modules()] == hooks
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in net.modules())
    assert [mod.training for mod in net.modules()] == training


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return build_digits_mlp(trained=False)


def test_directions_equal_numpy(net):
    X, y = _data()
    r = cs.class_directions(net, (X, y), "act2")
    acts = _np_act2(net, X)
    yn = y.numpy()
    means = np.stack([acts[yn == c].mean(0) for c in range(5)])
    ref = means - means.mean(0)                      # the seed: the mean of the class means, not of all samples
    assert r.classes == [0, 1, 2, 3, 4] and r.dims == ("class", "neuron") and r.shape == (5, 128)
    np.testing.assert_allclose(r.numpy(), ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(r.class_means.numpy(), means, atol=1e-5, rtol=0)
    np.testing.assert_allclose(r.global_mean.numpy(), means.mean(0), atol=1e-5, rtol=0)
    np.testing.assert_allclose(r.direction(3).numpy(), ref[3], atol=1e-5, rtol=0)
    np.testing.assert_allclose(r.diff_of_means(1, 4).numpy(), means[1] - means[4], atol=1e-5, rtol=0)
    assert r.counts == {c: int((yn == c).sum()) for c in range(5)}
    np.testing.assert_allclose(r.direction(2, normalize=True).norm().item(), 1.0, atol=1e-6)
    # the other centre: the mean over all samples (differs here, the classes have unequal sizes)
    s = cs.class_directions(net, (X, y), "act2", center="samples")
    np.testing.assert_allclose(s.numpy(), means - acts.mean(0), atol=1e-5, rtol=0)
    assert not np.allclose(s.numpy(), r.numpy(), atol=1e-4)
    # the seed's top neurons: largest |value|
    assert r.top_neurons(0, 5) == list(np.argsort(-np.abs(ref[0]))[:5])


def test_similarity_and_most_similar_equal_numpy(net):
    X, y = _data()
    r = cs.class_directions(net, (X, y), "act2")
    d = r.numpy().astype(np.float64)
    unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    sim = r.similarity()
    assert isinstance(sim, cs.SimilarityMatrix) and sim.dims == ("class_a", "class_b")
    np.testing.assert_allclose(sim.numpy(), unit @ unit.T, atol=1e-5, rtol=0)
    pairs = sorted(((i, j, (unit @ unit.T)[i, j]) for i in range(5) for j in range(i + 1, 5)),
                   key=lambda p: abs(p[2]), reverse=True)
    got = r.most_similar(4)
    assert [(a, b) for a, b, _ in got] == [(i, j) for i, j, _ in pairs[:4]]
    np.testing.assert_allclose([c for *_, c in got], [c for *_, c in pairs[:4]], atol=1e-5)


def test_any_site_and_selection(net):
    X, y = _data()
    pre = cs.class_directions(net, (X, y), "fc2")                     # pre-ReLU: a different space
    assert pre.shape == (5, 128) and not torch.allclose(pre.values, cs.class_directions(net, (X, y), "act2").values)
    sub = cs.class_directions(net, (X, y), cs.Site("act2", neurons=[3, 7, 11]))
    full = cs.class_directions(net, (X, y), "act2")
    assert sub.shape == (5, 3)
    torch.testing.assert_close(sub.values, full.values[:, [3, 7, 11]], atol=1e-6, rtol=0)


def test_data_forms_and_labels(net):
    X, y = _data()
    ref = cs.class_directions(net, (X, y), "act2").values
    names = np.array(["zero", "one", "two", "three", "four"])[y.numpy()]
    for data, kw in [((X.numpy(), y.numpy()), {}), ({"X": X, "y": y}, {}), (X, {"labels": y.tolist()}),
                     (type("D", (), {"X": X, "y": y})(), {}),
                     (type("B", (), {"data": X.numpy(), "target": y.numpy()})(), {})]:
        torch.testing.assert_close(cs.class_directions(net, data, "act2", **kw).values, ref)
    s = cs.class_directions(net, X, "act2", labels=list(names))        # string labels: sorted
    assert s.classes == ["four", "one", "three", "two", "zero"]
    torch.testing.assert_close(s.direction("three"), ref[3])
    b = cs.class_directions(net, X, "act2", labels=(y == 2).tolist())  # bool labels: class vs the rest
    assert b.classes == [False, True]
    torch.testing.assert_close(b.direction(True), -b.direction(False))  # two classes: opposite directions


def test_model_unchanged_and_chunk_size(net):
    X, y = _data()
    net.train()
    snap = _snapshot(net)
    a = cs.class_directions(net, (X, y), "act2", chunk_size=7)
    b = cs.class_directions(net, (X, y), "act2")
    torch.testing.assert_close(a.values, b.values, atol=1e-6, rtol=0)
    with pytest.raises(cs.InputError):
        cs.class_directions(net, (X, y[:-1]), "act2")
    _assert_unchanged(net, snap)
    net.eval()


def test_save_load_round_trip(net, tmp_path):
    X, y = _data()
    r = cs.class_directions(net, (X, y), "act2")
    back = cs.DirectionsResult.from_array(cs.load_result(r.save(tmp_path / "dirs")))
    assert torch.equal(back.values, r.values) and back.coords == r.coords and back.meta == r.meta
    assert torch.equal(back.class_means, r.class_means) and torch.equal(back.diff_of_means(0, 1), r.diff_of_means(0, 1))
    sim = r.similarity()
    sback = cs.SimilarityMatrix.from_array(cs.load_result(sim.save(tmp_path / "sim")))
    assert torch.equal(sback.values, sim.values) and sback.most_similar(3) == sim.most_similar(3)
    assert r.meta["method"] == "class_directions" and r.meta["site"] == "act2" and r.meta["center"] == "class_means"


def test_plots(net):
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    X, y = _data()
    r = cs.class_directions(net, (X, y), "act2")
    fig = r.plot()
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.get_visible()]) == 5
    grey = (176 / 255, 176 / 255, 176 / 255)
    marked = [p for p in fig.axes[0].patches if not np.allclose(p.get_facecolor()[:3], grey)]
    assert len(fig.axes[0].patches) == 128 + 5 and len(marked) == 5   # the top 5 neurons drawn again in colour
    assert isinstance(r.plot("similarity"), Figure)
    texts = [t.get_text() for t in r.similarity().plot().axes[0].texts]
    assert len(texts) == 25 and "1.00" in texts                  # annotated cells, the diagonal is 1
    assert isinstance(r.plot(backend="plotly"), go.Figure)
    assert isinstance(r.plot("similarity", backend="plotly"), go.Figure)
    assert isinstance(r.plot(classes=[2], top=3), Figure)


def test_errors(net):
    X, y = _data()
    with pytest.raises(cs.InputError, match="needs class labels"):
        cs.class_directions(net, X, "act2")
    with pytest.raises(cs.InputError, match="one label per input"):
        cs.class_directions(net, X, "act2", labels=y[:10])
    with pytest.raises(cs.InputError, match="at least 2 classes"):
        cs.class_directions(net, X, "act2", labels=[0] * len(X))
    with pytest.raises(cs.InputError, match="center must be"):
        cs.class_directions(net, (X, y), "act2", center="median")
    with pytest.raises(cs.InputError, match="site must be"):
        cs.class_directions(net, (X, y), 3)
    with pytest.raises(cs.SiteError, match="act2"):
        cs.class_directions(net, (X, y), "act22")
    with pytest.raises(cs.InputError, match="non-integer"):
        cs.class_directions(net, X, "act2", labels=torch.rand(len(X)))
    r = cs.class_directions(net, (X, y), "act2")
    with pytest.raises(cs.InputError, match=r"Unknown class 9; the classes are \[0, 1, 2, 3, 4\]"):
        r.direction(9)


# -- any model: a GPT-2 config, token-class labels -------------------------------------------------------------------
WORDS = ["mat", "rug", "tree", "house", "car", "road", "river", "city"]


@pytest.fixture(scope="module")
def lm():
    model, tok = build_tiny_lm("gpt2")
    return model, tok


def _prompts() -> tuple[list[str], list[bool]]:
    subjects = ["the cat sat on the", "a dog ran by the", "the old king saw a", "the small bird flew near the"]
    prompts = [f"{s} {w}" for s in subjects[:3] for w in WORDS]            # all 6 tokens long
    return prompts, [p.endswith(" mat") for p in prompts]


def test_gpt2_token_class_direction(lm):
    model, tok = lm
    m = cs.load(model, tok, name="tiny-gpt2")
    prompts, is_mat = _prompts()
    site = cs.Site("layers.1", positions=-1)
    r = cs.class_directions(m, prompts, site, labels=is_mat)
    ids = tok(prompts, return_tensors="pt")["input_ids"]
    assert ids.shape == (24, 6)
    with torch.no_grad():  # (on a copy: transformers installs its own hooks for output_hidden_states)
        hs = copy.deepcopy(model)(ids, output_hidden_states=True).hidden_states[2][:, -1].double().numpy()
    lab = np.array(is_mat)
    means = np.stack([hs[~lab].mean(0), hs[lab].mean(0)])
    np.testing.assert_allclose(r.numpy(), means - means.mean(0), atol=1e-5, rtol=0)
    assert r.classes == [False, True] and r.meta["site"] == "layers.1[pos=-1]"
    np.testing.assert_allclose(r.diff_of_means(True, False).numpy(), means[1] - means[0], atol=1e-5, rtol=0)
    # the whole sequence is not one vector per input: a clear error that says how to select a position
    with pytest.raises(cs.InputError, match=r"positions=-1"):
        cs.class_directions(m, prompts, "layers.1", labels=is_mat)


def test_gpt2_steering_along_token_direction(lm):
    """steer() on an LM: add the 'last token is mat' direction at block 1's last position; the reference is a
    plain forward hook on a copy of the model (as the seed steers)."""
    model, tok = lm
    hooks_before = [(len(mod._forward_hooks), len(mod._forward_pre_hooks)) for mod in model.modules()]
    m = cs.load(model, tok, name="tiny-gpt2")
    prompts, is_mat = _prompts()
    d = cs.class_directions(m, prompts, cs.Site("layers.1", positions=-1), labels=is_mat).direction(True)
    strengths = [0.0, 1.0, 4.0]
    r = cs.steer(m, prompts, cs.Site("layers.1", positions=-1), d, strengths, target=7)
    ids = tok(prompts, return_tensors="pt")["input_ids"]
    for k, s in enumerate(strengths):
        ref_model = copy.deepcopy(model)

        def hook(module, inputs, output, s=s):
            h = output[0] if isinstance(output, tuple) else output
            h[:, -1] += s * d
            return output

        ref_model.transformer.h[1].register_forward_hook(hook)
        with torch.no_grad():
            p = ref_model(ids).logits[:, -1].softmax(-1)
        torch.testing.assert_close(r.probs.values[k], p.mean(0), atol=1e-5, rtol=0)
        counts = torch.bincount(p.argmax(-1), minlength=p.shape[-1])
        assert torch.equal(r.counts[k], counts)
    assert [(len(mod._forward_hooks), len(mod._forward_pre_hooks)) for mod in model.modules()] == hooks_before
