"""ROME's settings scaled to a model's depth, and where an average shows ROME's two sites (Meng et al. 2022,
"Locating and Editing Factual Associations in GPT", Fig. 2).

>>> rome_window(8), rome_window(48)
(2, 10)
>>> sites = rome_sites(cs.trace_average("facts-gpt", facts, window=rome_window(8)))
>>> sites["mlp_peak"], sites["mlp_above"], sites["attn_peak"], sites["attn_late"]
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import InputError, check_int


def rome_window(n_layers: int) -> int:
    """ROME's restoration window of 10 layers out of GPT-2 XL's 48, scaled to ``n_layers`` and rounded up."""
    n = check_int(n_layers, "n_layers", low=1)
    return max(1, math.ceil(10 * n / 48))


def rome_sites(avg: Any) -> dict[str, Any]:
    """Where ROME's early and late sites are in a ``trace_average`` result with ``mlp`` and ``attn`` kinds.

    Early site: the MLP indirect effect at the last subject token: its peak layer (``mlp_peak``), mean and 95%
    interval there, the first subject token's and further tokens' intervals at that layer (``others``),
    ``mlp_early`` (the peak lies below the last third) and ``mlp_above`` (its interval lies above both others').
    Late site: the attention effect at the last token: ``attn_peak``, ``attn_mean``, ``attn_late`` (the peak lies
    in the last half). A class no fact has (no token of it) has NaN bounds, and then ``mlp_above`` is False.
    """
    kinds = list(getattr(avg, "coords", {}).get("kind", []))
    if "mlp" not in kinds or "attn" not in kinds:
        raise InputError(f"rome_sites needs a trace_average result with the kinds 'mlp' and 'attn'; this one has "
                         f"{kinds}. Run trace_average(..., kinds=('mlp', 'attn')).")

    def row(kind: str, cls: str, stat: str) -> list[float]:
        return [float(v) for v in avg.sel(kind=kind, token_class=cls, stat=stat).values.tolist()]

    L = len(avg.coords["layer"])
    mlp = row("mlp", "last subject token", "mean")
    attn = row("attn", "last token", "mean")
    if not all(math.isfinite(v) for v in mlp + attn):
        raise InputError("rome_sites needs finite means for the MLP at the last subject token and attention at the "
                         f"last token; got {mlp} and {attn}. Average over facts the model answers correctly.")
    peak = max(range(L), key=lambda i: mlp[i])
    lo, hi = row("mlp", "last subject token", "ci_low")[peak], row("mlp", "last subject token", "ci_high")[peak]
    others = {c: (row("mlp", c, "ci_low")[peak], row("mlp", c, "ci_high")[peak])
              for c in ("first subject token", "further tokens")}
    apeak = max(range(L), key=lambda i: attn[i])
    return {"layers": L, "mlp_peak": peak, "mlp_mean": mlp[peak], "mlp_ci": (lo, hi), "others": others,
            "mlp_early": peak < 2 * L / 3, "mlp_above": all(lo > h for _, h in others.values()),
            "attn_peak": apeak, "attn_mean": attn[apeak], "attn_late": apeak >= L / 2}
