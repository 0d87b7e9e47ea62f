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


def test_rows_compile_to_one_op_per_block_without_per_row_work():
    m = cs.load(build_adder())
    x = _adder_inputs(500, 0)
    plan = m.plan(x, [cs.Rows({Site("l1", neurons=n): Zero()}, torch.arange(500)) for n in range(3)])
    assert plan == {"l1": [500, 500, 500]}


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
