"""The demo report: one self-contained file, every figure drawn in headless Chromium."""
from __future__ import annotations

import json
import re

import pytest
import torch

import causalscope as cs
from causalscope.app.demo import build_report, patching_map
from causalscope.app.report import check_layout, check_report, find_chromium

#: the demo's figures: 3 engine, 3 traces + average, 4 patching / IG, 3 IIA grids, 2 graphs, DAS, 5 directions,
#: 5 circuits (2 node-effect sweeps, the SIIT-trained vs compiled sweep, ROC, faithfulness), 4 language-model workflows
#: (steering, SAE latents, lens, attention)
N = 31
#: a plotly figure fixed at 2000 px, written straight into the page (a Report drops fixed widths)
WIDE_FIGURE = (f'<div class="cs-figure" id="figure-{N + 1}" data-figure-index="{N}">'
               '<div id="cs-wide" class="plotly-graph-div" style="height:300px; width:2000px;"></div>'
               '<script>Plotly.newPlot("cs-wide", [{"type": "heatmap", "z": [[1, 2], [3, 4]]}], '
               '{"width": 2000, "height": 300});</script></div>\n</main>')


@pytest.mark.slow
def test_demo_report_draws_every_figure_offline_and_fits_both_widths(tmp_path, capsys):
    path = build_report(tmp_path / "report.html", trace_facts=100)  # make demo traces all 1,000 (test_rome_sites)
    line = capsys.readouterr().out
    size = path.stat().st_size
    assert f"{path}: {N} figures, {size / 1e6:.2f} MB (plotly.js " in line  # the demo prints its size
    assert size < 5.2e6  # plotly.js (4.8 MB, minified, once) + the figures' JSON (about 0.1 MB)
    html = path.read_text()
    assert "<script src" not in html and "<link " not in html
    assert html.count("plotly.js v") == 1 and '<nav class="cs-toc"' in html
    calls = [json.loads("[" + m + "]") for m in re.findall(r'csPlot\("cs-fig-\d+", (.*?)\);</script>', html)]
    assert len(calls) == N and not any("width" in layout for _, layout, _ in calls)  # no fixed widths
    assert "0.1700000017881393" not in html
    if find_chromium() is None:
        pytest.fail("Debian's chromium is required for the report test; `make test` installs it.")
    res = check_report(path)
    assert res["n_figures"] == N
    assert res["drawn"] == res["n_figures"], res
    assert res["js_errors"] == ""
    layout = check_layout(path)  # 1000 px and 1600 px
    assert layout["ok"], "\n".join(layout["problems"])
    for width, one in layout["widths"].items():
        s = one["summary"]
        assert s["viewport"][0] == width and s["scroll_width"] <= s["client_width"]
        assert len(s["figures"]) == N
        assert all(f["figure_width"] <= f["card_width"] + 1 for f in s["figures"])
        assert all(f["min_plot_width"] is None or f["min_plot_width"] >= 80 for f in s["figures"])
    # the same check fails on the same report with one broken figure planted in it
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace(f'data-n-figures="{N}"', f'data-n-figures="{N + 1}"', 1).replace("</main>", WIDE_FIGURE, 1),
                      encoding="utf-8")
    bad = check_layout(broken, widths=(1000,))
    assert not bad["ok"]
    assert any(p.startswith(f"1000 px: figure {N} is wider than its card") for p in bad["problems"]), bad["problems"]
    assert any(p.startswith(f"1000 px: figure {N}: a colour bar lies outside the figure") or
               p.startswith(f"1000 px: figure {N}'s card scrolls sideways") for p in bad["problems"])
    others = [p for p in bad["problems"] if (x := re.match(r"1000 px: figure (\d+)\b", p)) and int(x.group(1)) < N]
    assert not others, bad["problems"]


def test_demo_patching_map_equals_a_naive_loop():
    pm = patching_map()
    m = cs.load("tiny-gpt2")
    clean, corrupted = pm.meta["clean"], pm.meta["corrupted"]
    ids_c = m.adapter.prepare(clean).kwargs["input_ids"]
    ids_x = m.adapter.prepare(corrupted).kwargs["input_ids"]
    blocks = m.module.transformer.h
    with torch.no_grad():
        clean_states = {}
        hs = [b.register_forward_hook(lambda mod, a, o, i=i: clean_states.__setitem__(i, o)) for i, b in enumerate(blocks)]
        logits = m.module(input_ids=ids_c).logits
        for h in hs:
            h.remove()
        answer = int(logits[0, -1].argmax())
        score = lambda lg: float(lg[0, -1].log_softmax(-1)[answer])  # noqa: E731
        hi, lo = score(logits), score(m.module(input_ids=ids_x).logits)
        naive = torch.zeros(len(blocks), ids_x.shape[1])
        for layer in range(len(blocks)):
            for t in range(ids_x.shape[1]):
                def patch(mod, a, o, t=t, layer=layer):
                    o = o.clone()
                    o[:, t] = clean_states[layer][:, t]
                    return o
                h = blocks[layer].register_forward_hook(patch)
                naive[layer, t] = (score(m.module(input_ids=ids_x).logits) - lo) / (hi - lo)
                h.remove()
    torch.testing.assert_close(pm.values, naive, rtol=0, atol=1e-4)
    assert pm.dims == ("layer", "token") and pm.meta["passes"] == 1


def test_trace_facts_reaches_the_tracing_section_and_bad_counts_are_refused_before_any_section(monkeypatch, tmp_path,
                                                                                                capsys):
    from causalscope.app.cli import main
    from causalscope.app.demo import _build

    seen: list = []

    def tracing(rep, n_facts=None):
        seen.append(n_facts)
        rep.section("tracing", "text")
    monkeypatch.setattr(_build, "tracing_section", tracing)
    monkeypatch.setattr(_build, "SECTIONS", (tracing,))  # the real sections take minutes
    assert main(["demo", "--out", str(tmp_path / "a.html"), "--trace-facts", "7"]) == 0
    assert main(["demo", "--out", str(tmp_path / "b.html")]) == 0
    assert seen == [7, None]
    for bad in ("0", "-3"):
        assert main(["demo", "--out", str(tmp_path / "c.html"), "--trace-facts", bad]) == 2
        assert f"trace_facts must be an int >= 1, got {bad}" in capsys.readouterr().err
    for bad in (0, 2.5, True, "100"):
        with pytest.raises(cs.InputError, match="trace_facts must be an int >= 1"):
            build_report(tmp_path / "d.html", trace_facts=bad)
    assert seen == [7, None] and not (tmp_path / "c.html").exists() and not (tmp_path / "d.html").exists()
