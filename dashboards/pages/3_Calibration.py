"""Calibration page: reliability of the drafter's prefix-product confidence prod_{j<=k} c_j against the 0/1
outcome accepted >= k, ECE per position (lab.metrics.ece), and STS temperatures from calibration.json.

    streamlit run dashboards/app.py        # then "Calibration"
"""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import pandas as pd
import streamlit as st

from dashboards import data, ui

root, run = ui.page("Calibration")
if run is None:
    st.stop()
if not (run / "traces").is_dir():
    st.info(f"No traces/ in {run}: run the evaluate stage.")
    st.stop()
mtime = data.stamp(run)
with ui.guard():
    frame = data.traces(str(run), mtime)
frame = frame[frame["k"] > 0]
if frame.empty:
    st.info("No trace rows with drafts.")
    st.stop()
cal = data.calibration(run)
methods_cal = (cal or {}).get("methods", {})

c1, c2, c3, c4 = st.columns(4)
method = c1.selectbox("Method", sorted(frame["method"].unique()))
temps_avail = sorted(frame.loc[frame["method"] == method, "temperature"].unique())
temperature = c2.selectbox("Temperature", temps_avail, format_func="{:g}".format)
sub = frame[(frame["method"] == method) & (frame["temperature"] == temperature)]
tables = sorted(sub["table"].unique())
default_table = methods_cal.get(method, {}).get("table") or "rounds"
table = c3.selectbox(
    "Trace table", tables, index=tables.index(default_table) if default_table in tables else 0
)
bins = c4.number_input("Bins", min_value=2, max_value=50, value=int((cal or {}).get("bins", 20)))

sts = methods_cal.get(method, {}).get("temperatures")
with ui.guard():
    points, per_pos = data.reliability(
        str(run), mtime, method, float(temperature), table, tuple(sts) if sts else None, int(bins)
    )
if points.empty:
    st.info("No drafted positions for this selection.")
    st.stop()
st.caption(
    "Prediction: prefix product of the drafter's per-position confidences (STS-scaled where "
    "calibration.json has temperatures); outcome: 1 if the accepted prefix reaches position k. "
    "All drafted positions pooled; all prompts (the calibrate stage reports held-out ECE below)."
)
st.altair_chart(ui.reliability_chart(points), width="stretch")

st.subheader("ECE per position (lab.metrics.ece)")
wide = per_pos.pivot_table(
    index="position", columns="variant", values=["ece", "mean_confidence", "accept_rate"]
)
wide.columns = [f"{metric} ({variant})" for metric, variant in wide.columns]
wide.insert(0, "n", per_pos[per_pos["variant"] == "raw"].set_index("position")["n"])
st.dataframe(wide.reset_index(), hide_index=True, width="stretch")

st.subheader("STS temperatures (calibration.json)")
if not cal:
    st.info("No calibration.json in this run: `lab run <experiment.yaml> --stages calibrate`.")
elif method not in methods_cal:
    st.info(f"calibration.json has no entry for {method!r} (it has {sorted(methods_cal)}).")
else:
    m = methods_cal[method]
    sts_frame = pd.DataFrame(
        {"position": range(1, len(m["temperatures"]) + 1), "temperature": m["temperatures"]}
    )
    for key in ("ece_before", "ece_after"):
        if key in m and len(m[key]) == len(sts_frame):
            sts_frame[f"{key} (held out)"] = m[key]
    st.dataframe(sts_frame, hide_index=True, width="stretch")
    st.caption(
        f"Fitted on {m.get('n_fit_prompts', '?')} prompts ({m.get('n_fit_rows', '?')} rows), evaluated on "
        f"{m.get('n_eval_prompts', '?')} held-out prompts ({m.get('n_eval_rows', '?')} rows); "
        f"table {m.get('table', '?')}."
    )
