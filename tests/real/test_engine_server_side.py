"""real/engine/server_side.py: vLLM's latency histograms over a load, its processes' CPU, the occupancy fit.

    pytest -q tests/real/test_engine_server_side.py
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from real.engine.server_side import histogram_totals, occupancy_fit, process_cpu, server_side_record

BODY = """# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="target"} 1.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="target"} 4.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="target"} 2.0
vllm:time_to_first_token_seconds_count{engine="1",model_name="target"} 1.0
vllm:time_to_first_token_seconds_sum{engine="1",model_name="target"} 1.0
vllm:time_to_first_token_seconds_created{engine="0",model_name="target"} 1.7e9
vllm:request_queue_time_seconds_sum{engine="0"} 0.5
vllm:request_queue_time_seconds_count{engine="0"} 5.0
vllm:num_requests_running{engine="0"} 3.0
"""


def test_histograms_summed_over_engines_buckets_and_other_metrics_ignored():
    totals = histogram_totals(BODY)
    assert totals == {"vllm:time_to_first_token_seconds": [3.0, 5.0], "vllm:request_queue_time_seconds": [0.5, 5.0]}


def _snapshot(hist: dict, api: float, engine: float) -> dict:
    return {"histograms": hist, "api_server_cpu_s": api, "engine_cpu_s": engine}


def test_record_splits_the_client_ttft_into_engine_time_and_the_api_path():
    frame = pd.DataFrame({"arrival_s": [0.0, 1.0, 2.0], "first_token_s": [0.5, 1.7, np.nan],
                          "finish_s": [1.0, 2.5, np.nan], "output_tokens": [10, 30, 0]})
    before = _snapshot({"vllm:time_to_first_token_seconds": [1.0, 2.0],
                        "vllm:request_queue_time_seconds": [0.0, 2.0],
                        "vllm:request_prefill_time_seconds": [0.0, 2.0]}, 10.0, 100.0)
    after = _snapshot({"vllm:time_to_first_token_seconds": [1.8, 4.0],  # two more: mean 0.4 s
                       "vllm:request_queue_time_seconds": [0.1, 4.0],  # mean 0.05
                       "vllm:request_prefill_time_seconds": [0.5, 4.0]}, 10.3, 101.0)  # mean 0.25
    rec = server_side_record(before, after, frame)
    assert rec["requests"] == 2 and rec["output_tokens"] == 40  # the failed request is not counted
    assert rec["client_ttft_mean_s"] == pytest.approx(0.6)
    assert rec["http_outside_vllm_s"] == pytest.approx(0.2)
    assert rec["front_end_delay_s"] == pytest.approx(0.3)
    assert rec["api_server_cpu_ms_per_request"] == pytest.approx(150.0)
    assert rec["engine_cpu_s"] == pytest.approx(1.0)
    assert math.isnan(rec["vllm_means_s"]["inter_token_latency"])  # not exported: NaN, not 0


def _records(loads):
    # API CPU = 8 ms x requests + 0.5 ms x tokens
    return [{"requests": n, "output_tokens": t, "api_server_cpu_s": 0.008 * n + 0.0005 * t, "front_end_delay_s": d}
            for n, t, d in loads]


def test_occupancy_fit_recovers_per_request_and_per_token_cpu():
    loads = _records([(12, 384, 0.120), (20, 640, 0.130), (30, 960, 0.150)])
    probes = _records([(8, 16, 0.018), (8, 16, 0.022)])  # idle: the delay of the path itself, 20 ms
    fit = occupancy_fit(loads, probes)
    assert fit["api_cpu_ms_per_request"] == pytest.approx(8.0)
    assert fit["api_cpu_ms_per_output_token"] == pytest.approx(0.5)
    assert fit["idle_front_end_delay_ms"] == pytest.approx(20.0)  # the loads' delays (waiting on steps) not used
    assert fit["occupancy_fraction"] == pytest.approx(0.4)
    assert math.isnan(occupancy_fit(loads, [])["occupancy_fraction"])
    assert occupancy_fit(loads[:1], []) == {}


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")
def test_process_cpu_counts_the_root_and_its_descendants_apart():
    burner = ("import sys, time\n"
              "while time.process_time() < 0.3: pass\n"
              "print('spent', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", burner], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "spent"
        mine = process_cpu(os.getpid())
        assert mine["engine_cpu_s"] >= 0.25  # the child's own CPU time
        assert mine["api_server_cpu_s"] == pytest.approx(sum(os.times()[:2]), abs=0.1)
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert math.isnan(process_cpu(None)["api_server_cpu_s"])


def test_idle_probe_sends_its_requests_one_at_a_time():
    from real.engine.loadgen import RandomTokens
    from real.engine.server_side import idle_probe
    from tests.real.fake_engine import FakeEngine

    with FakeEngine(step_s=0.005) as engine:
        record = idle_probe(engine.base_url, "target", RandomTokens(1000), seed=0, server_pid=None, requests=5)
        assert engine.max_in_flight == 1
    assert record["requests"] == 5 and record["output_tokens"] == 10
    assert record["client_ttft_mean_s"] > 0
    assert math.isnan(record["front_end_delay_s"])  # the fake exports no latency histograms: NaN, not a number


def test_a_windows_closing_snapshot_reads_the_cpu_before_its_own_scrape(monkeypatch):
    """Rendering /metrics costs the API server CPU: the closing snapshot must read the CPU first, or every
    window counts one scrape (8 requests of an idle probe: ~1-2 ms each)."""
    from real.engine import server_side

    calls = []
    monkeypatch.setattr(server_side, "http_get", lambda url, timeout: calls.append("scrape") or (200, BODY))
    monkeypatch.setattr(server_side, "process_cpu", lambda pid: calls.append("cpu") or
                        {"api_server_cpu_s": 1.0, "engine_cpu_s": 2.0})
    server_side.server_snapshot("http://x", 1)
    assert calls == ["scrape", "cpu"]
    calls.clear()
    snap = server_side.server_snapshot("http://x", 1, cpu_first=True)
    assert calls == ["cpu", "scrape"] and snap["api_server_cpu_s"] == 1.0
