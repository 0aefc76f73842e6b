"""Throughput vs SLA page: the picked run's sim stage outputs -- the frontier (per-user tok/s vs output
tok/s per GPU) per policy from sim/results.parquet, and the gains table from sim/sla.csv.

    streamlit run dashboards/app.py        # then "Throughput vs SLA"
"""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import streamlit as st

from dashboards import data, ui

root, run = ui.page("Throughput vs SLA")
if run is None:
    st.stop()
results, sla = data.sim_outputs(str(run), data.stamp(run))
if results is None and sla is None:
    st.info(
        f"No sim/results.parquet or sim/sla.csv in {run}: run the sim stage "
        "(`lab run experiments/fig7_sla.yaml`), or try the Live ablation page."
    )
    st.stop()

percentile = int(sla["percentile"].iloc[0]) if sla is not None and len(sla) and "percentile" in sla else 50
slas = sorted(sla["sla_tok_s_user"].unique()) if sla is not None and len(sla) else []
if results is not None and len(results):
    front = data.frontier(results, percentile)
    st.subheader("Frontier")
    st.altair_chart(ui.frontier_chart(front, slas, percentile), width="stretch")
    acc = ", ".join(sorted(map(str, results["acceptance"].unique()))) if "acceptance" in results else "?"
    exact = bool(results["exact_replay"].all()) if "exact_replay" in results else False
    st.caption(
        f"Acceptance: {acc} ({'exact anchor replay' if exact else 'approximate or parametric'}); "
        f"{len(results)} points; dotted lines: SLA points from sla.csv."
    )
    with st.expander("Frontier points (sim.sweep.frontier)"):
        st.dataframe(front, hide_index=True, width="stretch")
if sla is not None and len(sla):
    st.subheader(
        f"Throughput per GPU at each SLA (TPOT P{percentile}), gains vs "
        f"{sla['baseline'].iloc[0] if 'baseline' in sla else 'baseline'} and the best fixed-k"
    )
    st.caption(
        "gain = throughput / reference - 1; inf: the reference cannot meet this SLA; NaN: the policy cannot."
    )
    st.dataframe(sla, hide_index=True, width="stretch")
    with st.expander("One row per SLA point"):
        st.dataframe(data.gains_wide(sla), hide_index=True, width="stretch")
summary = data.text(run, "sim/summary.md")
if summary:
    with st.expander("sim/summary.md"):
        st.markdown(summary)
