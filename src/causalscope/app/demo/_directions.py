"""Demo-report section: feature directions, steering, corruption-and-restoration and probes on the digits MLP."""
from __future__ import annotations

from typing import cast

import torch

from ..report import Report


def directions_section(rep: Report) -> None:
    from ... import data
    from ...core import Site
    from ...directions import class_directions, corrupt_and_restore, probe, steer, steering_matrix
    from ...loading import load

    m = load("digits-mlp")
    X, y = data.digits("test")
    acc = float((cast(torch.Tensor, m.run(X).output).argmax(-1) == y).float().mean())  # no metric: output kept
    rep.section("Feature directions, steering and probes on the digits MLP",
                f"The feature-directions seed's MLP (64-256-128-64-10, ReLU), trained by causalscope's seeded "
                f"script on scikit-learn's 8x8 digits (test accuracy {acc:.3f} on {len(y)} held-out digits). "
                f"Class directions are class means minus the mean of the class means at act2 (after the second "
                f"ReLU). Steering adds a direction at act2 in batched rows: no model copies.")
    dirs = class_directions(m, (X, y), "act2")
    rep.figure(dirs.similarity().plot(backend="plotly"), caption="Cosine similarity of the class directions at act2. "
               "Most similar pairs: " + ", ".join(f"{a}~{b} {c:+.2f}" for a, b, c in dirs.most_similar(3)) + ".")
    threes = (X[y == 3], y[y == 3])
    sweep = steer(m, threes, "act2", dirs.direction(8), [0, 0.5, 1, 2, 3, 4], target=8)
    rep.figure(sweep.plot(backend="plotly"), caption="Steering the 3s along the direction of 8: fraction predicted 8 "
                                                     "and mean probabilities per strength.")
    mat = steering_matrix(m, (X, y), "act2", dirs, strength=1.0)
    rep.figure(mat.plot("frac_target", backend="plotly"),
               caption="Cross-digit matrix at strength 1: fraction of each source class predicted as the target "
                       "class after adding the target's direction (all 100 cells in batched passes).")
    rr = corrupt_and_restore(m, X, ["noise", "zero", "shuffle"], [Site("act1", neurons=range(128)), "act2", "act3"],
                             scale=0.5, seed=0)
    rep.figure(rr.plot(backend="plotly", spread="iqr"),
               caption=f"Corrupt the image, restore one site's clean activation: probability of the clean prediction "
                       f"over {len(y)} examples (mean and interquartile band). On a chain MLP a whole layer restores "
                       f"everything; half of act1 (neurons 0-127) is where it is informative.")
    pr = probe(m, (X, y), ["act1", "act2", "act3"], seed=0)
    rep.figure(pr.plot(backend="plotly"), caption="Logistic-regression probes per layer: held-out accuracy, a control "
                                                  "task (random label per input type, Hewitt & Liang 2019) and "
                                                  "their difference, the selectivity.")
