"""MNIST-format folders (MNIST, Fashion-MNIST, KMNIST, ...): the four standard IDX files, found by name."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InputError
from ._idx import load_idx

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
# where Debian's `dataset-fashion-mnist` package puts the files (`dpkg -L dataset-fashion-mnist`)
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_ENV = "CAUSALSCOPE_FASHION_MNIST"
_PREFIX = {"train": "train", "test": "t10k", "t10k": "t10k"}


def _candidates(prefix: str, kind: str) -> list[str]:
    """File names tried, in order: ``train-images-idx3-ubyte`` (+ ``.gz``), and the dotted variant
    ``train-images.idx3-ubyte`` that some mirrors use."""
    ndim = 3 if kind == "images" else 1
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    return [s + ext for s in stems for ext in (".gz", "")]


def mnist_files(folder: str | os.PathLike[str], split: str = "train") -> tuple[Path, Path]:
    """``(images file, labels file)`` of ``split`` in ``folder``; :class:`causalscope.InputError` listing the
    names tried and what the folder holds when one is missing."""
    if split not in _PREFIX:
        raise InputError(f"split must be 'train' or 'test', got {split!r}.")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"{str(root)!r} is not a folder. Pass the folder that holds the MNIST-format IDX files "
                         "(train-images-idx3-ubyte.gz, ...).")
    found = []
    for kind in ("images", "labels"):
        names = _candidates(_PREFIX[split], kind)
        hit = next((root / n for n in names if (root / n).is_file()), None)
        if hit is None:
            present = sorted(p.name for p in root.iterdir())[:12]
            raise InputError(f"No {split} {kind} in {str(root)!r}: looked for {', '.join(names)}. "
                             f"The folder holds: {', '.join(present) if present else 'nothing'}.")
        found.append(hit)
    return found[0], found[1]


def load_mnist_folder(folder: str | os.PathLike[str], split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of an MNIST-format folder: images ``float32`` in ``[0, 1]`` shaped ``(n, rows, cols)``
    (``(n, 28, 28)`` for MNIST and Fashion-MNIST), labels ``int64`` shaped ``(n,)``.

    ``split="train"`` reads ``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``; ``"test"``
    reads the ``t10k-`` files. Never downloads. ``find_fashion_mnist()`` returns an installed folder::

        folder = causalscope.data.find_fashion_mnist()        # None where it is not installed
        x, y = causalscope.data.load_mnist_folder(folder, "test")   # (10000, 28, 28), (10000,)
    """
    img_path, lab_path = mnist_files(folder, split)
    images, labels = load_idx(img_path), load_idx(lab_path)
    if images.ndim != 3 or images.dtype != torch.uint8:
        raise InputError(f"{str(img_path)!r} holds {images.dtype} of shape {tuple(images.shape)}; MNIST images are "
                         "uint8 of shape (n, rows, cols).")
    if labels.ndim != 1 or labels.dtype != torch.uint8:
        raise InputError(f"{str(lab_path)!r} holds {labels.dtype} of shape {tuple(labels.shape)}; MNIST labels "
                         "are uint8 of shape (n,).")
    if images.shape[0] != labels.shape[0]:
        raise InputError(f"{img_path.name} has {images.shape[0]} images but {lab_path.name} has {labels.shape[0]} "
                         "labels: the two files do not belong together.")
    return images.float().div_(255.0), labels.long()


def find_fashion_mnist() -> Path | None:
    """The folder of an installed Fashion-MNIST, or ``None``: ``$CAUSALSCOPE_FASHION_MNIST`` if set, then the
    Debian package's folder (``apt-get install dataset-fashion-mnist`` puts the four ``.gz`` files in
    ``/usr/share/datasets/fashion-mnist``). A folder counts only when all four files are there."""
    env = os.environ.get(FASHION_MNIST_ENV)
    for d in ([env] if env else []) + list(FASHION_MNIST_DIRS):
        try:
            mnist_files(d, "train"), mnist_files(d, "test")
        except InputError:
            continue
        return Path(d)
    return None
