"""cs.Rows: a block of plan rows sharing one edits dict, against naive per-row loops with plain hooks."""
from __future__ import annotations

import pytest
import torch

import causalscope as cs
from causalscope.core import Patch, Site, Zero
from causalscope.zoo import build_adder
from model_state import assert_same, snapshot
from plain_hooks import hook


def _adder_inputs(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 10, (n, 3), generator=torch.Generator().manual_seed(seed)).float()


def _naive(net: torch.nn.Module, x: torch.Tensor, layer: str, neuron: int, value: torch.Tensor | None) -> torch.Tensor:
    """One plain forward of one input row with ``layer``'s output neuron set to ``value`` (None: zero)."""
    def edit(out):
        out = out.clone()
        out[:, neuron] = 0.0 if value is None else value
        return out
    h = hook(getattr(net, layer), "output", edit)
    try:
        with torch.no_grad():
            return net(x)
    finally:
        h.remove()


def test_rows_blocks_equal_a_naive_loop_per_row():
    net = build_adder()
    base, src = _adder_inputs(7, 0), _adder_inputs(7, 1)
    m = cs.load(net)
    snap = snapshot(net)
    source = m.run(src, cache=["l1"])
    rows = [cs.Rows({Site("l1", neurons=n): Patch(source)}, torch.arange(7)) for n in range(3)]
    rows.append(cs.Rows({Site("l1", neurons=1): Zero()}, [6, 0, 3]))
    out = m.run(base, rows).output
    with torch.no_grad():
        src_l1: dict[str, torch.Tensor] = {}

        def keep(o: torch.Tensor) -> None:
            src_l1["v"] = o.clone()
        h = hook(net.l1, "output", keep)
        net(src)
        h.remove()
    expected = [_naive(net, base[i:i + 1], "l1", n, src_l1["v"][i, n]) for n in range(3) for i in range(7)]
    expected += [_naive(net, base[i:i + 1], "l1", 1, None) for i in (6, 0, 3)]
    torch.testing.assert_close(out, torch.cat(expected), atol=1e-6, rtol=1e-6)
    assert_same(net, snap)  # nothing left on the model


def test_rows_compile_to_one_op_per_module_without_per_row_work():
    m = cs.load(build_adder())
    x = _adder_inputs(500, 0)
    plan = m.plan(x, [cs.Rows({Site("l1", neurons=n): Zero()}, torch.arange(500)) for n in range(3)])
    assert plan == {"l1": [1500]}  # sites that differ only in their neurons: one op, each row its own neurons


def test_rows_mixed_with_dicts_and_bad_blocks_raise_clear_errors():
    m = cs.load(build_adder())
    one = _adder_inputs(1, 0)
    out = m.run(one, [cs.Rows({"l1": Zero()}, [0, 0]), {}]).output
    with torch.no_grad():
        plain = build_adder()(one)
    torch.testing.assert_close(out[2:], plain)  # the bare dict is one plain row on the one input
    x = _adder_inputs(4, 0)
    with pytest.raises(cs.PlanError, match="give it as cs.Rows"):
        m.run(x, [cs.Rows({"l1": Zero()}, [0, 1]), {}])
    with pytest.raises(cs.PlanError, match="names input 4; the inputs have 4 rows"):
        m.run(x, [cs.Rows({"l1": Zero()}, [0, 4])])
    with pytest.raises(cs.PlanError, match="input_index cannot be given"):
        m.run(x, [cs.Rows({"l1": Zero()}, [0])], input_index=[0])
    with pytest.raises(cs.PlanError, match="1-D sequence of input row indices"):
        cs.Rows({"l1": Zero()}, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(cs.PlanError, match="takes a dict"):
        cs.Rows([("l1", Zero())], [0])  # type: ignore[arg-type]


def test_per_row_neurons_with_positions_on_an_lm_equal_a_naive_loop(gpt2):
    """Rows whose sites differ only in their neurons share one op; each row still reads and writes its own."""
    ids = torch.randint(0, 60, (2, 6), generator=torch.Generator().manual_seed(3))
    src_ids = torch.randint(0, 60, (2, 6), generator=torch.Generator().manual_seed(4))
    site_path = "transformer.h.1.mlp"
    source = gpt2.run(src_ids, cache=[site_path])
    cells = [(n, t) for n in (0, 5, 17) for t in (1, 4)]
    rows = [cs.Rows({Site(site_path, positions=[t], neurons=[n, n + 1]): Patch(source)}, [0, 1]) for n, t in cells]
    assert gpt2.plan(ids, rows) == {site_path: [12]}
    out = gpt2.run(ids, rows).output
    module = gpt2.module.get_submodule(site_path)
    with torch.no_grad():
        src_act: dict[str, torch.Tensor] = {}

        def keep(o: torch.Tensor) -> None:
            src_act["v"] = o.clone()
        h = hook(module, "output", keep)
        gpt2.module(src_ids)
        h.remove()
        expected = []
        for n, t in cells:
            for i in (0, 1):
                def edit(o: torch.Tensor, n: int = n, t: int = t, i: int = i) -> torch.Tensor:
                    o = o.clone()
                    o[:, t, n:n + 2] = src_act["v"][i, t, n:n + 2]
                    return o
                h = hook(module, "output", edit)
                expected.append(gpt2.module(ids[i:i + 1]).logits)
                h.remove()
    torch.testing.assert_close(out, torch.cat(expected), atol=1e-5, rtol=1e-5)
    with pytest.raises(cs.SiteError, match="out of range"):
        gpt2.run(ids, [cs.Rows({Site(site_path, neurons=[n]): Zero()}, [0]) for n in (0, 10_000)])
