"""Replays: trace throughput over the whole run (vLLM's definition), warmup on short traces, the shared
per-request log (sim/requests.parquet) and the replay of a real engine's log with its error table."""
import numpy as np
import pandas as pd
import pytest

from lab.config_sim import SimSection
from lab.errors import LabError
from sim.serving_metrics import LOG_COLUMNS, fidelity_metrics, fidelity_table, per_request
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim


def _trace(tmp_path, span=29.0, n=30):
    p = tmp_path / "trace.csv"
    t = np.linspace(0, span, n)
    pd.DataFrame({"arrived_at": t, "num_prefill_tokens": 500, "num_decode_tokens": 400}).to_csv(p, index=False)
    return p


def test_short_trace_runs_with_the_default_warmup(tmp_path):
    # a 29 s trace and no warmup_s given: replays default to 0 (main: 'warmup_s 30 is not below ...')
    sim = SimSection.model_validate({"model": {"name": "llama-2-7b"}, "sweep": {"axis": "none"},
                                     "workload": {"kind": "trace", "trace_path": str(_trace(tmp_path))},
                                     "policies": [{"kind": "ar"}]})
    s = simulate(prepare_inputs(sim), "ar", None, 0).summary
    assert s["measured_requests"] == s["requests"] == 30 and s["unfinished"] == 0
    with pytest.raises(LabError, match="warmup_s: 40 s is not below the replay's last arrival at 29.0 s"):
        prepare_inputs(make_sim(workload={"kind": "trace", "trace_path": str(_trace(tmp_path)),
                                          "warmup_s": 40, "duration_s": None}))


def test_trace_throughput_runs_to_the_last_finish(tmp_path):
    # 30 requests of 400 output tokens over 29 s; most tokens come after the last arrival
    sim = make_sim(workload={"kind": "trace", "trace_path": str(_trace(tmp_path)), "warmup_s": 0,
                             "duration_s": 600}, policies=[{"kind": "ar"}])
    res = simulate(prepare_inputs(sim), "ar", None, 0)
    f = res.requests
    expected = f["output_tokens"].sum() / (f["finish_s"].max() - f["arrival_s"].min())
    assert res.summary["throughput_tok_s"] == pytest.approx(expected, rel=1e-12)
    assert f["output_tokens"].sum() == 30 * 400


def _log():
    # three requests by hand: (arrival, input, output, first token, finish)
    return pd.DataFrame({"request_id": ["a", "b", "c"], "arrival_s": [0.0, 1.0, 2.0],
                         "input_tokens": [100, 200, 300], "output_tokens": [11, 5, 1],
                         "first_token_s": [0.5, 1.5, 2.2], "finish_s": [1.5, 3.5, 2.2]})


def test_metric_definitions_by_hand():
    per = per_request(_log())
    assert per["ttft_s"].tolist() == pytest.approx([0.5, 0.5, 0.2])
    # TPOT = (E2E - TTFT) / (n - 1): (1.5 - 0.5) / 10 = 100 ms, (2.5 - 0.5) / 4 = 500 ms, none for n = 1
    assert per["tpot_ms"].iloc[:2].tolist() == pytest.approx([100.0, 500.0]) and np.isnan(per["tpot_ms"].iloc[2])
    m = fidelity_metrics(_log())
    assert m["ttft_mean_s"] == pytest.approx(0.4)
    assert m["ttft_p90_s"] == pytest.approx(0.5)  # numpy linear percentile of [0.2, 0.5, 0.5]
    assert m["tpot_mean_ms"] == pytest.approx(300.0)
    assert m["tpot_p90_ms"] == pytest.approx(100 + 0.9 * 400)
    assert m["e2e_mean_s"] == pytest.approx((1.5 + 2.5 + 0.2) / 3)
    assert m["throughput_tok_s"] == pytest.approx(17 / 3.5)  # last finish 3.5 - first arrival 0
    # a failed request (NaN times) is out of the latencies and its tokens out of the throughput
    failed = pd.concat([_log(), pd.DataFrame({"request_id": ["d"], "arrival_s": [0.0], "input_tokens": [5],
                                              "output_tokens": [50], "first_token_s": [np.nan],
                                              "finish_s": [np.nan]})], ignore_index=True)
    assert fidelity_metrics(failed) == pytest.approx(m)
    slower = _log().assign(finish_s=lambda f: f["arrival_s"] + 2 * (f["finish_s"] - f["arrival_s"]))
    t = fidelity_table(slower, _log()).set_index("metric")
    assert t.loc["e2e_mean_s", "rel_error"] == pytest.approx(1.0)
    assert t.loc["ttft_mean_s", "rel_error"] == pytest.approx(0.0)


def test_replay_log_stage_writes_requests_and_the_error_table(tmp_path):
    from lab.config import config_from_dict
    from lab.runs import open_run
    from sim import stages

    rng = np.random.default_rng(0)
    n = 40
    arrival = np.sort(rng.uniform(0, 20, n))
    out_tok = rng.integers(20, 200, n)
    ttft = rng.uniform(0.05, 0.2, n)
    real = pd.DataFrame({"request_id": [f"r{i}" for i in range(n)], "arrival_s": arrival,
                         "input_tokens": rng.integers(50, 800, n), "output_tokens": out_tok,
                         "first_token_s": arrival + ttft, "finish_s": arrival + ttft + 0.02 * (out_tok - 1)})
    data = {"name": "replay", "output_dir": str(tmp_path / "runs"), "stages": ["sim"],
            "prompts": {"datasets": [{"name": "gsm8k"}]}, "drafters": [{"name": "dspark", "method": "dspark"}],
            "sim": {"model": {"name": "llama-2-7b"}, "hardware": {"name": "h100"},
                    "workload": {"kind": "replay_log", "log_path": "engine/requests.parquet"},
                    "policies": [{"kind": "ar"}], "sweep": {"axis": "none", "workers": 1}}}
    ctx = open_run(config_from_dict(data), show_progress=False)
    ctx.path("engine").mkdir()
    real.to_parquet(ctx.path("engine", "requests.parquet"))  # relative log_path: found in the run
    stages.run_sim(ctx)
    req = pd.read_parquet(ctx.path("sim", "requests.parquet"))
    assert list(req.columns[: len(LOG_COLUMNS)]) == list(LOG_COLUMNS)
    assert {"policy", "value", "seed", "preemptions"} <= set(req.columns)
    np.testing.assert_allclose(req["arrival_s"], arrival)  # the log's arrivals and lengths, replayed
    np.testing.assert_array_equal(req["input_tokens"], real["input_tokens"])
    np.testing.assert_array_equal(req["output_tokens"], out_tok)
    fid = pd.read_csv(ctx.path("sim", "fidelity.csv"))
    assert len(fid) == 6 and set(fid["policy"]) == {"ar"}
    expected = fidelity_table(req, real)
    np.testing.assert_allclose(fid["sim"], expected["sim"])
    np.testing.assert_allclose(fid["log"], expected["log"])
    np.testing.assert_allclose(fid["rel_error"], fid["sim"] / fid["log"] - 1)
    summary = ctx.path("sim", "summary.md").read_text()
    assert "Simulator vs the replayed log" in summary and "| ar | - | tpot_mean_ms |" in summary


def test_bad_request_logs_are_one_line_errors(tmp_path):
    bad = tmp_path / "log.csv"
    bad.write_text("request_id,arrival_s\nx,0\n")
    for path, match in ((tmp_path / "none.parquet", "does not exist"), (bad, "lacks columns")):
        with pytest.raises(LabError, match=f"sim.workload.log_path: .*{match}"):
            prepare_inputs(make_sim(workload={"kind": "replay_log", "log_path": str(path)}))
