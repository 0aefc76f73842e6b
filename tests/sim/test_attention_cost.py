"""Attention priced per query token (sim/cost.py step_time's attn_ctx, summed by the replica's step plan): a
prefill chunk beside long decodes is not charged their context, and a prompt's own tokens attend causally."""
from __future__ import annotations

import pytest

from sim.cost import CostModel
from sim.hardware import achievable_flops
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim


def test_a_step_is_charged_the_context_each_token_attends_to():
    cm = CostModel.from_config(make_sim(hardware={"preset": "a100-80g"}, model={"name": "qwen3-14b"}))
    m = cm.model
    # one decode over 30,000 cached tokens beside a 2,047-token chunk that starts a prompt (compute-bound)
    tokens, kv_sum, reqs = 1 + 2047, 30_000 + 2047, 2
    attended = 30_000 + 2047 * (2047 + 1) / 2
    exact = cm.step_time(tokens, kv_sum, reqs, False, attn_ctx=attended)
    at_mean = cm.step_time(tokens, kv_sum, reqs, False)
    per_pair = m.attn_flops_per_context_token / achievable_flops(cm.hw, m.dtype)
    assert at_mean - exact == pytest.approx((tokens * kv_sum / reqs - attended) * per_pair)
    assert exact < 0.8 * at_mean  # the chunk's tokens were charged the decode's 30,000 tokens


def test_a_lone_prompt_prefills_causally():
    prompt = 4096
    sim = make_sim(hardware={"preset": "h100"}, model={"name": "qwen3-8b"},
                   engine={"max_num_batched_tokens": 8192},
                   workload={"kind": "closed_loop", "concurrency": 1, "max_requests": 1, "duration_s": 10,
                             "warmup_s": 0, "lengths": {"prompt_tokens": prompt, "output_tokens": 2}})
    res = simulate(prepare_inputs(sim), "ar")
    ttft = float(res.requests["first_token_s"].iloc[0] - res.requests["arrival_s"].iloc[0])
    cm = CostModel.from_config(sim)
    assert ttft == pytest.approx(cm.step_time(prompt, prompt, 1, False, attn_ctx=prompt * (prompt + 1) / 2))
    assert ttft < cm.step_time(prompt, prompt, 1, False)  # every prompt token at the whole prompt: too slow
