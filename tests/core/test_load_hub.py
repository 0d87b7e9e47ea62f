"""causalscope.load of a Hub id, offline, from an HF cache laid out by hand exactly as a download leaves it
(``models--org--name/{blobs, snapshots/<commit>, refs/<branch>}``): outputs equal the saved in-memory model."""
from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import huggingface_hub
import pytest
import torch
import transformers

import causalscope as cs
from causalscope.zoo import build_tiny_lm

REV_A = hashlib.sha1(b"first commit").hexdigest()   # 40 hex digits, as the Hub names commits
REV_B = hashlib.sha1(b"second commit").hexdigest()
PROMPT = "the cat sat on the mat"


def lay_snapshot(cache: Path, repo: str, rev: str, model, tok=None, refs: tuple[str, ...] = ()) -> None:
    """Write ``model`` (and ``tok``) into ``cache`` as huggingface_hub stores a download: the files in blobs/
    named by their hash, the snapshot folder of symlinks to them, refs/<branch> holding the commit."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    staging = cache / ".staging" / repo / rev
    model.save_pretrained(staging)
    if tok is not None:
        tok.save_pretrained(staging)
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snap = repo_dir / "snapshots" / rev
    snap.mkdir(parents=True)
    for f in sorted(staging.iterdir()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        f.replace(repo_dir / "blobs" / digest)
        (snap / f.name).symlink_to(Path("..", "..", "blobs", digest))
    (repo_dir / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo_dir / "refs" / ref).write_text(rev)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """An HF cache: org/name at REV_A (main) and REV_B (branch v2, other weights); org/no-tokenizer (main)."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    a, tok = build_tiny_lm("gpt2", seed=1, n_layers=2, d_model=32)
    b, _ = build_tiny_lm("gpt2", seed=2, n_layers=2, d_model=32)
    lay_snapshot(cache, "org/name", REV_A, a, tok, refs=("main",))
    lay_snapshot(cache, "org/name", REV_B, b, tok, refs=("v2",))
    lay_snapshot(cache, "org/no-tokenizer", REV_A, a, refs=("main",))
    return cache, {"a": a, "b": b, "tok": tok}


@pytest.fixture
def offline(monkeypatch):
    """Offline mode for this test, whatever the environment says (tests/conftest.py sets it before imports)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def reference_logits(model, tok, prompt: str = PROMPT) -> torch.Tensor:
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_hub_id_from_cache_dir_equals_the_saved_model_and_runs_prompts(hub, offline):
    cache, ref = hub
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = cs.load("org/name", cache_dir=cache)
    assert [str(w.message) for w in caught] == []                  # no deprecation or other warnings
    assert m.name == "org/name" and m.adapter.kind == "hf-causal-lm" and "layers.1.attn.z" in m.site_names()
    assert m.tokenizer is not None and m.tokenizer.get_vocab() == ref["tok"].get_vocab()
    torch.testing.assert_close(m.run(PROMPT).output, reference_logits(ref["a"], ref["tok"]), rtol=0, atol=0)
    assert not m.module.training


def test_relocated_cache_constant_is_honoured_in_process(hub, offline, monkeypatch):
    """huggingface_hub reads HF_HUB_CACHE / HF_HOME once, at import: to move the cache inside a running
    process, set its constant (or pass cache_dir=, above); the env route is the subprocess test below."""
    cache, ref = hub
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    m = cs.load("org/name")
    torch.testing.assert_close(m.run(PROMPT).output, reference_logits(ref["a"], ref["tok"]), rtol=0, atol=0)


@pytest.mark.parametrize("revision", [REV_B, "v2"])
def test_revision_picks_the_other_snapshot(hub, offline, revision):
    cache, ref = hub
    m = cs.load("org/name", cache_dir=cache, revision=revision)
    out = m.run(PROMPT).output
    torch.testing.assert_close(out, reference_logits(ref["b"], ref["tok"]), rtol=0, atol=0)
    assert not torch.allclose(out, reference_logits(ref["a"], ref["tok"]))       # the snapshots differ


@pytest.mark.parametrize("kw", ["dtype", "torch_dtype"])
def test_dtype_reaches_from_pretrained_under_its_current_name(hub, offline, monkeypatch, kw):
    cache, ref = hub
    seen: list[dict] = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = cs.load("org/name", cache_dir=cache, **{kw: torch.float16})
    assert [str(w.message) for w in caught if "dtype" in str(w.message)] == []   # no deprecated name
    assert seen[-1]["dtype"] == torch.float16 and "torch_dtype" not in seen[-1]
    assert {p.dtype for p in m.module.parameters()} == {torch.float16}
    ids = ref["tok"](PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = copy.deepcopy(ref["a"]).to(torch.float16)(input_ids=ids).logits
    torch.testing.assert_close(m.run(PROMPT).output, expected, rtol=0, atol=0)


def test_other_kwargs_pass_through_and_trust_remote_code_only_when_given(hub, offline, monkeypatch):
    cache, _ = hub
    seen: list[tuple[str, dict]] = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained

        def spy(*args, _original=original, _cls=cls.__name__, **kwargs):
            seen.append((_cls, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    m = cs.load("org/name", cache_dir=cache, device_map="cpu", revision="main")
    assert m.tokenizer is not None
    (_, model_kw), (_, tok_kw) = seen
    assert model_kw == {"cache_dir": cache, "device_map": "cpu", "revision": "main"}
    assert tok_kw == {"cache_dir": cache, "revision": "main"}                 # same snapshot; no device_map
    seen.clear()
    cs.load("org/name", cache_dir=cache, trust_remote_code=False)
    assert all(kw["trust_remote_code"] is False for _, kw in seen) and len(seen) == 2


def test_repo_without_tokenizer_files_loads_without_a_tokenizer(hub, offline):
    """AutoTokenizer would build an empty tokenizer from the config here: causalscope keeps none instead."""
    cache, ref = hub
    m = cs.load("org/no-tokenizer", cache_dir=cache)
    assert m.tokenizer is None
    ids = ref["tok"](PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    torch.testing.assert_close(m.run(ids).output, reference_logits(ref["a"], ref["tok"]), rtol=0, atol=0)
    with pytest.raises(cs.InputError, match="no tokenizer"):
        m.run(PROMPT)
    m = cs.load("org/no-tokenizer", ref["tok"], cache_dir=cache)                 # or pass one
    torch.testing.assert_close(m.run(PROMPT).output, reference_logits(ref["a"], ref["tok"]), rtol=0, atol=0)


def test_a_name_that_is_nothing_names_all_three_tries(hub, offline, tmp_path, monkeypatch):
    cache, _ = hub
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cs.InputError) as err:
        cs.load("org/missing", cache_dir=cache)
    msg = str(err.value)
    assert "'org/missing'" in msg
    assert "is neither a bundled model (" in msg and "tiny-gpt2" in msg                     # 1. bundled names
    assert f"nor a local directory (no folder {str(Path.cwd() / 'org' / 'missing')!r})" in msg  # 2. a folder
    assert "could not load it as a Hugging Face Hub id" in msg                                  # 3. the Hub / cache
    assert f"offline: only the HF cache {str(cache)!r}" in msg
    assert "OSError" in msg and "never downloads" not in msg
    assert isinstance(err.value.__cause__, OSError)
    with pytest.raises(cs.InputError, match="Hub id at revision 'no-such-branch'"):
        cs.load("org/name", cache_dir=cache, revision="no-such-branch")


def test_kwargs_that_cannot_apply_are_errors(hub, offline, tmp_path):
    cache, ref = hub
    with pytest.raises(cs.InputError, match="dtype= or torch_dtype=, not both"):
        cs.load("org/name", cache_dir=cache, dtype=torch.float16, torch_dtype=torch.float16)
    with pytest.raises(cs.InputError, match=r"from_pretrained arguments \(dtype\) apply only"):
        cs.load("tiny-gpt2", dtype=torch.float16)
    with pytest.raises(cs.InputError, match=r"from_pretrained arguments \(revision\) apply only"):
        cs.load(ref["a"], revision="main")


def test_local_folder_takes_from_pretrained_kwargs_too(hub, tmp_path):
    _, ref = hub
    ref["a"].save_pretrained(tmp_path / "m")
    ref["tok"].save_pretrained(tmp_path / "m")
    m = cs.load(tmp_path / "m", dtype=torch.float16)
    assert {p.dtype for p in m.module.parameters()} == {torch.float16} and m.tokenizer is not None


@pytest.mark.parametrize("var", ["HF_HUB_CACHE", "HF_HOME"])
def test_env_set_before_python_starts_finds_the_cache(hub, tmp_path, var):
    """The user's way: HF_HUB_OFFLINE=1 and the cache location in the environment, then `cs.load("org/name")`."""
    cache, ref = hub
    if var == "HF_HOME":           # HF_HOME/hub is the cache
        home = tmp_path / "home"
        home.mkdir()
        (home / "hub").symlink_to(cache)
        location = {"HF_HOME": str(home)}
    else:
        location = {"HF_HUB_CACHE": str(cache)}
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(location, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1")
    code = ("import sys, torch, causalscope as cs\n"
            "m = cs.load('org/name')\n"
            "torch.save(m.run(sys.argv[2]).output, sys.argv[1])\n")
    out = tmp_path / "logits.pt"
    proc = subprocess.run([sys.executable, "-c", code, str(out), PROMPT], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.load(out), reference_logits(ref["a"], ref["tok"]), rtol=0, atol=0)
