"""The self-contained offline HTML report and its checks in headless Chromium.

>>> from causalscope.app.report import Report
>>> rep = Report("demo")
>>> rep.save("report.html")  # doctest: +SKIP
"""
from ._browser import check_report, find_chromium, render_dom
from ._html import Report
from ._layout import WIDTHS, check_layout, layout_problems

__all__ = ["WIDTHS", "Report", "check_layout", "check_report", "find_chromium", "layout_problems", "render_dom"]
