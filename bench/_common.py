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
