"""Demo-report section: the shipped ground-truth (tracr) circuits, node ablations, and circuit-discovery
methods scored against the true circuits (ROC, faithfulness)."""
from __future__ import annotations

from ..report import Report
from ._siit_figure import siit_part

#: report label -> circuits.discover method
DEMO_METHODS = {"EAP": "eap", "EAP-IG": "eap_ig", "ACDC": "acdc", "edge patching": "edge_patching"}


def circuits_section(rep: Report, ablation_cases: tuple[str, ...] = ("reverse", "hist"), pairs: int = 300,
                     scales: tuple[float, ...] = (0, 0.5, 1, 2, 5, 10), roc_case: str = "reverse",
                     corrupted: str = "zero", siit_case: str = "ib3-frac-prevs", siit_pairs: int = 1000) -> None:
    import pandas as pd

    from ...circuits import (
        case_names,
        discover,
        faithfulness_curve,
        load_case,
        node_effects,
        plot_faithfulness,
        plot_roc,
        roc,
    )
    from ..cli._circuits import case_info

    rep.section("Ground-truth circuits: tracr-compiled transformers",
                f"{len(case_names())} RASP programs compiled by tracr ship as PyTorch models with tracr's exact "
                "weights, evaluation inputs of every length up to the compiled maximum (padded at the end with PAD, "
                "which attention masks as tracr does), tracr's outputs and the circuit each program uses (nodes: "
                "embed, the attention heads, named a<layer>.h<head> as in a0.h0, the MLPs, named m<layer> as in m1, "
                "and logits; edges: which residual subspaces each node reads). Because the circuit is known, "
                "ablation and discovery methods can be checked against it.")
    rows = [case_info(n) for n in case_names()]
    table = pd.DataFrame([{"case": r["name"], "output": r["kind"], "inputs": r["n_inputs"],
                           "max length": r["seq_len"], "layers": r["n_layers"], "d_model": r["d_model"],
                           "heads": r["n_heads"],
                           "circuit nodes": r["circuit_nodes"], "circuit edges": r["circuit_edges"],
                           "description": r["description"]} for r in rows]).set_index("case")
    rep.table(table, caption="The shipped cases (causalscope circuits list); inputs: every sequence of every "
                             "length up to max length.")

    rep.text(f"Node ablations (InterpBench's sweep): each head and MLP's activation on a base input is replaced by "
             f"scale x its activation on another input (resample ablation, {pairs} sampled base / source pairs), "
             f"and the effect is the fraction of label-changing positions whose prediction breaks. Green: nodes in "
             f"the ground-truth circuit; orange: not. Scale 0 is a zero ablation: a node that writes a one-hot "
             f"(categorical) value then writes none and breaks nearly every prediction, while a node that writes "
             f"a number still encodes one (0, or the largest width for a SelectorWidth head), which is the right "
             f"answer on some inputs.")
    for name in ablation_cases:
        case = load_case(name)
        r = node_effects(case, scales=list(scales), pairs=pairs, seed=0, progress=False)
        outside = [n for n, s in zip(r.nodes, r.meta["status"]) if s == "not_in_circuit"]
        top_out = max((float(r.values[r.nodes.index(n)].max()) for n in outside), default=0.0)
        note = (" On reverse the inputs have lengths 1 to max_seq_len, so the length computation (a0.h0, m0, "
                "m1, m2) differs between inputs and resampling moves it. a0.h0 writes a number (the attention its "
                "SelectorWidth pays to BOS); zeroed, it reads as the full length, right for every full-length "
                "input, hence its low effect at scale 0." if name == "reverse" else "")
        rep.figure(r.plot(backend="plotly"),
                   caption=f"{name}: causal effect vs scale ({len(r.nodes)} nodes); the largest effect of a node "
                           f"outside the circuit is {top_out:.3f}.{note}")

    siit_part(rep, siit_case, siit_pairs)

    case = load_case(roc_case)
    results = {label: discover(case, corrupted=corrupted, method=m) for label, m in DEMO_METHODS.items()}
    rocs = {label: roc(r, case.circuit) for label, r in results.items()}
    rep.text(f"Circuit discovery on {roc_case} ({len(results['EAP'].names)} edges, {len(case.circuit.edges)} in "
             f"the ground truth), with {corrupted} ablation as the corrupted run: EAP (one forward and backward), "
             f"EAP-IG (5 integration steps), ACDC (exact greedy pruning, threshold 1e-4) and exact edge patching. "
             f"The ROC ranks edges by |score| (ACDC: kept edges first) against the true circuit.")
    rep.figure(plot_roc(rocs, backend="plotly"),
               caption=f"{roc_case}: ROC against the ground-truth edges, AUROC in the legend.")
    curves = {label: faithfulness_curve(case, r, corrupted=corrupted) for label, r in results.items()}
    rep.figure(plot_faithfulness(curves, backend="plotly"),
               caption=f"{roc_case}: faithfulness of the top-k-edge circuits (every other edge corrupted) against "
                       f"circuit size, MIB's normalisation; CPR (area under, higher is better) and CMD (area under "
                       f"|1 - faithfulness|, lower is better) in the legend.")
    aurocs = {}
    for name in case_names():
        c = load_case(name)
        aurocs[name] = {label: roc(discover(c, corrupted=corrupted, method=m), c.circuit).auroc
                        for label, m in DEMO_METHODS.items()}
    rep.table(pd.DataFrame(aurocs).T.round(3).rename_axis("case"),
              caption=f"Edge-level AUROC against the ground truth on every case ({corrupted} ablation; "
                      f"causalscope circuits score --case NAME --corrupted {corrupted}).")
