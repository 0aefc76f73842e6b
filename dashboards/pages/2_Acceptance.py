"""Acceptance page: tau per method x dataset (Table-1 layout), per-position conditional and survival
curves, and vLLM-compatible spec-decode counters, for the picked run.

    streamlit run dashboards/app.py        # then "Acceptance"
"""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import streamlit as st

from dashboards import data, ui

root, run = ui.page("Acceptance")
if run is None:
    st.stop()
mtime = data.stamp(run)

st.header("Acceptance length tau")
st.caption("tau = mean over verify rounds of accepted + 1 (the bonus or recovered token included).")
tau = data.tau_csv(str(run), mtime)
if tau is not None and len(tau):
    st.subheader("Table 1 layout (tau.csv, evaluate stage)")
    st.dataframe(data.table1(tau, "tau"), hide_index=True, width="stretch")
    if "speedup" in tau.columns:
        st.caption("Wall-clock speedup vs autoregressive decoding (tokens/s ratio)")
        st.dataframe(data.table1(tau, "speedup"), hide_index=True, width="stretch")
if not (run / "traces").is_dir():
    st.info(f"No traces/ in {run}: run the evaluate stage.")
    st.stop()

with ui.guard():
    by_table = data.tau_by_table(str(run), mtime)
st.subheader("From the traces (lab.metrics.tau_table), rounds and anchors")
st.dataframe(by_table, hide_index=True, width="stretch")

st.header("Per-position acceptance")
tables = sorted(by_table["table"].unique())
table = st.radio(
    "Trace table",
    tables,
    index=tables.index("rounds") if "rounds" in tables else 0,
    horizontal=True,
    help="rounds: what decoding did; anchors: a draft at every output position",
)
pos = data.positions(str(run), mtime, table)
if pos.empty:
    st.info(f"No {table} rows with drafts.")
else:
    pos["series"] = pos["method"] + " · " + pos["dataset"] + " · T" + pos["temperature"].map("{:g}".format)
    left, right = st.columns(2)
    with left:
        st.caption("conditional c_j = P(accepted >= j | accepted >= j-1)")
        st.altair_chart(ui.curve_chart(pos, "conditional", "series", "conditional rate c_j"), width="stretch")
    with right:
        st.caption("survival s_j = P(accepted >= j)")
        st.altair_chart(ui.curve_chart(pos, "survival", "series", "survival s_j"), width="stretch")
    with st.expander("Per-position table"):
        st.dataframe(pos.drop(columns=["series"]), hide_index=True, width="stretch")

st.header("vLLM spec-decode counters")
st.caption(
    "spec_decode_num_drafts, _num_draft_tokens, _num_accepted_tokens and _num_accepted_tokens_per_pos "
    "(lab.metrics.vllm_counters), per method x dataset x temperature x table."
)
counters = data.counters(str(run), mtime)
shown = counters.copy()
shown["num_accepted_tokens_per_pos"] = shown["num_accepted_tokens_per_pos"].map(
    lambda v: ", ".join(map(str, v))
)
st.dataframe(shown, hide_index=True, width="stretch")
