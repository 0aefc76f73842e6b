"""Live ablation page: run the serving simulator in process (sim.simulate + sim.sweep, one worker) on a small
closed-loop workload -- acceptance from the picked run's traces or parametric -- for a chosen policy set,
hardware, model, block size and concurrency points; plot the frontier and tabulate the SLA gains.
In trace mode the MTP-1 baseline replays the run's own MTP drafter traces (and is not offered when the
run has none); only the controls of the chosen acceptance source are shown.

    streamlit run dashboards/app.py        # then "Live ablation"; BENCHMARKS.md has the default sweep's time
"""

import json
import sys
import time
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import numpy as np
import streamlit as st

from dashboards import data, ui
from lab.config_sim import HARDWARE_NAMES, PolicySpec
from sim.models import MODELS

POLICY_CHOICES = ["mtp1", "fixed_k", "threshold", "smartspec", "prefix", "prefix_async", "ar"]
CONCURRENCY = [1, 2, 4, 8, 16, 32, 64, 128, 256]

root, run = ui.page("Live ablation")
mtime = data.stamp(run) if run is not None else None
frame, shards = None, []
if run is not None and (run / "traces").is_dir():
    frame, shards, problems = data.trace_shards(str(run), mtime)
    ui.skipped_shards(problems)
    frame = frame[frame["k"] > 0] if len(frame) else frame
has_traces = frame is not None and len(frame) > 0

st.subheader("Acceptance")
sources = (["run traces"] if has_traces else []) + ["parametric"]
source = st.radio(
    "Source",
    sources,
    horizontal=True,
    help="run traces: replay the picked run's traces (anchors exact, rounds approximate); "
    "parametric: i.i.d. per-position acceptance",
)
trace_mode = source == "run traces"
a1, a2, a3 = st.columns(3)
mtp_drafter = None
if trace_mode:
    methods = sorted(frame["method"].unique())
    method = a1.selectbox("Trace method", methods, index=data.pick_default(methods))
    temperature = a2.selectbox(
        "Trace temperature",
        sorted(float(t) for t in frame.loc[frame["method"] == method, "temperature"].unique()),
        format_func="{:g}".format,
    )
    cal = ui.attempt(data.calibration, str(run), mtime)
    sts, why_not = data.sts_temperatures(cal, method, temperature)
    use_cal = a3.checkbox("Apply calibration.json (STS)", value=sts is not None, disabled=sts is None,
                          help=why_not or "per-position temperatures fitted by the calibrate stage")
    if why_not:
        a3.caption(why_not)
    mtp_names = [n for n, m in (ui.attempt(data.drafter_methods, run) or {}).items() if m == "mtp"]
    at_t = set(frame.loc[np.isclose(frame["temperature"], temperature), "method"])
    mtp_drafter = next((n for n in mtp_names + ["mtp"] if n in at_t), None)
    if mtp_drafter:
        st.caption(f"MTP-1 baseline: the run's {mtp_drafter!r} traces at T={temperature:g}, verify length 1.")
    else:
        st.caption(f"This run has no MTP drafter traces at T={temperature:g}: the MTP-1 baseline is not offered.")
else:
    alpha = a1.slider("Parametric alpha (per-position rate)", 0.3, 0.97, 0.8, 0.01)
    concentration = a2.number_input("Parametric Beta concentration (0: none)", 0.0, 100.0, 4.0)
    mtp_alpha = a3.slider("MTP-1 alpha (parametric)", 0.3, 0.97, 0.8, 0.01)
choices = [c for c in POLICY_CHOICES if c != "mtp1" or not trace_mode or mtp_drafter]

with st.form("ablation"):
    st.subheader("Policies and knobs")
    p1, p2, p3 = st.columns(3)
    kinds = p1.multiselect("Policies", choices, default=[c for c in ["mtp1", "fixed_k", "prefix"] if c in choices])
    ks = p2.multiselect("fixed_k: k values", list(range(1, 9)), default=[2, 3])
    threshold = p3.slider("threshold: stop below confidence", 0.05, 0.95, 0.5, 0.05)
    k1, k2, k3, k4 = st.columns(4)
    hardware = k1.selectbox("Hardware", HARDWARE_NAMES, index=HARDWARE_NAMES.index("h100"))
    tp = k2.selectbox("Tensor parallel", [1, 2, 4, 8])
    model = k3.selectbox("Model", sorted(MODELS), index=sorted(MODELS).index("qwen3-8b"))
    block = k4.slider("Block size (max verify length)", 1, 8, 5)
    w1, w2, w3, w4 = st.columns(4)
    values = w1.multiselect("Concurrency (closed-loop users)", CONCURRENCY, default=[1, 8, 32])
    duration = w2.slider("Simulated seconds", 5, 120, 20)
    prompt_tokens = w3.number_input("Prompt tokens", 1, 32768, 512)
    output_tokens = w4.number_input("Output tokens", 1, 8192, 256)
    slas = st.text_input("SLA points (per-user tok/s, comma separated)", "50, 100, 200")
    submitted = st.form_submit_button("Run simulation")


def policy_specs() -> list[dict]:
    specs = []
    for kind in kinds:
        if kind == "mtp1":
            specs.append({"kind": "mtp", **({"method": mtp_drafter} if trace_mode else {"alpha": mtp_alpha})})
        elif kind == "fixed_k":
            specs += [{"kind": "fixed_k", "k": k} for k in sorted(ks) if k <= block]
        elif kind == "threshold":
            specs.append({"kind": "threshold", "threshold": threshold})
        else:
            specs.append({"kind": kind})
    return specs


def trace_paths() -> list[str]:
    """The readable shards this sweep replays: the picked method's and the MTP baseline's at this temperature
    (a shard whose name does not parse is kept; bad shards were skipped when reading)."""
    wanted = {method, mtp_drafter}
    keep = []
    for path in shards:
        parts = Path(path).stem.split("__")  # <table>__<method>__<dataset>__T<t>
        if len(parts) != 4 or (parts[1] in wanted and np.isclose(float(parts[3][1:]), temperature)):
            keep.append(path)
    return keep


if submitted:
    try:
        sla_points = [float(x) for x in slas.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        st.error(f"SLA points: {slas!r} is not a comma-separated list of numbers")
        st.stop()
    specs = policy_specs()
    if not specs or not values:
        st.error("Pick at least one policy (fixed_k needs a k <= block size) and one concurrency value.")
        st.stop()
    if trace_mode:
        acceptance = {
            "source": "traces",
            "paths": trace_paths(),
            "method": method,
            "temperature": float(temperature),
            "max_draft": block,
            "use_calibration": bool(use_cal),
            **({"calibration_path": str(run / "calibration.json")} if use_cal else {}),
        }
    else:
        acceptance = {
            "source": "parametric",
            "max_draft": block,
            "parametric": {"kind": "iid", "alpha": alpha, "concentration": concentration or None},
        }
    sim = {
        "hardware": {"name": hardware, "tp": tp},
        "model": {"name": model},
        "replicas": 1,
        "workload": {
            "kind": "closed_loop",
            "duration_s": float(duration),
            "warmup_s": duration / 10,
            "lengths": {
                "source": "fixed",
                "prompt_tokens": int(prompt_tokens),
                "output_tokens": int(output_tokens),
            },
        },
        "acceptance": acceptance,
        "policies": specs,
        "sweep": {"axis": "concurrency", "values": sorted(values), "seeds": [0], "workers": 1},
        "sla": {"tok_s_per_user": sla_points or [50.0], "percentile": 50, "baseline": "mtp1"},
        "plots": False,
    }
    labels = [PolicySpec(**s).label() for s in specs]
    sim["sla"]["baseline"] = "mtp1" if "mtp1" in labels else labels[0]
    st.session_state["ablation_request"] = (json.dumps(sim), str(run) if trace_mode else None)

request = st.session_state.get("ablation_request")
if request is None:
    st.info("Pick the knobs and press Run simulation.")
    st.stop()
sim_json, sim_run = request
started = time.perf_counter()
with ui.guard():
    results, sla, notes = data.ablation(sim_json, sim_run, data.stamp(sim_run) if sim_run else None)
elapsed = time.perf_counter() - started
cfg = json.loads(sim_json)
ui.frontier_section(results, sla, cfg["sla"]["tok_s_per_user"], 50)
st.caption(
    f"{cfg['hardware']['name']} (tp {cfg['hardware']['tp']}), {cfg['model']['name']}; "
    f"simulator wall time {results['wall_s'].sum():.2f} s (this page: {elapsed:.2f} s, cached when 0)."
    + "".join(f" {n}." for n in notes)
)
st.subheader(f"Throughput per GPU at each SLA, gains vs {cfg['sla']['baseline']} and the best fixed-k")
st.dataframe(data.sla_display(sla), hide_index=True, width="stretch",
             column_config=ui.number_formats(sla, {"throughput_per_gpu": 0}))
st.subheader("Verify tokens per request per step vs load")
front = data.frontier(results, 50)
st.altair_chart(ui.load_chart(front), width="stretch")
cols = [
    "policy",
    "value",
    "throughput_per_gpu",
    "tpot_ms_p50",
    "tok_s_user_p50",
    "ttft_s_p50",
    "tau",
    "verify_per_req_step",
    "finished",
    "unfinished",
    "wall_s",
]
st.dataframe(results[[c for c in cols if c in results]], hide_index=True, width="stretch")
