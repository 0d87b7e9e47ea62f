"""Feature-directions benchmark: class directions + a strength sweep + the 10x10 cross-digit matrix, ours vs the seed.

    .venv/bin/python bench/directions.py                  # all 1797 digits, 10 strengths, 5 reps (~15 s on 2 CPU cores)
    .venv/bin/python bench/directions.py --quick          # the 360 test digits, 5 strengths, 3 reps (~3 s)
    .venv/bin/python bench/directions.py --json out.json --reps 7
    .venv/bin/python bench/directions.py --device cuda

Model: the seed's MLP on scikit-learn's 8x8 digits, ``causalscope.zoo.build_digits_mlp`` (64-256-128-64-10,
ReLU; sites fc1..fc4, act1..act3): the shipped trained weights (``trained=True``) when the package has them,
else seeded random weights; the script says which. Data: ``cs.data.digits("all")`` (1797 images, pixels in
[0, 1]; ``--quick``: the 360-image test split); without ``causalscope.data`` it reads scikit-learn's bundled
copy directly (the same numbers).

The experiment is the seed's (../shared/seeds/000_569454d2698c2aa3.txt), on layer fc2 as there:

1. digit directions: per-class mean of the post-ReLU fc2 activations (``act2``, what the seed's
   ``get_layer_activations(x, "fc2")`` returns) minus the mean of the class means;
2. a strength sweep: add ``strength * direction[7]`` to fc2's output (the seed's forward hook on ``fc2``,
   i.e. before the ReLU) and measure the accuracy on the 7s, for ``--strengths`` strengths (default 10:
   0, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 50);
3. the cross-digit matrix: for every source digit s (direction added, strength 1) and target digit t
   (inputs classified): the accuracy on the t inputs.

- ours: ``cs.class_directions(m, (X, y), "act2")``, ``cs.steer(m, (X7, y7), "fc2", dirs, strengths,
  target=7)`` and ``cs.steering_matrix(m, (X, y), "fc2", dirs, strength=1.0, baseline=False)`` (no
  unsteered baseline rows: the seed does not compute one): every (strength or direction, input) pair is a
  row of batched engine passes with ``cs.Add`` at fc2; no model copies.
- the seed's loop, as the notebook writes it: ``find_digit_directions`` (a pass over the data loader),
  ``intervention_experiment`` (per strength: a model copy with a forward hook on fc2 doing ``output +=
  strength * direction``, then ``test_digit_specific_accuracy``: a pass over the whole loader, the model
  run on each batch's rows of the digit) and ``cross_digit_intervention`` (the same per (source, target)
  cell: 100 copies). The loader is ``DataLoader(TensorDataset(X, y), batch_size=64, shuffle=False)``, as
  the seed's test loader (batch 64, no shuffle); a TensorDataset is cheaper per item than the seed's
  torchvision MNIST, which only helps the seed. Copies are ``copy.deepcopy(model)`` (the seed builds
  ``type(model)()`` and loads the state dict: the same cost class). Runs under ``torch.no_grad()`` as there.

Exactness: the directions must agree (allclose atol 1e-6, rtol 1e-5: the seed sums fp32 activations in its
own order, which on a GPU differs from ours by fp32 rounding of the larger entries); the numbers of correct
predictions of every strength and every matrix cell must be equal as integers (ours: fraction x count,
rounded). Times are the medians of ``--reps`` interleaved repetitions (alternating which side goes first)
after one warm-up of each.
Target: ours >= 20x faster over the whole experiment (directions + sweep + matrix). Threads: ``--threads
auto`` (the default) uses 1 thread when the load average is above half the cores, else torch's default;
``--threads K`` sets K. The exit status is 1 if an exactness check fails (not for a missed speed target).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import causalscope as cs
from _common import finish, interleaved, start
from _common import rule as _rule
from _common import verdict as _verdict

TARGET = 20.0
STRENGTHS = (0.0, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
SWEEP_DIGIT = 7


# -- model and data ----------------------------------------------------------------------------------------------------
def build_model(device: torch.device) -> tuple[torch.nn.Module, str]:
    from causalscope.zoo.digits_mlp import build_digits_mlp

    try:
        net, which = build_digits_mlp(trained=True), "trained (the weights shipped in the package)"
    except (ImportError, FileNotFoundError, OSError, KeyError, RuntimeError) as e:
        net, which = build_digits_mlp(trained=False), f"RANDOM (seed 0): no trained weights ({type(e).__name__})"
    return net.to(device).eval(), which


def load_data(quick: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        X, y = cs.data.digits("test" if quick else "all")
        src = f"cs.data.digits({'test' if quick else 'all'!r})"
    except AttributeError:
        from sklearn.datasets import load_digits

        d = load_digits()
        X, y = torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)
        if quick:
            X, y = X[:360], y[:360]
        src = "sklearn.datasets.load_digits() / 16" + (" (first 360)" if quick else "")
    return X.to(device), y.to(device), src


# -- the seed's code, adapted only to the 8x8 digits (view(-1, 64)) and the model's module names ---------------------
def seed_layer_activations(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The seed's ``get_layer_activations(x, 'fc2')``: relu(fc2(relu(fc1(x))))."""
    x = x.view(-1, 64)
    return F.relu(model.fc2(F.relu(model.fc1(x))))


def find_digit_directions(model: torch.nn.Module, data_loader: DataLoader) -> dict[int, torch.Tensor]:
    model.eval()
    digit_activations: dict[int, list[torch.Tensor]] = {i: [] for i in range(10)}
    with torch.no_grad():
        for data, target in data_loader:
            activations = seed_layer_activations(model, data)
            for digit in range(10):
                digit_mask = target == digit
                if digit_mask.sum() > 0:
                    digit_activations[digit].append(activations[digit_mask])
    digit_means = {d: torch.cat(digit_activations[d], dim=0).mean(dim=0) for d in range(10) if digit_activations[d]}
    global_mean = torch.stack(list(digit_means.values())).mean(dim=0)
    return {d: digit_means[d] - global_mean for d in range(10)}


def test_digit_specific_accuracy(model: torch.nn.Module, test_loader: DataLoader, target_digit: int) -> tuple[int, int]:
    """The seed's function, returning (correct, total) instead of the percentage (same numbers, exact)."""
    model.eval()
    correct = 0
    total = 0
    with torch.no_grad():
        for data, target in test_loader:
            digit_mask = target == target_digit
            if digit_mask.sum() > 0:
                digit_data = data[digit_mask]
                digit_target = target[digit_mask]
                output = model(digit_data)
                _, predicted = torch.max(output.data, 1)
                total += digit_target.size(0)
                correct += (predicted == digit_target).sum().item()
    return correct, total


class DirectionInterventionHook:
    def __init__(self, direction: torch.Tensor, strength: float = 1.0) -> None:
        self.direction = direction
        self.strength = strength

    def __call__(self, module: Any, input: Any, output: torch.Tensor) -> torch.Tensor:
        output += self.strength * self.direction.unsqueeze(0)
        return output


def intervention_experiment(model: torch.nn.Module, data_loader: DataLoader, digit_directions: dict,
                            strengths: list[float], target_digit: int) -> list[tuple[int, int]]:
    model.eval()
    results = []
    for strength in strengths:
        modified_model = copy.deepcopy(model)
        direction = digit_directions[target_digit]
        modified_model.fc2.register_forward_hook(DirectionInterventionHook(direction, strength))
        results.append(test_digit_specific_accuracy(modified_model, data_loader, target_digit))
    return results


def cross_digit_intervention(model: torch.nn.Module, data_loader: DataLoader, digit_directions: dict) -> np.ndarray:
    model.eval()
    correct = np.zeros((10, 10), dtype=np.int64)
    total = np.zeros((10, 10), dtype=np.int64)
    for source_digit in range(10):
        direction = digit_directions[source_digit]
        for target_digit in range(10):
            modified_model = copy.deepcopy(model)
            modified_model.fc2.register_forward_hook(DirectionInterventionHook(direction, strength=1.0))
            c, t = test_digit_specific_accuracy(modified_model, data_loader, target_digit)
            correct[source_digit, target_digit], total[source_digit, target_digit] = c, t
    return np.stack([correct, total])


def seed_experiment(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, strengths: list[float]) -> dict:
    loader = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=False)
    dirs = find_digit_directions(model, loader)
    sweep = intervention_experiment(model, loader, dirs, strengths, SWEEP_DIGIT)
    matrix = cross_digit_intervention(model, loader, dirs)
    return {"directions": torch.stack([dirs[d] for d in range(10)]), "sweep": sweep, "matrix": matrix}


# -- ours -----------------------------------------------------------------------------------------------------------
def our_experiment(m: cs.Model, X: torch.Tensor, y: torch.Tensor, strengths: list[float]) -> dict:
    dirs = cs.class_directions(m, (X, y), "act2")
    sevens = y == SWEEP_DIGIT
    sweep = cs.steer(m, (X[sevens], y[sevens]), "fc2", dirs, strengths, target=SWEEP_DIGIT)
    matrix = cs.steering_matrix(m, (X, y), "fc2", dirs, strength=1.0, baseline=False)
    return {"directions": dirs, "sweep": sweep, "matrix": matrix}


def compare(ours: dict, seed: dict, y: torch.Tensor) -> dict:
    d_ours = ours["directions"].values
    d_seed = seed["directions"].cpu()
    dir_diff = float((d_ours - d_seed).abs().max())
    n7 = int((y == SWEEP_DIGIT).sum())
    acc = ours["sweep"].accuracy.values.double()
    sweep_ours = [int(round(float(a) * n7)) for a in acc]
    sweep_seed = [c for c, _ in seed["sweep"]]
    counts = torch.bincount(y.cpu(), minlength=10)
    # ours: (source = inputs, target = direction added); the seed: (source = direction, target = inputs)
    frac = ours["matrix"].accuracy.values.double()
    mat_ours = (frac.T * counts[None, :].double()).round().long().numpy()
    mat_seed = seed["matrix"][0]
    close = bool(torch.allclose(d_ours, d_seed, rtol=1e-5, atol=1e-6))
    return {"directions_max_abs_diff": dir_diff, "directions_allclose": close,
            "sweep_correct_ours": sweep_ours, "sweep_correct_seed": sweep_seed, "sweep_n": n7,
            "sweep_equal": sweep_ours == sweep_seed,
            "matrix_correct_ours": mat_ours.tolist(), "matrix_correct_seed": mat_seed.tolist(),
            "matrix_totals": seed["matrix"][1].tolist(),
            "matrix_cells_differing": int((mat_ours != mat_seed).sum()),
            "matrix_equal": bool((mat_ours == mat_seed).all())}


def _parts(fn_ours: Callable[[], Any], fn_seed: Callable[[], Any], reps: int, device: torch.device) -> dict:
    t_o, t_s, _, _ = interleaved(fn_ours, fn_seed, reps, device)
    o, s = statistics.median(t_o), statistics.median(t_s)
    return {"ours_s": o, "seed_s": s, "speedup": s / o}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the 360 test digits, 5 strengths, 3 reps")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    p.add_argument("--reps", type=int, default=None, metavar="R", help="timed repetitions per side (default 5; "
                                                                       "--quick 3)")
    p.add_argument("--strengths", type=int, default=None, metavar="K",
                   help=f"number of sweep strengths, the first K of {list(STRENGTHS)} (default 10; --quick 5)")
    p.add_argument("--threads", default="auto", metavar="auto|default|K",
                   help="torch threads: default leaves torch's setting; auto (the default) keeps it on an idle "
                        "CPU and uses 1 thread when the load average is above half the cores")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    reps = args.reps or (3 if args.quick else 5)
    if reps < 1:
        p.error("--reps must be >= 1")
    k = args.strengths or (5 if args.quick else 10)
    if not 1 <= k <= len(STRENGTHS):
        p.error(f"--strengths must be 1 .. {len(STRENGTHS)}")
    strengths = list(STRENGTHS[:k])
    device = torch.device(args.device)

    t0 = time.perf_counter()
    env = start(args.threads, device, args.quick, reps)

    net, which = build_model(device)
    X, y, src = load_data(args.quick, device)
    m = cs.load(net, name="digits-mlp")
    with torch.inference_mode():
        clean_acc = float((net(X).argmax(1) == y).float().mean())
    print(f"model: DigitsMLP 64-256-128-64-10, weights {which}; accuracy on these {len(y)} images {clean_acc:.3f}")
    print(f"data: {src}: {len(y)} images, per class {torch.bincount(y.cpu(), minlength=10).tolist()}")
    print(f"experiment: directions at act2 (post-ReLU fc2); sweep of {k} strengths {strengths} of direction "
          f"{SWEEP_DIGIT} added at fc2 on the {int((y == SWEEP_DIGIT).sum())} {SWEEP_DIGIT}s; 10 x 10 matrix at "
          f"strength 1 ({10 * len(y)} steered rows for ours, 100 model copies x {-(-len(y) // 64)} loader batches "
          f"for the seed)")
    results: dict[str, Any] = {"env": env, "config": {"weights": which, "data": src, "n": len(y),
                                                      "strengths": strengths, "sweep_digit": SWEEP_DIGIT,
                                                      "site_directions": "act2", "site_steering": "fc2",
                                                      "matrix_strength": 1.0}}

    # warm-up, then the exactness check on the warm-up outputs
    ours_out = our_experiment(m, X, y, strengths)
    seed_out = seed_experiment(net, X, y, strengths)
    cmp = compare(ours_out, seed_out, y)
    results["exactness"] = cmp
    ok = cmp["directions_allclose"] and cmp["sweep_equal"] and cmp["matrix_equal"]

    _rule("Exactness (ours vs the seed's copy loop)")
    print(f"directions (10 x 128): max |diff| {cmp['directions_max_abs_diff']:.1e}  "
          f"(allclose atol 1e-6 rtol 1e-5: {cmp['directions_allclose']})")
    print(f"sweep: correct 7s per strength, ours {cmp['sweep_correct_ours']} / seed {cmp['sweep_correct_seed']} "
          f"of {cmp['sweep_n']}  (equal: {cmp['sweep_equal']})")
    print(f"matrix: {100 - cmp['matrix_cells_differing']} / 100 cells with equal counts of correct predictions "
          f"(equal: {cmp['matrix_equal']})")
    _rule("Cross-digit matrix (the seed's layout: direction added down, digit classified across; accuracy %)")
    mat = 100.0 * np.array(cmp["matrix_correct_ours"]) / np.array(cmp["matrix_totals"])
    print("      " + "".join(f"{t:>6d}" for t in range(10)))
    for s in range(10):
        print(f"{s:>4d}  " + "".join(f"{mat[s, t]:6.1f}" for t in range(10)))
    _rule(f"Strength sweep (direction {SWEEP_DIGIT} at fc2, inputs: the {SWEEP_DIGIT}s)")
    sw = ours_out["sweep"]
    print("strength  " + "".join(f"{s:>8g}" for s in strengths))
    print("accuracy  " + "".join(f"{a:8.3f}" for a in sw.accuracy.values.tolist()))
    print(f"p({SWEEP_DIGIT})      " + "".join(f"{a:8.3f}" for a in sw.p_target.values.tolist()))

    _rule(f"Timing ({reps} interleaved repetitions, medians)")
    loader = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=False)
    dirs_t = {d: seed_out["directions"][d] for d in range(10)}
    parts = {
        "directions": _parts(lambda: cs.class_directions(m, (X, y), "act2"),
                             lambda: find_digit_directions(net, loader), reps, device),
        "sweep": _parts(lambda: cs.steer(m, (X[y == SWEEP_DIGIT], y[y == SWEEP_DIGIT]), "fc2",
                                         ours_out["directions"], strengths, target=SWEEP_DIGIT),
                        lambda: intervention_experiment(net, loader, dirs_t, strengths, SWEEP_DIGIT), reps, device),
        "matrix": _parts(lambda: cs.steering_matrix(m, (X, y), "fc2", ours_out["directions"], 1.0, baseline=False),
                         lambda: cross_digit_intervention(net, loader, dirs_t), reps, device),
    }
    whole = _parts(lambda: our_experiment(m, X, y, strengths), lambda: seed_experiment(net, X, y, strengths),
                   reps, device)
    parts["whole"] = whole
    whole["pass"] = whole["speedup"] >= TARGET
    results["timing"] = parts
    for name, r in parts.items():
        print(f"{name:<11} ours {r['ours_s'] * 1e3:9.1f} ms   seed {r['seed_s'] * 1e3:9.1f} ms   speedup "
              f"{r['speedup']:6.1f}x")
    results["wall_s"] = time.perf_counter() - t0

    _rule("Summary")
    print(f"directions + {k}-strength sweep + 10x10 matrix on {len(y)} digits ({which.split(' ')[0]} weights): "
          f"ours {whole['ours_s'] * 1e3:.1f} ms, seed's copy loop {whole['seed_s'] * 1e3:.1f} ms: speedup "
          f"{whole['speedup']:.1f}x   target >= {TARGET:.0f}x  {_verdict(whole['pass'])}")
    print(f"identical numbers: directions max|diff| {cmp['directions_max_abs_diff']:.1e}, sweep counts equal "
          f"{cmp['sweep_equal']}, matrix counts equal {cmp['matrix_equal']}  {_verdict(ok)}")
    return finish(results, env, args.json, ok)


if __name__ == "__main__":
    sys.exit(main())
