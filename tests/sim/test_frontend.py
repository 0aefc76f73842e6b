"""vLLM's API server in front of the engine (sim/frontend.py, `sim.frontend`): the server's arithmetic, what it
adds to a request's TTFT / E2E, the request-rate ceiling of N requests at once, and default-off identity."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import simpy

from sim.frontend import Frontend
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim

TOL = 1e-12  # seconds: float sums of the same terms in another order


def test_the_server_serves_its_jobs_first_come_first_served():
    env = simpy.Environment()
    fe = Frontend(env, request_ms=10.0, output_token_ms=0.5)
    # five requests at once: the k-th (from 1) is done after k x 10 ms
    assert [fe.admit() for _ in range(5)] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05], abs=TOL)
    # a step's 4 tokens queue behind them: 2 ms of work from 50 ms
    assert fe.deliver(4) == pytest.approx(0.052, abs=TOL)
    env.run(until=1.0)  # idle: the next job starts when it arrives
    assert fe.admit() == pytest.approx(1.01, abs=TOL)
    assert fe.busy_s == pytest.approx(0.062, abs=TOL)
    quiet = Frontend(env, request_ms=3.0, output_token_ms=0.0)
    assert not quiet.streams and quiet.deliver(100) == env.now  # no per-token work: tokens are not held


def _one_request(**frontend):
    sim = make_sim(frontend=frontend,
                   workload={"kind": "closed_loop", "concurrency": 1, "max_requests": 1, "duration_s": 100,
                             "warmup_s": 0, "lengths": {"prompt_tokens": 200, "output_tokens": 20}})
    return simulate(prepare_inputs(sim), "ar").requests.iloc[0]


def test_one_request_waits_exactly_request_ms_and_each_token_output_token_ms():
    base = _one_request()
    fe = _one_request(request_ms=40.0)
    assert fe["arrival_s"] == base["arrival_s"] == 0.0
    # the engine sees it 40 ms later and then runs exactly the same steps
    assert fe["first_token_s"] - base["first_token_s"] == pytest.approx(0.040, abs=TOL)
    assert fe["finish_s"] - base["finish_s"] == pytest.approx(0.040, abs=TOL)
    both = _one_request(request_ms=40.0, output_token_ms=0.25)
    # alone, every step's one token is streamed 0.25 ms after the step ends (the server is idle by then):
    # TTFT and E2E grow by 40.25 ms, TPOT not at all
    assert both["first_token_s"] - base["first_token_s"] == pytest.approx(0.04025, abs=TOL)
    assert both["finish_s"] - base["finish_s"] == pytest.approx(0.04025, abs=TOL)


def test_n_requests_at_once_reach_the_engine_request_ms_apart():
    n, request_ms = 12, 50.0
    sim = make_sim(frontend={"request_ms": request_ms},
                   workload={"kind": "closed_loop", "concurrency": n, "max_requests": n, "duration_s": 100,
                             "warmup_s": 0, "lengths": {"prompt_tokens": 64, "output_tokens": 1}})
    res = simulate(prepare_inputs(sim), "ar")
    log = res.requests.sort_values("first_token_s")
    ttft = (log["first_token_s"] - log["arrival_s"]).to_numpy()
    assert (log["arrival_s"] == 0).all()
    # a 64-token prefill takes far less than 50 ms, so each request runs alone: the k-th waits k x 50 ms
    prefill = ttft[0] - request_ms / 1e3
    assert 0 < prefill < request_ms / 1e3
    assert ttft == pytest.approx(np.arange(1, n + 1) * request_ms / 1e3 + prefill, abs=1e-9)
    # the ceiling: no more than 1000 / request_ms requests a second, whatever the GPU could do
    rate = n / log["finish_s"].max()
    assert rate < 1000.0 / request_ms and rate == pytest.approx(n / (n * request_ms / 1e3 + prefill))
    assert res.summary["frontend_utilization"] == pytest.approx(n * request_ms / 1e3 / res.summary["sim_time_s"])


def test_streaming_work_slows_the_client_not_the_engine():
    lengths = {"prompt_tokens": 128, "output_tokens": 64}
    wl = {"kind": "closed_loop", "concurrency": 32, "max_requests": 32, "duration_s": 100, "warmup_s": 0,
          "lengths": lengths}
    off = simulate(prepare_inputs(make_sim(workload=wl)), "ar", keep_cluster=True)
    # 32 tokens a step at 1 ms each: more work than a step lasts, so the client falls behind the engine
    slow = simulate(prepare_inputs(make_sim(workload=wl, frontend={"output_token_ms": 1.0})), "ar",
                    keep_cluster=True)
    assert slow.summary["steps"] == off.summary["steps"]  # the engine ran the same steps
    assert slow.requests["finish_s"].max() > off.requests["finish_s"].max()
    tokens = 32 * 64
    assert slow.requests["finish_s"].max() >= tokens * 1e-3  # the server streamed every token, one at a time
    assert slow.summary["frontend_utilization"] > 0.9


def _digest(frame) -> str:
    cols = ["arrival_s", "input_tokens", "output_tokens", "first_token_s", "finish_s", "replica", "steps",
            "preemptions"]
    return hashlib.sha256(frame[cols].to_numpy(np.float64).tobytes()).hexdigest()[:16]


# simulations whose per-request logs were hashed on the code before the front end (commit ae683bd)
GOLDEN = {
    "closed-loop-spec": ({"policies": [{"kind": "ar"}, {"kind": "fixed_k", "k": 3}],
                          "workload": {"kind": "closed_loop", "concurrency": 8, "duration_s": 8, "warmup_s": 1}},
                         "fixed_k3", "149484fc15fae1a3"),
    "poisson-two-replicas-preempting": ({"replicas": 2, "router": "least_loaded",
                                         "engine": {"kv_capacity_tokens": 3000},
                                         "workload": {"kind": "poisson", "rate": 12, "duration_s": 6, "warmup_s": 1}},
                                        "ar", "45fda2ac1c746b98"),
    "disaggregated": ({"engine": {"disaggregated_prefill": True},
                       "workload": {"kind": "closed_loop", "concurrency": 4, "duration_s": 6, "warmup_s": 1}},
                      "ar", "78832a6ed1df23e0"),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_no_front_end_reproduces_the_simulator_before_it(name):
    sections, policy, digest = GOLDEN[name]
    for frontend in ({}, {"request_ms": 0, "output_token_ms": 0}):
        res = simulate(prepare_inputs(make_sim(**sections, frontend=frontend)), policy)
        assert _digest(res.requests) == digest
        assert "frontend_utilization" not in res.summary
