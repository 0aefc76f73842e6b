"""vLLM V1's automatic prefix caching in the paged pool: cached blocks by hand, LRU eviction, a preempted
request resuming from its cached blocks, eviction forcing a full recompute, and caching off reproducing the
simulator's outputs from before it existed."""
import pytest

from sim.kv_cache import PagedKV
from sim.prefix_cache import PrefixCache
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim


def test_lookup_whole_blocks_never_the_last_token():
    cache = PrefixCache(block_size=4)
    cache.put(((7, None),), 3)  # request 7 freed with 3 full blocks (12 tokens)
    assert cache.evictable == 3
    assert cache.lookup(((7, None),), 100) == 12
    assert cache.lookup(((7, None),), 12) == 8  # 12 tokens: the last one is recomputed, so its block too
    assert cache.lookup(((7, None),), 9) == 8
    assert cache.lookup(((8, None),), 100) == 0
    assert (cache.queries, cache.hits) == (100 + 12 + 9 + 100, 12 + 8 + 8)


def test_eviction_is_least_recently_freed_first_tail_first():
    cache = PrefixCache(block_size=4)
    cache.put((("a", None),), 3)
    cache.put((("b", None),), 2)
    cache.evict(2)  # a was freed first: its last two blocks go
    assert dict(cache.queue) == {"a": 1, "b": 2} and cache.evictable == 3
    cache.put((("a", None),), 1)  # freed again (a duplicate of what is cached): now the newest
    assert list(cache.queue) == ["b", "a"] and cache.evictable == 3
    cache.evict(2)
    assert dict(cache.queue) == {"a": 1} and cache.evictable == 1
    cache.take((("a", None),), 1)
    assert not cache.queue and cache.evictable == 0


def test_a_shared_prefix_segment_outlives_the_private_tail():
    """Two requests with one 2-block system prompt: the first's freed blocks serve the second's prefix; its
    private blocks, freed nearer the queue's front, are evicted before the shared ones."""
    cache = PrefixCache(block_size=4)
    first, second = (("sys", 2), ("r1", None)), (("sys", 2), ("r2", None))
    cache.put(first, 5)
    assert dict(cache.queue) == {"r1": 3, "sys": 2}
    assert cache.lookup(second, 40) == 8 and cache.lookup(first, 40) == 20
    cache.evict(3)
    assert dict(cache.queue) == {"sys": 2}
    assert cache.lookup(second, 40) == 8


def test_pool_takes_truly_free_blocks_before_cached_ones():
    kv = PagedKV(total_blocks=8, block_size=4, prefix_caching=True)
    chain = ((0, None),)
    held = kv.admit(prompt=16, output=4, slots_now=16)
    kv.release(held, chain, computed=15)  # 15 tokens computed: 3 full blocks cached, the 4th truly free
    assert kv.free == 8 and kv.cached == 3
    other = kv.admit(prompt=20, output=4, slots_now=20)  # 5 blocks: exactly the truly free ones
    assert other == 5 and kv.free == 3 and kv.cached == 3 and kv.lookup(chain, 100) == 12
    other = kv.grow(other, 21)  # a 6th block: the truly free ones are gone, so request 0's tail block goes
    assert other == 6 and kv.free == 2 and kv.cached == 2 and kv.lookup(chain, 100) == 8
    kv.release(other)  # nothing computed: all truly free
    assert kv.free == 8 and kv.cached == 2
    hit = kv.lookup(chain, 30)
    assert hit == 8 and kv.admit(prompt=30, output=1, slots_now=hit + 4, computed=hit, chain=chain) == 3
    assert kv.free == 5 and kv.cached == 0  # its 2 cached blocks held again, 1 block allocated
    off = PagedKV(total_blocks=8, block_size=4)
    off.release(0, chain, computed=15)
    assert off.cached == 0 and off.lookup(chain, 100) == 0


def _tiny(capacity, caching):
    # two identical requests at t=0: prompt 4, output 6; blocks of 4 slots; AR decoding
    return make_sim(engine={"block_size": 4, "kv_capacity_tokens": capacity, "prefix_caching": caching},
                    workload={"kind": "closed_loop", "concurrency": 2, "duration_s": 1e-4, "warmup_s": 0,
                              "lengths": {"source": "fixed", "prompt_tokens": 4, "output_tokens": 6}},
                    policies=[{"kind": "ar"}])


def test_a_preempted_request_prefills_only_what_was_evicted():
    """4 blocks (tests/sim/test_kv_cache.py's hand case): step 6 preempts B at sequence 9 (8 tokens computed:
    2 full blocks, both cached); A's growth to 3 blocks evicts B's tail block; A finishes. Step 7 readmits B,
    finds its first block (4 tokens) cached and recomputes 5 tokens (9 without prefix caching)."""
    out = {}
    for caching in (False, True):
        res = simulate(prepare_inputs(_tiny(16, caching)), "ar", None, 0, keep_cluster=True)
        out[caching] = res
        s = res.summary
        assert s["finished"] == 2 and s["preemptions"] == 1 and s["steps"] == 7
        kv = res.cluster.replicas[0].kv
        assert kv.free == kv.total == 4
    assert out[False].summary["mean_step_tokens"] == pytest.approx((8 + 2 * 4 + 1 + 9) / 7)
    assert out[True].summary["mean_step_tokens"] == pytest.approx((8 + 2 * 4 + 1 + 5) / 7)
    on = out[True].summary
    assert (on["prefix_cache_queries"], on["prefix_cache_hits"]) == (4 + 4 + 9, 4)
    assert (out[False].summary["prefix_cache_queries"], out[False].summary["prefix_cache_hits"]) == (0, 0)


def test_a_preempted_request_whose_blocks_were_evicted_recomputes_everything():
    """3 blocks: step 2 preempts B at sequence 5 (1 full block cached). Its readmission waits for 2 blocks
    while A decodes; A's growth to its 3rd block (step 6) evicts B's cached block, so B, readmitted once A
    finishes, recomputes all 5 tokens: the run is the one without prefix caching, step for step. The lookups
    while B waited found its block (vLLM counts every lookup, admitted or not)."""
    res = {c: simulate(prepare_inputs(_tiny(12, c)), "ar", None, 0, keep_cluster=True) for c in (False, True)}
    on, off = res[True], res[False]
    assert on.summary["preemptions"] == off.summary["preemptions"] == 1
    assert on.requests.equals(off.requests)
    assert on.summary["steps"] == off.summary["steps"]
    assert on.summary["mean_step_tokens"] == off.summary["mean_step_tokens"]
    # lookups: A and B at step 1; B (5 tokens) at steps 3-7, its block found at 3-5, evicted at step 6
    assert (on.summary["prefix_cache_queries"], on.summary["prefix_cache_hits"]) == (4 + 4 + 5 * 5, 3 * 4)


def _pressure(caching):
    # attention at the sheet's mfu and the host time in series (async scheduling off), as when the golden numbers
    # were taken (attn_mfu = mfu: bit for bit the same)
    return make_sim(hardware={"name": "h100", "attn_mfu": 0.35}, model={"name": "llama-2-7b"},
                    engine={"async_scheduling": False, "block_size": 16, "kv_capacity_tokens": 4000, "max_num_batched_tokens": 512,
                            "prefix_caching": caching},
                    acceptance={"source": "parametric", "parametric": {"alpha": 0.7, "concentration": 3}},
                    workload={"kind": "poisson", "rate": 40, "duration_s": 3, "warmup_s": 0.5,
                              "lengths": {"source": "fixed", "prompt_tokens": 300, "output_tokens": 300}},
                    policies=[{"kind": "fixed_k", "k": 3}])


def test_caching_off_reproduces_the_simulator_before_prefix_caching():
    """Golden numbers of this run from commit ec48e78 (before prefix caching): with it off, the same run;
    with it on, preempted requests recompute less and hits are counted."""
    off = simulate(prepare_inputs(_pressure(False)), "fixed_k3", None, 0).summary
    assert (off["requests"], off["finished"], off["preemptions"], off["steps"]) == GOLDEN_PRESSURE[:4]
    assert off["ttft_s_mean"] == pytest.approx(GOLDEN_PRESSURE[4], rel=1e-9)
    assert off["tpot_ms_mean"] == pytest.approx(GOLDEN_PRESSURE[5], rel=1e-9)
    on = simulate(prepare_inputs(_pressure(True)), "fixed_k3", None, 0).summary
    assert on["preemptions"] > 0 and on["prefix_cache_hits"] > 0
    assert on["prefix_cache_hits"] < on["prefix_cache_queries"]


def test_caching_changes_nothing_without_preemption():
    """A dense model with room for every request: nothing is ever looked up twice, so on == off exactly."""
    out = []
    for caching in (True, False):
        sim = make_sim(model={"name": "qwen3-8b"}, engine={"prefix_caching": caching},
                       workload={"kind": "closed_loop", "concurrency": 16, "duration_s": 10, "warmup_s": 1,
                                 "lengths": {"source": "fixed", "prompt_tokens": 1500, "output_tokens": 300}},
                       policies=[{"kind": "prefix"}])
        res = simulate(prepare_inputs(sim), "prefix", None, 0)
        out.append((res.summary["preemptions"], res.summary["prefix_cache_hits"], res.requests.to_csv()))
    assert out[0][0] == 0 and out[0][1] == 0
    assert out[0][2] == out[1][2]


def test_a_hybrid_pool_caches_a_preempted_requests_blocks():
    """Gemma3-270M's sliding layers make a hybrid pool (sim/kv_cache.HybridKV). Under KV pressure, with prefix
    caching a preempted request finds its computed prefix again (hits counted as vLLM counts them) and the run
    recomputes less: it finishes no later; without it nothing is looked up and the pool has no cache."""
    out = {}
    for caching in (True, False):
        sim = make_sim(model={"name": "gemma3-270m"},
                       engine={"block_size": 16, "kv_capacity_tokens": 3000, "max_num_batched_tokens": 512,
                               "prefix_caching": caching},
                       workload={"kind": "poisson", "rate": 60, "duration_s": 2, "warmup_s": 0.5,
                                 "lengths": {"source": "fixed", "prompt_tokens": 900, "output_tokens": 500}},
                       policies=[{"kind": "ar"}])
        res = simulate(prepare_inputs(sim), "ar", None, 0, keep_cluster=True)
        assert (res.cluster.replicas[0].kv.prefix_cache is None) is (not caching)
        out[caching] = res
    on, off = out[True].summary, out[False].summary
    assert off["preemptions"] > 0 and off["prefix_cache_queries"] == 0 and off["prefix_cache_hits"] == 0
    assert on["prefix_cache_hits"] > 0 and on["prefix_cache_hits"] <= on["prefix_cache_queries"]
    assert out[True].requests["finish_s"].max() <= out[False].requests["finish_s"].max()


def test_hybrid_prefix_hit_needs_every_block_the_request_left():
    from sim.kv_cache import HybridKV, KVGroups

    groups = KVGroups(full=1, sliding=1, layers=9, window=64)
    kv = HybridKV(total_blocks=100, block_size=16, groups=groups, max_chunk=None, prefix_caching=True)
    chain = ((7, None),)
    held = kv.admit(200, 10, 201, 0, chain)  # 13 blocks in each group
    assert held == 26
    held = kv.grow(held, 201, 200)  # 200 computed: the sliding group keeps its window only
    assert held == 13 + 13 - (200 - 64 + 1) // 16
    kv.release(held, chain, 200)  # 12 full blocks: 12 full-group + 12 - 8 sliding units cached
    assert kv.cached == 12 + 4 and kv.free == 100
    assert kv.lookup(chain, 210) == 192  # the computed prefix, block-aligned
    assert kv.lookup(chain, 150) == 144  # never the request's last token
    kv.take(100 - 16 + 1)  # one cached unit evicted (tail first): the window before any hit is gone
    assert kv.cached == 15 and kv.lookup(chain, 210) == 0
    kv.take(-(100 - 16 + 1))
    other = ((8, None),)
    assert kv.lookup(other, 210) == 0


# filled in from commit ec48e78: (requests, finished, preemptions, steps, ttft_s_mean, tpot_ms_mean)
GOLDEN_PRESSURE = (101, 101, 108, 1468, 5.1020241456570625, 4.098342793823493)
