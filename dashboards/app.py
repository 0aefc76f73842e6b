"""DSpark Lab dashboard, home page of a Streamlit multipage app (pages/ holds the others).

    pip install -e '.[dash]'
    streamlit run dashboards/app.py                      # http://localhost:8501
    DSPARK_LAB_RUNS=/data/runs streamlit run dashboards/app.py --server.headless true --server.port 8599

Reads run directories (runs/<name>/<run_id>/) through lab, read only, and runs live ablations through sim.
The runs root is picked in the sidebar (default ./runs, or $DSPARK_LAB_RUNS).
"""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:  # so that `streamlit run` works without `pip install -e .`
    sys.path.insert(0, _REPO)

import streamlit as st

from dashboards import data, ui

root, _ = ui.page("DSpark Lab", pick_run=False)
runs = data.run_dirs(root)
st.metric("Runs found", len(runs))
st.markdown(f"""
Runs root: `{root}` (newest run first in the sidebar). Pages (left):

- **Runs**: every run with its manifest, config and REPORT.md.
- **Acceptance**: tau per drafter x dataset (Table-1 layout), per-position survival (per draft, as vLLM) and
  conditional curves with their sample counts, vLLM-compatible spec-decode counters; filters for drafter,
  dataset, temperature and trace table.
- **Calibration**: reliability of the prefix-product confidence against the accepted prefix, ECE per
  position, STS temperatures from calibration.json (applied only at the temperature they were fitted on).
- **Throughput vs SLA**: the run's sim/results.parquet frontier per policy with the SLA points labelled and
  the sla.csv gains in percent.
- **Live ablation**: run the serving simulator in process on a small workload (a run's traces or
  parametric acceptance) with your choice of policies, hardware, concurrency and block size.
- **Compare runs**: two runs side by side: tau, acceptance curves, SLA frontiers.
- **Prompt viewer**: one prompt of decode/*.parquet with the accepted draft spans of each round marked,
  and tau per prompt.
- **Engine fidelity**: the simulator against vLLM on the loads vLLM served (engine/fidelity.csv: error per
  variant x load x metric, goals met or missed, raw or drift-corrected), per-request TTFT / TPOT
  distributions and request timelines of both, vLLM's spec-decode acceptance counters, and the measured
  step profile (engine/ or `lab profile`) with its hardware, dtype and versions.
- **Simulator validation**: the simulator against published vLLM GPU runs (held-out rows by model kind,
  reported vs simulated TPOT) and fused-MoE kernel timings, from `python -m sim.public_check --out DIR` and
  `python -m sim.moe_kernels --fit --out DIR` (no run needed).

Make a run with `lab run experiments/smoke.yaml`; this app never writes into a run directory.
""")
