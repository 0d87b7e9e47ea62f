"""The end-to-end demo behind ``make demo`` / ``causalscope demo``: writes one offline HTML report.

>>> from causalscope.app.demo import build_report
>>> build_report("report/causalscope-report.html")  # doctest: +SKIP
PosixPath('report/causalscope-report.html')
"""
from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..._version import __version__
from ...errors import check_int
from ..report import Report
from ._circuits import circuits_section
from ._directions import directions_section
from ._engine import engine_section
from ._language import language_section
from ._mediation import mediation_section
from ._patching import patching_section
from ._tracing import tracing_section

#: the report's sections, in order: each adds its prose, figures and tables to the report
SECTIONS = (engine_section, tracing_section, patching_section, mediation_section, directions_section,
            circuits_section, language_section)


def build_report(out: str | Path = "report/causalscope-report.html",
                 echo: Callable[[str], object] | None = print, progress: bool | None = None,
                 trace_facts: int | None = None) -> Path:
    """Run the demo and write the report; returns its path.

    ``echo`` (``print`` by default; ``None`` for silence) gets one line on the written report: its figure
    count and file size, split into plotly.js (inlined once), the figures and the rest. ``progress``: a bar
    over the report's sections on stderr (``None``: when ``echo`` is set and stderr is a terminal).
    ``trace_facts``: trace only the first that many held-out facts in ROME's Fig. 2 average (default: all
    1,000, about 5 minutes on 2 CPU cores; 100 take under a minute). The demo's
    models are tiny, so it runs on one intra-op thread (on a busy 2-core machine two threads stall every small
    op); the previous thread count is restored afterwards.
    """
    if trace_facts is not None:
        check_int(trace_facts, "trace_facts", low=1, hint="Leave it out to trace all 1,000 held-out facts.")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build_report(out, echo, progress, trace_facts)
    finally:
        torch.set_num_threads(threads)


def _build_report(out: str | Path, echo: Callable[[str], object] | None, progress: bool | None,
                  trace_facts: int | None = None) -> Path:
    t0 = time.perf_counter()
    rep = Report("causalscope demo report",
                 meta={"causalscope": __version__, "models": "tiny-gpt2, mlp, facts-gpt, and-gate, or-gate, adder, "
                                                              "digits-mlp, tracr cases (bundled)"})
    from ...core import tqdm

    # a bar on stderr over the sections when someone watches (the demo takes tens of seconds)
    show = progress if progress is not None else echo is not None and sys.stderr.isatty()
    sections = [functools.partial(tracing_section, n_facts=trace_facts) if s is tracing_section else s
                for s in SECTIONS]
    for section in tqdm(sections, desc="causalscope demo", unit="section", disable=not show, file=sys.stderr):
        section(rep)
    rep.text(f"Generated in {time.perf_counter() - t0:.1f} s.")
    path = rep.save(out)
    if echo is not None:
        echo(f"{path}: {rep.size_summary()}")
    return path
