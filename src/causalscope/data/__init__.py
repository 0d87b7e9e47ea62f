"""Data sets, with no downloads: scikit-learn's 8x8 digits (the default), and MNIST-format IDX files.

>>> import causalscope as cs
>>> X, y = cs.data.digits("test")                 # (360, 64) floats in [0, 1], labels 0..9; fixed split
>>> X.shape, int(y.min()), int(y.max())
(torch.Size([360, 64]), 0, 9)

``load_idx`` / ``save_idx`` read and write single IDX files (plain or gzip); ``load_mnist_folder`` reads a
folder of the four standard MNIST / Fashion-MNIST files; ``find_fashion_mnist`` finds an installed
Fashion-MNIST (Debian: ``apt-get install dataset-fashion-mnist``). See docs/data.md.
"""
from ._digits import digits, digits_indices
from ._idx import IDX_TYPES, load_idx, parse_idx, save_idx
from ._mnist import FASHION_MNIST_CLASSES, find_fashion_mnist, load_mnist_folder, mnist_files

__all__ = ["FASHION_MNIST_CLASSES", "IDX_TYPES", "digits", "digits_indices", "find_fashion_mnist", "load_idx",
           "load_mnist_folder", "mnist_files", "parse_idx", "save_idx"]
