"""The one reader of data / labels of the directions family (causalscope/directions/_inputs.py).

Every accepted form of ``data`` / ``labels`` parses to the same hand-built tensors, and class_directions, probe
and steering_matrix give the same numbers on it as on the plain ``(X, y)`` pair; bad forms raise
``cs.InputError`` naming the problem, in each method."""
from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.utils import Bunch
from torch import nn

import causalscope as cs
from causalscope.directions._inputs import NEEDS_CLASS_LABELS, PROBE_NEEDS_LABELS, split_data
from causalscope.directions._probes import _probe_data

K, D, N = 3, 6, 60
NAMES = ["ant", "bee", "cat"]             # sorted like 0, 1, 2


def _hand_built() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % K
    return torch.randn(N, D, generator=g) + 3.0 * torch.eye(K, D)[y], y


X, Y = _hand_built()                     # the reference: float32 (N, D) inputs, int64 labels 0..K-1
Y_LIST = Y.tolist()
X_NP = X.numpy().astype(np.float64)      # float64 numpy inputs are read as float32: exactly X again
Pair = namedtuple("Pair", ["X", "y"])


def _forms() -> dict[str, tuple[object, dict]]:
    """name -> (data, keyword arguments): every form the parser reads, each holding X and Y."""
    forms = {
        "(X, y) tuple": ((X, Y), {}),
        "[X, y] list": ([X, Y], {}),
        "(X, labels list)": ((X, Y_LIST), {}),
        "(X, labels tuple)": ((X, tuple(Y_LIST)), {}),
        "(X, numpy int32)": ((X, Y.numpy().astype(np.int32)), {}),
        "(X, integer-valued float numpy)": ((X, Y.numpy().astype(np.float64)), {}),
        "(numpy X, numpy y)": ((X_NP, Y.numpy()), {}),
        "X, labels=tensor": (X, {"labels": Y}),
        "X, labels=list": (X, {"labels": Y_LIST}),
        "X, labels=tuple": (X, {"labels": tuple(Y_LIST)}),
        "X, labels=numpy uint8": (X, {"labels": Y.numpy().astype(np.uint8)}),
        "X, labels=integer-valued float tensor": (X, {"labels": Y.float()}),
        "X, labels=integer-valued float list": (X, {"labels": [float(v) for v in Y_LIST]}),
        "X, labels=list of 0-d tensors": (X, {"labels": list(Y)}),
        "X, labels=list of numpy ints": (X, {"labels": list(Y.numpy())}),
        "numpy X, labels=list": (X_NP, {"labels": Y_LIST}),
        "dict X / y": ({"X": X, "y": Y}, {}),
        "object .X / .y": (SimpleNamespace(X=X, y=Y), {}),
        "object .inputs / .labels": (SimpleNamespace(inputs=X, labels=Y), {}),
        "namedtuple (X, y)": (Pair(X, Y), {}),
        "sklearn Bunch .data / .target": (Bunch(data=X_NP, target=Y.numpy()), {}),
    }
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        return forms
    forms["X, labels=pandas Series"] = (X, {"labels": pd.Series(Y_LIST)})
    return forms


FORMS = _forms()


@pytest.fixture(scope="module")
def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, K)).eval()


@pytest.fixture(scope="module")
def reference(net):
    """The results on the plain (X, y) pair."""
    return {"dirs": cs.class_directions(net, (X, Y), "1"), "probe": cs.probe(net, (X, Y), ["0", "1"]),
            "matrix": cs.steering_matrix(net, (X, Y), "0", torch.eye(K, 8), 1.0)}


# -- every form parses to the hand-built tensors -------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FORMS))
def test_every_form_parses_to_the_hand_built_data(name):
    data, kw = FORMS[name]
    Xp, yp = split_data(data, kw.get("labels"), need_labels=True)
    assert isinstance(Xp, torch.Tensor) and Xp.dtype == torch.float32 and torch.equal(Xp, X)
    assert yp == Y_LIST and all(type(v) is int for v in yp)
    inputs, y_raw, n = _probe_data(data, kw.get("labels"))          # what probe / probe_steering read
    assert torch.equal(inputs, X) and n == N
    assert y_raw.dtype.kind == "i" and np.array_equal(y_raw, Y.numpy())


@pytest.mark.parametrize("name", list(FORMS))
def test_every_form_gives_the_same_class_directions_probe_and_steering_matrix(net, reference, name):
    data, kw = FORMS[name]
    d = cs.class_directions(net, data, "1", **kw)
    assert d.classes == [0, 1, 2] and d.counts == {0: 20, 1: 20, 2: 20}
    assert torch.equal(d.values, reference["dirs"].values)
    p = cs.probe(net, data, ["0", "1"], **kw)
    ref = reference["probe"]
    assert p.classes == [0, 1, 2] and p.meta["n_inputs"] == N
    assert torch.equal(p.values, ref.values)
    assert np.array_equal(p.train_index, ref.train_index) and np.array_equal(p.test_index, ref.test_index)
    assert all(np.array_equal(p.control_labels[s], ref.control_labels[s]) for s in ("0", "1"))
    M = cs.steering_matrix(net, data, "0", torch.eye(K, 8), 1.0, **kw)
    assert torch.equal(M.values, reference["matrix"].values)


@pytest.mark.parametrize("data, kw", [
    ((X, [NAMES[v] for v in Y_LIST]), {}),
    ((X, np.array([NAMES[v] for v in Y_LIST])), {}),
    (X, {"labels": tuple(NAMES[v] for v in Y_LIST)}),
    ({"X": X, "y": [NAMES[v] for v in Y_LIST]}, {}),
], ids=["pair list", "pair numpy str", "labels= tuple", "dict"])
def test_string_labels_in_every_form(net, reference, data, kw):
    Xp, yp = split_data(data, kw.get("labels"), need_labels=True)
    assert torch.equal(Xp, X) and yp == [NAMES[v] for v in Y_LIST]
    d = cs.class_directions(net, data, "1", **kw)
    assert d.classes == NAMES and torch.equal(d.values, reference["dirs"].values)
    p = cs.probe(net, data, ["0", "1"], **kw)
    assert p.classes == NAMES and torch.equal(p.values, reference["probe"].values)


def test_labels_optional_where_methods_allow_it(net):
    assert split_data(X, need_labels=False) == (X, None)
    Xp, yp = split_data(X_NP, need_labels=False)
    assert torch.equal(Xp, X) and yp is None
    a = cs.steer(net, X, "0", torch.ones(8), [0.0, 1.0])
    for data, kw in [((X, Y), {}), (X_NP, {"labels": Y_LIST}), ({"X": X, "y": Y}, {})]:
        b = cs.steer(net, data, "0", torch.ones(8), [0.0, 1.0], **kw)
        assert torch.equal(a.values, b.values) and b.meta["n_inputs"] == N
    r = cs.corrupt_and_restore(net, X, "zero", ["0", "1"])
    for data in [(X, Y), X_NP, SimpleNamespace(X=X, y=Y)]:
        assert torch.equal(cs.corrupt_and_restore(net, data, "zero", ["0", "1"]).values, r.values)


def test_a_float_tensor_second_is_an_input_not_labels():
    other = torch.rand(N)
    Xp, yp = split_data((X, other), need_labels=False)
    assert isinstance(Xp, tuple) and Xp[1] is other and yp is None
    with pytest.raises(cs.InputError, match="needs class labels"):
        split_data((X, other), need_labels=True)


# -- bad forms raise InputError naming the problem -----------------------------------------------------------------
BAD = [
    ("no labels", X, {}, None),                    # the method's own "needs labels" message
    ("2-D labels", X, {"labels": torch.zeros(N, 2, dtype=torch.long)}, r"1-D \(one label per input\), got shape"),
    ("too few labels", X, {"labels": Y[:10]}, "Got 10 labels for 60 inputs; give one label per input"),
    ("too many labels", (X, Y_LIST + [0]), {}, "Got 61 labels for 60 inputs"),
    ("non-integer float tensor", X, {"labels": torch.rand(N)}, "non-integer floats"),
    ("non-integer float list", X, {"labels": [0.5] * N}, "non-integer floats"),
    ("nan labels", X, {"labels": np.full(N, np.nan)}, "non-integer floats"),
    ("inf labels", X, {"labels": torch.full((N,), float("inf"))}, "non-integer floats"),
    ("None in labels", X, {"labels": Y_LIST[:-1] + [None]}, "ints, strings or bools .*got None"),
    ("a string as labels", X, {"labels": "abc"}, "1-D tensor, array or list of class labels; got str"),
    ("a dict as labels", X, {"labels": {"a": 1}}, "1-D tensor, array or list of class labels; got dict"),
]


@pytest.mark.parametrize("name, data, kw, msg", BAD, ids=[b[0] for b in BAD])
def test_bad_forms_raise_input_error_naming_the_problem(net, name, data, kw, msg):
    if "labels for" not in (msg or ""):          # the parser itself sees all but the count, which needs the inputs
        with pytest.raises(cs.InputError, match=msg or "This method needs class labels"):
            split_data(data, kw.get("labels"), need_labels=True)
    with pytest.raises(cs.InputError, match=msg or "This method needs class labels"):
        cs.class_directions(net, data, "1", **kw)
    with pytest.raises(cs.InputError, match=msg or "Probing needs a label per input"):
        cs.probe(net, data, ["0"], **kw)
    with pytest.raises(cs.InputError, match=msg or "Probing needs a label per input"):
        cs.probe_steering(net, data, "0", 0, 1, [1.0], **kw)


def test_the_needs_labels_messages():
    assert "pass data=(inputs, labels)" in NEEDS_CLASS_LABELS and "pass data=(inputs, labels)" in PROBE_NEEDS_LABELS
    with pytest.raises(cs.InputError, match="Probing needs a label per input"):
        split_data(X, need_labels=True, missing=PROBE_NEEDS_LABELS)
