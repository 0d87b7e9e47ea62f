"""The bundled facts model (``facts-gpt``): the corpus generator is deterministic and made the shipped data,
subjects are multi-token, the shipped model loads offline and scores what facts.json says it scores, and the
training step is deterministic."""
from __future__ import annotations

import json
from collections import Counter
from importlib import resources

import pytest
import torch

import causalscope as cs
from causalscope.zoo import facts as F
from causalscope.zoo.train_facts import TrainConfig, train

HELDOUT_FLOOR = 0.95  # the shipped model scores 0.998 on the 1000 held-out-template prompts (docs/facts-model.md)


@pytest.fixture(scope="module")
def shipped() -> dict:
    return json.loads(F._data("facts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def loaded():
    return cs.load("facts-gpt")


def test_corpus_generator_is_deterministic_and_seeded():
    a, b, c = F.make_corpus(0), F.make_corpus(0), F.make_corpus(1)
    assert a == b
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a != c and a["subjects"] != c["subjects"]
    assert a["relations"] == c["relations"]  # templates and objects are fixed; names and facts are drawn


def test_shipped_facts_json_is_what_the_generator_makes(shipped):
    corpus = {k: v for k, v in shipped.items() if k != "training"}
    assert corpus == F.make_corpus(shipped["seed"])
    assert shipped["training"]["config"]["seed"] == shipped["seed"]


def test_corpus_shape(shipped):
    assert 150 <= len(shipped["subjects"]) <= 300 and len(set(shipped["subjects"])) == len(shipped["subjects"])
    assert len(shipped["relations"]) >= 4
    for rel, spec in shipped["relations"].items():
        assert len(spec["objects"]) >= 10 and len(spec["templates"]) >= 4
        assert all(t.count("{subject}") == 1 for t in spec["templates"])
        starts = {t.index("{subject}") == 0 for t in spec["templates"]}
        assert starts == {True, False}, f"{rel}: the subject should open some templates and not others"
    # one fact per subject and relation; every object is used
    assert Counter((s, r) for s, r, _ in shipped["facts"]) == Counter(
        {(s, r): 1 for s in shipped["subjects"] for r in shipped["relations"]})


def test_split_holds_out_one_template_per_relation(shipped):
    train, held = F.facts("train"), F.facts("heldout")
    n_facts = len(shipped["facts"])
    assert len(held) == n_facts
    assert len(train) == sum(len(s["templates"]) - 1 for s in shipped["relations"].values()) * len(
        shipped["subjects"])
    for rel, spec in shipped["relations"].items():
        h = spec["heldout_template"]
        assert {f.template_id for f in held if f.relation == rel} == {h}
        assert h not in {f.template_id for f in train if f.relation == rel}
    assert {(f.subject, f.relation, f.answer) for f in held} == {tuple(x) for x in shipped["facts"]}
    assert len(F.facts("all")) == len(train) + len(held)
    with pytest.raises(ValueError):
        F.facts("test")


def test_subjects_are_multi_token_and_appear_verbatim_in_their_prompts(loaded):
    tok = loaded.tokenizer
    unk = tok.unk_token_id
    lengths = Counter()
    for f in F.facts("all"):
        assert f.subject in f.prompt
        sub = tok(f.subject, add_special_tokens=False)["input_ids"]
        ids = tok(f.prompt, add_special_tokens=False)["input_ids"]
        lengths[len(sub)] += 1
        assert unk not in ids and unk not in sub
        assert any(ids[i: i + len(sub)] == sub for i in range(len(ids) - len(sub) + 1))
        answer = tok(f.answer, add_special_tokens=False)["input_ids"]
        assert len(answer) == 1 and answer[0] != unk
        assert len(ids) <= loaded.module.config.n_positions
    assert set(lengths) == {2, 3}


def test_shipped_model_loads_offline_and_scores_what_facts_json_says(loaded, shipped, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import GPT2LMHeadModel

    m = cs.load("facts-gpt")
    assert m.name == "facts-gpt" and m.adapter.kind == "hf-causal-lm"
    assert isinstance(m.module, GPT2LMHeadModel) and not m.module.training
    assert "facts-gpt" in cs.zoo.names() and cs.zoo.describe()["facts-gpt"]
    model, tok = loaded.module, loaded.tokenizer
    hits = 0
    with torch.no_grad():
        for f in F.facts("heldout"):
            ids = tok(f.prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
            hits += tok.convert_ids_to_tokens(int(model(ids).logits[0, -1].argmax())) == f.answer
    acc = hits / len(F.facts("heldout"))
    assert acc == shipped["training"]["heldout_acc"]
    assert acc >= HELDOUT_FLOOR
    assert shipped["training"]["train_acc"] >= 0.99


def test_wrapped_run_equals_plain_forward(loaded):
    f = F.facts("heldout")[1]
    ids = loaded.tokenizer(f.prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = loaded.module(ids).logits
    torch.testing.assert_close(loaded.run(f.prompt).output, ref, rtol=0, atol=0)


def test_shipped_files_are_small():
    folder = resources.files("causalscope.zoo") / "data" / "facts-gpt"
    sizes = {p.name: len(p.read_bytes()) for p in folder.iterdir() if p.is_file()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "facts.json"} <= set(sizes)
    assert sum(sizes.values()) <= 8 * 2**20


def test_training_step_is_deterministic():
    corpus = F.make_corpus(0, n_subjects=20, n_first=8, n_last=10)
    cfg = TrainConfig(seed=3, n_layer=1, n_embd=32, n_head=2, steps=3, batch_size=16, warmup=2, eval_every=0,
                      threads=1)
    threads = torch.get_num_threads()
    try:
        runs = [train(corpus, cfg, log=None) for _ in range(2)]
        other = train(corpus, TrainConfig(**{**cfg.__dict__, "seed": 4}), log=None)
    finally:
        torch.set_num_threads(threads)
    (m1, _, h1), (m2, _, h2) = runs
    assert len(h1["loss"]) == 3 and h1["loss"] == h2["loss"]
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert other[2]["loss"] != h1["loss"]


def test_the_fused_gelu_is_the_function_the_weights_were_trained_with(loaded):
    """The shipped config computes GPT-2's tanh GELU with torch's fused kernel ("gelu_pytorch_tanh"); the weights
    were trained with the same function written out ("gelu_new"). Reference: the same weights in a model built
    with "gelu_new" give the same logits on every held-out prompt, and the same answers."""
    from transformers import GPT2LMHeadModel

    hf = loaded.module
    assert hf.config.activation_function == "gelu_pytorch_tanh"
    config = hf.config.to_dict() | {"activation_function": "gelu_new"}
    written_out = GPT2LMHeadModel(type(hf.config).from_dict(config)).eval()
    written_out.load_state_dict(hf.state_dict())
    by_length: dict[int, list[torch.Tensor]] = {}
    for f in F.facts("heldout")[:300]:
        one = loaded.adapter.tokenize(f.prompt)
        by_length.setdefault(one.shape[-1], []).append(one.reshape(-1))
    assert len(by_length) > 1
    for rows in by_length.values():
        ids = torch.stack(rows)
        with torch.no_grad():
            fused, plain = hf(ids).logits, written_out(ids).logits
        assert (fused - plain).abs().max() < 1e-4
        assert torch.equal(fused[:, -1].argmax(-1), plain[:, -1].argmax(-1))
