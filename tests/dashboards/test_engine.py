"""The Engine fidelity page and its data functions on the synthetic engine runs of conftest.build_engine_root
(vLLM TTFT 0.5 s / TPOT 100 ms; the simulator 0.4 s / 110 ms on the low loads, exact on the high ones;
ngram counters 10 drafts, accepted per position 8, 7, 5, 4)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboards import data
from lab.metrics import vllm_counters
from sim.acceptance import rates_from_counters
from tests.dashboards.conftest import NGRAM_COUNTERS, OUTPUT, REPLAYED, find

PAGE = Path(__file__).resolve().parents[2] / "dashboards" / "pages" / "8_Engine_fidelity.py"


def _open(root, run: str | None = None) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.session_state["runs_root"] = str(root)
    if run:
        at.session_state["run"] = run
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_cases_follow_the_engine_sections_order(engine_root):
    run = engine_root["run"]
    info = data.engine_info(str(run), 0.0)
    expected = [("nospec", "low"), ("nospec", "high"), ("ngram", "low"), ("ngram", "high")]
    assert data.engine_cases(run, info) == expected
    assert data.engine_cases(run, None) == sorted(expected)  # without engine.json: by name
    assert [r.name for r in data.engine_runs(engine_root["root"])] == ["fid-0001", "prof-0001"]
    assert data.profile_paths(run) == [run / "engine" / "step_profile.csv"]
    assert data.profile_paths(engine_root["prof"]) == [engine_root["prof"] / "step_profile.csv"]


def test_goals_are_marked_met_or_missed(engine_root):
    table = data.fidelity(str(engine_root["run"]), 0.0)
    marked = data.with_goals(table[table["profile"] == "raw"]).set_index(["variant", "load", "metric"])
    # low: TTFT -20% (goal 15%) and TPOT +10% (goal 5%) missed, throughput +0.5% met; high: all exact
    assert marked.loc[("nospec", "low", "ttft_mean_s"), "verdict"] == "missed"
    assert marked.loc[("nospec", "low", "tpot_mean_ms"), "verdict"] == "missed"
    assert marked.loc[("nospec", "low", "throughput_tok_s"), "verdict"] == "met"
    assert marked.loc[("nospec", "low", "ttft_p90_s"), "verdict"] == ""  # no goal
    wide = data.fidelity_wide(table, "raw").set_index(["variant", "load"])
    assert wide.loc[("ngram", "low"), "goals met"] == "1/3"
    assert wide.loc[("ngram", "low"), "missed"] == "ttft_mean_s, tpot_mean_ms"
    assert wide.loc[("ngram", "low"), "tpot_mean_ms error %"] == pytest.approx(10.0)
    assert wide.loc[("ngram", "high"), "goals met"] == "3/3"
    drift = data.fidelity_wide(table, "drift_corrected")
    assert drift[["variant", "load", "profile x", "goals met"]].values.tolist() == [["nospec", "low", 1.2, "3/3"]]


def test_request_logs_ecdf_and_timeline(engine_root):
    paths = data.request_logs(engine_root["run"], "nospec", "low", "raw")
    logs = {side: data.request_log(str(p), 0.0) for side, p in paths.items()}
    assert logs["vLLM"]["ttft_s"].to_numpy() == pytest.approx([0.5] * 4)
    assert logs["simulator"]["tpot_ms"].to_numpy() == pytest.approx([110.0] * 4)
    assert logs["vLLM"]["request"].tolist() == [1, 2, 3, 4]
    cdf = data.ecdf(logs, "tpot_ms")
    sim = cdf[cdf["side"] == "simulator"]
    assert sim["fraction"].tolist() == [0.25, 0.5, 0.75, 1.0] and sim["value"].to_numpy() == pytest.approx([110.0] * 4)
    phases = data.timeline(logs["vLLM"]).set_index(["request", "phase"])
    assert phases.loc[(2, "to first token"), ["start_s", "end_s"]].tolist() == pytest.approx([1.0, 1.5])
    assert phases.loc[(2, "decoding"), ["start_s", "end_s"]].tolist() == pytest.approx([1.5, 1.5 + (OUTPUT - 1) * 0.1])


def test_counter_rows_from_vllms_counters_and_the_replay(engine_root):
    run = engine_root["run"]
    counters = data.spec_counters(str(run), 0.0, "ngram", "low")
    per = data.request_log(str(data.request_logs(run, "ngram", "low", "raw")["vLLM"]), 0.0)
    tokens = data.decode_tokens(per)
    assert tokens == [OUTPUT - 1] * 4
    row, positions = data.counter_row("vLLM", counters["delta"], tokens)
    assert (row["num_drafts"], row["num_accepted_tokens_per_pos"]) == (10, "8, 7, 5, 4")
    assert row["tau"] == pytest.approx(3.4) and row["draft_acceptance_rate"] == pytest.approx(0.6)
    drafted, rates = rates_from_counters(4, NGRAM_COUNTERS["num_accepted_tokens_per_pos"], 10, tokens)
    assert row["drafted steps"] == pytest.approx(drafted) and 0 < drafted < 1
    assert positions["survival"].tolist() == pytest.approx([0.8, 0.7, 0.5, 0.4])
    assert positions["conditional"].tolist() == pytest.approx([0.8, 7 / 8, 5 / 7, 0.8]) == rates
    assert positions["reached"].tolist() == [10, 8, 7, 5]
    shard = data.replay_traces(run, "ngram", "low")
    replayed = data.replay_counters(str(shard[0]), 0.0)
    assert replayed == vllm_counters(pd.DataFrame(REPLAYED, columns=["k", "accepted"]))
    assert replayed["num_accepted_tokens_per_pos"] == [2, 2, 1, 1]
    assert data.counter_row("nospec", data.spec_counters(str(run), 0.0, "nospec", "low")["delta"], tokens)[1].empty


def test_step_profile_rows_and_meta(engine_root):
    rows, meta = data.step_profile(str(engine_root["prof"] / "step_profile.csv"), 0.0)
    assert len(rows) == 4 and set(rows["batch"]) == {1}
    shown = data.profile_meta(meta).set_index("field")["value"]
    assert shown["cpu_capability"] == "AVX2" and shown["versions"] == "torch 2.13.0+cpu, vllm 0.32.0"
    _, vllm_meta = data.step_profile(str(engine_root["run"] / "engine" / "step_profile.csv"), 0.0)
    assert data.profile_meta(vllm_meta).set_index("field").loc["cpu_capability", "value"] == "null"


def test_page_shows_the_engine_run(engine_root):
    at = _open(engine_root["root"])
    assert not at.error, [e.value for e in at.error]
    assert any(s.value == "Error table: goals met 8 of 12" for s in at.subheader)
    wide = find(at, "goals met").set_index(["variant", "load"])
    assert wide.loc[("nospec", "low"), "missed"] == "ttft_mean_s, tpot_mean_ms"
    # 2 ECDFs (TTFT, TPOT), 2 timelines (vLLM, simulator), survival + conditional, the step profile
    assert len(at.get("vega_lite_chart")) == 7
    counters = find(at, "num_accepted_tokens_per_pos")
    assert counters["source"].tolist() == ["ngram · low · vLLM", "ngram · low · simulator replay", "ngram · high · vLLM"]
    assert counters["tau"].tolist() == pytest.approx([3.4, 3.0, 3.4])
    assert np.isnan(counters["drafted steps"].iloc[1])  # solved against vLLM's load only
    assert find(at, "field").set_index("field").loc["hardware", "value"] == "x86_64 (vLLM)"
    assert any("1.2 x the profile's step time" in c.value for c in at.caption)
    # drift-corrected: the one load that has it, every goal met; its simulated log in the charts
    at.radio[0].set_value("drift_corrected").run()
    assert any(s.value == "Error table: goals met 3 of 3" for s in at.subheader)
    assert find(at, "goals met")["profile x"].tolist() == [1.2]
    at.selectbox(key="engine_variant").set_value("ngram").run()
    assert at.selectbox(key="engine_load").options == ["low", "high"]
    assert any("No engine/fidelity/ngram/low/sim_requests_drift_corrected.parquet: this load has no drift-corrected"
               in i.value for i in at.info)
    assert len(at.get("vega_lite_chart")) == 6 and not at.error  # vLLM's side alone: one timeline


def test_profile_only_run_and_a_run_with_neither(engine_root):
    at = _open(engine_root["root"], "prof/prof-0001")
    assert not at.error and len(at.get("vega_lite_chart")) == 1
    assert find(at, "step_ms")["step_ms"].tolist() == pytest.approx([10.5, 11.78, 14.0, 15.28])
    at = _open(engine_root["root"], "plain/plain-0001")
    assert not at.error and len(at.get("vega_lite_chart")) == 0
    assert "runs under this root that have them: fid/fid-0001, prof/prof-0001" in at.info[0].value


def test_rounds_add_vllms_own_spread_beside_the_errors():
    rows = [{"variant": "nospec", "load": "low", "profile": "raw", "profile_scale": 1.0, "metric": m, "sim": 1.0,
             "log": 1.0, "rel_error": 0.02, "rounds": 3, "log_spread": sd}
            for m, sd in (("tpot_mean_ms", 0.08), ("ttft_mean_s", 0.1), ("throughput_tok_s", 0.01),
                          ("ttft_p90_s", 0.3))]
    wide = data.fidelity_wide(pd.DataFrame(rows), "raw").iloc[0]
    assert wide["rounds"] == 3 and wide["tpot_mean_ms vLLM sd %"] == pytest.approx(8.0)
    assert "ttft_p90_s vLLM sd %" not in wide.index  # goal metrics only
    assert wide["goals met"] == "3/3"
