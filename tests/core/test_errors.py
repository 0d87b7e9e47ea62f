"""Bad inputs: each raises the right causalscope error type with a message that names the problem.

Every case asserts the exact error class (a leaf of ``CausalScopeError``, itself a ``ValueError``) and a
regex over the message. Errors the user's own code raises (model forward, metric, custom intervention)
must come through unchanged.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import causalscope as cs
from causalscope import (
    Add,
    CausalScopeError,
    InputError,
    Intervention,
    InterventionError,
    Mean,
    Noise,
    Patch,
    PlanError,
    Project,
    Resample,
    Scale,
    Set,
    Site,
    SiteError,
    Zero,
)
from causalscope.zoo import build_mlp, build_tiny_lm
from conftest import LM_ARCHS, hooked_transformer

P6 = "the cat sat on the mat"  # 6 tokens
P3 = "the cat sat"  # 3 tokens
P6B = "a dog ran by the tree"  # 6 tokens
NAN = float("nan")
INF = float("inf")


# Models are only read by these tests (test_model_unchanged checks that errors leave them intact), so one
# instance per module keeps the file fast.
@pytest.fixture(scope="module")
def G() -> cs.Model:
    return cs.load(*build_tiny_lm("gpt2"), name="tiny-gpt2")


@pytest.fixture(scope="module")
def M() -> cs.Model:
    return cs.load(build_mlp())


@pytest.fixture(scope="module")
def TL() -> cs.Model:
    return cs.load(hooked_transformer())


def x2(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 16, generator=torch.Generator().manual_seed(0))


def qr(d: int, k: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(1))).Q


# ---------------------------------------------------------------------------------------------------------
# The table: (id, model fixture or None, call, error type, message regex)
# ---------------------------------------------------------------------------------------------------------
CASES = [
    # -- sites ------------------------------------------------------------------------------------------
    ("unknown-site-edit", "G", lambda g: g.run(P6, {"layers.1.mlpp": Zero()}),
     SiteError, r"Unknown site 'layers\.1\.mlpp'.*Closest valid names: .*'layers\.1\.mlp'"),
    ("unknown-site-cache", "G", lambda g: g.run(P6, cache=["layers.9"]),
     SiteError, r"Unknown site 'layers\.9'.*Closest valid names: 'layers\.\d'"),
    ("unknown-site-grads", "G", lambda g: g.run(P6, grads=["layrs.0"], metric=lambda y: y[:, -1, 0]),
     SiteError, r"Unknown site 'layrs\.0'.*'layers\.0'"),
    ("unknown-site-module-path", "M", lambda m: m.run(x2(), {"net.22": Zero()}),
     SiteError, r"Unknown site 'net\.22'.*Closest valid names: .*'net\.2'.*site_names\(\)"),
    ("site-not-a-name", "G", lambda g: g.run(P6, {3: Zero()}),
     SiteError, r"Expected a Site or a module name, got int"),
    ("site-empty-name", None, lambda _: Site(""),
     SiteError, r"Site module must be a non-empty string"),
    ("position-out-of-range", "G", lambda g: g.run(P6, {Site("layers.1", positions=10): Zero()}),
     SiteError, r"positions \[10\] are out of range for 6 tokens \(valid: -6 \.\. 5\)"),
    ("negative-position-out-of-range", "G", lambda g: g.run(P6, cache=[Site("layers.1", positions=[0, -7])]),
     SiteError, r"positions \[-7\] are out of range for 6 tokens"),
    ("neuron-out-of-range", "G", lambda g: g.run(P6, {Site("layers.1.mlp", neurons=[3, 64]): Zero()}),
     SiteError, r"neurons \[64\] out of range \(size 64: 0 \.\. 63\)"),
    ("head-out-of-range", "G", lambda g: g.run(P6, {Site("layers.1.attn.z", heads=[4]): Zero()}),
     SiteError, r"heads \[4\] out of range \(the site has 4 heads: 0 \.\. 3\)"),
    ("head-out-of-range-tl", "TL", lambda t: t.run(torch.tensor([[1, 2, 3]]), {Site("layers.0.attn.z", heads=[7]): Zero()}),
     SiteError, r"heads \[7\] out of range \(the site has 4 heads"),
    ("heads-on-generic-module", "M", lambda m: m.run(x2(), {Site("net.0", heads=[0]): Zero()}),
     SiteError, r"selects heads, but causalscope does not know how many heads 'net\.0' has\. Pass n_heads="),
    ("heads-on-hf-mlp", "G", lambda g: g.run(P6, {Site("layers.1.mlp", heads=[0]): Zero()}),
     SiteError, r"does not know how many heads 'transformer\.h\.1\.mlp' has"),
    ("n_heads-does-not-divide-2d", "M", lambda m: m.run(x2(), {Site("net.0", heads=[0], n_heads=5): Zero()}),
     SiteError, r"last dimension 32 does not split into 5 heads"),
    ("n_heads-does-not-divide-3d", "G", lambda g: g.run(P6, {Site("layers.0", heads=[0], n_heads=5): Zero()}),
     SiteError, r"last dimension 64 does not split into 5 heads"),
    ("n_heads-zero", None, lambda _: Site("net.0", heads=[0], n_heads=0),
     SiteError, r"n_heads must be a positive int, got 0"),
    ("io-sideways", None, lambda _: Site("layers.1", io="sideways"),
     SiteError, r"io must be 'output' or 'input', got 'sideways'"),
    ("positions-on-2d-activation", "M", lambda m: m.run(x2(), {Site("net.0", positions=[0]): Zero()}),
     SiteError, r"selects positions, but the activation is \(2, 32\)"),
    ("positions-on-2d-activation-cache", "M", lambda m: m.run(x2(), cache=[Site("net.2", positions=0)]),
     SiteError, r"selects positions, but the activation is \(2, 32\)"),
    ("positions-on-2d-activation-grads", "M", lambda m: m.run(x2(), grads=[Site("net.0", positions=[1])],
                                                             metric=lambda y: y[:, 0]),
     SiteError, r"selects positions, but the activation is \(2, 32\)"),
    ("cache-position-out-of-range-generic", "M", lambda m: m.run(torch.zeros(2, 3, 16), cache=[Site("net.0", positions=5)]),
     SiteError, r"positions out of range for 3 positions \(got 5 \.\. 5; valid -3 \.\. 2\)"),
    ("cache-neuron-out-of-range", "G", lambda g: g.run(P6, cache=[Site("layers.1", neurons=[99])]),
     SiteError, r"neurons \[99\] out of range \(size 64: 0 \.\. 63\)"),
    ("grads-head-out-of-range", "G", lambda g: g.run(P6, grads=[Site("layers.1.attn.z", heads=[9])],
                                                     metric=lambda y: y[:, -1, 0]),
     SiteError, r"heads \[9\] out of range \(the site has 4 heads"),
    ("cache-basis-wrong-dimension", "G", lambda g: g.run(P6, cache=[Site("layers.1", basis=qr(8, 2))]),
     SiteError, r"basis is \(8, 2\) but the activation's last dimension is 64"),
    ("duplicate-positions", None, lambda _: Site("layers.1", positions=[1, 1]),
     SiteError, r"positions repeat an index \(\[1, 1\]\)"),
    ("duplicate-neurons", None, lambda _: Site("layers.1", neurons=[4, 2, 4]),
     SiteError, r"neurons repeat an index \(\[4, 2, 4\]\)"),
    ("empty-positions", None, lambda _: Site("layers.1", positions=[]),
     SiteError, r"positions is empty"),
    ("bool-position", None, lambda _: Site("layers.1", positions=True),
     SiteError, r"positions must be ints, got a bool"),
    ("float-neuron", None, lambda _: Site("layers.1", neurons=[1.5]),
     SiteError, r"neurons must be ints; got \[1\.5\]"),
    ("string-positions", None, lambda _: Site("layers.1", positions="last"),
     SiteError, r"positions must be an int, a list of ints, a range or a slice; got 'last'"),
    # -- subspaces --------------------------------------------------------------------------------------
    ("basis-not-orthonormal", None, lambda _: Site("layers.1", basis=torch.ones(64, 2)),
     SiteError, r"basis columns are not orthonormal.*torch\.linalg\.qr"),
    ("basis-wrong-dimension", "G", lambda g: g.run(P6, {Site("layers.1", basis=qr(32, 2)): Zero()}),
     SiteError, r"basis is \(32, 2\) but the activation's last dimension is 64"),
    ("basis-1d", None, lambda _: Site("layers.1", basis=torch.ones(64)),
     SiteError, r"basis must be a float tensor shaped \(d, k\); got Tensor \(64,\)"),
    ("basis-too-many-vectors", None, lambda _: Site("layers.1", basis=torch.eye(3)[:2]),
     SiteError, r"more vectors \(3\) than dimensions \(2\)"),
    ("basis-integer", None, lambda _: Site("layers.1", basis=torch.eye(4, dtype=torch.long)),
     SiteError, r"basis must be a float tensor"),
    ("project-basis-wrong-dimension", "G", lambda g: g.run(P6, {"layers.1": Project(torch.randn(32, 2))}),
     InterventionError, r"Project basis has dimension 32, but the site's last dimension is 64"),
    ("project-keep-bad", None, lambda _: Project(torch.randn(64, 2), keep="sideways"),
     InterventionError, r"keep must be 'onto' or 'off', got 'sideways'"),
    ("project-basis-3d", None, lambda _: Project(torch.randn(2, 64, 2)),
     InterventionError, r"Project basis must be \(d, k\); got shape \(2, 64, 2\)"),
    # -- intervention values ----------------------------------------------------------------------------
    ("set-wrong-shape", "G", lambda g: g.run(P6, {Site("layers.1", positions=0): Set(torch.zeros(63))}),
     InterventionError, r"Set value has shape \(63,\), but the site selects \(1, 64\) per row"),
    ("set-wrong-shape-full", "G", lambda g: g.run(P6, {"layers.1": Set(torch.zeros(5, 64))}),
     InterventionError, r"Set value has shape \(5, 64\), but the site selects \(6, 64\) per row"),
    ("add-wrong-shape", "M", lambda m: m.run(x2(), {"net.0": Add(torch.ones(31))}),
     InterventionError, r"Add direction has shape \(31,\), but the site selects \(32,\) per row"),
    ("set-nan", None, lambda _: Set(torch.tensor([0.0, NAN])),
     InterventionError, r"Set value contains NaN or inf"),
    ("add-inf-direction", None, lambda _: Add(torch.full((64,), INF)),
     InterventionError, r"Add direction contains NaN or inf"),
    ("add-nan-strength", None, lambda _: Add(torch.ones(64), NAN),
     InterventionError, r"Add strength must be finite, got nan"),
    ("noise-draws-nan", None, lambda _: Noise(1.0, draws=torch.tensor([[NAN]])),
     InterventionError, r"Noise draws contains NaN or inf"),
    ("set-integer-value", None, lambda _: Set(torch.zeros(64, dtype=torch.long)),
     InterventionError, r"Set value must be a floating-point tensor, got dtype torch\.int64"),
    ("add-bool-direction", None, lambda _: Add(torch.ones(64, dtype=torch.bool)),
     InterventionError, r"Add direction must be a floating-point tensor, got dtype torch\.bool"),
    ("set-not-array", None, lambda _: Set(object()),
     InterventionError, r"Set value must be a tensor or array-like, got object"),
    ("set-complex-on-real", "M", lambda m: m.run(x2(), {"net.0": Set(torch.zeros(32, dtype=torch.complex64))}),
     InterventionError, r"Set value is complex \(torch\.complex64\) but the activation is real"),
    ("noise-negative-std", None, lambda _: Noise(-1.0),
     InterventionError, r"Noise std must be a finite number >= 0, got -1\.0"),
    ("noise-std-not-number", None, lambda _: Noise("loud"),
     InterventionError, r"Noise std must be a finite number >= 0, got 'loud'"),
    ("noise-draws-wrong-shape", "G",
     lambda g: g.run(P6, {Site("layers.1", positions=0): Noise(1.0, draws=torch.randn(1, 63))}),
     InterventionError, r"Noise draws have shape \(1, 63\); expected \(inputs, \*\(1, 64\)\)"),
    ("scale-inf", None, lambda _: Scale(INF),
     InterventionError, r"Scale factor must be a finite number, got inf"),
    ("scale-nan", None, lambda _: Scale(math.nan),
     InterventionError, r"Scale factor must be a finite number, got nan"),
    ("scale-not-number", None, lambda _: Scale("half"),
     InterventionError, r"Scale factor must be a finite number, got 'half'"),
    ("not-an-intervention", "G", lambda g: g.run(P6, {"layers.1": 0.0}),
     InterventionError, r"Expected an intervention \(Set, Patch, .*\), got float"),
    # -- sources ----------------------------------------------------------------------------------------
    ("patch-different-prompt-length", "G", lambda g: g.run(P6, {"layers.1": Patch(g.run(P3, cache=["layers.1"]))}),
     InterventionError, r"source activation is \(3, 64\) per row, the run's is \(6, 64\) per row"),
    ("patch-input-different-length", "G", lambda g: g.run(P6, {Site("layers.2", positions=0): Patch(P3)}),
     InterventionError, r"source activation is \(3, 64\) per row, the run's is \(6, 64\) per row"),
    ("resample-different-length", "G", lambda g: g.run(P6, {"layers.1": Resample(g.run(P3, cache=["layers.1"]))}),
     InterventionError, r"source activation is \(3, 64\) per row, the run's is \(6, 64\)"),
    ("source-did-not-cache-site", "G", lambda g: g.run(P6, {"layers.1": Patch(g.run(P6, cache=["layers.0"]))}),
     InterventionError, r"source run did not cache 'transformer\.h\.1' \(output\); it cached \['layers\.0'\]"),
    ("mean-source-did-not-cache-site", "G", lambda g: g.run(P6, {"layers.2.mlp": Mean(g.run(P6))}),
     InterventionError, r"source run did not cache 'transformer\.h\.2\.mlp' \(output\); it cached \[\]"),
    ("patch-row-out-of-range", "G", lambda g: g.run(P6, {"layers.1": Patch(g.run(P6, cache=["layers.1"]), row=3)}),
     InterventionError, r"Patch row 3 is out of range: the source has 1 rows"),
    ("patch-source-rows-mismatch", "M", lambda m: m.run(x2(3), {"net.0": Patch(m.run(x2(2), cache=["net.0"]))}),
     InterventionError, r"patch source has 2 rows and the base inputs 3.*Patch\(source, row=k\)"),
    # -- plans ------------------------------------------------------------------------------------------
    ("mismatched-batch", "G", lambda g: g.run([P6, P6B], [{"layers.1": Zero()}] * 3),
     PlanError, r"Mismatched batch: 3 rows of edits for 2 inputs"),
    ("empty-plan", "G", lambda g: g.run(P6, []),
     PlanError, r"The plan is empty: edits=\[\] has no rows"),
    ("edits-wrong-type", "G", lambda g: g.run(P6, Zero()),
     PlanError, r"edits must be None, a dict .*, a list of such dicts or of cs.Rows blocks; got Zero"),
    ("edits-row-not-dict", "G", lambda g: g.run(P6, [{}, ("layers.1", Zero())]),
     PlanError, r"Each row of edits must be a dict .*; row 1 is tuple"),
    ("input-index-out-of-range", "M", lambda m: m.run(x2(), [{}, {}], input_index=[0, 2]),
     PlanError, r"input_index entry 2 is not an input row \(the inputs have 2 rows\)"),
    ("input-index-wrong-length", "M", lambda m: m.run(x2(), [{}, {}], input_index=[0]),
     PlanError, r"input_index has 1 entries for 2 rows of edits"),
    ("grads-without-metric", "G", lambda g: g.run(P6, grads=["layers.1"]),
     PlanError, r"grads=\[\.\.\.\] needs a metric"),
    ("metric-drops-batch-dim", "G", lambda g: g.run([P6, P6B], metric=lambda y: y[:, -1, 3].mean()),
     PlanError, r"metric returned shape \(\); it must keep the batch dimension \(2 rows in this chunk\)"),
    ("metric-wrong-row-count", "M", lambda m: m.run(x2(3), metric=lambda y: y[:1, 0]),
     PlanError, r"metric returned shape \(1,\); it must keep the batch dimension \(3 rows"),
    ("metric-not-a-tensor", "M", lambda m: m.run(x2(), metric=lambda y: 1.0),
     PlanError, r"metric must return a tensor .*; got float"),
    ("grads-without-gradient-path", "G", lambda g: g.run(P6, grads=["layers.1"], metric=lambda y: torch.zeros(len(y))),
     PlanError, r"metric does not depend on the grad sites"),
    ("chunk-size-zero", "M", lambda m: m.run(x2(), chunk_size=0),
     PlanError, r"chunk_size must be a positive int, got 0"),
    ("chunk-size-negative", "M", lambda m: m.run(x2(), chunk_size=-2),
     PlanError, r"chunk_size must be a positive int, got -2"),
    ("chunk-size-float", "M", lambda m: m.run(x2(), chunk_size=1.5),
     PlanError, r"chunk_size must be a positive int, got 1\.5"),
    ("keep-kv-on-plain-module", "M", lambda m: m.run(x2(), keep_kv=True),
     PlanError, r"keep_kv=True needs a Hugging Face causal LM.*module models have none"),
    ("keep-kv-on-hooked-transformer", "TL", lambda t: t.run(torch.tensor([[1, 2]]), keep_kv=True),
     PlanError, r"keep_kv=True needs a Hugging Face causal LM.*transformer-lens models have none"),
    # -- inputs and load --------------------------------------------------------------------------------
    # Model.run pads prompts of different lengths (tests/core/test_ragged.py); a position sweep over such pairs
    # must say how positions line up
    ("prompts-different-lengths", "G", lambda g: cs.activation_patching(g, [P3, P6], [P3, P6], "resid_pre", cs.logit(1)),
     InputError, r"prompt pairs have different lengths \[3, 6\], so a position sweep must say how positions"),
    ("empty-prompt", "G", lambda g: g.run(""),
     InputError, r"Prompt '' tokenizes to no tokens"),
    ("float-token-ids", "G", lambda g: g.run(torch.zeros(1, 5)),
     InputError, r"Token ids must be an integer tensor; got dtype torch\.float32"),
    ("bool-token-ids", "G", lambda g: g.run(torch.zeros(1, 5, dtype=torch.bool)),
     InputError, r"Token ids must be an integer tensor; got dtype torch\.bool"),
    ("float-token-ids-tl", "TL", lambda t: t.run(torch.zeros(1, 5)),
     InputError, r"Expected token ids \(an integer tensor\)"),
    ("token-ids-3d", "G", lambda g: g.run(torch.zeros(1, 2, 3, dtype=torch.long)),
     InputError, r"Token ids must be shaped \(batch, tokens\); got \(1, 2, 3\)"),
    ("token-id-above-vocab", "G", lambda g: g.run(torch.tensor([[1, 2, 10_000]])),
     InputError, r"Token ids must lie in \[0, 72\); got values from 1 to 10000"),
    ("token-id-negative", "G", lambda g: g.run(torch.tensor([[1, -2, 3]])),
     InputError, r"Token ids must lie in \[0, 72\); got values from -2 to 3"),
    ("token-id-above-vocab-tl", "TL", lambda t: t.run(torch.tensor([[1, 2, 50]])),
     InputError, r"Token ids must lie in \[0, 50\)"),
    ("generic-input-str", "M", lambda m: m.run("hello"),
     InputError, r"Cannot feed str to MLP: pass a tensor"),
    ("generic-input-0d", "M", lambda m: m.run(torch.tensor(1.0)),
     InputError, r"0-d tensor; give it a batch dimension"),
    ("generic-inputs-disagree-on-batch", "M", lambda m: m.run((torch.zeros(2, 16), torch.zeros(3, 16))),
     InputError, r"disagree on the batch size \(dim 0\): \[2, 3\]"),
    ("load-int", None, lambda _: cs.load(42),
     InputError, r"causalscope\.load takes a bundled model name, .*torch\.nn\.Module; got int"),
    ("load-unknown-name", None, lambda _: cs.load("no-such-model"),
     InputError, r"'no-such-model' is neither a bundled model \(.*mlp.*tiny-gpt2.*\) nor a local directory"),
    ("load-list", None, lambda _: cs.load([nn.Linear(2, 2)]),
     InputError, r"got list"),
    # -- segmented forward ------------------------------------------------------------------------------
    ("forward-from-wrong-width", "G", lambda g: g.forward_from(torch.randn(1, 3, 32)),
     InputError, r"forward_from needs hidden states shaped \(batch, tokens, 64\).*\(1, 3, 32\)"),
    ("forward-from-token-ids", "G", lambda g: g.forward_from(torch.tensor([[1, 2, 3]])),
     InputError, r"forward_from needs hidden states shaped \(batch, tokens, 64\) \(float\).*torch\.int64"),
    ("forward-from-layer-out-of-range", "G", lambda g: g.forward_from(torch.randn(1, 3, 64), layer=9),
     SiteError, r"forward_from needs 0 <= layer <= stop <= 4; got layer=9"),
    ("forward-from-pos-without-past", "G", lambda g: g.forward_from(torch.randn(1, 3, 64), layer=1, pos=2),
     InputError, r"forward_from\(pos=2\) needs past=kv_cache"),
]


@pytest.mark.parametrize("fixture, call, err, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(request, fixture, call, err, pattern):
    model = request.getfixturevalue(fixture) if fixture else None
    with pytest.raises(err, match=pattern) as info:
        call(model)
    assert type(info.value) is err  # the leaf type itself, not some subclass
    assert isinstance(info.value, CausalScopeError) and isinstance(info.value, ValueError)


def test_table_covers_enough_distinct_problems():
    assert len({c[0] for c in CASES}) == len(CASES) >= 20
    assert {c[3] for c in CASES} == {SiteError, InterventionError, PlanError, InputError}


def test_error_hierarchy():
    for err in (SiteError, InterventionError, PlanError, InputError):
        assert issubclass(err, CausalScopeError)
    assert issubclass(CausalScopeError, ValueError)


@pytest.mark.parametrize("arch", LM_ARCHS)
def test_unknown_site_lists_close_names_for_every_arch(arch):
    m = cs.load(*build_tiny_lm(arch))
    with pytest.raises(SiteError) as info:
        m.run(P6, {"layers.1.mlpp": Zero()})
    msg = str(info.value)
    close = msg.split("Closest valid names:")[1]
    assert "'layers.1.mlp'" in close
    assert close.index("'layers.1.mlp'") == close.index("'")  # and it is the first suggestion
    assert "site_names()" in msg


def test_patch_shape_mismatch_names_both_shapes(G):
    """Explicit form of the table case: both per-row shapes appear in the message."""
    src = G.run(P3, cache=["layers.3.mlp"])
    with pytest.raises(InterventionError) as info:
        G.run(P6, {Site("layers.3.mlp", positions=[0]): Patch(src)})
    assert "(3, 64)" in str(info.value) and "(6, 64)" in str(info.value)


def test_noise_draws_fail_mid_run_with_clear_error(M):
    """Draws covering 1 input, run on 3 inputs in chunks of 1: fails at chunk 2 with a clear error."""
    with pytest.raises(InterventionError, match=r"Noise draws cover 1 inputs, but the run has input index 1"):
        M.run(x2(3), {"net.0": Noise(1.0, draws=torch.randn(1, 32))}, chunk_size=1)


def test_site_errors_fire_at_run_time_in_multi_op_plans(G):
    """A bad site deep in a plan with several good ones is reported (after hooks were registered)."""
    edits = [{"layers.0": Scale(2.0), Site("layers.2.mlp", neurons=[100]): Zero()}, {"layers.1": Zero()}]
    with pytest.raises(SiteError, match=r"layers\.2\.mlp\[neurons=100\].*neurons \[100\] out of range"):
        G.run(P6, edits)


# ---------------------------------------------------------------------------------------------------------
# The user's own errors propagate unchanged
# ---------------------------------------------------------------------------------------------------------
class UserBoom(Exception):
    pass


class UserValueError(ValueError):
    pass


class Exploding(nn.Module):
    def __init__(self, exc: type[Exception]) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)
        self.exc = exc

    def forward(self, x):
        self.fc1(x)  # the user code runs, then raises
        raise self.exc("boom from the user's forward")


@pytest.mark.parametrize("exc", [UserBoom, UserValueError, RuntimeError, KeyError])
def test_user_forward_exception_propagates_unchanged(exc):
    m = cs.load(Exploding(exc))
    with pytest.raises(exc, match="boom from the user's forward") as info:
        m.run(torch.zeros(2, 4), {"fc1": Scale(2.0)}, cache=["fc1"])
    assert type(info.value) is exc
    assert not isinstance(info.value, CausalScopeError)


def test_user_metric_exception_propagates_unchanged(M):
    def metric(y):
        raise UserBoom("metric exploded")

    with pytest.raises(UserBoom, match="metric exploded"):
        M.run(x2(), metric=metric)


def test_user_intervention_exception_propagates_unchanged(M):
    class Custom(Intervention):
        def __call__(self, x, src, ctx):
            raise UserBoom("custom intervention exploded")

    with pytest.raises(UserBoom, match="custom intervention exploded"):
        M.run(x2(), {"net.2": Custom()})


def test_model_shape_error_is_the_models_own(M):
    """A wrong-width input fails inside the user's model: its own error, not a causalscope one."""
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        M.run(torch.zeros(2, 15))


# ---------------------------------------------------------------------------------------------------------
# Regression for the fix that made heads on a 2-D activation split the feature dim (not the batch dim)
# ---------------------------------------------------------------------------------------------------------
def test_heads_on_2d_activation_split_features_not_rows(M):
    x = x2(2)
    run = M.run(x, {Site("net.0", heads=[1], n_heads=4): Zero()}, cache=["net.0"])
    plain = M.run(x, cache=["net.0"]).cache["net.0"]
    got = run.cache["net.0"]
    assert torch.equal(got[:, 8:16], torch.zeros(2, 8))  # head 1 of every row is zeroed
    assert torch.equal(got[:, :8], plain[:, :8]) and torch.equal(got[:, 16:], plain[:, 16:])
    with pytest.raises(SiteError, match=r"heads \[4\] out of range \(the site has 4 heads"):
        M.run(x, {Site("net.0", heads=[4], n_heads=4): Zero()})
