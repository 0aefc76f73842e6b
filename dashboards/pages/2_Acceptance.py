"""Acceptance page: tau per method x dataset (Table-1 layout), per-position survival and conditional
curves with their sample counts, and vLLM-compatible spec-decode counters, for the picked run, filtered by
drafter, dataset, temperature and trace table.

    streamlit run dashboards/app.py        # then "Acceptance"
"""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import numpy as np
import pandas as pd
import streamlit as st

from dashboards import data, ui

root, run = ui.page("Acceptance")
if run is None:
    st.stop()
mtime = data.stamp(run)
tau = ui.attempt(data.tau_csv, str(run), mtime)
ui.skipped_shards(data.trace_problems(str(run), mtime))
cover = data.coverage(str(run), mtime)
if cover.empty and tau is None:
    st.info(f"No readable traces/ and no tau.csv in {run}: run the evaluate stage.")
    st.stop()
if cover.empty:  # tau.csv alone: filter on what it has
    cover = tau.assign(table="rounds", rounds=0, drafted_tokens=0)[["method", "dataset", "temperature", "table",
                                                                    "rounds", "drafted_tokens"]]
drafters, datasets, temperature, table = ui.filters(cover, "acc")


def selected(frame: pd.DataFrame, with_table: bool = True):
    keep = (frame["method"].isin(drafters) & frame["dataset"].isin(datasets)
            & np.isclose(frame["temperature"].astype(float), temperature))
    if with_table and "table" in frame:
        keep &= frame["table"] == table
    return frame[keep]


st.header("Acceptance length tau")
st.caption("tau = mean over verify rounds of accepted + 1 (the bonus or recovered token included).")
if tau is not None and len(selected(tau, False)):
    st.subheader("Table 1 layout (tau.csv, evaluate stage)")
    st.dataframe(data.table1(selected(tau, False), "tau"), hide_index=True, width="stretch")
    if "speedup" in tau.columns:
        st.caption("Wall-clock speedup vs autoregressive decoding (tokens/s ratio)")
        st.dataframe(data.table1(selected(tau, False), "speedup"), hide_index=True, width="stretch")
if not (run / "traces").is_dir():
    st.info(f"No traces/ in {run}: run the evaluate stage.")
    st.stop()

by_table = selected(data.tau_by_table(str(run), mtime))
st.subheader(f"From the traces (lab.metrics.tau_table), {table} table")
st.dataframe(by_table, hide_index=True, width="stretch")

st.header("Per-position acceptance")
pos = selected(data.positions(str(run), mtime, table))
absent = data.absent_drafters(cover, drafters, datasets, temperature, table, data.trace_problems(str(run), mtime))
if absent:
    st.warning("Not drawn: " + "; ".join(absent) + ".")
if pos.empty:
    st.info(f"No {table} rows with drafts for this selection.")
else:
    pos = pos.assign(series=pos["method"] + " · " + pos["dataset"] + " (" + pos["drafts"].map(str) + " drafts)")
    left, right = st.columns(2)
    with left:
        st.caption("survival s_j = P(accepted >= j) per draft, as vLLM's num_accepted_tokens_per_pos / num_drafts "
                   "(rounds with no draft left out; a draft shorter than j counts as not reaching j, so s_1 = c_1); "
                   "n = drafts, in the legend")
        st.altair_chart(ui.curve_chart(pos, "survival", "series", "survival s_j", "drafts", "drafts (n)"),
                        width="stretch")
    with right:
        st.caption("conditional c_j = P(accepted >= j | accepted >= j-1, drafted >= j); point size and tooltip: "
                   "n = drafts that reached position j")
        st.altair_chart(ui.curve_chart(pos, "conditional", "series", "conditional rate c_j", "reached",
                                       "drafts reaching j (n)", size_by_n=True), width="stretch")
    with st.expander("Per-position table", expanded=False):
        st.dataframe(pos.drop(columns=["series"]), hide_index=True, width="stretch",
                     column_config=ui.number_formats(pos, {"survival": 3, "conditional": 3}))

st.header("vLLM spec-decode counters")
st.caption(
    "spec_decode_num_drafts, _num_draft_tokens, _num_accepted_tokens and _num_accepted_tokens_per_pos "
    "(lab.metrics.vllm_counters), per method x dataset x temperature x table."
)
counters = selected(data.counters(str(run), mtime))
shown = counters.copy()
shown["num_accepted_tokens_per_pos"] = shown["num_accepted_tokens_per_pos"].map(
    lambda v: ", ".join(map(str, v))
)
st.dataframe(shown, hide_index=True, width="stretch")
