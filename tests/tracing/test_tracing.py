"""causal_trace equals a naive ROME-style loop (one forward per cell, plain hooks, row 0 clean)."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs

PROMPT = "the old king saw a river near the city"


@pytest.fixture(params=["gpt2", "gpt_neox", "llama"])
def lm(request) -> cs.Model:
    """Random weights with a large init, so the output depends visibly on the subject."""
    from causalscope.zoo import build_tiny_lm

    return cs.load(*build_tiny_lm(request.param, init_std=0.3), name=f"sharp-{request.param}")


@pytest.fixture
def gpt2() -> cs.Model:
    from causalscope.zoo import build_tiny_lm

    return cs.load(*build_tiny_lm("gpt2", init_std=0.3), name="sharp-gpt2")
SUBJECT = "old king"


def naive_trace(m: cs.Model, prompt: str, subject: str, draws: torch.Tensor, kind: str, window: int,
                replace: bool = False, sever: str | None = None):
    """ROME's calculate_hidden_flow written plainly: batch of N+1 rows, row 0 clean, one pass per cell."""
    al = m.adapter.aliases()
    ids = m.adapter.tokenize(prompt)
    b, e = cs.subject_range(m, prompt, subject)
    N, T, L = draws.shape[0], ids.shape[1], m.n_layers
    inp = ids.expand(N + 1, -1)
    model = m.module

    def untuple(x):
        return x[0] if isinstance(x, tuple) else x

    def run(patch: dict, unpatch: dict | None = None, record: list | None = None):
        handles = []

        def embed_hook(mod, a, out):
            out = out.clone()
            noise = draws.to(out.dtype)
            out[1:, b:e] = noise if replace else out[1:, b:e] + noise
            return out
        handles.append(model.get_submodule(al["embed"][0]).register_forward_hook(embed_hook))
        names = set(patch) | set(unpatch or {}) | set(record or [])
        for name in names:
            def hook(mod, a, out, name=name):
                h = untuple(out).clone()
                if record is not None and name in record:
                    rec[name] = h.clone()
                for t in patch.get(name, []):
                    h[1:, t] = h[0, t]
                for t in (unpatch or {}).get(name, []):
                    h[1:, t] = first[name][1:, t]
                return (h, *out[1:]) if isinstance(out, tuple) else h
            handles.append(model.get_submodule(al[name][0]).register_forward_hook(hook))
        try:
            with torch.no_grad():
                return model(input_ids=inp).logits
        finally:
            for hd in handles:
                hd.remove()

    rec: dict = {}
    first: dict = {}
    clean_logits = run({})[0, -1]
    answer = int(clean_logits.argmax())
    score = lambda lg: float(lg[1:, -1].softmax(-1).mean(0)[answer])  # noqa: E731
    low = score(run({}))
    if sever:
        run({}, record=[f"layers.{j}.{sever}" for j in range(L)])
        first = dict(rec)
    table = torch.zeros(T, L)
    for t in range(T):
        for layer in range(L):
            if kind == "hidden":
                patch = {f"layers.{layer}": [t]}
            else:
                lo, hi = max(0, layer - window // 2), min(L, layer - (-window // 2))
                patch = {f"layers.{j}.{kind}": [t] for j in range(lo, hi)}
            unpatch = {f"layers.{j}.{sever}": [t] for j in range(L)} if sever else None
            table[t, layer] = score(run(patch, unpatch))
    return table, low, float(clean_logits.softmax(-1)[answer]), answer


@pytest.mark.parametrize("schedule", ["floor", "batched"])
@pytest.mark.parametrize("kind,window", [("hidden", 10), ("mlp", 3), ("attn", 2), ("mlp", 1)])
@pytest.mark.parametrize("replace", [False, True])
def test_trace_equals_naive_rome_loop(lm, kind, window, replace, schedule):
    b, e = cs.subject_range(lm, PROMPT, SUBJECT)
    draws = 2.0 * torch.randn(4, e - b, 64, generator=torch.Generator().manual_seed(1))
    r = cs.causal_trace(lm, PROMPT, SUBJECT, kind=kind, window=window, noise=draws, replace=replace,
                        schedule=schedule)
    assert r.meta["schedule"] == schedule
    ref, low, high, answer = naive_trace(lm, PROMPT, SUBJECT, draws, kind, window, replace)
    assert r.meta["answer_id"] == answer
    assert r.low_score == pytest.approx(low, abs=1e-6) and r.high_score == pytest.approx(high, abs=1e-6)
    torch.testing.assert_close(r.scores, ref, rtol=0, atol=1e-5)
    assert (r.scores - low).abs().max() > 1e-4  # the trace is not flat: the comparison can fail


@pytest.mark.parametrize("schedule", ["floor", "batched"])
@pytest.mark.parametrize("sever", ["mlp", "attn"])
def test_severed_trace_equals_naive_repatch_loop(gpt2, sever, schedule):
    b, e = cs.subject_range(gpt2, PROMPT, SUBJECT)
    draws = 2.0 * torch.randn(3, e - b, 64, generator=torch.Generator().manual_seed(2))
    r = cs.causal_trace(gpt2, PROMPT, SUBJECT, noise=draws, sever=sever, schedule=schedule)
    ref, *_ = naive_trace(gpt2, PROMPT, SUBJECT, draws, "hidden", 10, sever=sever)
    torch.testing.assert_close(r.scores, ref, rtol=0, atol=1e-5)
    plain = cs.causal_trace(gpt2, PROMPT, SUBJECT, noise=draws)
    assert not torch.allclose(plain.scores, r.scores)


def test_hidden_trace_runs_exactly_the_compute_floor(lm):
    """Executed token-layers = N * sum_l (L-1-l) * sum_{t>=b} (T-t): blocks above the restored layer,
    positions from the restored token on, nothing for tokens before the subject."""
    prompt, subject = "the old king saw a river near the city", "river"
    r = cs.causal_trace(lm, prompt, subject, samples=3, noise=1.0)
    b, _ = r.subject_range
    T, L, N = len(r.tokens), lm.n_layers, 3
    floor = N * sum(L - 1 - l for l in range(L)) * sum(T - t for t in range(b, T))
    assert b == 5 and r.meta["token_layers"] == floor and r.meta["schedule"] == "floor"  # auto on a CPU
    naive = (N + 1) * L * T * L * T  # ROME: one full (N+1)-row pass per (token, layer) cell
    assert naive / floor > 4


@pytest.mark.parametrize("kind", ["mlp", "attn"])
@pytest.mark.parametrize("window", [1, 2, 3, 10])
def test_window_trace_shares_prefixes(gpt2, window, kind):
    """Token-layers of the window schedule, in closed form.

    At token t, block j runs once per distinct restore pattern over blocks 0..j among the cells restored
    somewhere below j (cells not yet restored are the cached corrupted run). For mlp the restore is the
    last term of the block output, so cells that agree on blocks 0..j-1 share block j whether or not
    they restore it: one run per distinct pattern over 0..j-1. A cell's first restored block runs once
    for all tokens: one pass over positions b..T-1 per distinct first layer (attn; for mlp it is the
    corrupted block output plus the MLP difference, no compute). Restoring the last layer's
    module at t < T-1 cannot reach the last position, so it is not a restore."""
    r = cs.causal_trace(gpt2, PROMPT, SUBJECT, kind=kind, window=window, samples=2, noise=1.0)
    b, _ = r.subject_range
    T, L, N = len(r.tokens), 4, 2
    total, firsts = 0, set()
    for t in range(b, T):
        top = L if t == T - 1 else L - 1
        wins = [set(range(max(0, l - window // 2), min(top, l - (-window // 2)))) for l in range(L)]
        firsts |= {min(w) for w in wins if w}
        upto = (lambda j: j) if kind == "mlp" else (lambda j: j + 1)
        per_t = sum(len({tuple(k in wins[l] for k in range(upto(j))) for l in range(L)
                         if min(wins[l], default=L) < j}) for j in range(L))
        total += N * per_t * (T - t)
    if kind == "attn":  # for mlp the entry state is the corrupted output plus (clean - corrupted) MLP: no block
        total += N * (T - b) * len(firsts)
    assert r.meta["token_layers"] == total
    start_at_window = N * sum(L - max(0, l - window // 2) for l in range(L)) * sum(T - t for t in range(b, T))
    assert r.meta["token_layers"] < start_at_window
    if window == 1:  # a window of one restores nothing else: the last layer's column is the corrupted score
        assert (r.scores[b:-1, L - 1] == r.low_score).all()


def test_restoring_last_layer_at_last_token_gives_clean_score_and_cells_before_subject_are_low(lm):
    r = cs.causal_trace(lm, PROMPT, "river", samples=3, noise=3.0)
    assert r.scores[-1, -1] == pytest.approx(r.high_score, abs=1e-6)
    b, _ = r.subject_range
    assert torch.all(r.scores[:b] == r.low_score)


def test_same_seed_same_trace_and_noise_forms(gpt2):
    a = cs.causal_trace(gpt2, PROMPT, SUBJECT, samples=3, noise=0.5, seed=4)
    b = cs.causal_trace(gpt2, PROMPT, SUBJECT, samples=3, noise=0.5, seed=4)
    c = cs.causal_trace(gpt2, PROMPT, SUBJECT, samples=3, noise=0.5, seed=5)
    assert torch.equal(a.scores, b.scores) and not torch.equal(a.scores, c.scores)
    std = cs.embedding_std(gpt2, [SUBJECT])
    x = cs.causal_trace(gpt2, PROMPT, SUBJECT, samples=3, noise="3x", seed=1)
    y = cs.causal_trace(gpt2, PROMPT, SUBJECT, samples=3, noise=3 * std, seed=1)
    assert torch.equal(x.scores, y.scores) and x.meta["noise_std"] == pytest.approx(3 * std)


def test_embedding_std_equals_hand_computation(gpt2):
    ids = gpt2.adapter.tokenize(["old king"])[0]
    want = gpt2.module.transformer.wte.weight[ids].detach().std()
    assert cs.embedding_std(gpt2, ["old king"]) == pytest.approx(float(want), rel=1e-6)


def test_target_and_result_roundtrip(gpt2, tmp_path):
    r = cs.causal_trace(gpt2, PROMPT, SUBJECT, samples=2, noise=1.0, target="paris")
    assert r.answer.strip() == "paris"
    path = r.save(tmp_path / "t.npz")
    back = cs.TraceResult.from_array(cs.load_result(path))
    assert torch.equal(back.scores, r.scores) and back.subject_range == r.subject_range
    fig = back.plot()
    assert fig.axes[0].get_title().startswith("Impact of restoring state")


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt="the old king saw", subject="queen"), r"not in the prompt.*\['the', 'old', 'king', 'saw'\]"),
    (dict(prompt="", subject="king"), "prompt is empty"),
    (dict(prompt="the old king saw", subject="king", window=0), "window must be"),
    (dict(prompt="the old king saw", subject="king", samples=0), "samples must be"),
    (dict(prompt="the old king saw", subject="king", kind="resid"), "kind must be"),
    (dict(prompt="the old king saw", subject="king", noise=torch.zeros(2, 3, 64)), r"shaped \(samples, subject"),
    (dict(prompt="the old king saw", subject="king", noise="lots"), "noise="),
    (dict(prompt="the old king saw", subject="king", target="old king"), "not a single token"),
    (dict(prompt="the old king saw", subject="king", schedule="fast"), "schedule must be"),
])
def test_bad_trace_inputs_raise_clear_errors(gpt2, kwargs, match):
    with pytest.raises(cs.InputError, match=match):
        cs.causal_trace(gpt2, **kwargs)
