"""Live ablation page: run the serving simulator in process (sim.simulate + sim.sweep, one worker) on a small
closed-loop workload -- acceptance from the picked run's traces or parametric -- for a chosen policy set,
hardware, model, block size and concurrency points; plot the frontier and tabulate the SLA gains.

    streamlit run dashboards/app.py        # then "Live ablation"; a default sweep takes about a second
"""

import json
import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import altair as alt
import streamlit as st

from dashboards import data, ui
from lab.config_sim import HARDWARE_NAMES, PolicySpec
from sim.models import MODELS

POLICY_CHOICES = ["mtp1", "fixed_k", "threshold", "smartspec", "prefix", "prefix_async", "ar"]
CONCURRENCY = [1, 2, 4, 8, 16, 32, 64, 128, 256]

root, run = ui.page("Live ablation")
has_traces = run is not None and (run / "traces").is_dir()
frame = None
if has_traces:
    with ui.guard():
        frame = data.traces(str(run), data.stamp(run))

with st.form("ablation"):
    st.subheader("Acceptance")
    sources = (["run traces"] if has_traces else []) + ["parametric"]
    source = st.radio(
        "Source",
        sources,
        horizontal=True,
        help="run traces: replay the picked run's traces (anchors exact, rounds approximate)",
    )
    a1, a2, a3 = st.columns(3)
    if has_traces:
        method = a1.selectbox("Trace method", sorted(frame["method"].unique()))
        temperature = a2.selectbox(
            "Trace temperature", sorted(frame["temperature"].unique()), format_func="{:g}".format
        )
        use_cal = a3.checkbox("Apply calibration.json (STS)", value=True)
    alpha = a1.slider("Parametric alpha (per-position rate)", 0.3, 0.97, 0.8, 0.01)
    concentration = a2.number_input("Parametric Beta concentration (0: none)", 0.0, 100.0, 4.0)
    mtp_alpha = a3.slider("MTP-1 alpha (parametric)", 0.3, 0.97, 0.8, 0.01)

    st.subheader("Policies and knobs")
    p1, p2, p3 = st.columns(3)
    kinds = p1.multiselect("Policies", POLICY_CHOICES, default=["mtp1", "fixed_k", "prefix"])
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
            specs.append({"kind": "mtp", **({"alpha": mtp_alpha} if source == "parametric" else {})})
        elif kind == "fixed_k":
            specs += [{"kind": "fixed_k", "k": k} for k in sorted(ks) if k <= block]
        elif kind == "threshold":
            specs.append({"kind": "threshold", "threshold": threshold})
        else:
            specs.append({"kind": kind})
    return specs


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
    if source == "parametric":
        acceptance = {
            "source": "parametric",
            "max_draft": block,
            "parametric": {"kind": "iid", "alpha": alpha, "concentration": concentration or None},
        }
    else:
        acceptance = {
            "source": "run",
            "method": method,
            "temperature": float(temperature),
            "max_draft": block,
            "use_calibration": use_cal,
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
    st.session_state["ablation_request"] = (json.dumps(sim), str(run) if source != "parametric" else None)

request = st.session_state.get("ablation_request")
if request is None:
    st.info("Pick the knobs and press Run simulation.")
    st.stop()
sim_json, sim_run = request
with ui.guard():
    results, sla, notes = data.ablation(sim_json, sim_run, data.stamp(sim_run) if sim_run else None)
cfg = json.loads(sim_json)
front = data.frontier(results, 50)
st.subheader("Frontier")
st.altair_chart(ui.frontier_chart(front, cfg["sla"]["tok_s_per_user"]), width="stretch")
st.caption(
    f"{cfg['hardware']['name']} (tp {cfg['hardware']['tp']}), {cfg['model']['name']}, "
    f"acceptance {', '.join(sorted(results['acceptance'].unique()))}; "
    f"simulator wall time {results['wall_s'].sum():.2f} s." + "".join(f" {n}." for n in notes)
)
st.subheader(f"Throughput per GPU at each SLA, gains vs {cfg['sla']['baseline']} and the best fixed-k")
st.dataframe(sla, hide_index=True, width="stretch")
st.subheader("Verify tokens per request per step vs load")
st.altair_chart(
    alt.Chart(front)
    .mark_line(point=True)
    .encode(
        x=alt.X("value:Q", title="concurrency", scale=alt.Scale(type="log")),
        y=alt.Y("verify_per_req_step:Q", title="verify tokens / request / step"),
        color="policy:N",
    ),
    width="stretch",
)
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
