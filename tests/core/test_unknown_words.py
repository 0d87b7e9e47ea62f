"""Words a tokenizer does not know never pass silently: prompts warn, answer tokens refuse."""
from __future__ import annotations

import warnings

import pytest

import causalscope as cs


def test_a_prompt_with_unknown_words_warns_naming_them(gpt2):
    with pytest.warns(cs.UnknownTokenWarning, match=r"\['zebra', 'giraffe'\] are not in the tokenizer's vocabulary"):
        gpt2.run("the zebra saw a giraffe")
    with warnings.catch_warnings():
        warnings.simplefilter("error", cs.UnknownTokenWarning)
        gpt2.run("the cat sat on the mat")  # every word known: no warning


def test_an_unknown_answer_word_is_refused(gpt2):
    with pytest.raises(cs.InputError, match="'zebra' is not in the tokenizer's vocabulary"):
        cs.logit_diff("zebra", "cat", gpt2)
    with pytest.raises(cs.InputError, match="'zebra' is not in the tokenizer's vocabulary"):
        cs.activation_patching(gpt2, "the cat sat on the mat", "the dog sat on the mat", "resid_pre",
                                 cs.logit("zebra", gpt2))
