"""The load generator, the /metrics scrape and the step profiler against an in-process fake engine (fast)."""
import asyncio
import itertools
import math
import time

import numpy as np
import pandas as pd
import pytest

from lab.config_engine import LoadSpec, StepProfileSpec
from lab.metrics import vllm_counters
from real.engine.loadgen import (
    LOG_COLUMNS,
    RandomTokens,
    TextTokens,
    chunk_frame,
    plan_requests,
    run_load,
    write_request_log,
)
from real.engine.metrics import counter_table, parse_prometheus, scrape_spec_counters, spec_counters
from tests.real.fake_engine import FakeEngine

TOKENS = RandomTokens(vocab_size=5000)


def test_poisson_load_logs_every_request_in_the_shared_format(tmp_path):
    load = LoadSpec(name="p", kind="poisson", rate=40.0, prompt_tokens=7, output_tokens=5, max_requests=12,
                    duration_s=10, timeout_s=30)
    with FakeEngine(step_s=0.01) as engine:
        frame, _records = run_load(engine.base_url, load, TOKENS, show_progress=False)
    assert list(frame.columns) == list(LOG_COLUMNS)
    assert len(frame) == 12 and engine.completions == 12
    assert (frame["output_tokens"] == 5).all() and (frame["input_tokens"] == 7).all()
    assert all(len(p) == 7 for p in engine.prompts)
    assert (frame["first_token_s"] >= frame["arrival_s"]).all() and (frame["finish_s"] >= frame["first_token_s"]).all()
    tpot = (frame["finish_s"] - frame["first_token_s"]) / 4
    assert 0.008 < tpot.median() < 0.05  # four 10 ms steps after the first token
    write_request_log(frame, tmp_path / "r.parquet")
    back = pd.read_parquet(tmp_path / "r.parquet")
    assert pd.api.types.is_string_dtype(back["request_id"]) and back["input_tokens"].dtype == np.int64


def test_poisson_arrivals_follow_the_rate():
    load = LoadSpec(name="p", kind="poisson", rate=5.0, max_requests=2000, duration_s=1000)
    plan = plan_requests(load, TOKENS)
    gaps = np.diff([0.0] + [r.arrival_s for r in plan])
    assert len(plan) == 2000 and abs(gaps.mean() - 0.2) < 0.02


def test_closed_loop_keeps_exactly_n_users_busy():
    load = LoadSpec(name="c", kind="closed_loop", concurrency=3, prompt_tokens=4, output_tokens=4, max_requests=9,
                    timeout_s=30)
    with FakeEngine(step_s=0.01) as engine:
        frame, _ = run_load(engine.base_url, load, TOKENS, show_progress=False)
    assert len(frame) == 9 and frame["finish_s"].notna().all()
    assert engine.max_in_flight == 3


def test_trace_replay_scales_times_and_caps_lengths(tmp_path):
    csv = tmp_path / "trace.csv"
    csv.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                   "100.0,5,3\n110.0,900,700\n130.0,20,1\n150.0,8,8\n")
    load = LoadSpec(name="t", kind="trace", trace_path=str(csv), time_scale=0.5, trace_offset=1,
                    prompt_tokens=50, output_tokens=6, max_requests=10, duration_s=100)
    plan = plan_requests(load, TOKENS)
    assert [r.arrival_s for r in plan] == [0.0, 10.0, 20.0]
    assert [len(r.prompt) for r in plan] == [50, 20, 8]
    assert [r.max_tokens for r in plan] == [6, 1, 6]


def test_load_is_cut_at_its_timeout_and_unfinished_requests_are_nan():
    load = LoadSpec(name="slow", kind="poisson", rate=100.0, prompt_tokens=4, output_tokens=500, max_requests=3,
                    timeout_s=0.5)
    with FakeEngine(step_s=0.05) as engine:
        start = time.perf_counter()
        frame, records = run_load(engine.base_url, load, TOKENS, show_progress=False)
        wall = time.perf_counter() - start
    assert wall < 3
    assert len(frame) == 3 and frame["finish_s"].isna().all()
    assert all("timeout" in r.error for r in records)


def test_text_tokens_take_windows_of_the_stream():
    source = TextTokens(list(range(10)))
    window = source.take(15, np.random.default_rng(0))
    assert len(window) == 15 and all((b - a) % 10 == 1 for a, b in itertools.pairwise(window))


VLLM_METRICS = """# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="target"} 10.0
vllm:spec_decode_num_drafts_created{engine="0",model_name="target"} 1.7e+09
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="target"} 40.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="target"} 13.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="target",position="0"} 7.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="target",position="1"} 4.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="target",position="2"} 2.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="target",position="3"} 0.0
vllm:num_requests_running{engine="0",model_name="target"} 0.0
"""


def test_vllm_counters_parse_into_the_labs_counter_names():
    table = spec_counters(VLLM_METRICS)
    assert table == {"num_drafts": 10, "num_draft_tokens": 40, "num_accepted_tokens": 13,
                     "num_accepted_tokens_per_pos": [7, 4, 2, 0]}
    lab_frame = pd.DataFrame({"k": [4, 4], "accepted": [1, 3]})
    assert set(table) == set(vllm_counters(lab_frame))
    assert len(parse_prometheus(VLLM_METRICS)) == 9
    assert spec_counters("")["num_accepted_tokens_per_pos"] == []


def test_counters_scraped_before_and_after_a_speculative_load():
    load = LoadSpec(name="s", kind="closed_loop", concurrency=2, prompt_tokens=4, output_tokens=8, max_requests=4)
    with FakeEngine(step_s=0.002, tokens_per_step=2, k=3) as engine:
        before = scrape_spec_counters(engine.base_url)
        _frame, records = run_load(engine.base_url, load, TOKENS, show_progress=False)
        table = counter_table(before, scrape_spec_counters(engine.base_url))
    delta = table["delta"]
    assert delta["num_drafts"] == 16 and delta["num_draft_tokens"] == 48  # 4 requests x 4 steps, k = 3
    assert delta["num_accepted_tokens_per_pos"] == [16, 0, 0]
    assert table["derived"]["tau"] == pytest.approx(2.0)
    # every chunk: 4 per request (one per step), 2 tokens each, times increasing
    chunks = chunk_frame(records)
    assert list(chunks.columns) == ["request_id", "t_s", "output_tokens"]
    per_request = chunks.groupby("request_id")
    assert (per_request.size() == 4).all() and (per_request["output_tokens"].max() == 8).all()
    assert (per_request["output_tokens"].diff().dropna() == 2).all() and (per_request["t_s"].diff().dropna() > 0).all()


def test_step_profile_is_a_full_grid_in_the_shared_format(tmp_path):
    from real.engine.step_profile import measure_step_profile
    from sim.step_profile import read_profile, write_profile

    spec = StepProfileSpec(batches=[1, 3], query_tokens=[1, 8], context_lens=[0, 16], output_tokens=6, repeats=1)
    with FakeEngine(step_s=0.02) as engine:
        rows = measure_step_profile(engine.base_url, spec, TOKENS, show_progress=False)
        prompts = list(engine.prompts)
    assert len(rows) == 8
    decode = [r for r in rows if r["query_tokens"] == 1]
    assert all(15 < r["step_ms"] < 60 for r in decode)  # the fake's 20 ms step
    assert all(r["repeats"] >= 4 * r["batch"] for r in decode)  # 6 tokens: 5 gaps, first dropped
    # a prefill point over context 16 first sends the 16-token prefix, then prefix + 8 new tokens
    assert any(len(p) == 24 and p[:16] in prompts for p in prompts)
    meta = {"source": "vllm", "model": "fake", "dtype": "float32", "device": "cpu", "hardware": "test",
            "cpu_capability": None, "threads": 2, "versions": {}, "created": "2026-01-01T00:00:00Z"}
    write_profile(tmp_path, rows, meta)
    profile = read_profile(tmp_path)
    assert math.isclose(profile.step_ms(1, 1, 0), rows[0]["step_ms"], rel_tol=1e-4)


@pytest.mark.parametrize("cache_on", [True, False])
def test_a_prefill_point_checks_that_its_prefix_came_from_the_prefix_cache(cache_on):
    """The engine's prefix-cache counters are read around every prefill-over-prefix point: a warm cache is
    recorded as such; a cold one (vLLM's log showed 7-13% hits) is primed and measured again once, and
    its hit fraction is returned so the stage can say the row paid for its prefix."""
    from real.engine.step_profile import measure_step_profile

    spec = StepProfileSpec(batches=[2], query_tokens=[1, 8], context_lens=[0, 32], output_tokens=4, repeats=1)
    checks: list = []
    with FakeEngine(step_s=0.005, prefix_cache=cache_on) as engine:
        measure_step_profile(engine.base_url, spec, TOKENS, show_progress=False, prefix_checks=checks)
        prompts = list(engine.prompts)
    assert [(c["batch"], c["query_tokens"], c["context_len"]) for c in checks] == [(2, 8, 32)]
    assert checks[0]["prefix_hit_fraction"] == (1.0 if cache_on else 0.0)
    primes = [p for p in prompts if len(p) == 32]  # 2 decode prompts over context 32, then the primes
    assert len(primes) == 2 + (2 if cache_on else 4)  # a cold point is primed and measured a second time


def test_a_batch_prefill_point_is_gated_behind_a_blocker_and_sent_again_when_it_split(monkeypatch):
    """An idle vLLM steps on the first request that arrives: 4 prefills sent together ran as two steps
    (1, then 3: TTFT 0.41 s and 1.36 s), so a batch row was the sum of two steps. The profiler sends a
    blocker first and the batch while the blocker's step runs (the batch queues, then runs as one step);
    a sample counts from the later of its send and the blocker's first token; vLLM's step count is checked
    (blocker + batch = 2 steps) and the batch sent again when it split."""
    from real.engine import step_profile

    counts = iter([0.0, 3.0, 3.0, 5.0])  # steps before/after: the first try split (3 steps), the second not
    monkeypatch.setattr(step_profile, "engine_steps", lambda url: next(counts))
    spec = StepProfileSpec(batches=[3], query_tokens=[8], context_lens=[0], output_tokens=4, repeats=1)
    # an engine loop as vLLM's: the batch queues behind the blocker's step (30 ms + 0.2 ms a prompt token); the
    # retry's gate is a quarter of the doubled blocker's step, so the batch is in the queue before it ends
    with FakeEngine(step_s=0.03, prefill_s_per_token=0.0002) as engine:
        rows = step_profile.measure_step_profile(engine.base_url, spec, TOKENS, show_progress=False)
        lengths = [len(p) for p in engine.prompts][1:]  # after the 16-token warm-up
    blocker = step_profile.BLOCKER_TOKENS
    assert lengths == [blocker, 8, 8, 8, 2 * blocker, 8, 8, 8]  # blocker, then the batch; twice, a longer blocker
    assert rows[0]["repeats"] == 3
    assert 25 < rows[0]["step_ms"] < 1000 * step_profile.GATE_S  # the fake's 30 ms step, not the gate's wait


def test_the_blocker_grows_with_the_batch_and_its_retries_within_one_steps_prompt():
    from real.engine.step_profile import BLOCKER_TOKENS, BLOCKER_TOKENS_PER_REQUEST, blocker_tokens

    assert blocker_tokens(2, 0) == blocker_tokens(4, 0) == BLOCKER_TOKENS
    assert blocker_tokens(16, 0) == 16 * BLOCKER_TOKENS_PER_REQUEST > BLOCKER_TOKENS
    assert blocker_tokens(16, 1) == 2 * blocker_tokens(16, 0)
    assert blocker_tokens(16, 2, max_prompt_tokens=1023) == 1023


def test_a_16_request_batch_reaches_an_engine_that_admits_requests_one_by_one_as_one_step():
    """Sessions 16 and 17: behind the blocker every 16-request batch still ran as 3 steps in every try. Two
    things keep a batch out of the blocker's next step: a client of 16 connections (the 16th request waits
    for the blocker's reply to close, i.e. for its step to end), and vLLM's API server handing requests to
    the engine one at a time while the blocker's step is short. The fake engine admits a request every
    12 ms and prefills at 1 ms per token; an idle engine steps on what is queued. 16 requests sent 100 ms
    after the blocker are all in by ~300 ms: a 128-token blocker's step ends at ~140 ms (the batch splits,
    in every try), the batch-grown one's (512 tokens) at ~530 ms, and the client holds 17 connections."""
    from real.engine import step_profile

    spec = StepProfileSpec(batches=[16], query_tokens=[8], context_lens=[0], output_tokens=4, repeats=1)
    with FakeEngine(step_s=0.005, prefill_s_per_token=0.001, admit_s=0.012) as engine:
        rows = step_profile.measure_step_profile(engine.base_url, spec, TOKENS, show_progress=False,
                                                 max_prompt_tokens=2048)
        steps = list(engine.steps)
    # the kept try: the blocker's step, then the whole batch in one. Normally the first try; on a loaded CI box
    # the gate's 100 ms sleep once returned after the blocker's step had ended, that try ran 1 + 16 x 1 steps,
    # and the retry (a longer blocker) ran as it should: 19 steps, the last two [1, 16]
    assert steps[-2:] == [1, 16]
    # the batch's step: 5 ms + 16 x 8 tokens x 1 ms, timed from the blocker's first token
    assert 100 < rows[0]["step_ms"] < 400 and rows[0]["repeats"] == 16


def test_the_gate_shrinks_on_a_retry_after_a_short_blocker_step():
    from real.engine.step_profile import GATE_FRACTION, GATE_S, gate_s

    assert gate_s(None, 1.0) == GATE_S  # the first try
    assert gate_s(0.6, 2.0) == GATE_S  # this CPU: a blocker's step far longer than the gate
    assert gate_s(0.02, 2.0) == pytest.approx(GATE_FRACTION * 0.04)  # a GPU: a quarter of the doubled blocker's


def test_a_batch_reaches_a_gpu_speed_engine_as_one_step():
    """On a GPU a 128-token blocker's prefill takes ~10-50 ms: a batch sent GATE_S (0.1 s) after it reaches an
    idle engine and splits in every try (the blocker doubles, the gate does not). The fake engine prefills at
    0.15 ms a token (128 tokens: ~25 ms) and admits a request every 2 ms; on the retry the gate is a quarter of
    the doubled blocker's step, so the batch queues behind it and runs as one step."""
    from real.engine import step_profile

    spec = StepProfileSpec(batches=[4], query_tokens=[8], context_lens=[0], output_tokens=4, repeats=1)
    with FakeEngine(step_s=0.005, prefill_s_per_token=0.00015, admit_s=0.002) as engine:
        rows = step_profile.measure_step_profile(engine.base_url, spec, TOKENS, show_progress=False,
                                                 max_prompt_tokens=2048)
        steps = list(engine.steps)
    assert steps[-2:] == [1, 4]  # the kept try: the blocker's step, then the whole batch in one
    assert rows[0]["repeats"] == 4 and rows[0]["step_ms"] < 1000 * step_profile.GATE_S


def test_each_server_is_warmed_up_with_prompts_an_ngram_proposer_can_match():
    """The engine stage sends two requests before it profiles or drives a load (vLLM compiles its n-gram
    matcher on first use: the first requests of a fresh n-gram server paid 3-4x the TTFT)."""
    from real.engine.stage import _warm_up

    with FakeEngine(step_s=0.002) as engine:
        _warm_up(engine.base_url, TOKENS)
        prompts = list(engine.prompts)
        completions = engine.completions
    assert completions == 2
    for prompt in prompts:
        assert prompt[:48] == prompt[48:96]  # the text repeats: n-gram lookups find it


def test_a_speculative_servers_decode_steps_are_every_chunk_gap():
    """A speculative server streams 1 + accepted tokens per step: its step profile keeps every chunk's gap
    (the plain profiler keeps one-token chunks only) and records query_tokens = 1 + drafts."""
    from real.engine.step_profile import measure_spec_profile

    spec = StepProfileSpec(batches=[1, 2], query_tokens=[1], context_lens=[0, 16], output_tokens=8, repeats=1)
    with FakeEngine(step_s=0.02, tokens_per_step=2, k=3) as engine:
        rows = measure_spec_profile(engine.base_url, spec, TOKENS, drafts=3, show_progress=False)
    assert [(r["batch"], r["query_tokens"], r["context_len"]) for r in rows] == [
        (1, 4, 0), (1, 4, 16), (2, 4, 0), (2, 4, 16)]
    assert all(15 < r["step_ms"] < 60 for r in rows)  # the fake's 20 ms step, 2 tokens per chunk
    assert all(r["repeats"] == 2 * r["batch"] for r in rows)  # 4 two-token chunks: 3 gaps, first dropped


def test_a_batch_that_partly_rode_in_the_blockers_step_is_sent_again(monkeypatch):
    """fid-s19: one round measured 4 x 64 @ 256 as 151 ms where two others measured ~1,300: three of the four
    requests ran inside the blocker's step (their first tokens came with its first token), the fourth in the
    next step, which vLLM's step count reads as the expected blocker + batch (2 steps). The samples say it:
    near 0 beside a whole step. The point is sent again and the one-step try kept."""
    from real.engine import step_profile
    from real.engine.loadgen import StreamRecord

    counts = iter([0.0, 2.0, 2.0, 4.0])  # both tries: 2 engine steps
    monkeypatch.setattr(step_profile, "engine_steps", lambda url: next(counts))
    batch_firsts = iter([[0.6, 0.6, 0.6, 1.9], [1.9, 1.9, 1.9, 1.9]])

    async def fake_batch(client, base_url, model, prompts, max_tokens, t0=None):
        if len(prompts) == 1:  # the blocker: its first token at 0.6 s
            return [StreamRecord("gate", len(prompts[0]), 0.0, [0.6], [1], 1)]
        return [StreamRecord(f"p{i}", len(p), 0.1, [t], [1], 1) for i, (p, t) in enumerate(zip(prompts, next(batch_firsts)))]

    monkeypatch.setattr(step_profile, "_batch", fake_batch)
    prompts = [TOKENS.take(8, np.random.default_rng(i)) for i in range(4)]
    samples = asyncio.run(step_profile._prefill_samples(None, "http://x", "m", prompts, TOKENS, np.random.default_rng(0)))
    assert samples == pytest.approx([1300.0] * 4)
    assert step_profile.rode_with_blocker([0.0, 0.0, 0.0, 1300.0])
    assert not step_profile.rode_with_blocker([1290.0, 1300.0, 1310.0, 1305.0]) and not step_profile.rode_with_blocker([5.0])
