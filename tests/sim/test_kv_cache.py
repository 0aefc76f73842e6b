"""KV memory as vLLM manages it: block counts, admission by the first chunk, growth, preemption by recompute,
and paged vs reserve admission on a small card."""
import numpy as np
import pytest

from lab.errors import LabError
from sim.cluster import HELD, REM, TOT, Replica
from sim.kv_cache import HybridKV, PagedKV, ReserveKV, blocks_for, kv_cache_blocks
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim


def test_block_pool_by_hand():
    kv = PagedKV(total_blocks=4, block_size=4)
    assert blocks_for(np.array([0, 1, 4, 5, 8, 9]), 4).tolist() == [0, 1, 1, 2, 2, 3]
    a = kv.admit(prompt=6, output=100, slots_now=6)  # the first chunk's slots only, not the output
    assert a == 2 and kv.free == 2
    assert kv.grow(a, 8) == 2 and kv.free == 2  # still inside its second block
    a = kv.grow(a, 9)
    assert a == 3 and kv.free == 1
    assert kv.grow(a, 17) is None and kv.free == 1  # needs 2 more: refused, nothing taken
    kv.release(a)
    assert kv.free == 4 and kv.fits_ever(16) and not kv.fits_ever(17)
    res = ReserveKV(capacity_tokens=16)
    assert res.admit(6, 4, 6) == 10 and res.admit(6, 4, 6) is None  # prompt + output reserved up front
    assert res.grow(10, 1000) == 10
    # vLLM's memory split: (tp x (mem x util - activations) - weights) / block bytes
    gib = 2**30
    assert kv_cache_blocks(80 * gib, 0.9, 16 * gib, 2 * gib, gib / 1024, tp=1) == (72 - 2 - 16) * 1024
    assert kv_cache_blocks(80 * gib, 0.9, 16 * gib, 2 * gib, gib / 1024, tp=2) == (2 * 70 - 16) * 1024
    with pytest.raises(LabError, match="no KV memory"):
        kv_cache_blocks(24 * gib, 0.9, 30 * gib, 1 * gib, 1e6)


def _tiny(kv_policy, **engine):
    # two identical requests at t=0: prompt 4, output 6; 4 blocks of 4 slots (16 tokens); AR decoding
    return make_sim(engine={"kv_policy": kv_policy, "block_size": 4, "kv_capacity_tokens": 16, **engine},
                    workload={"kind": "closed_loop", "concurrency": 2, "duration_s": 1e-4, "warmup_s": 0,
                              "lengths": {"source": "fixed", "prompt_tokens": 4, "output_tokens": 6}},
                    policies=[{"kind": "ar"}])


def test_paged_preemption_by_recompute_computed_by_hand():
    """Step 1 admits both (1 block each) and prefills them; steps 2-5 decode (each grows to 2 blocks at
    sequence 5: all 4 blocks used); step 6 needs 3 blocks each: B (newest) is preempted, its 2 blocks
    freed, A grows to 3 and emits its last token; step 7 readmits B, recomputing prompt 4 + its 5 generated
    tokens as one 9-token prefill (3 blocks), which emits B's last token. Without prefix caching (with it, B
    finds its first block still cached: tests/sim/test_prefix_cache.py)."""
    res = simulate(prepare_inputs(_tiny("paged", prefix_caching=False)), "ar", None, 0, keep_cluster=True)
    s, f = res.summary, res.requests
    assert s["finished"] == 2 and s["unfinished"] == 0
    assert s["preemptions"] == 1 and f["preemptions"].tolist() == [0, 1]
    assert s["steps"] == 7 and s["decode_steps"] == 5 and s["peak_running"] == 2
    assert s["mean_step_tokens"] == pytest.approx((8 + 2 * 4 + 1 + 9) / 7)
    assert f["finish_s"].iloc[1] > f["finish_s"].iloc[0]
    kv = res.cluster.replicas[0].kv
    assert kv.free == kv.total == 4


def test_reserve_admits_one_where_paged_admits_two():
    res = simulate(prepare_inputs(_tiny("reserve")), "ar", None, 0)
    s = res.summary
    assert s["peak_running"] == 1 and s["preemptions"] == 0 and s["finished"] == 2
    # one after the other: 2 x (1 prefill step + 5 decode steps)
    assert s["steps"] == 12


# a dense model, and Gemma3-270M whose sliding layers (window 512) make it a hybrid pool (sim/kv_cache.HybridKV)
@pytest.mark.parametrize("model, capacity, prompt, output, rate", [("llama-2-7b", 4000, 300, 300, 40),
                                                                   ("gemma3-270m", 3000, 900, 500, 60)])
def test_block_accounting_under_pressure_with_speculation(monkeypatch, model, capacity, prompt, output, rate):
    """Every step: blocks held + free == total, decoding requests hold their sequence + the drafts' slots
    (hybrid: exactly vLLM's group-blocks for them, out-of-window blocks freed); preemptions happen and every
    request still finishes with its full output, all blocks back in the pool."""
    checks = []
    original = Replica.plan

    def plan(self):
        step = original(self)
        kv = self.kv
        held = int(self.dec[:, HELD].sum()) + sum(p.held for p in self.prefilling)
        assert held + kv.free == kv.total and kv.free >= 0
        seq = self.dec[:, TOT] - self.dec[:, REM]
        if isinstance(kv, HybridKV):
            assert np.array_equal(self.dec[:, HELD], kv.units(seq + self.lookahead, seq - 1))
        else:
            assert np.all(self.dec[:, HELD] * kv.block_size >= seq + self.lookahead)
        checks.append(1)
        return step

    monkeypatch.setattr(Replica, "plan", plan)
    for policy in ({"kind": "fixed_k", "k": 3}, {"kind": "prefix"}):
        sim = make_sim(model={"name": model},
                       engine={"block_size": 16, "kv_capacity_tokens": capacity, "max_num_batched_tokens": 512},
                       acceptance={"source": "parametric", "parametric": {"alpha": 0.7, "concentration": 3}},
                       workload={"kind": "poisson", "rate": rate, "duration_s": 3, "warmup_s": 0.5,
                                 "lengths": {"source": "fixed", "prompt_tokens": prompt, "output_tokens": output}},
                       policies=[policy])
        res = simulate(prepare_inputs(sim), sim.policies[0].label(), None, 0, keep_cluster=True)
        s = res.summary
        assert s["preemptions"] > 0 and s["unfinished"] == 0 and s["requests"] > 50
        kv = res.cluster.replicas[0].kv
        assert kv.free == kv.total and isinstance(kv, HybridKV) == (model == "gemma3-270m")
    assert len(checks) > 100


def test_paged_admits_more_than_reserve_on_a_small_card():
    """Qwen3-8B on 24 GiB (H100 at gpu_memory_utilization 0.3): reserving prompt + output caps the batch;
    paged blocks admit by what the prompt needs now, so more requests run at once and wait less."""
    out = {}
    for policy in ("reserve", "paged"):
        sim = make_sim(model={"name": "qwen3-8b"}, hardware={"name": "h100"},
                       engine={"kv_policy": policy, "gpu_memory_utilization": 0.3},
                       workload={"kind": "closed_loop", "concurrency": 96, "duration_s": 60, "warmup_s": 10,
                                 "lengths": {"source": "fixed", "prompt_tokens": 1000, "output_tokens": 1000}},
                       policies=[{"kind": "ar"}])
        out[policy] = simulate(prepare_inputs(sim), "ar", None, 0).summary
    r, p = out["reserve"], out["paged"]
    assert r["kv_capacity_tokens"] == p["kv_capacity_tokens"]
    assert r["peak_running"] <= r["kv_capacity_tokens"] // 2000
    assert p["mean_running"] > 1.2 * r["mean_running"] and p["peak_running"] > r["peak_running"]
    assert p["ttft_s_mean"] < r["ttft_s_mean"]
    assert r["preemptions"] == 0
