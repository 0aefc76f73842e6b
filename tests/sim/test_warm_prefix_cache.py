"""A run that starts with its prompts in the prefix cache (workload.warm_prefix_cache): one `vllm serve` answering a
sweep of vLLM's benchmark at one --seed sends the same prompts at every point, so each point after the first finds
them cached where the pool held the run before. By hand on the pool, then end to end, then the public rows' flag."""
import numpy as np
import pytest
from pydantic import ValidationError

from lab.errors import LabError
from sim.kv_cache import HybridKV, KVGroups, PagedKV
from sim.public_check import DEFAULT_FILE, BenchSpec, row_sim_config, rows_by_id, run_row
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim


def test_warm_caches_full_blocks_and_evicts_the_least_recently_freed_past_the_pool():
    kv = PagedKV(total_blocks=8, block_size=4, prefix_caching=True)
    kv.warm(((0, None),), 15)  # 15 tokens computed: 3 full blocks
    assert (kv.free, kv.cached, kv.lookup(((0, None),), 100)) == (8, 3, 12)
    kv.warm(((1, None),), 27)  # 6 more: 9 > 8, so request 0's tail block goes
    assert (kv.free, kv.cached) == (8, 8)
    assert dict(kv.prefix_cache.queue) == {0: 2, 1: 6}
    assert kv.lookup(((0, None),), 100) == 8
    assert kv.lookup(((1, None),), 20) == 16  # never a request's last token: 19 // 4 blocks
    # the pool is still empty of requests: a new one allocates the cached blocks, oldest first
    assert kv.admit(prompt=8, output=1, slots_now=8) == 2 and kv.cached == 6
    assert kv.lookup(((0, None),), 100) == 0
    off = PagedKV(total_blocks=8, block_size=4)
    off.warm(((0, None),), 15)
    assert (off.free, off.cached, off.lookup(((0, None),), 100)) == (8, 0, 0)


def test_warm_on_a_hybrid_pool_leaves_what_release_would():
    groups = KVGroups(full=1, sliding=1, layers=9, window=64)
    warm = HybridKV(total_blocks=100, block_size=16, groups=groups, max_chunk=None, prefix_caching=True)
    warm.warm(((7, None),), 200)
    ran = HybridKV(total_blocks=100, block_size=16, groups=groups, max_chunk=None, prefix_caching=True)
    held = ran.grow(ran.admit(200, 10, 201, 0, ((7, None),)), 201, 200)
    ran.release(held, ((7, None),), 200)
    assert (warm.free, warm.cached) == (ran.free, ran.cached) == (100, 12 + 4)
    assert warm.lookup(((7, None),), 210) == ran.lookup(((7, None),), 210) == 192


def _poisson(warm: bool, capacity: int, replicas: int = 1, router: str = "round_robin"):
    return make_sim(engine={"block_size": 16, "kv_capacity_tokens": capacity},
                    workload={"kind": "poisson", "rate": 20, "max_requests": 40, "warmup_s": 0, "client_seed": 0,
                              "warm_prefix_cache": warm,
                              "lengths": {"source": "fixed", "prompt_tokens": 600, "output_tokens": 20}},
                    replicas=replicas, router=router)


def test_a_warm_run_prefills_only_each_prompts_last_block():
    """Room for every request: each finds 37 of its 38 blocks (599 // 16 x 16 = 592 tokens) and prefills 8 tokens,
    so its TTFT is about a decode step's and shorter than the cold run's, every one of them."""
    cold = simulate(prepare_inputs(_poisson(False, 200_000)), "ar", None, 0)
    warm = simulate(prepare_inputs(_poisson(True, 200_000)), "ar", None, 0)
    n = warm.summary["requests"]
    assert n == cold.summary["requests"] == 40
    assert (warm.summary["prefix_cache_queries"], warm.summary["prefix_cache_hits"]) == (40 * 600, 40 * 592)
    assert cold.summary["prefix_cache_hits"] == 0
    ttft = {k: (r.requests["first_token_s"] - r.requests["arrival_s"]).to_numpy() for k, r in
            (("cold", cold), ("warm", warm))}
    assert np.all(ttft["warm"] < ttft["cold"])
    assert warm.summary["mean_step_tokens"] < cold.summary["mean_step_tokens"]


def test_a_pool_smaller_than_the_run_finds_nothing():
    """Each request leaves 38 full blocks ((600 + 20 - 1) // 16) and takes 39 while it runs. A pool of 30 requests'
    blocks (of 40) keeps the last 30 when warmed, and the run, sending the same requests in the same order, evicts
    them with its first ones' allocations before it reaches them (least recently freed first under a sequential
    re-read): no hit at all. A pool of 41 keeps the whole run: every request hits."""
    def hits(requests_held):
        run = simulate(prepare_inputs(_poisson(True, requests_held * 39 * 16)), "ar", None, 0)
        return run.summary["prefix_cache_hits"]
    assert hits(30) == 0
    assert hits(41) == 40 * 592


def test_warm_replicas_take_request_i_on_replica_i_mod_n():
    res = simulate(prepare_inputs(_poisson(True, 200_000, replicas=2)), "ar", None, 0)
    assert res.summary["prefix_cache_hits"] == 40 * 592  # round robin sends request i to replica i mod 2 again
    with pytest.raises(LabError, match="warm_prefix_cache.*least_loaded"):
        simulate(prepare_inputs(_poisson(True, 200_000, replicas=2, router="least_loaded")), "ar", None, 0)


def test_warm_prefix_cache_needs_requests_drawn_before_the_run():
    with pytest.raises(ValidationError, match="warm_prefix_cache applies to kind poisson / gamma"):
        make_sim(workload={"kind": "closed_loop", "warm_prefix_cache": True})
    with pytest.raises(ValidationError, match="at rate .inf"):
        make_sim(workload={"kind": "poisson", "rate": float("inf"), "max_requests": 10, "warm_prefix_cache": True})


def test_public_rows_after_same_prompts_needs_a_finite_rate():
    base = {"dataset": "random", "input_tokens": 100, "output_tokens": 10, "num_prompts": 10}
    assert BenchSpec.model_validate({**base, "request_rate": 4.0, "after_same_prompts": True}).after_same_prompts
    with pytest.raises(ValidationError, match="after_same_prompts needs a finite request_rate"):
        BenchSpec.model_validate({**base, "request_rate": float("inf"), "after_same_prompts": True})


def test_iog_rows_after_the_first_rate_start_warm_where_the_pool_held_the_run():
    """IOG's 16 req/s rows ran right after its 32 req/s ones on the same server. On one H100 PCIe, Llama-3-8B's pool
    (27.8k blocks) holds the whole earlier run (4.9k): every prompt but its last block is found. DeepSeek-R1-Distill-
    Qwen-32B's bf16 weights leave 2.0k blocks for a run of 5.1k: nothing survives the run's own first requests (as
    its reported P99 TTFT, 2.5x its median, says too). The 32 req/s row, the sweep's first, starts cold."""
    ids = ["iog-h100pcie-llama-3-8b-sharegpt-rate-16", "iog-h100pcie-llama-3-8b-sharegpt-rate-32",
           "iog-h100pcie-r1-distill-qwen-32b-sharegpt-rate-16"]
    rows = rows_by_id(str(DEFAULT_FILE), ids, "test")
    assert [row_sim_config(rows[i]).workload.warm_prefix_cache for i in ids] == [True, False, True]
    share = {}
    for i in ids:
        s = run_row(rows[i]).summary
        share[i] = s["prefix_cache_hits"] / s["prefix_cache_queries"]
    assert share[ids[0]] > 0.9 and share[ids[1]] == 0 and share[ids[2]] == 0
