"""The published fused-MoE kernel timings (sim/validation/moe_kernels.yaml) load and are well formed.

Run: PYTHONPATH=. /work/venv/bin/python -m pytest tests/test_moe_kernels_data.py -q
"""
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parents[2] / "sim" / "validation" / "moe_kernels.yaml"

DEVICES = {"h100", "h200", "a100-80g", "a100-40g", "b200", "h20", "rtx-4090", "l40s", "rtx-pro-6000",
           "mi300x", "other"}
TOOLS = {"vllm", "sglang"}
HARNESSES = {"benchmark_moe", "tuning_fused_moe_triton", "other"}
DTYPES = {"bf16", "fp16", "fp8_w8a8", "fp8_w8a8_block", "int8_w8a16", "int4_w4a16"}
POSITIVE_INTS = ("tp", "experts", "shard_intermediate", "hidden", "top_k")
REQUIRED = ("id", "url", "tool", "harness", "device", "device_name", "model", *POSITIVE_INTS, "dtype",
            "config", "kernel_us")


@pytest.fixture(scope="module")
def runs() -> list[dict]:
    data = yaml.safe_load(DATA.read_text())
    assert isinstance(data, dict) and isinstance(data.get("runs"), list) and data["runs"]
    return data["runs"]


def test_every_run_has_the_fields(runs):
    for run in runs:
        missing = [k for k in REQUIRED if k not in run]
        assert not missing, f"{run.get('id')}: missing {missing}"
        for k in POSITIVE_INTS:
            assert isinstance(run[k], int) and not isinstance(run[k], bool) and run[k] > 0, (run["id"], k)
        assert run["tool"] in TOOLS, run["id"]
        assert run["harness"] in HARNESSES, run["id"]
        assert run["dtype"] in DTYPES, run["id"]
        assert run["device_name"] is None or isinstance(run["device_name"], str), run["id"]
        assert isinstance(run["config"], str) and run["config"], run["id"]


def test_ids_unique_and_lowercase(runs):
    ids = [run["id"] for run in runs]
    assert len(ids) == len(set(ids))
    assert all(i == i.lower() and " " not in i for i in ids)


def test_urls_are_https(runs):
    for run in runs:
        for key in ("url", "also_posted"):
            if key in run:
                assert str(run[key]).startswith("https://"), (run["id"], key)


def test_devices_are_presets_or_other(runs):
    for run in runs:
        assert run["device"] in DEVICES, run["id"]
        if run["device"] == "other":
            assert run["device_name"], f"{run['id']}: an `other` device must say which card"


def test_top_k_at_most_experts(runs):
    for run in runs:
        assert run["top_k"] <= run["experts"], run["id"]


def test_kernel_times_are_positive_by_positive_batch(runs):
    for run in runs:
        times = run["kernel_us"]
        assert isinstance(times, dict) and times, run["id"]
        for batch, us in times.items():
            assert isinstance(batch, int) and not isinstance(batch, bool) and batch > 0, (run["id"], batch)
            assert isinstance(us, (int, float)) and not isinstance(us, bool) and us > 0, (run["id"], batch)
