"""The report's inline CSS and scripts (no file, font or stylesheet is ever loaded from outside).

>>> "cs-toc" in CSS and "figuresDrawn" in DRAWN_CHECK_JS and "csPlot" in PLOT_JS
True
"""
from __future__ import annotations

__all__ = ["CSS", "DRAWN_CHECK_JS", "ERROR_HOOK_JS", "PLOT_JS"]

# One column up to 1100 px; from 1400 px on, the table of contents becomes a sticky sidebar beside it. Grid
# columns are minmax(0, ...) so that nothing inside can widen them, and a figure card scrolls inside itself
# rather than making the page scroll sideways (the layout check still reports such a figure).
CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7f9; color: #1f2328;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.cs-page { display: grid; grid-template-columns: minmax(0, 1fr); grid-template-areas: "head" "toc" "main";
  max-width: 1100px; margin: 0 auto; background: #fff; min-height: 100vh; }
header.cs-header { grid-area: head; min-width: 0; background: #fff; padding: 24px 28px 12px;
  border-bottom: 2px solid #d0d7de; }
header.cs-header h1 { margin: 0 0 6px; font-size: 1.7em; }
nav.cs-toc { grid-area: toc; min-width: 0; background: #fff; padding: 12px 28px 10px; font-size: 0.92em;
  border-bottom: 1px solid #eaeef2; }
nav.cs-toc h2 { font-size: 1.05em; margin: 0 0 4px; }
nav.cs-toc ol { margin: 0; padding-left: 2em; }
nav.cs-toc li { margin: 2px 0; }
nav.cs-toc a { color: #0969da; text-decoration: none; }
nav.cs-toc a:hover { text-decoration: underline; }
nav.cs-toc .cs-toc-count { color: #57606a; font-size: 0.9em; white-space: nowrap; }
main { grid-area: main; min-width: 0; background: #fff; padding: 4px 28px 64px; }
@media (min-width: 1400px) {
  .cs-page { grid-template-columns: 250px minmax(0, 1100px); grid-template-areas: "toc head" "toc main";
    grid-template-rows: auto 1fr; max-width: 1370px; column-gap: 20px; background: transparent; }
  nav.cs-toc { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto;
    padding: 24px 8px 24px 16px; background: transparent; border-bottom: 0; }
}
.cs-provenance { color: #57606a; font-size: 0.88em; margin: 0 0 8px; }
.cs-provenance span { margin-right: 1.4em; white-space: nowrap; }
section.cs-section { margin: 28px 0; }
section.cs-section { scroll-margin-top: 8px; }
section.cs-section h2 { font-size: 1.3em; border-bottom: 1px solid #eaeef2; padding-bottom: 4px; }
p.cs-text { margin: 8px 0; overflow-wrap: anywhere; }
.cs-figure { margin: 16px 0; border: 1px solid #eaeef2; border-radius: 6px; padding: 6px; overflow-x: auto;
  scroll-margin-top: 8px; }
.cs-figure .plotly-graph-div { width: 100%; }
.cs-figure img.cs-image { display: block; width: 100%; height: auto; margin: 0 auto; }
.cs-caption, figcaption { color: #57606a; font-size: 0.9em; margin: 4px 6px; overflow-wrap: anywhere; }
.cs-caption .cs-figno { color: #1f2328; font-weight: 600; }
.cs-table-wrap { overflow-x: auto; margin: 14px 0; }
table.cs-table, table.cs-meta { border-collapse: collapse; font-size: 0.88em;
  font-variant-numeric: tabular-nums; }
table.cs-table th, table.cs-table td, table.cs-meta th, table.cs-meta td {
  border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; vertical-align: top; }
table.cs-table thead th, table.cs-meta th { background: #f6f8fa; }
table.cs-meta th, table.cs-meta td { text-align: left; }
pre.cs-code { background: #f6f8fa; border: 1px solid #eaeef2; border-radius: 6px; padding: 10px 12px;
  overflow-x: auto; font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
"""

# Installed before any other script so that errors in plotly.js or a figure are recorded.
ERROR_HOOK_JS = """
(function () {
  function record(msg) {
    var body = document.body;
    if (!body) { (window.__csEarlyErrors = window.__csEarlyErrors || []).push(msg); return; }
    var prev = body.dataset.jsErrors;
    body.dataset.jsErrors = prev ? prev + " | " + msg : msg;
  }
  window.__csRecordError = record;
  window.onerror = function (message, source, line, col, error) {
    var where = source ? " @ " + String(source).slice(-80) + ":" + line + ":" + col : "";
    record(String(message) + where);
    return false;
  };
  window.addEventListener("unhandledrejection", function (ev) {
    var r = ev && ev.reason;
    record("unhandled rejection: " + (r && r.message ? r.message : String(r)));
  });
})();
"""

# Draws one figure: the shared plotly template (written once, ``window.__csTemplates``) is put back into the
# layout, and the figure follows its card's width (``responsive``, ``autosize``; no fixed width).
PLOT_JS = """
function csPlot(id, data, layout, template) {
  if (template !== null && window.__csTemplates) { layout.template = window.__csTemplates[template]; }
  return Plotly.newPlot(id, data, layout, {"responsive": true, "displaylogo": false});
}
"""

# Runs after the window 'load' event, then polls until every .cs-figure holds an svg.main-svg or a loaded image
# (or 5 s pass) and waits for any Plotly.newPlot promises before publishing the count.
DRAWN_CHECK_JS = """
(function () {
  var body = document.body;
  if (window.__csEarlyErrors) {
    for (var k = 0; k < window.__csEarlyErrors.length; k++) { window.__csRecordError(window.__csEarlyErrors[k]); }
  }
  var t0 = Date.now();
  function drawn(div) {
    if (div.querySelector("svg.main-svg")) { return true; }
    var img = div.querySelector("img.cs-image");
    return !!(img && img.complete && img.naturalWidth > 0);
  }
  function count() {
    var divs = document.querySelectorAll(".cs-figure");
    var n = 0;
    for (var i = 0; i < divs.length; i++) { if (drawn(divs[i])) { n++; } }
    return [n, divs.length];
  }
  function publish(state) {
    var c = count();
    body.dataset.figuresDrawn = String(c[0]);
    body.dataset.figuresCheck = state;
  }
  function tick() {
    var c = count();
    if (c[0] >= c[1] || Date.now() - t0 > 5000) {
      var pending = [];
      var gds = document.querySelectorAll(".cs-figure .plotly-graph-div");
      for (var i = 0; i < gds.length; i++) {
        var p = gds[i]._promises;
        if (p && p.length) { pending = pending.concat(p); }
      }
      var state = c[0] >= c[1] ? "done" : "timeout";
      if (pending.length && window.Promise) {
        Promise.all(pending).then(function () { publish(state); }, function (e) {
          window.__csRecordError("plotly promise rejected: " + (e && e.message ? e.message : String(e)));
          publish(state);
        });
      } else {
        publish(state);
      }
      return;
    }
    setTimeout(tick, 50);
  }
  if (document.readyState === "complete") { setTimeout(tick, 0); }
  else { window.addEventListener("load", function () { setTimeout(tick, 0); }); }
})();
"""
