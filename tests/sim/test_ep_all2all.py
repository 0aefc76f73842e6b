"""Expert-parallel communication as vLLM's all2all backends move it (sim/cost.py all2all_cost), hand-computed.

    PYTHONPATH=. python -m pytest -q tests/sim/test_ep_all2all.py

Qwen3-30B-A3B (48 MoE layers, hidden 2048, 128 experts, top 8, bf16) on 2 x H100 (the preset's NCCL pair: 311.4 GB/s
per direction, 20.1 us per collective call), --data-parallel-size 2 --enable-expert-parallel: tp 1, ep 2, dp 2.
"""
import pytest

from lab.errors import LabError
from sim.cost import CostModel
from sim.hardware import get_hardware
from sim.models import from_hf_config
from tests.sim.conftest import LockstepRank
from tests.sim.test_hardware import DATA

LAYERS, HIDDEN, EXPERTS, TOP_K, BF16 = 48, 2048, 128, 8, 2
LAT, BW = 20.1e-6, 311.4e9  # the h100 preset's interconnect (NCCL pair)


def _qwen3_30b():
    return from_hf_config(DATA / "qwen3_30b_a3b_config.json")


def _no_link(hw):
    """The same card with a free link (no latency, unbounded bandwidth): what is left is the step without EP
    communication."""
    return hw.model_copy(update={"interconnect": hw.interconnect.model_copy(
        update={"latency_us": 0.0, "bandwidth_gbs": 1e15})})


# per MoE layer, per rank: (collective calls, bytes per token of the rank's step); dp = 2, ep = 2
EXPECTED = {
    # all_gatherv of the other rank's hidden states + top-k weights / ids (fp32 + int32), reduce_scatterv back
    "allgather_reducescatter": (2, 1 * (2 * HIDDEN * BF16 + 8 * TOP_K)),
    # 2 broadcasts of hidden states + 2 of router logits, then a ring all-reduce of both ranks' tokens x hidden
    "naive": (2 * 2 + 1, 1 * (HIDDEN + EXPERTS) * BF16 + 2 * 1 * HIDDEN * BF16),
    # each token to its top-8 experts' ranks: half of them remote, there and back
    "dispatch": (2, 2 * TOP_K * HIDDEN * BF16 / 2),
}


@pytest.mark.parametrize("backend", sorted(EXPECTED))
@pytest.mark.parametrize("tokens", [1, 64, 2048])
def test_ep2_step_adds_what_the_backend_moves(backend, tokens):
    m, hw = _qwen3_30b(), get_hardware("h100")
    cm = CostModel(hw, m, tp=1, ep=2, all2all=backend)
    free = CostModel(_no_link(hw), m, tp=1, ep=2, all2all=backend)
    calls, per_token = EXPECTED[backend]
    want = LAYERS * (calls * LAT + tokens * per_token / BW)
    assert cm.step_time(tokens, 4096.0, 4, False) - free.step_time(tokens, 4096.0, 4, False) == pytest.approx(want)


def test_ep2_backends_by_hand():
    """The numbers themselves, so that a change of formula shows: a 64-token decode step on each rank."""
    m, hw = _qwen3_30b(), get_hardware("h100")
    # the link's share only: each backend against itself on a free link (a dispatch backend also spares the
    # fused-MoE call the other ranks' pairs, sim.cost.ep_remote_pair_bytes)
    extra = {b: CostModel(hw, m, tp=1, ep=2, all2all=b).step_time(64, 4096.0, 64, False)
             - CostModel(_no_link(hw), m, tp=1, ep=2, all2all=b).step_time(64, 4096.0, 64, False)
             for b in EXPECTED}
    # allgather_reducescatter: 48 x (2 x 20.1 us + 64 x 8,256 B / 311.4 GB/s) = 1,929.6 us + 81.45 us
    assert extra["allgather_reducescatter"] * 1e6 == pytest.approx(1929.6 + 81.4465, abs=1e-3)
    # naive: 48 x (5 x 20.1 us + 64 x 12,544 B / 311.4 GB/s) = 4,824 us + 123.75 us
    assert extra["naive"] * 1e6 == pytest.approx(4824 + 123.7481, abs=1e-3)
    # dispatch: 48 x (2 x 20.1 us + 64 x 32,768 B / 311.4 GB/s) = 1,929.6 us + 323.26 us
    assert extra["dispatch"] * 1e6 == pytest.approx(1929.6 + 323.2604, abs=1e-3)


def test_default_backend_is_vllms():
    m, hw = _qwen3_30b(), get_hardware("h100")
    assert CostModel(hw, m, tp=1, ep=2).step_time(64, 4096.0, 64, False) == \
        CostModel(hw, m, tp=1, ep=2, all2all="allgather_reducescatter").step_time(64, 4096.0, 64, False)


def test_no_all_to_all_without_data_parallel_ranks():
    """ep = tp (dp 1, e.g. --tensor-parallel-size 8 --enable-expert-parallel): every TP rank holds all tokens
    already; the MoE output joins the tensor-parallel all-reduce. No EP link term for any backend; tp 1 / ep 1
    and a dense model do not change with the backend either."""
    m, hw = _qwen3_30b(), get_hardware("h100")
    for backend in EXPECTED:
        tp2 = CostModel(hw, m, tp=2, ep=2, all2all=backend)
        assert tp2._t_per_token_link == CostModel(hw, m, tp=2, ep=1)._t_per_token_link
        assert CostModel(hw, m, all2all=backend).step_time(64, 4096.0, 64, False) == \
            CostModel(hw, m).step_time(64, 4096.0, 64, False)


def test_unknown_backend_is_one_error():
    with pytest.raises(LabError, match="all2all 'pplx' is not one of"):
        CostModel(get_hardware("h100"), _qwen3_30b(), tp=1, ep=2, all2all="pplx")


def test_config_names_the_backend():
    from tests.sim.conftest import make_sim
    sim = make_sim(model={"name": None, "config": str(DATA / "qwen3_30b_a3b_config.json")},
                   hardware={"preset": "h100", "tp": 1, "ep": 2, "all2all": "naive"}, replicas=2)
    assert CostModel.from_config(sim).all2all == "naive"
    assert make_sim(hardware={"preset": "h100"}).hardware.all2all == "allgather_reducescatter"
    with pytest.raises(Exception, match="'allgather_reducescatter', 'naive' or 'dispatch'"):
        make_sim(hardware={"preset": "h100", "tp": 1, "ep": 2, "all2all": "pplx"}, replicas=2)



def _group_steps(plans_a, plans_b, pad_limit):
    import simpy

    from sim.cluster import LockstepGroup
    env = simpy.Environment()
    a, b = LockstepRank(env, plans_a), LockstepRank(env, plans_b)

    def step_time(tokens, kv, reqs, spec, drafts, attn, moe_tokens=None, state_copies=0):  # 1 ms/token, 1 us/KV token
        return tokens * 1e-3 + kv * 1e-6
    LockstepGroup(env, [a, b], step_time, pad_limit)
    env.run(until=100)
    return a.dts


def _plan(tokens, kv):  # (tokens, kv read, requests, spec, lengths, state, drafts, chunks, attended, state copies)
    return (tokens, kv, 1, False, None, None, 0, None, None, 0)


def test_dp_ranks_are_padded_to_the_groups_most_tokens_inside_cuda_graphs():
    """vLLM (coordinate_batch_across_dp): while every rank runs a CUDA graph, each rank runs the group's most
    tokens -- rank b's 8 decode tokens over 100,000 cached ones are padded to rank a's 64; past the largest graph
    (here 512 tokens) no padding, each rank its own tokens, the step the longer of the two."""
    a, b = [_plan(64, 100), _plan(1000, 100)], [_plan(8, 100_000), _plan(8, 100_000)]
    padded = _group_steps(list(a), list(b), pad_limit=512)
    assert padded == pytest.approx([64e-3 + 0.1, 1.0 + 1e-4])
    unpadded = _group_steps(list(a), list(b), pad_limit=0)
    assert unpadded == pytest.approx([8e-3 + 0.1, 1.0 + 1e-4])


def test_dp_padding_option():
    """engine.dp_padding picks the limit the cluster hands its lockstep groups: current vLLM pads inside CUDA
    graphs only (min(2 x max_num_seqs, 512), or the last configured bucket), vLLM <= 0.11 every step."""
    from types import SimpleNamespace

    import numpy as np
    import simpy

    from sim.cluster import Cluster
    from sim.policies import make_policy
    from tests.sim.conftest import make_sim

    def limit(**kw):
        cost = kw.pop("cost", {})
        sim = make_sim(model={"name": None, "config": str(DATA / "qwen3_30b_a3b_config.json")},
                       hardware={"preset": "h100", "tp": 1, "ep": 2}, replicas=2, cost=cost, engine=kw)
        cm = CostModel.from_config(sim)
        cl = Cluster(simpy.Environment(), cm, lambda: make_policy(sim.policies[0], 7),
                     SimpleNamespace(kind="parametric"), 2, sim.engine, np.random.default_rng(0),
                     kv_capacity=100_000, lockstep=2)
        return cl.groups[0].pad_limit
    assert limit() == 512 and limit(max_num_seqs=64) == 128
    assert limit(cost={"cuda_graph_buckets": [1, 2, 4, 8, 16, 32]}) == 32
    assert limit(dp_padding="always") == float("inf") and limit(dp_padding="none") == 0
    with pytest.raises(Exception, match="'cuda_graphs', 'always' or 'none'"):
        limit(dp_padding="sometimes")


def test_an_unset_backend_follows_the_yamls_vllm_release():
    """A YAML naming vLLM 0.10 without an all2all runs that release's naive backend (session 37: it ran 0.11's)."""
    from tests.sim.conftest import make_sim
    moe = {"name": None, "config": str(DATA / "qwen3_30b_a3b_config.json")}
    dp_ep = {"preset": "h100", "tp": 1, "ep": 2}

    def backend(engine: dict, hardware: dict = dp_ep) -> str:
        return CostModel.from_config(make_sim(model=moe, hardware=hardware, replicas=2, engine=engine)).all2all

    assert backend({"vllm_version": "0.10.1"}) == "naive"
    assert backend({"vllm_version": "0.11.0"}) == "allgather_reducescatter"
    assert backend({}) == "allgather_reducescatter"  # no release named: the current one's
    assert backend({"vllm_version": "0.10.1"}, {**dp_ep, "all2all": "allgather_reducescatter"}) == \
        "allgather_reducescatter"  # a YAML's own choice wins
