"""Dict inputs (``{"input_ids": ..., "attention_mask": ...}`` and other keyword tensors) give every method the
same numbers as plain token tensors; keyword inputs a segmented schedule cannot reproduce (position ids) fall
back to full forwards and equal a naive hook loop; a padding mask is refused by the methods that cannot handle
it yet, and honoured along the whole path by integrated gradients (equal to the same prompt unpadded)."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import causalscope as cs
from causalscope.zoo import build_tiny_lm
from plain_hooks import hook

CLEAN = ["the old king saw a river near the city", "a big red car ran by the house near"]
CORRUPTED = ["the old dog saw a river near the city", "a big red cat ran by the house near"]
CORRECT, WRONG = [25, 26], [65, 33]


@functools.cache
def _lm(arch: str) -> tuple[nn.Module, object]:
    return build_tiny_lm(arch, init_std=0.3)


def sharp(arch: str) -> cs.Model:
    model, tok = _lm(arch)
    return cs.load(model, tok, name=f"sharp-{arch}")


def pair(m: cs.Model) -> tuple[torch.Tensor, torch.Tensor]:
    return m.adapter.tokenize(CLEAN), m.adapter.tokenize(CORRUPTED)


#: one answer pair per prompt; the library metric reads each row's prompt, so full-forward rows pick theirs
metric = cs.logit_diff(CORRECT, WRONG)


def ref_metric(y: torch.Tensor) -> torch.Tensor:
    """The same metric written out, for the naive loop (one row per prompt)."""
    rows = torch.arange(y.shape[0])
    return y[rows, -1, torch.tensor(CORRECT)] - y[rows, -1, torch.tensor(WRONG)]


def as_dict(ids: torch.Tensor, mask: bool) -> dict:
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if mask else {"input_ids": ids}


def same(got: torch.Tensor, want: torch.Tensor, exact: bool) -> None:
    if exact:
        assert torch.equal(got, want), (got - want).abs().max()
    else:
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6, equal_nan=True)


# ---------------------------------------------------------------------------------------------------------
# activation patching, attribution patching, mediation: dict == tensor
# ---------------------------------------------------------------------------------------------------------
def test_the_issue_example_on_tiny_gpt2():
    m = cs.load("tiny-gpt2")
    c, k = m.adapter.tokenize("the cat sat on the mat"), m.adapter.tokenize("the dog sat on the mat")
    want = cs.activation_patching(m, c, k, ["layers.1"], cs.logit(5))
    got = cs.activation_patching(m, {"input_ids": c}, {"input_ids": k}, ["layers.1"], cs.logit(5))
    assert torch.equal(got.values, want.values) and torch.equal(got.raw.values, want.raw.values)
    torch.testing.assert_close(got.values, torch.ones(2, 1))  # the whole block output carries everything


@pytest.mark.parametrize("mask", [False, True], ids=["ids", "ids+mask"])
@pytest.mark.parametrize("sites", ["resid_pre", "layer-list", "per-position"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_activation_patching_dict_equals_tensor(arch, sites, mask):
    m = sharp(arch)
    c, k = pair(m)
    s = {"resid_pre": "resid_pre", "per-position": cs.Site("layers.2"),
         "layer-list": [f"layers.{i}" for i in range(m.n_layers)] + ["layers.2.mlp", "layers.1.attn"]}[sites]
    per = "position" if sites == "per-position" else None
    want = cs.activation_patching(m, c, k, s, metric, direction="both", per=per, schedule="floor")
    got = cs.activation_patching(m, as_dict(c, mask), as_dict(k, mask), s, metric, direction="both", per=per,
                                 schedule="floor")
    assert got.meta["fast_path"] and got.meta["first_difference"] == want.meta["first_difference"] == 2
    assert got.dims == want.dims and got.coords == want.coords
    same(got.values, want.values, exact=not mask)
    same(got.raw.values, want.raw.values, exact=not mask)


def _naive_resid_pre(m: cs.Model, base: dict, source: dict) -> torch.Tensor:
    """Denoise raw values of the resid_pre grid, one forward per cell with plain hooks, the dicts as kwargs."""
    layers = m.module.model.layers
    box: dict[int, torch.Tensor] = {}
    hs = [hook(layers[i], "input", lambda x, i=i: box.__setitem__(i, x.detach().clone())) for i in range(len(layers))]
    with torch.no_grad():
        m.module(**source, use_cache=False)
    for h in hs:
        h.remove()
    T = source["input_ids"].shape[1]
    out = torch.zeros(len(layers), T)
    for i in range(len(layers)):
        for t in range(T):
            def write(x, i=i, t=t):
                y = x.clone()
                y[:, t] = box[i][:, t]
                return y
            h = hook(layers[i], "input", write)
            with torch.no_grad():
                out[i, t] = ref_metric(m.module(**base, use_cache=False).logits).mean()
            h.remove()
    return out


def test_position_ids_in_a_dict_run_full_forwards_and_equal_a_naive_loop():
    """Llama applies rotary positions in every block and reads packed documents from them: the staircase would
    rebuild default positions and one causal mask, so a dict with its own position_ids runs full forwards
    (fast_path False) and equals the hook loop on those kwargs."""
    m = sharp("llama")
    c, k = pair(m)
    # two packed documents per row (tokens 0-1 and 2-8): transformers masks across them, from the position ids
    pos = torch.tensor([[0, 1, 0, 1, 2, 3, 4, 5, 6]]).expand(2, -1)
    clean, corr = {"input_ids": c, "position_ids": pos}, {"input_ids": k, "position_ids": pos}
    r = cs.activation_patching(m, clean, corr, "resid_pre", metric, direction="denoise")
    assert not r.meta["fast_path"]
    torch.testing.assert_close(r.raw.values[0], _naive_resid_pre(m, corr, clean), atol=1e-5, rtol=0)
    plain = cs.activation_patching(m, c, k, "resid_pre", metric, direction="denoise")
    assert not torch.allclose(r.raw.values, plain.raw.values, atol=1e-3)  # the positions matter here


@pytest.mark.parametrize("mask", [False, True], ids=["ids", "ids+mask"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_attribution_patching_dict_equals_tensor(arch, mask):
    m = sharp(arch)
    c, k = pair(m)
    for sites in ("resid_pre", ["layers.1", "layers.2.mlp"]):
        want = cs.attribution_patching(m, c, k, sites, metric, direction="both")
        got = cs.attribution_patching(m, as_dict(c, mask), as_dict(k, mask), sites, metric, direction="both")
        assert got.coords == want.coords
        same(got.values, want.values, exact=not mask)


@pytest.mark.parametrize("mask", [False, True], ids=["ids", "ids+mask"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_mediation_dict_equals_tensor(arch, mask):
    m = sharp(arch)
    c, k = pair(m)
    for sites in ("resid_pre", [f"layers.{i}" for i in range(m.n_layers)]):
        want = cs.mediation(m, (c, k), sites, metric=metric, n_boot=20, schedule="floor")
        got = cs.mediation(m, (as_dict(c, mask), as_dict(k, mask)), sites, metric=metric, n_boot=20,
                           schedule="floor")
        assert got.meta["fast_path"] and got.coords == want.coords
        same(got.values, want.values, exact=not mask)
    # a whole block output carries everything: NIE of the last layer is the total effect (it was 0 for dicts)
    nie = got.sel(site=f"layers.{m.n_layers - 1}", stat="NIE", value="mean").values
    te = got.sel(site=f"layers.{m.n_layers - 1}", stat="TE", value="mean").values
    assert abs(float(te)) > 0.1
    torch.testing.assert_close(nie, te, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# padding: refused where not handled
# ---------------------------------------------------------------------------------------------------------
def _padded(ids: torch.Tensor) -> dict:
    mask = torch.ones_like(ids)
    mask[0, -1] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("method", ["activation_patching", "attribution_patching", "mediation"])
def test_a_padding_mask_is_refused_with_the_fix(method):
    m = sharp("gpt2")
    c, k = pair(m)
    call = {"activation_patching": lambda cl, co: cs.activation_patching(m, cl, co, "resid_pre", metric),
            "attribution_patching": lambda cl, co: cs.attribution_patching(m, cl, co, "resid_pre", metric),
            "mediation": lambda cl, co: cs.mediation(m, (cl, co), "resid_pre", metric=metric, n_boot=5)}[method]
    for cl, co, which in ((_padded(c), as_dict(k, True), "clean"), (as_dict(c, True), _padded(k), "corrupted")):
        with pytest.raises(cs.InputError) as e:
            call(cl, co)
        msg = str(e.value)
        assert method in msg and "padd" in msg and "attention_mask" in msg and "unpadded" in msg and which in msg


def test_clean_and_corrupted_dicts_of_different_shapes_are_refused():
    m = sharp("gpt2")
    c, k = pair(m)
    with pytest.raises(cs.InputError, match="same shape"):
        cs.activation_patching(m, {"input_ids": c}, {"input_ids": k[:, :-1]}, "resid_pre", metric)
    with pytest.raises(cs.InputError, match="same shape"):
        cs.activation_patching(m, {"input_ids": c}, {"input_ids": k[:1]}, ["layers.1"], metric)


# ---------------------------------------------------------------------------------------------------------
# integrated gradients: the mask holds along the whole path
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_integrated_gradients_dict_with_an_all_ones_mask_equals_tensor(arch):
    m = sharp(arch)
    c, k = pair(m)
    want = cs.integrated_gradients(m, c, k, "layers.1", target=7, steps=64)
    for x, b in (({"input_ids": c}, {"input_ids": k}), (as_dict(c, True), as_dict(k, True))):
        got = cs.integrated_gradients(m, x, b, "layers.1", target=7, steps=64)
        same(got.attributions, want.attributions, exact=False)
        assert max(abs(d) for d in got.meta["delta"]) < 1e-4


def _ragged(c: torch.Tensor, n_real: tuple[int, int]) -> dict:
    """Row i keeps its first n_real[i] tokens, then padding (token 0, masked), on the right."""
    ids, mask = c.clone(), torch.ones_like(c)
    for i, n in enumerate(n_real):
        ids[i, n:], mask[i, n:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_integrated_gradients_honours_a_padding_mask(arch):
    """Prompts padded on the right get the attributions of each prompt alone at their real positions, 0 at the
    padding, and completeness holds (delta ~0): the mask holds on every run of the path."""
    m = sharp(arch)
    c, k = pair(m)
    n_real = (6, 9)
    x, b = _ragged(c, n_real), _ragged(k, n_real)
    for site in ("layers.1", "layers.2.mlp"):
        got = cs.integrated_gradients(m, x, b, site, target=7, steps=64)
        # completeness along the path (the block output carries everything: also against the baseline)
        assert max(abs(d) for d in got.meta["path_delta" if site.endswith("mlp") else "delta"]) < 1e-4
        for i, n in enumerate(n_real):
            want = cs.integrated_gradients(m, c[i:i + 1, :n], k[i:i + 1, :n], site, target=7, steps=64)
            torch.testing.assert_close(got.attributions[i, :n], want.attributions[0], atol=1e-5, rtol=1e-5)
            assert torch.equal(got.attributions[i, n:], torch.zeros_like(got.attributions[i, n:]))
            for key in ("f_inputs", "f_baseline", "f_path_start", "delta"):
                assert abs(got.meta[key][i] - want.meta[key][0]) < 1e-5, key
    # a zero baseline keeps the mask: the same as each prompt's own zero baseline
    z = cs.integrated_gradients(m, x, None, "layers.1", target=7, steps=16)
    for i, n in enumerate(n_real):
        z0 = cs.integrated_gradients(m, c[i:i + 1, :n], None, "layers.1", target=7, steps=16)
        scale = float(z0.attributions.abs().max())
        torch.testing.assert_close(z.attributions[i, :n], z0.attributions[0], atol=1e-5 * scale, rtol=1e-5)
        for key in ("f_baseline", "delta", "path_delta"):
            assert abs(z.meta[key][i] - z0.meta[key][0]) < 1e-5 * max(1.0, scale), key


def test_integrated_gradients_metric_on_padded_inputs_takes_lengths():
    m = sharp("gpt2")
    c, k = pair(m)
    x, b = _ragged(c, (6, 9)), _ragged(k, (6, 9))
    by_target = cs.integrated_gradients(m, x, b, "layers.1", target=7, steps=16)

    def at_last(y, lengths):
        return y[torch.arange(len(y)), lengths - 1, 7]
    by_metric = cs.integrated_gradients(m, x, b, "layers.1", metric=at_last, steps=16)
    assert torch.equal(by_metric.attributions, by_target.attributions)
    with pytest.raises(cs.InputError, match="padded.*lengths"):
        cs.integrated_gradients(m, x, b, "layers.1", metric=lambda y: y[:, -1, 7], steps=16)


# ---------------------------------------------------------------------------------------------------------
# the other methods that take model inputs: dict == tensor
# ---------------------------------------------------------------------------------------------------------
def _token_causal_model(as_dicts: bool) -> cs.CausalModel:
    """Y = A over token inputs (A, B): two-token prompts for a tiny LM, encoded as ids or as a dict."""
    words = list(range(3, 8))

    def encode(v: dict) -> object:
        ids = torch.tensor([list(r) for r in zip(v["A"], v["B"])], dtype=torch.long)
        return as_dict(ids, True) if as_dicts else ids
    return cs.CausalModel(parents={"A": [], "B": [], "Y": ["A"]}, mechanisms={"Y": lambda a: a},
                          values={"A": words, "B": words, "Y": words}, encode=encode)


def _five_logits(y: torch.Tensor) -> torch.Tensor:
    return y[:, -1, 3:8]


def test_abstraction_methods_dict_equal_tensor():
    m = sharp("gpt2")
    cms = [_token_causal_model(False), _token_causal_model(True)]
    iia = [cs.abstraction_iia(m, cm, {"A": cs.Site("layers.1", positions=0)}, n=40, metric=_five_logits,
                              n_boot=20) for cm in cms]
    same(iia[1].values, iia[0].values, exact=False)
    grid = [cs.alignment_search(m, cm, "A", ["layers.0"], n=30, metric=_five_logits, n_boot=10) for cm in cms]
    same(grid[1].values, grid[0].values, exact=False)
    das = [cs.das(m, cm, "A", cs.Site("layers.1", positions=0), k=2, n_train=32, n_test=16, epochs=2,
                  batch_size=16, refine=0, metric=_five_logits, n_boot=10) for cm in cms]
    torch.testing.assert_close(das[1].basis, das[0].basis, atol=1e-5, rtol=0)
    assert das[1].test_iia == das[0].test_iia


def test_directions_methods_dict_equal_tensor():
    m = sharp("gpt2")
    c, k = pair(m)
    ids = torch.cat([c, k, c.flip(1), k.flip(1)])
    labels = [0, 1, 0, 1, 0, 1, 0, 1]
    site = cs.Site("layers.2", positions=-1)
    for x in ({"input_ids": ids}, as_dict(ids, True)):
        want = cs.class_directions(m, (ids, labels), site)
        got = cs.class_directions(m, (x, labels), site)
        same(got.values, want.values, exact=False)
        d = want.direction(1)
        s_want = cs.steer(m, ids, site, d, (0.0, 1.0, 3.0), target=CORRECT[0])
        s_got = cs.steer(m, x, site, d, (0.0, 1.0, 3.0), target=CORRECT[0])
        same(s_got.values, s_want.values, exact=False)
        p_want = cs.probe(m, ids, [site, cs.Site("layers.0", positions=-1)], labels=labels, control=None)
        p_got = cs.probe(m, x, [site, cs.Site("layers.0", positions=-1)], labels=labels, control=None)
        same(p_got.values, p_want.values, exact=False)
