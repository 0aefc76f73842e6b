"""Cost model: roofline by hand, memory-bound flatness, CUDA-graph padding, measured tables, KV capacity."""
import numpy as np
import pytest

from lab.errors import LabError
from sim.cost import CostModel
from sim.hardware import get_hardware
from sim.models import get_model
from tests.sim.conftest import make_sim


def test_roofline_by_hand():
    hw, m = get_hardware("h100"), get_model("llama-2-7b")
    cm = CostModel(hw, m, step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0, spec_overhead_s=0)
    bw = 3.35e12 * hw.bw_eff
    weights = 6.7e9 * 2 / bw
    assert cm.step_time(1, 0, 1, False) == pytest.approx(weights)
    assert m.kv_bytes_per_token == 2 * 32 * 32 * 128 * 2
    assert cm.step_time(1, 10_000, 1, False) == pytest.approx(weights + 10_000 * m.kv_bytes_per_token / bw)
    big = 8192
    assert cm.step_time(big, 0, 1, False) == pytest.approx(big * 2 * 6.7e9 / (989.5e12 * hw.mfu))
    # memory bound: 64 tokens cost the same as 1; compute bound: cost grows with tokens
    assert cm.step_time(64, 0, 1, False) == cm.step_time(1, 0, 1, False)
    assert cm.step_time(4096, 0, 1, False) > 1.5 * cm.step_time(64, 0, 1, False)
    vec = cm.step_time_vec(np.array([1, 64, 4096]), 0, 1, True)
    assert np.allclose(vec, [cm.step_time(t, 0, 1, True) for t in (1, 64, 4096)])


def test_cuda_graph_buckets_make_sps_jagged():
    sim = make_sim(cost={"cuda_graph_buckets": [8, 16, 32, 64, 128, 256]})
    cm = CostModel.from_config(sim)
    assert cm.step_time(9, 0, 4, True) == cm.step_time(16, 0, 4, True)
    assert cm.step_time(300, 0, 4, True) == pytest.approx(1.1 * CostModel.from_config(make_sim()).step_time(300, 0, 4, True))
    sps = 1 / cm.step_time_vec(np.arange(1, 258), 0, 4, True)
    # flat runs inside a bucket, steps down between buckets, and a cliff where graphs run out
    assert len(np.unique(np.round(sps[:256], 9))) <= 6
    assert sps[256] < 0.95 * sps[255]


def test_measured_table(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("tokens,step_ms\n1,10\n64,10\n512,20\n")
    sim = make_sim(hardware={"name": "mybox", "profile_csv": str(csv)}, cost={"step_overhead_ms": 0})
    cm = CostModel.from_config(sim)
    assert cm.step_time(32, 0, 0, False) == pytest.approx(0.010)
    assert cm.step_time(288, 0, 0, False) == pytest.approx(0.015)
    assert cm.step_time(1024, 0, 0, False) == pytest.approx(0.020 + 512 * (0.010 / 448))
    bad = tmp_path / "bad.csv"
    bad.write_text("tokens,ms\n1,2\n")
    with pytest.raises(LabError, match="tokens, step_ms"):
        CostModel.from_config(make_sim(hardware={"name": "x", "profile_csv": str(bad)}))


def test_kv_capacity_and_tp():
    cm = CostModel(get_hardware("h100"), get_model("llama-2-7b"))
    cap = cm.kv_capacity_tokens(0.9)
    assert cap == int((80 * 2**30 * 0.9 - 6.7e9 * 2) / (2 * 32 * 32 * 128 * 2))
    with pytest.raises(LabError, match="does not fit"):
        CostModel(get_hardware("h100"), get_model("qwen3-32b")).kv_capacity_tokens(0.5)
    tp2 = CostModel(get_hardware("h100"), get_model("qwen3-32b"), tp=2)
    assert tp2.kv_capacity_tokens(0.9) > 0
    one = CostModel(get_hardware("h100"), get_model("qwen3-32b"))
    assert tp2.step_time(1, 0, 1, False) < one.step_time(1, 0, 1, False)


def test_moe_reads_more_experts_as_tokens_grow():
    m = get_model("deepseek-v4-flash-like")
    assert m.weight_bytes_read(1) == pytest.approx(m.active_weight_bytes)
    assert m.weight_bytes_read(2048) == pytest.approx(m.weight_bytes, rel=0.02)
    cm = CostModel(get_hardware("h200"), m, tp=4)
    t = cm.step_time_vec(np.array([1, 8, 64, 512]), 0, 1, False)
    assert np.all(np.diff(t) > 0) and t[2] > 5 * t[0]
    assert np.allclose(t, [cm.step_time(x, 0, 1, False) for x in (1, 8, 64, 512)])
