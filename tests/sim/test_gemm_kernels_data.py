"""The published bf16-vs-low-precision dense GEMM tables (sim/validation/gemm_kernels.yaml) load and are well formed (ids, sources and cards: test_kernel_data_files.py).

Run: PYTHONPATH=. /work/venv/bin/python -m pytest tests/sim/test_gemm_kernels_data.py -q
"""
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parents[2] / "sim" / "validation" / "gemm_kernels.yaml"

HIGH = {"bf16", "fp16"}
LOW = {"fp8_w8a8", "int8_w8a8", "fp4_w4a4", "int4_w4a16"}
UNITS = {"us", "tflops"}
REQUIRED = ("id", "url", "device", "device_name", "tool", "unit", "note", "points")
POINT_KEYS = ("m", "n", "k", "dtype", "kernel", "value")


@pytest.fixture(scope="module")
def runs() -> list[dict]:
    data = yaml.safe_load(DATA.read_text())
    assert isinstance(data, dict) and isinstance(data.get("runs"), list) and data["runs"]
    return data["runs"]


def _is_pos_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def test_every_run_has_the_fields(runs):
    for run in runs:
        missing = [k for k in REQUIRED if k not in run]
        assert not missing, f"{run.get('id')}: missing {missing}"
        assert run["unit"] in UNITS, run["id"]
        assert isinstance(run["tool"], str) and run["tool"], run["id"]
        assert isinstance(run["note"], str) and run["note"], run["id"]
        assert run["device_name"] is None or isinstance(run["device_name"], str), run["id"]
        assert isinstance(run.get("partial", False), bool), run["id"]


def test_points_are_well_formed(runs):
    for run in runs:
        points = run["points"]
        assert isinstance(points, list) and points, run["id"]
        for p in points:
            missing = [k for k in POINT_KEYS if k not in p]
            assert not missing, (run["id"], p, missing)
            assert all(_is_pos_int(p[a]) for a in ("m", "n", "k")), (run["id"], p)
            assert p["dtype"] in HIGH | LOW, (run["id"], p)
            assert isinstance(p["kernel"], str) and p["kernel"], (run["id"], p)
            v = p["value"]
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, (run["id"], p)


def test_points_unique_per_shape_and_kernel(runs):
    for run in runs:
        keys = [(p["m"], p["n"], p["k"], p["kernel"]) for p in run["points"]]
        assert len(keys) == len(set(keys)), run["id"]


def test_every_run_pairs_a_16bit_and_a_low_precision_point_of_one_shape(runs):
    for run in runs:
        if run.get("mamf"):  # a card's Maximum Achievable Matmul FLOPS: one bf16 point by design
            assert [p["dtype"] for p in run["points"]] == ["bf16"], run["id"]
            continue
        high = {(p["m"], p["n"], p["k"]) for p in run["points"] if p["dtype"] in HIGH}
        low = {(p["m"], p["n"], p["k"]) for p in run["points"] if p["dtype"] in LOW}
        assert high & low, f"{run['id']}: no shape timed in both bf16/fp16 and a low-precision format"
