"""The simulator's KV pool for gpustack's Qwen3-32B bf16 rows on one 80 GB card lies where the runs' own numbers put
vLLM's (BENCHMARKS.md, "Session 38: Qwen3-32B bf16 on one 80 GB card").

    PYTHONPATH=. python -m pytest -q tests/sim/test_gpustack_32b_kv_window.py

The pool is vLLM 0.11's profiled one (sim/kv_cache.py activation_reserve_bytes; the sim's 16-token blocks, as
vLLM's). Each bound is read off the random 32000 / 100 burst of the same page (100 prompts of exactly 32,000 tokens,
outputs up to 100, vLLM's chunked prefill fills each step's max_num_batched_tokens B with decodes first):
- every request finished, so one 32,000 + 100-token sequence fits: pool >= 32,100 tokens (on both cards);
- the step that ends request i's prefill (32,000 = k x B + r) hands its last B - r tokens to request i + 1 (48
  blocks, where they fit); the next step decodes request i (2,001 blocks) beside request i + 1's next chunk of
  B - 1 tokens. H100 (B 8192): P99 ITL 46.54 ms and P99 TPOT 44.34 ms against a median ITL of 43.30 ms -- no decode
  step ever carried such a chunk, so 2,001 + ceil((768 + 8,191) / 16) = 2,561 blocks did not fit. A100 (B 2048):
  P99 ITL 690.91 ms against a median of 48.55 ms -- some did, so 2,001 + ceil((768 + 2,047) / 16) = 2,177 blocks
  fit; and the A100 page serves its ShareGPT run with --max-model-len 32768, which vLLM 0.11 needs where the
  default 40,960-token request does not fit its pool (kv_cache_utils.check_enough_kv_cache_memory; the H100
  page's run of that burst names no such flag, yet a 40,960-token pool would have run the chunk above).
"""
from __future__ import annotations

import pytest

from sim.cost import CostModel
from sim.public_check import DEFAULT_FILE, load_rows, row_sim_config
from sim.simulate import kv_pool

BLOCK = 16
# (row, least pool tokens, pool tokens it stays under), from the bounds above
WINDOWS = {
    "gpustack-h100-qwen3-32b-32k-rate-inf": (32_100, 2_561 * BLOCK),
    "gpustack-a100-qwen3-32b-32k-rate-inf": (2_177 * BLOCK, 40_960),
}


@pytest.mark.parametrize("row_id", sorted(WINDOWS))
def test_qwen3_32b_pool_on_one_80gb_card_is_the_one_its_run_implies(row_id):
    row = next(r for r in load_rows(DEFAULT_FILE) if r.id == row_id)
    sim = row_sim_config(row)
    assert sim.engine.block_size == BLOCK
    tokens, blocks = kv_pool(sim, CostModel.from_config(sim))
    low, high = WINDOWS[row_id]
    assert low <= tokens < high, f"{row_id}: pool {tokens} tokens outside [{low}, {high})"
    assert blocks * BLOCK == tokens
