"""Bad inputs to the newer public APIs (issue 16, "every error clear"): ``Model.generate``, steering while generating,
the lenses (logit, tuned, attention) and tuned-lens files, the SAE family, the executors and bundles. Each raises its
causalscope error type, with a message that names the problem and the fix, before anything is computed; and the
model comes back exactly as it was handed over.

The same table style as ``tests/test_bad_inputs.py`` (the older methods; no id is repeated): id, the models the call
reads (checked unchanged with ``tests/model_state.py``), the call, the error type and a regex over the message.
Below the table: the checks that come before any compute (the model does not run), and that argument errors of the
executors are refused before Ray is imported.
"""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import causalscope as cs
from causalscope import CausalScopeError, InputError, InterventionError, SiteError
from causalscope.results import load_bundle, save_bundle
from causalscope.sae import load_bundled
from conftest import hooked_transformer
from model_state import assert_refused

P = "the cat sat on the mat"            # 6 tokens of the tiny models' word vocabulary
PS = [P, "a dog ran by the tree"]
NAN, INF = float("nan"), float("inf")
V = torch.ones(64)                       # a vector of tiny-gpt2's width


# ---------------------------------------------------------------------------------------------------------------------
# Models, SAEs, lenses and files: built once for the module (the cases only read them; each case checks that)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory) -> types.SimpleNamespace:
    e = types.SimpleNamespace()
    e.G, e.F, e.M = cs.load("tiny-gpt2"), cs.load("facts-gpt"), cs.load("mlp")
    e.TL = cs.load(hooked_transformer())  # TransformerLens: 16 positions, no tokenizer
    e.sae = cs.SAE(64, 32, seed=0, name="sae64")
    e.sae32 = cs.SAE(32, 16, seed=0, name="sae32")
    e.lens = cs.tuned_lens(e.G, PS, steps=2, progress=False)
    e.sites = cs.attention_sites(e.G, layers=[0])
    # a run of another model (facts-gpt has the same module paths), on 6 token ids as P has
    e.f_run = e.F.run(torch.arange(1, 7)[None], cache=e.sites)
    root = tmp_path_factory.mktemp("files")
    e.files = _files(root, e)
    return e


def _files(root: pathlib.Path, e: types.SimpleNamespace) -> dict[str, str]:
    """Files and folders broken in one way each: tuned-lens files, SAE folders, bundles, out= places."""
    out: dict[str, str] = {"root": str(root), "file": str(root / "a-file")}
    (root / "a-file").write_text("not a folder")
    out["lens"] = str(e.lens.save(root / "tiny.lens.safetensors"))
    out["lens_facts"] = str(cs.TunedLens(e.F, {0: (torch.zeros(128, 128), torch.zeros(128))}, {}).save(
        root / "facts.lens.safetensors"))
    (root / "garbage.lens.safetensors").write_bytes(b"garbage, not safetensors")
    out["lens_garbage"] = str(root / "garbage.lens.safetensors")
    header = {"format": "causalscope.TunedLens", "format_version": "1", "n_layers": "4", "d_model": "64"}
    pair = {"layers.0.weight": torch.zeros(64, 64), "layers.0.bias": torch.zeros(64)}
    lens_files = {"lens_other": ({"x": torch.ones(2)}, {}),
                  "lens_no_header": (pair, {"format": "causalscope.TunedLens", "format_version": "1"}),
                  "lens_bad_header": (pair, {**header, "n_layers": "four"}),
                  "lens_bad_meta": (pair, {**header, "meta": "{not json"}),
                  "lens_nan": ({**pair, "layers.0.weight": torch.full((64, 64), NAN)}, header),
                  "lens_int": ({k: v.long() for k, v in pair.items()}, header),
                  "lens_no_pair": ({"layers.0.weight": torch.zeros(64, 64)}, header)}
    for name, (tensors, meta) in lens_files.items():
        save_file(tensors, str(root / f"{name}.safetensors"), metadata=meta)
        out[name] = str(root / f"{name}.safetensors")
    out["sae"] = str(e.sae.save(root / "sae-good"))
    weights = e.sae.state_tensors()
    cfg = {"architecture": "standard", "d_in": 64, "d_sae": 32, "dtype": "float32"}
    folders: dict[str, tuple[Any, Any]] = {
        "sae_bad_json": ("{not json", weights), "sae_json_list": ("[1, 2]", weights),
        "sae_bad_weights": (cfg, b"not a safetensors file"), "sae_no_weights": (cfg, None),
        "sae_wrong_shape": (cfg, {**weights, "b_enc": torch.zeros(7)}),
        "sae_gated": ({**cfg, "architecture": "gated"}, weights),
        "sae_k_text": ({**cfg, "architecture": "topk", "k": "x"}, weights),
        "sae_k_too_big": ({**cfg, "architecture": "topk", "k": 999}, weights),
        "sae_d_in_text": ({**cfg, "d_in": "sixty-four"}, weights), "sae_d_in_wrong": ({**cfg, "d_in": 10}, weights),
        "sae_nan": (cfg, {**weights, "W_enc": torch.full((64, 32), NAN)}),
        "sae_extra": (cfg, {**weights, "W_gate": torch.zeros(3)}), "sae_dtype": ({**cfg, "dtype": "float8"}, weights),
        "sae_bad_training": (cfg, weights)}
    for name, (c, w) in folders.items():
        d = root / name
        d.mkdir()
        (d / "cfg.json").write_text(c if isinstance(c, str) else json.dumps(c))
        if isinstance(w, bytes):
            (d / "sae_weights.safetensors").write_bytes(w)
        elif w is not None:
            save_file({k: v.contiguous() for k, v in w.items()}, str(d / "sae_weights.safetensors"))
        out[name] = str(d)
    (root / "sae_bad_training" / "training.json").write_text("{not json")
    (root / "garbage.npz").write_bytes(b"garbage, not a zip archive")
    out["bundle_garbage"] = str(root / "garbage.npz")
    return out


Case = tuple[str, tuple[str, ...], Callable[[Any], Any], type[Exception], str]


def c(name: str, models: str, call: Callable[[Any], Any], err: type[Exception], pattern: str) -> Case:
    return (name, tuple(models.split()), call, err, pattern)


def sg(e: Any, **kw: Any) -> Any:
    """steer_generation on tiny-gpt2 with good arguments, but those given."""
    args = {"prompts": [P], "site": "layers.1", "direction": V, "strengths": [0.0, 1.0], "target": "cat",
            "max_new_tokens": 2, **kw}
    return cs.steer_generation(e.G, **args)


def smg(e: Any, **kw: Any) -> Any:
    """steering_matrix_generation on tiny-gpt2 with good arguments, but those given."""
    args = {"prompts": [P], "site": "layers.1", "directions": {"cat": V}, "strength": 2.0, "max_new_tokens": 2, **kw}
    return cs.steering_matrix_generation(e.G, **args)


def lens_load(e: Any, name: str, model: str = "G") -> Any:
    return cs.TunedLens.load(e.files[name], getattr(e, model))


def sae_site(e: Any, **kw: Any) -> cs.Site:
    return cs.Site("layers.1", sae=e.sae, **kw)


def train(e: Any, **kw: Any) -> Any:
    args = {"site": "layers.1", "n_latents": 8, "k": 2, "steps": 1, "progress": False, **kw}
    return cs.train_sae(e.G, PS, **args)


def sweep(e: Any, fn: Any = None, items: Any = (1, 2), **kw: Any) -> Any:
    return cs.sweep(fn if fn is not None else (lambda m, x: x), list(items) if isinstance(items, tuple) else items,
                    model=kw.pop("model", e.G), **kw)


G_ = "G"
# ---------------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------------
CASES: list[Case] = [
    # -- Model.generate: counts, sampling settings, seeds, positions, prompts, edits, the position table --------------
    c("gen-max-new-tokens-zero", G_, lambda e: e.G.generate(P, max_new_tokens=0), InputError,
      r"max_new_tokens must be an int >= 1, got 0"),
    c("gen-max-new-tokens-negative", G_, lambda e: e.G.generate(P, max_new_tokens=-1), InputError,
      r"max_new_tokens must be an int >= 1, got -1"),
    c("gen-max-new-tokens-float", G_, lambda e: e.G.generate(P, max_new_tokens=2.0), InputError,
      r"max_new_tokens must be an int >= 1, got 2\.0"),
    c("gen-max-new-tokens-bool", G_, lambda e: e.G.generate(P, max_new_tokens=True), InputError,
      r"max_new_tokens must be an int >= 1, got True \(a bool\)"),
    c("gen-temperature-zero", G_, lambda e: e.G.generate(P, do_sample=True, temperature=0.0), InputError,
      r"temperature must be a finite number > 0, got 0\.0"),
    c("gen-temperature-negative", G_, lambda e: e.G.generate(P, do_sample=True, temperature=-1.0), InputError,
      r"temperature must be a finite number > 0, got -1\.0"),
    c("gen-temperature-nan", G_, lambda e: e.G.generate(P, do_sample=True, temperature=NAN), InputError,
      r"temperature must be a finite number > 0, got nan"),
    c("gen-top-p-zero", G_, lambda e: e.G.generate(P, do_sample=True, top_p=0.0), InputError,
      r"top_p must be a finite number in \(0, 1\], got 0\.0"),
    c("gen-top-p-above-one", G_, lambda e: e.G.generate(P, do_sample=True, top_p=1.5), InputError,
      r"top_p must be a finite number in \(0, 1\], got 1\.5"),
    c("gen-seed-string", G_, lambda e: e.G.generate(P, seed="1"), InputError,
      r"seed must be an int >= 0 \(e\.g\. seed=0\), got '1'"),
    c("gen-do-sample-string", G_, lambda e: e.G.generate(P, do_sample="yes"), InputError,
      r"do_sample must be True or False, got 'yes'"),
    c("gen-positions-bogus", G_, lambda e: e.G.generate(P, positions="bogus"), InputError,
      r"positions must be 'all' \(the prompt and every new token\), 'prompt' or 'new', got 'bogus'"),
    c("gen-prompts-empty-list", G_, lambda e: e.G.generate([]), InputError,
      r"prompts must be a string, a list of strings or token ids; got list \[\]"),
    c("gen-prompts-empty-string", G_, lambda e: e.G.generate(""), InputError,
      r"prompts holds an empty prompt '': each prompt needs at least one token.*Drop it"),
    c("gen-prompts-one-blank", G_, lambda e: e.G.generate([P, "  "]), InputError, r"empty prompt '  '"),
    c("gen-prompts-none", G_, lambda e: e.G.generate(None), InputError, r"prompts must be .*got NoneType None"),
    c("gen-prompts-float-ids", G_, lambda e: e.G.generate(torch.ones(1, 3)), InputError,
      r"Token ids must be an integer tensor \(torch\.long\); got dtype torch\.float32\. Convert them with ids\.long"),
    c("gen-prompts-bool-ids", G_, lambda e: e.G.generate(torch.ones(1, 3, dtype=torch.bool)), InputError,
      r"got dtype torch\.bool"),
    c("gen-prompts-ids-3d", G_, lambda e: e.G.generate(torch.ones(1, 2, 3, dtype=torch.long)), InputError,
      r"Token ids must be shaped \(tokens,\) or \(prompts, tokens\) with at least one token; got \(1, 2, 3\)"),
    c("gen-prompts-ids-outside-vocab", G_, lambda e: e.G.generate(torch.tensor([[1, 2, 999]])), InputError,
      r"Token ids must lie in \[0, 72\); got values from 1 to 999"),
    c("gen-prompts-ids-outside-vocab-tl", "TL", lambda e: e.TL.generate(torch.tensor([[1, 2, 3000]])), InputError,
      r"Token ids must lie in \[0, 50\)"),
    c("gen-edits-a-list", G_, lambda e: e.G.generate(P, [{"layers.1": cs.Zero()}]), InputError,
      r"edits must be a dict \{site: intervention\} applied at every step, got list"),
    c("gen-edits-unknown-site", G_, lambda e: e.G.generate(P, {"layers.9": cs.Zero()}), SiteError,
      r"Unknown site 'layers\.9'.*Closest valid names: 'layers\.3'"),
    c("gen-edits-site-with-positions", G_, lambda e: e.G.generate(P, {cs.Site("layers.1", positions=0): cs.Zero()}),
      SiteError, r"give the site without positions="),
    c("gen-edits-neurons-out-of-range", G_,
      lambda e: e.G.generate(P, {cs.Site("layers.1", neurons=[99]): cs.Zero()}, max_new_tokens=2), SiteError,
      r"neurons \[99\] out of range \(size 64: 0 \.\. 63\)"),
    c("gen-edits-sae-of-another-width", G_,
      lambda e: e.G.generate(P, {cs.Site("layers.1", sae=e.sae32): cs.Zero()}, max_new_tokens=2), SiteError,
      r"the SAE reads 32 dimensions, but the activation there has 64\. Use the SAE trained on this site"),
    c("gen-edits-patch-from-a-run", G_, lambda e: e.G.generate(P, {"layers.1": cs.Patch(e.G.run(P))}),
      InterventionError, r"Patch reads another run.*cs\.Set"),
    c("gen-metric-not-one-per-prompt", G_, lambda e: e.G.generate(P, metric=lambda lg: lg, max_new_tokens=2),
      InputError, r"metric must map a step's logits \(1, vocab\) to one number per prompt, shape \(1,\); at step 0 "
                  r"it returned \(1, 72\)"),
    c("gen-metric-returns-text", G_, lambda e: e.G.generate(P, metric=lambda lg: "high", max_new_tokens=1),
      InputError, r"at step 0 it returned a str"),
    c("gen-past-the-position-table", G_, lambda e: e.G.generate(P, max_new_tokens=60), InputError,
      r"longest prompt has 6 tokens; with max_new_tokens=60 .*64 learned positions\. Generate at most 58 tokens"),
    c("gen-past-the-position-table-tl", "TL", lambda e: e.TL.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=20),
      InputError, r"16 learned positions\. Generate at most 13 tokens"),
    c("gen-not-a-language-model", "M", lambda e: e.M.generate(torch.ones(1, 8), max_new_tokens=2), InputError,
      r"generate needs a Hugging Face causal LM .*Load the model through transformers"),
    c("gen-text-without-tokenizer", "TL", lambda e: e.TL.generate("the cat", max_new_tokens=2), InputError,
      r"generate needs the model's tokenizer .* give token ids otherwise"),
    # -- steer_generation / steering_matrix_generation -----------------------------------------------------------------
    c("steer-gen-direction-wrong-width", G_, lambda e: sg(e, direction=torch.ones(10)), InterventionError,
      r"The direction has 10 dims, but the site 'layers\.1' is 64 wide .*give a vector of width 64"),
    c("steer-gen-direction-vs-neurons", G_, lambda e: sg(e, site=cs.Site("layers.1", neurons=[0, 1])),
      InterventionError, r"The direction has 64 dims, but the site 'layers\.1\[neurons=0,1\]' is 2 wide"),
    c("steer-gen-direction-nan", G_, lambda e: sg(e, direction=torch.full((64,), NAN)), InputError,
      r"direction holds NaN or inf values; give a finite vector"),
    c("steer-gen-direction-2d", G_, lambda e: sg(e, direction=torch.ones(2, 64)), InputError,
      r"direction must be a 1-D float tensor \(the site's width\), got Tensor \(2, 64\)"),
    c("steer-gen-strengths-empty", G_, lambda e: sg(e, strengths=[]), InputError,
      r"strengths must be a non-empty list of numbers, got \[\]"),
    c("steer-gen-strengths-nan", G_, lambda e: sg(e, strengths=[0.0, NAN]), InputError,
      r"each strength must be a finite number, got nan"),
    c("steer-gen-strengths-repeat", G_, lambda e: sg(e, strengths=[1.0, 1.0]), InputError,
      r"strengths repeat a value: \[1\.0, 1\.0\]; list each strength once"),
    c("steer-gen-target-empty", G_, lambda e: sg(e, target=""), InputError, r"target must be a word"),
    c("steer-gen-target-empty-list", G_, lambda e: sg(e, target=[]), InputError, r"target must be a word .*got \[\]"),
    c("steer-gen-target-unknown-word", G_, lambda e: sg(e, target="zebra"), InputError,
      r"target holds 'zebra', which tiny-gpt2's tokenizer does not know \(it becomes '<unk>'\): no continuation can "
      r"contain it"),
    c("steer-gen-prompts-blank", G_, lambda e: sg(e, prompts=["  "]), InputError,
      r"prompts must be a non-empty list of strings"),
    c("steer-gen-max-new-tokens-zero", G_, lambda e: sg(e, max_new_tokens=0), InputError,
      r"max_new_tokens must be an int >= 1, got 0"),
    c("steer-gen-too-long", G_, lambda e: sg(e, max_new_tokens=100), InputError, r"Generate at most 58 tokens"),
    c("steer-gen-mlp", "M", lambda e: cs.steer_generation(e.M, [P], "l1", V, [0.0], target="cat"), InputError,
      r"generate needs a Hugging Face causal LM"),
    c("smg-directions-empty", G_, lambda e: smg(e, directions={}), InputError,
      r"directions must be a non-empty dict \{name: vector\}"),
    c("smg-direction-wrong-width", G_, lambda e: smg(e, directions={"cat": torch.ones(10)}), InterventionError,
      r"The direction has 10 dims, but the site 'layers\.1' is 64 wide"),
    c("smg-directions-differ-in-width", G_, lambda e: smg(e, directions={"cat": V, "dog": torch.ones(10)}),
      InputError, r"The direction vectors differ in width: \[64, 10\]"),
    c("smg-direction-nan", G_, lambda e: smg(e, directions={"cat": torch.full((64,), NAN)}), InputError,
      r"The direction 'cat' holds NaN or inf values"),
    c("smg-direction-named-none", G_, lambda e: smg(e, directions={"none": V}), InputError,
      r"A direction is named 'none', the name of the unsteered row .*pass baseline=False"),
    c("smg-strength-nan", G_, lambda e: smg(e, strength=NAN), InputError, r"strength must be a finite number, got nan"),
    c("smg-words-a-string", G_, lambda e: smg(e, words="cat"), InputError,
      r"words must be a list of words to count, got the string 'cat' .*write words=\['cat'\]"),
    c("smg-words-empty", G_, lambda e: smg(e, words=[]), InputError, r"words must be a non-empty list"),
    c("smg-words-repeat", G_, lambda e: smg(e, words=["cat", "cat"]), InputError, r"words lists a word twice"),
    c("smg-words-unknown", G_, lambda e: smg(e, words=["cat", "zebra"]), InputError,
      r"words holds 'zebra', which tiny-gpt2's tokenizer does not know"),
    c("smg-baseline-string", G_, lambda e: smg(e, baseline="no"), InputError,
      r"baseline must be True or False, got 'no'"),
    c("smg-positions-bogus", G_, lambda e: smg(e, positions="bogus"), InputError, r"positions must be 'all'"),
    # -- logit_lens / attention_patterns --------------------------------------------------------------------------------
    c("logit-lens-layer-out-of-range", G_, lambda e: cs.logit_lens(e.G, P, layers=[9]), InputError,
      r"layers holds 9, which is not a layer of this model: give ints from 0 to 3"),
    c("logit-lens-layer-negative-out-of-range", G_, lambda e: cs.logit_lens(e.G, P, layers=[-9]), InputError,
      r"layers holds -9"),
    c("logit-lens-layers-a-string", G_, lambda e: cs.logit_lens(e.G, P, layers="all"), InputError,
      r"layers must be None \(every layer\), a layer index or a non-empty list of them; got 'all'"),
    c("logit-lens-layers-strings", G_, lambda e: cs.logit_lens(e.G, P, layers=["1"]), InputError,
      r"layers holds '1'"),
    c("logit-lens-k-zero", G_, lambda e: cs.logit_lens(e.G, P, k=0), InputError,
      r"k \(how many top tokens to keep per cell\) must be an int from 1 to the vocabulary size 72; got 0"),
    c("logit-lens-k-negative", G_, lambda e: cs.logit_lens(e.G, P, k=-1), InputError, r"got -1"),
    c("logit-lens-answer-unknown-word", G_, lambda e: cs.logit_lens(e.G, P, answer="zebra"), InputError,
      r"answer 'zebra' is not in the tokenizer's vocabulary \(it would be '<unk>'\)"),
    c("logit-lens-answer-two-tokens", G_, lambda e: cs.logit_lens(e.G, P, answer="the cat"), InputError,
      r"answer 'the cat' is not one token"),
    c("logit-lens-answers-per-prompt-count", G_, lambda e: cs.logit_lens(e.G, PS, answer=["cat"]), InputError,
      r"answer lists 1 tokens for 2 prompts"),
    c("logit-lens-prompt-empty", G_, lambda e: cs.logit_lens(e.G, ""), InputError,
      r"prompts holds an empty prompt '': a lens reads the prompt's tokens"),
    c("logit-lens-mlp", "M", lambda e: cs.logit_lens(e.M, torch.ones(1, 8)), InputError,
      r"needs a transformer language model"),
    c("attention-heads-out-of-range", G_, lambda e: cs.attention_patterns(e.G, P, heads=[9]), InputError,
      r"heads holds 9, which is not a head of this model: give ints from 0 to 3"),
    c("attention-heads-a-string", G_, lambda e: cs.attention_patterns(e.G, P, heads="0"), InputError,
      r"heads must be None \(every head\)"),
    c("attention-heads-repeat", G_, lambda e: cs.attention_patterns(e.G, P, heads=[0, 0]), InputError,
      r"heads names a head twice"),
    c("attention-layers-out-of-range", G_, lambda e: cs.attention_patterns(e.G, P, layers=[5]), InputError,
      r"layers holds 5"),
    c("attention-run-of-another-model", "G F", lambda e: cs.attention_patterns(e.G, P, layers=[0], run=e.f_run),
      InputError, r"The run was made by another model than tiny-gpt2"),
    c("attention-run-of-other-prompts", G_,
      lambda e: cs.attention_patterns(e.G, "the cat", layers=[0], run=e.G.run("the cat sat", cache=e.sites)),
      InputError, r"The run's prompts have other lengths than these \(\[3\] tokens, these 2\)"),
    c("attention-run-of-other-prompts-tl", "TL",
      lambda e: cs.attention_patterns(e.TL, torch.tensor([[1, 2, 3]]),
                                      run=e.TL.run(torch.tensor([[1, 2, 3, 4, 5]]), cache=cs.attention_sites(e.TL))),
      InputError, r"other lengths than these \(\[5\] tokens, these 3\)"),
    c("attention-mlp", "M", lambda e: cs.attention_patterns(e.M, torch.ones(1, 8)), InputError,
      r"attention_patterns supports Hugging Face GPT-2"),
    # -- tuned_lens and its files ---------------------------------------------------------------------------------------
    c("tuned-lens-steps-zero", G_, lambda e: cs.tuned_lens(e.G, PS, steps=0), InputError,
      r"steps must be an int >= 1, got 0"),
    c("tuned-lens-lr-zero", G_, lambda e: cs.tuned_lens(e.G, PS, lr=0.0), InputError,
      r"lr must be a finite number > 0\.0, got 0\.0"),
    c("tuned-lens-lr-nan", G_, lambda e: cs.tuned_lens(e.G, PS, lr=NAN), InputError, r"lr must be .*got nan"),
    c("tuned-lens-batch-size-zero", G_, lambda e: cs.tuned_lens(e.G, PS, batch_size=0), InputError,
      r"batch_size must be an int >= 1"),
    c("tuned-lens-only-the-last-layer", G_, lambda e: cs.tuned_lens(e.G, PS, layers=[3]), InputError,
      r"layers=\[3\] names only the last block \(3\), .*needs no translator: give earlier layers \(0 to 2\)"),
    c("tuned-lens-layer-out-of-range", G_, lambda e: cs.tuned_lens(e.G, PS, layers=[7]), InputError,
      r"layers holds 7"),
    c("tuned-lens-prompts-empty", G_, lambda e: cs.tuned_lens(e.G, []), InputError, r"prompts is empty"),
    c("tuned-apply-answer-unknown", G_, lambda e: e.lens.apply(P, answer="zebra"), InputError,
      r"answer 'zebra' is not in the tokenizer's vocabulary"),
    c("tuned-apply-k-zero", G_, lambda e: e.lens.apply(P, k=0), InputError, r"k \(how many top tokens"),
    c("tuned-compare-layer-out-of-range", G_, lambda e: e.lens.compare(PS, layers=[8]), InputError,
      r"layers holds 8"),
    c("tuned-translate-layer-a-string", G_, lambda e: e.lens.translate("0", V), InputError,
      r"layer must be an int \(a block index, one of \[0, 1, 2, 3\]\), got '0'"),
    c("tuned-translate-wrong-width", G_, lambda e: e.lens.translate(0, torch.ones(10)), InputError,
      r"h is \(10,\), but the translators read the model's width 64"),
    c("tuned-init-meta-none", G_, lambda e: cs.TunedLens(e.G, {}, None), InputError,
      r"meta must be a dict of the lens's settings"),
    c("tuned-init-translator-shapes", G_, lambda e: cs.TunedLens(e.G, {0: (torch.ones(64, 32), V)}, {}), InputError,
      r"translators\[0\] must be \(W, b\): .*got \('float32 \(64, 32\)', 'float32 \(64,\)'\)"),
    c("tuned-load-missing-file", G_, lambda e: cs.TunedLens.load(e.files["root"] + "/nope.safetensors", e.G),
      InputError, r"No tuned lens file at .*give the path TunedLens\.save returned"),
    c("tuned-load-path-none", G_, lambda e: cs.TunedLens.load(None, e.G), InputError,
      r"TunedLens\.load takes a file path \(a str or pathlib\.Path\)"),
    c("tuned-load-garbage", G_, lambda e: lens_load(e, "lens_garbage"), InputError,
      r"is not a tuned lens file \(a safetensors file written by TunedLens\.save\)"),
    c("tuned-load-other-safetensors", G_, lambda e: lens_load(e, "lens_other"), InputError,
      r"is a safetensors file but not a causalscope tuned lens"),
    c("tuned-load-lens-of-another-model", G_, lambda e: lens_load(e, "lens_facts"), InputError,
      r"trained on a model with 8 layers of width 128; tiny-gpt2 has 4 layers of width 64\. Load it with the model"),
    c("tuned-load-header-missing", G_, lambda e: lens_load(e, "lens_no_header"), InputError,
      r"its header's 'n_layers' is missing, not a number: the file is damaged"),
    c("tuned-load-header-not-a-number", G_, lambda e: lens_load(e, "lens_bad_header"), InputError,
      r"its header's 'n_layers' is 'four', not a number"),
    c("tuned-load-meta-not-json", G_, lambda e: lens_load(e, "lens_bad_meta"), InputError,
      r"its header's settings \('meta'\) are not a JSON object"),
    c("tuned-load-nan-weights", G_, lambda e: lens_load(e, "lens_nan"), InputError,
      r"holds NaN or inf values in \['layers\.0\.weight'\]: the lens is damaged"),
    c("tuned-load-int-weights", G_, lambda e: lens_load(e, "lens_int"), InputError,
      r"translators\[0\] must be \(W, b\): float tensors .*got \('int64 \(64, 64\)', 'int64 \(64,\)'\)"),
    c("tuned-load-weight-without-bias", G_, lambda e: lens_load(e, "lens_no_pair"), InputError,
      r"holds a tensor 'layers\.0\.weight' that is not a translator's weight or bias \(or lacks its pair\)"),
    c("tuned-load-for-mlp", "M", lambda e: lens_load(e, "lens", "M"), InputError, r"needs a transformer language"),
    c("tuned-save-to-a-folder", G_, lambda e: e.lens.save(e.files["root"]), InputError,
      r"is a folder; give a file path such as .*lens\.safetensors"),
    c("tuned-save-path-none", G_, lambda e: e.lens.save(None), InputError, r"TunedLens\.save takes a file path"),
    # -- SAEs: files, constructors, sites, training, feature attribution ----------------------------------------------
    c("load-sae-missing-folder", "", lambda e: cs.load_sae(e.files["root"] + "/nope"), InputError,
      r"load_sae takes a folder holding cfg\.json and sae_weights\.safetensors .* is not there"),
    c("load-sae-a-file", "", lambda e: cs.load_sae(e.files["file"]), InputError, r"is a file"),
    c("load-sae-path-none", "", lambda e: cs.load_sae(None), InputError,
      r"load_sae takes a folder path \(a str or pathlib\.Path\).*got None"),
    c("load-sae-cfg-not-json", "", lambda e: cs.load_sae(e.files["sae_bad_json"]), InputError,
      r"cfg\.json' is not JSON"),
    c("load-sae-cfg-a-list", "", lambda e: cs.load_sae(e.files["sae_json_list"]), InputError,
      r"cfg\.json' holds list, not a JSON object"),
    c("load-sae-weights-garbage", "", lambda e: cs.load_sae(e.files["sae_bad_weights"]), InputError,
      r"sae_weights\.safetensors' is not a safetensors file"),
    c("load-sae-no-weights", "", lambda e: cs.load_sae(e.files["sae_no_weights"]), InputError,
      r"lacks sae_weights\.safetensors"),
    c("load-sae-wrong-shapes", "", lambda e: cs.load_sae(e.files["sae_wrong_shape"]), InputError,
      r"tensors do not fit one another: b_enc \(7,\) \(expected \(32,\)\)"),
    c("load-sae-unknown-architecture", "", lambda e: cs.load_sae(e.files["sae_gated"]), InputError,
      r"Unknown SAE architecture 'gated'.*not supported"),
    c("load-sae-k-not-a-number", "", lambda e: cs.load_sae(e.files["sae_k_text"]), InputError,
      r"cfg\.json's k must be an int, got 'x'"),
    c("load-sae-k-too-big", "", lambda e: cs.load_sae(e.files["sae_k_too_big"]), InputError,
      r"k must be an int from 1 to 32, got 999"),
    c("load-sae-d-in-not-a-number", "", lambda e: cs.load_sae(e.files["sae_d_in_text"]), InputError,
      r"cfg\.json's d_in must be an int, got 'sixty-four'"),
    c("load-sae-d-in-contradicts-weights", "", lambda e: cs.load_sae(e.files["sae_d_in_wrong"]), InputError,
      r"cfg\.json says d_in=10, but the weights have 64"),
    c("load-sae-nan-weights", "", lambda e: cs.load_sae(e.files["sae_nan"]), InputError,
      r"tensors \['W_enc'\] hold NaN or inf values"),
    c("load-sae-extra-tensor", "", lambda e: cs.load_sae(e.files["sae_extra"]), InputError,
      r"unexpected \['W_gate'\] \(a different architecture\?\)"),
    c("load-sae-cfg-dtype-unknown", "", lambda e: cs.load_sae(e.files["sae_dtype"]), InputError,
      r"dtype 'float8' is not one of .*pass dtype="),
    c("load-sae-training-json-garbage", "", lambda e: cs.load_sae(e.files["sae_bad_training"]), InputError,
      r"training\.json' is not JSON .*delete it"),
    c("load-sae-dtype-a-string", "", lambda e: cs.load_sae(e.files["sae"], dtype="float16"), InputError,
      r"dtype must be a float torch dtype such as torch\.float16 \(not a string\)"),
    c("load-sae-device-unknown", "", lambda e: cs.load_sae(e.files["sae"], device="gpu9"), InputError,
      r"device='gpu9' is not a device torch knows"),
    c("load-sae-name-an-int", "", lambda e: cs.load_sae(e.files["sae"], name=5), InputError,
      r"name must be a string"),
    c("load-bundled-sae-unknown", "", lambda e: load_bundled("facts-gpt-layers.9"), InputError,
      r"No bundled SAE 'facts-gpt-layers\.9'; did you mean 'facts-gpt-layers\.2'\?"),
    c("sae-n-latents-negative", "", lambda e: cs.SAE(8, -1), InputError, r"n_latents must be an int >= 1, got -1"),
    c("sae-topk-without-k", "", lambda e: cs.SAE(8, 8, architecture="topk"), InputError, r"A TopK SAE needs k="),
    c("sae-topk-k-above-latents", "", lambda e: cs.SAE(8, 8, architecture="topk", k=9), InputError,
      r"k must be an int from 1 to 8, got 9"),
    c("sae-d-out-differs", "", lambda e: cs.SAE(8, 8, d_out=4), InputError,
      r"d_out=4 differs from d_in=8: an SAE decodes into the activation it encodes.*Transcoder"),
    c("sae-name-an-int", "", lambda e: cs.SAE(8, 8, name=5), InputError, r"name must be a string \(or None\)"),
    c("sae-apply-b-dec-string", "", lambda e: cs.SAE(8, 8, apply_b_dec_to_input="no"), InputError,
      r"apply_b_dec_to_input must be True or False, got 'no'"),
    c("sae-from-dict-mismatched-shapes", "", lambda e: cs.SAE.from_dict(
        {"W_enc": torch.zeros(8, 4), "b_enc": torch.zeros(4), "W_dec": torch.zeros(5, 8), "b_dec": torch.zeros(8)}),
      InputError, r"do not fit one another: W_dec \(5, 8\) \(expected \(4, 8\)\)"),
    c("sae-from-dict-int-tensors", "", lambda e: cs.SAE.from_dict(
        {k: v.long() for k, v in e.sae.state_tensors().items()}), InputError,
      r"are not floats \(torch\.int64\); give float tensors, or dtype=torch\.float32"),
    c("sae-from-dict-nan", "", lambda e: cs.SAE.from_dict({**e.sae.state_tensors(), "b_enc": torch.full((32,), NAN)}),
      InputError, r"\['b_enc'\] hold NaN or inf values"),
    c("sae-encode-wrong-width", "", lambda e: e.sae.encode(torch.ones(3, 10)), InputError,
      r"The SAE reads 64 dimensions; got an activation of shape \(3, 10\)"),
    c("sae-decode-wrong-width", "", lambda e: e.sae.decode(torch.ones(3, 10)), InputError,
      r"decode takes latents \(\.\.\., 32\) \(what encode returns\); got Tensor \(3, 10\)"),
    c("sae-save-onto-a-file", "", lambda e: e.sae.save(e.files["file"]), InputError,
      r"is a file; SAE\.save writes a folder"),
    c("site-sae-of-another-width-run", G_, lambda e: e.G.run(P, {cs.Site("layers.1", sae=e.sae32): cs.Zero()}),
      SiteError, r"the SAE reads 32 dimensions, but the activation there has 64"),
    c("site-sae-of-another-width-cache", G_, lambda e: e.G.run(P, cache=[cs.Site("layers.1", sae=e.sae32)]),
      SiteError, r"the SAE reads 32 dimensions, but the activation there has 64"),
    c("site-sae-features-out-of-range", "", lambda e: sae_site(e, features=[32]), SiteError,
      r"features \[32\] are out of range: the SAE has 32 latents \(0 \.\. 31\)"),
    c("site-sae-features-negative", "", lambda e: sae_site(e, features=[-1]), SiteError,
      r"features \[-1\] are out of range"),
    c("site-sae-features-repeat", "", lambda e: sae_site(e, features=[1, 1]), SiteError, r"features repeat an index"),
    c("site-sae-features-empty", "", lambda e: sae_site(e, features=[]), SiteError,
      r"features is empty: select at least one index, or pass None"),
    c("site-sae-not-an-sae", "", lambda e: cs.Site("layers.1", sae=torch.nn.Linear(3, 3)), SiteError,
      r"sae= takes a sparse autoencoder.*got Linear, which lacks encode, W_dec, d_in"),
    c("train-sae-n-latents-zero", G_, lambda e: train(e, n_latents=0), InputError,
      r"n_latents must be an int >= 1, got 0\. It is the SAE's number of latents"),
    c("train-sae-k-above-n-latents", G_, lambda e: train(e, k=9), InputError,
      r"k must be an int from 1 to 8, got 9\. It is the number of latents kept per token"),
    c("train-sae-k-zero", G_, lambda e: train(e, k=0), InputError, r"k must be an int from 1 to 8, got 0"),
    c("train-sae-lr-zero", G_, lambda e: train(e, lr=0.0), InputError, r"lr must be a finite number > 0\.0"),
    c("train-sae-steps-string", G_, lambda e: train(e, steps="10"), InputError, r"steps must be an int >= 1, got '10'"),
    c("train-sae-k-and-l1", G_, lambda e: train(e, l1=0.1), InputError, r"needs exactly one of k= .* and l1="),
    c("train-sae-name-an-int", G_, lambda e: train(e, name=5), InputError, r"name must be a string"),
    c("train-sae-prompts-empty", G_, lambda e: cs.train_sae(e.G, [], "layers.1", 8, k=2), InputError,
      r"prompts is empty"),
    c("feature-attribution-site-without-sae", G_,
      lambda e: cs.feature_attribution(e.G, P, PS[1], cs.Site("layers.1"), cs.logit(3)), InputError,
      r"give a site with sae=.*for plain activations use cs\.attribution_patching"),
    c("feature-attribution-lengths-differ", G_,
      lambda e: cs.feature_attribution(e.G, P, "a dog ran", sae_site(e), cs.logit(3)), InputError,
      r"Clean and corrupted inputs must have the same shape .*got \(1, 6\) and \(1, 3\)"),
    c("feature-attribution-counts-differ", G_,
      lambda e: cs.feature_attribution(e.G, PS, [P], sae_site(e), cs.logit(3)), InputError,
      r"got \(2, 6\) and \(1, 6\)"),
    c("feature-attribution-metric-a-string", G_,
      lambda e: cs.feature_attribution(e.G, P, PS[1], sae_site(e), "logit"), InputError,
      r"metric must be a callable"),
    c("feature-attribution-empty", G_, lambda e: cs.feature_attribution(e.G, [], [], sae_site(e), cs.logit(3)),
      InputError, r"clean is empty"),
    # -- executors, sweep, bundles --------------------------------------------------------------------------------------
    c("ray-workers-zero", "", lambda e: cs.RayExecutor(workers=0), InputError,
      r"workers must be an int >= 1, got 0\. It is the number of Ray actors"),
    c("ray-workers-negative", "", lambda e: cs.RayExecutor(workers=-1), InputError, r"got -1"),
    c("ray-workers-string", "", lambda e: cs.RayExecutor(workers="2"), InputError, r"got '2'"),
    c("ray-max-retries-negative", "", lambda e: cs.RayExecutor(max_retries=-1), InputError,
      r"max_retries must be an int >= 0, got -1"),
    c("ray-cpus-nan", "", lambda e: cs.RayExecutor(cpus_per_worker=NAN), InputError,
      r"cpus_per_worker must be a finite number > 0, got nan"),
    c("ray-gpus-nan", "", lambda e: cs.RayExecutor(gpus_per_worker=NAN), InputError,
      r"gpus_per_worker must be a finite number >= 0, got nan"),
    c("ray-start-timeout-zero", "", lambda e: cs.RayExecutor(start_timeout=0), InputError,
      r"start_timeout must be a finite number > 0, got 0"),
    c("ray-address-an-int", "", lambda e: cs.RayExecutor(address=5), InputError,
      r"address must be a Ray cluster address such as 'auto'"),
    c("sweep-fn-not-callable", G_, lambda e: sweep(e, fn=5), InputError, r"sweep's fn must be a function fn\(model, "),
    c("sweep-fn-of-one-argument", G_, lambda e: sweep(e, fn=lambda m: 1), InputError,
      r"sweep calls fn\(model, item\) with two arguments, but .* takes \(m\)"),
    c("sweep-items-empty", G_, lambda e: sweep(e, items=[]), InputError, r"sweep: no items to run; give at least one"),
    c("sweep-items-a-string", G_, lambda e: sweep(e, items="abc"), InputError, r"items must be a list of items"),
    c("sweep-shards-zero", G_, lambda e: sweep(e, shards=0), InputError,
      r"shards must be an int >= 1, got 0\. It is the number of pieces"),
    c("sweep-shards-negative", G_, lambda e: sweep(e, shards=-3), InputError, r"shards must be an int >= 1, got -3"),
    c("sweep-shards-string", G_, lambda e: sweep(e, shards="x"), InputError, r"shards must be an int >= 1, got 'x'"),
    c("sweep-out-a-file", G_, lambda e: sweep(e, out=e.files["file"]), InputError,
      r"is a file; give a folder for the run's shards"),
    c("sweep-out-unwritable", G_, lambda e: sweep(e, out=e.files["file"] + "/sub"), InputError,
      r"cannot create the out= folder .* give a folder you can write to"),
    c("sweep-out-empty-string", G_, lambda e: sweep(e, out=""), InputError,
      r"out must be a folder path \(a str or pathlib\.Path\) .*got ''"),
    c("sweep-out-an-int", G_, lambda e: sweep(e, out=5), InputError, r"out must be a folder path .*got 5"),
    c("sweep-executor-a-string", G_, lambda e: sweep(e, executor="ray"), InputError,
      r"executor must be None \(in process\), causalscope\.RayExecutor\(\.\.\.\)"),
    c("sweep-seed-string", G_, lambda e: sweep(e, seed="0"), InputError, r"seed must be an int >= 0"),
    c("sweep-model-none", "", lambda e: sweep(e, model=None), InputError,
      r"model must be a bundled model name, .*got NoneType None"),
    c("sweep-model-spec-of-nothing", "", lambda e: sweep(e, model=cs.ModelSpec(None)), InputError,
      r"ModelSpec's source must be a bundled model name"),
    c("sweep-model-spec-name-int", "", lambda e: sweep(e, model=cs.ModelSpec("tiny-gpt2", name=5)), InputError,
      r"ModelSpec's name must be a string"),
    c("sweep-model-spec-generic-string", "", lambda e: sweep(e, model=cs.ModelSpec("tiny-gpt2", generic="yes")),
      InputError, r"ModelSpec's generic must be True or False, got 'yes'"),
    c("spec-of-a-spec", "", lambda e: cs.ModelSpec(cs.ModelSpec("tiny-gpt2")), InputError,
      r"ModelSpec\(ModelSpec\(\.\.\.\)\): give the model itself"),
    c("bundle-load-a-folder", "", lambda e: load_bundle(e.files["root"]), InputError,
      r"no bundle at .* \(a folder\): give the path save_bundle returned"),
    c("bundle-load-garbage", "", lambda e: load_bundle(e.files["bundle_garbage"]), InputError,
      r"is not a causalscope bundle \(a \.npz written by save_bundle\); give a file it wrote"),
    c("bundle-load-none", "", lambda e: load_bundle(None), InputError, r"load_bundle takes a file path"),
    c("bundle-save-to-a-folder", "", lambda e: save_bundle(e.files["root"], [1]), InputError,
      r"is a folder; save_bundle writes one file"),
    c("bundle-save-missing-folder", "", lambda e: save_bundle(e.files["root"] + "/nodir/b.npz", [1]), InputError,
      r"the folder .*nodir' does not exist; create it first"),
    c("bundle-save-unsaveable", "", lambda e: save_bundle(e.files["root"] + "/b.npz", [object()]), InputError,
      r"cannot save a object .*return one of these"),
]


@pytest.mark.parametrize("models, call, err, pattern", [pytest.param(*row[1:], id=row[0]) for row in CASES])
def test_bad_input(env, models, call, err, pattern):
    """The call raises exactly ``err`` (a causalscope error), its message matches, and every model it read is as it
    was before."""
    modules = [getattr(env, name).module for name in models]
    assert_refused(lambda: call(env), modules, err, pattern)


def test_the_table_is_large_spread_and_new():
    """At least 60 cases, every id once, on every family of the newer APIs; none repeats an id of the older table."""
    ids = [row[0] for row in CASES]
    assert len(ids) == len(set(ids)) >= 60
    prefixes = {i.split("-")[0] for i in ids}
    assert {"gen", "steer", "smg", "logit", "attention", "tuned", "load", "sae", "site", "train", "feature", "ray",
            "sweep", "spec", "bundle"} <= prefixes
    older = (pathlib.Path(__file__).parent / "test_bad_inputs.py").read_text()
    assert not set(re.findall(r'c\("([a-z0-9-]+)"', older)) & set(ids)


# ---------------------------------------------------------------------------------------------------------------------
# Checked before anything is computed: the model does not run
# ---------------------------------------------------------------------------------------------------------------------
BEFORE_COMPUTE = {
    "logit-lens-answer": lambda e: cs.logit_lens(e.G, P, answer="zebra"),
    "tuned-apply-answer": lambda e: e.lens.apply(P, answer="zebra"),
    "train-sae-k": lambda e: train(e, k=9),
    "train-sae-n-latents": lambda e: train(e, n_latents=0),
    "steer-gen-target": lambda e: sg(e, target="zebra"),
    "steer-gen-strengths": lambda e: sg(e, strengths=[1.0, 1.0]),
    "smg-words": lambda e: smg(e, words="cat"),
    "gen-float-ids": lambda e: e.G.generate(torch.ones(1, 3)),
    "gen-sae-of-another-width": lambda e: e.G.generate(P, {cs.Site("layers.1", sae=e.sae32): cs.Zero()}),
    "sweep-fn-arity": lambda e: sweep(e, fn=lambda m: 1),
}


@pytest.mark.parametrize("name", list(BEFORE_COMPUTE))
def test_refused_before_the_model_runs(env, name):
    calls: list[str] = []
    hook = env.G.module.register_forward_pre_hook(lambda mod, args: calls.append("forward"))
    try:
        with pytest.raises(CausalScopeError):
            BEFORE_COMPUTE[name](env)
    finally:
        hook.remove()
    assert not calls, f"{name}: the model ran before the argument was refused"


def test_the_run_checks_accept_the_run_of_these_prompts(env):
    """attention_patterns(run=...) takes a run of these prompts (ragged, and TransformerLens's (B, H, T, T) patterns)
    and gives what it computes itself."""
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    for m, prompts in ((env.G, ["the cat", "a dog ran by"]), (env.TL, ids)):
        given = cs.attention_patterns(m, prompts, run=m.run(prompts, cache=cs.attention_sites(m)))
        assert torch.equal(given.values.isnan(), cs.attention_patterns(m, prompts).values.isnan())
        torch.testing.assert_close(given.values, cs.attention_patterns(m, prompts).values, equal_nan=True)


def test_executor_argument_errors_do_not_import_ray():
    """RayExecutor's and sweep's argument errors are raised before Ray is imported (a fresh interpreter)."""
    code = """
import sys, causalscope as cs
for call in (lambda: cs.RayExecutor(workers=0), lambda: cs.RayExecutor(max_retries=-1),
             lambda: cs.RayExecutor(cpus_per_worker=float("nan")), lambda: cs.RayExecutor(address=5),
             lambda: cs.sweep(lambda m, x: x, [1], model="tiny-gpt2", executor=cs.RayExecutor(workers=-2)),
             lambda: cs.sweep(lambda m, x: x, [1], model="tiny-gpt2", shards=0)):
    try:
        call()
    except cs.InputError:
        pass
    else:
        raise SystemExit("not refused")
print("ray" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
