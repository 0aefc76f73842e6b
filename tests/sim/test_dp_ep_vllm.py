"""vLLM's data + expert parallelism as the simulator runs it (session 31, issue 9): the DP load balancer's
routing and the experts' gathered tokens in an unpadded lockstep step.

    PYTHONPATH=. python -m pytest -q tests/sim/test_dp_ep_vllm.py -p no:cacheprovider

Sources: vLLM 0.32.0 vllm/v1/engine/core_client.py DPLBAsyncMPClient.get_core_engine_for_request (lines 1642-1697);
vllm/distributed/device_communicators/all2all.py AgRsAll2AllManager (dispatch = all_gatherv over the DP group).
"""
import numpy as np
import pytest
import simpy

from sim.cluster import LockstepGroup
from sim.cost import CostModel
from sim.hardware import get_hardware
from sim.models import from_hf_config
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import LockstepRank, make_sim
from tests.sim.test_hardware import DATA


def _qwen3_30b_ep2() -> CostModel:
    """Qwen3-30B-A3B on 2 x H100, tp 1, ep 2 (--data-parallel-size 2 --enable-expert-parallel)."""
    return CostModel(hw=get_hardware("h100"), model=from_hf_config(DATA / "qwen3_30b_a3b_config.json"), tp=1, ep=2)


def test_moe_tokens_prices_the_experts_on_the_gathered_tokens_only():
    """step_time(moe_tokens=m) differs from the step priced on its own tokens by the experts' time alone: the
    attention, dense weights and link terms stay the rank's own."""
    cm = _qwen3_30b_ep2()
    own, gathered = 2080, (2080 + 32) / 2
    base = cm.step_time(own, 50_000.0, 33, False)
    assert cm.step_time(own, 50_000.0, 33, False, moe_tokens=own) == pytest.approx(base)
    fewer = cm.step_time(own, 50_000.0, 33, False, moe_tokens=gathered)
    assert fewer == pytest.approx(base - cm._experts_time(own, own) + cm._experts_time(gathered, gathered))
    assert fewer < 0.9 * base  # the experts of 2 x 2,080 tokens vs those of 2,112: a large share of the step



def _plan(tokens, kv, reqs):  # (tokens, kv read, requests, spec, lengths, state, drafts, chunks, attended, copies)
    return (tokens, kv, reqs, False, None, None, 0, None, None, 0)


def test_an_unpadded_lockstep_step_runs_each_ranks_experts_on_the_groups_tokens():
    """A 2,048-token prefill chunk beside 32 decodes on one rank, 32 decodes on the other: past the largest CUDA
    graph nobody pads, and each rank's experts see the 2,112 tokens the dispatch gathered -- not 2 x 2,080 (what
    pricing the busy rank's step alone assumes). The idle rank's dummy batch sees them too."""
    cm = _qwen3_30b_ep2()
    a, b = [_plan(2080, 60_000.0, 33)], [_plan(32, 30_000.0, 32)]
    env = simpy.Environment()
    ra, rb = LockstepRank(env, a), LockstepRank(env, b)
    LockstepGroup(env, [ra, rb], cm.step_time, pad_limit=512)
    env.run(until=10)
    gathered = (2080 + 32) / 2
    want = max(cm.step_time(2080, 60_000.0, 33, False, 0, None, moe_tokens=gathered),
               cm.step_time(32, 30_000.0, 32, False, 0, None, moe_tokens=gathered))
    assert ra.dts == pytest.approx([want]) and rb.dts == ra.dts
    assert want < 0.9 * cm.step_time(2080, 60_000.0, 33, False)  # what it was priced at before
    # an idle rank: its dummy batch (1 token) adds one token to what the experts see
    env = simpy.Environment()
    ra, rb = LockstepRank(env, [_plan(2080, 60_000.0, 33)]), LockstepRank(env, [])
    LockstepGroup(env, [ra, rb], cm.step_time, pad_limit=512)
    env.run(until=10)
    assert ra.dts == pytest.approx([cm.step_time(2080, 60_000.0, 33, False, moe_tokens=2081 / 2)])


def _dp_ep_sparse(router):
    """DP 2 + EP 2, requests far apart (one at a time in the system, mostly): every arrival finds both ranks idle."""
    return make_sim(model={"name": None, "config": str(DATA / "qwen3_30b_a3b_config.json")},
                    hardware={"preset": "h100", "tp": 1, "ep": 2}, replicas=2, router=router,
                    acceptance={"source": "parametric", "max_draft": 7},
                    workload={"kind": "poisson", "rate": 0.5, "duration_s": 60, "warmup_s": 0,
                              "lengths": {"source": "fixed", "prompt_tokens": 64, "output_tokens": 16}})


def test_least_loaded_spreads_ties_over_the_ranks_as_vllm_does():
    """vLLM's DP load balancer starts each scan one engine further on (eng_start_index rotates), so requests that
    find every engine idle alternate between them; a plain min() sent them all to engine 0."""
    res = simulate(prepare_inputs(_dp_ep_sparse("least_loaded")), "ar", None, seed=3)
    reps = res.requests.replica.to_numpy()
    assert len(reps) >= 20
    assert 0.35 < np.mean(reps == 1) < 0.65


def test_least_loaded_still_prefers_the_less_loaded_rank():
    """Scores still decide where they differ: with a long request running on one rank, a newcomer goes to the other."""
    from types import SimpleNamespace

    from sim.cluster import Cluster
    from sim.policies import make_policy
    sim = _dp_ep_sparse("least_loaded")
    cm = CostModel.from_config(sim)
    cl = Cluster(simpy.Environment(), cm, lambda: make_policy(sim.policies[0], 7),
                 SimpleNamespace(kind="parametric", new_request=lambda rng: (0, 0, 16)), 2, sim.engine,
                 np.random.default_rng(0), kv_capacity=100_000, router="least_loaded", lockstep=2)
    loads = []
    for _ in range(4):  # all at once, before any step: each lands on the engine with fewer unfinished requests
        cl.submit(64, 1000)
        loads.append([r.load() for r in cl.replicas])
    assert loads == [[1, 0], [1, 1], [2, 1], [2, 2]]
