"""corrupt / corrupt_and_restore: seeded corruptions; restoring every site (or the last layer) gives the clean
output; per-site values equal the seed's loop (a model copy with a hook returning the clean activation);
a GPT-2 config; the model left unchanged; save / load, plots and errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_tiny_lm
from causalscope.zoo.digits_mlp import build_digits_mlp

SITES = ["act1", cs.Site("act1", neurons=list(range(0, 256, 2))), "act2", "fc3", "act3"]
KINDS = ["noise", "zero", "uniform", "shuffle"]


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, torch.Tensor]:
    net = build_digits_mlp(trained=True)
    X, _ = cs.data.digits("test")
    return net, X[:200]


def _hooks(net: torch.nn.Module) -> list[tuple[int, int]]:
    return [(len(mod._forward_hooks), len(mod._forward_pre_hooks)) for mod in net.modules()]


def test_corruptions_seeded_and_deterministic():
    x = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    for kind in KINDS:
        a, b = cs.corrupt(x, kind, seed=3), cs.corrupt(x, kind, seed=3)
        assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
        if kind != "zero":
            assert not torch.equal(a, cs.corrupt(x, kind, seed=4))
    assert torch.equal(x, before)                                            # the inputs are not changed
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(cs.corrupt(x, "noise", scale=0.5, seed=3), x + 0.5 * torch.randn(x.shape, generator=g))
    assert torch.equal(cs.corrupt(x, "noise", scale=0.0, seed=3), x)
    assert not cs.corrupt(x, "zero").any()
    u = cs.corrupt(x, "uniform", seed=1)
    assert (u >= 0).all() and (u < 1).all() and torch.equal(u, cs.corrupt(x, "random", seed=1))
    s = cs.corrupt(x, "shuffle", seed=2)                                     # a permutation of each input's pixels
    assert torch.equal(s.flatten(1).sort(1).values, x.flatten(1).sort(1).values) and not torch.equal(s, x)
    perms = [torch.argsort(torch.argsort(s[i].flatten())) for i in range(2)]  # different per input
    assert not torch.equal(perms[0], perms[1])
    ids = torch.arange(12).view(2, 6)
    assert torch.equal(cs.corrupt(ids, "shuffle", seed=0).sort(1).values, ids)   # works on token ids too
    assert torch.equal(cs.corrupt(x, lambda t: t.flip(0)), x.flip(0))
    # the global RNG is not used
    torch.manual_seed(0)
    state = torch.get_rng_state()
    cs.corrupt(x, "noise", seed=5)
    assert torch.equal(torch.get_rng_state(), state)


def test_restoring_everything_or_the_last_layer_gives_the_clean_output(setup):
    net, X = setup
    r = cs.corrupt_and_restore(net, X, KINDS, ["act1", "act2", "fc4"], seed=0)
    with torch.no_grad():
        p = net(X).softmax(-1)
    clean = p.max(-1).values
    torch.testing.assert_close(r.clean_prob, clean, atol=1e-6, rtol=0)
    for kind in KINDS:
        torch.testing.assert_close(r.sel(corruption=kind, site="all").values, clean, atol=1e-6, rtol=0)
        torch.testing.assert_close(r.sel(corruption=kind, site="fc4").values, clean, atol=1e-6, rtol=0)
        # a plain chain: a whole layer carries everything downstream, so act1 alone restores it too
        torch.testing.assert_close(r.sel(corruption=kind, site="act1").values, clean, atol=1e-6, rtol=0)
    assert (r.corrupted_prob.mean(1) < clean.mean() - 0.3).all()            # the corruptions do hurt
    assert r.dims == ("corruption", "site", "example") and r.shape == (4, 4, 200)


def test_values_equal_the_seed_loop(setup):
    """Per example: a copy of the model with a hook returning the clean activation at the site (the seed's
    RestorationHook), run on the corrupted input; for a neuron subset only those neurons are restored."""
    net, X = setup
    X = X[:40]
    r = cs.corrupt_and_restore(net, X, ["noise", "shuffle"], SITES, scale=0.7, seed=11)
    with torch.no_grad():
        target = net(X).argmax(-1)
    for kind in ["noise", "shuffle"]:
        Xc = cs.corrupt(X, kind, scale=0.7, seed=11)
        with torch.no_grad():
            corrupted = net(Xc).softmax(-1)[torch.arange(len(X)), target]
        torch.testing.assert_close(r.corrupted_prob[r.corruptions.index(kind)], corrupted, atol=1e-6, rtol=0)
        for site in SITES:
            name = site if isinstance(site, str) else site.module
            neurons = None if isinstance(site, str) else list(site.neurons)
            got = r.sel(corruption=kind, site=str(site)).values
            for i in range(0, len(X), 7):
                acts = {}
                with torch.no_grad():
                    h = net.get_submodule(name).register_forward_hook(lambda m, a, o: acts.setdefault("a", o.clone()))
                    net(X[i:i + 1])
                    h.remove()
                restored = copy.deepcopy(net)

                def hook(module, inputs, output, clean=acts["a"]):  # noqa: ANN001
                    if neurons is None:
                        return clean
                    out = output.clone()
                    out[:, neurons] = clean[:, neurons]
                    return out

                restored.get_submodule(name).register_forward_hook(hook)
                with torch.no_grad():
                    p = restored(Xc[i:i + 1]).softmax(-1)[0, target[i]]
                assert got[i].item() == pytest.approx(p.item(), abs=1e-5)
    half = r.sel(corruption="noise", site=str(SITES[1])).values.mean()   # half of layer 1: partial recovery
    assert r.corrupted_prob[0].mean() < half < r.clean_prob.mean()
    assert not any(mod._forward_hooks for mod in net.modules())


def test_summary_effect_and_recovered_fraction(setup):
    net, X = setup
    r = cs.corrupt_and_restore(net, X[:100], ["noise", "zero"], SITES[:2], seed=1)
    v = r.values.double().numpy()
    s = r.summary()
    assert s.coords["stat"] == ["mean", "std", "sem", "q25", "median", "q75"]
    np.testing.assert_allclose(s.sel(stat="mean").numpy(), v.mean(-1), atol=1e-6)
    np.testing.assert_allclose(s.sel(stat="std").numpy(), v.std(-1), atol=1e-6)
    np.testing.assert_allclose(s.sel(stat="median").numpy(), np.median(v, -1), atol=1e-6)
    np.testing.assert_allclose(s.sel(stat="q25").numpy(), np.quantile(v, 0.25, -1), atol=1e-6)
    np.testing.assert_allclose(r.effect.numpy(), v - r.corrupted_prob.numpy()[:, None], atol=1e-6)
    frac = r.recovered_fraction()
    np.testing.assert_allclose(frac.sel(site="act1").numpy(), [1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(frac.sel(site="all").numpy(), [1.0, 1.0], atol=1e-5)


def test_model_unchanged_chunking_and_errors(setup):
    net, X = setup
    X = X[:30]
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    hooks = _hooks(net)
    a = cs.corrupt_and_restore(net, X, "noise", SITES, seed=2, chunk_size=11)
    b = cs.corrupt_and_restore(net, X, "noise", SITES, seed=2)
    torch.testing.assert_close(a.values, b.values, atol=1e-6, rtol=0)
    with pytest.raises(cs.InputError, match="must return a tensor of the inputs' shape"):
        cs.corrupt_and_restore(net, X, lambda t: t[:1], SITES)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert _hooks(net) == hooks and all(mod.training for mod in net.modules())
    net.eval()
    for kw, err, msg in [
        (dict(corruption="blur"), cs.InputError, "Unknown corruption 'blur'"),
        (dict(sites=[]), cs.InputError, "sites is empty"),
        (dict(sites=["act1", "act1"]), cs.InputError, "sites repeat"),
        (dict(sites=None), cs.InputError, "Pass sites="),
        (dict(sites=["act9"]), cs.SiteError, "act1"),
        (dict(scale=-1.0), cs.InputError, "scale must be"),
        (dict(corruption=["noise", "noise"]), cs.InputError, "corruptions repeat"),
        (dict(corruption=[]), cs.InputError, "corruption is empty"),
    ]:
        args = {"corruption": "noise", "sites": ["act1"], **kw}
        with pytest.raises(err, match=msg):
            cs.corrupt_and_restore(net, X, args.pop("corruption"), args.pop("sites"), **args)
    with pytest.raises(cs.InputError, match="token ids"):
        cs.corrupt(torch.arange(6).view(2, 3), "noise")
    with pytest.raises(cs.InputError, match="needs a tensor"):
        cs.corrupt([1.0, 2.0], "noise")


def test_save_load_and_plots(setup, tmp_path):
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    net, X = setup
    r = cs.corrupt_and_restore(net, X[:50], ["noise", "shuffle"], SITES[:3], seed=0)
    back = cs.RestorationResult.from_array(cs.load_result(r.save(tmp_path / "restore")))
    assert torch.equal(back.values, r.values) and back.meta == r.meta and back.coords == r.coords
    assert torch.equal(back.clean_prob, r.clean_prob) and torch.equal(back.summary().values, r.summary().values)
    assert r.meta["method"] == "corrupt_and_restore" and r.meta["seed"] == 0 and r.meta["scale"] == 0.5
    fig = r.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for spread in ["iqr", "sem", "minmax"]:
        assert isinstance(r.plot(spread=spread), Figure)
    assert isinstance(r.plot(backend="plotly"), go.Figure)
    with pytest.raises(ValueError, match="spread"):
        r.plot(spread="var")


def test_gpt2_token_corruption():
    """Any model: a GPT-2 config, prompts shuffled token-wise; restoring the last block gives the clean output."""
    model, tok = build_tiny_lm("gpt2")
    m = cs.load(model, tok, name="tiny-gpt2")
    prompts = ["the cat sat on the mat", "a dog ran by the tree", "the old king saw a river"]
    r = cs.corrupt_and_restore(m, prompts, "shuffle", [f"layers.{i}" for i in range(4)], seed=0)
    with torch.no_grad():
        p = model(tok(prompts, return_tensors="pt")["input_ids"]).logits[:, -1].softmax(-1)
    torch.testing.assert_close(r.clean_prob, p.max(-1).values, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.sel(corruption="shuffle", site="layers.3").values, r.clean_prob, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.sel(corruption="shuffle", site="all").values, r.clean_prob, atol=1e-5, rtol=0)
    assert r.sites == ["layers.0", "layers.1", "layers.2", "layers.3", "all"]
