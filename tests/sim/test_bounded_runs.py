"""A bounded run (workload.max_requests: vLLM bench's --num-prompts) left at its defaults is measured as
`vllm bench serve` measures it: every request sent, none cut off by a steady-state window, throughput over the
whole run; and summary.md prints those numbers under vLLM's names."""
import numpy as np
import pandas as pd
import pytest

from lab.config_sim import SimSection
from sim.serving_metrics import per_request, throughput_tok_s
from sim.simulate import prepare_inputs, simulate
from sim.sweep import run_sweep, sla_table, summary_markdown
from tests.sim.conftest import make_sim

FIXED = {"source": "fixed", "prompt_tokens": 64, "output_tokens": 16}


def bounded(**workload) -> dict:
    """A workload section with no warmup_s / duration_s: what a user writes from vLLM bench's flags."""
    return {"lengths": FIXED, **workload}


def _sim(workload: dict, sweep: dict | None = None):
    section = make_sim().model_dump()
    section["workload"] = workload  # make_sim's base workload sets warmup_s / duration_s: these must not
    section["sweep"] = sweep or {"axis": "none", "workers": 1}
    return SimSection.model_validate(section)


def whole_run_checks(result, n: int) -> None:
    per = per_request(result.requests)
    assert len(result.requests) == n and result.summary["measured_requests"] == n
    assert result.summary["finished"] == n
    assert result.summary["throughput_tok_s"] == pytest.approx(throughput_tok_s(per), rel=1e-12)
    assert result.summary["tpot_ms_mean"] == pytest.approx(float(per["tpot_ms"].mean()), rel=1e-12)


def test_a_bounded_closed_loop_is_not_cut_at_600_s_nor_measured_after_30():
    """One user pausing 100 s between replies: 8 requests take ~700 s. Before: the loop stopped sending at the
    default 600 s (7 requests) and the first request, sent before the 30 s warm-up, was left out."""
    sim = _sim(bounded(kind="closed_loop", concurrency=1, max_requests=8, think_time_s=100.0))
    result = simulate(prepare_inputs(sim), "ar", None, 0)
    assert result.requests["arrival_s"].max() > 600
    whole_run_checks(result, 8)


def test_a_bounded_poisson_run_sends_every_request_and_is_measured_over_its_run():
    """20 requests at 0.02 req/s arrive over ~1000 s: before, arrivals stopped at 600 s and the throughput was the
    tokens of the [30, 600] s window over 570 s, not vLLM's output tokens over the benchmark's duration."""
    sim = _sim(bounded(kind="poisson", rate=0.02, max_requests=20))
    result = simulate(prepare_inputs(sim), "ar", None, 0)
    assert result.requests["arrival_s"].max() > 600
    whole_run_checks(result, 20)
    fast = simulate(prepare_inputs(_sim(bounded(kind="poisson", rate=50.0, max_requests=20))), "ar", None, 0)
    whole_run_checks(fast, 20)  # a burst at 50 req/s: its run is seconds long, the throughput over those seconds
    assert fast.summary["sim_time_s"] < 60


def test_a_rate_sweep_of_a_bounded_run_sends_every_request_at_every_point():
    sim = _sim(bounded(kind="poisson", rate=0.5, max_requests=30), sweep={"axis": "rate", "values": [0.01, 1.0],
                                                                          "workers": 1})
    inputs = prepare_inputs(sim)
    for value in (0.01, 1.0):  # 0.005 req/s: 30 requests over ~6000 s
        whole_run_checks(simulate(inputs, "ar", value, 0), 30)


def test_explicit_windows_are_kept():
    sim = _sim(bounded(kind="poisson", rate=1.0, max_requests=200, warmup_s=10.0, duration_s=60.0))
    result = simulate(prepare_inputs(sim), "ar", None, 0)
    assert result.requests["arrival_s"].max() <= 60.0
    assert result.summary["measured_requests"] < len(result.requests)  # the ones before 10 s left out


def test_summary_prints_the_numbers_vllm_bench_serve_prints():
    sim = _sim(bounded(kind="closed_loop", concurrency=4, max_requests=12))
    res = run_sweep(prepare_inputs(sim), workers=1)
    text = summary_markdown(res, sla_table(res, sim), sim, [])
    assert "As `vllm bench serve` prints them, over every request of the run" in text
    header = next(line for line in text.splitlines() if "Mean TPOT (ms)" in line)
    row = text.splitlines()[text.splitlines().index(header) + 2]
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    r = res.iloc[0]
    assert cells["Successful requests"] == "12"
    assert cells["Mean TPOT (ms)"] == f"{r.tpot_ms_mean:,.2f}"
    assert cells["Mean TTFT (ms)"] == f"{r.ttft_s_mean * 1e3:,.2f}"
    assert cells["Output token throughput (tok/s)"] == f"{r.throughput_tok_s:,.1f}"
    steady = make_sim(workload={"kind": "closed_loop", "concurrency": 2, "duration_s": 6, "warmup_s": 1,
                                "lengths": FIXED})
    res = run_sweep(prepare_inputs(steady), workers=1)
    text = summary_markdown(res, sla_table(res, steady), steady, [])
    assert "over the requests arriving in [1, 6] s (a steady-state window" in text
    assert not np.isnan(pd.to_numeric(res["tpot_ms_mean"]).iloc[0])


RANDOM = {"source": "random", "prompt_tokens": 500, "output_tokens": 100, "range_ratio": 0.5}  # 250-750 + 50-150


@pytest.mark.parametrize("workload", [
    bounded(kind="poisson", rate=5.0, max_requests=120, lengths=RANDOM),
    bounded(kind="closed_loop", concurrency=4, max_requests=120, lengths=RANDOM),
])
def test_requests_past_max_model_len_are_refused_counted_and_reported(workload):
    """vLLM's server refuses a request whose prompt + max_tokens pass max_model_len (an error per request): it was
    served whatever its length. Now it is never scheduled, left unfinished and counted (summary too_long,
    summary.md); a closed loop's user sends its next request, so the loop still sends every one of its 120."""
    section = _sim(workload).model_dump()
    section["engine"]["max_model_len"] = 700
    sim = SimSection.model_validate(section)
    result = simulate(prepare_inputs(sim), "ar", None, 0)
    frame = result.requests
    long = (frame["input_tokens"] + frame["output_tokens"] > 700).to_numpy()
    assert len(frame) == 120 and 0 < long.sum() < 120
    assert result.summary["too_long"] == long.sum()
    assert frame.loc[long, "finish_s"].isna().all() and (frame.loc[long, "replica"] == -1).all()
    assert np.isfinite(frame.loc[~long, "finish_s"]).all() and result.summary["finished"] == 120 - long.sum()
    res = run_sweep(prepare_inputs(sim), workers=1)
    text = summary_markdown(res, sla_table(res, sim), sim, [])
    assert (f"unfinished requests over all points: {long.sum()} ({long.sum()} of them refused as longer than "
            "max_model_len") in text


def test_requests_that_never_fit_the_kv_cache_keep_a_closed_loops_user_sending():
    """A request that can never fit in a replica's KV cache took its closed-loop user out of the loop for good:
    the loop stopped sending once every user had drawn one. vLLM's benchmark client answers an error reply with
    the user's next request; now every request of the 60 is sent, and the rejected ones are unfinished, counted
    (summary rejected) and named in summary.md."""
    section = _sim(bounded(kind="closed_loop", concurrency=2, max_requests=60, lengths=RANDOM)).model_dump()
    section["engine"].update(kv_policy="reserve", kv_capacity_tokens=700)
    sim = SimSection.model_validate(section)
    result = simulate(prepare_inputs(sim), "ar", None, 0)
    frame = result.requests
    never = (frame["input_tokens"] + frame["output_tokens"] > 700).to_numpy()
    assert len(frame) == 60 and 0 < never.sum() < 60
    assert result.summary["rejected"] == never.sum() and frame.loc[never, "finish_s"].isna().all()
    assert np.isfinite(frame.loc[~never, "finish_s"]).all() and result.summary["finished"] == 60 - never.sum()
    res = run_sweep(prepare_inputs(sim), workers=1)
    text = summary_markdown(res, sla_table(res, sim), sim, [])
    assert (f"unfinished requests over all points: {never.sum()} ({never.sum()} of them rejected as never fitting "
            "in a replica's KV cache)") in text
