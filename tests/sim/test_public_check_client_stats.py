"""The rest of a vllm bench block as scored fields of sim.public_check (session 38, h120): P99 TPOT / TTFT, mean /
median / P99 ITL and peak output token throughput in a row's `reported:`, simulated as sim.client_cadence computes
them (only a row that reports one keeps the client's chunk times), scored and summarised beside the means; the
front ends' fit loss leaves them out; two rows' numbers checked by hand against their pages."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import sim.public_check as pc
from sim.client_cadence import client_stats
from tests.sim.test_public_check import _row

NEW_FIELDS = ("tpot_p99_ms", "ttft_p99_ms", "itl_mean_ms", "itl_median_ms", "itl_p99_ms",
              "peak_output_throughput_tok_s")


def test_reported_takes_the_rest_of_a_vllm_bench_block_and_checks_it():
    got = pc.Reported.model_validate({f: 1.0 + i for i, f in enumerate(NEW_FIELDS)})
    assert [getattr(got, f) for f in NEW_FIELDS] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert pc.Reported.model_validate({"itl_p99_ms": 40.98}).itl_p99_ms == 40.98  # one statistic is enough
    for field in NEW_FIELDS:
        with pytest.raises(ValidationError, match=field):
            pc.Reported.model_validate({"tpot_mean_ms": 7.0, field: 0.0})  # not a time or a rate
    with pytest.raises(ValidationError, match="max_output_tokens_per_s"):  # vLLM's JSON key: the file uses the column's
        pc.Reported.model_validate({"tpot_mean_ms": 7.0, "max_output_tokens_per_s": 540.0})
    assert [m[0] for m in pc.CLIENT_METRICS] == list(NEW_FIELDS)
    assert {m[0] for m in pc.METRICS} >= set(NEW_FIELDS) | {"tpot_median_ms", "ttft_median_ms"}


# three requests sent at 0, 0 and 0.5 s; the third never finishes (test_client_cadence's log)
LOG = pd.DataFrame({"arrival_s": [0.0, 0.0, 0.5], "first_token_s": [1.0, 1.5, 2.0], "finish_s": [3.0, 2.0, np.nan],
                    "output_tokens": [3, 2, 5], "input_tokens": [10, 10, 10]})
TOKEN_LOG = [(2.0, np.array([0, 1, 2])), (3.0, np.array([0, 2]))]
SUMMARY = {"requests": 3, "unfinished": 1, "preemptions": 0, "prefix_cache_hits": 0, "prefix_cache_queries": 0,
           "mean_decode_batch": 1.0}


def _fake_simulate(calls):
    def fake(*args, record_tokens=False, **kwargs):
        calls.append(record_tokens)
        return SimpleNamespace(requests=LOG, token_log=TOKEN_LOG if record_tokens else None, summary=SUMMARY)
    return fake


def test_a_reported_itl_is_scored_on_the_simulated_client_times(monkeypatch):
    calls = []
    monkeypatch.setattr(pc, "simulate", _fake_simulate(calls))
    row = _row(tpot_mean_ms=700.0, itl_mean_ms=800.0, itl_p99_ms=1000.0, peak_output_throughput_tok_s=4.0)
    row = row.model_copy(update={"after_fit": True})  # held out
    sim = pc.simulate_row(row)
    assert calls == [True]  # the row reports a client statistic: its run keeps the chunk times
    stats = client_stats(LOG, TOKEN_LOG)
    assert sim["itl_mean_ms"] == pytest.approx(2500 / 3)  # ITLs 1.0, 1.0 and 0.5 s (by hand)
    assert sim["peak_output_throughput_tok_s"] == stats["peak_output_tok_s"] == 2.0
    assert sim["tpot_p99_ms"] == pytest.approx(stats["tpot_p99_ms"])
    assert sim["tpot_mean_ms"] == pytest.approx(750.0)  # the means as before
    table = pc.error_table([row], [sim])
    assert table["rel_err_itl_mean_ms"].iloc[0] == pytest.approx(2500 / 3 / 800.0 - 1)
    assert table["rel_err_peak_output_throughput_tok_s"].iloc[0] == pytest.approx(-0.5)
    assert np.isnan(table["rel_err_itl_median_ms"].iloc[0])  # not reported: simulated, not scored
    shown = [m[0] for m in pc.shown_metrics(table)]
    assert {"itl_mean_ms", "itl_p99_ms", "peak_output_throughput_tok_s"} <= set(shown)
    assert "itl_median_ms" not in shown
    text = pc.markdown(table, pc.error_summary(table))
    assert "| itl_mean_ms (held-out) | 1 |" in text and "P99 ITL ms rep. / sim" in text
    # TPOT 750 / 700 ms (+7%), ITL 833 / 800 (+4%), P99 ITL 1000 / 1000, peak 2 / 4 chunks per s (-50%)
    assert "Held-out within 10%, per metric: TPOT 1 of 1, ITL 1 of 1, P99 ITL 1 of 1, peak out tok/s 0 of 1" in text


def test_a_row_without_client_statistics_runs_as_before(monkeypatch):
    calls = []
    monkeypatch.setattr(pc, "simulate", _fake_simulate(calls))
    sim = pc.simulate_row(_row(tpot_mean_ms=700.0, tpot_median_ms=600.0))
    assert calls == [False]  # no chunk times kept: the public check's runtime stays where it was
    assert all(np.isnan(sim[f]) for f in NEW_FIELDS)
    assert sim["tpot_median_ms"] == pytest.approx(750.0)


def test_the_front_end_fit_loss_leaves_the_client_statistics_out():
    table = pd.DataFrame({f"rel_err_{col}": [np.nan] for col, _, _, _ in pc.METRICS})
    table["rel_err_tpot_mean_ms"] = [np.expm1(0.2)]
    base = pc.frontend_loss(table)
    table["rel_err_itl_p99_ms"] = [9.0]  # a P99 far off does not move the front ends' fit
    assert pc.frontend_loss(table) == pytest.approx(base) == pytest.approx(0.2)


@pytest.mark.parametrize("row_id, page", [
    # https://github.com/cloudrift-ai/deplodock/blob/421ffd6c16e15c3d0f3bcdfa99bacd1cfd8f0457/experiments/
    # Qwen3-Coder-30B-A3B-Instruct-AWQ/optimal_mcr_rtx5090/2026-03-03_02-07-22_417ad7f8/
    # rtx5090x1_mc8_np80_mcr8_vllm_benchmark.txt, its "Serving Benchmark Result" block
    ("deplodock-5090-qwen3-coder-30b-a3b-awq-4k-c8",
     {"tpot_mean_ms": 9.02, "tpot_median_ms": 8.97, "tpot_p99_ms": 9.71, "ttft_mean_ms": 753.15,
      "ttft_median_ms": 843.73, "ttft_p99_ms": 1487.00, "itl_mean_ms": 9.02, "itl_median_ms": 8.81,
      "itl_p99_ms": 10.83, "peak_output_throughput_tok_s": 1056.00, "output_throughput_tok_s": 869.30}),
    # https://github.com/IOG-Foundation/llm-inference-benchmarks/blob/1ffd7960d341d7ff15e962af098ca5b08d9f253e/results/
    # vllm_200prompts1qps_Meta-Llama-3-8B-Instruct_sharegpt_1xNVIDIA-GeForce-RTX-4090.json (keys rounded to 0.01 ms)
    ("iog-4090-llama-3-8b-sharegpt-rate-1",
     {"tpot_mean_ms": 19.51, "tpot_median_ms": 19.45, "tpot_p99_ms": 22.66, "ttft_mean_ms": 49.16,
      "ttft_median_ms": 43.50, "ttft_p99_ms": 110.69, "itl_mean_ms": 19.47, "itl_median_ms": 19.24,
      "itl_p99_ms": 24.14, "peak_output_throughput_tok_s": None}),
])
def test_rows_hold_what_their_pages_print(row_id, page):
    row = next(r for r in pc.load_rows(pc.DEFAULT_FILE) if r.id == row_id)
    assert {k: getattr(row.reported, k) for k in page} == page
    assert "session 38 (h120)" in row.note and "itl_p99_ms" in row.note


def test_the_file_has_rows_with_each_client_statistic():
    rows = pc.load_rows(pc.DEFAULT_FILE)
    for field in NEW_FIELDS:
        have = [r for r in rows if getattr(r.reported, field) is not None]
        assert len(have) >= 17, field  # at least the deplodock rows
        assert all("session 38" in (r.note or "") for r in have), field
