"""vLLM's hybrid KV cache manager: sliding-window layers keep only their window's blocks (sim/kv_cache.HybridKV).
The numbers are computed by hand from vLLM V1's rules (kv_cache_utils / SlidingWindowManager, see KVGroups);
the per-step accounting under preemption is checked in test_kv_cache.py (dense and hybrid)."""
from dataclasses import replace

import pytest

from sim.cluster import HELD, REM, TOT
from sim.cost import CostModel
from sim.cuda_graphs import cuda_graph_memory_bytes, graph_counts
from sim.hardware import get_hardware
from sim.kv_cache import GIB, HybridKV, KVGroups, activation_reserve_bytes, kv_groups
from sim.models import get_model
from sim.simulate import kv_capacity_tokens, kv_pool, prepare_inputs, simulate
from tests.sim.conftest import make_sim


def test_kv_groups_follow_vllm():
    g12 = get_model("gemma3-12b")  # 48 layers: 8 full, 40 sliding (window 1024)
    assert kv_groups(g12) == KVGroups(full=1, sliding=5, layers=8, window=1024)
    assert kv_groups(g12, hybrid=False) == KVGroups(full=1, sliding=0, layers=48)
    assert kv_groups(get_model("gemma3-270m")) == KVGroups(full=1, sliding=5, layers=3, window=512)
    assert kv_groups(get_model("qwen3-8b")) == KVGroups(full=1, sliding=0, layers=36)
    # Gemma3-27B: 10 full + 52 sliding -> groups of 10, the last sliding one padded
    assert kv_groups(replace(g12, n_layers=62, sliding_layers=52)) == KVGroups(1, 6, 10, 1024)
    # gpt-oss-like 12 + 13: max < 1.5 x min, so groups of 13 (vLLM pads the smaller type)
    assert kv_groups(replace(g12, n_layers=25, sliding_layers=12)) == KVGroups(1, 1, 13, 1024)
    # every layer sliding (Mistral style): one sliding group, on or off
    assert kv_groups(replace(g12, sliding_layers=48), hybrid=False) == KVGroups(0, 1, 48, 1024)


def test_sliding_groups_free_blocks_out_of_the_window_by_hand():
    kv = HybridKV(total_blocks=60, block_size=4, groups=KVGroups(1, 2, 1, window=8), max_chunk=None)
    assert kv.capacity_tokens == 60 // 3 * 4  # vLLM's log: num_blocks // groups x block_size
    a = kv.admit(prompt=20, output=10, slots_now=20)  # nothing cached yet: 5 blocks in each of 3 groups
    assert a == 15 and kv.free == 45
    # first decode: 21 slots, 20 computed: skipped = (20 - 8 + 1) // 4 = 3 blocks per sliding group
    a = kv.grow(a, 21, 20)
    assert a == 3 * 6 - 2 * 3 == 12 and kv.free == 48  # grew a block per group, gave 6 back: net -3
    assert kv.row_cap(a, 21, 20, 0) == min(6 * 4, 8 - 1 + 4 * 4)  # next: a new block at 25, a drop at 24
    assert kv.grow(a, 24, 23) == 3 * 6 - 2 * 4  # sequence 24: the window drops block 4
    kv.release(10)
    assert kv.free == 60
    # a request that can never fit: full group over everything, sliding ones over window - 1 + the most one
    # step computes, +1 (a whole unchunked prompt: 3 x 20 blocks at most; 4-token chunks: 52 + 2 x 4)
    assert kv.fits_ever(80) and not kv.fits_ever(81)
    chunked = HybridKV(total_blocks=60, block_size=4, groups=KVGroups(1, 2, 1, window=8), max_chunk=4)
    assert chunked.fits_ever(208) and not chunked.fits_ever(209)


def _gemma_users(hybrid: bool, users: int = 16, duration: float = 4.0, **engine):
    # Gemma3-12B preset (groups: 1 full + 5 sliding of 8 layers, window 1024), 16-slot blocks, 17,600 KV tokens
    # as vLLM would log them (1,100 whole-model blocks; hybrid: a pool of 6 x 1,100 group-blocks);
    # prompts of 4,096 tokens, one admitted per step (unchunked, budget 4,096 + 64), outputs long enough
    # that nobody finishes within the run (4 simulated seconds, no drain)
    return make_sim(model={"name": "gemma3-12b"}, hardware={"name": "h100"},
                    engine={"hybrid_kv": hybrid, "block_size": 16, "kv_capacity_tokens": 17_600,
                            "enable_chunked_prefill": False, "max_num_batched_tokens": 4096 + 64, **engine},
                    workload={"kind": "closed_loop", "concurrency": users, "duration_s": duration, "warmup_s": 0,
                              "drain": False,
                              "lengths": {"source": "fixed", "prompt_tokens": 4096, "output_tokens": 2000}},
                    policies=[{"kind": "ar"}])


def test_hybrid_admits_more_long_requests_than_the_full_layer_footprint():
    """Hybrid off: every request holds ceil(4097 / 16) = 257 whole-model blocks from its first decode, so
    1,100 blocks admit 4 (admission needs 256: a 5th would need 1,280). Hybrid on (vLLM's numbers): a
    prefill takes 256 blocks in each of the 6 groups = 1,536 of the 6,600-block pool; from its first decode
    (4,097 slots, 4,096 computed) each sliding group skips (4,096 - 1,024 + 1) // 16 = 192 blocks, so the
    request holds 6 x 257 - 5 x 192 = 582. Admission goes on while 6,600 - 582 x decoding >= 1,536:
    8 decoding + the 9th prefilling = 9 running (then 9 x 582 = 5,238 leave 1,362 < 1,536), where
    9 x 257 = 2,313 whole-model blocks would be needed without the hybrid manager."""
    off = simulate(prepare_inputs(_gemma_users(False)), "ar", None, 0, keep_cluster=True)
    on = simulate(prepare_inputs(_gemma_users(True)), "ar", None, 0, keep_cluster=True)
    assert off.summary["kv_capacity_tokens"] == on.summary["kv_capacity_tokens"] == 17_600
    assert off.cluster.replicas[0].kv.total == 1_100 and on.cluster.replicas[0].kv.total == 6_600
    assert off.summary["peak_running"] == 4
    assert on.summary["peak_running"] == 9 > 17_600 // 4097
    assert on.summary["preemptions"] == off.summary["preemptions"] == 0 and on.summary["finished"] == 0
    kv = on.cluster.replicas[0].kv
    dec = on.cluster.replicas[0].dec
    assert len(dec) == 9 and kv.total - kv.free == int(dec[:, HELD].sum())
    seq = dec[:, TOT] - dec[:, REM]
    assert dec[:, HELD].tolist() == (6 * -(-seq // 16) - 5 * ((seq - 1024) // 16)).tolist()


def test_hybrid_pool_from_memory_by_hand():
    """Gemma3-12B on an L40S (48 GB sold, 44.31 GiB reported) at 0.92 (vLLM 0.20+'s default): one layer keeps 2 x 8 heads x 256 x 2 bytes
    = 8 KiB per token, a group-block (16 slots x 8 layers) 1 MiB; pool = (44.31 x 0.92 GiB - activations over
    `vllm serve`'s 2,048-token budget on a card under 70 GiB - CUDA-graph estimate - weights) // 1 MiB. vLLM logs
    pool // 6 x 16 tokens: the same as the whole-model count here (6 groups x 8 = 48 layers, no padding)."""
    sim = make_sim(model={"name": "gemma3-12b"}, hardware={"name": "l40s"})
    cost = CostModel(get_hardware("l40s"), get_model("gemma3-12b"))
    reserve = activation_reserve_bytes(3840, 2048) + cuda_graph_memory_bytes(*graph_counts(256, 2048))  # + graphs
    budget = 44.31 * GIB * 0.92 - reserve - 12.2e9 * 2
    tokens, blocks = kv_pool(sim, cost)
    assert blocks == int(budget // 2**20) and tokens == blocks // 6 * 16 == kv_capacity_tokens(sim, cost)
    assert tokens == cost.kv_capacity_tokens(0.92, reserve, 16)
    # a padded layout (Gemma3-27B-like: 7 groups of 10 for 62 layers) logs fewer tokens than 62 layers' worth
    padded = CostModel(get_hardware("l40s"), replace(get_model("gemma3-12b"), n_layers=62, sliding_layers=52,
                                                     params_b=6.0))
    tokens, blocks = kv_pool(sim, padded)
    assert tokens == blocks // 7 * 16 < padded.kv_capacity_tokens(0.92, reserve, 16)


@pytest.mark.parametrize("name", ["qwen3-8b", "llama-2-7b"])
def test_dense_models_ignore_the_switch(name):
    out = []
    for hybrid in (True, False):
        sim = make_sim(model={"name": name}, engine={"hybrid_kv": hybrid, "gpu_memory_utilization": 0.3},
                       workload={"kind": "closed_loop", "concurrency": 64, "duration_s": 10, "warmup_s": 1,
                                 "lengths": {"source": "fixed", "prompt_tokens": 1500, "output_tokens": 800}},
                       policies=[{"kind": "prefix"}])
        res = simulate(prepare_inputs(sim), "prefix", None, 0)
        out.append((res.summary["preemptions"], res.summary["peak_running"], res.requests.to_csv()))
    assert out[0] == out[1] and out[0][0] > 0


def test_kv_size_as_this_labs_vllm_logs_it():
    """vLLM 0.32 (this lab's engine, CPU) served Gemma3-270M in fp32 with 2 GiB of KV, block 128, max_model_len
    1,024 and logged "kv cache group sizes (128 x 6)" and "CPU KV cache size: 52,745 tokens, Maximum concurrency
    for 1,024 tokens per request: 51.51x" (runs/fidelity_vllm/*/engine/nospec/server.log). By hand: 1 full + 5
    sliding groups of 3 layers, a group-block 128 x 3 x 2 KiB, 2 GiB // that = 2,730 blocks; a 1,024-token
    request needs 8 blocks in the full group and min(511 + budget, 1,024) / 128 + 1 = 9 in each sliding one."""
    groups = kv_groups(replace(get_model("gemma3-270m"), dtype="fp32"))
    assert groups == KVGroups(1, 5, 3, 512)
    blocks = 2 * GIB // (128 * 3 * 2 * 1 * 256 * 4)
    assert blocks == 2730 and groups.request_blocks(1024, 128, 2048) == 53
    assert groups.reported_tokens(blocks, 128, 1024, 2048) == 52_745 and round(2730 / 53, 2) == 51.51
    assert groups.pool_blocks(52_745, 128, 1024, 2048) == 2730  # the simulator recovers vLLM's pool
    sim = make_sim(model={"name": "gemma3-270m", "dtype": "fp32"}, hardware={"preset": "cpu"},
                   engine={"block_size": 128, "kv_capacity_tokens": 52_745, "max_model_len": 1024,
                           "max_num_batched_tokens": 2048})
    assert kv_pool(sim, CostModel.from_config(sim)) == (52_745, 2730)
    res = simulate(prepare_inputs(sim), "ar", None, 0, keep_cluster=True)
    assert res.cluster.replicas[0].kv.total == 2730 and res.summary["kv_capacity_tokens"] == 52_745
