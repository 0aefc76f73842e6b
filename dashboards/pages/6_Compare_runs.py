"""Compare runs page: two runs side by side -- tau per drafter x dataset from their traces (with the
difference), survival and conditional acceptance curves, and the sim stage's throughput-vs-SLA frontier
and gains -- under one set of filters (drafters, datasets, temperature, trace table).

    streamlit run dashboards/app.py        # then "Compare runs"
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

root, run = ui.page("Compare runs")
if run is None:
    st.stop()
runs = data.run_dirs(root)
if len(runs) < 2:
    st.info(f"Only one run under `{root}`: nothing to compare. Make another with `lab run <experiment.yaml>`.")
    st.stop()
left, right = st.columns(2)
first = runs.index(run)
run_a = ui.run_picker(runs, root, "Run A", "compare_a", left, default=first)
run_b = ui.run_picker(runs, root, "Run B", "compare_b", right, default=1 if first == 0 else 0)
pair = {"A": run_a, "B": run_b}
stamps = {name: data.stamp(r) for name, r in pair.items()}
for name, r in pair.items():
    ui.skipped_shards(data.trace_problems(str(r), stamps[name]))

covers = [data.coverage(str(r), stamps[name]) for name, r in pair.items()]
cover = pd.concat(covers, ignore_index=True)
if cover.empty:
    st.info("Neither run has readable traces: compare the sim outputs below.")
else:
    drafters, datasets, temperature, table = ui.filters(cover, "cmp")

    def selected(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty:
            return frame
        return frame[frame["method"].isin(drafters) & frame["dataset"].isin(datasets)
                     & np.isclose(frame["temperature"].astype(float), temperature) & (frame["table"] == table)]

    st.header("Acceptance length tau (from the traces)")
    taus = {name: selected(data.tau_by_table(str(r), stamps[name])) for name, r in pair.items()}
    keys = ["method", "dataset", "temperature", "table"]
    merged = None
    for name, t in taus.items():
        t = t[keys + ["tau", "rounds"]] if len(t) else pd.DataFrame(columns=keys + ["tau", "rounds"])
        t = t.rename(columns={"tau": f"tau {name}", "rounds": f"rounds {name}"})
        merged = t if merged is None else merged.merge(t, on=keys, how="outer")
    merged["tau B - A"] = merged["tau B"] - merged["tau A"]
    st.dataframe(merged, hide_index=True, width="stretch",
                 column_config=ui.number_formats(merged, {"tau A": 3, "tau B": 3, "tau B - A": 3}))
    st.caption(f"A = {data.run_label(run_a, root)}, B = {data.run_label(run_b, root)}; an empty cell: the "
               "run has no rows for that drafter x dataset.")

    st.header("Per-position acceptance")
    columns = dict(zip(pair, st.columns(2)))
    for name, r in pair.items():
        pos = selected(data.positions(str(r), stamps[name], table).assign(table=table))
        with columns[name]:
            st.subheader(f"{name}: {data.run_label(r, root)}")
            if pos.empty:
                st.info(f"No {table} rows with drafts for this selection.")
                continue
            pos = pos.assign(series=pos["method"] + " · " + pos["dataset"] + " (" + pos["drafts"].map(str)
                             + " drafts)")
            st.caption("survival s_j = P(accepted >= j) per draft (vLLM's num_accepted_tokens_per_pos / num_drafts)")
            st.altair_chart(ui.curve_chart(pos, "survival", "series", "survival s_j", "drafts", "drafts (n)"),
                            width="stretch")
            st.caption("conditional c_j = P(accepted >= j | accepted >= j-1, drafted >= j); size: n reaching j")
            st.altair_chart(ui.curve_chart(pos, "conditional", "series", "conditional rate c_j", "reached",
                                           "drafts reaching j (n)", size_by_n=True), width="stretch")

st.header("Throughput vs SLA (sim stage)")
columns = dict(zip(pair, st.columns(2)))
for name, r in pair.items():
    with columns[name]:
        st.subheader(f"{name}: {data.run_label(r, root)}")
        results = ui.attempt(data.sim_results, str(r), stamps[name])
        sla = ui.attempt(data.sim_sla, str(r), stamps[name])
        if results is None and sla is None:
            if not (r / "sim").is_dir():
                st.info("No sim/ outputs in this run.")
            continue
        ui.frontier_section(results, sla)
        if sla is not None and len(sla):
            st.dataframe(data.sla_display(sla), hide_index=True, width="stretch",
                         column_config=ui.number_formats(sla, {"throughput_per_gpu": 0}))
