"""Throughput vs SLA page: the picked run's sim stage outputs -- the frontier (per-user tok/s vs output
tok/s per GPU) per policy from sim/results.parquet with the SLA points labelled (policies whose lines
coincide are named), and the gains table from sim/sla.csv in percent, as sim/summary.md writes them.

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
mtime = data.stamp(run)
results = ui.attempt(data.sim_results, str(run), mtime)
sla = ui.attempt(data.sim_sla, str(run), mtime)
if results is None and sla is None:
    if not (run / "sim" / "results.parquet").exists() and not (run / "sim" / "sla.csv").exists():
        st.info(
            f"No sim/results.parquet or sim/sla.csv in {run}: run the sim stage "
            "(`lab run experiments/fig7_sla.yaml`), or try the Live ablation page."
        )
    st.stop()
ui.frontier_section(results, sla)
if sla is not None and len(sla):
    base = sla["baseline"].iloc[0] if "baseline" in sla else "baseline"
    st.subheader(f"Throughput per GPU at each SLA, gains vs {base} and the best fixed-k")
    st.caption("gain = throughput / reference - 1, in percent as in sim/summary.md; 'baseline misses SLA': the "
               "reference cannot meet this SLA; n/a: the policy cannot.")
    st.dataframe(data.sla_display(sla), hide_index=True, width="stretch",
                 column_config=ui.number_formats(sla, {"throughput_per_gpu": 0}))
    with st.expander("One row per SLA point"):
        st.dataframe(data.gains_wide(sla), hide_index=True, width="stretch")
summary = ui.attempt(data.text, run, "sim/summary.md")
if summary:
    with st.expander("sim/summary.md"):
        st.markdown(summary)
