"""The published fused-MoE kernel timings (sim/validation/moe_kernels.yaml) load and are well formed (ids, sources and cards: test_kernel_data_files.py).

Run: PYTHONPATH=. /work/venv/bin/python -m pytest tests/sim/test_moe_kernels_data.py -q
"""
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parents[2] / "sim" / "validation" / "moe_kernels.yaml"

TOOLS = {"vllm", "sglang", "lab"}
HARNESSES = {"benchmark_moe", "tuning_fused_moe_triton", "bench_moe", "fused_experts", "other"}
DTYPES = {"bf16", "fp16", "fp8_w8a8", "fp8_w8a8_block", "int8_w8a16", "int4_w4a16", "mxfp4_w4a16"}
POSITIVE_INTS = ("tp", "experts", "shard_intermediate", "hidden", "top_k")
REQUIRED = ("id", "tool", "harness", "device", "device_name", "model", *POSITIVE_INTS, "dtype",
            "config", "kernel_us")


@pytest.fixture(scope="module")
def runs() -> list[dict]:
    data = yaml.safe_load(DATA.read_text())
    assert isinstance(data, dict) and isinstance(data.get("runs"), list) and data["runs"]
    return data["runs"]


def test_every_run_has_the_fields(runs):
    for run in runs:
        missing = [k for k in REQUIRED + (("url",) if run.get("tool") != "lab" else ("note",)) if k not in run]
        assert not missing, f"{run.get('id')}: missing {missing}"
        for k in POSITIVE_INTS:
            assert isinstance(run[k], int) and not isinstance(run[k], bool) and run[k] > 0, (run["id"], k)
        assert run["tool"] in TOOLS, run["id"]
        assert run["harness"] in HARNESSES, run["id"]
        assert run["dtype"] in DTYPES, run["id"]
        assert run["device_name"] is None or isinstance(run["device_name"], str), run["id"]
        assert isinstance(run["config"], str) and run["config"], run["id"]


def test_top_k_at_most_experts(runs):
    for run in runs:
        assert run["top_k"] <= run["experts"] * run.get("ep", 1), run["id"]


def test_kernel_times_are_positive_by_positive_batch(runs):
    for run in runs:
        times = run["kernel_us"]
        assert isinstance(times, dict) and times, run["id"]
        for batch, us in times.items():
            assert isinstance(batch, int) and not isinstance(batch, bool) and batch > 0, (run["id"], batch)
            assert isinstance(us, (int, float)) and not isinstance(us, bool) and us > 0, (run["id"], batch)
