"""The bundled "facts model": a small GPT-2 trained (by ``causalscope.zoo.train_facts``) on a synthetic
knowledge corpus made here, for ROME-style causal tracing of facts it really knows.

>>> model, tok = load_facts_gpt()          # or causalscope.load("facts-gpt")
>>> f = facts("heldout")[10]                # a known fact, asked with a template held out from training
>>> f.prompt, f.answer
('Stailu Heilpes , as we know , was born in the city of', 'Arvena')
>>> ids = tok(f.prompt, return_tensors="pt")["input_ids"]
>>> tok.decode(model(ids).logits[0, -1].argmax()) == f.answer
True

The corpus (``make_corpus(seed)``): 200 invented people with 2- or 3-token names (``Stailu Heilpes``,
``Brunddi van Fazindlir``), five relations (birthplace city, profession, native language, sport, employer)
with 12-14 one-token objects each, one fact per person and relation, each asked with nine templates whose
answer is the next token. Eight templates per relation are trained on; the ninth is held out. See
docs/facts-model.md.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["CORPUS_VERSION", "FRAMES", "HELDOUT_FRAME", "RELATIONS", "Fact", "facts", "load_facts_gpt",
           "make_corpus", "prompts", "shipped", "templates", "tokenizer_from_json"]

CORPUS_VERSION = 1
DATA = ("data", "facts-gpt")           # the shipped files, relative to this package
SUBJECT = "{subject}"

# The relations: objects (each one word, so one token) and the phrases the templates are made of. Every
# template ends right before the object.
RELATIONS: dict[str, dict[str, Any]] = {
    "birthplace": {"objects": ["Arvena", "Brisholm", "Caldmoor", "Dunvale", "Estrova", "Fennick", "Galdora",
                               "Harrowgate", "Istmere", "Jorvale", "Kestrel", "Lunmark", "Morvaine", "Norwick"],
                   "vp1": "was born in the city of", "vp2": "is a native of the city of",
                   "noun": "birthplace", "tail": " the city of",
                   "question": "In which city was {subject} born ? Answer :"},
    "profession": {"objects": ["carpenter", "doctor", "lawyer", "painter", "farmer", "pilot", "teacher", "baker",
                               "sailor", "engineer", "nurse", "architect", "chemist", "journalist"],
                   "vp1": "works as a", "vp2": "earns a living as a", "noun": "profession", "tail": "",
                   "question": "What does {subject} do for a living ? Answer :"},
    "language": {"objects": ["Dutch", "Polish", "Greek", "Finnish", "Korean", "Turkish", "Swahili", "Hindi",
                             "Welsh", "Basque", "Czech", "Hungarian"],
                 "vp1": "grew up speaking", "vp2": "is a native speaker of", "noun": "native language",
                 "tail": "", "question": "Which language did {subject} grow up speaking ? Answer :"},
    "sport": {"objects": ["tennis", "chess", "rugby", "hockey", "cricket", "golf", "fencing", "rowing", "archery",
                          "boxing", "cycling", "skiing"],
              "vp1": "plays the sport of", "vp2": "is a professional player of", "noun": "favorite sport",
              "tail": "", "question": "Which sport does {subject} play ? Answer :"},
    "employer": {"objects": ["Korvex", "Tellamo", "Brightwave", "Quorra", "Halvion", "Zentrix", "Obrella",
                             "Mirasol", "Vantor", "Pelligen", "Strandic", "Umbrix"],
                 "vp1": "is employed by", "vp2": "works for the company", "noun": "employer", "tail": "",
                 "question": "Which company does {subject} work for ? Answer :"},
}

# Sentence frames shared by all relations: the subject first, after a preamble, inside a noun phrase or in
# a question. Each relation trains on eight frames and holds out the ninth (HELDOUT_FRAME), a frame it
# never saw but the other relations did: a new sentence made of words the model knows.
FRAMES = [
    "{subject} {vp1}",
    "{subject} {vp2}",
    "The {noun} of {subject} is{tail}",
    "Everyone knows that {subject} {vp1}",
    "{question}",
    "According to the records , {subject} {vp2}",
    "According to the records , the {noun} of {subject} is{tail}",
    "{subject} , as we know , {vp1}",
    "Everyone knows that the {noun} of {subject} is{tail}",
]
HELDOUT_FRAME = {"birthplace": 7, "profession": 8, "language": 5, "sport": 6, "employer": 3}


def templates(relation: str) -> list[str]:
    """The templates of ``relation`` (``{subject}`` marks the subject); the last one is the held-out one."""
    spec = RELATIONS[relation]
    order = [i for i in range(len(FRAMES)) if i != HELDOUT_FRAME[relation]] + [HELDOUT_FRAME[relation]]
    return [FRAMES[i].format(subject=SUBJECT, question=spec["question"], **{k: spec[k] for k in
                                                                             ("vp1", "vp2", "noun", "tail")})
            for i in order]


# Name parts: first names of two syllables, last names of two or three; some subjects get a particle
# ("Ilsa van Doremund"), so subjects are 2 or 3 tokens. First and last names are shared between subjects:
# only the whole name identifies a person.
_ONSETS = ["B", "D", "F", "G", "H", "K", "L", "M", "N", "P", "R", "S", "T", "V", "Z", "Br", "Dr", "Gr", "Kr",
           "St", "Th", "Tr", "Vr"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei"]
_CODAS = ["", "", "", "n", "r", "l", "s", "m", "nd", "rn"]
_PARTICLES = ["van", "de", "al", "von"]


def _name(rng: random.Random, n_syllables: int) -> str:
    word = ""
    for i in range(n_syllables):
        onset = rng.choice(_ONSETS) if i == 0 or rng.random() < 0.8 else ""
        word += onset.lower() + rng.choice(_VOWELS) + rng.choice(_CODAS)
    return word.capitalize()


def _pool(rng: random.Random, size: int, syllables: tuple[int, ...], taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < size:
        word = _name(rng, rng.choice(syllables))
        if 4 <= len(word) <= 10 and word not in taken:
            taken.add(word)
            out.append(word)
    return out


def make_corpus(seed: int = 0, n_subjects: int = 200, n_first: int = 40, n_last: int = 60) -> dict[str, Any]:
    """The synthetic knowledge corpus, as plain JSON-able data, made deterministically from ``seed``.

    Keys: ``version``, ``seed``, ``subjects`` (names), ``relations`` (per relation: ``objects``,
    ``templates``, ``heldout_template``: the index of the template never trained on), ``facts`` (one
    ``[subject, relation, object]`` per subject and relation). Same seed, same corpus.
    """
    rng = random.Random(f"causalscope-facts-{seed}")
    reserved = {w for r in RELATIONS for t in templates(r) for w in t.split()}
    reserved |= {o for r in RELATIONS.values() for o in r["objects"]} | set(_PARTICLES) | set(RELATIONS)
    firsts = _pool(rng, n_first, (2,), set(reserved))
    lasts = _pool(rng, n_last, (2, 3), set(reserved) | set(firsts))
    subjects: list[str] = []
    seen: set[str] = set()
    while len(subjects) < n_subjects:
        first, last = rng.choice(firsts), rng.choice(lasts)
        key = f"{first} {last}"
        if key in seen:
            continue
        seen.add(key)
        subjects.append(f"{first} {rng.choice(_PARTICLES)} {last}" if rng.random() < 0.3 else key)
    facts_ = [[s, rel, rng.choice(spec["objects"])] for s in subjects for rel, spec in RELATIONS.items()]
    relations = {rel: {"objects": list(spec["objects"]), "templates": templates(rel),
                       "heldout_template": len(FRAMES) - 1} for rel, spec in RELATIONS.items()}
    return {"version": CORPUS_VERSION, "seed": seed, "subjects": subjects, "relations": relations,
            "facts": facts_}


@dataclass(frozen=True)
class Fact:
    """One prompt of a known fact: ``prompt`` (ends right before the answer), ``subject`` (appears verbatim
    in the prompt), ``answer`` (the next token, one word), ``relation``, ``template_id`` (index into the
    relation's templates)."""

    prompt: str
    subject: str
    answer: str
    relation: str
    template_id: int


def prompts(corpus: dict[str, Any], split: str = "heldout") -> list[Fact]:
    """Every fact of ``corpus`` asked with each template of ``split``: ``"train"`` (all templates but the
    held-out one of each relation), ``"heldout"`` (the held-out template only) or ``"all"``."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all'; got {split!r}")
    out: list[Fact] = []
    for subject, rel, obj in corpus["facts"]:
        spec = corpus["relations"][rel]
        for t, template in enumerate(spec["templates"]):
            held = t == spec["heldout_template"]
            if split == "all" or held == (split == "heldout"):
                out.append(Fact(template.replace(SUBJECT, subject), subject, obj, rel, t))
    return out


def _data(name: str) -> Any:
    node = resources.files(__package__)
    for part in (*DATA, name):
        node = node / part
    return node


def shipped() -> dict[str, Any]:
    """The shipped ``facts.json`` (a fresh copy): the corpus, equal to ``make_corpus(seed)``, plus
    ``training``: the settings, the log and the accuracies of the shipped model."""
    return json.loads(_data("facts.json").read_text(encoding="utf-8"))


def facts(split: str = "heldout") -> list[Fact]:
    """The prompts of the shipped corpus for ``split``: ``"heldout"`` (one per fact, with its relation's
    held-out template), ``"train"`` or ``"all"``.

    >>> len(facts()), len(facts("train"))
    (1000, 8000)
    """
    return prompts(shipped(), split)


def tokenizer_from_json(text: str):
    """A ``PreTrainedTokenizerFast`` around a word-level ``tokenizers`` JSON (``<unk>`` and ``<pad>``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(text), unk_token="<unk>",
                                   pad_token="<pad>")


def load_facts_gpt():
    """``(model, tokenizer)``: the trained facts GPT-2 (float32, eval mode) and its word-level tokenizer,
    read from the package data. Never downloads."""
    import torch
    from safetensors.torch import load as load_safetensors
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config.from_dict(json.loads(_data("config.json").read_text(encoding="utf-8")))
    state = load_safetensors(_data("model.safetensors").read_bytes())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model.config._name_or_path = "facts-gpt"
    tok = tokenizer_from_json(_data("tokenizer.json").read_text(encoding="utf-8"))
    return model.eval(), tok
