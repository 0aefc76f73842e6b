"""CUDA-graph memory in vLLM's KV sizing (sim/cuda_graphs.py, engine.cuda_graph_memory): the graph counts vLLM's
default capture sizes give (as its logs print them), the estimate kept from the KV cache by the simulator as
vLLM 0.20+ does, the version rule of the public rows, and the logs and fit of sim/vllm_memory.py."""
import pandas as pd
import pydantic
import pytest
import yaml

from lab.errors import LabError
from sim import vllm_memory as vm
from sim.cuda_graphs import (
    CUDA_GRAPH_FIRST_BYTES,
    CUDA_GRAPH_PER_GRAPH_BYTES,
    capture_sizes,
    cuda_graph_memory_bytes,
    graph_counts,
)
from sim.hardware import get_hardware, vllm_serve_batch_defaults
from sim.kv_cache import GIB
from sim.public_check import load_rows, row_sim_config, vllm_version_defaults
from sim.simulate import _cost_model, engine_cuda_graph_bytes, kv_pool
from tests.sim.conftest import make_sim


@pytest.mark.parametrize("seqs, tokens, counts", [
    (256, 8192, (51, 35)),   # "PIECEWISE=51 (largest=512), FULL=35 (largest=256)": vLLM's defaults on a < 70 GiB card
    (1024, 8192, (51, 51)),  # 1024 sequences: both capped at 512
    (40, 8192, (13, 8)),     # a logged --max-num-seqs 40: "PIECEWISE=13 (largest=80), FULL=8 (largest=40)"
    (2, 8192, (3, 2)),       # --max-num-seqs 2: capture sizes [1, 2, 4], FULL [1, 2]
    (256, 64, (11, 11)),     # max_num_batched_tokens caps the sizes: [1, 2, 4, 8, 16, ..., 56, 64]
])
def test_graph_counts_follow_vllms_default_capture_sizes(seqs, tokens, counts):
    assert graph_counts(seqs, tokens) == counts
    piecewise, full = capture_sizes(seqs, tokens)
    assert piecewise == sorted(set(piecewise)) and set(full) <= set(piecewise)
    assert graph_counts(seqs, tokens, full=False) == (counts[0], 0)


def test_speculative_tokens_widen_the_capture_sizes():
    assert max(capture_sizes(8, 8192)[0]) == 16 and max(capture_sizes(8, 8192, spec_tokens=3)[0]) == 64
    assert max(capture_sizes(8, 8192, spec_tokens=3)[1]) == 32


def test_the_estimate_is_the_first_capture_plus_each_further_graph():
    assert cuda_graph_memory_bytes(0, 0) == 0.0
    assert cuda_graph_memory_bytes(1, 1) == CUDA_GRAPH_FIRST_BYTES
    assert cuda_graph_memory_bytes(51, 35) == pytest.approx(CUDA_GRAPH_FIRST_BYTES + 84 * CUDA_GRAPH_PER_GRAPH_BYTES)
    assert 0.6 * GIB < cuda_graph_memory_bytes(51, 35) < 1.0 * GIB  # vLLM's logs: 0.53 - 1.58 GiB for 51 + 35


def _pool(**engine):
    sim = make_sim(engine={"block_size": 16, **engine})
    return kv_pool(sim, _cost_model(sim, None, None))[1], sim


def test_the_simulator_keeps_the_estimate_from_the_kv_cache():
    """engine.cuda_graph_memory: estimate (the default, vLLM 0.20+) takes the estimate off each GPU's KV memory,
    none (vLLM < 0.20, --enforce-eager) nothing, a number that many GiB."""
    none, _ = _pool(cuda_graph_memory="none")
    estimate, sim = _pool()
    assert sim.engine.cuda_graph_memory == "estimate"
    cost = _cost_model(sim, None, None)
    block = cost.model.kv_bytes_per_token * 16
    limits = vllm_serve_batch_defaults(cost.hw)  # the engine leaves them to `vllm serve`'s defaults
    graphs = cuda_graph_memory_bytes(*graph_counts(limits["max_num_seqs"], limits["max_num_batched_tokens"]))
    assert engine_cuda_graph_bytes(sim, cost) == graphs
    assert none - estimate == pytest.approx(graphs / block, abs=1)
    given, sim2 = _pool(cuda_graph_memory=2.0)
    assert engine_cuda_graph_bytes(sim2, cost) == 2.0 * GIB and none - given == pytest.approx(2 * GIB / block, abs=1)
    fewer, sim3 = _pool(max_num_seqs=2)  # 3 + 2 graphs: a smaller estimate, more KV
    assert engine_cuda_graph_bytes(sim3, cost) < graphs and fewer > estimate


def test_a_device_without_graphs_keeps_nothing_back_for_them():
    """The cpu sheet (graphs: false): the estimate is 0 whatever the engine says."""
    sim = make_sim(hardware={"preset": "cpu"}, model={"name": "gemma3-270m"})
    cost = _cost_model(sim, None, None)
    assert cost.hw.graphs is False and engine_cuda_graph_bytes(sim, cost) == 0.0
    assert get_hardware("h100").graphs is True


@pytest.mark.parametrize("value", ["sometimes", -1.0])
def test_a_bad_setting_is_refused(value):
    with pytest.raises(pydantic.ValidationError, match="cuda_graph_memory"):
        make_sim(engine={"cuda_graph_memory": value})


def test_public_rows_apply_it_from_vllm_0_20():
    assert vllm_version_defaults(None) == {"cuda_graph_memory": "none", "gpu_memory_utilization": 0.9}
    assert vllm_version_defaults("0.19.1")["cuda_graph_memory"] == "none"
    assert vllm_version_defaults("0.19.2rc1.dev8")["gpu_memory_utilization"] == 0.9  # before PR 38284
    new = vllm_version_defaults("0.20.0")
    assert new["cuda_graph_memory"] == "estimate" and new["gpu_memory_utilization"] == 0.92  # PR 38284's default
    rows = {r.id: r for r in load_rows(vm.REPO_ROOT / "sim" / "validation" / "public_vllm.yaml")}
    kube = row_sim_config(rows["kubesimplify-rtxpro6000-tp2-qwen3-32b-c32"]).engine  # vLLM 0.27.1, util given
    assert kube.cuda_graph_memory == "estimate" and kube.gpu_memory_utilization == 0.426
    old = next(r for r in rows.values() if r.vllm and r.vllm.startswith("0.11"))
    assert row_sim_config(old).engine.cuda_graph_memory == "none"
    assert row_sim_config(old).engine.gpu_memory_utilization == 0.9  # the engine's own default is 0.92


def test_the_logs_read_back_and_the_constants_price_them():
    logs = vm.load_logs(vm.DEFAULT_FILE)
    table = vm.compare_cuda_graphs(logs)
    assert len(table) >= 8 and table.applied.any() and (~table.applied).any()
    assert table.error_gib.abs().mean() < 0.25  # in sample; leave-one-out in the --fit report
    for row in table[table.default_counts != ""].itertuples():
        if row.version < "0.2" and row.tokens <= 8192:  # no speculative decoding, no capture-size flags
            assert row.default_counts == f"{row.piecewise}/{row.full}", row.id
    applied = next(log for log in logs if log.cuda_graphs and log.kv_gib is not None)
    usable = applied.usable_gib or applied.total_gib * applied.util
    assert applied.logged_reserve_gib() == pytest.approx(usable - applied.weights_gib - applied.kv_gib
                                                         - applied.cuda_graph_gib)
    assert all(log.id not in set(vm.compare(logs).id) for log in logs if not log.reserve_fit)


def test_fit_recovers_the_constants_a_table_was_made_with():
    first, per = 0.4, 5.0 / 1024
    counts = [(51, 35), (3, 2), (3, 1), (1, 1), (9, 5), (51, 51), (13, 8), (16, 0)]
    rows = [{"id": f"s{i}", "version": "0.2x", "applied": True, "model": "m", "tokens": 8192, "max_num_seqs": 0,
             "piecewise": p, "full": f, "default_counts": "", "actual_gib": float("nan"), "sim_gib": 0.0,
             "error_gib": 0.0, "source": f"src{i}",
             "logged_gib": first + per * (max(p - 1, 0) + max(f - 1, 0)) + (0.5 if i == 1 else 0.0)}
            for i, (p, f) in enumerate(counts)]
    fit = vm.fit_cuda_graphs(pd.DataFrame(rows, columns=vm.CUDA_GRAPH_COLUMNS), "lad")
    assert fit["first_mib"] == pytest.approx(first * 1024, abs=1) and fit["per_graph_mib"] == pytest.approx(5.0, abs=0.05)
    others = [e for i, e in enumerate(fit["loo_error_gib"]) if i != 1]
    assert max(abs(e) for e in others) < 0.01  # an outlier of few graphs (+0.5 GiB) does not move the others


def _log(**patch):
    run = {"id": "x", "url": "https://example.org", "device": "h100", "total_gib": 80.0, "total_source": "log",
           "util": 0.9, "tp": 1, "tokens": 8192, "tokens_basis": "logged", "model": "m", "hidden": 4096,
           "engine": "V1", "version": "0.23.0", "weights_gib": 10.0, "kv_gib": 60.0, "cuda_graphs": True,
           "cuda_graph_gib": 0.5, "piecewise_graphs": 51, "full_graphs": 35}
    return {**run, **patch}


@pytest.mark.parametrize("patch", [{"cuda_graph_gib": None, "piecewise_graphs": None, "full_graphs": None},
                                   {"full_graphs": None}, {"hidden": None}])
def test_a_log_missing_its_cuda_graph_fields_is_refused(tmp_path, patch):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"runs": [_log(**patch)]}))
    with pytest.raises(LabError, match=r"runs\[0\]"):
        vm.load_logs(path)
    path.write_text(yaml.safe_dump({"runs": [_log()]}))
    assert vm.load_logs(path)[0].logged_reserve_gib() == pytest.approx(72.0 - 10.0 - 60.0 - 0.5)
