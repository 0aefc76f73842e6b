"""vLLM's data parallelism for a MoE model without expert parallelism (sim.engine.dp_mode vllm): `vllm serve
--data-parallel-size N` with no --enable-expert-parallel replicates attention and the dense layers per DP rank but
runs the MoE layers tensor-parallel over N x tp GPUs, with an all-gather and a reduce-scatter around each and the
ranks in lockstep. A dense model's DP ranks share nothing and stay separate replicas.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python -m pytest -q tests/sim/test_dp_moe_vllm.py -p no:cacheprovider

Sources: vllm/model_executor/layers/fused_moe/config.py FusedMoEParallelConfig.make (flatten_tp_across_dp: tp_size =
dp x tp when use_ep is False); fused_moe/layer.py do_naive_dispatch_combine (dp_size > 1);
vllm/distributed/device_communicators/all2all.py AgRsAll2AllManager / NaiveAll2AllManager.
"""
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from lab.errors import LabError
from sim.cost import CostModel, dp_moe_collective_cost
from sim.kv_cache import GIB
from sim.simulate import kv_pool, lockstep_group
from sim.stages import describe_sim
from tests.lab.test_cli_errors import assert_one_error_line, lab
from tests.sim.conftest import make_sim

DATA = Path(__file__).parent / "data"
QWEN3 = str(DATA / "qwen3_30b_a3b_config.json")


def _sim(mode="vllm", replicas=2, model=None, **hardware):
    return make_sim(hardware={"preset": "h100", **hardware}, model=model or {"name": None, "config": QWEN3},
                    replicas=replicas, engine={"dp_mode": mode})


def _pair(**hardware):
    """(separate, vllm) cost models of Qwen3-30B-A3B on 2 x H100, tp 1."""
    return (CostModel.from_config(_sim("separate", **hardware)), CostModel.from_config(_sim("vllm", **hardware)))


def test_each_gpu_holds_half_of_every_expert_and_the_whole_dense_part():
    sep, vllm = _pair()
    assert (sep.moe_dp, vllm.moe_dp) == (1, 2)
    m = sep.model
    dense = m.weight_bytes - m.expert_params_b * 1e9 * m.expert_bytes_per_param
    assert m.resident_weight_bytes(2) == pytest.approx(dense + (m.weight_bytes - dense) / 2)
    assert m.weight_bytes / GIB == pytest.approx(56.9, abs=0.05)       # Qwen3-30B-A3B bf16: one H100's worth
    assert m.resident_weight_bytes(2) / GIB == pytest.approx(29.9, abs=0.05)
    line = describe_sim(_sim("vllm"))
    assert "29.9 GiB per GPU (every expert split over 2 DP ranks x tp 1 = 2 GPUs, dp_mode vllm)" in line
    assert "56.9 GiB per GPU (every expert on each replica's 1 GPU)" in describe_sim(_sim("separate"))


def test_the_freed_weight_memory_goes_to_each_ranks_kv_cache():
    sep, vllm = _pair()
    kv_sep, kv_vllm = kv_pool(_sim("separate"), sep)[0], kv_pool(_sim("vllm"), vllm)[0]
    # 27 GiB more per GPU at 48 KiB per token (48 layers x 4 KV heads x 128 x 2 x bf16): ~590k more tokens
    assert kv_vllm - kv_sep == pytest.approx(27.0 * GIB / sep.model.kv_bytes_per_token, rel=0.02)
    assert kv_vllm > 2.5 * kv_sep


def test_every_moe_layer_pays_an_all_gather_and_a_reduce_scatter_on_the_link():
    sep, vllm = _pair()
    m = vllm.model
    assert sep._t_per_token_link == 0.0  # tp 1, separate: no collective at all
    link = vllm.hw.interconnect
    calls, per_token = dp_moe_collective_cost("allgather_reducescatter", 2, m.hidden, m.moe_experts, 2.0)
    assert (calls, per_token) == (2, (2 * m.hidden + m.moe_experts) * 2.0)  # hidden out + back, router logits
    assert vllm._t_per_token_link == pytest.approx(m.n_moe_layers * per_token / (link.bandwidth_gbs * 1e9))
    assert vllm._fixed - sep._fixed == pytest.approx(m.n_moe_layers * 2 * link.latency_us * 1e-6)
    naive = CostModel.from_config(_sim("vllm", all2all="naive"))
    assert naive._fixed - sep._fixed == pytest.approx(m.n_moe_layers * 5 * link.latency_us * 1e-6)  # 2 dp + 1
    assert naive._t_per_token_link > vllm._t_per_token_link


def test_the_collective_scales_with_the_link():
    fast = CostModel.from_config(_sim("vllm", interconnect={"kind": "nvlink", "bandwidth_gbs": 450, "latency_us": 8}))
    slow = CostModel.from_config(_sim("vllm", interconnect={"kind": "pcie", "bandwidth_gbs": 32, "latency_us": 20}))
    assert slow._t_per_token_link == pytest.approx(fast._t_per_token_link * 450 / 32)
    # a 256-token step: the PCIe pair pays ~44 us more per MoE layer for the collectives alone
    gap = slow.step_time(256, 256 * 1000.0, 256, False) - fast.step_time(256, 256 * 1000.0, 256, False)
    layers = fast.model.n_moe_layers
    want = layers * (2 * 12e-6 + 256 * (2 * 2048 + 128) * 2.0 * (1 / 32e9 - 1 / 450e9))
    assert gap == pytest.approx(want)


def test_one_token_costs_more_split_and_a_full_batch_less():
    """One request's decode touches 8 experts: split over two GPUs it reads as many bytes per GPU (the other
    rank's token touches 8 more) and pays the collectives -- slower. A batch touching every expert reads half of
    them per GPU -- faster."""
    sep, vllm = _pair()
    one = (vllm.step_time(1, 1000.0, 1, False), sep.step_time(1, 1000.0, 1, False))
    assert one[0] > one[1]
    full = (vllm.step_time(256, 256 * 1000.0, 256, False), sep.step_time(256, 256 * 1000.0, 256, False))
    assert full[0] < full[1]
    # the routed experts' weight reads: the experts both ranks' 2 x 256 tokens touch, half of each on each GPU
    touched = vllm.model.routed_bytes_read(256, 1, 2) * vllm._t_per_expert_byte
    assert touched == pytest.approx(sep.model.routed_bytes_read(512) * sep._t_per_expert_byte / 2, rel=1e-9)


def test_lockstep_for_a_moe_model_only_and_a_dense_model_unchanged():
    sim = _sim("vllm")
    assert lockstep_group(sim, CostModel.from_config(sim)) == 2
    assert lockstep_group(_sim("separate"), CostModel.from_config(_sim("separate"))) == 1
    no_lockstep = make_sim(hardware={"preset": "h100"}, model={"name": None, "config": QWEN3}, replicas=2,
                           engine={"dp_mode": "vllm", "dp_lockstep": False})
    assert lockstep_group(no_lockstep, CostModel.from_config(no_lockstep)) == 1
    dense = {"name": "llama-2-7b"}
    d_sep, d_vllm = _sim("separate", model=dense), _sim("vllm", model=dense)
    c_sep, c_vllm = CostModel.from_config(d_sep), CostModel.from_config(d_vllm)
    assert c_vllm.moe_dp == 1 and lockstep_group(d_vllm, c_vllm) == 1
    assert kv_pool(d_vllm, c_vllm) == kv_pool(d_sep, c_sep)
    assert c_vllm.step_time(64, 64 * 500.0, 64, False) == c_sep.step_time(64, 64 * 500.0, 64, False)


def test_a_single_replica_and_the_default_are_unchanged():
    assert make_sim().engine.dp_mode == "separate"
    one_sep, one_vllm = (CostModel.from_config(_sim(mode, replicas=1)) for mode in ("separate", "vllm"))
    assert one_vllm.moe_dp == 1 and one_vllm.step_time(32, 32e3, 32, False) == one_sep.step_time(32, 32e3, 32, False)


def test_expert_parallel_under_vllm_is_the_ep_path():
    sim = _sim("vllm", ep=2)
    cm = CostModel.from_config(sim)
    assert (cm.moe_dp, cm.ep, lockstep_group(sim, cm)) == (1, 2, 2)


@pytest.mark.parametrize("hardware, fragment", [
    ({"tp": 1, "ep": 4}, "sim.hardware.ep 4 with sim.engine.dp_mode vllm"),
    ({"tp": 2, "ep": 2}, "sim.hardware.ep 2 with sim.engine.dp_mode vllm"),
    ({"all2all": "dispatch"}, "sim.hardware.all2all dispatch with sim.engine.dp_mode vllm"),
])
def test_a_layout_vllm_cannot_run_is_refused_naming_the_field(hardware, fragment):
    with pytest.raises(ValidationError, match=fragment):
        _sim("vllm", **hardware)


def test_the_cost_model_refuses_a_dispatch_backend_without_ep():
    sep = CostModel.from_config(_sim("separate"))
    with pytest.raises(LabError, match="sim.hardware.all2all 'dispatch'"):
        CostModel(hw=sep.hw, model=sep.model, moe_dp=2, all2all="dispatch")
    with pytest.raises(LabError, match="needs hardware.ep 1"):
        CostModel(hw=sep.hw, model=sep.model, moe_dp=2, ep=2)


def test_a_spec_sheet_without_a_link_is_refused_under_vllm_data_parallelism(tmp_path):
    """A hand-written spec's link defaults to none (1 GB/s); tp / ep > 1 on it is refused at validation, and so is
    dp_mode vllm over 2 replicas of a MoE model at tp 1 / ep 1, whose MoE collectives are priced on that link too.
    A dense model's DP ranks share nothing: no link needed."""
    spec = {"name": "my-card", "peak_tflops": {"bf16": 990}, "mem_bw_tbs": 3.35, "mem_gib": 80}

    def sim(model=None, **hardware):
        return make_sim(hardware={"spec": spec, **hardware}, model=model or {"name": None, "config": QWEN3},
                        replicas=2, engine={"dp_mode": "vllm"})

    with pytest.raises(LabError) as err:
        CostModel.from_config(sim())
    assert str(err.value).startswith("sim.hardware.spec.interconnect: sim.engine.dp_mode vllm over 2 replicas of a "
                                     "MoE model prices every MoE layer's all-gather and reduce-scatter on the GPUs' "
                                     "link, and hardware.spec gives none: set spec.interconnect")
    link = {"kind": "nvlink", "bandwidth_gbs": 450, "latency_us": 8}
    assert CostModel.from_config(sim(interconnect=link)).moe_dp == 2
    assert CostModel.from_config(make_sim(hardware={"spec": {**spec, "interconnect": link}},
                                          model={"name": None, "config": QWEN3}, replicas=2,
                                          engine={"dp_mode": "vllm"})).moe_dp == 2
    assert CostModel.from_config(sim(model={"name": "llama-2-7b"})).moe_dp == 1  # dense: separate replicas
    one = make_sim(hardware={"spec": spec}, model={"name": None, "config": QWEN3}, replicas=1,
                   engine={"dp_mode": "vllm"})
    assert CostModel.from_config(one).moe_dp == 1
    exp = _experiment(tmp_path)  # `lab validate`: one line, exit 2
    hardware = "sim.hardware={spec: {name: my-card, peak_tflops: {bf16: 990}, mem_bw_tbs: 3.35, mem_gib: 80}}"
    done = lab(["validate", str(exp), "--set", hardware], tmp_path)
    assert_one_error_line(done, "sim.hardware.spec.interconnect: sim.engine.dp_mode vllm over 2 replicas")


def _experiment(tmp_path: Path) -> Path:
    folder = tmp_path / "tests" / "sim" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("dp2_moe_vllm_replay.yaml", "qwen3_30b_a3b_config.json", "vllm_bench_cpu_rate2.json"):
        shutil.copy(DATA / name, folder / name)
    return (folder / "dp2_moe_vllm_replay.yaml").relative_to(tmp_path)


def test_the_replay_fixture_validates_prints_the_split_and_runs_both_ranks(tmp_path):
    exp = _experiment(tmp_path)
    done = lab(["validate", str(exp)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "every expert split over 2 DP ranks x tp 1 = 2 GPUs" in done.stdout
    done = lab(["run", str(exp)], tmp_path)
    assert done.returncode == 0, done.stderr
    requests = pd.concat(pd.read_parquet(p) for p in tmp_path.glob("runs/dp2_moe_vllm_replay/*/sim/requests.parquet"))
    assert len(requests) == 24 and set(requests.replica) == {0, 1}


def test_lab_validate_refuses_ep_that_is_not_one_group_in_one_line(tmp_path):
    exp = _experiment(tmp_path)
    done = lab(["validate", str(exp), "--set", "sim.hardware.ep=4"], tmp_path)
    assert_one_error_line(done, "sim.hardware.ep 4 with sim.engine.dp_mode vllm")
