"""A speculative server's KV pool (sim/simulate.kv_pool with spec_tokens): vLLM loads a model drafter beside the
target, gives its layers KV in the same block pool and captures CUDA graphs for 1 + k tokens per sequence, so a
speculative policy runs on fewer KV blocks than plain decoding on the same card; an n-gram drafter
(drafter_layers 0) costs only the wider graphs. Run: pytest tests/sim/test_spec_server_memory.py"""
import pytest

from sim.cuda_graphs import cuda_graph_memory_bytes, graph_counts
from sim.hardware import vllm_serve_batch_defaults
from sim.simulate import SimInputs, _cost_model, engine_cuda_graph_bytes, kv_pool, simulate
from tests.sim.conftest import make_sim

RTX_4090_8B = {"hardware": {"name": "rtx-4090"}, "model": {"name": "qwen3-8b", "drafter_layers": 2},
               "engine": {"block_size": 16}}


def _pools(**sections):
    sim = make_sim(**{**RTX_4090_8B, **sections})
    cost = _cost_model(sim, None, None)
    return sim, cost, kv_pool(sim, cost)[0], kv_pool(sim, cost, spec_tokens=7)[0]


def test_a_model_drafter_takes_its_weights_and_kv_share_out_of_the_pool():
    sim, cost, plain, spec = _pools()
    weights, kv_per_token = cost.drafter_memory_bytes()
    m = cost.model
    assert weights == pytest.approx(2 / m.n_layers * m.active_weight_bytes)
    assert kv_per_token == pytest.approx(2 / m.kv_layers * m.kv_bytes_per_token)
    graphs = engine_cuda_graph_bytes(sim, cost, 7) - engine_cuda_graph_bytes(sim, cost)
    # the pool's memory, plain: tokens x bytes per token; speculative: less the drafter's weights and wider
    # graphs, each token now also holding the drafter layers' KV
    memory = plain * m.kv_bytes_per_token
    expected = (memory - weights - graphs) / (m.kv_bytes_per_token + kv_per_token)
    assert spec == pytest.approx(expected, abs=2 * 16)
    assert spec < 0.9 * plain  # on a 24 GB card an 8B model's 2-layer drafter costs a tenth of the KV or more


def test_an_ngram_drafter_costs_only_the_wider_cuda_graphs():
    _, cost, plain, spec = _pools(model={"name": "qwen3-8b", "drafter_layers": 0})
    assert cost.drafter_memory_bytes() == (0.0, 0.0)
    limits = vllm_serve_batch_defaults(cost.hw)
    wider = cuda_graph_memory_bytes(*graph_counts(limits["max_num_seqs"], limits["max_num_batched_tokens"], 7))
    narrow = cuda_graph_memory_bytes(*graph_counts(limits["max_num_seqs"], limits["max_num_batched_tokens"]))
    assert wider > narrow
    assert plain - spec == pytest.approx((wider - narrow) / (cost.model.kv_bytes_per_token * 16) * 16, abs=16)


def test_a_logged_kv_size_is_kept_as_logged():
    _, _, plain, spec = _pools(engine={"block_size": 16, "kv_capacity_tokens": 50_000})
    assert plain == spec == 50_000


def test_simulate_gives_a_speculative_policy_the_speculative_servers_pool():
    sim = make_sim(**RTX_4090_8B, policies=[{"kind": "ar"}, {"kind": "fixed_k", "k": 3}])
    cost = _cost_model(sim, None, None)
    inputs = SimInputs(sim=sim, cost=cost)
    ar = simulate(inputs, "ar", value=None, keep_cluster=True)
    fixed = simulate(inputs, "fixed_k3", keep_cluster=True)
    assert ar.cluster.kv_capacity == kv_pool(sim, cost)[0]
    assert fixed.cluster.kv_capacity == kv_pool(sim, cost, spec_tokens=3)[0] < ar.cluster.kv_capacity


def test_a_drafter_that_leaves_no_kv_memory_is_named_in_the_error():
    """The plain server fits, the speculative one does not: the one-line error says the drafter is why."""
    from lab.errors import LabError

    sim = make_sim(**{**RTX_4090_8B, "engine": {"block_size": 16, "gpu_memory_utilization": 0.72}})
    cost = _cost_model(sim, None, None)
    assert kv_pool(sim, cost)[0] > 0
    with pytest.raises(LabError, match=r"speculative policy's drafter \(2 layers"):
        kv_pool(sim, cost, spec_tokens=7)
