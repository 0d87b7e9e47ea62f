"""steer / steering_matrix: batched sweeps and the source x target matrix equal the seed's model-copy loop
(copy.deepcopy + a plain forward hook adding strength x direction at fc2, written here); chunking, the model
left unchanged, save / load, plots and errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import causalscope as cs
from causalscope.zoo.digits_mlp import build_digits_mlp

STRENGTHS = [0.0, 0.2, 0.5, 1.0, 2.0, 5.0]


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return build_digits_mlp(trained=False, seed=1)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    X = torch.rand(120, 64, generator=g)
    y = torch.randint(0, 10, (120,), generator=g)
    y[:10] = torch.arange(10)  # every class present
    return X, y


@pytest.fixture(scope="module")
def dirs(net, data) -> cs.DirectionsResult:
    d = cs.class_directions(net, data, "act2")
    # random weights give small directions; scale them so that steering moves predictions around
    return cs.DirectionsResult(d.values * 40, d.dims, d.coords, d.meta, d.name)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, cs.DirectionsResult]:
    """The seed's setting: the trained MLP, the 360 held-out digits, directions at act2 (post-ReLU fc2)."""
    net = build_digits_mlp(trained=True)
    X, y = cs.data.digits("test")
    return net, X, y, cs.class_directions(net, (X, y), "act2")


class SeedHook:
    """The seed's DirectionInterventionHook: ``output += strength * direction``."""

    def __init__(self, direction: torch.Tensor, strength: float) -> None:
        self.direction, self.strength = direction, strength

    def __call__(self, module, inputs, output):  # noqa: ANN001
        output += self.strength * self.direction.unsqueeze(0)
        return output


def seed_steered_probs(net: torch.nn.Module, X: torch.Tensor, direction: torch.Tensor, strength: float) -> torch.Tensor:
    """A copy of the model per call, the hook on fc2, then softmax of the logits (the seed's loop, one cell)."""
    modified = copy.deepcopy(net)
    modified.fc2.register_forward_hook(SeedHook(direction, strength))
    with torch.no_grad():
        return modified(X).softmax(-1)


def _hooks(net: torch.nn.Module) -> list[tuple[int, int]]:
    return [(len(mod._forward_hooks), len(mod._forward_pre_hooks)) for mod in net.modules()]


@pytest.mark.parametrize("setting", ["trained", "random"])
def test_sweep_equals_seed_copy_loop(setting, net, data, dirs, digits):
    if setting == "trained":
        net, X, y, dirs = digits
    else:
        X, y = data
    r = cs.steer(net, (X, y), "fc2", dirs, STRENGTHS, target=7)
    assert isinstance(r, cs.SteeringResult) and r.dims == ("strength", "measure", "class")
    assert r.shape == (len(STRENGTHS), 2, 10) and r.strengths == STRENGTHS
    for k, s in enumerate(STRENGTHS):
        p = seed_steered_probs(net, X, dirs.direction(7), s)
        pred = p.argmax(-1)
        torch.testing.assert_close(r.probs.values[k], p.mean(0), atol=1e-5, rtol=0)
        assert torch.equal(r.counts[k], torch.bincount(pred, minlength=10))
        torch.testing.assert_close(r.predicted.values[k], torch.bincount(pred, minlength=10) / len(X))
        assert r.accuracy.values[k].item() == pytest.approx((pred == y).float().mean().item(), abs=1e-6)
        assert r.p_true.values[k].item() == pytest.approx(p[torch.arange(len(y)), y].mean().item(), abs=1e-5)
        assert r.p_target.values[k].item() == pytest.approx(p[:, 7].mean().item(), abs=1e-5)
        assert r.frac_target.values[k].item() == pytest.approx((pred == 7).float().mean().item(), abs=1e-6)
    # the steering moved something (else the comparison above would be vacuous)
    assert not torch.equal(r.counts[0], r.counts[-1])
    # the seed's own experiment: the accuracy on the inputs of ONE digit, per strength
    sevens = y == 7
    r7 = cs.steer(net, (X[sevens], y[sevens]), "fc2", dirs.direction(7), STRENGTHS)
    for k, s in enumerate(STRENGTHS):
        pred = seed_steered_probs(net, X[sevens], dirs.direction(7), s).argmax(-1)
        assert r7.accuracy.values[k].item() == pytest.approx(100 * (pred == 7).sum().item() / sevens.sum().item() / 100)


def test_sweep_equals_bias_reference(net, data, dirs):
    """Adding strength x direction to fc2's bias is the same edit (up to rounding)."""
    X, y = data
    r = cs.steer(net, X, "fc2", dirs.direction(3), [0.5, 3.0])
    for k, s in enumerate([0.5, 3.0]):
        ref = copy.deepcopy(net)
        with torch.no_grad():
            ref.fc2.bias += s * dirs.direction(3)
            p = ref(X).softmax(-1)
        torch.testing.assert_close(r.probs.values[k], p.mean(0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting", ["trained", "random"])
def test_matrix_equals_seed_copy_loop(setting, net, data, dirs, digits):
    if setting == "trained":
        net, X, y, dirs = digits
    else:
        X, y = data
    M = cs.steering_matrix(net, (X, y), "fc2", dirs, strength=1.0)
    assert isinstance(M, cs.SteeringMatrix) and M.dims == ("source", "target", "stat")
    assert M.sources == list(range(10)) and M.targets == list(range(10)) and M.shape == (10, 10, 4)
    seed_accuracy = np.zeros((10, 10))   # the seed's layout: [direction added, digit classified], in %
    for t in range(10):                  # direction of class t added
        p = seed_steered_probs(net, X, dirs.direction(t), 1.0)
        pred = p.argmax(-1)
        for s in range(10):              # inputs of class s
            rows = y == s
            ref = [(pred[rows] == t).float().mean(), (pred[rows] == s).float().mean(), p[rows, t].mean(),
                   p[rows, s].mean()]
            torch.testing.assert_close(M.values[s, t], torch.stack(ref), atol=1e-5, rtol=0)
            seed_accuracy[t, s] = 100 * (pred[rows] == y[rows]).sum().item() / rows.sum().item()
    np.testing.assert_allclose(M.accuracy.numpy().T * 100, seed_accuracy, atol=1e-4)
    if setting == "trained":  # a real cross-digit matrix: the own direction keeps a digit, others move it
        assert (M.accuracy.values.diagonal() >= 0.95).all() and M.accuracy.values.min() < 0.5
    # baseline: the unsteered model
    with torch.no_grad():
        pred0 = net(X).argmax(-1)
    base = torch.stack([torch.bincount(pred0[y == s], minlength=10) / (y == s).sum() for s in range(10)])
    torch.testing.assert_close(M.baseline.values, base.float(), atol=1e-6, rtol=0)
    assert M.stat("frac_target").dims == ("source", "target")


def test_matrix_direction_forms_and_subsets(net, data, dirs):
    X, y = data
    full = cs.steering_matrix(net, (X, y), "fc2", dirs, strength=2.0, baseline=False)
    as_tensor = cs.steering_matrix(net, (X, y), "fc2", dirs.values, strength=2.0)
    torch.testing.assert_close(full.values, as_tensor.values)
    some = cs.steering_matrix(net, (X, y), "fc2", {2: dirs.direction(2), 5: dirs.direction(5)}, strength=2.0)
    assert some.targets == [2, 5]
    torch.testing.assert_close(some.values, full.values[:, [2, 5]])
    mask = y < 4                                                      # sources: the classes present
    part = cs.steering_matrix(net, (X[mask], y[mask]), "fc2", dirs, strength=2.0)
    assert part.sources == [0, 1, 2, 3]
    torch.testing.assert_close(part.values, full.values[:4], atol=1e-6, rtol=0)
    with pytest.raises(cs.InputError, match="baseline=False"):
        full.baseline


def test_chunk_size_independent_and_model_unchanged(net, data, dirs):
    X, y = data
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    hooks, training = _hooks(net), [mod.training for mod in net.modules()]
    a = cs.steer(net, (X, y), "fc2", dirs, STRENGTHS, target=2, chunk_size=13)
    b = cs.steer(net, (X, y), "fc2", dirs, STRENGTHS, target=2)
    torch.testing.assert_close(a.values, b.values, atol=1e-6, rtol=0)
    assert a.meta["accuracy"] == b.meta["accuracy"]
    Ma = cs.steering_matrix(net, (X, y), "fc2", dirs, 1.5, chunk_size=50)
    Mb = cs.steering_matrix(net, (X, y), "fc2", dirs, 1.5)
    torch.testing.assert_close(Ma.values, Mb.values, atol=1e-6, rtol=0)
    with pytest.raises(cs.InterventionError, match=r"shape \(5,\)"):            # raises inside the engine run
        cs.steer(net, X, "fc2", torch.ones(5), [1.0])
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert _hooks(net) == hooks and not any(mod._forward_hooks for mod in net.modules())
    assert [mod.training for mod in net.modules()] == training
    net.eval()


def test_steer_at_a_selection_and_readout(net, data, dirs):
    """Any site: a neuron subset of act2 (post-ReLU); a custom readout on the logits."""
    X, _ = data
    site = cs.Site("act2", neurons=[0, 5, 9])
    v = torch.tensor([1.0, -2.0, 3.0])
    r = cs.steer(net, X, site, v, [0.0, 2.0], readout=lambda out: out[:, :3])
    ref = copy.deepcopy(net)

    def hook(module, inputs, output):  # noqa: ANN001
        output[:, [0, 5, 9]] += 2.0 * v
        return output

    ref.act2.register_forward_hook(hook)
    with torch.no_grad():
        p = ref(X)[:, :3].softmax(-1)
    torch.testing.assert_close(r.probs.values[1], p.mean(0), atol=1e-5, rtol=0)
    assert r.shape == (2, 2, 3)


def test_save_load_round_trip(net, data, dirs, tmp_path):
    X, y = data
    r = cs.steer(net, (X, y), "fc2", dirs, STRENGTHS, target=7)
    back = cs.SteeringResult.from_array(cs.load_result(r.save(tmp_path / "sweep")))
    assert torch.equal(back.values, r.values) and back.coords == r.coords and back.meta == r.meta
    assert torch.equal(back.counts, r.counts) and torch.equal(back.accuracy.values, r.accuracy.values)
    assert torch.equal(back.summary().values, r.summary().values)
    M = cs.steering_matrix(net, (X, y), "fc2", dirs, 1.0)
    Mback = cs.SteeringMatrix.from_array(cs.load_result(M.save(tmp_path / "matrix")))
    assert torch.equal(Mback.values, M.values) and Mback.meta == M.meta
    assert torch.equal(Mback.baseline.values, M.baseline.values)
    assert M.meta["method"] == "steering_matrix" and M.meta["strength"] == 1.0 and M.meta["site"] == "fc2"


def test_plots(net, data, dirs):
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    X, y = data
    r = cs.steer(net, (X, y), "fc2", dirs, STRENGTHS, target=7)
    fig = r.plot()
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 4          # accuracy, p_true, p_target, frac
    assert isinstance(r.plot(backend="plotly"), go.Figure)
    assert isinstance(cs.steer(net, X, "fc2", dirs.direction(1), [0, 1]).plot(), Figure)   # no labels, no target
    M = cs.steering_matrix(net, (X, y), "fc2", dirs, 1.0)
    mfig = M.plot()
    assert isinstance(mfig, Figure) and len(mfig.axes[0].texts) == 100      # annotated cells
    assert isinstance(M.plot("p_source", backend="plotly"), go.Figure)


def test_errors(net, data, dirs):
    X, y = data
    bad = [
        (dict(strengths=[]), "non-empty"), (dict(strengths=[1.0, float("nan")]), "finite"),
        (dict(strengths=[1.0, 1.0]), "repeat"), (dict(strengths="strong"), "list of numbers"),
    ]
    for kw, msg in bad:
        with pytest.raises(cs.InputError, match=msg):
            cs.steer(net, X, "fc2", dirs.direction(0), **kw)
    with pytest.raises(cs.InputError, match="target="):
        cs.steer(net, X, "fc2", dirs, [1.0])
    with pytest.raises(cs.InputError, match="is not an output class"):
        cs.steer(net, X, "fc2", dirs.direction(0), [1.0], target=10)
    with pytest.raises(cs.InputError, match="finite vector"):
        cs.steer(net, X, "fc2", torch.tensor([float("inf")] * 128), [1.0])
    with pytest.raises(cs.InputError, match="one label per input"):
        cs.steer(net, X, "fc2", dirs.direction(0), [1.0], labels=y[:5])
    with pytest.raises(cs.InputError, match="readout"):
        cs.steer(net, X, "fc2", dirs.direction(0), [1.0], readout=lambda out: out[:, 0])
    with pytest.raises(cs.InputError, match="needs class labels"):
        cs.steering_matrix(net, X, "fc2", dirs, 1.0)
    with pytest.raises(cs.InputError, match="strength must be a finite number"):
        cs.steering_matrix(net, (X, y), "fc2", dirs, [1.0, 2.0])
    with pytest.raises(cs.InputError, match="directions must be"):
        cs.steering_matrix(net, (X, y), "fc2", "seven", 1.0)
    with pytest.raises(cs.InputError, match=r"\(classes, d\)"):
        cs.steering_matrix(net, (X, y), "fc2", dirs.direction(0), 1.0)
    with pytest.raises(cs.InputError, match="is not an output class"):
        cs.steering_matrix(net, X, "fc2", dirs, 1.0, labels=["a"] * len(X))
    with pytest.raises(cs.InputError, match="Unknown stat"):
        cs.steering_matrix(net, (X, y), "fc2", dirs, 1.0).stat("accuracy")
    r = cs.steer(net, X, "fc2", dirs.direction(0), [1.0])
    with pytest.raises(cs.InputError, match="pass labels"):
        r.accuracy
    with pytest.raises(cs.InputError, match="target="):
        r.p_target
