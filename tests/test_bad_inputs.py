"""Bad inputs to every public method: each raises its causalscope error type, with a message that names the problem
and the fix, before anything is computed; and the model comes back exactly as it was handed over.

One table (``CASES``): id, the models the call reads (checked unchanged with ``tests/model_state.py``), the call,
the error type and a regex over the message. The categories the issue owner attacked with (issue 16) each have
several rows, on several methods: prompts longer than the model's positions, meta-device models, dtype / width
mismatches, malformed Hugging Face folders and result files, negative or zero counts, string / float seeds, a
single string where a list of sites belongs, slices where a sweep takes a list, non-callable metrics, unknown answer
words, a subject with zero embedding variance, positions out of range, a rank-deficient projection basis, and
wrong types everywhere (None, dicts, floats for ints, bools for ints). ``tests/core/test_errors.py`` holds the
engine-level table; none of its cases is repeated here.

Rows marked xfail name the library file that still needs the fix (strict: they fail loudly once it is made).
"""
from __future__ import annotations

import json
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import causalscope as cs
from causalscope import InputError, InterventionError, PlanError, SiteError, circuits
from causalscope.abstraction import AlignmentSiteError
from causalscope.zoo import build_mlp, build_tiny_lm
from conftest import hooked_transformer
from model_state import assert_refused

P6 = "the cat sat on the mat"          # 6 tokens of the tiny models' word vocabulary
P6B = "a dog ran by the tree"
LONG = " ".join(["the"] * 70)            # more tokens than tiny-gpt2's 64 learned positions
LONG_B = " ".join(["a"] * 70)
FACT = "the old king saw a river near the city"
NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------------------------------------------------
# Models and data: built once for the module (the cases only read them; each case checks that)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory) -> types.SimpleNamespace:
    e = types.SimpleNamespace()
    e.G, e.F, e.A, e.D, e.M = (cs.load(n) for n in ("tiny-gpt2", "facts-gpt", "adder", "digits-mlp", "mlp"))
    e.C = circuits.load_case("reverse")
    e.T = cs.load("tracr-reverse")
    e.TL = cs.load(hooked_transformer())  # TransformerLens: 16 positions
    e.tt = e.C.inputs[:6]
    g = torch.Generator().manual_seed(0)
    e.X, e.Y = torch.randn(24, 64, generator=g), torch.arange(24) % 4
    e.dirs = cs.class_directions(e.D, (e.X, e.Y), "act2")
    e.cm = cs.adder_causal_model()
    e.ds = cs.counterfactuals(vary="A", n=8, seed=0)
    e.hf = _hf_folders(tmp_path_factory.mktemp("hf"))
    e.files = _result_files(tmp_path_factory.mktemp("results"))
    return e


def _hf_folders(root) -> dict[str, str]:
    """Local 'Hugging Face' folders, each broken in one way."""
    gpt2 = {"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2, "vocab_size": 10, "n_positions": 16}
    folders = {"bad_json": "{not json", "json_list": "[1, 2]", "no_model_type": json.dumps({"hidden_size": 8}),
               "unknown_model_type": json.dumps({"model_type": "gpt-zebra"}), "no_weights": json.dumps(gpt2),
               "bad_weights": json.dumps(gpt2), "no_config": None}
    out = {}
    for name, config in folders.items():
        d = root / name
        d.mkdir()
        if config is not None:
            (d / "config.json").write_text(config)
        out[name] = str(d)
    (root / "bad_weights" / "model.safetensors").write_bytes(b"not a safetensors file")
    return out


def _result_files(root) -> dict[str, str]:
    """Result files: a real one cut short, one with another program's header, one that is not an archive."""
    good = cs.LabelledArray(torch.arange(6.0).view(2, 3), ["a", "b"], name="x").save(root / "good.npz")
    data = good.read_bytes()
    (root / "truncated.npz").write_bytes(data[: len(data) // 2])
    np.savez(root / "wrong_header.npz", values=np.zeros(3), header=np.array(json.dumps({"format": "other"})))
    (root / "garbage.npz").write_bytes(b"garbage, not a zip archive")
    return {"truncated": str(root / "truncated.npz"), "wrong_header": str(root / "wrong_header.npz"),
            "garbage": str(root / "garbage.npz"), "missing": str(root / "missing.npz"), "folder": str(root)}


def meta_lm() -> cs.Model:
    with torch.device("meta"):
        model, tok = build_tiny_lm("gpt2")
    return cs.load(model, tok)


def meta_mlp() -> cs.Model:
    with torch.device("meta"):
        return cs.load(build_mlp())


def flat_subject_lm() -> cs.Model:
    """tiny-gpt2 (its own instance) whose embedding of 'cat' is constant: the subject 'cat' has std 0."""
    model, tok = build_tiny_lm("gpt2")
    with torch.no_grad():
        model.transformer.wte.weight[tok.convert_tokens_to_ids("cat")] = 0.5
    return cs.load(model, tok)


def basis(*cols: torch.Tensor) -> torch.Tensor:
    return torch.stack(cols, 1)


E64 = torch.eye(64)

Case = tuple[str, tuple[str, ...], Callable[[Any], Any], type[Exception], str, str | None]


def c(name: str, models: str, call: Callable[[Any], Any], err: type[Exception], pattern: str,
      xfail: str | None = None) -> Case:
    return (name, tuple(models.split()), call, err, pattern, xfail)


# ---------------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------------
CASES: list[Case] = [
    # -- cs.load: names, objects, malformed Hugging Face folders, meta-device weights -----------------------------------
    c("load-empty-name", "", lambda e: cs.load(""), InputError, r"empty name; give a bundled model name \(adder"),
    c("load-blank-name", "", lambda e: cs.load("   "), InputError, r"empty name"),
    c("load-none", "", lambda e: cs.load(None), InputError, r"takes a bundled model name, .*torch\.nn\.Module; got NoneType"),
    c("load-dict", "", lambda e: cs.load({"model": "tiny-gpt2"}), InputError, r"got dict"),
    c("load-kwargs-on-bundled", "", lambda e: cs.load("tiny-gpt2", dtype=torch.float16), InputError,
      r"from_pretrained arguments \(dtype\) apply only to a Hub id or a local folder.*model\.to\(dtype\)"),
    c("load-folder-without-config", "", lambda e: cs.load(e.hf["no_config"]), InputError, r"has no config\.json"),
    c("load-config-not-json", "", lambda e: cs.load(e.hf["bad_json"]), InputError,
      r"config\.json' is not valid JSON .*save_pretrained"),
    c("load-config-a-list", "", lambda e: cs.load(e.hf["json_list"]), InputError,
      r"holds a JSON list, not an object"),
    c("load-config-without-model-type", "", lambda e: cs.load(e.hf["no_model_type"]), InputError,
      r"has no \"model_type\" .*Add it, or re-save"),
    c("load-unknown-model-type", "", lambda e: cs.load(e.hf["unknown_model_type"]), InputError,
      r"model_type 'gpt-zebra', which transformers .* does not know\..*Fix the model_type, or upgrade"),
    c("load-folder-without-weights", "", lambda e: cs.load(e.hf["no_weights"]), InputError,
      r"has a config\.json but no weights .*save_pretrained\(folder\)"),
    c("load-corrupt-weights", "", lambda e: cs.load(e.hf["bad_weights"]), InputError,
      r"transformers could not load the Hugging Face directory .*Fix the folder"),
    c("load-meta-lm", "", lambda e: meta_lm(), InputError,
      r"weights are on the meta device \(module 'transformer\.wte' .*Load real weights first"),
    c("load-meta-module", "", lambda e: meta_mlp(), InputError, r"weights are on the meta device \(module 'net\.0'"),
    c("load-name-not-str", "", lambda e: cs.load(build_mlp(), name=5), InputError, r"name must be a string .*got int 5"),
    c("load-tokenizer-a-name", "", lambda e: cs.load(build_mlp(), "gpt2"), InputError,
      r"tokenizer must be a tokenizer object .*got str 'gpt2'.*load the tokenizer yourself"),
    c("load-generic-not-bool", "", lambda e: cs.load(build_mlp(), generic="yes"), InputError,
      r"generic must be True or False, got 'yes'"),
    # -- cs.load_result: files that are not (whole) results ----------------------------------------------------------
    c("load-result-missing", "", lambda e: cs.load_result(e.files["missing"]), InputError, r"no causalscope result file"),
    c("load-result-folder", "", lambda e: cs.load_result(e.files["folder"]), InputError, r"no causalscope result file"),
    c("load-result-none", "", lambda e: cs.load_result(None), InputError, r"path"),
    c("load-result-garbage", "", lambda e: cs.load_result(e.files["garbage"]), InputError,
      r"is not a causalscope result file"),
    c("load-result-truncated", "", lambda e: cs.load_result(e.files["truncated"]), InputError,
      r"is not a causalscope result file"),
    c("load-result-wrong-header", "", lambda e: cs.load_result(e.files["wrong_header"]), InputError,
      r"is not a causalscope result file"),
    # -- prompts longer than the model's positions -------------------------------------------------------------------
    c("run-prompt-too-long", "G", lambda e: e.G.run(LONG), InputError,
      r"70 tokens, but tiny-gpt2 has position embeddings for at most 64 .*Shorten the prompt"),
    c("run-token-ids-too-long", "F", lambda e: e.F.run(torch.zeros(1, 40, dtype=torch.long)), InputError,
      r"40 tokens, but facts-gpt has position embeddings for at most 32"),
    c("run-transformer-lens-too-long", "TL", lambda e: e.TL.run(torch.zeros(1, 20, dtype=torch.long)), InputError,
      r"20 tokens, but this HookedTransformer has position embeddings for at most n_ctx=16"),
    c("trace-prompt-too-long", "G", lambda e: cs.causal_trace(e.G, LONG + " cat", "cat", samples=2), InputError,
      r"71 tokens, but tiny-gpt2 has position embeddings for at most 64"),
    c("trace-average-prompt-too-long", "G",
      lambda e: cs.trace_average(e.G, [(LONG + " cat", "cat")], kinds=["hidden"], samples=2, n_boot=5), InputError,
      r"71 tokens, .*at most 64"),
    c("patching-prompts-too-long", "G", lambda e: cs.activation_patching(e.G, LONG, LONG_B, "resid_pre", cs.logit(3)),
      InputError, r"70 tokens, .*at most 64"),
    c("attribution-prompts-too-long", "G",
      lambda e: cs.attribution_patching(e.G, LONG, LONG_B, "resid_pre", cs.logit(3)), InputError, r"at most 64"),
    c("ig-prompts-too-long", "G", lambda e: cs.integrated_gradients(e.G, LONG, LONG_B, "layers.1", metric=cs.logit(3)),
      InputError, r"at most 64"),
    c("mediation-prompts-too-long", "G",
      lambda e: cs.mediation(e.G, ([LONG], [LONG_B]), "resid_pre", metric=cs.logit(3), n_boot=5), InputError,
      r"at most 64"),
    # -- meta-device models reach no method ----------------------------------------------------------------------------
    c("trace-meta-model", "", lambda e: cs.causal_trace(meta_lm(), P6, "cat"), InputError, r"meta device"),
    c("patching-meta-model", "", lambda e: cs.activation_patching(meta_lm(), P6, P6B, "resid_pre", cs.logit(3)),
      InputError, r"meta device"),
    # -- dtype / width mismatches between the input and the model ------------------------------------------------------
    c("forward-from-float64-hidden", "G", lambda e: e.G.forward_from(torch.zeros(1, 3, 64, dtype=torch.float64)),
      InputError, r"hidden states of dtype torch\.float64, but tiny-gpt2's blocks compute in torch\.float32.*hidden\.to"),
    c("forward-from-layer-a-string", "G", lambda e: e.G.forward_from(torch.zeros(1, 3, 64), layer="1"), InputError,
      r"forward_from's layer must be an int, got str '1'"),
    c("ig-baseline-other-dtype", "M",
      lambda e: cs.integrated_gradients(e.M, torch.ones(2, 16), torch.zeros(2, 16, dtype=torch.float64), "net.0",
                                        target=0), InputError,
      r"dtype mismatch between inputs and baseline .*torch\.float32, the baseline torch\.float64.*baseline\.to"),
    c("mediation-adder-wrong-width", "A", lambda e: cs.mediation(e.A, (torch.zeros(4, 4), torch.ones(4, 4)), "neurons"),
      InputError, r"adder takes inputs shaped \(batch, 3\): the columns A, B, C; got \(\d+, 4\)"),
    c("class-directions-wrong-width", "D", lambda e: cs.class_directions(e.D, (torch.zeros(24, 63), e.Y), "act2"),
      InputError, r"digits MLP takes 64 values per input .*got inputs shaped \(24, 63\)"),
    c("steer-wrong-width", "D", lambda e: cs.steer(e.D, torch.zeros(4, 63), "act2", e.dirs.direction(1), [1.0]),
      InputError, r"digits MLP takes 64 values per input"),
    c("restore-wrong-width", "D", lambda e: cs.corrupt_and_restore(e.D, torch.zeros(5, 70), sites=["act2"]),
      InputError, r"digits MLP takes 64 values per input"),
    # -- negative / zero / float / bool counts -------------------------------------------------------------------------
    c("trace-samples-bool", "G", lambda e: cs.causal_trace(e.G, P6, "cat", samples=True), InputError,
      r"samples must be an int >= 1, got True \(a bool\)"),
    c("trace-window-bool", "G", lambda e: cs.causal_trace(e.G, P6, "cat", kind="mlp", window=True, samples=2),
      InputError, r"window must be an int >= 1, got True"),
    c("trace-window-float", "G", lambda e: cs.causal_trace(e.G, P6, "cat", kind="mlp", window=2.0, samples=2),
      InputError, r"window must be an int >= 1, got 2\.0"),
    c("trace-average-n-boot-negative", "G", lambda e: cs.trace_average(e.G, [(P6, "cat")], n_boot=-1), InputError,
      r"n_boot must be an int >= 1, got -1\. It is the number of bootstrap resamples"),
    c("trace-average-n-boot-zero", "G", lambda e: cs.trace_average(e.G, [(P6, "cat")], n_boot=0), InputError,
      r"n_boot must be an int >= 1, got 0"),
    c("trace-average-n-boot-float", "G", lambda e: cs.trace_average(e.G, [(P6, "cat")], n_boot=10.5), InputError,
      r"n_boot must be an int >= 1, got 10\.5"),
    c("trace-average-samples-zero", "G", lambda e: cs.trace_average(e.G, [(P6, "cat")], samples=0), InputError,
      r"samples must be an int >= 1, got 0"),
    c("mediation-n-boot-float", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", n_boot=2.5), InputError,
      r"n_boot must be >= 1, got 2\.5 \(an int"),
    c("counterfactuals-n-string", "", lambda e: cs.counterfactuals(n="5"), InputError,
      r"n must be an int >= 1, got '5'\. It is the number of base / source pairs"),
    c("counterfactuals-n-float", "", lambda e: cs.counterfactuals(n=2.5), InputError, r"n must be an int >= 1, got 2\.5"),
    c("counterfactuals-n-bool", "", lambda e: cs.counterfactuals(n=True), InputError, r"got True \(a bool\)"),
    c("patching-top-negative", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, ["layers.1"], cs.logit(3)).top(-1), InputError,
      r"k must be an int >= 1, got -1\. It is how many cells to list"),
    c("probe-steering-max-inputs-zero", "D",
      lambda e: cs.probe_steering(e.D, (e.X, e.Y), "act2", 0, 1, [1.0], max_inputs=0), InputError,
      r"max_inputs must be an int >= 1, got 0"),
    c("token-classes-negative", "", lambda e: cs.token_classes(-1, 2, 6), InputError, r"b must be an int >= 0, got -1"),
    c("token-classes-empty-span", "", lambda e: cs.token_classes(3, 2, 6), InputError,
      r"needs a subject span 0 <= b < e <= T .*got b=3, e=2, T=6"),
    c("token-classes-past-the-end", "", lambda e: cs.token_classes(1, 8, 6), InputError, r"got b=1, e=8, T=6"),
    c("trace-samples-zero", "G", lambda e: cs.causal_trace(e.G, P6, "cat", samples=0), InputError,
      r"samples must be an int >= 1, got 0"),
    c("mediation-n-boot-negative", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", n_boot=-1), InputError,
      r"n_boot must be >= 1, got -1"),
    c("iia-n-negative", "A", lambda e: cs.abstraction_iia(e.A, e.cm, {"A": "l1"}, n=-1), InputError,
      r"n must be a positive int, got -1"),
    c("alignment-search-n-boot-negative", "A", lambda e: cs.alignment_search(e.A, e.cm, "A", n=10, n_boot=-1),
      InputError, r"n_boot must be a positive int, got -1"),
    c("das-k-zero", "A", lambda e: cs.das(e.A, e.cm, "A", "l1", k=0), InputError,
      r"k \(the subspace dimension\) must be an int >= 1, got 0"),
    c("das-lr-nan", "A", lambda e: cs.das(e.A, e.cm, "A", "l1", lr=NAN), InputError, r"lr must be a positive number"),
    c("ig-steps-zero", "M", lambda e: cs.integrated_gradients(e.M, torch.ones(2, 16), torch.zeros(2, 16), "net.0",
                                                              target=0, steps=0), InputError,
      r"steps must be an int >= 1, got 0"),
    c("probe-steering-n-random-zero", "D",
      lambda e: cs.probe_steering(e.D, (e.X, e.Y), "act2", 0, 1, [1.0], n_random=0), InputError,
      r"n_random must be a positive int"),
    c("node-effects-pairs-negative", "C", lambda e: cs.node_effects(e.C, pairs=-1), InputError,
      r"pairs must be 'all' .*or a positive int .*got -1"),
    c("subspace-effects-k-zero", "C", lambda e: cs.subspace_effects(e.C, k=0), InputError,
      r"k \(the number of PCA components\) must be an int from 1 to"),
    c("eap-ig-steps-negative", "T", lambda e: circuits.eap_ig(e.T, e.tt, steps=-1), InputError,
      r"steps must be an int >= 1, got -1"),
    c("acdc-threshold-string", "T", lambda e: circuits.acdc(e.T, e.tt, threshold="small"), InputError,
      r"threshold must be"),
    c("eap-ig-steps-float", "T", lambda e: circuits.eap_ig(e.T, e.tt, steps=2.5), InputError, r"steps must be"),
    # -- seeds must be ints ----------------------------------------------------------------------------------------------
    c("trace-seed-string", "G", lambda e: cs.causal_trace(e.G, P6, "cat", seed="abc", samples=2), InputError,
      r"seed must be an int >= 0 \(e\.g\. seed=0\), got 'abc'"),
    c("trace-seed-numeric-string", "G", lambda e: cs.causal_trace(e.G, P6, "cat", seed="3", samples=2), InputError,
      r"seed must be an int >= 0 .*got '3'"),
    c("trace-seed-float", "G", lambda e: cs.causal_trace(e.G, P6, "cat", seed=1.5, samples=2), InputError,
      r"got 1\.5"),
    c("trace-seed-none", "G", lambda e: cs.causal_trace(e.G, P6, "cat", seed=None, samples=2), InputError,
      r"seed must be an int >= 0 .*got None"),
    c("trace-average-seed-string", "G", lambda e: cs.trace_average(e.G, [(P6, "cat")], seed="x"), InputError,
      r"seed must be an int >= 0 .*got 'x'"),
    c("mediation-seed-string", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", seed="x"), InputError,
      r"seed must be an int >= 0 .*got 'x'"),
    c("mediation-seed-float", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", seed=1.5), InputError, r"got 1\.5"),
    c("iia-seed-string", "A", lambda e: cs.abstraction_iia(e.A, e.cm, {"A": cs.Site("l1", neurons=1)}, n=10, seed="x"),
      InputError, r"seed must be an int >= 0 .*got 'x'"),
    c("das-seed-string", "A", lambda e: cs.das(e.A, e.cm, "A", "l1", seed="x", epochs=1, n_train=8, n_test=8),
      InputError, r"seed must be an int >= 0 .*got 'x'"),
    c("causal-model-counterfactuals-seed", "", lambda e: e.cm.counterfactuals(n=5, intervene="A", seed="x"), InputError,
      r"seed must be an int >= 0"),
    c("counterfactuals-seed-float", "", lambda e: cs.counterfactuals(seed=1.5), InputError, r"got 1\.5"),
    c("corrupt-seed-string", "", lambda e: cs.corrupt(e.X, seed="x"), InputError, r"seed must be an int >= 0"),
    c("restore-seed-string", "D", lambda e: cs.corrupt_and_restore(e.D, e.X, sites=["act2"], seed="x"), InputError,
      r"seed must be an int >= 0"),
    c("probe-seed-string", "D", lambda e: cs.probe(e.D, (e.X, e.Y), "act2", seed="x"), InputError,
      r"seed must be an int >= 0"),
    c("probe-steering-seed-string", "D", lambda e: cs.probe_steering(e.D, (e.X, e.Y), "act2", 0, 1, [1.0], seed="x"),
      InputError, r"seed must be an int >= 0"),
    c("noise-seed-string", "", lambda e: cs.Noise(1.0, seed="a"), InterventionError,
      r"Noise seed must be an int >= 0 .*got 'a'"),
    c("resample-seed-float", "", lambda e: cs.Resample(None, seed=1.5), InterventionError,
      r"Resample seed must be an int >= 0 .*got 1\.5"),
    c("node-effects-seed-string", "C", lambda e: cs.node_effects(e.C, seed="x", pairs=4), InputError, r"seed must be"),
    c("acdc-seed-string", "T", lambda e: circuits.acdc(e.T, e.tt, seed="x"), InputError, r"seed must be"),
    # -- a single string where a list of sites belongs -----------------------------------------------------------------
    c("run-cache-a-string", "G", lambda e: e.G.run(P6, cache="layers.1"), PlanError,
      r"cache must be a list of sites, got the single site 'layers\.1': write cache=\['layers\.1'\]"),
    c("run-grads-a-string", "G", lambda e: e.G.run(P6, grads="layers.1", metric=cs.logit(3)), PlanError,
      r"grads must be a list of sites.*grads=\['layers\.1'\]"),
    c("run-cache-a-site", "G", lambda e: e.G.run(P6, cache=cs.Site("layers.1")), PlanError,
      r"cache must be a list of sites, got the single site"),
    c("trace-average-kinds-a-string", "G", lambda e: cs.trace_average(e.G, [(P6, "cat")], kinds="mlp"), InputError,
      r"kinds must be a non-empty list .*kinds=\['mlp'\]\); got 'mlp'"),
    c("trace-average-kinds-empty", "G", lambda e: cs.trace_average(e.G, [(P6, "cat")], kinds=[]), InputError,
      r"kinds must be a non-empty list"),
    c("trace-average-kinds-repeat", "G", lambda e: cs.trace_average(e.G, [(P6, "cat")], kinds=["mlp", "mlp"]),
      InputError, r"kinds lists a kind twice"),
    c("embedding-std-subject-int", "G", lambda e: cs.embedding_std(e.G, [5]), InputError,
      r"subjects must be a list of strings .*got \[5\]"),
    c("embedding-std-none", "G", lambda e: cs.embedding_std(e.G, None), InputError, r"subjects must be a list of strings"),
    # -- slices: sweeps take lists; where a Site takes a slice it must select something ---------------------------------
    c("patching-positions-slice", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), positions=slice(10, 20)), InputError,
      r"positions must be a list of ints, got slice\(10, 20, None\).*positions=list\(range\(2, 5\)\)"),
    c("attribution-positions-slice", "G",
      lambda e: cs.attribution_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), positions=slice(0, 3)), InputError,
      r"positions must be a list of ints, got slice"),
    c("mediation-positions-slice", "G",
      lambda e: cs.mediation(e.G, ([P6], [P6B]), "resid_pre", metric=cs.logit(3), positions=slice(10, 20)),
      InputError, r"positions must be a list of ints, got slice"),
    c("run-site-positions-slice-past-the-end", "G",
      lambda e: e.G.run(P6, {cs.Site("layers.1", positions=slice(10, 20)): cs.Zero()}), SiteError,
      r"positions"),
    c("run-site-positions-negative-step", "G",
      lambda e: e.G.run(P6, {cs.Site("layers.1", positions=slice(4, 0, -1)): cs.Zero()}), SiteError, r"step"),
    c("site-positions-slice-step-zero", "", lambda e: cs.Site("layers.1", positions=slice(0, 4, 0)), SiteError, r"step"),
    c("site-neurons-slice", "G", lambda e: e.G.run(P6, {cs.Site("layers.1", neurons=slice(0, 4)): cs.Zero()}),
      SiteError, r"neurons"),
    c("site-heads-slice", "G", lambda e: e.G.run(P6, {cs.Site("layers.1.attn.z", heads=slice(0, 2)): cs.Zero()}),
      SiteError, r"heads"),
    c("node-effects-positions-slice", "C", lambda e: cs.node_effects(e.C, positions=slice(10, 20)), InputError,
      r"positions must be ints, got slice"),
    c("edge-patching-positions-slice", "T", lambda e: circuits.edge_patching(e.T, e.tt, positions=slice(1, 3)),
      InputError, r"positions"),
    # -- positions out of range, or given where nothing sweeps positions ------------------------------------------------
    c("patching-positions-past-the-end", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), positions=[2, 6]), InputError,
      r"positions \[2, 6\] out of range for 6 tokens \(valid: -6 \.\. 5\)"),
    c("patching-positions-an-int", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), positions=2), InputError,
      r"positions must be a list of ints .*got int 2\. For one position write positions=\[2\]"),
    c("patching-positions-a-string", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), positions="all"), InputError,
      r"positions must be a list of ints .*got str 'all'"),
    c("patching-positions-floats", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), positions=[1.0]), InputError,
      r"positions must be ints; got 1\.0"),
    c("patching-positions-empty", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), positions=[]), InputError,
      r"positions is empty"),
    c("patching-positions-repeat", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), positions=[1, -5]), InputError,
      r"positions \[1, -5\] name a position twice \(on 6 tokens they are \[1, 1\]\)"),
    c("patching-positions-on-heads-sweep", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, "heads", cs.logit(3), positions=[1]), InputError,
      r"positions= restricts a sweep over positions .*\('heads'\) has none, so it would be ignored"),
    c("patching-positions-on-site-list", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, ["layers.1"], cs.logit(3), positions=[1]), InputError,
      r"would be ignored.*cs\.Site\(name, positions=\[\.\.\.\]\)"),
    c("patching-per-with-a-list", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, ["layers.1", "layers.2"], cs.logit(3), per="neuron"), InputError,
      r"per='neuron' sweeps one site, so sites must be one site name or cs\.Site; got list"),
    c("attribution-positions-past-the-end", "G",
      lambda e: cs.attribution_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), positions=[-7]), InputError,
      r"positions \[-7\] out of range for 6 tokens"),
    c("mediation-positions-past-the-end", "G",
      lambda e: cs.mediation(e.G, ([P6], [P6B]), "mlp", metric=cs.logit(3), positions=[9], n_boot=5), InputError,
      r"positions \[9\] out of range for 6 tokens"),
    c("mediation-positions-with-neurons", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", positions=[0]), InputError,
      r"positions= restricts a sweep over positions .*the 'neurons' sweep has none, so it would be ignored"),
    c("node-effects-positions-past-the-end", "C", lambda e: cs.node_effects(e.C, positions=[99]), InputError,
      r"positions \[99\] must be a non-empty list within 0 \.\. 4"),
    # -- metrics that are not callable, and unknown answer words ------------------------------------------------------
    c("run-metric-an-int", "G", lambda e: e.G.run(P6, metric=5), PlanError,
      r"metric must be a function of the output returning one value per row .*got int 5"),
    c("run-metric-a-string", "M", lambda e: e.M.run(torch.zeros(2, 16), metric="logit"), PlanError,
      r"metric must be a function .*got str 'logit'"),
    c("patching-metric-a-string", "G", lambda e: cs.activation_patching(e.G, P6, P6B, "resid_pre", "logit_diff"),
      InputError, r"metric must be a callable output -> \(rows,\), e\.g\. cs\.logit_diff\(\.\.\.\); got 'logit_diff'"),
    c("attribution-metric-a-dict", "G", lambda e: cs.attribution_patching(e.G, P6, P6B, "resid_pre", {"token": 3}),
      InputError, r"metric must be a callable"),
    c("ig-metric-an-int", "M",
      lambda e: cs.integrated_gradients(e.M, torch.ones(2, 16), torch.zeros(2, 16), "net.0", metric=5), InputError,
      r"metric must be a function of the model output, got int"),
    c("mediation-metric-an-int", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", metric=5), InputError,
      r"metric must be a callable"),
    c("iia-metric-a-string", "A",
      lambda e: cs.abstraction_iia(e.A, e.cm, {"A": cs.Site("l1", neurons=1)}, n=10, metric="y"), InputError,
      r"metric must be a callable output -> \(rows,\), got 'y'"),
    c("steer-readout-an-int", "D", lambda e: cs.steer(e.D, e.X, "act2", e.dirs.direction(1), [1.0], readout=5),
      InputError, r"readout must be a function output -> \(rows, classes\) logits; got 5"),
    c("edge-patching-metric-an-int", "T", lambda e: circuits.edge_patching(e.T, e.tt, metric=5), InputError,
      r"Unknown metric 5: use one of logprob, kl, mse, output or a callable"),
    c("trace-target-unknown-word", "G", lambda e: cs.causal_trace(e.G, P6, "cat", target="zebra", samples=2),
      InputError, r"target 'zebra' is not in the tokenizer's vocabulary .*unknown token '<unk>'.*give a word the model knows"),
    c("trace-target-id-past-vocab", "G", lambda e: cs.causal_trace(e.G, P6, "cat", target=10**6, samples=2), InputError,
      r"target 1000000 is not a token id of tiny-gpt2 \(valid: 0 \.\. 71\)"),
    c("trace-target-negative-id", "G", lambda e: cs.causal_trace(e.G, P6, "cat", target=-1, samples=2), InputError,
      r"target -1 is not a token id"),
    c("trace-target-float", "G", lambda e: cs.causal_trace(e.G, P6, "cat", target=1.5, samples=2), InputError,
      r"target must be a token \(a non-empty string\) or a token id \(an int\); got float 1\.5"),
    c("trace-target-bool", "G", lambda e: cs.causal_trace(e.G, P6, "cat", target=True, samples=2), InputError,
      r"got bool True"),
    c("logit-diff-unknown-word", "F", lambda e: cs.logit_diff("paris", "zebraland", e.F), InputError,
      r"is not in the tokenizer's vocabulary"),
    c("logit-id-past-vocab", "G", lambda e: e.G.run(P6, metric=cs.logit(10**6)), InputError, r"vocab|out of range"),
    c("prob-of-no-tokens", "G", lambda e: e.G.run(P6, metric=cs.prob([])), InputError, r"token"),
    c("trace-average-answer-not-a-string", "G", lambda e: cs.trace_average(e.G, [(P6, "cat", 7)]), InputError,
      r"Fact 0 .*the answer must be a non-empty string .*got 7"),
    # -- a subject whose embeddings have zero variance, and other noise that corrupts nothing ---------------------------
    c("trace-flat-subject", "", lambda e: cs.causal_trace(flat_subject_lm(), P6, "cat", samples=2), InputError,
      r"noise std is 0 \('3x' of the subject's embedding std\).*trace would be flat.*pass an absolute noise"),
    c("trace-average-flat-subjects", "",
      lambda e: cs.trace_average(flat_subject_lm(), [(P6, "cat")], kinds=["hidden"], samples=2, n_boot=5), InputError,
      r"noise std is 0 \(3 x the embedding std of the facts' subjects\)"),
    c("trace-zero-noise", "G", lambda e: cs.causal_trace(e.G, P6, "cat", noise=0.0, samples=2), InputError,
      r"noise std is 0 \(the noise std given\)"),
    c("trace-noise-inf", "G", lambda e: cs.causal_trace(e.G, P6, "cat", noise=INF, samples=2), InputError,
      r"noise std must be a finite number >= 0, got inf"),
    c("trace-noise-bool", "G", lambda e: cs.causal_trace(e.G, P6, "cat", noise=True, samples=2), InputError,
      r"noise must be a float, a string like '3x' or a tensor; got True"),
    c("trace-noise-draws-nan", "G", lambda e: cs.causal_trace(e.G, P6, "cat", noise=torch.full((2, 1, 64), NAN)),
      InputError, r"explicit noise tensor holds NaN or inf"),
    c("steer-zero-direction", "D", lambda e: cs.steer(e.D, e.X, "act2", torch.zeros(128), [1.0]), InputError,
      r"direction is all zeros .*adding it changes nothing"),
    # -- a rank-deficient basis in Project, and other Project bases ----------------------------------------------------
    c("project-dependent-columns", "", lambda e: cs.Project(basis(E64[0], 2 * E64[0])), InterventionError,
      r"Project basis \(64, 2\) has rank 1, not 2: its columns are linearly dependent.*1 arbitrary direction"),
    c("project-dependent-columns-3", "", lambda e: cs.Project(basis(E64[0], E64[1], E64[0] + E64[1])),
      InterventionError, r"has rank 2, not 3"),
    c("project-zero-basis", "G", lambda e: e.G.run(P6, {"layers.1": cs.Project(torch.zeros(64, 2))}), InterventionError,
      r"has rank 0, not 2: its columns are zero"),
    c("project-more-vectors-than-dims", "", lambda e: cs.Project(torch.randn(2, 5)), InterventionError,
      r"Project basis has more vectors \(5\) than dimensions \(2\)"),
    # -- a Patch from another model's run ------------------------------------------------------------------------------
    c("patch-from-another-models-run", "G",
      lambda e: e.G.run(P6, {"layers.1": cs.Patch(cs.load("tiny-gpt2").run(P6, cache=["layers.1"]))}),
      InterventionError, r"Patch reads a run made by another model .*cs\.Set\(other_run\.cache\[site_name\]\)"),
    c("patch-from-another-architecture", "G M",
      lambda e: e.G.run(P6, {"layers.1": cs.Patch(e.M.run(torch.zeros(1, 16), cache=["net.0"]))}), InterventionError,
      r"Patch reads a run made by another model"),
    # -- unknown names and values: each message lists what exists ------------------------------------------------------
    c("alignment-search-unknown-variable", "A", lambda e: cs.alignment_search(e.A, e.cm, "Z", n=10), InputError,
      r"Unknown variable 'Z'\. Variables: \['A', 'B', 'C', 'BC', 'Y'\]"),
    c("alignment-search-unknown-layer", "A", lambda e: cs.alignment_search(e.A, e.cm, "A", layers=["l9"], n=10),
      AlignmentSiteError, r"Alignment of 'A': Unknown site 'l9'.*Closest valid names: 'l3', 'l2', 'l1'"),
    c("causal-model-cycle", "", lambda e: cs.CausalModel({"A": ["B"], "B": ["A"]}, {"A": abs, "B": abs}, {}),
      InputError, r"The causal graph has a cycle: A -> B -> A"),
    c("class-directions-one-class", "D",
      lambda e: cs.class_directions(e.D, (e.X, torch.zeros(24, dtype=torch.long)), "act2"), InputError,
      r"class_directions needs at least 2 classes; the labels hold only \[0\]"),
    c("class-directions-center-unknown", "D", lambda e: cs.class_directions(e.D, (e.X, e.Y), "act2", center="median"),
      InputError, r"center must be 'class_means' .* or 'samples' .*got 'median'"),
    c("corrupt-unknown-kind", "", lambda e: cs.corrupt(e.X, "blur"), InputError,
      r"Unknown corruption 'blur'; choose from 'noise', 'zero', 'uniform', 'shuffle'"),
    c("steer-strength-nan", "D", lambda e: cs.steer(e.D, e.X, "act2", e.dirs.direction(1), [NAN]), InputError,
      r"strengths must be finite numbers; got nan"),
    c("steering-matrix-strength-nan", "D", lambda e: cs.steering_matrix(e.D, (e.X, e.Y), "act2", e.dirs, NAN),
      InputError, r"strength must be a finite number, got nan\. For a sweep call steering_matrix once per strength"),
    c("node-effects-ablation-unknown", "C", lambda e: cs.node_effects(e.C, ablation="shuffle"), InputError,
      r"ablation must be 'resample', 'mean' or 'zero', got 'shuffle'"),
    c("discover-unknown-method", "T", lambda e: circuits.discover(e.T, e.tt, method="magic"), InputError,
      r"Unknown method 'magic': use one of .*acdc"),
    c("load-case-unknown", "", lambda e: circuits.load_case("nope"), InputError,
      r"No tracr case 'nope'; the shipped cases are .*reverse"),
    # -- wrong types everywhere: None, dicts, floats for ints, bools for ints, strings for flags -----------------------
    c("patch-row-negative", "", lambda e: cs.Patch(None, row=-1), InterventionError,
      r"Patch row must be an int >= 0, got -1\. It picks one row of the source run"),
    c("patch-row-float", "", lambda e: cs.Patch(None, row=0.5), InterventionError, r"Patch row must be an int >= 0, got 0\.5"),
    c("patch-row-string", "", lambda e: cs.Patch(None, row="0"), InterventionError, r"got '0'"),
    c("noise-replace-string", "", lambda e: cs.Noise(1.0, replace="yes"), InterventionError,
      r"Noise replace must be True or False, got 'yes'"),
    c("noise-std-bool", "", lambda e: cs.Noise(True), InterventionError, r"Noise std must be a finite number >= 0, got True"),
    c("add-strength-string", "", lambda e: cs.Add(torch.ones(64), "x"), InterventionError,
      r"Add strength must be finite, got 'x'"),
    c("add-strength-bool", "", lambda e: cs.Add(torch.ones(64), True), InterventionError, r"got True"),
    c("scale-bool", "", lambda e: cs.Scale(True), InterventionError, r"Scale factor must be a finite number, got True"),
    c("site-n-heads-bool", "", lambda e: cs.Site("layers.1", heads=[0], n_heads=True), SiteError,
      r"n_heads must be a positive int"),
    c("site-names-pattern-int", "G", lambda e: e.G.site_names(5), InputError,
      r"pattern must be a glob string such as 'layers\.\*\.mlp', got int"),
    c("run-keep-kv-string", "G", lambda e: e.G.run(P6, keep_kv="yes"), PlanError, r"keep_kv must be True or False"),
    c("run-keep-output-string", "G", lambda e: e.G.run(P6, keep_output="no"), PlanError,
      r"keep_output must be True or False, got 'no'"),
    c("run-progress-string", "M", lambda e: e.M.run(torch.zeros(2, 16), progress="quiet"), PlanError,
      r"progress must be True or False"),
    c("trace-prompt-none", "G", lambda e: cs.causal_trace(e.G, None, "cat"), InputError,
      r"prompt must be a string .*got NoneType"),
    c("trace-prompt-a-list", "G", lambda e: cs.causal_trace(e.G, [P6], "cat"), InputError,
      r"prompt must be a string .*got list\. For many facts use trace_average"),
    c("trace-subject-an-int", "G", lambda e: cs.causal_trace(e.G, P6, 5), InputError,
      r"subject must be a string .*got int 5"),
    c("trace-replace-string", "G", lambda e: cs.causal_trace(e.G, P6, "cat", replace="yes", samples=2), InputError,
      r"replace must be True or False, got 'yes'"),
    c("trace-progress-string", "G", lambda e: cs.causal_trace(e.G, P6, "cat", progress="yes", samples=2), InputError,
      r"progress must be True or False"),
    c("trace-average-facts-none", "G", lambda e: cs.trace_average(e.G, None), InputError,
      r"facts must be a list of facts, each \(prompt, subject\[, answer\]\); got NoneType"),
    c("trace-average-facts-a-string", "G", lambda e: cs.trace_average(e.G, P6), InputError,
      r"facts must be a list of facts.*got str"),
    c("trace-average-require-correct-string", "G",
      lambda e: cs.trace_average(e.G, [(P6, "cat")], require_correct="no"), InputError,
      r"require_correct must be True or False, got 'no'"),
    c("trace-average-ci-string", "G", lambda e: cs.trace_average(e.G, [(P6, "cat")], ci="95%"), InputError,
      r"ci must lie in \(0, 1\), got 95%"),
    c("patching-per-example-string", "G",
      lambda e: cs.activation_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), per_example="yes"), InputError,
      r"per_example must be True or False, got 'yes'"),
    c("attribution-per-example-string", "G",
      lambda e: cs.attribution_patching(e.G, P6, P6B, "resid_pre", cs.logit(3), per_example=1), InputError,
      r"per_example must be True or False, got 1"),
    c("patching-sites-a-dict", "G", lambda e: cs.activation_patching(e.G, P6, P6B, {"layers.1": 1}, cs.logit(3)),
      InputError, r"sites must be one of 'resid_pre'.*got \{'layers\.1': 1\}"),
    c("mediation-tol-negative", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", tol=-1), InputError,
      r"tol must be a finite number >= 0, got -1\. It is how far an interchanged output may be"),
    c("mediation-tol-nan", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", tol=NAN), InputError,
      r"tol must be a finite number >= 0, got nan"),
    c("mediation-ci-string", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", ci="high"), InputError,
      r"ci must be in \(0, 1\), got 'high'"),
    c("mediation-per-example-string", "A", lambda e: cs.mediation(e.A, e.ds, "neurons", per_example="no"), InputError,
      r"per_example must be True or False"),
    c("mediation-data-a-dict", "A", lambda e: cs.mediation(e.A, {"base": e.ds.base}, "neurons"), InputError,
      r"data must be a CounterfactualDataset or a \(base, source\) pair"),
    c("causal-model-mechanisms-none", "", lambda e: cs.CausalModel({"A": [], "Y": ["A"]}, None, {"A": [0, 1]}),
      InputError, r"mechanisms must be a dict \{variable: function of its parents\}, got NoneType"),
    c("causal-model-values-none", "", lambda e: cs.CausalModel({"A": [], "Y": ["A"]}, {"Y": abs}, None), InputError,
      r"values must be a dict \{input variable: \[possible values\]\}, got NoneType"),
    c("causal-model-value-set-a-string", "", lambda e: cs.CausalModel({"A": [], "Y": ["A"]}, {"Y": abs}, {"A": "01"}),
      InputError, r"value set of 'A' must be a list of values \(e\.g\. range\(10\) or \['a', 'b'\]\), got str '01'"),
    c("causal-model-value-set-an-int", "", lambda e: cs.CausalModel({"A": [], "Y": ["A"]}, {"Y": abs}, {"A": 5}),
      InputError, r"value set of 'A' must be a list of values .*got int 5"),
    c("causal-model-name-int", "", lambda e: cs.CausalModel({"A": [], "Y": ["A"]}, {"Y": abs}, {"A": [0, 1]}, name=5),
      InputError, r"name must be a string, got int 5"),
    c("counterfactuals-values-a-string", "", lambda e: cs.counterfactuals(values="0123"), InputError,
      r"values must be a list of numbers .*got '0123'"),
    c("counterfactuals-vary-nothing", "", lambda e: cs.counterfactuals(vary=[]), InputError,
      r"vary is empty: name at least one of the variables \['A', 'B', 'C'\]"),
    c("restore-all-sites-string", "D", lambda e: cs.corrupt_and_restore(e.D, e.X, sites=["act2"], all_sites="no"),
      InputError, r"all_sites must be True or False, got 'no'"),
    c("restore-scale-negative", "D", lambda e: cs.corrupt_and_restore(e.D, e.X, sites=["act2"], scale=-1.0), InputError,
      r"scale must be a finite number >= 0, got -1\.0"),
    c("probe-standardize-string", "D", lambda e: cs.probe(e.D, (e.X, e.Y), "act2", standardize="no"), InputError,
      r"standardize must be True or False, got 'no'"),
    c("probe-test-size-string", "D", lambda e: cs.probe(e.D, (e.X, e.Y), "act2", test_size="25%"), InputError,
      r"test_size must be a fraction in \(0, 1\), got '25%'"),
    c("probe-steering-strengths-string", "D", lambda e: cs.probe_steering(e.D, (e.X, e.Y), "act2", 0, 1, "big"),
      InputError, r"strengths must be a non-empty list of finite numbers, got 'big'"),
    c("steering-matrix-baseline-string", "D", lambda e: cs.steering_matrix(e.D, (e.X, e.Y), "act2", e.dirs,
                                                                            baseline="no"), InputError,
      r"baseline must be True or False, got 'no'"),
    c("node-effects-categorical-string", "C", lambda e: cs.node_effects(e.C, categorical="no"), InputError,
      r"categorical must be"),
    c("roc-truth-none", "T", lambda e: circuits.roc(circuits.edge_attribution_patching(e.T, e.tt), None), InputError,
      r"truth"),
    c("circuit-nodes-none", "", lambda e: circuits.Circuit(None, None), InputError, r"nodes"),
]


@pytest.mark.parametrize(
    "models, call, err, pattern",
    [pytest.param(*row[1:5], id=row[0], marks=[pytest.mark.xfail(strict=True, reason=row[5])] if row[5] else [])
     for row in CASES])
def test_bad_input(env, models, call, err, pattern):
    """The call raises exactly ``err`` (a causalscope error), its message matches, and every model it read is as it
    was before."""
    modules = [getattr(env, name) for name in models]
    modules = [getattr(m, "module", None) or m.model for m in modules]
    assert_refused(lambda: call(env), modules, err, pattern)


def test_the_table_is_large_and_spread():
    """At least 100 cases, every id once, on every family and the constructors."""
    ids = [row[0] for row in CASES]
    assert len(ids) == len(set(ids)) >= 100
    prefixes = {i.split("-")[0] for i in ids}
    assert {"load", "trace", "patching", "attribution", "ig", "mediation", "iia", "alignment", "das", "causal",
            "counterfactuals", "class", "corrupt", "restore", "probe", "steer", "steering", "node", "subspace", "acdc",
            "edge", "eap", "discover", "roc", "circuit", "site", "patch", "project", "noise", "resample", "add",
            "scale", "run", "forward", "token", "embedding"} <= prefixes


def test_the_table_repeats_no_case_of_test_errors():
    """The engine-level table lives in tests/core/test_errors.py: no id of it is repeated here."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent / "core" / "test_errors.py").read_text()
    theirs = set(re.findall(r'^\s*\("([a-z0-9-]+)", ', text, flags=re.M))
    assert theirs and not theirs & {row[0] for row in CASES}
