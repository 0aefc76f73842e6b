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


def _server(request_ms, output_token_ms, latency_ms=0.0):
    """A Frontend on a fresh clock; `handed` collects (time, rid) as requests reach the engine."""
    env = simpy.Environment()
    handed = []
    fe = Frontend(env, request_ms, output_token_ms, handoff=lambda rid: handed.append((env.now, rid)),
                  latency_ms=latency_ms)
    return env, fe, handed


def test_requests_alone_are_served_first_come_first_served():
    env, fe, handed = _server(request_ms=10.0, output_token_ms=0.5)
    for rid in range(5):  # five requests at once: the k-th (from 1) reaches the engine after k x 10 ms
        fe.admit(rid)
    assert fe.in_flight == 5
    env.run(until=0.5)
    assert [rid for _, rid in handed] == [0, 1, 2, 3, 4]
    assert [t for t, _ in handed] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05], abs=TOL)
    assert fe.in_flight == 0
    assert fe.deliver(4) == pytest.approx(0.502, abs=TOL)  # idle: a step's 4 tokens take 2 ms from now
    env.run(until=1.0)
    fe.admit(5)  # idle again: the next request starts when it arrives
    env.run(until=2.0)
    assert handed[-1] == (pytest.approx(1.01, abs=TOL), 5)
    assert fe.busy_s == pytest.approx(0.062, abs=TOL)
    quiet = Frontend(env, request_ms=3.0, output_token_ms=0.0)
    assert not quiet.streams and quiet.deliver(100) == env.now  # no per-token work: tokens are not held
    at_once = []
    free = Frontend(env, request_ms=0.0, output_token_ms=1.0, handoff=at_once.append)
    free.deliver(1000)  # a second of output work ...
    free.admit(7)  # ... and a request with no work of its own: the engine sees it at once
    assert at_once == [7] and free.in_flight == 0


def test_latency_delays_every_request_without_occupying_the_server():
    env, fe, handed = _server(request_ms=10.0, output_token_ms=0.0, latency_ms=30.0)
    fe.admit(0)  # an idle front end: the engine sees it after latency + request work
    assert fe.in_flight == 1  # in the delay, it counts (a least_loaded router reads in_flight)
    env.run(until=1.0)
    assert handed == [(pytest.approx(0.040, abs=TOL), 0)] and fe.in_flight == 0
    for rid in range(1, 6):  # five at once: all in the delay together, then served 10 ms apart
        fe.admit(rid)
    assert fe.in_flight == 5 and not fe.waiting  # none has reached the server yet
    env.run(until=1.035)
    assert fe.in_flight == 5 and len(fe.waiting) == 4  # 35 ms on: the first is in service, four queued
    env.run(until=2.0)
    # the k-th (from 1) after 30 + k x 10 ms, not k x (30 + 10): the delay is not the server's work
    assert [rid for _, rid in handed[1:]] == [1, 2, 3, 4, 5]
    assert [t for t, _ in handed[1:]] == pytest.approx([1.04, 1.05, 1.06, 1.07, 1.08], abs=TOL)
    assert fe.busy_s == pytest.approx(0.060, abs=TOL) and fe.in_flight == 0
    # with no work per request the delay alone: the engine sees each latency_ms after it arrives
    env, fe, handed = _server(request_ms=0.0, output_token_ms=0.0, latency_ms=25.0)
    for rid in range(3):
        fe.admit(rid)
    assert fe.in_flight == 3
    env.run(until=1.0)
    assert handed == [(pytest.approx(0.025, abs=TOL), rid) for rid in range(3)]
    assert fe.in_flight == 0 and fe.busy_s == 0


def test_streamed_tokens_wait_for_the_request_in_service_not_the_backlog():
    # 100 requests queued for admission (1 s of work), then a step's 8 tokens (4 ms) 25 ms in: the FIFO
    # server of c2922be held them until every queued request was done (1.004 s); now they wait for the
    # request in service (it ends at 30 ms) and their own work only
    env, fe, handed = _server(request_ms=10.0, output_token_ms=0.5)
    for rid in range(100):
        fe.admit(rid)
    env.run(until=0.025)
    assert fe.deliver(8) == pytest.approx(0.034, abs=TOL)
    # the next step's tokens, 5 ms later, find an output job last: the request handlers' turn comes first,
    # one queued request (34-44 ms), then these 4 tokens (2 ms)
    env.run(until=0.030)
    assert fe.deliver(4) == pytest.approx(0.046, abs=TOL)
    env.run(until=5.0)
    times = [t for t, _ in handed]
    assert [rid for _, rid in handed] == list(range(100))  # requests keep their order
    assert times[:3] == pytest.approx([0.010, 0.020, 0.030], abs=TOL)
    assert times[3] == pytest.approx(0.044, abs=TOL)  # its turn came between the two output jobs
    # the rest follow back to back: the backlog ends 6 ms (the two output jobs) later than without them
    assert times[-1] == pytest.approx(1.006, abs=TOL)
    assert fe.busy_s == pytest.approx(1.006, abs=TOL) and fe.in_flight == 0


def test_a_long_output_backlog_does_not_shut_admissions_out():
    # output jobs of 20 ms arriving every 10 ms: the server never falls free, yet one request is admitted
    # between each two of them (the loop takes the two kinds of work in turn)
    env, fe, handed = _server(request_ms=5.0, output_token_ms=1.0)
    ends = []
    for step in range(10):
        if step:
            env.run(until=step * 0.010 + 1e-9)
        if step == 1:
            for rid in range(3):
                fe.admit(rid)
        ends.append(fe.deliver(20))
    env.run(until=5.0)
    # outputs: 0-20 ms, then [request, output] x 3 (25 ms each), then back to back
    assert ends[:5] == pytest.approx([0.020, 0.045, 0.070, 0.095, 0.115], abs=1e-8)
    assert [t for t, _ in handed] == pytest.approx([0.025, 0.050, 0.075], abs=1e-8)


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


def test_one_request_waits_latency_ms_then_request_ms():
    base = _one_request()
    fe = _one_request(request_ms=10.0, latency_ms=30.0)
    assert fe["first_token_s"] - base["first_token_s"] == pytest.approx(0.040, abs=TOL)
    assert fe["finish_s"] - base["finish_s"] == pytest.approx(0.040, abs=TOL)
    alone = _one_request(latency_ms=30.0)  # a delay with no server work is a front end too
    assert alone["first_token_s"] - base["first_token_s"] == pytest.approx(0.030, abs=TOL)


@pytest.mark.parametrize("latency_ms", [0.0, 30.0])
def test_n_requests_at_once_reach_the_engine_request_ms_apart(latency_ms):
    n, request_ms = 12, 50.0
    sim = make_sim(frontend={"request_ms": request_ms, "latency_ms": latency_ms},
                   workload={"kind": "closed_loop", "concurrency": n, "max_requests": n, "duration_s": 100,
                             "warmup_s": 0, "lengths": {"prompt_tokens": 64, "output_tokens": 1}})
    res = simulate(prepare_inputs(sim), "ar")
    log = res.requests.sort_values("first_token_s")
    ttft = (log["first_token_s"] - log["arrival_s"]).to_numpy()
    assert (log["arrival_s"] == 0).all()
    # a 64-token prefill takes far less than 50 ms, so each request runs alone: the k-th waits the delay once
    # and k x 50 ms of work (not k x (delay + work): many requests are in the delay at once)
    lat = latency_ms / 1e3
    prefill = ttft[0] - lat - request_ms / 1e3
    assert 0 < prefill < request_ms / 1e3
    assert ttft == pytest.approx(lat + np.arange(1, n + 1) * request_ms / 1e3 + prefill, abs=1e-9)
    # the ceiling: no more than 1000 / request_ms requests a second, whatever the GPU could do; the delay
    # moves the whole burst later, it does not lower the rate
    rate = n / log["finish_s"].max()
    assert rate < 1000.0 / request_ms and rate == pytest.approx(n / (lat + n * request_ms / 1e3 + prefill))
    assert res.summary["frontend_utilization"] == pytest.approx(n * request_ms / 1e3 / res.summary["sim_time_s"])


def test_a_closed_loop_user_waits_the_delay_on_every_request():
    wl = {"kind": "closed_loop", "concurrency": 1, "max_requests": 5, "duration_s": 100, "warmup_s": 0,
          "lengths": {"prompt_tokens": 200, "output_tokens": 20}}
    base = simulate(prepare_inputs(make_sim(workload=wl)), "ar").requests
    log = simulate(prepare_inputs(make_sim(workload=wl, frontend={"request_ms": 5.0, "latency_ms": 20.0})),
                   "ar").requests
    assert len(log) == 5 and log["finish_s"].notna().all()
    # the user sends its next request when the last reply reaches it; each request waits 25 ms more than alone
    assert log["arrival_s"].iloc[1:].to_numpy() == pytest.approx(log["finish_s"].iloc[:-1].to_numpy(), abs=TOL)
    ttft = (log["first_token_s"] - log["arrival_s"]).to_numpy()
    assert ttft == pytest.approx((base["first_token_s"] - base["arrival_s"]).to_numpy() + 0.025, abs=1e-9)
    assert log["finish_s"].iloc[-1] == pytest.approx(base["finish_s"].iloc[-1] + 5 * 0.025, abs=1e-9)


def test_least_loaded_counts_requests_in_the_delay():
    # two users at once, two replicas, the delay alone: the second request must see the first in replica 0's
    # load (it is in the delay, not yet in any queue) and go to replica 1
    sim = make_sim(replicas=2, router="least_loaded", frontend={"latency_ms": 20.0},
                   workload={"kind": "closed_loop", "concurrency": 2, "max_requests": 2, "duration_s": 100,
                             "warmup_s": 0, "lengths": {"prompt_tokens": 64, "output_tokens": 4}})
    log = simulate(prepare_inputs(sim), "ar").requests
    assert sorted(log["replica"].tolist()) == [0, 1]


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


def test_a_burst_queued_for_admission_does_not_hold_the_first_requests_tokens():
    # 40 users at once, 20 ms of front-end work each: the last reaches the engine after 800 ms. The first,
    # admitted after 20 ms, streams its 20 tokens meanwhile; with one FIFO for all work (commit c2922be) its
    # every token waited for the whole backlog (first token after > 800 ms, finish later still)
    n, request_ms, out = 40, 20.0, 20
    wl = {"kind": "closed_loop", "concurrency": n, "max_requests": n, "duration_s": 100, "warmup_s": 0,
          "lengths": {"prompt_tokens": 64, "output_tokens": out}}
    res = simulate(prepare_inputs(make_sim(workload=wl, frontend={"request_ms": request_ms,
                                                                  "output_token_ms": 0.1})), "ar")
    first = res.requests.sort_values("first_token_s").iloc[0]
    quiet = simulate(prepare_inputs(make_sim(workload={**wl, "concurrency": 1, "max_requests": 1},
                                             frontend={"request_ms": request_ms})), "ar").requests.iloc[0]
    backlog = n * request_ms / 1e3
    # its first token waits for its own admission, the request in service when it is emitted and its own work
    prefill = quiet["first_token_s"] - request_ms / 1e3  # alone, without output work
    assert first["first_token_s"] <= 2 * request_ms / 1e3 + prefill + 1e-4 + TOL
    # and it finishes before the backlog is admitted: each step's tokens wait for at most the request in
    # service (20 ms) beside the engine's own step, not for the queue
    quiet_tpot = (quiet["finish_s"] - quiet["first_token_s"]) / (out - 1)
    tpot = (first["finish_s"] - first["first_token_s"]) / (out - 1)
    assert tpot <= request_ms / 1e3 + 2 * quiet_tpot
    assert first["finish_s"] < backlog
    assert res.requests["first_token_s"].max() > backlog  # the backlog itself is still served one by one


def _digest(frame) -> str:
    cols = ["arrival_s", "input_tokens", "output_tokens", "first_token_s", "finish_s", "replica", "steps",
            "preemptions"]
    return hashlib.sha256(frame[cols].to_numpy(np.float64).tobytes()).hexdigest()[:16]


# simulations whose per-request logs were hashed on the code before the front end (commit ae683bd); attention at
# the sheet's mfu as then (attn_mfu = mfu prices every step bit for bit as a sheet without it)
# and the host time in series with the GPU's (async scheduling off, the unnamed release's default then)
OLD_PRICING = {"hardware": {"name": "h100", "attn_mfu": 0.35}}
OLD_ENGINE = {"async_scheduling": False}
GOLDEN = {
    "closed-loop-spec": ({"policies": [{"kind": "ar"}, {"kind": "fixed_k", "k": 3}],
                          "workload": {"kind": "closed_loop", "concurrency": 8, "duration_s": 8, "warmup_s": 1}},
                         "fixed_k3", "149484fc15fae1a3"),
    "poisson-two-replicas-preempting": ({"replicas": 2, "router": "least_loaded",
                                         "engine": {"kv_capacity_tokens": 3000},
                                         "workload": {"kind": "poisson", "rate": 12, "duration_s": 6, "warmup_s": 1}},
                                        # re-hashed in session 31 (was 45fda2ac1c746b98): least_loaded breaks ties
                                        # in turn and weighs a queue under KV pressure, as vLLM's DP load balancer
                                        "ar", "0820851c777e18f9"),
    "disaggregated": ({"engine": {"disaggregated_prefill": True},
                       "workload": {"kind": "closed_loop", "concurrency": 4, "duration_s": 6, "warmup_s": 1}},
                      "ar", "78832a6ed1df23e0"),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_no_front_end_reproduces_the_simulator_before_it(name):
    sections, policy, digest = GOLDEN[name]
    sections = {**OLD_PRICING, **sections, "engine": {**OLD_ENGINE, **sections.get("engine", {})}}
    for frontend in ({}, {"request_ms": 0, "output_token_ms": 0, "latency_ms": 0}):
        res = simulate(prepare_inputs(make_sim(**sections, frontend=frontend)), policy)
        assert _digest(res.requests) == digest
        assert "frontend_utilization" not in res.summary
