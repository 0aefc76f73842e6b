"""The API server with the requests' work shared among them (sim/frontend.SharedFrontend, `sim.frontend.intake:
shared`): processor-sharing arithmetic, output work first, and what it does to a burst (the engine sees the
requests together, late, and runs them in full steps) against one-after-another intake (fifo, the default).

    PYTHONPATH=. python -m pytest tests/sim/test_frontend_shared.py -q
"""
from __future__ import annotations

import pytest
import simpy

from lab.config_sim import FrontendSpec
from sim.frontend import SharedFrontend
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim

TOL = 1e-12  # seconds


def _server(request_ms, output_token_ms, latency_ms=0.0):
    env = simpy.Environment()
    handed = []
    fe = SharedFrontend(env, request_ms, output_token_ms, handoff=lambda rid: handed.append((env.now, rid)),
                        latency_ms=latency_ms)
    return env, fe, handed


def test_n_requests_at_once_reach_the_engine_together():
    env, fe, handed = _server(request_ms=10.0, output_token_ms=0.0, latency_ms=5.0)
    for rid in range(5):  # interleaved in pieces: all five end together after 5 x 10 ms (fifo: 10 ms apart)
        fe.admit(rid)
    assert fe.in_flight == 5
    env.run(until=1.0)
    assert [rid for _, rid in handed] == [0, 1, 2, 3, 4]
    assert [t for t, _ in handed] == pytest.approx([0.055] * 5, abs=TOL)
    assert fe.in_flight == 0 and fe.busy_s == pytest.approx(0.050, abs=TOL)
    fe.admit(9)  # alone, a request takes latency + request_ms, as under fifo
    env.run(until=2.0)
    assert handed[-1] == (pytest.approx(1.015, abs=TOL), 9)


def test_shared_work_is_processor_sharing():
    env, fe, handed = _server(request_ms=10.0, output_token_ms=0.0)
    fe.admit(0)
    env.run(until=0.005)
    fe.admit(1)  # request 0 has 5 ms left; two share the loop: it ends at 5 + 2 x 5 = 15 ms, request 1 at 20
    env.run(until=1.0)
    assert handed == [(pytest.approx(0.015, abs=TOL), 0), (pytest.approx(0.020, abs=TOL), 1)]


def test_output_work_goes_before_the_shared_work_and_delays_it():
    env, fe, handed = _server(request_ms=10.0, output_token_ms=1.0)
    fe.admit(0)
    fe.admit(1)
    env.run(until=0.004)
    # a step's 3 tokens: served at once (3 ms), not after the requests' 16 ms of work left
    assert fe.deliver(3) == pytest.approx(0.007, abs=TOL)
    assert fe.deliver(2) == pytest.approx(0.009, abs=TOL)  # output jobs among themselves: first come first served
    env.run(until=1.0)
    # the two requests' 20 ms of work end 5 ms of output later than they would have
    assert [t for t, _ in handed] == pytest.approx([0.025, 0.025], abs=TOL)
    assert fe.busy_s == pytest.approx(0.025, abs=TOL)


def test_intake_is_fifo_unless_said():
    assert FrontendSpec().intake == "fifo"
    assert FrontendSpec(request_ms=1.0, intake="shared").intake == "shared"
    assert not FrontendSpec(intake="shared").enabled  # no work and no delay: still no front end
    with pytest.raises(ValueError):
        FrontendSpec(intake="lifo")


def _burst(intake: str, n: int = 40, request_ms: float = 20.0):
    wl = {"kind": "closed_loop", "concurrency": n, "max_requests": n, "duration_s": 100, "warmup_s": 0,
          "lengths": {"prompt_tokens": 512, "output_tokens": 4}}
    res = simulate(prepare_inputs(make_sim(workload=wl, frontend={"request_ms": request_ms, "intake": intake})),
                   "ar")
    return res.requests, res.summary


def _ttft(log) -> float:
    return float((log["first_token_s"] - log["arrival_s"]).mean())


def _tpot(log) -> float:  # 4 tokens out: 3 gaps
    return float(((log["finish_s"] - log["first_token_s"]) / 3).mean())


def test_a_shared_burst_reaches_the_engine_late_and_together():
    n, request_ms = 40, 20.0
    backlog = n * request_ms / 1e3
    fifo, _ = _burst("fifo")
    shared, summary = _burst("shared")
    # fifo: the engine sees one request every 20 ms (the first token 20 ms + a prefill later); shared: none
    # before the whole backlog's work (800 ms), then all of them at once, in batched steps
    assert fifo["first_token_s"].min() < 0.1 * backlog
    assert shared["first_token_s"].min() > backlog
    assert _ttft(shared) > _ttft(fifo)
    assert _tpot(shared) > 2 * _tpot(fifo)  # steps that prefill many prompts beside the decodes are long
    assert summary["mean_decode_batch"] > 4  # the engine batched the burst (fifo: about one request at a time)
    # the same work either way
    assert summary["frontend_utilization"] * summary["sim_time_s"] == pytest.approx(backlog, rel=1e-9)
