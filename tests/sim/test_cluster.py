"""Cluster invariants: determinism, accounting of every request, Little's law, admission, routing."""
import numpy as np
import pandas as pd
import pytest

from lab.config_sim import SimSection
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim


def _sim(**kw):
    base = {"replicas": 2,
            "acceptance": {"source": "parametric", "parametric": {"kind": "iid", "alpha": 0.75, "concentration": 3}},
            "workload": {"kind": "poisson", "rate": 20, "duration_s": 30, "warmup_s": 2,
                         "lengths": {"source": "fixed", "prompt_tokens": 200, "output_tokens": 120}},
            "policies": [{"kind": "prefix"}, {"kind": "fixed_k", "k": 2}]}
    base.update(kw)
    return make_sim(**base)


def test_same_seed_identical_different_seed_differs():
    inputs = prepare_inputs(_sim())
    a = simulate(inputs, "prefix", None, seed=3)
    b = simulate(inputs, "prefix", None, seed=3)
    c = simulate(inputs, "prefix", None, seed=4)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    drop = ["wall_s"]
    sa = {k: v for k, v in a.summary.items() if k not in drop}
    sb = {k: v for k, v in b.summary.items() if k not in drop}
    assert str(sa) == str(sb)
    assert not a.requests["finish_s"].equals(c.requests["finish_s"])


def test_every_request_finishes_or_is_reported_unfinished():
    # no drain and a load above capacity: some requests must be left unfinished, and say so
    sim = _sim(workload={"kind": "poisson", "rate": 400, "duration_s": 5, "warmup_s": 0.5, "drain": False,
                         "lengths": {"source": "fixed", "prompt_tokens": 200, "output_tokens": 300}})
    res = simulate(prepare_inputs(sim), "prefix", None, 0)
    f, s = res.requests, res.summary
    assert s["unfinished"] > 0
    assert s["finished"] + s["unfinished"] == s["requests"] == len(f)
    assert f.loc[f["finish_s"].notna(), "output_tokens"].gt(0).all()
    # with drain every request finishes, and the first token precedes the finish
    res = simulate(prepare_inputs(_sim()), "prefix", None, 0)
    f = res.requests
    assert res.summary["unfinished"] == 0
    assert (f["first_token_s"] >= f["arrival_s"]).all() and (f["finish_s"] >= f["first_token_s"]).all()


def test_kv_admission_rejects_requests_that_can_never_fit():
    sim = _sim(engine={"kv_policy": "reserve", "kv_capacity_tokens": 1000},
               workload={"kind": "poisson", "rate": 5, "duration_s": 10, "warmup_s": 1,
                         "lengths": {"source": "fixed", "prompt_tokens": 900, "output_tokens": 200}})
    res = simulate(prepare_inputs(sim), "prefix", None, 0)
    assert res.summary["rejected"] == res.summary["requests"] == res.summary["unfinished"] > 0


def test_kv_capacity_limits_concurrency():
    # room for exactly two requests per replica: never more than two in a batch
    sim = _sim(replicas=1, engine={"kv_policy": "reserve", "kv_capacity_tokens": 2 * 320},
               workload={"kind": "closed_loop", "concurrency": 8, "duration_s": 10, "warmup_s": 1,
                         "lengths": {"source": "fixed", "prompt_tokens": 200, "output_tokens": 120}})
    res = simulate(prepare_inputs(sim), "prefix", None, 0, keep_cluster=True)
    assert res.summary["mean_decode_batch"] <= 2.0 + 1e-9
    assert res.summary["finished"] > 0


def test_littles_law():
    sim = _sim(workload={"kind": "poisson", "rate": 30, "duration_s": 60, "warmup_s": 1, "drain": True,
                         "lengths": {"source": "fixed", "prompt_tokens": 300, "output_tokens": 100}})
    res = simulate(prepare_inputs(sim), "prefix", None, 0, keep_cluster=True)
    f = res.requests
    T = res.summary["sim_time_s"]
    L = res.cluster.time_average_in_system(T)  # the simulator's own occupancy counter, integrated over time
    lam = len(f) / T
    W = (f["finish_s"] - f["arrival_s"]).mean()
    assert L > 1.0
    assert L == pytest.approx(lam * W, rel=1e-6)


def test_routers_and_closed_loop_concurrency():
    for router in ("round_robin", "least_loaded"):
        sim = _sim(replicas=3, router=router,
                   workload={"kind": "closed_loop", "concurrency": 9, "duration_s": 20, "warmup_s": 2,
                             "lengths": {"source": "fixed", "prompt_tokens": 100, "output_tokens": 50}})
        res = simulate(prepare_inputs(sim), "prefix", None, 0, keep_cluster=True)
        counts = np.bincount(res.requests["replica"], minlength=3)
        assert counts.min() > 0.2 * counts.sum()
        # closed loop: never more than 9 requests in the system
        arr, fin = res.requests["arrival_s"].to_numpy(), res.requests["finish_s"].to_numpy()
        for t in np.linspace(1, 19, 25):
            assert ((arr <= t) & ~(fin <= t)).sum() <= 9


def test_speculation_beats_ar_at_low_load_and_budget_shrinks_with_load():
    rows = {}
    for users in (2, 64):
        sim = _sim(replicas=1, policies=[{"kind": "ar"}, {"kind": "prefix"}],
                   workload={"kind": "closed_loop", "concurrency": users, "duration_s": 20, "warmup_s": 2,
                             "lengths": {"source": "fixed", "prompt_tokens": 1000, "output_tokens": 200}})
        inputs = prepare_inputs(sim)
        rows[users] = {p: simulate(inputs, p, None, 0).summary for p in ("ar", "prefix")}
    assert rows[2]["prefix"]["tpot_ms_p50"] < 0.6 * rows[2]["ar"]["tpot_ms_p50"]
    assert rows[64]["prefix"]["verify_per_req_step"] < rows[2]["prefix"]["verify_per_req_step"]


def test_serving_metrics_by_hand():
    from sim.serving_metrics import summarize

    f = pd.DataFrame({"request_id": list("abcd"), "arrival_s": [0.0, 1.0, 2.0, 9.5],
                      "first_token_s": [0.5, 1.2, 2.1, np.nan], "finish_s": [1.5, 3.2, 2.1, np.nan],
                      "input_tokens": [10] * 4, "output_tokens": [11, 5, 1, 7],
                      "replica": [0] * 4, "steps": [0] * 4})
    s = summarize(f, (0.0, 10.0), n_gpus=2, tokens_in_window=100, ttft_cap_s=0.4, sla_tok_s_user=[1.0, 5.0, 50.0])
    # TPOT: (1.5 - 0.5) / 10 = 100 ms and (3.2 - 1.2) / 4 = 500 ms; one-token output has no TPOT
    assert s["tpot_ms_p50"] == pytest.approx(300.0)
    assert s["tok_s_user_mean"] == pytest.approx((10.0 + 2.0) / 2)
    assert s["ttft_s_p50"] == pytest.approx(0.2)
    assert s["throughput_per_gpu"] == pytest.approx(5.0)
    assert (s["finished"], s["unfinished"]) == (3, 1)
    assert s["goodput_req_s"] == pytest.approx(2 / 10)  # request 0 misses the 0.4 s TTFT cap
    assert s["goodput_req_s_at_1"] == pytest.approx(2 / 10)  # TPOT <= 1 s: requests 1 and 2
    assert s["goodput_req_s_at_5"] == pytest.approx(1 / 10)  # TPOT <= 200 ms: request 1 (500 ms) misses
    assert s["goodput_req_s_at_50"] == pytest.approx(1 / 10)  # TPOT <= 20 ms: only the one-token request


def test_disaggregated_prefill():
    sim = _sim(engine={"disaggregated_prefill": True},
               workload={"kind": "closed_loop", "concurrency": 6, "duration_s": 10, "warmup_s": 1,
                         "lengths": {"source": "fixed", "prompt_tokens": 2000, "output_tokens": 40}})
    res = simulate(prepare_inputs(sim), "prefix", None, 0, keep_cluster=True)
    f = res.requests
    assert res.summary["unfinished"] == 0 and len(f) > 20
    ttft = (f["first_token_s"] - f["arrival_s"]).to_numpy()
    # TTFT is one prefill pass of 2000 tokens, identical for every request (no prefill queueing)
    assert np.allclose(ttft, ttft[0]) and ttft[0] > 0
    # decode steps carry no prefill tokens: at most R * (1 + 7) tokens per step
    assert res.summary["mean_step_tokens"] <= 6 * 8


def test_workload_generators():
    from sim.workload import LengthSampler, open_loop_arrivals

    sim = _sim(workload={"kind": "gamma", "rate": 50, "cv": 3.0, "duration_s": 400, "warmup_s": 1})
    lengths = LengthSampler.from_spec(sim.workload.lengths, None)
    times, p, o = open_loop_arrivals(sim.workload, lengths, np.random.default_rng(0))
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.15)
    sim = _sim(workload={"kind": "poisson", "rate": 50, "duration_s": 400, "warmup_s": 1})
    gaps = np.diff(open_loop_arrivals(sim.workload, lengths, np.random.default_rng(0))[0])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert (p == 512).all() and (o == 256).all()  # LengthSpec defaults


def bounded_sim(rate: float, n: int):
    """A bounded Poisson run: n requests at `rate`, no duration_s (its window 3 n / rate + 60 s)."""
    section = _sim().model_dump()
    section["workload"] = {"kind": "poisson", "rate": rate, "max_requests": n}
    return SimSection.model_validate(section)


def _arrivals_as_before(rate: float, n: int, seed: int):
    """A bounded Poisson run's arrivals as open_loop_arrivals drew them before the shortcut (every gap of the
    3n / rate + 60 s window), and the generator after them."""
    rng = np.random.default_rng(seed)
    duration = 3.0 * n / rate + 60.0
    mean = rate * duration
    times = np.cumsum(rng.exponential(1.0 / rate, size=int(mean * 1.5 + 10 * np.sqrt(mean) + 20)))
    return times[times <= duration][:n], rng


@pytest.mark.parametrize("rate, n", [(10.0, 200), (1000.0, 50), (2e4, 100)])
def test_a_bounded_run_draws_the_arrivals_it_drew_before(rate, n):
    """Same seed, same arrivals. Below the shortcut (10 and 1,000 req/s) the generator is left where it was too,
    so the acceptance draws after the arrivals are unchanged; at 2 x 10^4 req/s (1.8 M gaps drawn for 100
    requests) only the 100 are drawn now."""
    from sim.simulate import bounded_arrival_horizon
    from sim.workload import LengthSampler, open_loop_arrivals

    wl = bounded_sim(rate, n).workload
    lengths = LengthSampler.from_spec(wl.lengths, None, rng=np.random.default_rng(9))
    rng = np.random.default_rng(3)
    times = open_loop_arrivals(bounded_arrival_horizon(wl, None), lengths, rng)[0]
    before, rng_before = _arrivals_as_before(rate, n, 3)
    assert len(times) == n and np.array_equal(times, before)
    if rate < 2e4:
        assert rng.random() == rng_before.random()


def test_a_bounded_run_at_an_absurd_rate_draws_only_its_requests():
    """1,000 requests at 10^9 req/s asked for 9 x 10^10 gaps (3 x 1,000 / rate + 60 s of them): refused as more
    than a point draws; now the 1,000 first, the same gaps a generator of that seed draws first."""
    from sim.simulate import bounded_arrival_horizon, prepare_inputs
    from sim.workload import LengthSampler, arrival_draws, open_loop_arrivals

    sim = bounded_sim(1e9, 1000)
    prepare_inputs(sim)  # lab validate's check: no LabError
    lengths = LengthSampler.from_spec(sim.workload.lengths, None, rng=np.random.default_rng(9))
    spec = bounded_arrival_horizon(sim.workload, None)
    # the gaps drawn (not a wall-clock bound, which a loaded machine can break): its 1,000, not ~10^11
    assert arrival_draws(spec.rate, spec.duration, spec.max_requests) == 1000
    times = open_loop_arrivals(spec, lengths, np.random.default_rng(4))[0]
    assert np.array_equal(times, np.cumsum(np.random.default_rng(4).exponential(1e-9, size=1000)))


def test_a_step_tells_the_cost_model_how_many_draft_tokens_it_verifies(monkeypatch):
    """The replica passes each step's verified drafts to cost.step_time (a measured profile reads them as
    decoding requests' tokens); steps without a draft (draft_probability < 1) verify none."""
    from sim.cost import CostModel

    seen = []
    original = CostModel.step_time

    def spy(self, tokens, kv_sum, n_reqs, spec, drafts=0, attn_ctx=None, **keywords):
        seen.append((tokens, n_reqs, drafts))
        return original(self, tokens, kv_sum, n_reqs, spec, drafts, attn_ctx, **keywords)
    monkeypatch.setattr(CostModel, "step_time", spy)
    sim = make_sim(acceptance={"source": "parametric", "max_draft": 3,
                               "parametric": {"kind": "iid", "alpha": 0.5, "draft_probability": 0.5}},
                   workload={"kind": "closed_loop", "concurrency": 1, "duration_s": 5, "warmup_s": 0,
                             "lengths": {"source": "fixed", "prompt_tokens": 16, "output_tokens": 400}},
                   policies=[{"kind": "fixed_k", "k": 3}])
    simulate(prepare_inputs(sim), "fixed_k3", None, 0)
    decode = [(t, d) for t, n, d in seen if n == 1 and t <= 4]  # one request decoding alone
    assert {d for _, d in decode} == {0, 3} and all(t == 1 + d for t, d in decode)
    assert 0.3 < np.mean([d == 3 for _, d in decode]) < 0.7


def _dp_ep(**engine):
    from tests.sim.test_hardware import DATA
    return make_sim(model={"name": None, "config": str(DATA / "qwen3_30b_a3b_config.json")},
                    hardware={"preset": "h100", "tp": 1, "ep": 2}, replicas=2, router="round_robin",
                    engine=engine, acceptance={"source": "parametric", "max_draft": 7},
                    workload={"kind": "poisson", "rate": 6, "duration_s": 20, "warmup_s": 1,
                              "lengths": {"source": "fixed", "prompt_tokens": 3000, "output_tokens": 200}})


def test_dp_ranks_of_an_expert_parallel_group_step_together():
    """vLLM DP + EP: a rank's decodes wait out the other rank's prefill chunks (each step lasts the group's
    longest), so TPOT is longer than with each replica stepping alone; every step of one rank ends when a step of
    the other does (one clock)."""
    together = simulate(prepare_inputs(_dp_ep()), "ar", None, seed=1)
    alone = simulate(prepare_inputs(_dp_ep(dp_lockstep=False)), "ar", None, seed=1)
    for res in (together, alone):
        assert res.summary["unfinished"] == 0
    f, g = together.requests, alone.requests

    def tpot(frame):
        return ((frame.finish_s - frame.first_token_s) / (frame.output_tokens - 1)).mean()
    assert tpot(f) > 1.05 * tpot(g)
    # one clock: both ranks' tokens come out at the group's step ends, so rank 0's finishes fall on times rank 1
    # also stepped at far more often than when each steps alone
    def shared(frame):
        a, b = (np.round(frame.loc[frame.replica == r, "finish_s"].to_numpy(), 9) for r in (0, 1))
        return len(set(a) & set(np.round(frame.loc[frame.replica == 1, "first_token_s"], 9)) | set(a) & set(b))
    assert f.replica.nunique() == 2 and shared(f) >= 5 and shared(g) == 0


def test_expert_parallel_groups_must_be_whole():
    with pytest.raises(Exception, match="multiple of ep / tp"):
        make_sim(hardware={"preset": "h100", "tp": 1, "ep": 2}, replicas=3)
    make_sim(hardware={"preset": "h100", "tp": 1, "ep": 2}, replicas=1)  # one rank simulated: allowed


def test_client_seed_sends_at_vllm_benchmark_clients_times_whatever_the_run_seed():
    """benchmark_serving.py (vLLM 0.4 - 0.9): np.random.seed(--seed) in main, then get_request yields a request and
    sleeps np.random.gamma(burstiness, 1 / (rate * burstiness)) -- the first at 0, numpy's legacy generator's draws
    in order (its gamma of shape 1 is its exponential, vLLM 0.4's np.random.exponential(1 / rate)). The run's seed
    still draws everything else, and without client_seed the arrivals are the run's own as before."""
    from sim.workload import LengthSampler, open_loop_arrivals, vllm_client_send_times

    np.random.seed(0)  # what vLLM's client does, with its global generator
    gaps = [np.random.gamma(1.0, 1.0 / 4.0) for _ in range(9)]
    want = np.concatenate([[0.0], np.cumsum(gaps)])
    assert vllm_client_send_times(10, 4.0, 1.0, 0) == pytest.approx(want, rel=1e-12)
    assert np.diff(want) == pytest.approx(np.random.RandomState(0).exponential(0.25, 9), rel=1e-12)
    np.random.seed(7)
    bursty = np.cumsum([np.random.gamma(0.25, 1.0 / (2.0 * 0.25)) for _ in range(4)])
    assert vllm_client_send_times(5, 2.0, 0.25, 7)[1:] == pytest.approx(bursty, rel=1e-12)

    spec = {"kind": "poisson", "rate": 4.0, "duration_s": 500, "warmup_s": 0, "max_requests": 10}
    sim = _sim(workload={**spec, "client_seed": 0})
    lengths = LengthSampler.from_spec(sim.workload.lengths, None)
    a = open_loop_arrivals(sim.workload, lengths, np.random.default_rng(1))[0]
    b = open_loop_arrivals(sim.workload, lengths, np.random.default_rng(2))[0]
    assert a == pytest.approx(want, rel=1e-12) and b == pytest.approx(want, rel=1e-12)
    own = _sim(workload=spec).workload
    c = open_loop_arrivals(own, lengths, np.random.default_rng(1))[0]
    assert c == pytest.approx(np.cumsum(np.random.default_rng(1).exponential(0.25, 10)))  # unchanged without it
    gamma = _sim(workload={**spec, "kind": "gamma", "cv": 2.0, "client_seed": 7}).workload
    assert open_loop_arrivals(gamma, lengths, np.random.default_rng(1))[0] == pytest.approx(
        vllm_client_send_times(10, 4.0, 0.25, 7), rel=1e-12)  # burstiness = 1 / cv^2
    first = simulate(prepare_inputs(sim), "prefix", None, seed=3).requests["arrival_s"].sort_values().to_numpy()
    assert first == pytest.approx(want, rel=1e-12)
