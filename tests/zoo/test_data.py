"""Data: the IDX reader / writer against the format's spec, MNIST-format folders, the real Fashion-MNIST
where Debian's package is installed, the fixed digits split, and the shipped digits MLP (accuracy, and the
training script's determinism)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import causalscope as cs
from causalscope.data import digits, digits_indices, find_fashion_mnist, load_idx, load_mnist_folder, save_idx
from causalscope.data._mnist import FASHION_MNIST_DIRS

# type code -> (torch dtype, struct letter of one big-endian value)
SPEC = {0x08: (torch.uint8, "B"), 0x09: (torch.int8, "b"), 0x0B: (torch.int16, "h"), 0x0C: (torch.int32, "i"),
        0x0D: (torch.float32, "f"), 0x0E: (torch.float64, "d")}


def sample(dtype: torch.dtype, shape=(3, 4, 5)) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g, dtype=dtype) * 1e3
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max + 1, shape, generator=g, dtype=torch.int64).to(dtype)


def idx_by_hand(code: int, dims: tuple[int, ...], values: list) -> bytes:
    """The file's bytes straight from the spec: 00 00 <code> <ndim>, dims as >u4, values big-endian."""
    letter = SPEC[code][1]
    return (bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
            + struct.pack(f">{len(values)}{letter}", *values))


@pytest.mark.parametrize("code", sorted(SPEC))
def test_reader_matches_the_spec_for_every_type_code(code, tmp_path):
    dtype, _ = SPEC[code]
    t = sample(dtype, (2, 3))
    values = t.flatten().tolist()
    path = tmp_path / "by-hand.idx"
    path.write_bytes(idx_by_hand(code, (2, 3), values))
    got = load_idx(path)
    assert got.dtype == dtype and got.shape == (2, 3)
    assert torch.equal(got, t)
    # and the writer produces exactly those bytes
    assert save_idx(t, tmp_path / "written.idx").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("code", sorted(SPEC))
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_round_trip_every_dtype_plain_and_gzip(code, compress, tmp_path):
    t = sample(SPEC[code][0])
    path = save_idx(t, tmp_path / "x", gzip=compress)         # no suffix: gzip is found by its magic bytes
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    got = load_idx(path)
    assert got.dtype == t.dtype and torch.equal(got, t)
    if compress:
        assert gzip.decompress(path.read_bytes()) == save_idx(t, tmp_path / "plain").read_bytes()


def test_round_trip_shapes_and_numpy_input(tmp_path):
    for shape in [(), (0,), (7,), (1, 1, 1, 1), (0, 28, 28)]:
        t = torch.arange(int(np.prod(shape)), dtype=torch.int32).reshape(shape)
        got = load_idx(save_idx(t, tmp_path / "s.idx"))
        assert got.shape == t.shape and torch.equal(got, t)
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    assert torch.equal(load_idx(save_idx(a, tmp_path / "np.idx.gz", gzip=True)), torch.from_numpy(a))
    # gzip written with mtime 0: the bytes depend only on the data
    first = save_idx(a, tmp_path / "a.gz", gzip=True).read_bytes()
    assert save_idx(a, tmp_path / "b.gz", gzip=True).read_bytes() == first


def test_bad_files_raise_input_errors_that_say_what_is_wrong(tmp_path):
    good = idx_by_hand(0x08, (2, 3), list(range(6)))
    cases = {
        "empty": (b"", "fewer than the 4-byte magic"),
        "badmagic": (b"\x00\x01\x08\x01" + good[4:], "bad magic number 00 01 08 01"),
        "badcode": (b"\x00\x00\x07\x02" + good[4:], "bad magic number 00 00 07 02"),
        "shortheader": (good[:7], "header announces 2 dimensions"),
        "truncated": (good[:-1], r"truncated: shape \(2, 3\) of unsigned bytes needs 18 bytes, the file has 17"),
        "trailing": (good + b"\x00", "1 bytes after the data"),
        "text": (b"hello world, not an idx file", "bad magic number"),
    }
    for name, (raw, msg) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(cs.InputError, match=msg):
            load_idx(tmp_path / name)
    # truncated gzip stream, and a truncated IDX inside a valid gzip stream
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-8])
    with pytest.raises(cs.InputError, match="gzip.*truncated or damaged"):
        load_idx(tmp_path / "cut.gz")
    (tmp_path / "inner.gz").write_bytes(gzip.compress(good[:-2]))
    with pytest.raises(cs.InputError, match="truncated"):
        load_idx(tmp_path / "inner.gz")
    with pytest.raises(cs.InputError, match="No IDX file"):
        load_idx(tmp_path / "missing")
    with pytest.raises(cs.InputError, match="IDX cannot hold dtype torch.int64.*Convert first"):
        save_idx(torch.arange(3), tmp_path / "long.idx")


def write_mnist_folder(folder, n_train=5, n_test=3, gz=True, rows=28, cols=28):
    folder.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(1)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        img = torch.randint(0, 256, (n, rows, cols), generator=g).to(torch.uint8)
        lab = torch.randint(0, 10, (n,), generator=g).to(torch.uint8)
        ext = ".gz" if gz else ""
        save_idx(img, folder / f"{prefix}-images-idx3-ubyte{ext}", gzip=gz)
        save_idx(lab, folder / f"{prefix}-labels-idx1-ubyte{ext}", gzip=gz)
        out[prefix] = (img, lab)
    return out


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_load_mnist_folder_reads_the_standard_names(gz, tmp_path):
    written = write_mnist_folder(tmp_path / "m", gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = load_mnist_folder(tmp_path / "m", split)
        img, lab = written[prefix]
        assert x.dtype == torch.float32 and x.shape == img.shape and y.dtype == torch.int64
        assert torch.equal(x, img.float() / 255) and torch.equal(y, lab.long())
        assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_load_mnist_folder_errors(tmp_path):
    write_mnist_folder(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(cs.InputError, match="No test labels.*t10k-labels-idx1-ubyte.gz.*The folder holds: "):
        load_mnist_folder(tmp_path / "m", "test")
    with pytest.raises(cs.InputError, match="split must be 'train' or 'test'"):
        load_mnist_folder(tmp_path / "m", "validation")
    with pytest.raises(cs.InputError, match="is not a folder"):
        load_mnist_folder(tmp_path / "nowhere")
    save_idx(torch.zeros(4, dtype=torch.uint8), tmp_path / "m" / "train-labels-idx1-ubyte.gz", gzip=True)
    with pytest.raises(cs.InputError, match="5 images but train-labels-idx1-ubyte.gz has 4 labels"):
        load_mnist_folder(tmp_path / "m", "train")


def test_find_fashion_mnist_honours_the_environment_variable(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path / "fm", n_train=2, n_test=2)
    monkeypatch.setenv("CAUSALSCOPE_FASHION_MNIST", str(tmp_path / "fm"))
    assert find_fashion_mnist() == tmp_path / "fm"
    monkeypatch.setenv("CAUSALSCOPE_FASHION_MNIST", str(tmp_path / "empty"))
    assert find_fashion_mnist() in (None, *map(Path, FASHION_MNIST_DIRS))  # the variable's folder is incomplete


def test_reads_the_real_fashion_mnist_where_installed(monkeypatch):
    monkeypatch.delenv("CAUSALSCOPE_FASHION_MNIST", raising=False)
    folder = find_fashion_mnist()
    if folder is None:
        pytest.skip("Fashion-MNIST is not installed (Debian: `apt-get install dataset-fashion-mnist`, which puts "
                    "the IDX files in /usr/share/datasets/fashion-mnist; `make test` installs it where apt works)")
    x, y = load_mnist_folder(folder, "test")
    assert x.shape == (10000, 28, 28) and x.dtype == torch.float32 and y.shape == (10000,)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))  # 1000 of each class
    assert y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]        # the published test set's first labels
    x_train, y_train = load_mnist_folder(folder, "train")
    assert x_train.shape == (60000, 28, 28) and torch.equal(torch.bincount(y_train), torch.full((10,), 6000))


def test_digits_split_sizes_ranges_stratification_and_determinism():
    X, y = digits("train")
    Xt, yt = digits("test")
    Xa, ya = digits("all")
    assert X.shape == (1437, 64) and Xt.shape == (360, 64) and Xa.shape == (1797, 64)
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert float(Xa.min()) == 0.0 and float(Xa.max()) == 1.0 and set(ya.tolist()) == set(range(10))
    # a partition of all rows, equal to scikit-learn's data / 16
    tr, te = digits_indices("train"), digits_indices("test")
    assert len(set(tr.tolist()) | set(te.tolist())) == 1797 and not set(tr.tolist()) & set(te.tolist())
    from sklearn.datasets import load_digits
    d = load_digits()
    assert torch.equal(X, torch.from_numpy(d.data[tr.numpy()] / 16).float())
    assert torch.equal(yt, torch.from_numpy(d.target[te.numpy()]))
    # stratified: every class gives ~20% to the test split
    counts = torch.bincount(yt, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37
    # fixed: the same split on every call, a different one for another seed; fresh tensors each time
    assert torch.equal(digits("test")[0], Xt) and torch.equal(digits_indices("test"), te)
    assert not torch.equal(digits_indices("test", seed=1), te) and len(digits_indices("test", seed=1)) == 360
    Xt[:] = -1
    assert float(digits("test")[0].min()) == 0.0
    assert digits("test", images=True)[0].shape == (360, 8, 8)
    # pinned, so that a change in the split (which would invalidate the shipped model's test accuracy) shows
    assert te[:8].tolist() == digits_indices("test")[:8].tolist() == PINNED_TEST_HEAD
    with pytest.raises(cs.InputError, match="split must be 'train', 'test' or 'all'"):
        digits("valid")


PINNED_TEST_HEAD = [3, 7, 13, 19, 36, 38, 43, 48]


def test_shipped_digits_mlp_is_accurate_and_registered():
    from causalscope.zoo.train_digits import accuracy, training_info

    net = cs.zoo.build_digits_mlp()
    assert not net.training and sum(p.numel() for p in net.parameters()) == 58442
    acc = accuracy(net, *digits("test"))
    assert acc >= 0.95
    info = training_info()
    assert acc == info["test_acc"] and info["config"]["seed"] == 0 and info["data"]["n_test"] == 360
    assert "digits-mlp" in cs.zoo.names() and f"{100 * acc:.1f}% test" in cs.zoo.describe()["digits-mlp"]
    m = cs.load("digits-mlp")
    assert {"fc1", "act1", "act2", "act3", "fc4"} <= set(m.site_names())
    x = digits("test")[0][:4]
    assert torch.equal(m.run(x).output, net(x))


def test_training_is_deterministic_and_leaves_torch_settings_alone(tmp_path):
    from causalscope.zoo.train_digits import TrainConfig, load_trained, save, train

    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    cfg = TrainConfig(epochs=2)
    a, hist = train(cfg, log=None)
    b, _ = train(cfg, log=None)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert len(hist["loss"]) == 2 and hist["loss"][1] < hist["loss"][0]
    c, _ = train(TrainConfig(epochs=2, seed=1), log=None)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == det
    # save / load_trained(folder) round trip
    save(a, {"in_features": 64, "n_classes": 10}, tmp_path / "digits-mlp")
    back = load_trained(tmp_path / "digits-mlp")
    assert not back.training and all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                                         back.state_dict().values()))


def test_docstring_examples_run():
    import doctest

    import causalscope.data._digits as digits_mod
    import causalscope.data._idx as idx_mod

    for mod in (cs.data, idx_mod, digits_mod):
        failures, tried = doctest.testmod(mod, verbose=False, extraglobs={"cs": cs, "torch": torch})
        assert tried and not failures, mod.__name__
