"""Acceptance sources: i.i.d. formula, curves, exact anchor replay, round replay, dataset mixing, calibration."""
import numpy as np
import pytest

from lab.errors import LabError
from lab.trace import read_traces
from sim.acceptance import (
    ParametricSource,
    TraceSource,
    apply_temperatures,
    expected_tokens_iid,
    rates_from_counters,
)
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim


@pytest.mark.parametrize("alpha,k", [(0.6, 1), (0.8, 3), (0.9, 7)])
def test_iid_tokens_per_step_formula(alpha, k):
    rng = np.random.default_rng(1)
    src = ParametricSource(7, alpha=alpha)
    n = 200_000
    conf, state, _ = src.draw(n, None, None, None, rng)
    acc = src.accept(state, np.full(n, k), rng)
    assert np.allclose(conf, alpha)
    expected = (1 - alpha ** (k + 1)) / (1 - alpha)
    assert expected == pytest.approx(expected_tokens_iid(alpha, k))
    se = np.sqrt(np.var(acc + 1) / n)
    assert abs((acc + 1).mean() - expected) < 5 * se


def test_curve_tokens_per_step():
    rng = np.random.default_rng(2)
    rates = [0.9, 0.8, 0.7, 0.6]
    src = ParametricSource(4, rates=rates)
    n = 200_000
    _, state, _ = src.draw(n, None, None, None, rng)
    acc = src.accept(state, np.full(n, 4), rng)
    expected = 1 + sum(np.prod(rates[: j + 1]) for j in range(4))
    assert abs((acc + 1).mean() - expected) < 0.01


def test_steps_without_a_draft_verify_nothing():
    """draft_probability p: a request-step has a draft with probability p, else its draft cap is 0 (an n-gram
    proposer that found no match); with p = 1 nothing caps."""
    rng = np.random.default_rng(5)
    src = ParametricSource(4, rates=[0.8, 0.7, 0.6, 0.5], draft_probability=0.7)
    n = 100_000
    _, state, kcap = src.draw(n, None, None, None, rng)
    assert set(np.unique(kcap)) == {0, 4} and abs((kcap == 4).mean() - 0.7) < 0.01
    acc = src.accept(state, np.minimum(4, kcap), rng)
    assert (acc[kcap == 0] == 0).all() and acc[kcap == 4].mean() == pytest.approx(0.8 + 0.8 * 0.7 + 0.8 * 0.7 * 0.6
                                                                                   + 0.8 * 0.7 * 0.6 * 0.5, abs=0.02)
    assert "drafts0.7" in src.label
    assert ParametricSource(4, rates=[0.8] * 4).draw(3, None, None, None, rng)[2] is None


def _engine_counters(rng, p, rates, outputs):
    """What vLLM's counters say for requests emitting `outputs` decode tokens each: a step drafts k tokens
    with probability p and emits 1 + accepted; the last step's surplus is dropped from the output but its
    accepted drafts are counted (vLLM counts before it trims to max_tokens)."""
    k = len(rates)
    drafts, per_pos = 0, np.zeros(k, np.int64)
    for m in outputs:
        left = m
        while left > 0:
            accepted = 0
            if rng.random() < p:
                drafts += 1
                accepted = int(np.cumprod(rng.random(k) < rates).sum())
                per_pos[:accepted] += 1
            left -= accepted + 1
    return drafts, per_pos


def test_rates_from_counters_recover_the_draft_share_and_the_conditional_rates():
    """An engine's counters (drafts, accepted per position; trimmed last steps) give back the draft share
    and the per-position rates given a draft. The old reading (steps = output - accepted - requests, every
    step a draft) overstates tokens per step: it counts the dropped surplus as emitted."""
    rng = np.random.default_rng(7)
    truth_p, truth = 0.7, [0.8, 0.85, 0.8, 0.85]
    outputs = [31] * 400
    drafts, per_pos = _engine_counters(rng, truth_p, truth, outputs)
    p, rates = rates_from_counters(4, per_pos.tolist(), drafts, outputs)
    assert p == pytest.approx(truth_p, abs=0.02)
    assert rates == pytest.approx(truth, abs=0.03)
    # the simulator with these numbers makes as many drafts as the engine did
    src = ParametricSource(4, rates=rates, draft_probability=p)
    sim_drafts = 0
    for m in outputs:
        left = m
        while left > 0:
            _, state, kcap = src.draw(1, None, None, None, rng)
            sim_drafts += int(kcap[0] > 0)
            left -= int(src.accept(state, np.minimum(4, kcap), rng)[0]) + 1
    assert sim_drafts == pytest.approx(drafts, rel=0.04)
    steps_old = sum(outputs) - int(per_pos.sum())
    steps_true = drafts / p
    assert steps_true > 1.04 * steps_old
    with pytest.raises(ValueError, match="not a speculative run"):
        rates_from_counters(4, [3, 5, 1, 0], 10, outputs)
    with pytest.raises(ValueError, match="not a speculative run"):
        rates_from_counters(4, [0, 0, 0, 0], 0, outputs)


def test_short_drafts_keep_the_counters_draft_tokens_and_accepted_per_position():
    """vLLM's n-gram proposer drafts fewer than k tokens where its match lies near the end of the context
    (3.8-3.96 tokens per draft at k = 4 here). With draft_tokens_mean the parametric source drafts that many
    on average, and rates_from_counters gives rates conditional on the position being drafted, so that the
    simulator's drafts, draft tokens and accepted tokens per position are the engine's counters."""
    rng = np.random.default_rng(11)
    k, truth_p, truth, mean = 4, 0.7, [0.8, 0.85, 0.8, 0.85], 3.9
    outputs = [31] * 400
    drafts = draft_tokens = 0
    per_pos = np.zeros(k, np.int64)
    for m in outputs:  # the engine: a draft of 3 or 4 tokens (mean 3.9); accepted within the draft
        left = m
        while left > 0:
            accepted = 0
            if rng.random() < truth_p:
                length = 3 + int(rng.random() < mean - 3)
                drafts += 1
                draft_tokens += length
                accepted = int(np.cumprod(rng.random(length) < truth[:length]).sum())
                per_pos[:accepted] += 1
            left -= accepted + 1
    p, rates = rates_from_counters(k, per_pos.tolist(), drafts, outputs, draft_tokens_mean=draft_tokens / drafts)
    assert p == pytest.approx(truth_p, abs=0.02) and rates == pytest.approx(truth, abs=0.04)
    src = ParametricSource(k, rates=rates, draft_probability=p, draft_tokens_mean=draft_tokens / drafts)
    assert ":len3.9" in src.label
    n = 200_000
    _, state, kcap = src.draw(n, None, None, None, rng)
    drafted = kcap > 0
    assert set(np.unique(kcap[drafted])) == {3, 4} and kcap[drafted].mean() == pytest.approx(mean, abs=0.01)
    acc = src.accept(state, np.minimum(k, kcap), rng)[drafted]
    survival = [(acc > j).mean() for j in range(k)]  # accepted per position per draft, as the counters
    assert survival == pytest.approx((per_pos / drafts).tolist(), abs=0.02)
    # without the length, the same counters read as k-token drafts accept as much, but verify more tokens
    _, full = rates_from_counters(k, per_pos.tolist(), drafts, outputs)
    assert full[-1] < rates[-1]
    with pytest.raises(ValueError, match="outside"):
        rates_from_counters(k, per_pos.tolist(), drafts, outputs, draft_tokens_mean=4.5)
    with pytest.raises(ValueError, match="reach"):
        rates_from_counters(k, [10, 9, 8, 7], 10, outputs, draft_tokens_mean=3.5)


def test_in_order_assignment_replays_prompt_i_for_request_i(trace_dir):
    """assign in_order: the i-th request replays the i-th recorded prompt (sorted by dataset, prompt_id),
    wrapping; random (the default) draws prompts by weight."""
    frame = read_traces(trace_dir)
    src = TraceSource.from_frame(frame, "dspark", 7)
    src.in_order = True
    rng = np.random.default_rng(0)
    n = len(src.starts)
    assert [src.new_request(rng)[0] for _ in range(n + 2)] == [*src.starts.tolist(), *src.starts[:2].tolist()]
    sim = make_sim(acceptance={"source": "traces", "paths": [str(trace_dir)], "method": "dspark",
                               "table": "rounds", "assign": "in_order"}, policies=[{"kind": "fixed_k", "k": 3}])
    from sim.simulate import build_source

    assert build_source(prepare_inputs(sim), sim.policies[0]).in_order
    random = TraceSource.from_frame(frame, "dspark", 7)
    assert len({random.new_request(rng)[0] for _ in range(200)}) > 1 and not random.in_order


def test_iid_through_the_simulator():
    sim = make_sim(acceptance={"source": "parametric", "parametric": {"kind": "iid", "alpha": 0.7}},
                   workload={"kind": "closed_loop", "concurrency": 8, "duration_s": 30, "warmup_s": 1,
                             "lengths": {"source": "fixed", "prompt_tokens": 16, "output_tokens": 4000}},
                   policies=[{"kind": "fixed_k", "k": 3}])
    s = simulate(prepare_inputs(sim), "fixed_k3", None, 0).summary
    assert s["tau"] == pytest.approx(expected_tokens_iid(0.7, 3), rel=0.02)
    assert s["draft_per_req_step"] == pytest.approx(3.0)
    assert s["verify_per_req_step"] == pytest.approx(4.0)


def test_anchor_replay_is_exact(trace_dir):
    frame = read_traces(trace_dir)
    src = TraceSource.from_frame(frame, "dspark", 7, weights={"gsm8k": 1.0})
    assert src.exact and "anchors" in src.label
    start, length = int(src.starts[0]), int(src.lengths[0])
    acc_t = src.accepted[start:start + length]
    for ell in (0, 1, 3, 7):
        # hand walk: at position t, verify length l accepts min(l, accepted(t)), moves by that + 1
        pos, walk = 0, []
        while pos < length:
            a = min(ell, acc_t[pos])
            walk.append(a)
            pos += a + 1
        got, pos = [], 0
        rng = np.random.default_rng(0)
        while pos < length:
            _, state, kcap = src.draw(1, np.array([start]), np.array([pos]), np.array([length]), rng)
            a = int(src.accept(state, np.minimum(np.array([ell]), kcap), rng)[0])
            got.append(a)
            pos += a + 1
        assert got == walk


def test_rounds_replay_greedy_truncates(trace_dir):
    frame = read_traces(trace_dir)
    src = TraceSource.from_frame(frame, "dspark", 7, table="rounds", weights={"gsm8k": 1.0})
    assert not src.exact and "approximate" in src.label
    rows = np.arange(10)
    acc = src.accept(rows, np.full(10, 2), None)
    assert np.array_equal(acc, np.minimum(2, src.accepted[rows]))


def test_rounds_replay_sampling_uses_accept_prob(tmp_path):
    from lab.trace import StepRecord, write_shard

    recs = [StepRecord("r", "dspark", "t", "d", f"p{i}", "rounds", 1.0, 0, 10, 3, 0, [0.5, 0.5, 0.5],
                       [0.5, 0.5, 0.5]) for i in range(4)]
    write_shard(recs, tmp_path / "r.parquet")
    src = TraceSource.from_frame(read_traces(tmp_path), None, 3)
    assert src.sampled
    rows = np.zeros(100_000, np.int64)
    acc = src.accept(rows, np.full(len(rows), 3), np.random.default_rng(0))
    assert abs((acc + 1).mean() - expected_tokens_iid(0.5, 3)) < 0.02


def test_dataset_weights_and_errors(trace_dir):
    frame = read_traces(trace_dir)
    src = TraceSource.from_frame(frame, "dspark", 7, weights={"gsm8k": 1.0, "mtbench": 0.0})
    rng = np.random.default_rng(0)
    gsm_starts = set(src.starts.tolist())
    assert all(src.new_request(rng)[0] in gsm_starts for _ in range(50))
    with pytest.raises(LabError, match="not in traces"):
        TraceSource.from_frame(frame, "eagle3", 7)
    with pytest.raises(LabError, match="several methods"):
        TraceSource.from_frame(frame.assign(method=frame["dataset"]), None, 7)
    with pytest.raises(LabError, match="none of"):
        TraceSource.from_frame(frame, "mtp", 7, weights={"mtbench": 1.0})
    with pytest.raises(LabError, match="nope"):
        TraceSource.from_frame(frame, "dspark", 7, weights={"nope": 1.0})


def test_apply_temperatures_is_order_preserving_and_identity_at_one():
    c = np.array([[0.9, 0.6, 0.0], [0.3, 0.99, 0.5]], np.float32)
    assert np.allclose(apply_temperatures(c, [1.0, 1.0, 1.0]), c, atol=1e-6)
    hot = apply_temperatures(c, [2.0, 2.0, 2.0])
    assert hot[0, 0] < 0.9 and hot[1, 0] > 0.3 and hot[0, 2] == 0.0


def test_trace_replay_through_the_simulator(trace_dir, tmp_path):
    sim = make_sim(acceptance={"source": "traces", "paths": [str(trace_dir)], "method": "dspark",
                               "datasets": {"gsm8k": 0.5, "mtbench": 0.5}},
                   workload={"kind": "closed_loop", "concurrency": 8, "duration_s": 20, "warmup_s": 1,
                             "lengths": {"source": "recorded", "prompt_tokens": 64}},
                   policies=[{"kind": "prefix"}, {"kind": "mtp", "method": "mtp"}])
    inputs = prepare_inputs(sim)
    a = simulate(inputs, "prefix", None, 0).summary
    b = simulate(inputs, "mtp1", None, 0).summary
    assert a["exact_replay"] and "anchors" in a["acceptance"]
    assert "mtp:rounds" in b["acceptance"]
    assert a["tau"] > b["tau"] > 1.0


def test_beta_outcomes_survive_a_refill_by_another_replica(monkeypatch):
    # replica A draws, replica B's draw refills the block, then A's step ends: A's outcomes must be those
    # of the draws its confidences came from (issue 9, bug 6)
    monkeypatch.setattr(ParametricSource, "BLOCK", 16)
    rng = np.random.default_rng(5)
    src = ParametricSource(7, alpha=0.8, concentration=3.0)
    for _ in range(20):
        _, state_a, _ = src.draw(10, None, None, None, rng)
        full = np.full(10, 7)
        before = src.accept(state_a, full, rng)
        src.draw(10, None, None, None, rng)  # replica B: 10 + 10 > 16 forces a refill
        after = src.accept(state_a, full, rng)
        np.testing.assert_array_equal(after, before)


def test_beta_outcomes_match_their_confidences_with_two_replicas(monkeypatch):
    """Through the cluster: every accept() equals the outcome fixed when its confidences were drawn."""
    monkeypatch.setattr(ParametricSource, "BLOCK", 24)
    draws, mismatches = [], []
    orig_draw, orig_accept = ParametricSource.draw, ParametricSource.accept

    def draw(self, n, *a):
        conf, state, kcap = orig_draw(self, n, *a)
        fixed = orig_accept(self, state, np.full(n, self.max_draft), None)  # flat path: no RNG used
        draws.append(id(state))
        state_outcomes[id(state)] = fixed
        return conf, state, kcap

    def accept(self, state, lengths, rng):
        out = orig_accept(self, state, lengths, rng)
        if not np.array_equal(out, np.minimum(state_outcomes[id(state)], lengths)):
            mismatches.append(id(state))
        return out

    state_outcomes = {}
    monkeypatch.setattr(ParametricSource, "draw", draw)
    monkeypatch.setattr(ParametricSource, "accept", accept)
    sim = make_sim(replicas=2,
                   acceptance={"source": "parametric", "parametric": {"kind": "iid", "alpha": 0.8,
                                                                      "concentration": 3}},
                   workload={"kind": "closed_loop", "concurrency": 12, "duration_s": 5, "warmup_s": 1,
                             "lengths": {"source": "fixed", "prompt_tokens": 32, "output_tokens": 200}},
                   policies=[{"kind": "prefix"}])
    simulate(prepare_inputs(sim), "prefix", None, 0)
    assert len(draws) > 100
    assert mismatches == []
