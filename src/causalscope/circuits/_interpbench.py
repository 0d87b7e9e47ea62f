"""``load_interpbench``: a released InterpBench model folder, read without running any code from it.

>>> bench = circuits.load_interpbench("InterpBench/3")       # ll_model.pth, ll_model_cfg.pkl (+ edges.pkl, meta.json)
>>> bench.model                                              # a causalscope Model around a HookedTransformer
>>> bench.edges[:2], bench.config["n_layers"]

InterpBench (Gupta et al. 2024) ships each SIIT-trained model as a folder: ``ll_model.pth`` (a TransformerLens
``state_dict``), ``ll_model_cfg.pkl`` (the ``HookedTransformerConfig``, pickled as a dict or as the config object)
and, per case, the circuit's edges (``edges.pkl``) and metadata (``meta.json``). A pickle can run any code when it
is loaded, so the ``.pkl`` files are read by an unpickler that builds only plain data (dicts, lists, tuples, sets,
numbers, strings, bytes, torch dtypes, numeric numpy scalars) and records a ``HookedTransformerConfig`` as its
fields; anything else (a function, a class, ``os.system``) is refused before it runs. The weights are read with
``torch.load(..., weights_only=True)``. Needs TransformerLens (``pip install "causalscope[tl]"``).
"""
from __future__ import annotations

import builtins
import collections
import io
import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import Model
from ..errors import InputError
from ..loading import load

__all__ = ["InterpBenchModel", "load_interpbench", "read_plain_pickle"]

_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes", "bytearray",
             "bool", "slice"}
_CONFIG_CLASSES = {("transformer_lens.HookedTransformerConfig", "HookedTransformerConfig"),
                   ("transformer_lens.config.hooked_transformer_config", "HookedTransformerConfig"),
                   ("transformer_lens.config.HookedTransformerConfig", "HookedTransformerConfig")}
_NUMPY_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _ConfigFields(dict):
    """What a pickled ``HookedTransformerConfig`` becomes: its fields, as a dict (no TransformerLens code runs)."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a HookedTransformerConfig whose state is not a dict of fields")
        self.update(state)


def _dtype(spec: Any, *args: Any) -> np.dtype:
    d = np.dtype(spec)
    if d.hasobject or d.kind not in "biufcSUV":
        raise pickle.UnpicklingError(f"numpy dtype {d} is not plain numbers or text")
    return d


def _scalar(dtype: Any, data: bytes = b"") -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("a numpy scalar that is not plain numbers")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


class _PlainUnpickler(pickle.Unpickler):
    """Builds plain data only; every other global a pickle names is refused, so nothing in it can run."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _BUILTINS:
            return getattr(builtins, name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) in _CONFIG_CLASSES:
            return _ConfigFields
        if (module, name) == ("numpy", "dtype"):
            return _dtype
        if (module, name) in _NUMPY_SCALAR:
            return _scalar
        raise pickle.UnpicklingError(f"it names {module}.{name}, which is not plain data")


def read_plain_pickle(path: str | Path) -> Any:
    """A pickle file's plain data, refusing (before it runs) anything that is not plain data.

    >>> read_plain_pickle("ll_model_cfg.pkl")["n_layers"]
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {str(path)!r}: {err.strerror}.") from None
    try:
        out = _PlainUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as err:
        raise InputError(f"refused {str(path)!r}: {err}. causalscope reads only plain data from a pickle (dicts, "
                         f"lists, numbers, strings, torch dtypes, a HookedTransformerConfig's fields), so that "
                         f"loading a downloaded file can never run code; re-save it as plain data.") from None
    return dict(out) if isinstance(out, _ConfigFields) else out


@dataclass
class InterpBenchModel:
    """A loaded InterpBench folder: the model, its config, the circuit's edges and the metadata.

    >>> bench = circuits.load_interpbench(folder)
    >>> bench.model.run(tokens).output.shape
    """

    model: Model
    config: dict[str, Any]
    edges: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    folder: str = ""
    ignored_config: list[str] = field(default_factory=list)

    @property
    def module(self) -> Any:
        """The ``HookedTransformer``."""
        return self.model.module


def load_interpbench(folder: str | Path, *, name: str | None = None) -> InterpBenchModel:
    """The model of a released InterpBench folder (see the module docstring), with its circuit and metadata.

    >>> bench = circuits.load_interpbench("InterpBench/3")
    >>> cs.activation_patching(bench.model, clean, corrupted, "blocks.0.attn.hook_result", metric)

    Config keys this TransformerLens does not know (written by an older one, e.g. derived sizes) are left out
    and listed in ``ignored_config``; the weights must then load strictly, so a key that mattered fails loudly.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"load_interpbench takes an InterpBench model folder; {str(folder)!r} is not a folder.")
    missing = [f for f in ("ll_model.pth", "ll_model_cfg.pkl") if not (root / f).is_file()]
    if missing:
        raise InputError(f"{str(root)!r} is not an InterpBench model folder: it has no {' or '.join(missing)} "
                         f"(a case's folder holds ll_model.pth and ll_model_cfg.pkl).")
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        raise InputError("load_interpbench needs TransformerLens: pip install 'causalscope[tl]'.") from None
    raw = read_plain_pickle(root / "ll_model_cfg.pkl")
    if not isinstance(raw, dict):
        raise InputError(f"{str(root / 'll_model_cfg.pkl')!r} holds a {type(raw).__name__}, not a config (a dict "
                         f"of HookedTransformerConfig fields).")
    fields = {f for f, spec in HookedTransformerConfig.__dataclass_fields__.items() if spec.init}
    config = {k: v for k, v in raw.items() if k in fields}
    ignored = sorted(k for k in raw if k not in fields)
    config["device"] = "cpu"
    try:
        cfg = HookedTransformerConfig(**config)
    except (TypeError, ValueError, AssertionError) as err:
        raise InputError(f"{str(root / 'll_model_cfg.pkl')!r} is not a config this TransformerLens can build: "
                         f"{err}.") from None
    try:
        state = torch.load(root / "ll_model.pth", map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses anything but tensors and plain containers
        raise InputError(f"refused {str(root / 'll_model.pth')!r}: it is not a plain state dict of tensors "
                         f"({type(err).__name__}: {str(err)[:200]}). Only weights are read from it, never code.") \
            from None
    if not isinstance(state, dict):
        raise InputError(f"{str(root / 'll_model.pth')!r} holds a {type(state).__name__}, not a state dict.")
    with warnings.catch_warnings():
        # TransformerLens 3 deprecates HookedTransformer for TransformerBridge, which boots Hugging Face models;
        # InterpBench's weights are HookedTransformer state dicts, so this is the class that holds them
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        module = HookedTransformer(cfg)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"the weights in {str(root / 'll_model.pth')!r} do not fit its config: "
                         f"{' '.join(str(err).split())[:400]}") from None
    module.eval()
    edges = read_plain_pickle(root / "edges.pkl") if (root / "edges.pkl").is_file() else None
    meta: dict[str, Any] = {}
    if (root / "meta.json").is_file():
        try:
            meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(f"{str(root / 'meta.json')!r} is not JSON ({err}).") from None
    return InterpBenchModel(model=load(module, name=name or f"interpbench-{root.name}"), config=dict(raw),
                            edges=edges, meta=meta if isinstance(meta, dict) else {"meta": meta},
                            folder=str(root), ignored_config=ignored)
