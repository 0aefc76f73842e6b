"""`vllm bench serve --request-rate R --max-concurrency C` in a synthetic workload (workload.max_concurrency beside a
poisson / gamma rate): the client's arrival clock ticks at rate R whatever the semaphore does, a request whose time
has come waits in the client for one of C slots, first come first served, and is timed (TTFT, E2E) from its send
(vllm/benchmarks/serve.py: get_request yields at its precomputed times, each request becomes a task that waits on
asyncio.Semaphore(C); RequestFuncOutput.start_time is taken in the request function, after the semaphore, and
client_queue_time = start_time - the arrival). Before, workload.max_concurrency was an unknown key."""
import numpy as np
import pandas as pd
import pytest

from lab.config_sim import SimSection
from sim.serving_metrics import per_request, throughput_tok_s
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim

RANDOM = {"source": "random", "prompt_tokens": 256, "output_tokens": 64, "range_ratio": 0.5}
FIXED = {"source": "fixed", "prompt_tokens": 256, "output_tokens": 64}
# bookkeeping of the simulation itself, not of what it simulated
NOT_RESULTS = {"wall_s", "events"}
SWEEP_POINT = {"axis", "value"}  # where a swept point sits, beside the same run given as one point


def run(workload: dict, lengths: dict = RANDOM, seed: int = 0):
    section = make_sim().model_dump()
    section["workload"] = {"lengths": lengths, **workload}  # no warmup_s / duration_s: as a user writes vLLM's flags
    section["sweep"] = {"axis": "none", "workers": 1}
    return simulate(prepare_inputs(SimSection.model_validate(section)), "ar", None, seed)


def same_results(a, b, ignore: set[str] = frozenset()) -> None:
    pd.testing.assert_frame_equal(a.requests, b.requests)
    keys = set(a.summary) - NOT_RESULTS - ignore
    assert keys == set(b.summary) - NOT_RESULTS - ignore
    for key in keys:
        x, y = a.summary[key], b.summary[key]
        assert x == y or (isinstance(x, float) and np.isnan(x) and np.isnan(y)), key


def peak_in_flight(log: pd.DataFrame) -> int:
    """The most requests between their send and their last token at any instant ([send, finish): one that ends
    as another is sent frees its slot first, as vLLM's semaphore is released before the next acquires it)."""
    events = sorted([(t, 1) for t in log["arrival_s"]] + [(t, -1) for t in log["finish_s"]])
    level = peak = 0
    for _, step in events:  # at equal times -1 sorts before +1
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("kind", [{"kind": "poisson"}, {"kind": "gamma", "cv": 2.0}])
def test_a_max_concurrency_never_reached_is_plain_poisson_at_the_same_seed(kind):
    """C larger than the requests: every request, every metric as without the limit (the same arrival draws, the
    same lengths), and nobody waits in the client."""
    workload = {**kind, "rate": 20.0, "max_requests": 60}
    for seed in (0, 3):
        plain = run(workload, seed=seed)
        limited = run({**workload, "max_concurrency": 1000}, seed=seed)
        same_results(plain, limited)
        assert (limited.requests["client_wait_s"] == 0).all()


def test_rate_inf_is_the_closed_loop_of_its_max_concurrency():
    """--request-rate inf --max-concurrency C: every request created at once, C of them in flight -- the closed loop
    of C users, request for request; without --max-concurrency, all of them at once (the closed loop of N)."""
    for limit, users in ((4, 4), (None, 30)):
        workload = {"kind": "poisson", "rate": "inf", "max_requests": 30}
        if limit:
            workload["max_concurrency"] = limit
        closed = run({"kind": "closed_loop", "concurrency": users, "max_requests": 30})
        same_results(run(workload), closed)
        same_results(run({**workload, "kind": "gamma"}), closed)  # --burstiness has no effect at rate inf
        assert peak_in_flight(closed.requests) == users
    # as vLLM's client: every request's task is created at 0, so its client wait is its send time
    log = closed.requests
    assert np.allclose(log["client_wait_s"], log["arrival_s"])


def test_a_finite_rate_far_above_the_server_is_the_closed_loop_of_its_slots():
    """At 10^4 requests/s every request has arrived before the first finishes: past the first C, each is sent the
    instant an earlier one finishes, as C closed-loop users send theirs, and the run's numbers are the closed
    loop's (to a few percent: the first C arrive a fraction of a millisecond apart, and the engine starts on the first alone)."""
    workload = {"kind": "poisson", "rate": 1e4, "max_requests": 40, "max_concurrency": 4}
    limited = run(workload, lengths=FIXED)
    closed = run({"kind": "closed_loop", "concurrency": 4, "max_requests": 40}, lengths=FIXED)
    log = limited.requests
    finishes = set(log["finish_s"].tolist())
    assert all(t in finishes for t in log["arrival_s"].iloc[4:])  # sent when a slot frees, not before
    assert (log["client_wait_s"].iloc[4:] > 0.01).all()
    for key in ("throughput_tok_s", "tpot_ms_mean", "e2e_s_mean", "sim_time_s"):
        assert limited.summary[key] == pytest.approx(closed.summary[key], rel=0.05), key


@pytest.mark.parametrize("limit", [1, 3])
def test_a_small_max_concurrency_caps_the_requests_in_flight_at_every_instant(limit):
    """At 20 req/s the server holds ~8 requests at once without a limit; with C = 1 or 3 never more than C, every
    request still sent and finished (a bounded run: --num-prompts), first come first served."""
    workload = {"kind": "poisson", "rate": 20.0, "max_requests": 60}
    plain = run(workload).requests
    assert peak_in_flight(plain) > 3  # the limit binds
    res = run({**workload, "max_concurrency": limit})
    log = res.requests
    assert len(log) == 60 and log["finish_s"].notna().all() and res.summary["finished"] == 60
    assert peak_in_flight(log) == limit
    offered = (log["arrival_s"] - log["client_wait_s"]).to_numpy()
    assert np.all(np.diff(offered) >= 0) and np.all(np.diff(log["arrival_s"].to_numpy()) >= 0)  # FCFS
    per = per_request(log)  # the run measured whole, as vLLM: first send to last finish
    assert res.summary["throughput_tok_s"] == pytest.approx(throughput_tok_s(per), rel=1e-12)
    assert res.summary["sim_time_s"] == pytest.approx(log["finish_s"].max())


def test_ttft_excludes_the_client_wait():
    """The arrival clock ticks at the plain run's times; the request is sent (arrival_s) when it holds a slot, and
    TTFT / E2E run from that send, not from its tick -- the time before it is client_wait_s (vLLM's queue_times)."""
    workload = {"kind": "poisson", "rate": 20.0, "max_requests": 60}
    plain = run(workload)
    res = run({**workload, "max_concurrency": 2})
    log = res.requests
    ticks = log["arrival_s"] - log["client_wait_s"]
    np.testing.assert_allclose(ticks, plain.requests["arrival_s"], rtol=0, atol=1e-9)
    waited = log["client_wait_s"] > 0
    assert waited.sum() > 30
    ttft = log["first_token_s"] - log["arrival_s"]
    assert res.summary["ttft_s_mean"] == pytest.approx(ttft.mean(), rel=1e-12)
    from_tick = (log["first_token_s"] - ticks).mean()
    assert from_tick > 5 * res.summary["ttft_s_mean"]  # the client's queue is long; TTFT does not see it
    e2e = log["finish_s"] - log["arrival_s"]
    assert res.summary["e2e_s_mean"] == pytest.approx(e2e.mean(), rel=1e-12)


def test_a_steady_state_window_sends_nothing_after_it():
    """Without --num-prompts (a steady-state window), requests still waiting for a slot when the window ends are
    not sent; those in flight finish (the drain), and no request is sent outside the arrivals' window."""
    res = run({"kind": "poisson", "rate": 40.0, "max_concurrency": 2, "duration_s": 6.0, "warmup_s": 1.0})
    log = res.requests
    assert log["arrival_s"].max() <= 6.0 and log["finish_s"].notna().all()
    assert peak_in_flight(log) == 2
    assert len(log) < 40 * 6 * 0.5  # far fewer than arrived: the rest waited in the client and were dropped


def sweep_section(workload: dict, sweep: dict) -> SimSection:
    section = make_sim().model_dump()
    section["workload"] = {"lengths": RANDOM, **workload}
    section["sweep"] = {"workers": 1, **sweep}
    return SimSection.model_validate(section)


def test_a_concurrency_sweep_at_a_finite_rate_varies_the_clients_limit():
    """`vllm bench serve --request-rate R --max-concurrency C` run at several C (vLLM takes the pair together: the
    rate initiates requests, the limit caps how many run): sweep.axis concurrency was refused ("needs workload.kind
    closed_loop"); each point is now the run with workload.max_concurrency = C, request for request."""
    workload = {"kind": "poisson", "rate": 20.0, "max_requests": 40, "max_concurrency": 64}
    sim = sweep_section(workload, {"axis": "concurrency", "values": [1, 3]})
    inputs = prepare_inputs(sim)
    for limit in (1, 3):
        swept = simulate(inputs, "ar", limit, 0)
        same_results(swept, run({**workload, "max_concurrency": limit}), ignore=SWEEP_POINT)
        assert peak_in_flight(swept.requests) == limit and swept.summary["axis"] == "concurrency"


def test_which_workloads_sweep_concurrency():
    # rate .inf: its users (--max-concurrency); given values and no axis, they are that, not a rate it cannot scale
    inf = sweep_section({"kind": "poisson", "rate": "inf", "max_requests": 30}, {"values": [2, 4]})
    assert inf.sweep.axis == "concurrency"
    same_results(simulate(prepare_inputs(inf), "ar", 4, 0),
                 run({"kind": "closed_loop", "concurrency": 4, "max_requests": 30}), ignore=SWEEP_POINT)
    # a finite rate with values and no axis stays a rate sweep: the values are multipliers of its rate
    assert sweep_section({"kind": "poisson", "rate": 2.0, "max_concurrency": 4}, {"values": [1, 2]}).sweep.axis == "rate"
    with pytest.raises(ValueError, match="no concurrency to vary in a poisson workload without "
                                         "workload.max_concurrency: .*sweep 'rate'"):
        sweep_section({"kind": "poisson", "rate": 2.0}, {"axis": "concurrency", "values": [1, 2]})
    with pytest.raises(ValueError, match="no concurrency to vary in a trace workload"):
        sweep_section({"kind": "trace", "trace_path": "t.csv"}, {"axis": "concurrency", "values": [1, 2]})


def test_summary_header_names_the_clients_limit():
    from sim.sweep import run_sweep, sla_table, summary_markdown

    def header(workload: dict, sweep: dict) -> str:
        sim = sweep_section({**workload, "lengths": FIXED}, sweep)
        res = run_sweep(prepare_inputs(sim), workers=1)
        return summary_markdown(res, sla_table(res, sim), sim, []).splitlines()[0]

    one = header({"kind": "poisson", "rate": 20.0, "max_requests": 12, "max_concurrency": 2}, {"axis": "none"})
    assert ("workload poisson at 20 req/s, at most 2 in flight (--max-concurrency 2), 12 requests (--num-prompts), "
            "one point (no sweep).") in one
    swept = header({"kind": "poisson", "rate": 20.0, "max_requests": 12, "max_concurrency": 2},
                   {"axis": "concurrency", "values": [1, 2]})
    assert "at most the swept concurrency in flight (--max-concurrency), 12 requests" in swept
    assert swept.endswith("sweep concurrency [1, 2].")
    assert "workload poisson at 20 req/s, 12 requests" in header({"kind": "poisson", "rate": 20.0, "max_requests": 12},
                                                                 {"axis": "none"})
