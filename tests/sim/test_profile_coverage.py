"""sim/profile_coverage.py: the steps (and share of step time) a measured profile priced outside its grid."""
import math

import pandas as pd
import pytest

from sim.cost import CostModel
from sim.profile_coverage import WARN_SHARE, ProfileCoverage, coverage_summary, coverage_warning, pooled
from tests.sim.conftest import make_sim


def write_profile_grid(directory, batches, queries, contexts):
    from sim.step_profile import write_profile

    def ms(b, q, c):
        return 5.0 + 0.1 * b * q + 0.001 * b * c

    rows = [{"batch": b, "query_tokens": q, "context_len": c, "step_ms": ms(b, q, c), "step_ms_p90": ms(b, q, c),
             "repeats": 3} for b in batches for q in queries for c in contexts]
    meta = {"source": "lab", "model": "llama-2-7b", "dtype": "bf16", "device": "cuda", "hardware": "rtx-4090",
            "cpu_capability": None, "threads": None, "versions": {}, "created": "2026-11-29T00:00:00"}
    write_profile(directory, rows, meta)
    return directory


def test_steps_are_counted_per_axis_below_and_above_with_their_time():
    cov = ProfileCoverage(([2, 8], [1, 64], [0, 1024]))
    cov.add(4, 1, 100, 0.01)  # inside
    cov.add(2, 64, 1024, 0.01)  # on the grid's edges: inside
    cov.add(1, 1, 100, 0.02)  # batch below (clamped)
    cov.add(4, 128, 0, 0.03)  # query above (extrapolated)
    cov.add(16, 100, 2000, 0.04)  # three axes above, one step
    out = coverage_summary([cov], busy_s=0.11)
    assert out["profile_outside_steps"] == 3 and out["profile_outside_share"] == pytest.approx(0.09 / 0.11)
    assert (out["profile_batch_below_steps"], out["profile_batch_above_steps"]) == (1, 1)
    assert out["profile_batch_below_share"] == pytest.approx(0.02 / 0.11)
    assert out["profile_query_tokens_above_steps"] == 2
    assert out["profile_query_tokens_above_share"] == pytest.approx(0.07 / 0.11)
    assert out["profile_query_tokens_above_max"] == 128 and out["profile_context_len_above_max"] == 2000
    assert out["profile_context_len_below_steps"] == 0 and math.isnan(coverage_summary([ProfileCoverage(
        ([1], [1], [0]))], 1.0)["profile_batch_above_max"])


def test_profile_point_is_where_step_time_reads_the_profile(tmp_path):
    """CostModel.profile_point (what the coverage checks) and step_time read the profile at the same point."""
    cm = CostModel.from_config(make_sim(hardware={"preset": "rtx-4090"},
                                        cost={"profile": str(write_profile_grid(tmp_path, (1, 8), (1, 8), (0, 1024)))}))
    for tokens, kv_sum, n_reqs, drafts in [(1, 101, 1, 0), (300, 300, 1, 0), (40, 4000, 8, 0), (20, 900, 4, 16),
                                           (130, 2000, 3, 0)]:
        point = cm.profile_point(tokens, kv_sum, n_reqs, drafts)
        assert cm.step_time(tokens, kv_sum, n_reqs, False, drafts) == cm.profile.step_ms(*point) * 1e-3
    assert cm.profile_point(300, 300, 1) == (1, 300.0, 0.0)  # a fresh 300-token prompt: context 0


def run_with_profile(tmp_path, grid, users=2):
    from sim.simulate import prepare_inputs, simulate

    sim = make_sim(hardware={"preset": "rtx-4090"}, cost={"profile": str(write_profile_grid(tmp_path, *grid))},
                   workload={"kind": "closed_loop", "concurrency": users, "duration_s": 4, "warmup_s": 0,
                             "lengths": {"source": "fixed", "prompt_tokens": 64, "output_tokens": 16}})
    inputs = prepare_inputs(sim)
    return simulate(inputs, "ar").summary, inputs.cost.profile.axes


def test_a_run_past_the_grid_counts_its_steps_and_warns(tmp_path):
    """One user's 64-token prompts (query 64) on a grid of query <= 8 and batches from 2: its prefills are
    extrapolated, and every step of its lone request (batch 1) clamped."""
    summary, axes = run_with_profile(tmp_path, ((2, 8), (1, 8), (0, 1024)), users=1)
    assert summary["steps"] > 100
    assert 0 < summary["profile_query_tokens_above_steps"] < summary["steps"]
    assert summary["profile_query_tokens_above_max"] == 64
    assert summary["profile_batch_below_steps"] == summary["steps"] == summary["profile_outside_steps"]
    assert summary["profile_outside_share"] == pytest.approx(1.0)
    assert 0 < summary["profile_query_tokens_above_share"] < 1
    assert summary["profile_context_len_above_steps"] == 0 and summary["profile_context_len_below_steps"] == 0
    line = coverage_warning(summary, axes)
    assert line.startswith("warning: ") and "query_tokens above 8 up to 64 (extrapolated)" in line
    assert "\n" not in line


def test_a_run_inside_the_grid_counts_nothing(tmp_path):
    summary, axes = run_with_profile(tmp_path, ((1, 8), (1, 64), (0, 1024)))
    assert summary["steps"] > 100 and summary["profile_outside_steps"] == 0
    assert summary["profile_outside_share"] == 0.0
    assert all(summary[f"profile_{a}_{s}_steps"] == 0 for a in ("batch", "query_tokens", "context_len")
               for s in ("below", "above"))
    assert coverage_warning(summary, axes) is None


def test_a_roofline_run_has_no_profile_keys():
    from sim.simulate import prepare_inputs, simulate

    summary = simulate(prepare_inputs(make_sim(workload={"kind": "closed_loop", "concurrency": 2, "duration_s": 2,
                                                         "warmup_s": 0})), "ar").summary
    assert not [k for k in summary if k.startswith("profile_")]


def test_sweep_summary_line_pools_points_and_warns_for_the_worst():
    from sim.stages import coverage_lines

    axes = ([1, 8], [1, 8], [0, 1024])
    base = {k: 0 for k in ("profile_outside_steps", "profile_outside_share")}
    for a in ("batch", "query_tokens", "context_len"):
        for s in ("below", "above"):
            base[f"profile_{a}_{s}_steps"], base[f"profile_{a}_{s}_share"] = 0, 0.0
        base[f"profile_{a}_above_max"] = float("nan")
    quiet = {**base, "policy": "ar", "value": 1.0, "seed": 0, "busy_time_s": 9.0, "steps": 900}
    loud = {**base, "policy": "ar", "value": 4.0, "seed": 0, "busy_time_s": 1.0, "steps": 100,
            "profile_outside_steps": 10, "profile_outside_share": 0.5, "profile_query_tokens_above_steps": 10,
            "profile_query_tokens_above_share": 0.5, "profile_query_tokens_above_max": 256.0}
    lines = coverage_lines(pd.DataFrame([quiet, loud]), axes)
    assert lines[0].startswith("Step profile coverage (all 2 points): 5.0% of step time (10 of 1,000 steps)")
    assert len(lines) == 2 and lines[1].startswith("warning: 50.0%") and lines[1].endswith("[worst point: ar at 4, seed 0]")
    assert pooled([quiet, loud])["profile_query_tokens_above_share"] == pytest.approx(0.05)
    assert coverage_lines(pd.DataFrame([quiet]), axes) == [
        "Step profile coverage (all 1 points): every step (900) priced inside the measured step profile."]
    at_goal = {**loud, "profile_outside_share": WARN_SHARE}  # the threshold is the lab's 5% fidelity goal
    assert coverage_warning(at_goal, axes) is not None
    assert coverage_warning({**at_goal, "profile_outside_share": 0.049}, axes) is None
