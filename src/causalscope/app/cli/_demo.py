"""``causalscope demo``: run every family on the bundled models and write the offline HTML report.

>>> from causalscope.app.cli import main
>>> main(["demo", "--out", "report/causalscope-report.html", "--check"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import build_report

    path = build_report(args.out)
    print(f"report written: {path}")
    if args.check:
        from ..report import check_report, find_chromium

        if find_chromium() is None:
            print("chromium not found: skipped the browser check (apt-get install chromium)", file=sys.stderr)
        else:
            res = check_report(path)
            print(f"browser check: {res['drawn']}/{res['n_figures']} figures drew"
                  + (f"; JS errors: {res['js_errors']}" if res["js_errors"] else ""))
            if res["drawn"] != res["n_figures"] or res["js_errors"]:
                return 1
    return 0


def add_parsers(sub: Any) -> None:
    d = sub.add_parser("demo", help="run the end-to-end demo on bundled models and write an HTML report")
    d.add_argument("--out", default="report/causalscope-report.html")
    d.add_argument("--check", action="store_true",
                   help="open the report in headless chromium and check every figure drew")
    d.set_defaults(fn=cmd_demo)
