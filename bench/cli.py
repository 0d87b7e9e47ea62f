"""Command-line start-up: each command against the bare imports it cannot avoid, in fresh processes.

    .venv/bin/python bench/cli.py              # ~1 min on 2 CPU cores
    .venv/bin/python bench/cli.py --reps 9

Targets (issue 16, item 4): ``--help`` and ``models`` under 0.5 s and without importing torch or transformers;
a command that needs a model within 1.2x of importing torch + transformers and loading that model by hand.
Each timing is the median wall time of ``--reps`` fresh ``python`` processes (interleaved), so the interpreter's
own start-up is included everywhere; ``python -c pass`` is printed as the floor.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

PY = sys.executable
BARE_LOAD = ("import torch, transformers\n"
             "from causalscope.zoo._tiny import build_tiny_lm\n"   # the bundled model, built by hand
             "build_tiny_lm('gpt2')\n")
CASES = {
    "python -c pass (floor)": [PY, "-c", "pass"],
    "causalscope --help": [PY, "-m", "causalscope", "--help"],
    "causalscope models": [PY, "-m", "causalscope", "models"],
    "bare: import torch, transformers + build tiny-gpt2": [PY, "-c", BARE_LOAD],
    "causalscope sites --model tiny-gpt2": [PY, "-m", "causalscope", "sites", "--model", "tiny-gpt2"],
}


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TQDM_DISABLE": "1"})
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.reps):
        for name, cmd in CASES.items():
            times[name].append(run(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:<55s} {v:7.3f} s")
    check = [PY, "-c", "import sys, io, contextlib\nfrom causalscope.app.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n    main(['models'])\n"
             "print('torch' in sys.modules or 'transformers' in sys.modules)"]
    heavy = subprocess.run(check, capture_output=True, text=True, check=True).stdout.strip() == "True"
    ok_fast = med["causalscope --help"] < 0.5 and med["causalscope models"] < 0.5 and not heavy
    ratio = med["causalscope sites --model tiny-gpt2"] / med["bare: import torch, transformers + build tiny-gpt2"]
    print(f"--help / models under 0.5 s without torch or transformers: {'PASS' if ok_fast else 'FAIL'}"
          f" (imports torch or transformers: {heavy})")
    print(f"sites --model tiny-gpt2 / bare imports + load: {ratio:.2f}x  target <= 1.2x  "
          f"{'PASS' if ratio <= 1.2 else 'FAIL'}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0 if ok_fast and ratio <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
