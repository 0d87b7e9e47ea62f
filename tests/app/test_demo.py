"""The demo report: one self-contained file, every figure drawn in headless Chromium."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.app.demo import build_report, patching_map
from causalscope.app.report import check_report, find_chromium


@pytest.mark.slow
def test_demo_report_draws_every_figure_offline(tmp_path):
    path = build_report(tmp_path / "report.html")
    html = path.read_text()
    assert "<script src" not in html and "<link " not in html
    if find_chromium() is None:
        pytest.fail("Debian's chromium is required for the report test; `make test` installs it.")
    res = check_report(path)
    assert res["n_figures"] == 26  # 3 engine, 3 traces + average, 4 patching / IG, 3 IIA grids, 2 graphs, DAS, 5 directions,
    # 4 circuits (2 node-effect sweeps, ROC, faithfulness)
    assert res["drawn"] == res["n_figures"], res
    assert res["js_errors"] == ""


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
