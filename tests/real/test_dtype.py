"""target.dtype auto: bf16 only where the device runs it natively, fp32 elsewhere; recorded in the run."""
import json

import pytest
import torch

from lab.config import config_from_dict
from lab.report import target_line
from lab.runs import open_run
from real import targets
from real.targets import load_run_target, resolve_dtype


@pytest.fixture
def cpu_features(monkeypatch):
    """Pretend CPU: set(...) names the bf16 instructions it has."""
    def pretend(*names):
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            monkeypatch.setattr(torch.cpu, probe, lambda probe=probe: probe in names, raising=False)
    return pretend


def test_avx2_cpu_gets_float32(cpu_features):
    cpu_features()
    assert resolve_dtype("auto", "cpu") == "float32"


@pytest.mark.parametrize("feature", ["_is_avx512_bf16_supported", "_is_amx_tile_supported"])
def test_cpu_with_native_bf16_gets_bfloat16(cpu_features, feature):
    cpu_features(feature)
    assert resolve_dtype("auto", "cpu") == "bfloat16"


def test_explicit_dtype_is_kept(cpu_features):
    cpu_features()
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    cpu_features("_is_amx_tile_supported")
    assert resolve_dtype("float32", "cpu") == "float32"


@pytest.mark.parametrize("bf16, expected", [(True, "bfloat16"), (False, "float16")])
def test_cuda_gets_bf16_where_the_card_has_it(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_dtype("auto", "cuda:0") == expected


def test_auto_is_the_default_and_the_run_records_what_it_resolved_to(tmp_path, cpu_features):
    cpu_features()
    cfg = config_from_dict({"name": "t", "output_dir": str(tmp_path), "stages": ["report"],
                           "target": {"name": "tiny-qwen3"}})
    assert cfg.target.dtype == "auto"
    ctx = open_run(cfg, show_progress=False)
    target = load_run_target(ctx)
    assert target.dtype == torch.float32
    record = json.loads(ctx.path(targets.TARGET_RECORD).read_text())
    assert record["dtype"] == "float32" and record["dtype_requested"] == "auto"
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    dtype, desc = target_line(ctx)
    assert dtype == "float32" and "float32 (auto) on cpu" in desc and "CPU capability" in desc


def test_the_run_records_the_few_row_linear_switch(tmp_path):
    cfg = config_from_dict({"name": "t", "output_dir": str(tmp_path), "stages": ["report"],
                           "target": {"name": "tiny-qwen3", "dtype": "float32", "cpu_linear": "on"}})
    ctx = open_run(cfg, show_progress=False)
    load_run_target(ctx)
    record = json.loads(ctx.path(targets.TARGET_RECORD).read_text())["cpu_linear"]
    assert record["mode"] == "on" and record["applied"] and "shapes" not in record
    assert "few-row linears as W @ x^T (on" in target_line(ctx)[1]
