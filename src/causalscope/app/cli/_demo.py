"""``causalscope demo``: run every family on the bundled models and write the offline HTML report.

>>> from causalscope.app.cli import main
>>> main(["demo", "--out", "report/causalscope-report.html", "--check"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ._progress import Steps


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import build_report

    path = build_report(args.out, progress=True, trace_facts=args.trace_facts)  # a bar over the sections
    print(f"report written: {path}")
    if args.check:
        from ..report import check_layout, check_report, find_chromium

        if find_chromium() is None:
            print("chromium not found: skipped the browser check (apt-get install chromium)", file=sys.stderr)
        else:
            with Steps(args, 2) as step:
                step("drawing every figure in chromium")
                res = check_report(path)
                step("measuring the layout")
                layout = check_layout(path)
            print(f"browser check: {res['drawn']}/{res['n_figures']} figures drew"
                  + (f"; JS errors: {res['js_errors']}" if res["js_errors"] else ""))
            widths = " and ".join(f"{w} px" for w in layout["widths"])
            print(f"layout check at {widths}: " + ("every figure fits its card" if layout["ok"] else
                                                   f"{len(layout['problems'])} problems"))
            for problem in layout["problems"][:20]:
                print(f"  {problem}", file=sys.stderr)
            if res["drawn"] != res["n_figures"] or res["js_errors"] or not layout["ok"]:
                return 1
    return 0


def add_parsers(sub: Any) -> None:
    d = sub.add_parser("demo", help="run the end-to-end demo on bundled models and write an HTML report")
    d.add_argument("--out", default="report/causalscope-report.html")
    d.add_argument("--check", action="store_true",
                   help="open the report in headless chromium: every figure drew, and fits its card at 1000 and "
                        "1600 px (no overlaps, no sideways scroll)")
    d.add_argument("--trace-facts", type=int, default=None, metavar="N",
                   help="average ROME's Fig. 2 panels over the first N held-out facts of facts-gpt (default: all "
                        "1,000, about 5 minutes on 2 CPU cores; 100 take under a minute)")
    d.set_defaults(fn=cmd_demo)
