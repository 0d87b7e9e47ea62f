"""SAEs from SAELens's on-disk format and from plain tensors, against weights read and formulas written by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import causalscope as cs
from causalscope.sae import SAE, Transcoder, bundled, load_bundled, load_sae

D, N = 16, 40


def tensors(seed: int = 0, d_in: int = D, n: int = N, d_out: int = D) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(d_in, n, generator=g), "b_enc": 0.3 * torch.randn(n, generator=g),
            "W_dec": torch.randn(n, d_out, generator=g), "b_dec": torch.randn(d_out, generator=g)}


def write_saelens(folder: Path, cfg: dict, weights: dict[str, torch.Tensor]) -> Path:
    """A folder as SAELens writes it: cfg.json + sae_weights.safetensors (sae_lens/constants.py's names)."""
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(weights, str(folder / "sae_weights.safetensors"))
    return folder


def relu(pre):
    return torch.where(pre > 0, pre, torch.zeros_like(pre))


def hand_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    out = torch.zeros_like(pre)
    for i in range(pre.shape[0]):
        order = sorted(range(pre.shape[1]), key=lambda j: -float(pre[i, j]))[:k]
        for j in order:
            out[i, j] = max(float(pre[i, j]), 0.0)
    return out


X = torch.randn(7, D, generator=torch.Generator().manual_seed(99))


def test_saelens_standard_folder_loads_and_equals_the_weights_read_by_hand(tmp_path):
    w = tensors(1)
    cfg = {"architecture": "standard", "d_in": D, "d_sae": N, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"hook_name": "blocks.2.hook_resid_post", "model_name": "gpt2"}}
    folder = write_saelens(tmp_path / "blocks.2", cfg, w)
    sae = load_sae(folder)
    by_hand = load_file(str(folder / "sae_weights.safetensors"))
    for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(sae, key).detach(), by_hand[key]), key
    assert (sae.architecture, sae.hook_name, sae.name, sae.d_in, sae.n_latents) == \
        ("relu", "blocks.2.hook_resid_post", "blocks.2", D, N)
    want = relu((X - by_hand["b_dec"]) @ by_hand["W_enc"] + by_hand["b_enc"])
    torch.testing.assert_close(sae.encode(X), want)
    torch.testing.assert_close(sae.decode(want), want @ by_hand["W_dec"] + by_hand["b_dec"])


def test_saelens_topk_jumprelu_and_old_configs(tmp_path):
    w = tensors(2)
    k = 5
    new = load_sae(write_saelens(tmp_path / "topk", {"architecture": "topk", "d_in": D, "d_sae": N, "k": k,
                                                     "dtype": "float32", "apply_b_dec_to_input": False}, w))
    old = load_sae(write_saelens(tmp_path / "old", {"d_in": D, "d_sae": N, "activation_fn_str": "topk",
                                                    "activation_fn_kwargs": {"k": k}, "dtype": "float32",
                                                    "hook_point": "blocks.1.hook_resid_pre",
                                                    "apply_b_dec_to_input": False}, w))
    pre = X @ w["W_enc"] + w["b_enc"]  # apply_b_dec_to_input False: b_dec not subtracted
    for sae in (new, old):
        assert sae.architecture == "topk" and sae.k == k
        torch.testing.assert_close(sae.encode(X), hand_topk(pre, k))
    assert old.hook_name == "blocks.1.hook_resid_pre"
    thr = 0.5 * torch.rand(N, generator=torch.Generator().manual_seed(3))
    jr = load_sae(write_saelens(tmp_path / "jr", {"architecture": "jumprelu", "d_in": D, "d_sae": N,
                                                  "dtype": "float32"}, {**w, "threshold": thr}))
    pre = (X - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    want = torch.tensor([[float(p) if float(p) > float(t) and float(p) > 0 else 0.0 for p, t in zip(row, thr)]
                         for row in pre])
    torch.testing.assert_close(jr.encode(X), want)


def test_saelens_transcoder_folder(tmp_path):
    w = tensors(4, d_out=24)
    tc = load_sae(write_saelens(tmp_path / "tc", {"architecture": "transcoder", "d_in": D, "d_sae": N, "d_out": 24,
                                                  "dtype": "float32", "hook_name_out": "blocks.0.hook_mlp_out"}, w))
    assert isinstance(tc, Transcoder) and tc.is_transcoder and tc.d_out == 24
    torch.testing.assert_close(tc.encode(X), relu(X @ w["W_enc"] + w["b_enc"]))  # b_dec is in the output space
    torch.testing.assert_close(tc(X), relu(X @ w["W_enc"] + w["b_enc"]) @ w["W_dec"] + w["b_dec"])


def test_a_scaling_factor_is_folded_into_the_decoder(tmp_path):
    w = tensors(5)
    s = 1 + torch.rand(N, generator=torch.Generator().manual_seed(5))
    sae = load_sae(write_saelens(tmp_path / "s", {"architecture": "standard", "d_in": D, "d_sae": N,
                                                  "finetuning_scaling_factor": True}, {**w, "scaling_factor": s}))
    f = sae.encode(X)
    torch.testing.assert_close(sae.decode(f), (f * s) @ w["W_dec"] + w["b_dec"])  # SAELens: (f * s) @ W_dec
    ones = load_sae(write_saelens(tmp_path / "ones", {"architecture": "standard", "d_in": D, "d_sae": N},
                                  {**w, "scaling_factor": torch.ones(N)}))
    assert torch.equal(ones.W_dec.detach(), w["W_dec"])


def test_save_writes_saelens_names_and_loads_back(tmp_path):
    sae = SAE.from_dict({**tensors(6), "threshold": torch.full((N,), 0.2)}, architecture="jumprelu", name="mine",
                        hook_name="layers.2")
    folder = sae.save(tmp_path / "out")
    cfg = json.loads((folder / "cfg.json").read_text())
    raw = load_file(str(folder / "sae_weights.safetensors"))
    assert sorted(raw) == ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"]
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["dtype"], cfg["metadata"]["hook_name"]) == \
        ("jumprelu", D, N, "float32", "layers.2")
    back = load_sae(folder)
    assert back.name == "mine" and back.architecture == "jumprelu"
    for key, v in sae.state_tensors().items():
        assert torch.equal(getattr(back, key).detach(), v), key
    half = load_sae(sae.save(tmp_path / "half", store_dtype=torch.float16))
    assert load_file(str(tmp_path / "half" / "sae_weights.safetensors"))["W_enc"].dtype == torch.float16
    assert half.W_enc.dtype == torch.float32 and torch.equal(half.W_enc.detach(), sae.W_enc.detach().half().float())
    tk = SAE(D, N, architecture="topk", k=3, seed=1)
    assert load_sae(tk.save(tmp_path / "tk")).k == 3
    tc = Transcoder(D, N, d_out=8, seed=2, architecture="jumprelu")
    back_tc = load_sae(tc.save(tmp_path / "tc"))
    assert isinstance(back_tc, Transcoder) and back_tc.architecture == "jumprelu" and back_tc.d_out == 8
    assert json.loads((tmp_path / "tc" / "cfg.json").read_text())["architecture"] == "jumprelu_transcoder"


def test_from_dict_topk_and_jumprelu_encode_by_hand():
    w = tensors(7)
    tk = SAE.from_dict(w, architecture="topk", k=4)
    torch.testing.assert_close(tk.encode(X), hand_topk((X - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 4))
    thr = torch.linspace(-0.5, 2.0, N)
    jr = SAE.from_dict({**w, "log_threshold": thr.clamp(min=1e-3).log()}, architecture="jumprelu")
    pre = (X - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    t = thr.clamp(min=1e-3)
    torch.testing.assert_close(jr.encode(X), torch.where((pre > t) & (pre > 0), pre, torch.zeros_like(pre)))
    assert torch.equal(SAE.from_dict(w, architecture="standard", apply_b_dec_to_input=False).encode(X),
                       relu(X @ w["W_enc"] + w["b_enc"]))


@pytest.mark.parametrize("make,match", [
    (lambda p: load_sae(p / "nowhere"), "not there"),
    (lambda p: load_sae(write_saelens(p / "g", {"architecture": "gated", "d_in": D, "d_sae": N}, tensors())),
     "Unknown SAE architecture 'gated'"),
    (lambda p: load_sae(write_saelens(p / "ln", {"architecture": "standard", "normalize_activations": "layer_norm"},
                                      tensors())), "normalize_activations='layer_norm'"),
    (lambda p: load_sae(write_saelens(p / "tk", {"architecture": "topk"}, tensors())), "gives no k"),
    (lambda p: load_sae(write_saelens(p / "d", {"architecture": "standard", "d_sae": 3}, tensors())),
     "d_sae=3, but the weights have 40"),
    (lambda p: load_sae(write_saelens(p / "sf", {"architecture": "standard"},
                                      {**tensors(), "scaling_factor": torch.full((N,), 2.0)})),
     "finetuning_scaling_factor is false"),
    (lambda p: SAE.from_dict({k: v for k, v in tensors().items() if k != "b_enc"}), r"missing \['b_enc'\]"),
    (lambda p: SAE.from_dict({**tensors(), "threshold": torch.zeros(N)}), r"unexpected \['threshold'\]"),
    (lambda p: SAE.from_dict({**tensors(), "b_enc": torch.zeros(N + 1)}), r"b_enc \(41,\) \(expected \(40,\)\)"),
    (lambda p: SAE.from_dict(tensors(d_out=8)), "a transcoder"),
    (lambda p: SAE(D, N, architecture="topk"), "needs k="),
    (lambda p: SAE(D, N, k=3), "takes none"),
    (lambda p: load_bundled("facts-gpt-layer.2"), "did you mean 'facts-gpt-layers.2'"),
])
def test_bad_sae_inputs_raise(tmp_path, make, match):
    with pytest.raises(cs.InputError, match=match):
        make(tmp_path)


def test_the_bundled_sae_reconstructs_facts_gpt(tmp_path):
    assert bundled() == ["facts-gpt-layers.2"]
    sae = load_bundled("facts-gpt-layers.2")
    assert (sae.architecture, sae.k, sae.d_in, sae.n_latents, sae.name) == ("topk", 16, 128, 512,
                                                                           "facts-gpt-layers.2")
    assert sae.info["train_seconds"] > 0 and sae.info["heldout"]["explained_variance"] > 0.9
    from causalscope.zoo.facts import facts

    m = cs.load("facts-gpt")
    prompts = [f.prompt for f in facts("heldout")[:40]]
    run = m.run(prompts, cache=["layers.2"])
    real = torch.arange(run.cache["layers.2"].shape[1])[None] < run.lengths[:, None]
    x = run.cache["layers.2"][real]
    x_hat = sae.decode(sae.encode(x))
    ev = 1 - float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())  # explained variance by hand
    assert ev > 0.9 and float((sae.encode(x) != 0).sum(-1).float().mean()) == 16.0
    size = sum(p.stat().st_size for p in (Path(cs.zoo.__file__).parent / "data" / "facts-gpt-sae").rglob("*"))
    assert size < 400_000


def test_the_bundled_files_are_package_data():
    import fnmatch

    import tomllib

    root = Path(cs.__file__).resolve().parent
    patterns = tomllib.loads((root.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["causalscope"]
    files = [p.relative_to(root).as_posix() for p in (root / "zoo" / "data" / "facts-gpt-sae").rglob("*")
             if p.is_file()]
    assert sorted(Path(f).name for f in files) == ["cfg.json", "sae_weights.safetensors", "training.json"]
    for f in files:
        assert any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns), f
