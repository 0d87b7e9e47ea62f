"""IDX files, the format of MNIST and Fashion-MNIST: read, write, and find the standard file names.

The format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): a 4-byte magic number
``0x00 0x00 <dtype code> <number of dims>``, then each dimension as a big-endian unsigned 32-bit integer,
then the values in C order, big-endian. Type codes: ``0x08`` unsigned byte, ``0x09`` signed byte, ``0x0B``
short (2 bytes), ``0x0C`` int (4 bytes), ``0x0D`` float (4 bytes), ``0x0E`` double (8 bytes). The files are
often gzip-compressed; the reader recognises gzip by its magic bytes (``1f 8b``), whatever the file is called.
"""
from __future__ import annotations

import gzip as _gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError

# type code -> (big-endian numpy dtype, torch dtype, name)
IDX_TYPES: dict[int, tuple[str, torch.dtype, str]] = {
    0x08: (">u1", torch.uint8, "unsigned byte"),
    0x09: (">i1", torch.int8, "signed byte"),
    0x0B: (">i2", torch.int16, "short"),
    0x0C: (">i4", torch.int32, "int"),
    0x0D: (">f4", torch.float32, "float"),
    0x0E: (">f8", torch.float64, "double"),
}
_CODE_OF = {torch_dtype: code for code, (_, torch_dtype, _) in IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_SUPPORTED = ", ".join(f"0x{c:02X} ({t[2]}, {str(t[1]).replace('torch.', '')})" for c, t in IDX_TYPES.items())


def _read_bytes(path: str | os.PathLike[str]) -> tuple[Path, bytes]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"No IDX file at {str(p)!r}" + (" (it is a directory)." if p.is_dir() else "."))
    raw = p.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = _gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise InputError(f"{str(p)!r} starts like a gzip file but does not decompress ({e}): the file is "
                             "truncated or damaged; download or copy it again.") from None
    return p, raw


def parse_idx(raw: bytes, where: str = "<bytes>") -> torch.Tensor:
    """The tensor held by the (uncompressed) bytes of an IDX file; ``where`` names them in errors."""
    if len(raw) < 4:
        raise InputError(f"{where} is not an IDX file: it has {len(raw)} bytes, fewer than the 4-byte magic "
                         "number (0x00 0x00 <type code> <number of dims>). The file is empty or truncated.")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in IDX_TYPES:
        raise InputError(f"{where} is not an IDX file: bad magic number {raw[:4].hex(' ')} (expected 00 00 "
                         f"<type code> <number of dims>, with type code one of {_SUPPORTED}).")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{where} is truncated: its header announces {ndim} dimensions ({header} bytes) but the "
                         f"file has only {len(raw)} bytes.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    np_dtype, torch_dtype, _ = IDX_TYPES[code]
    count = int(np.prod(dims, dtype=np.int64)) if ndim else 1
    expected = header + count * np.dtype(np_dtype).itemsize
    if len(raw) < expected:
        raise InputError(f"{where} is truncated: shape {tuple(dims)} of {IDX_TYPES[code][2]}s needs {expected} "
                         f"bytes, the file has {len(raw)}. Download or copy it again.")
    if len(raw) > expected:
        raise InputError(f"{where} has {len(raw) - expected} bytes after the data that its header announces "
                         f"(shape {tuple(dims)} of {IDX_TYPES[code][2]}s): not a valid IDX file.")
    values = np.frombuffer(raw, dtype=np_dtype, count=count, offset=header).astype(np_dtype[1:])  # native order
    return torch.from_numpy(values.reshape(dims))


def load_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX file (plain or gzip-compressed) into a tensor of the file's dtype and shape.

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "x.idx")
    >>> _ = save_idx(torch.arange(6, dtype=torch.int16).reshape(2, 3), f)
    >>> load_idx(f)
    tensor([[0, 1, 2],
            [3, 4, 5]], dtype=torch.int16)

    Type codes map to ``uint8, int8, int16, int32, float32, float64``. A bad magic number, a truncated file
    or trailing bytes raise :class:`causalscope.InputError` naming the file and what is wrong.
    """
    p, raw = _read_bytes(path)
    return parse_idx(raw, repr(str(p)))


def save_idx(tensor: Any, path: str | os.PathLike[str], gzip: bool = False) -> Path:
    """Write ``tensor`` (a torch tensor or numpy array) as an IDX file; ``gzip=True`` compresses it (with a
    zero timestamp, so the bytes depend only on the data). Returns the path.

    The dtype must be one IDX can hold: ``uint8, int8, int16, int32, float32, float64`` (convert first,
    e.g. ``labels.to(torch.uint8)``); every dimension must fit in 32 bits.
    """
    t = torch.as_tensor(tensor).detach().cpu()
    if t.dtype not in _CODE_OF:
        raise InputError(f"IDX cannot hold dtype {t.dtype}: it stores {_SUPPORTED}. Convert first, "
                         "e.g. `x.to(torch.uint8)` for labels or pixels, `x.float()` for activations.")
    if t.ndim > 255 or any(d >= 2 ** 32 for d in t.shape):
        raise InputError(f"IDX cannot hold shape {tuple(t.shape)}: at most 255 dims, each below 2**32.")
    code = _CODE_OF[t.dtype]
    body = np.ascontiguousarray(t.numpy()).astype(IDX_TYPES[code][0], copy=False).tobytes()
    raw = struct.pack(">HBB", 0, code, t.ndim) + struct.pack(f">{t.ndim}I", *t.shape) + body
    p = Path(path).expanduser()
    p.write_bytes(_gzip.compress(raw, mtime=0) if gzip else raw)
    return p
