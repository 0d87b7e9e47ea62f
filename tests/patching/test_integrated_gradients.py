"""causalscope.integrated_gradients: equal to captum's LayerIntegratedGradients (the reference), complete
(the IG axiom), cheap (segmented runs on HF LMs), harmless to the model, and clear about bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import causalscope as cs
from causalscope.patching._ig import METHODS, approximation
from causalscope.zoo import build_mlp, build_tiny_lm

captum_attr = pytest.importorskip("captum.attr")  # a test-only dependency: the reference implementation

ATOL = 1e-4


def _inputs(n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)


def _captum(forward, layer, x, b, **kw):
    lig = captum_attr.LayerIntegratedGradients(forward, layer, multiply_by_inputs=True)
    attr, delta = lig.attribute(x, b, return_convergence_delta=True, **kw)
    return (attr[0] if isinstance(attr, (tuple, list)) else attr).detach(), delta.detach()


# ------------------------------------------------------------------------------------------ reference: MLP
@pytest.mark.parametrize("site,index,attribute_to", [("net.2", 2, "output"), ("net.2", 2, "input"),
                                                     ("net.0", 0, "output")])
def test_mlp_equals_captum_every_method(site, index, attribute_to):
    net = build_mlp()
    x, b = _inputs()
    m = cs.load(net)
    for method in METHODS:
        for steps in (20, 50):
            r = cs.integrated_gradients(m, x, b, site, target=1, steps=steps, method=method,
                                        attribute_to=attribute_to)
            ref, delta = _captum(net, net.net[index], x, b, target=1, n_steps=steps, method=method,
                                 attribute_to_layer_input=attribute_to == "input")
            assert r.attributions.shape == ref.shape
            torch.testing.assert_close(r.attributions, ref, atol=ATOL, rtol=0, msg=f"{method} {steps}")
            torch.testing.assert_close(r.delta, delta.double(), atol=ATOL, rtol=0)


def test_mlp_zero_baseline_and_per_input_targets_equal_captum():
    net = build_mlp()
    x, _ = _inputs()
    targets = [0, 3, 1]
    r = cs.integrated_gradients(net, x, None, "net.2", target=targets, steps=24)
    ref, delta = _captum(net, net.net[2], x, None, target=targets, n_steps=24)
    torch.testing.assert_close(r.attributions, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(r.delta, delta.double(), atol=ATOL, rtol=0)
    assert r.meta["baseline"] == "zero input" and r.meta["target"] == targets


def test_metric_and_chunking():
    """A metric function gives the same as the equivalent target; chunk_size does not change the result."""
    net = build_mlp()
    x, b = _inputs(4)
    by_target = cs.integrated_gradients(net, x, b, "net.2", target=2, steps=16)
    by_metric = cs.integrated_gradients(net, x, b, "net.2", metric=lambda y: y[:, 2], steps=16, chunk_size=5)
    torch.testing.assert_close(by_metric.attributions, by_target.attributions, atol=1e-6, rtol=0)
    assert by_metric.meta["chunk_size"] == 5 and by_metric.meta["rows"] == 16 * 4
    # a single-output model needs neither target nor metric
    one = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    r = cs.integrated_gradients(one, x, b, "1", steps=16)
    ref, _ = _captum(one, one[1], x, b, n_steps=16)
    torch.testing.assert_close(r.attributions, ref, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------ reference: GPT-2
@pytest.fixture(scope="module")
def gpt2():
    model, tok = build_tiny_lm("gpt2")
    m = cs.load(model, tok)
    ids = m.adapter.tokenize(["the cat sat on the mat", "a dog ran by the tree"])
    corrupted = m.adapter.tokenize(["the dog ran on the tree", "a cat sat by the mat"])
    return model, m, ids, corrupted


@pytest.mark.parametrize("site,steps", [("layers.1", 20), ("layers.0.mlp", 12), ("layers.3", 12)])
def test_gpt2_equals_captum(gpt2, site, steps):
    model, m, ids, corrupted = gpt2
    layer = {"layers.1": model.transformer.h[1], "layers.0.mlp": model.transformer.h[0].mlp,
             "layers.3": model.transformer.h[3]}[site]
    r = cs.integrated_gradients(m, ids, corrupted, site, target=7, steps=steps)
    ref, delta = _captum(lambda i: model(input_ids=i).logits[:, -1], layer, ids, corrupted, target=7,
                         n_steps=steps)
    assert r.dims == ("input", "position", "d") and r.shape == (2, 6, 64)
    torch.testing.assert_close(r.attributions, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(r.delta, delta.double(), atol=ATOL, rtol=0)
    # the path integral is complete at every site, even where the baseline also acts around the site
    assert r.path_delta.abs().max() < 1e-3


def test_gpt2_block_input_prompts_and_per_input_targets(gpt2):
    """attribute_to='input' of block 2 == the output of block 1; prompts work like ids."""
    model, m, ids, corrupted = gpt2
    prompts = ["the cat sat on the mat", "a dog ran by the tree"]
    r = cs.integrated_gradients(m, prompts, corrupted, "layers.2", attribute_to="input", target=[7, 9], steps=10)
    # captum cannot hook a GPT-2 block's input (its positional arguments hold a cache object): compare with
    # block 1's output, the same tensor
    ref, _ = _captum(lambda i: model(input_ids=i).logits[:, -1], model.transformer.h[1], ids, corrupted,
                     target=[7, 9], n_steps=10)
    torch.testing.assert_close(r.attributions, ref, atol=ATOL, rtol=0)
    assert r.meta["segment"] == {"layer": 2, "site": "layers.2[input]"}
    assert r.meta["tokens"][0] == ["the", "cat", "sat", "on", "the", "mat"]


def test_segment_path_skips_the_prefix(gpt2):
    """At layers.1 the grad rows run blocks 2-3 only: fewer token-layers than steps x L x T x B."""
    _, m, ids, corrupted = gpt2
    steps, L, (B, T) = 20, 4, ids.shape
    r = cs.integrated_gradients(m, ids, corrupted, "layers.1", target=7, steps=steps)
    # inputs + baseline full runs, the path start and the steps x B rows on blocks 2..3
    assert r.meta["token_layers"] == 2 * L * T * B + (L - 2) * T * B + steps * B * (L - 2) * T
    assert r.meta["token_layers"] < steps * L * T * B
    model = m.module
    assert all(not x._forward_hooks and not x._forward_pre_hooks for x in model.modules())
    assert all(p.grad is None for p in model.parameters()) and not model.training


# ------------------------------------------------------------------------------------------ completeness
def _smooth_mlp() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                                   torch.nn.GELU(), torch.nn.Linear(32, 4)).eval()


def test_completeness_mlp():
    """Gauss-Legendre is complete to quadrature accuracy on a smooth MLP; riemann_trapezoid's error shrinks
    with the steps (captum's trapezoid weights sum to 1 - 1/steps); ReLU kinks limit any rule."""
    x, b = _inputs()
    r = cs.integrated_gradients(_smooth_mlp(), x, b, "2", target=1, steps=50)
    gap = (r.f_inputs - r.f_baseline).abs()
    assert gap.min() > 1e-2 and (r.delta.abs() < 1e-3 * gap).all(), (r.delta, gap)
    torch.testing.assert_close(r.attributions.sum(1).double() - (r.f_inputs - r.f_baseline), r.delta)
    errors = [cs.integrated_gradients(_smooth_mlp(), x, b, "2", target=1, steps=n, method="riemann_trapezoid")
              .delta.abs().max().item() for n in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.3 * errors[1], errors
    relu = cs.integrated_gradients(build_mlp(), x, b, "net.2", target=1, steps=50)
    assert (relu.delta.abs() < 0.05 * (relu.f_inputs - relu.f_baseline).abs()).all()


def test_approximation_rules():
    a, w = approximation("gausslegendre", 7)
    assert np.isclose(w.sum(), 1.0) and np.isclose((a ** 3 * w).sum(), 0.25)   # exact for polynomials
    assert np.allclose(approximation("riemann_left", 4)[0], [0, 0.25, 0.5, 0.75])
    assert np.allclose(approximation("riemann_right", 4)[0], [0.25, 0.5, 0.75, 1])
    a, w = approximation("riemann_trapezoid", 5)
    assert np.allclose(a, [0, 0.25, 0.5, 0.75, 1]) and np.allclose(w, [0.1, 0.2, 0.2, 0.2, 0.1])  # as captum


# ------------------------------------------------------------------------------------------ contracts
def test_model_unchanged():
    net = build_mlp().train()
    net.net[0].eval()
    flags = [x.training for x in net.modules()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x, b = _inputs()
    grad_mode = torch.is_grad_enabled()
    cs.integrated_gradients(net, x, b, "net.2", target=0, steps=8)
    with pytest.raises(cs.InputError):
        cs.integrated_gradients(net, x, b, "net.2", target=99, steps=8)   # fails inside a run
    assert [x.training for x in net.modules()] == flags
    assert all(not x._forward_hooks and not x._forward_pre_hooks for x in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert torch.is_grad_enabled() == grad_mode


def test_result_round_trip_and_plots(tmp_path, gpt2):
    _, m, ids, corrupted = gpt2
    r = cs.integrated_gradients(m, ids[:1], corrupted[:1], cs.Site("layers.1", positions=[2, 5]), target=7,
                                steps=6)
    assert r.shape == (1, 2, 64) and r.coords["position"] == [2, 5]
    again = cs.IGResult.from_array(cs.load_result(r.save(tmp_path / "ig")))
    assert torch.equal(again.attributions, r.attributions) and again.meta == r.meta
    assert torch.equal(again.delta, r.delta) and again.site == "layers.1[pos=2,5]"
    fig = r.plot()
    assert len(fig.axes[0].patches) == 2
    x, b = _inputs()
    mlp = cs.integrated_gradients(build_mlp(), x, b, "net.0", target=0, steps=4)
    assert mlp.dims == ("input", "neuron")
    web = mlp.plot(backend="plotly")
    assert len(web.data) == 3 and web.layout.barmode == "group"


def test_bad_inputs():
    net = build_mlp()
    x, b = _inputs()

    def err(match, *args, **kw):
        with pytest.raises(cs.InputError, match=match):
            cs.integrated_gradients(net, *args, **kw)

    err("steps must be an int >= 1", x, b, "net.2", target=0, steps=0)
    err("needs steps >= 2", x, b, "net.2", target=0, steps=1, method="riemann_left")
    err("Unknown integration method 'simpson'", x, b, "net.2", target=0, method="simpson")
    err("attribute_to must be 'output' or 'input'", x, b, "net.2", target=0, attribute_to="inputs")
    err("not both", x, b, "net.2", target=0, metric=lambda y: y[:, 0])
    err("not a single value: pass target=", x, b, "net.2", steps=4)
    err("out of range", x, b, "net.2", target=4, steps=4)
    err("target has 2 entries for 3 inputs", x, b, "net.2", target=[0, 1])
    err("metric must return one value per row", x, b, "net.2", metric=lambda y: y.sum(), steps=4)
    err(r"baseline has 2 rows and the inputs 3", x, b[:2], "net.2", target=0)
    err(r"inputs are \(3, 16\), the baseline \(3, 8\)", x, b[:, :8], "net.2", target=0)
    with pytest.raises(cs.SiteError, match="Unknown site 'net.9'"):
        cs.integrated_gradients(net, x, b, "net.9", target=0)


def test_bad_lm_baseline(gpt2):
    _, m, ids, _ = gpt2
    with pytest.raises(cs.InputError, match="baseline has 5 tokens and the inputs 6"):
        cs.integrated_gradients(m, ids, "the dog ran by the", "layers.1", target=7)
    with pytest.raises(cs.InputError, match="pass target="):
        cs.integrated_gradients(m, ids, ids.flip(1), "layers.1", steps=2)


def test_segment_path_equals_full_model_path_on_rotary_models():
    """Llama / GPT-NeoX (rotary, own blocks): the segmented grad rows equal the whole-model rows that the
    same model wrapped as a plain module runs (module paths, no segment)."""
    for arch, path in [("llama", "model.layers"), ("gpt_neox", "gpt_neox.layers")]:
        model, tok = build_tiny_lm(arch)
        m, plain = cs.load(model, tok), cs.load(model, tok, generic=True)
        ids = m.adapter.tokenize(["the cat sat on the mat", "a dog ran by the tree"])
        bad = m.adapter.tokenize(["the dog ran on the tree", "a cat sat by the mat"])
        for site in ("1", "2.mlp"):
            seg = cs.integrated_gradients(m, ids, bad, f"layers.{site}", target=5, steps=6, chunk_size=5)
            full = cs.integrated_gradients(plain, {"input_ids": ids}, {"input_ids": bad}, f"{path}.{site}",
                                           target=5, steps=6)
            assert seg.meta["segment"] is not None and full.meta["segment"] is None
            torch.testing.assert_close(seg.attributions, full.attributions, atol=1e-5, rtol=0)


def test_transformer_lens_equals_captum():
    import warnings

    from conftest import hooked_transformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ht = hooked_transformer()
    g = torch.Generator().manual_seed(0)
    toks, bad = torch.randint(0, 50, (2, 7), generator=g), torch.randint(0, 50, (2, 7), generator=g)
    r = cs.integrated_gradients(ht, toks, bad, "layers.0", target=3, steps=10)
    ref, delta = _captum(lambda t: ht(t)[:, -1], ht.blocks[0].hook_resid_post, toks, bad, target=3, n_steps=10)
    torch.testing.assert_close(r.attributions, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(r.delta, delta.double(), atol=ATOL, rtol=0)
    z = cs.integrated_gradients(ht, toks, bad, "layers.1.attn.z", target=3, steps=4)
    assert z.dims == ("input", "position", "head", "d") and z.shape == (2, 7, 4, 8)
