"""Engine exactness: every result is compared with plain PyTorch (model output, register_forward_hook code)."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.zoo import build_mlp
from conftest import PROMPTS, hooked_transformer


def ids_of(m: cs.Model, prompts) -> torch.Tensor:
    return m.adapter.prepare(prompts).kwargs["input_ids"]


def hf_module_path(m: cs.Model, name: str) -> str:
    return m.adapter.aliases()[name][0]


# -- a run with no interventions is the model's own output ---------------------------------------------

def test_plain_run_equals_model_output_lm(lm):
    ids = ids_of(lm, PROMPTS)
    with torch.no_grad():
        ref = lm.module(input_ids=ids).logits
    assert torch.equal(lm.run(ids).output, ref)
    assert torch.equal(lm.run(PROMPTS).output, ref)


def test_plain_run_equals_model_output_mlp():
    net = build_mlp()
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x)
    assert torch.equal(cs.load(net).run(x).output, ref)


def test_plain_run_equals_model_output_hooked_transformer():
    ht = hooked_transformer()
    toks = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = ht(toks)
    m = cs.load(ht)
    assert m.adapter.kind == "transformer-lens"
    assert torch.equal(m.run(toks).output, ref)


def test_cache_equals_plain_hook_capture(lm):
    ids = ids_of(lm, PROMPTS)
    names = ["embed", "layers.0", "layers.1.attn", "layers.2.mlp", "final_norm"]
    seen = {}
    handles = [lm.module.get_submodule(hf_module_path(lm, n)).register_forward_hook(
        lambda mod, a, out, n=n: seen.__setitem__(n, out[0] if isinstance(out, tuple) else out)) for n in names]
    try:
        with torch.no_grad():
            lm.module(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    run = lm.run(ids, cache=names)
    for n in names:
        assert torch.equal(run.cache[n], seen[n]), n


def test_head_site_cache_is_out_proj_input_split_into_heads(gpt2):
    ids = ids_of(gpt2, PROMPTS[:1])
    seen = {}
    h = gpt2.module.transformer.h[1].attn.c_proj.register_forward_pre_hook(lambda mod, a: seen.setdefault("z", a[0]))
    try:
        with torch.no_grad():
            gpt2.module(input_ids=ids)
    finally:
        h.remove()
    z = seen["z"].unflatten(-1, (4, 16))
    run = gpt2.run(ids, cache=[cs.Site("layers.1.attn.z", heads=[2, 3]), cs.Site("layers.1.attn.z", heads=2, neurons=[0, 5])])
    assert torch.equal(run.cache["layers.1.attn.z[heads=2,3]"], z[:, :, [2, 3]])
    assert torch.equal(run.cache["layers.1.attn.z[heads=2, neurons=0,5]"], z[:, :, [2]][..., [0, 5]])


# -- K interventions as K batch rows == K single runs with plain hooks -----------------------------------

def _reference_patch(model, module_name, ids, fn):
    """One plain forward with a plain register_forward_hook that rewrites the module output with fn."""
    mod = model.get_submodule(module_name)

    def hook(m, a, out):
        if isinstance(out, tuple):
            return (fn(out[0].clone()), *out[1:])
        return fn(out.clone())

    h = mod.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(input_ids=ids).logits
    finally:
        h.remove()


def test_patch_rows_equal_single_hook_runs(lm):
    clean_ids, corrupt_ids = ids_of(lm, PROMPTS[0]), ids_of(lm, PROMPTS[1])
    names = ["layers.0", "layers.2", "layers.1.mlp", "layers.3.attn"]
    clean = lm.run(clean_ids, cache=names)
    rows, refs = [], []
    for n in names:
        for t in range(clean_ids.shape[1]):
            rows.append({cs.Site(n, positions=t): cs.Patch(clean)})

            def fn(x, t=t, n=n):
                x[:, t] = clean.cache[n][:, t]
                return x
            refs.append(_reference_patch(lm.module, hf_module_path(lm, n), corrupt_ids, fn))
    out = lm.run(corrupt_ids, rows).output
    assert out.shape[0] == len(rows)
    torch.testing.assert_close(out, torch.cat(refs), rtol=0, atol=1e-5)


def test_every_intervention_type_equals_hand_written_hook(gpt2):
    ids = ids_of(gpt2, PROMPTS[1])
    src_ids = ids_of(gpt2, PROMPTS)
    site = "layers.1"
    src = gpt2.run(src_ids, cache=[site])
    S = src.cache[site]
    g = torch.Generator().manual_seed(3)
    d = torch.randn(64, generator=g)
    v = torch.randn(2, 64, generator=g)
    B = torch.linalg.qr(torch.randn(64, 3, generator=g)).Q
    draws = torch.randn(1, 2, 64, generator=g)
    # Resample draws one source row per plan row from a generator seeded with its seed; it is plan row 6 of 10
    resample_row = int(torch.randint(3, (10,), generator=torch.Generator().manual_seed(7))[6])
    P = B @ B.T
    cases = [
        (cs.Set(v), lambda x: _at(x, [1, 4], v)),
        (cs.Patch(src, row=2), lambda x: _at(x, [1, 4], S[2, [1, 4]])),
        (cs.Add(d, 2.5), lambda x: _at(x, [1, 4], x[0, [1, 4]] + 2.5 * d)),
        (cs.Scale(3.0), lambda x: _at(x, [1, 4], x[0, [1, 4]] * 3.0)),
        (cs.Zero(), lambda x: _at(x, [1, 4], torch.zeros(2, 64))),
        (cs.Mean(src), lambda x: _at(x, [1, 4], S[:, [1, 4]].mean(0))),
        (cs.Resample(src, seed=7), lambda x: _at(x, [1, 4], S[resample_row, [1, 4]])),
        (cs.Noise(draws=draws), lambda x: _at(x, [1, 4], x[0, [1, 4]] + draws[0])),
        (cs.Project(B, keep="onto"), lambda x: _at(x, [1, 4], x[0, [1, 4]] @ P)),
        (cs.Project(B, keep="off"), lambda x: _at(x, [1, 4], x[0, [1, 4]] - x[0, [1, 4]] @ P)),
    ]
    rows = [{cs.Site(site, positions=[1, 4]): iv} for iv, _ in cases]
    out = gpt2.run(ids, rows).output
    for i, (iv, fn) in enumerate(cases):
        ref = _reference_patch(gpt2.module, "transformer.h.1", ids, fn)
        torch.testing.assert_close(out[i:i + 1], ref, rtol=0, atol=1e-5, msg=type(iv).__name__)


def _at(x, positions, value):
    x[:, positions] = value
    return x


def test_subspace_patch_changes_only_that_subspace(gpt2):
    ids_a, ids_b = ids_of(gpt2, PROMPTS[0]), ids_of(gpt2, PROMPTS[1])
    B = torch.linalg.qr(torch.randn(64, 2, generator=torch.Generator().manual_seed(0))).Q
    src = gpt2.run(ids_a, cache=["layers.0"])
    run = gpt2.run(ids_b, {cs.Site("layers.0", positions=3, basis=B): cs.Patch(src)}, cache=["layers.0"])
    base = gpt2.run(ids_b, cache=["layers.0"]).cache["layers.0"]
    got = run.cache["layers.0"][0, 3]
    want = base[0, 3] - base[0, 3] @ B @ B.T + src.cache["layers.0"][0, 3] @ B @ B.T
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.equal(run.cache["layers.0"][0, :3], base[0, :3])


def test_heads_and_neurons_write_only_their_slice(gpt2):
    ids = ids_of(gpt2, PROMPTS[0])
    site = cs.Site("layers.2.attn.z", positions=-1, heads=[1], neurons=[3, 7])

    def fn_pre(mod, args):
        z = args[0].clone().unflatten(-1, (4, 16))
        z[:, -1, 1, [3, 7]] = 0.0
        return (z.flatten(-2),)

    h = gpt2.module.transformer.h[2].attn.c_proj.register_forward_pre_hook(fn_pre)
    try:
        with torch.no_grad():
            ref = gpt2.module(input_ids=ids).logits
    finally:
        h.remove()
    assert torch.equal(gpt2.run(ids, {site: cs.Zero()}).output, ref)


def test_input_site_equals_pre_hook(mlp):
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))

    def pre(mod, args):
        y = args[0].clone()
        y[:, [0, 2]] *= -2.0
        return (y,)

    h = mlp.module.net[2].register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            ref = mlp.module(x)
    finally:
        h.remove()
    out = mlp.run(x, {cs.Site("net.2", io="input", neurons=[0, 2]): cs.Scale(-2.0)}).output
    assert torch.equal(out, ref)


def test_hooked_transformer_hook_points_and_heads():
    ht = hooked_transformer()
    toks = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    m = cs.load(ht)
    clean = m.run(toks[:1], cache=["blocks.1.hook_resid_pre", "layers.0.attn.z"])
    _, tl_cache = ht.run_with_cache(toks[:1])
    assert torch.equal(clean.cache["blocks.1.hook_resid_pre"], tl_cache["blocks.1.hook_resid_pre"])
    assert torch.equal(clean.cache["layers.0.attn.z"], tl_cache["blocks.0.attn.hook_z"])

    def hook(z, hook):
        z = z.clone()
        z[:, 2, 3] = 0.0
        return z
    ref = ht.run_with_hooks(toks[1:], fwd_hooks=[("blocks.0.attn.hook_z", hook)])
    out = m.run(toks[1:], {cs.Site("layers.0.attn.z", positions=2, heads=3): cs.Zero()}).output
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


# -- chunk size, determinism, per-input noise -----------------------------------------------------------

def test_results_independent_of_chunk_size(gpt2):
    ids = ids_of(gpt2, PROMPTS)
    src = gpt2.run(ids, cache=["layers.1", "layers.2.mlp"])
    rows = [{cs.Site("layers.1", positions=t % 6): cs.Patch(src), cs.Site("embed", positions=t % 3): cs.Noise(0.5, seed=1),
             cs.Site("layers.2.mlp", positions=(t + 1) % 6): cs.Resample(src, seed=4)} for t in range(9)]
    inputs = [t % 3 for t in range(9)]
    metric = lambda y: y[:, -1].log_softmax(-1)[:, :5]  # noqa: E731
    runs = [gpt2.run(ids, rows, input_index=inputs, metric=metric, chunk_size=c, cache=["layers.3"]) for c in (1, 2, 4, 9)]
    for r in runs[1:]:
        torch.testing.assert_close(r.metric, runs[0].metric, rtol=0, atol=1e-5)
        torch.testing.assert_close(r.cache["layers.3"], runs[0].cache["layers.3"], rtol=0, atol=1e-5)


def test_same_seed_same_noise_and_rows_sharing_an_input_share_the_draw(gpt2):
    ids = ids_of(gpt2, PROMPTS[:2])
    iv = cs.Noise(1.0, seed=5)
    r1 = gpt2.run(ids, [{"embed": iv}] * 4, input_index=[0, 1, 0, 1], cache=["embed"])
    r2 = gpt2.run(ids, [{"embed": cs.Noise(1.0, seed=5)}] * 4, input_index=[0, 1, 0, 1], cache=["embed"])
    e = r1.cache["embed"]
    assert torch.equal(e, r2.cache["embed"])
    assert torch.equal(e[0], e[2]) and not torch.equal(e[0], e[1])
    r3 = gpt2.run(ids, [{"embed": cs.Noise(1.0, seed=6)}] * 4, input_index=[0, 1, 0, 1], cache=["embed"])
    assert not torch.equal(e, r3.cache["embed"])


def test_patch_source_given_as_raw_input_runs_it_once(gpt2):
    a, b = ids_of(gpt2, PROMPTS[0]), ids_of(gpt2, PROMPTS[1])
    via_run = gpt2.run(b, {cs.Site("layers.1", positions=2): cs.Patch(gpt2.run(a, cache=["layers.1"]))}).output
    via_input = gpt2.run(b, {cs.Site("layers.1", positions=2): cs.Patch(a)}).output
    assert torch.equal(via_run, via_input)


# -- gradients with respect to activations ---------------------------------------------------------------

def test_activation_grads_equal_autograd_reference(gpt2):
    ids = ids_of(gpt2, PROMPTS[:2])
    metric = lambda y: y[:, -1, 5] - y[:, -1, 9]  # noqa: E731
    names = ["layers.0", "layers.2", "layers.1.mlp"]
    acts = {}

    def keep(n):
        def hook(mod, a, out):
            t = out[0] if isinstance(out, tuple) else out
            t.retain_grad()
            acts[n] = t
        return hook

    hs = [gpt2.module.get_submodule(hf_module_path(gpt2, n)).register_forward_hook(keep(n)) for n in names]
    try:
        emb = gpt2.module.transformer.wte(ids).detach().requires_grad_(True)
        logits = gpt2.module(inputs_embeds=emb).logits
        metric(logits).sum().backward()
    finally:
        for h in hs:
            h.remove()
        gpt2.module.zero_grad(set_to_none=True)
    run = gpt2.run(ids, grads=names, metric=metric, chunk_size=1)
    for n in names:
        torch.testing.assert_close(run.grads[n], acts[n].grad, rtol=1e-4, atol=1e-6, msg=n)
    assert all(p.grad is None for p in gpt2.module.parameters())


# -- segmented forward ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer,pos", [(0, 0), (1, 0), (2, 3), (3, 5), (4, 2)])
def test_segmented_forward_equals_full_forward(lm, layer, pos):
    ids = ids_of(lm, PROMPTS)
    with torch.no_grad():
        full = lm.module(input_ids=ids, use_cache=True)
    run = lm.run(ids, cache=[f"layers.{i}" for i in range(4)], keep_kv=True)
    h = lm.adapter.embed(ids) if layer == 0 else run.cache[f"layers.{layer - 1}"]
    h = h[:, pos:]
    out = lm.forward_from(h.detach(), layer=layer, pos=pos, past=run.kv)
    torch.testing.assert_close(out, full.logits[:, pos:], rtol=0, atol=1e-5)
    last = lm.forward_from(h.detach(), layer=layer, pos=pos, past=run.kv, last_only=True)
    torch.testing.assert_close(last[:, 0], full.logits[:, -1], rtol=0, atol=1e-5)


def test_segmented_forward_fires_engine_hooks_path_counts_blocks(gpt2):
    """forward_from runs exactly the blocks from `layer` on: count block calls with plain hooks."""
    ids = ids_of(gpt2, PROMPTS[0])
    calls = []
    hs = [blk.register_forward_hook(lambda m, a, o, i=i: calls.append((i, a[0].shape[1])))
          for i, blk in enumerate(gpt2.module.transformer.h)]
    try:
        run = gpt2.run(ids, cache=["layers.1"], keep_kv=True)
        calls.clear()
        gpt2.forward_from(run.cache["layers.1"][:, 4:], layer=2, pos=4, past=run.kv)
    finally:
        for h in hs:
            h.remove()
    assert calls == [(2, 2), (3, 2)]  # blocks 2 and 3 only, on the 2 positions from 4 on


@pytest.mark.parametrize("layer,pos", [(1, 0), (2, 3), (3, 4)])
def test_edits_inside_a_segmented_run_equal_the_full_run(lm, layer, pos):
    """Interventions at absolute positions >= pos inside forward_from equal the same edits in a full run."""
    base_ids, src_ids = ids_of(lm, PROMPTS[1]), ids_of(lm, PROMPTS[0])
    src = lm.run(src_ids, cache=["layers.2", "layers.3.mlp"])
    base = lm.run(base_ids, cache=[f"layers.{layer - 1}"], keep_kv=True)
    rows = [
        {cs.Site("layers.3.mlp", positions=[pos, 5]): cs.Patch(src)},
        {cs.Site("layers.3", positions=5): cs.Zero(), cs.Site("layers.3.mlp", positions=slice(pos, None)): cs.Scale(2.0)},
        {cs.Site("layers.3.attn.z", positions=-1, heads=1): cs.Zero()},
    ]
    if layer <= 2:
        rows.append({cs.Site("layers.2", positions=pos): cs.Patch(src)})
    full = lm.run(base_ids, rows).output[:, pos:]
    seg = lm.adapter.segment(base.cache[f"layers.{layer - 1}"][:, pos:], layer=layer, pos=pos, past=base.kv)
    got = lm.run(seg, rows, chunk_size=2).output
    torch.testing.assert_close(got, full, rtol=0, atol=1e-5)


def test_segmented_run_rejects_positions_before_the_segment(gpt2):
    ids = ids_of(gpt2, PROMPTS[0])
    base = gpt2.run(ids, cache=["layers.0"], keep_kv=True)
    seg = gpt2.adapter.segment(base.cache["layers.0"][:, 3:], layer=1, pos=3, past=base.kv)
    with pytest.raises(cs.SiteError, match="before the segment"):
        gpt2.run(seg, {cs.Site("layers.2", positions=1): cs.Zero()})


def test_a_site_that_never_runs_is_an_error_not_a_silent_no_op(gpt2):
    ids = ids_of(gpt2, PROMPTS[0])
    base = gpt2.run(ids, cache=["layers.1"], keep_kv=True)
    seg = gpt2.adapter.segment(base.cache["layers.1"], layer=2, pos=0, past=base.kv)
    with pytest.raises(cs.SiteError, match="did not run"):
        gpt2.run(seg, {cs.Site("layers.0.mlp"): cs.Zero()})
    with pytest.raises(cs.SiteError, match="did not run"):
        gpt2.run(seg, cache=["layers.1"])


def test_token_layer_count_equals_block_calls_counted_with_plain_hooks(lm):
    ids = ids_of(lm, PROMPTS)
    blocks = lm.adapter.layers
    counted = []
    hs = [b.register_forward_hook(lambda m, a, o: counted.append(
        (a[0] if a else None).shape[0] * (a[0] if a else None).shape[1])) for b in blocks]
    try:
        base = lm.run(ids, cache=["layers.0"], keep_kv=True, chunk_size=2)
        full_count = sum(counted)
        counted.clear()
        seg = lm.adapter.segment(base.cache["layers.0"][:, 2:], layer=1, pos=2, past=base.kv)
        rows = [{cs.Site("layers.2", positions=t): cs.Zero()} for t in range(2, 6)]
        run = lm.run(seg, rows, input_index=[0, 1, 2, 0], chunk_size=3)
        seg_count = sum(counted)
    finally:
        for h in hs:
            h.remove()
    assert base.meta["token_layers"] == full_count == 4 * 6 * 3
    assert run.meta["token_layers"] == seg_count == 3 * 4 * 4  # blocks 1..3, positions 2..5, 4 rows


def test_input_index_without_edits_and_cache_lookup_by_site(gpt2):
    ids = ids_of(gpt2, PROMPTS[:2])
    site = cs.Site("layers.0", positions=1)
    r = gpt2.run(ids, input_index=[0, 0, 1], cache=[site])
    with torch.no_grad():
        ref = gpt2.module(input_ids=ids[[0, 0, 1]]).logits
    assert torch.equal(r.output, ref)
    assert site in r.cache and r.cache[site].shape == (3, 1, 64)


def test_hooked_transformer_tokens_and_unique_site_names():
    from transformers import PreTrainedTokenizerFast  # noqa: F401
    m = cs.load(hooked_transformer())
    names = m.site_names()
    assert len(names) == len(set(names))
    assert {"layers.0", "blocks.0.hook_resid_pre", "embed"} <= set(names)


def test_activation_whose_dim0_is_not_the_batch_is_refused():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.att = torch.nn.MultiheadAttention(8, 2)  # expects (T, B, d)

        def forward(self, x):
            y = x.transpose(0, 1)
            return self.att(y, y, y)[0].transpose(0, 1)

    with pytest.raises(cs.SiteError, match="dim 0 is not the batch"):
        cs.load(Net()).run(torch.randn(3, 5, 8), cache=["att"])


def test_hooks_are_registered_once_per_run_not_per_row(gpt2, monkeypatch):
    ids = ids_of(gpt2, PROMPTS[0])
    calls = []
    orig = torch.nn.Module.register_forward_hook

    def counting(self, *a, **k):
        calls.append(self)
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.nn.Module, "register_forward_hook", counting)
    clean = gpt2.run(ids, cache=["layers.1"])
    calls.clear()
    rows = [{cs.Site("layers.1", positions=t % 6): cs.Patch(clean)} for t in range(60)]
    gpt2.run(ids, rows, chunk_size=7)
    assert len(calls) == 1  # one module touched, 60 rows in 9 chunks: one registration


@pytest.mark.parametrize("pos", [4, (3, 5), -1, slice(3, 6), range(4, 6)])
def test_cached_positions_in_a_segment_are_absolute(lm, pos):
    """A cache site's positions name the same tokens in a segmented run as in a full run."""
    ids = ids_of(lm, PROMPTS[0])
    base = lm.run(ids, cache=["layers.1"], keep_kv=True)
    seg = lm.adapter.segment(base.cache["layers.1"][:, 3:], layer=2, pos=3, past=base.kv)
    site = cs.Site("layers.2", positions=pos)
    part = lm.run(seg, cache=[site]).cache[site.name]
    full = lm.run(ids, cache=[site]).cache[site.name]
    assert part.shape == full.shape
    torch.testing.assert_close(part, full, atol=1e-5, rtol=0)


def test_metric_with_takes_input_index_sees_each_rows_input(mlp):
    """A metric flagged takes_input_index gets each row's base-input index, chunk by chunk."""
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    index = [2, 0, 1, 1, 2, 0, 0]
    seen = []

    def metric(y, rows):
        seen.append(rows.clone())
        return y[:, 0] + 1000 * rows.to(y.dtype)
    metric.takes_input_index = True
    run = mlp.run(x, [{} for _ in index], input_index=index, metric=metric, chunk_size=3)
    assert torch.equal(torch.cat(seen), torch.tensor(index))
    plain = mlp.run(x).output[:, 0]
    torch.testing.assert_close(run.metric, plain[index] + 1000 * torch.tensor(index, dtype=torch.float32))


def test_deferred_finite_check_names_the_failing_intervention():
    """On an accelerator the engine checks interventions for NaN / inf once after the forward (a flag read
    mid-pass would stall the device); the check must still name the intervention that produced them."""
    from types import SimpleNamespace

    from causalscope.core._engine_ops import check_finite as _check_finite

    ok = SimpleNamespace(intervention=cs.Zero(), site=cs.Site("layers.0"))
    bad = SimpleNamespace(intervention=cs.Scale(2.0), site=cs.Site("layers.1.mlp"))
    state = {"finite": [(torch.tensor(True), ok), (torch.tensor(False), bad)]}
    with pytest.raises(cs.InterventionError, match=r"Scale at 'layers.1.mlp' produced NaN or inf"):
        _check_finite(state["finite"])
    state = {"finite": [(torch.tensor(True), ok)]}
    _check_finite(state["finite"])
    assert state["finite"] == []


def test_plan_is_a_dry_run_that_shows_the_grouping(gpt2):
    """Model.plan compiles a plan without running the model: an L x T sweep of one intervention is L ops of T
    rows (one per module), mixing intervention kinds at one module makes one op per kind, input sites are
    named as such; the reference is the grouping rule written out by hand."""
    calls = []
    h = gpt2.module.register_forward_hook(lambda *a: calls.append(1))
    try:
        rows = [{cs.Site(f"layers.{l}", positions=t): cs.Zero()} for l in range(4) for t in range(6)]
        paths = [gpt2.adapter.resolve(cs.Site(f"layers.{l}")).path for l in range(4)]
        assert gpt2.plan("the cat sat on the mat", rows) == {p: [6] for p in paths}
        mixed = [{cs.Site("layers.1", positions=t): cs.Zero() if t % 2 else cs.Scale(2.0)} for t in range(6)]
        assert gpt2.plan("the cat sat on the mat", mixed) == {paths[1]: [3, 3]}
        inp = gpt2.plan("the cat sat on the mat", {cs.Site("layers.2", io="input", positions=0): cs.Zero()})
        assert inp == {f"{paths[2]} (input)": [1]}
        with pytest.raises(cs.SiteError):
            gpt2.plan("the cat sat on the mat", {cs.Site("layers.9"): cs.Zero()})
    finally:
        h.remove()
    assert calls == []


def test_overflow_downstream_of_the_edit_raises_naming_the_intervention(gpt2):
    """Scale(1e30) writes finite values at layers.1, but the next layer norm overflows: the pass's output holds
    NaN / inf. The engine raises and names the edit (a plain-hook reference shows the output really is NaN)."""
    ids = ids_of(gpt2, PROMPTS)
    h = gpt2.module.transformer.h[1].register_forward_hook(
        lambda mod, a, o: (o[0] * 1e30, *o[1:]) if isinstance(o, tuple) else o * 1e30)
    try:
        with torch.no_grad():
            ref = gpt2.module(input_ids=ids).logits
    finally:
        h.remove()
    assert not bool(torch.isfinite(ref).all())  # the overflow is real, downstream of the (finite) edit
    rows = [{}, {cs.Site("layers.1"): cs.Scale(1e30)}, {}]
    with pytest.raises(cs.InterventionError, match=r"output of plan row 1 is NaN or inf after Scale at 'layers\.1'"):
        gpt2.run(ids[:1], rows)
    with pytest.raises(cs.InterventionError, match=r"metric of plan row 0 is NaN or inf after Add at 'layers\.0'"):
        gpt2.run(ids[:1], {cs.Site("layers.0"): cs.Add(torch.tensor(1.0))},
                 metric=lambda y: torch.full((y.shape[0],), float("nan")))
    # chunked the same way: the row is named by its plan index, whatever the chunk
    with pytest.raises(cs.InterventionError, match="plan row 1 "):
        gpt2.run(ids[:1], rows, chunk_size=1)


def test_a_plain_run_returns_the_models_own_non_finite_output():
    """No intervention: the run reproduces the model's output exactly, NaN included (nothing to blame)."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with torch.no_grad():
        net[0].bias.fill_(float("inf"))
    m = cs.load(net)
    x = torch.ones(2, 3)
    out = m.run(x).output
    assert bool(torch.isinf(out).all()) and torch.equal(out, net(x).detach())
