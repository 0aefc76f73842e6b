"""V0's scheduling without chunked prefill (sim.cluster.Replica._prefill_step, sim.vllm_versions.v0_prefill_steps):
a step of whole prompts alone whenever waiting requests fit, the running decodes paused for it; V1 (and V0 with
chunked prefill) keeps mixing decodes and prefill chunks in one step.

    PYTHONPATH=. python -m pytest -q tests/sim/test_v0_scheduler.py -p no:cacheprovider

Sources: vllm/core/scheduler.py Scheduler._schedule at v0.4.0.post1 (returns the prompt run before reserving decode
slots) and Scheduler._schedule_default at v0.6.0 ("Don't schedule decodes if prefills are scheduled"), PyPI wheels
of github.com/vllm-project/vllm/tree/v0.4.0.post1 and /tree/v0.6.0.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import simpy

from sim.cluster import REM, RID, Cluster, Replica
from sim.cost import CostModel
from sim.policies import make_policy
from sim.public_check import DEFAULT_FILE, load_rows, row_sim_config
from sim.vllm_versions import is_v0, v0_prefill_steps
from tests.sim.conftest import make_sim

LONG_PROMPT = 1500  # the second request's prompt: one whole prefill (V0's budget here 4,096; V1's chunk more)


def two_requests(version: str):
    """Request 0 (64-token prompt, 40 outputs) decodes alone until request 1 (LONG_PROMPT, 4 outputs) arrives at
    30 ms. Each step as (start, end, tokens, whether request 0 emitted a token in it, request 0 decoding before it)."""
    sim = make_sim(engine={"vllm_version": version, "max_model_len": 4096})  # llama-2-7b on an H100
    cm = CostModel.from_config(sim)
    env = simpy.Environment()
    source = SimpleNamespace(kind="parametric", new_request=lambda rng: (0, 0, 40))
    cl = Cluster(env, cm, lambda: make_policy(sim.policies[0], 7), source, 1, sim.engine,
                 np.random.default_rng(0), kv_capacity=100_000)
    rep = cl.replicas[0]
    steps = []
    finish_step = rep.finish_step

    def remaining():  # request 0's tokens still to emit; None while it is not decoding
        rows = rep.dec[rep.dec[:, RID] == 0]
        return int(rows[0, REM]) if len(rows) else None

    def traced(step, dt):
        before = remaining()
        finish_step(step, dt)
        after = remaining()
        emitted = before is not None and (after is None or after < before)
        steps.append((env.now - dt, env.now, step[0], emitted, before is not None))

    rep.finish_step = traced

    def arrivals():
        cl.submit(64, 40)
        yield env.timeout(0.03)
        cl.submit(LONG_PROMPT, 4)

    env.process(arrivals())
    env.run(until=5.0)
    assert np.isfinite(cl.req.finish[:2]).all()
    return steps, rep


def emission_gaps(steps):
    """Request 0's inter-token gaps (s), from the ends of the steps in which it emitted."""
    return np.diff([end for _, end, _, emitted, _ in steps if emitted])


def test_v0_pauses_the_running_decodes_for_a_prefill_step():
    steps, rep = two_requests("0.6.0")
    assert rep.prefill_steps and not rep.chunked
    pf = [s for s in steps if s[2] == LONG_PROMPT]
    assert len(pf) == 1  # the whole prompt alone: no decode token beside it
    start, end, _, emitted, decoding = pf[0]
    assert decoding and not emitted  # request 0 was decoding, and waited the step out
    decode_dt = max(e - s for s, e, tokens, _, _ in steps if tokens == 1)
    gaps = emission_gaps(steps)
    # the gap that spans the prefill step holds it and request 0's next decode step
    assert gaps.max() == pytest.approx((end - start) + decode_dt, rel=0.05)
    assert gaps.max() > 2 * decode_dt


def test_v1_decodes_beside_the_prefill(monkeypatch):
    def never(self):
        raise AssertionError("a V1 engine took V0's prefill-only step")

    monkeypatch.setattr(Replica, "_prefill_step", never)  # V1 plans as before: the mixed path alone
    steps, rep = two_requests("0.8.5")
    assert not rep.prefill_steps and rep.chunked
    mixed = [s for s in steps if s[2] == LONG_PROMPT + 1]  # request 0's decode token and the whole prompt
    assert len(mixed) == 1 and mixed[0][3]
    assert all(emitted for _, _, _, emitted, decoding in steps if decoding)  # no step leaves it waiting
    start, end = mixed[0][:2]
    assert emission_gaps(steps).max() == pytest.approx(end - start)


def test_only_the_v0_public_rows_take_prefill_steps():
    """Every public row of vLLM 0.8 on, or of no stated release, keeps V1's mixed steps (the plan it ran before:
    those rows' results are unchanged, BENCHMARKS.md session 36); the V0 rows (all unchunked) take V0's."""
    rows = load_rows(DEFAULT_FILE)
    chosen = {row.id for row in rows if v0_prefill_steps(row_sim_config(row).engine)}
    v0 = {row.id for row in rows if row.vllm is not None and is_v0(row.vllm)}
    assert chosen == v0
    assert "vllm4030-a10g-deepseek-coder-1.3b-sharegpt-rate-10" in chosen and len(chosen) < len(rows) // 10


def test_v0_with_chunked_prefill_mixes_as_v1():
    sim = make_sim(engine={"vllm_version": "0.6.0", "enable_chunked_prefill": True})
    assert not v0_prefill_steps(sim.engine.model_copy(update={"max_num_batched_tokens": 512}))
    assert v0_prefill_steps(sim.engine.model_copy(update={"enable_chunked_prefill": False}))
