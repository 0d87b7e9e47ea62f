"""load_interpbench: folders written here in InterpBench's layout load into the same model (outputs equal the
TransformerLens model that was saved), and pickles or weights that would run code are refused before they run."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

import causalscope as cs
from causalscope import circuits

tl = pytest.importorskip("transformer_lens")  # the [tl] extra, in [test]


def saved_model(folder, as_object: bool, seed: int = 0):
    """A small SIIT-like low-level model (TransformerLens, no LayerNorm, ReLU), saved as InterpBench saves it."""
    cfg = tl.HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=6, d_head=4, n_heads=2, d_mlp=32, d_vocab=7,
                                     d_vocab_out=5, act_fn="relu", normalization_type=None, seed=seed,
                                     device="cpu")
    model = tl.HookedTransformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "ll_model.pth")
    with open(folder / "ll_model_cfg.pkl", "wb") as fh:
        pickle.dump(cfg if as_object else cfg.to_dict(), fh)
    with open(folder / "edges.pkl", "wb") as fh:
        pickle.dump([("blocks.0.attn.hook_result[:, :, 0]", "blocks.1.mlp.hook_post"),
                     ("blocks.1.mlp.hook_post", "blocks.1.hook_resid_post")], fh)
    (folder / "meta.json").write_text(json.dumps({"case": "3", "seed": seed, "iit_weight": 1.0}))
    return model


@pytest.mark.parametrize("as_object", [False, True], ids=["cfg-dict", "cfg-object"])
def test_a_saved_folder_loads_into_the_same_model(tmp_path, as_object):
    ref = saved_model(tmp_path / "3", as_object)
    bench = circuits.load_interpbench(tmp_path / "3")
    tokens = torch.randint(0, 7, (4, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(tokens)
    got = bench.model.run(tokens).output
    assert torch.equal(got, want)
    assert bench.config["n_layers"] == 2 and bench.config["dtype"] == torch.float32
    assert bench.edges[0] == ("blocks.0.attn.hook_result[:, :, 0]", "blocks.1.mlp.hook_post")
    assert bench.meta["case"] == "3" and bench.model.name == "interpbench-3"
    # the causalscope methods work on it: patching a head's output from another input moves the logits
    r = bench.model.run(tokens[:2], {cs.Site("blocks.0.attn.hook_z"): cs.Patch(tokens[2:])})
    assert not torch.equal(r.output, want[:2])


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARK}",))


MARK = ""


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
    global MARK
    saved_model(tmp_path / "m", as_object=False)
    MARK = str(tmp_path / "ran")
    (tmp_path / "m" / "ll_model_cfg.pkl").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(cs.InputError, match=r"refused .*ll_model_cfg\.pkl.*posix\.system|refused .*os\.system"):
        circuits.load_interpbench(tmp_path / "m")
    assert not os.path.exists(MARK)  # nothing ran
    # inside an otherwise plain config, and in the edges file
    cfg = saved_model(tmp_path / "n", as_object=False).cfg.to_dict()
    cfg["act_fn"] = _Evil()
    (tmp_path / "n" / "ll_model_cfg.pkl").write_bytes(pickle.dumps(cfg))
    with pytest.raises(cs.InputError, match="not plain data"):
        circuits.load_interpbench(tmp_path / "n")
    saved_model(tmp_path / "e", as_object=False)
    (tmp_path / "e" / "edges.pkl").write_bytes(pickle.dumps([("a", "b"), _Evil()]))
    with pytest.raises(cs.InputError, match="refused .*edges.pkl"):
        circuits.load_interpbench(tmp_path / "e")
    assert not os.path.exists(MARK)


def test_weights_that_are_not_a_plain_state_dict_are_refused(tmp_path):
    saved_model(tmp_path / "w", as_object=False)
    torch.save({"W": _Evil()}, tmp_path / "w" / "ll_model.pth")  # a full pickle, not weights only
    with pytest.raises(cs.InputError, match="not a plain state dict"):
        circuits.load_interpbench(tmp_path / "w")
    assert not os.path.exists(tmp_path / "ran")


def test_broken_folders_say_what_is_missing(tmp_path):
    with pytest.raises(cs.InputError, match="not a folder"):
        circuits.load_interpbench(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(cs.InputError, match="no ll_model.pth or ll_model_cfg.pkl"):
        circuits.load_interpbench(tmp_path / "empty")
    saved_model(tmp_path / "x", as_object=False)
    state = torch.load(tmp_path / "x" / "ll_model.pth", weights_only=True)
    state.pop("blocks.0.attn.W_Q")
    torch.save(state, tmp_path / "x" / "ll_model.pth")
    with pytest.raises(cs.InputError, match="do not fit its config"):
        circuits.load_interpbench(tmp_path / "x")
    (tmp_path / "x" / "ll_model_cfg.pkl").write_bytes(b"garbage")
    with pytest.raises(cs.InputError, match="refused"):
        circuits.load_interpbench(tmp_path / "x")
