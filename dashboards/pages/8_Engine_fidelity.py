"""Engine fidelity page: the simulator against a real serving engine (vLLM) on the very loads the engine
served (the `engine` and `fidelity` stages, real/engine/), and measured step profiles (`lab profile`).

For the picked run: the error table (variant x load x metric, sim / vLLM - 1) from engine/fidelity.csv
with issue 10's goals marked met or missed, raw or drift-corrected; per load, vLLM's and the simulator's
per-request TTFT and TPOT distributions and request timelines; vLLM's spec-decode counters per load with
the per-position acceptance (and the counters of the steps the simulator replayed); the step profile
(step ms vs query tokens, a line per context length, a panel per batch) with its metadata.

    lab run experiments/fidelity_vllm.yaml   # engine + fidelity stages; or `lab profile X.yaml`
    streamlit run dashboards/app.py          # then "Engine fidelity"
"""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import pandas as pd
import streamlit as st

from dashboards import data, ui

root, run = ui.page("Engine fidelity")
if run is None:
    st.stop()
mtime = data.stamp(run)
engine = data.engine_dir(run)
profiles = data.profile_paths(run)
if not engine.is_dir() and not profiles:
    others = [data.run_label(r, root) for r in data.engine_runs(root)]
    st.info(f"No engine/ and no step_profile.csv in {run}: run `lab run experiments/fidelity_vllm.yaml` "
            "(engine and fidelity stages) or `lab profile <experiment.yaml>`"
            + (f"; runs under this root that have them: {', '.join(others)} (pick one in the sidebar)." if others
               else "."))
    st.stop()
errors_seen: set[str] = set()  # a file read by two sections (a load's vLLM log) is still one red line


def load_section(variant: str, load: str, profile: str) -> None:
    """vLLM vs the simulator on one load: TTFT / TPOT distributions, request timelines, drift control."""
    logs = {}
    for side, path in data.request_logs(run, variant, load, profile).items():
        per = ui.attempt(data.request_log, str(path), mtime, seen=errors_seen)
        if per is not None:
            logs[side] = per
        elif not path.exists():
            if side == "vLLM":
                why = "run the engine stage."
            elif profile != "raw" and not (engine / variant / load / "reference.json").exists():
                why = "this load has no drift-corrected replay (the engine stage measured no reference.json for it)."
            else:
                why = "run the fidelity stage (or `python -m real.engine.fidelity RUN`)."
            st.info(f"No {path.relative_to(run)}: {why}")
    if not logs:
        return
    left, right = st.columns(2)
    left.altair_chart(ui.ecdf_chart(data.ecdf(logs, "ttft_s"), "TTFT s (first token - arrival)"), width="stretch")
    right.altair_chart(ui.ecdf_chart(data.ecdf(logs, "tpot_ms"), "TPOT ms ((E2E - TTFT) / (output - 1))"),
                       width="stretch")
    st.caption("Per-request distributions of the finished requests (sim.serving_metrics.per_request, vLLM "
               "benchmark definitions). " + "; ".join(
                   f"{side}: {int(per['finished'].sum())} of {len(per)} finished" for side, per in logs.items()))
    chunk_ticks = None
    if "vLLM" in logs and st.checkbox("Mark vLLM's streamed chunks on its timeline", value=True,
                                      key="engine_chunks", help="chunks.parquet: one tick per engine step of "
                                      "a request (unless the server merged some)"):
        chunks = ui.attempt(data.chunks, str(run), mtime, variant, load)
        if chunks is not None:
            order = logs["vLLM"].set_index("request_id")["request"]
            chunk_ticks = chunks.assign(request=chunks["request_id"].map(order)).dropna(subset=["request"])
    end_s = max((float(per.loc[per["finished"], "finish_s"].max()) for per in logs.values() if per["finished"].any()),
                default=1.0)  # one time axis for both timelines
    columns = st.columns(len(logs))
    for where, (side, per) in zip(columns, logs.items()):
        where.markdown(f"**{side}** timeline")
        where.altair_chart(ui.timeline_chart(data.timeline(per), end_s, chunk_ticks if side == "vLLM" else None),
                           width="stretch")
    ref = ui.attempt(data.reference, str(run), mtime, variant, load)
    if ref:
        ratio, drift = ref.get("ratio"), ref.get("after_over_before")
        st.caption("Drift control (reference.json): profile points measured again right before and after this "
                   f"load; the load ran at {ratio if ratio is not None else 'n/a'} x the profile's step time "
                   f"(after / before {drift if drift is not None else 'n/a'}); the drift-corrected replay scales "
                   "the profile by that ratio.")
        if isinstance(ref.get("points"), list) and ref["points"]:
            with st.expander("Reference points"):
                st.dataframe(pd.DataFrame(ref["points"]), hide_index=True, width="stretch")


if engine.is_dir():
    info = ui.attempt(data.engine_info, str(run), mtime)
    cases = data.engine_cases(run, info)
    table = ui.attempt(data.fidelity, str(run), mtime)
    st.header("Simulator vs vLLM")
    if info:
        eng = info.get("engine") or {}
        settings = info.get("settings") or {}
        st.caption(f"Engine {eng.get('engine', '?')} {eng.get('version', '?')} ({eng.get('package', '?')}, "
                   f"device {eng.get('device', '?')}, torch {eng.get('torch', '?')}); model {info.get('model', '?')}, "
                   f"dtype {settings.get('dtype', '?')}; {len(cases)} loads driven.")
    present = [p for p in data.SIM_LOGS if table is not None and (table["profile"] == p).any()] or ["raw"]
    profile = st.radio("Simulator's step profile", present, format_func=data.PROFILE_LABELS.get, horizontal=True,
                       key="engine_profile",
                       help="raw: the headline; drift-corrected: what of the raw error is the machine's speed "
                            "moving between the profile and the load")
    if table is None:
        if not (engine / "fidelity.csv").exists():
            st.info(f"No engine/fidelity.csv in {run}: run the fidelity stage "
                    "(`lab run experiments/fidelity_vllm.yaml --stages fidelity`).")
    else:
        goals = ", ".join(f"{m} <= {g:.0%}" for m, g in data.FIDELITY_GOALS.items())
        wide = data.fidelity_wide(table, profile)
        marked = data.with_goals(table[table["profile"] == profile])
        met = int((marked["verdict"] == "met").sum())
        judged = int(marked["verdict"].isin(["met", "missed", "n/a"]).sum())
        st.subheader(f"Error table: goals met {met} of {judged}")
        st.caption(f"error = simulator / vLLM - 1, in percent; goals (issue 10): |error| of {goals}. "
                   "`missed` names the goal metrics outside their goal. With engine.rounds > 1 both sides are "
                   "the rounds' means and `vLLM sd %` is the engine's own round-to-round spread.")
        st.dataframe(wide, hide_index=True, width="stretch",
                     column_config=ui.number_formats(wide, {c: 1 for c in wide.columns if c.endswith(" %")}
                                                     | {"profile x": 3}))
        with st.expander("Every metric: simulator, vLLM, error, goal, verdict"):
            shown = marked.rename(columns={"log": "vLLM"})
            st.dataframe(shown, hide_index=True, width="stretch",
                         column_config=ui.number_formats(shown, {"sim": 3, "vLLM": 3, "rel_error": 4, "goal": 2}))
        md = ui.attempt(data.text, run, "engine/fidelity.md")
        if md:
            with st.expander("engine/fidelity.md"):
                st.markdown(md)

    st.header("Per load: vLLM and the simulator, request by request")
    if not cases:
        st.info(f"No engine/<variant>/<load>/requests.parquet in {run}: run the engine stage.")
    else:
        c1, c2 = st.columns(2)
        variants = list(dict.fromkeys(v for v, _ in cases))
        variant = c1.selectbox("Variant", variants, key="engine_variant")
        load = c2.selectbox("Load", [ld for v, ld in cases if v == variant], key="engine_load")
        load_section(variant, load, profile)

    st.header("Speculative decoding: vLLM's acceptance counters")
    st.caption("vLLM's spec_decode counters over each load (spec_counters.json delta, under "
               "lab.metrics.vllm_counters' names): tau = 1 + accepted / drafts (vLLM's mean acceptance length), "
               "survival s_j = accepted at position j / drafts, conditional c_j = s_j / s_(j-1), drafted steps = "
               "share of request-steps with a draft (sim.acceptance.rates_from_counters). The simulator's rows: "
               "the same counters over the per-request steps it replayed (engine/fidelity/.../traces).")
    rows, curves = [], []
    for v, ld in cases:
        counters = ui.attempt(data.spec_counters, str(run), mtime, v, ld)
        if not counters or not counters["delta"]["num_drafts"]:
            continue
        per = ui.attempt(data.request_log, str(data.request_logs(run, v, ld, "raw")["vLLM"]), mtime,
                         seen=errors_seen)
        sources = [(f"{v} · {ld} · vLLM", counters["delta"])]
        for shard in data.replay_traces(run, v, ld):
            replayed = ui.attempt(data.replay_counters, str(shard), mtime)
            if replayed is not None:
                sources.append((f"{v} · {ld} · simulator replay", replayed))
        for source, counted in sources:  # the drafted-steps share is solved against vLLM's load only
            tokens = data.decode_tokens(per) if source.endswith("vLLM") else None
            row, positions = ui.attempt(data.counter_row, source, counted, tokens) or (None, None)
            if row is not None:
                rows.append({"variant": v, "load": ld, **row})
                if len(positions) and source.endswith("vLLM"):
                    curves.append(positions)
    if not rows:
        st.info("No load drafted anything (no speculative variant, or its spec_counters.json is missing).")
    else:
        counters_shown = pd.DataFrame(rows)
        st.dataframe(counters_shown, hide_index=True, width="stretch",
                     column_config=ui.number_formats(counters_shown, {"tau": 3, "draft_acceptance_rate": 3,
                                                                      "drafted steps": 3}))
        if curves:
            pos = pd.concat(curves, ignore_index=True)
            pos["series"] = pos["source"].str.removesuffix(" · vLLM") + " (" + pos["drafts"].map(str) + " drafts)"
            left, right = st.columns(2)
            left.altair_chart(ui.curve_chart(pos, "survival", "series", "survival s_j (per draft)", "drafts",
                                             "drafts (n)"), width="stretch")
            right.altair_chart(ui.curve_chart(pos, "conditional", "series", "conditional rate c_j", "reached",
                                              "drafts reaching j (n)", size_by_n=True), width="stretch")

st.header("Step profile")
if not profiles:
    st.info(f"No step_profile.csv in {run}: set engine.step_profile, or run `lab profile <experiment.yaml>`.")
else:
    path = st.selectbox("Profile", profiles, format_func=lambda p: str(p.relative_to(run)), key="engine_step_profile")
    loaded = ui.attempt(data.step_profile, str(path), mtime)
    if loaded is not None:
        rows_, meta = loaded
        st.caption(f"{meta.get('source')} profile of {meta.get('model')} on {meta.get('hardware')} "
                   f"({meta.get('dtype')}, CPU capability {meta.get('cpu_capability') or 'not recorded'}): "
                   f"{len(rows_)} points; step_ms = median wall ms of one engine step of `batch` requests, each "
                   "with `query_tokens` new tokens over `context_len` tokens of KV (sim.step_profile).")
        st.altair_chart(ui.step_profile_chart(rows_), width="stretch")
        left, right = st.columns([1, 2])
        left.dataframe(data.profile_meta(meta), hide_index=True, width="stretch")
        right.dataframe(rows_, hide_index=True, width="stretch",
                        column_config=ui.number_formats(rows_, {"step_ms": 1, "step_ms_p90": 1}))
