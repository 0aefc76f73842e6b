"""Simulated inter-token latencies by step kind (sim/itl_breakdown.py) and the step record behind them
(sim.simulate's record_steps, sim.cluster Replica.step_log)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.itl_breakdown import itl_stats, main, markdown
from sim.public_check import DEFAULT_FILE, load_rows, row_sim_config
from sim.simulate import prepare_inputs, simulate


def test_itl_stats_weight_each_step_by_its_decoding_requests():
    steps = [(0.030, 2, 0, 0),      # two decodes alone: two ITLs of 30 ms
             (0.500, 1, 1, 2047),   # one decode beside a 2,047-token chunk: one ITL of 500 ms
             (1.000, 0, 1, 8192),   # a prefill-only step: no ITL
             (0.040, 1, 0, 0)]      # one decode alone: 40 ms
    s = itl_stats(np.array(steps))
    assert (s["steps"], s["decode-only steps"], s["mixed steps"], s["prefill-only steps"]) == (4, 2, 1, 1)
    assert s["decode-only ms (median)"] == pytest.approx(35.0)
    assert s["mixed ms (median)"] == pytest.approx(500.0) and s["mixed chunk tokens (median)"] == 2047
    assert s["prefill-only s"] == pytest.approx(1.0) and s["run s"] == pytest.approx(1.57)
    assert s["ITL mean ms"] == pytest.approx((30 + 30 + 500 + 40) / 4)
    assert s["ITL median ms"] == pytest.approx(35.0)
    assert s["ITL P99 ms"] == pytest.approx(np.percentile([30, 30, 40, 500], 99))
    assert s["mixed share of ITLs"] == pytest.approx(0.25)
    empty = itl_stats(np.zeros((0, 4)))
    assert empty["steps"] == 0 and math.isnan(empty["ITL median ms"]) and math.isnan(empty["mixed share of ITLs"])
    assert "| x | 4 | 2 | 35.0 | 1 | 500.0 | 2,047 | 1 | 1 | 2 | 150.0 | 35.0 |" in markdown({"x": s})


def _row(row_id):
    return next(r for r in load_rows(DEFAULT_FILE) if r.id == row_id)


def test_the_step_record_holds_one_itl_per_generated_token_after_the_first_and_changes_nothing():
    row = _row("gpustack-h100-qwen3-8b-c1")  # one user: every decode step holds one request
    inputs = prepare_inputs(row_sim_config(row), seed=0)
    plain = simulate(inputs, "ar", seed=0)
    recorded = simulate(inputs, "ar", seed=0, keep_cluster=True, record_steps=True)
    assert plain.cluster is None and recorded.summary["steps"] == plain.summary["steps"]
    assert recorded.requests["finish_s"].equals(plain.requests["finish_s"])
    log = np.array(recorded.cluster.replicas[0].step_log)  # [steps, 4]
    assert len(log) == plain.summary["steps"]
    assert log[:, 0].sum() == pytest.approx(plain.summary["busy_time_s"])
    assert log[:, 1].sum() == (recorded.requests["output_tokens"] - 1).sum()
    s = itl_stats(log)
    assert s["mixed steps"] == 0 and s["prefill-only steps"] == len(recorded.requests)


def test_a_32k_prompt_on_one_h100_decodes_alone():
    # Qwen3-32B bf16 on one H100: the pool holds one 32K request, so no prefill chunk ever rides beside a decode (the
    # run's own P99 ITL, 46.54 ms against a 43.30 ms median, says the same; tests/sim/test_gpustack_32b_kv_window.py)
    from sim.itl_breakdown import row_steps
    s = itl_stats(row_steps(_row("gpustack-h100-qwen3-32b-32k-rate-inf")))
    assert s["mixed steps"] == 0 and s["decode-only steps"] > 0
    assert s["ITL P99 ms"] == pytest.approx(s["ITL median ms"], rel=0.01)


def test_an_unknown_row_is_one_error_line_and_exit_2(capsys):
    assert main(["no-such-row"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "no-such-row" in err
