"""The ``out=`` folder of a sharded run: a manifest of the run's settings and one bundle per finished shard.

>>> store = ShardStore("runs/trace", method="trace_average", key="3f2a...", settings={"seed": 0})
>>> store.load(shard)            # the shard's results if a finished shard with the same key is there, else None
>>> store.save(shard, results)   # written at once, atomically (a crash never leaves half a shard)

A folder belongs to one run: a second run with other settings, another model or other items is refused with
the settings that differ (use another folder, or delete this one), so a shard is never reused for a run it
does not belong to. The manifest records the number of shards, and a rerun that does not ask for a number
takes it (so a rerun with more or fewer workers still finds its shards). Shards are named by their items' range
and a digest of the run key and of their items, so a rerun that asks for another number of shards writes new
files beside the old (reusing those that coincide) instead of mixing them up.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import InputError
from ..results import load_bundle, save_bundle
from ._fingerprint import fingerprint

__all__ = ["Shard", "ShardStore", "check_out"]

_MANIFEST = "manifest.json"


@dataclass
class Shard:
    """Items ``[start, start + len(items))`` of a run, computed together; ``key`` names its file."""

    index: int
    start: int
    items: list[Any]
    key: str = ""

    @property
    def stop(self) -> int:
        return self.start + len(self.items)

    def describe(self) -> str:
        return f"shard {self.index} (items {self.start}..{self.stop - 1})"


def check_out(out: Any) -> None:
    """``out`` is None or a folder path (a non-empty str or a path); else InputError."""
    if out is not None and (not isinstance(out, (str, os.PathLike)) or not str(out).strip()):
        raise InputError(f"out must be a folder path (a str or pathlib.Path) for the run's shards, or None (no "
                         f"checkpoints); got {out!r:.60}.")


class ShardStore:
    """Finished shards on disk (``out`` given) or nowhere (``out=None``: every shard is computed)."""

    def __init__(self, out: str | os.PathLike[str] | None, *, method: str, key: str, settings: dict[str, Any]) -> None:
        check_out(out)
        self.folder = None if out is None else Path(out).expanduser()
        self.key = key
        self.planned: int | None = None  # the number of shards of the run that made the folder
        if self.folder is None:
            return
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"out={str(out)!r} is a file; give a folder for the run's shards (it is created).")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create the out= folder {str(out)!r} ({err.strerror}); give a folder you can "
                             f"write to.") from None
        if not os.access(self.folder, os.W_OK):
            raise InputError(f"the out= folder {str(out)!r} is not writable; give a folder you can write to.")
        self.manifest = self.folder / _MANIFEST
        self._mine = {"method": method, "key": key, "settings": settings, "causalscope": __version__}
        if self.manifest.is_file():
            try:
                theirs = json.loads(self.manifest.read_text())
            except (OSError, ValueError):
                theirs = None
            if not isinstance(theirs, dict) or "key" not in theirs:
                raise InputError(f"{str(self.manifest)!r} is not a causalscope run manifest; give another out= "
                                 f"folder.")
            if theirs["key"] != key:
                raise InputError(f"out={str(out)!r} holds the shards of another run ({_differences(theirs, self._mine)}"
                                 f"); its shards cannot be reused for this one. Give another out= folder, or delete "
                                 f"this one to start again.")
            self.planned = theirs.get("shards") if isinstance(theirs.get("shards"), int) else None

    def write_manifest(self, shards: int) -> None:
        """Record the run (its key, settings and number of shards) in a new folder; a folder that has one keeps it."""
        if self.folder is None or self.manifest.is_file():
            return
        tmp = self.manifest.with_name(f".{_MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**self._mine, "shards": shards}, indent=1, sort_keys=True, default=str))
        os.replace(tmp, self.manifest)

    def name_shards(self, shards: list[Shard]) -> None:
        """Give each shard its key: a digest of the run key and of its items, with its range in the name."""
        for s in shards:
            s.key = f"shard-{s.start:07d}-{s.stop - 1:07d}-{fingerprint([self.key, s.start, s.items])[:16]}"

    def load(self, shard: Shard) -> list[Any] | None:
        if self.folder is None:
            return None
        path = self.folder / f"{shard.key}.npz"
        if not path.is_file():
            return None
        try:
            results = load_bundle(path)
        except InputError:
            return None  # a damaged file is computed again (and overwritten)
        return results if isinstance(results, list) and len(results) == len(shard.items) else None

    def save(self, shard: Shard, results: list[Any]) -> None:
        if self.folder is not None:
            save_bundle(self.folder / f"{shard.key}.npz", results)


def _differences(theirs: dict[str, Any], mine: dict[str, Any]) -> str:
    if theirs.get("method") != mine["method"]:
        return f"method {theirs.get('method')!r}, this run is {mine['method']!r}"
    a, b = theirs.get("settings") or {}, json.loads(json.dumps(mine["settings"], default=str))
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if keys:
        return "settings that differ: " + ", ".join(f"{k}: {str(a.get(k))[:40]} there, {str(b.get(k))[:40]} here"
                                                     for k in keys[:4])
    return "its model, items or settings differ"
