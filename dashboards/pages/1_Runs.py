"""Runs page: every run under the runs root with its manifest; the picked run's REPORT.md, config, plots.

streamlit run dashboards/app.py        # then "Runs" in the page list
"""

import re
import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import streamlit as st

from dashboards import data, ui

root, run = ui.page("Runs")
if run is None:
    st.stop()
table = data.runs_table(root)
st.dataframe(
    table.drop(columns=["path"] + ([] if table["problem"].astype(bool).any() else ["problem"])),
    hide_index=True,
    width="stretch",
    height=min(38 + 35 * len(table), 560),  # every run visible without scrolling (up to ~15)
)
st.caption("Newest first (manifest opened_at). `directory` tells copies of one run apart.")

st.header(f"Run {data.run_label(run, root)}")
manifest = ui.attempt(data.manifest, run) or {}
cols = st.columns(4)
cols[0].metric("seed", str(manifest.get("seed", "")))
cols[1].metric("config hash", str(manifest.get("config_hash", "")))
cols[2].metric("git sha", str(manifest.get("git_sha", ""))[:10])
cols[3].metric("CPUs", str((manifest.get("hardware") or {}).get("cpus", "")))
with st.expander("manifest.json"):
    st.json(manifest)
config = ui.attempt(data.text, run, "config.yaml")
if config:
    with st.expander("config.yaml"):
        st.code(config, language="yaml")

report = ui.attempt(data.text, run, "REPORT.md")
if report:
    # images are shown below with st.image: markdown cannot reach files inside the run directory
    st.markdown(re.sub(r"^!\[[^\]]*\]\([^)]*\)\s*$", "", report, flags=re.MULTILINE))
else:
    st.info("No REPORT.md yet: `lab run <experiment.yaml> --stages report`.")
for png in data.pngs(run):
    image = ui.attempt(data.image, png)
    if image is not None:
        st.image(image, caption=png.relative_to(run).as_posix())
