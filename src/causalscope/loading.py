"""``causalscope.load``: a bundled name, a local Hugging Face directory, a Hub id (or your HF cache), an HF /
TransformerLens model or any module."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from . import zoo
from .core import Model
from .core.adapters import adapter_for
from .errors import InputError, check_flag, close_names

#: ``from_pretrained`` arguments that also locate the tokenizer (same repo, same snapshot, same trust)
_TOKENIZER_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies",
                     "trust_remote_code")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


@dataclass(frozen=True)
class ModelSpec:
    """How to make a model where it is needed (a Ray worker loads it from this): anything :func:`load` takes, with
    the arguments to load it with.

    >>> spec = causalscope.ModelSpec("gpt2", dtype=torch.float16)    # a Hub id, loaded on each worker
    >>> spec = causalscope.ModelSpec("/models/my-llama")             # a folder every machine can read
    >>> avg = causalscope.trace_average(spec, facts, executor=causalscope.RayExecutor(workers=8, gpus_per_worker=1))

    Every method that takes a model takes a spec too (``causalscope.load(spec)`` loads it here).
    """

    source: Any
    tokenizer: Any = None
    name: str | None = None
    generic: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, source: Any, tokenizer: Any = None, *, name: str | None = None, generic: bool = False,
                 **from_pretrained: Any) -> None:
        if isinstance(source, ModelSpec):
            raise InputError("ModelSpec(ModelSpec(...)): give the model itself (a name, a folder, a Hub id or a "
                             "module), not another spec.")
        ok = isinstance(source, (Model, nn.Module)) or (isinstance(source, (str, os.PathLike)) and str(source).strip())
        if not ok:
            raise InputError(f"ModelSpec's source must be a bundled model name, a local Hugging Face folder, a Hub id, "
                             f"an nn.Module or a causalscope.Model; got {type(source).__name__} {source!r:.60}.")
        if name is not None and not isinstance(name, str):
            raise InputError(f"ModelSpec's name must be a string (or None), got {name!r:.40}.")
        check_flag(generic, "ModelSpec's generic")
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "tokenizer", tokenizer)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "generic", generic)
        object.__setattr__(self, "kwargs", dict(from_pretrained))

    def load(self) -> Model:
        """The model, loaded here (``causalscope.load`` with this spec's arguments)."""
        return load(self.source, self.tokenizer, name=self.name, generic=self.generic, **self.kwargs)


def load(model: Any, tokenizer: Any = None, *, name: str | None = None, generic: bool = False,
         **from_pretrained: Any) -> Model:
    """Wrap a model for causal work. The model is used in place (never copied, never changed).

    >>> m = causalscope.load("tiny-gpt2")                       # a bundled model (no download)
    >>> m = causalscope.load("/models/my-llama")                # a local Hugging Face directory
    >>> m = causalscope.load("gpt2", dtype=torch.float16)       # a Hub id: downloaded, or read from your HF cache
    >>> m = causalscope.load(hf_model, tokenizer)               # an in-memory transformers model
    >>> m = causalscope.load(hooked_transformer)                # TransformerLens
    >>> m = causalscope.load(my_net)                            # any nn.Module: sites are module paths

    A string is tried as a bundled name, then as a local folder, then as a Hub id through transformers'
    ``AutoModelForCausalLM.from_pretrained`` (with ``AutoTokenizer`` unless ``tokenizer`` is given): keyword
    arguments (``revision``, ``dtype``, ``device_map``, ``cache_dir``, ``trust_remote_code``, ...) go to it as
    given, offline mode (``HF_HUB_OFFLINE=1``) and the cache work as in transformers.
    ``generic=True`` treats a transformer as a plain module (module paths only, no canonical names).
    """
    if isinstance(model, Model):
        _no_kwargs(from_pretrained, "a causalscope.Model")
        return model
    if isinstance(model, ModelSpec):
        _no_kwargs(from_pretrained, "a causalscope.ModelSpec (give them to the spec)")
        return model.load()
    if isinstance(model, (str, os.PathLike)):
        key = str(model)
        if not key.strip():
            raise InputError(f"causalscope.load got an empty name; give a bundled model name "
                             f"({', '.join(zoo.names())}), a local Hugging Face directory or a Hub id.")
        if key in zoo.REGISTRY:
            _no_kwargs(from_pretrained, f"the bundled model {key!r}")
            module, tok = zoo.REGISTRY[key][0]()
            return Model(adapter_for(module, tokenizer or tok, key, generic), key)
        path = Path(key).expanduser()
        if path.is_dir():
            return _load_hf_dir(path, tokenizer, name, generic, from_pretrained)
        return _load_hub(key, path, tokenizer, name, generic, from_pretrained)
    if not isinstance(model, nn.Module):
        raise InputError(f"causalscope.load takes a bundled model name, a local Hugging Face directory, a Hub id "
                         f"or a torch.nn.Module; got {type(model).__name__}.")
    _no_kwargs(from_pretrained, "a model object")
    return Model(adapter_for(model, tokenizer, name, generic), name)


def _no_kwargs(kwargs: dict[str, Any], what: str) -> None:
    if kwargs:
        raise InputError(f"from_pretrained arguments ({', '.join(sorted(kwargs))}) apply only to a Hub id or a "
                         f"local folder, not to {what}: convert the model yourself (e.g. model.to(dtype)).")


def _pretrained_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The user's arguments under the names transformers (>= 4.56) reads: ``torch_dtype`` is ``dtype``."""
    kwargs = dict(kwargs)
    if "torch_dtype" in kwargs:
        if "dtype" in kwargs:
            raise InputError("pass dtype= or torch_dtype=, not both (they are the same setting; dtype is its name).")
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    return kwargs


def _load_hf_dir(path: Path, tokenizer: Any, name: str | None, generic: bool, kwargs: dict[str, Any]) -> Model:
    if not (path / "config.json").is_file():
        raise InputError(f"{str(path)!r} has no config.json, so it is not a Hugging Face model directory.")
    _check_hf_dir(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"local_files_only": True, **_pretrained_kwargs(kwargs)}
    try:
        module = AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()
    except Exception as err:  # what the checks above cannot see (a corrupt weights file, a config transformers refuses)
        cause = " ".join(f"{type(err).__name__}: {err}".split())
        raise InputError(f"transformers could not load the Hugging Face directory {str(path)!r} "
                         f"(AutoModelForCausalLM.from_pretrained): {cause[:600]} Fix the folder (config.json and the "
                         f"weights written by model.save_pretrained), or load the model yourself and pass the "
                         f"module to causalscope.load.") from err
    if tokenizer is None and any((path / f).is_file() for f in _TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(path, **{k: v for k, v in kwargs.items() if k in _TOKENIZER_KWARGS})
    return Model(adapter_for(module, tokenizer, name or path.name, generic), name or path.name)


#: the files ``save_pretrained`` writes the weights to (single file or sharded, with its index)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")


def _check_hf_dir(path: Path) -> None:
    """A local Hugging Face folder's config.json is JSON, names a ``model_type`` transformers knows, and the folder
    holds weights: else a clear error before transformers is asked (its own errors name none of the fixes)."""
    import json

    where = str(path / "config.json")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{where!r} is not valid JSON ({err}); a Hugging Face config.json is the JSON object that "
                         f"model.config.save_pretrained(folder) writes.") from None
    if not isinstance(config, dict):
        raise InputError(f"{where!r} holds a JSON {type(config).__name__}, not an object; a Hugging Face config.json "
                         f"is the JSON object that model.config.save_pretrained(folder) writes.")
    mtype = config.get("model_type")
    if not isinstance(mtype, str) or not mtype:
        raise InputError(f"{where!r} has no \"model_type\" (e.g. \"gpt2\", \"llama\"), so transformers cannot tell "
                         f"which architecture to build. Add it, or re-save the model with save_pretrained.")
    from transformers import CONFIG_MAPPING

    if mtype not in CONFIG_MAPPING:
        import transformers

        close = close_names(mtype, list(CONFIG_MAPPING.keys()), n=3)
        hint = f" Closest known: {', '.join(map(repr, close))}." if close else ""
        raise InputError(f"{where!r} has model_type {mtype!r}, which transformers {transformers.__version__} does not "
                         f"know.{hint} Fix the model_type, or upgrade transformers (a model that needs its own code "
                         f"is not loaded from a folder: build it yourself and pass the module).")
    weights = [*_WEIGHT_FILES, "*.safetensors", "*.bin", "*.h5", "*.msgpack", "*.gguf"]
    if not any(any(path.glob(pattern)) for pattern in weights):
        raise InputError(f"{str(path)!r} has a config.json but no weights (no {', '.join(_WEIGHT_FILES)}). Save "
                         f"the model with model.save_pretrained(folder), or build it from the config and pass the "
                         f"module: causalscope.load(AutoModelForCausalLM.from_config(config)).")


def _load_hub(key: str, path: Path, tokenizer: Any, name: str | None, generic: bool,
              kwargs: dict[str, Any]) -> Model:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import has_file

    kwargs = _pretrained_kwargs(kwargs)
    try:
        module = AutoModelForCausalLM.from_pretrained(key, **kwargs).eval()
    except Exception as err:  # any failure here means "not loadable": say why, keep the cause
        cause = " ".join(f"{type(err).__name__}: {err}".split())
        at = f" at revision {kwargs['revision']!r}" if kwargs.get("revision") else ""
        raise InputError(
            f"{key!r} is neither a bundled model ({', '.join(zoo.names())}) nor a local directory (no folder "
            f"{str(path.absolute())!r}), and transformers could not load it as a Hugging Face Hub id"
            f"{at} (AutoModelForCausalLM.from_pretrained; {_hub_where(kwargs)}): {cause[:600]} Fix: check the "
            f"name (a Hub id is 'org/name'), log in (token=) for a gated model, or point at the cache that holds "
            f"it (cache_dir=, or HF_HUB_CACHE / HF_HOME set before Python starts).") from err
    tok_kwargs = {k: v for k, v in kwargs.items() if k in _TOKENIZER_KWARGS}
    where = {k: v for k, v in tok_kwargs.items() if k in ("revision", "cache_dir", "token", "local_files_only")}
    # AutoTokenizer makes an EMPTY tokenizer from the config when the repo has no tokenizer files (transformers
    # 5.x): that would tokenize every prompt to nothing useful, so without tokenizer files there is none
    if tokenizer is None and any(has_file(key, f, **where) for f in _TOKENIZER_FILES):
        try:
            tokenizer = AutoTokenizer.from_pretrained(key, **tok_kwargs)
        except Exception as err:  # the model is still usable with token ids: say so, keep going
            warnings.warn(f"causalscope.load({key!r}): the model loaded but its tokenizer did not "
                          f"({type(err).__name__}: {str(err)[:300]}); run it on token ids, or pass "
                          f"tokenizer=... to causalscope.load.", stacklevel=3)
    return Model(adapter_for(module, tokenizer, name or key, generic), name or key)


def _hub_where(kwargs: dict[str, Any]) -> str:
    """Where transformers looked: the Hub and/or which cache (for the error message)."""
    from huggingface_hub import constants

    cache = kwargs.get("cache_dir") or constants.HF_HUB_CACHE
    offline = bool(constants.HF_HUB_OFFLINE) or bool(kwargs.get("local_files_only"))
    return f"{'offline: only' if offline else 'the Hub, then'} the HF cache {str(cache)!r}"
