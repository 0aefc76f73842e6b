"""Calibration page: reliability of the drafter's prefix-product confidence prod_{j<=k} c_j against the 0/1
outcome accepted >= k, ECE per position (lab.metrics.ece), and STS temperatures from calibration.json
(applied only at the sampling temperature they were fitted on). Filters: drafter (default dspark),
datasets, temperature, trace table.

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
mtime = data.stamp(run)
ui.skipped_shards(data.trace_problems(str(run), mtime))
cal = ui.attempt(data.calibration, str(run), mtime)
cover = data.coverage(str(run), mtime)
cover = cover[cover["drafted_tokens"] > 0]
if cover.empty:
    st.info(f"No readable trace rows with drafts in {run}: run the evaluate stage.")
    st.stop()
methods_cal = (cal or {}).get("methods", {})
# the table the calibrate stage fitted dspark (or the first drafter) on, so its held-out ECE matches
fitted_table = (methods_cal.get(data.PREFERRED_METHOD) or next(iter(methods_cal.values()), {})).get("table", "rounds")
drafters, datasets, temperature, table = ui.filters(cover, "cal", multi_drafter=False, default_table=fitted_table)
method = drafters[0]
bins = st.number_input("Bins", min_value=2, max_value=50, value=int((cal or {}).get("bins", 20)))
if not datasets:
    st.info("Pick at least one dataset.")
    st.stop()

sts, why_not = data.sts_temperatures(cal, method, temperature)
if why_not and cal:
    st.info(f"{why_not}." + (" Shown as given." if sts else " Only the raw confidences are shown."))
with ui.guard():
    points, per_pos = data.reliability(
        str(run), mtime, method, float(temperature), table, tuple(sts) if sts else None, int(bins),
        datasets=tuple(datasets),
    )
if points.empty:
    st.info(f"No drafted positions for {method} at T={temperature:g} in the {table} table of {', '.join(datasets)}.")
    st.stop()
st.caption(
    "Prediction: prefix product of the drafter's per-position confidences (STS-scaled where "
    "calibration.json has temperatures fitted at this sampling temperature); outcome: 1 if the accepted "
    "prefix reaches position k. Line through the bins, points sized by the rows in each bin. All drafted "
    "positions pooled; all prompts (the calibrate stage reports held-out ECE below)."
)
st.altair_chart(ui.reliability_chart(points), width="stretch")

st.subheader("ECE per position (lab.metrics.ece)")
wide = per_pos.pivot_table(
    index="position", columns="variant", values=["ece", "mean_confidence", "accept_rate"]
)
wide.columns = [f"{metric} ({variant})" for metric, variant in wide.columns]
wide.insert(0, "n", per_pos[per_pos["variant"] == "raw"].set_index("position")["n"])
wide = wide.reset_index()
st.dataframe(wide, hide_index=True, width="stretch",
             column_config=ui.number_formats(wide, {c: 3 for c in wide.columns if "(" in c}))

st.subheader("STS temperatures (calibration.json)")
if not cal:
    if (run / "calibration.json").exists():
        st.info("calibration.json cannot be read (above); no STS temperatures shown.")
    else:
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
    st.dataframe(sts_frame, hide_index=True, width="stretch",
                 column_config=ui.number_formats(sts_frame, {"temperature": 3, "ece_before (held out)": 3,
                                                             "ece_after (held out)": 3}))
    fitted = m.get("sampling_temperature")
    st.caption(
        f"Fitted on {m.get('n_fit_prompts', '?')} prompts ({m.get('n_fit_rows', '?')} rows), evaluated on "
        f"{m.get('n_eval_prompts', '?')} held-out prompts ({m.get('n_eval_rows', '?')} rows); "
        f"table {m.get('table', '?')}; sampling temperature "
        f"{'not recorded' if fitted is None else f'T={float(fitted):g}'}."
    )
