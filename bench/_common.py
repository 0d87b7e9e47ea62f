"""Helpers shared by the bench scripts: timing with device sync, load average, verdicts, section rules."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(seconds, result) of one call, with the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def rule(title: str) -> None:
    print(f"\n{title}\n{'-' * len(title)}", flush=True)


def set_threads(setting: str, device: torch.device) -> tuple[str, float | None, bool]:
    """Apply ``--threads auto|default|K``; returns (note, load average, busy).

    ``auto`` drops to 1 thread when the load average is above half the cores: with more OpenMP threads
    than free cores every op waits for a descheduled thread, and times count ops, not work.
    """
    load = loadavg()
    busy = device.type == "cpu" and load is not None and load > 0.5 * (os.cpu_count() or 1)
    note = "torch default"
    if setting == "auto" and busy and torch.get_num_threads() > 1:
        torch.set_num_threads(1)
        note = "1 (auto: the CPU is busy)"
    elif setting not in ("auto", "default"):
        torch.set_num_threads(int(setting))
        note = f"{int(setting)} (--threads)"
    return note, load, busy


def finish(results: dict, env: dict, json_path: str | None, ok: bool | None = None) -> int:
    """The common tail: load average at the end, wall time, an exactness verdict, the JSON file."""
    import json

    env["loadavg_end"] = loadavg()
    print(f"total wall time {results['wall_s']:.1f} s" +
          (f"; load average at end {env['loadavg_end']:.2f}" if env["loadavg_end"] is not None else ""))
    if ok is False:
        print("EXACTNESS CHECK FAILED: see above")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {json_path}")
    return 0 if ok is not False else 1
