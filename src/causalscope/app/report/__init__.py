"""The self-contained offline HTML report and its check in headless Chromium.

>>> from causalscope.app.report import Report
>>> rep = Report("demo")
>>> rep.save("report.html")  # doctest: +SKIP
"""
from ._browser import check_report, find_chromium, render_dom
from ._html import Report

__all__ = ["Report", "check_report", "find_chromium", "render_dom"]
