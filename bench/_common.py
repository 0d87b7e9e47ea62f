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


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max |a - b| over cells that are not NaN in both; inf where only one of them is NaN."""
    na, nb = torch.isnan(a), torch.isnan(b)
    if not torch.equal(na, nb):
        return float("inf")
    d = (a - b).abs()[~na]
    return float(d.max()) if d.numel() else 0.0


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


def start(threads: str, device: torch.device, quick: bool, reps: int, versions: dict[str, str] | None = None) -> dict:
    """Set threads (:func:`set_threads`), print the header line and load warnings; returns the env record."""
    import platform

    import causalscope as cs

    note, load, busy = set_threads(threads, device)
    env = {"causalscope": cs.__version__, "torch": torch.__version__, **(versions or {}),
           "python": platform.python_version(),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "threads_setting": note,
           "quick": quick, "reps": reps}
    libs = " | ".join(f"{k} {v}" for k, v in env.items() if k in ("causalscope", "torch", "python", *(versions or {})))
    print(f"{libs} | device {device.type} ({env['device']}) | {env['cpu_count']} CPUs, torch threads "
          f"{env['torch_threads']} [{note}]{' | --quick' if quick else ''}")
    if load is not None:
        env["loadavg_start"] = load
        print(f"load average at start: {load:.2f}")
        if busy:
            print("warning: other processes are using the CPU; timings (and the PASS/FAIL lines) will be noisy")
            if torch.get_num_threads() > 1:
                print("warning: with more torch threads than free cores, every op waits for descheduled OpenMP "
                      "threads (~5-15 ms per op here): times then count ops, not work. --threads 1 avoids it.")
    return env


def interleaved(ours: Callable[[], Any], ref: Callable[[], Any], reps: int,
                device: torch.device) -> tuple[list[float], list[float], Any, Any]:
    """``reps`` repetitions of both, alternating which goes first; returns both time lists and last outputs."""
    t_ours: list[float] = []
    t_ref: list[float] = []
    out_ours = out_ref = None
    for r in range(reps):
        for name in (("ours", "ref") if r % 2 == 0 else ("ref", "ours")):
            dt, out = timed(ours if name == "ours" else ref, device)
            if name == "ours":
                t_ours.append(dt)
                out_ours = out
            else:
                t_ref.append(dt)
                out_ref = out
    return t_ours, t_ref, out_ours, out_ref
