"""Each policy's own drafter (sim.policies[].drafter_layers / drafter_passes / drafter_head_vocab): one run can set
DSpark's one-pass drafter beside an EAGLE-style chain (sim/simulate.policy_cost), and a chain drafts the policy's own
most tokens each step. Run: pytest tests/sim/test_policy_drafter.py"""
import pytest

from sim.policies import make_policy
from sim.simulate import SimInputs, _cost_model, kv_pool, policy_cost, simulate
from tests.sim.conftest import make_sim

POLICIES = [{"kind": "ar"}, {"kind": "fixed_k", "k": 3},
            {"kind": "fixed_k", "k": 3, "name": "eagle3_k3", "drafter_layers": 1, "drafter_passes": "per_token",
             "drafter_head_vocab": 32000}]


def _sim():
    return make_sim(hardware={"name": "h100"}, model={"name": "qwen3-8b", "drafter_layers": 2}, policies=POLICIES)


def test_a_policy_without_a_drafter_of_its_own_keeps_the_models():
    sim = _sim()
    cost = _cost_model(sim, None, None)
    for spec in sim.policies[:2]:
        assert policy_cost(cost, spec, make_policy(spec, 7)) is cost


def test_a_chain_drafter_of_its_own_drafts_the_policys_k_in_a_row():
    sim = _sim()
    cost = _cost_model(sim, None, None)
    spec = sim.policies[2]
    mine = policy_cost(cost, spec, make_policy(spec, 7))
    assert (mine.drafter_layers, mine.drafter_passes, mine.drafter_head_vocab, mine.max_draft) == (1, "per_token",
                                                                                                   32000, 3)
    one_pass = policy_cost(cost, spec.model_copy(update={"drafter_passes": "one"}), make_policy(spec, 7))
    assert one_pass.max_draft == cost.max_draft == 7
    # three passes of one token each cost three one-token passes (weight-bound at 8 requests)
    single = policy_cost(cost, spec, make_policy(spec.model_copy(update={"k": 1}), 7))
    assert mine._draft_pass(8) == pytest.approx(3 * single._draft_pass(8))
    # the target's verify is the same server's: only the drafter's share differs
    verify = cost.step_time(8 * 4, 8 * 512, 8, False, drafts=24)
    assert mine.step_time(8 * 4, 8 * 512, 8, True, drafts=24) == pytest.approx(
        verify + mine._draft_pass(8) + mine._draft_fixed + mine.spec_overhead_s)


def test_simulate_runs_each_policy_on_its_own_drafters_server():
    sim = _sim()
    cost = _cost_model(sim, None, None)
    inputs = SimInputs(sim=sim, cost=cost)
    dspark = simulate(inputs, "fixed_k3", value=None, keep_cluster=True)
    eagle = simulate(inputs, "eagle3_k3", value=None, keep_cluster=True)
    mine = policy_cost(cost, sim.policies[2], make_policy(sim.policies[2], 7))
    assert eagle.cluster.kv_capacity == kv_pool(sim, mine, 3)[0] > dspark.cluster.kv_capacity  # a 1-layer drafter
    assert eagle.cluster.cost.drafter_passes == "per_token" and dspark.cluster.cost is cost
