"""The in-page script behind :func:`causalscope.app.report.check_layout`: it measures the rendered report.

>>> "csLayout" in LAYOUT_JS
True

:func:`~causalscope.app.report.check_layout` injects this script into a temporary copy of a report, opens it
in headless Chromium at a given window width and reads back ``<body data-cs-layout>``: JSON with the viewport,
the page's horizontal overflow and, per ``.cs-figure`` card, the bounding boxes of what plotly (or an image)
drew inside it. The script only measures; the rules (what counts as a problem) live in Python.
"""
from __future__ import annotations

__all__ = ["LAYOUT_JS"]

# Waits for the report's own drawn-check (``body[data-figures-check]``; 8 s at most, so a page that is not a
# causalscope report is measured too), lets plotly's resize handlers settle, then measures. Rectangles are
# [left, top, right, bottom] in CSS pixels of the viewport, rounded to 0.1 px.
LAYOUT_JS = r"""
(function () {
  var t0 = Date.now();
  function R(el) {
    var r = el.getBoundingClientRect();
    function q(v) { return Math.round(v * 10) / 10; }
    return [q(r.left), q(r.top), q(r.right), q(r.bottom)];
  }
  function visible(el) {
    var r = el.getBoundingClientRect();
    if (r.width < 0.5 || r.height < 0.5) { return false; }
    var s = window.getComputedStyle(el);
    return s.visibility !== "hidden" && s.display !== "none" && parseFloat(s.opacity || "1") > 0;
  }
  function all(root, sel) {
    var out = [], els = root.querySelectorAll(sel);
    for (var i = 0; i < els.length; i++) { if (visible(els[i])) { out.push(els[i]); } }
    return out;
  }
  function texts(root, sel) {
    return all(root, sel).filter(function (el) { return (el.textContent || "").trim() !== ""; })
      .map(function (el) { return {text: (el.textContent || "").trim().slice(0, 80), box: R(el)}; });
  }
  // a tick label: its box, its rotation (degrees), its own (unrotated) height and its anchor point on screen
  function tick(el) {
    var m = /rotate\(\s*(-?[0-9.]+)/.exec(el.getAttribute("transform") || "");
    var h = 0, anchor = [0, 0];
    try {
      h = el.getBBox().height;
      var ctm = el.getScreenCTM(), svg = el.ownerSVGElement, pt = svg.createSVGPoint();
      pt.x = parseFloat(el.getAttribute("x") || "0"); pt.y = parseFloat(el.getAttribute("y") || "0");
      var p = pt.matrixTransform(ctm);
      anchor = [Math.round(p.x * 10) / 10, Math.round(p.y * 10) / 10];
    } catch (e) { h = 0; }
    return {text: (el.textContent || "").trim().slice(0, 80), box: R(el), angle: m ? parseFloat(m[1]) : 0,
            height: Math.round(h * 10) / 10, anchor: anchor};
  }
  function figure(card, index) {
    var cs = window.getComputedStyle(card), box = card.getBoundingClientRect();
    var inner = [box.left + card.clientLeft + parseFloat(cs.paddingLeft), box.top,
                 box.left + card.clientLeft + card.clientWidth - parseFloat(cs.paddingRight), box.bottom];
    var f = {index: index, card: R(card), inner: inner, scroll_overflow: card.scrollWidth - card.clientWidth,
             drawn: [], legends: [], colorbars: [], plots: [], titles: [], annotations: [], axis_titles: [],
             ticks: []};
    all(card, ".plotly-graph-div, svg.main-svg, img, canvas").forEach(function (el) {
      f.drawn.push({kind: el.tagName.toLowerCase(), box: R(el)});
    });
    all(card, "g.legend").forEach(function (el) {
      var bg = el.querySelector("rect.bg");
      f.legends.push({box: R(bg && visible(bg) ? bg : el),
                      items: texts(el, "text.legendtext").map(function (t) { return t.text; })});
    });
    all(card, "g.colorbar").forEach(function (el) { f.colorbars.push({box: R(el)}); });
    all(card, "g.draglayer > g").forEach(function (el) {
      var drag = el.querySelector("rect.nsewdrag");
      if (drag && visible(drag)) { f.plots.push({name: el.getAttribute("class") || "", box: R(drag)}); }
    });
    f.titles = texts(card, "g.g-gtitle text.gtitle");
    f.annotations = texts(card, "g.annotation text");
    f.axis_titles = all(card, "g.infolayer text").filter(function (el) {
      return /^[xy][0-9]*title$/.test(el.getAttribute("class") || "") && (el.textContent || "").trim() !== "";
    }).map(function (el) { return {text: (el.textContent || "").trim().slice(0, 80), box: R(el)}; });
    all(card, "g.xaxislayer-above, g.yaxislayer-above").forEach(function (layer) {
      var cls = layer.getAttribute("class") || "";
      var ax = cls.indexOf("xaxislayer") >= 0 ? "x" : "y";
      var sub = layer.closest("g.subplot");
      var xy = sub ? (sub.getAttribute("class") || "").replace("subplot", "").trim() : "";
      var name = xy + ":" + ax;
      // the axis's own title: subplot "x2y2" has axes "x2" and "y2", titled by text.x2title and text.y2title
      var m = /^(x[0-9]*)(y[0-9]*)$/.exec(xy), title = "";
      if (m) {
        var t = card.querySelector("g.infolayer text." + (ax === "x" ? m[1] : m[2]) + "title");
        title = t ? (t.textContent || "").trim() : "";
      }
      f.ticks.push({axis: name, dir: ax, title: title, labels: all(layer, "g > text").filter(function (el) {
        var cls = el.parentNode.getAttribute("class") || "";
        return /^[xy][0-9]*tick$/.test(cls) && (el.textContent || "").trim() !== "";
      }).map(tick)});
    });
    return f;
  }
  function measure() {
    var doc = document.documentElement, body = document.body;
    var cards = document.querySelectorAll(".cs-figure"), figs = [];
    for (var i = 0; i < cards.length; i++) { figs.push(figure(cards[i], i)); }
    var result = {
      viewport: [window.innerWidth, window.innerHeight],
      client_width: doc.clientWidth,
      scroll_width: Math.max(doc.scrollWidth, body.scrollWidth),
      n_figures: cards.length,
      drawn: body.dataset.figuresDrawn === undefined ? null : Number(body.dataset.figuresDrawn),
      figures_check: body.dataset.figuresCheck || "",
      figures: figs
    };
    body.dataset.csLayout = JSON.stringify(result);
  }
  function wait() {
    if (document.body && (document.body.dataset.figuresCheck || Date.now() - t0 > 8000)) {
      // a pause for plotly's autosize and responsive handlers (no requestAnimationFrame: headless chromium
      // under a virtual-time budget may never run a frame callback)
      setTimeout(measure, 400);
      return;
    }
    setTimeout(wait, 50);
  }
  if (document.readyState === "complete") { wait(); } else { window.addEventListener("load", wait); }
})();
"""
