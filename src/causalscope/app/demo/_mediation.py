"""Demo-report section: causal mediation on the tutorial's adder, its causal graph, causal abstraction and DAS."""
from __future__ import annotations

from ..report import Report


def mediation_section(rep: Report) -> None:
    from ...abstraction import counterfactuals, mediation

    rep.section("Causal mediation on the tutorial's adder",
                "The toy network Linear(3,3) -> Linear(3,3) -> Linear(3,1) computes A + B + C (our weights, chosen "
                "to give the tutorial's activations for (1, 2, 3)). For 50 base / source pairs that differ only in "
                "A (then B, then C), every hidden neuron is patched from the source into the base run: its "
                "interchange-intervention accuracy (IIA, output within 1e-3 of the source output) picks out the "
                "neurons that mediate that input. All 6 neurons x 50 pairs run as rows of one batched pass.")
    for vary in ("A", "B", "C"):
        pairs = counterfactuals(vary=vary, n=50, seed=42)
        r = mediation("adder", pairs, "neurons", n_boot=500)
        each = mediation("adder", pairs, "neurons", per_example=True)  # one value per pair, for the mean |NIE|
        nie, te = r.stat("NIE").values.flatten().tolist(), float(r.stat("TE").values.flatten()[0])
        size = each.sel(stat="NIE").values.abs().mean(-1).flatten().tolist()
        rep.figure(r.plot(backend="plotly"),
                   caption=f"IIA when only {vary} changes (rows: layers l1, l2; columns: neurons). Mean NIE per "
                           f"neuron (l1 then l2): " + ", ".join(f"{v:+.2f}" for v in nie) + f". NIE is a signed "
                           f"change of the output, and over these pairs the total effect averages {te:+.2f}: {vary} "
                           f"goes up about as often as down, so a neuron that carries {vary} has NIE = TE per pair "
                           f"(IIA 1) while the mean cancels. Mean |NIE|: " + ", ".join(f"{v:.2f}" for v in size)
                           + ".")
    rep.text("As in the tutorial: h12 carries A, h13 carries B + C, h22 carries A + B + C; h23 is dead.")
    _graphs_and_das(rep)


def _graphs_and_das(rep: Report) -> None:
    """The causal-graph pictures, causal abstraction and DAS."""
    from ...abstraction import forward_graph, interchange_graph

    rep.figure(forward_graph("adder", [1, 2, 3]).plot(backend="plotly"),
               caption="The adder as a causal graph: one forward pass of 1 + 2 + 3, values on the nodes, edges = "
                       "nonzero weights (h23 is disconnected: dead).")
    rep.figure(interchange_graph("adder", [1, 2, 3], [4, 2, 3], ["h12"]).plot(backend="plotly"),
               caption="Interchange intervention: h12 from the source run (4 + 2 + 3) patched into the base run "
                       "(1 + 2 + 3) turns the base output into the source output, 9.")
    das_section(rep)


def das_section(rep: Report) -> None:
    from ...abstraction import adder_causal_model, das

    res = das("adder-rotated", adder_causal_model(), "A", "l1", k=1, seed=0)
    rep.section("Distributed alignment search on a rotated adder",
                "The adder with layer 1 rotated by a random orthogonal matrix computes the same function, but no "
                "single neuron of l1 carries A any more. DAS learns a rotation in which A lives in one coordinate.")
    rep.figure(res.plot(backend="plotly"), caption=f"DAS (k = 1): held-out IIA {res.meta.get('test_iia')}.")
