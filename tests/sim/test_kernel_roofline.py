"""sim.kernel_roofline: measured GPU kernels priced by the cost model; the implied fractions recover what a
synthetic table was made with; the kernel-sum step; a lab profile against the roofline; the repository's measured
tables; bad files one line and exit 2."""
import json

import pytest
import yaml

from sim import kernel_roofline as kr
from sim.gemm_kernels import sim_seconds
from sim.hardware import get_hardware, preset_for_device
from sim.step_profile import write_profile

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (24576, 4096), "down": (4096, 12288),
          "lm_head": (151936, 4096)}


def _table(path, bw=0.6, mfu=0.7, kv=0.5):
    """A qwen3-8b-shaped H100 table made from the cost model itself on a sheet with planted fractions."""
    sheet = get_hardware("h100").model_copy(update={"bw_efficiency": bw, "mfu": mfu, "attn_mfu": mfu,
                                                    "kv_bw_efficiency": kv,
                                                    "lowp_matmul_efficiency": {"fp8": 0.9}})
    points = []
    for name, (n, k) in SHAPES.items():
        for m in (1, 8, 32, 4096, 8192):
            for dtype in ("bf16", "fp8_w8a8"):
                points.append({"gemm": name, "m": m, "n": n, "k": k, "dtype": dtype, "kernel": dtype,
                               "value": sim_seconds(sheet, m, n, k, dtype) * 1e6})
    attention = []
    for phase, batch, context in (("decode", 1, 512), ("decode", 32, 8192), ("decode", 128, 8192),
                                  ("prefill", 1, 4096), ("prefill", 1, 8192)):
        us = kr.attention_seconds(sheet, phase, batch, context, 32, 8, 128) * 1e6
        attention.append({"phase": phase, "batch": batch, "query_tokens": 1 if phase == "decode" else context,
                          "context": context, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "value": us})
    path.write_text(yaml.safe_dump({"runs": [{"id": "synthetic", "device": "h100", "unit": "us", "model": "qwen3-8b",
                                              "tp": 1, "layers": 36, "points": points, "attention": attention}]}))
    return path


def test_implied_fractions_recover_a_planted_sheet(tmp_path):
    runs = kr.load_tables(_table(tmp_path / "k.yaml"))
    terms = kr.implied(runs, kr.priced_points(runs)).set_index("term").implied
    assert terms["bw_efficiency"] == pytest.approx(0.6, rel=1e-3)  # the slope of time over weight bytes
    assert terms["gemm mfu"] == pytest.approx(0.7, rel=1e-3)
    assert terms["lowp_matmul_efficiency fp8"] == pytest.approx(0.9, rel=1e-3)
    assert terms["kv_bw_efficiency"] == pytest.approx(0.5, rel=1e-3)
    assert terms["attention mfu"] == pytest.approx(0.7, rel=1e-3)
    assert terms["small-GEMM floor us"] == pytest.approx(0.0, abs=1e-3)  # its intercept: none planted


def test_small_gemm_floor_is_the_intercept_beyond_the_bandwidth(tmp_path):
    path = _table(tmp_path / "k.yaml")
    data = yaml.safe_load(path.read_text())
    for p in data["runs"][0]["points"]:
        p["value"] += 7.0  # every kernel 7 us slower: a launch / tail floor
    path.write_text(yaml.safe_dump(data))
    runs = kr.load_tables(path)
    terms = kr.implied(runs, kr.priced_points(runs)).set_index("term").implied
    assert terms["small-GEMM floor us"] == pytest.approx(7.0, abs=1e-3)
    assert terms["bw_efficiency"] == pytest.approx(0.6, rel=1e-3)


def test_points_carry_the_ratio_to_the_preset(tmp_path):
    runs = kr.load_tables(_table(tmp_path / "k.yaml"))
    points = kr.priced_points(runs)
    small = points[(points.kind == "gemm bf16") & (points.m == 1)]
    assert small.ratio.to_numpy() == pytest.approx(0.75 / 0.6, rel=1e-6)
    big = points[(points.kind == "gemm bf16") & (points.m == 8192)]
    assert big.ratio.to_numpy() == pytest.approx(get_hardware("h100").mfu / 0.7, rel=1e-6)


def test_kernel_sum_step_adds_layers_and_the_lm_head(tmp_path):
    runs = kr.load_tables(_table(tmp_path / "k.yaml", bw=0.75, mfu=0.35, kv=0.75))
    steps = kr.kernel_steps(runs, kr.priced_points(runs))
    assert set(zip(steps.batch, steps.context)) == {(1, 512), (32, 8192)}  # no M = 128 GEMMs in the table
    # made on the preset's own fractions: the kernels back to back equal the roofline without overheads, up to the
    # roofline's max(memory, compute) over the whole step vs per kernel
    assert steps.kernel_sum_over_roofline.to_numpy() == pytest.approx(1.0, abs=0.02)
    assert (steps.roofline_with_overheads_ms > steps.roofline_ms).all()


def test_profile_rows_against_the_roofline_of_their_card(tmp_path):
    rows = [{"batch": b, "query_tokens": q, "context_len": c, "step_ms": 10.0 * b, "step_ms_p90": 11.0 * b,
             "repeats": 5} for b in (1, 8) for q in (1, 4) for c in (512, 2048)]
    meta = {"source": "lab", "model": "qwen3-8b", "dtype": "bfloat16", "device": "cuda:0",
            "hardware": "NVIDIA H100 80GB HBM3", "cpu_capability": None, "threads": None, "versions": {},
            "created": "2026-11-27T00:00:00+00:00"}
    write_profile(tmp_path, rows, meta)
    frame = kr.profile_vs_roofline(tmp_path, None)
    assert set(frame.sheet) == {"h100"} and len(frame) == 8
    assert (frame.roofline_ms > 5).all() and frame.measured_over_roofline.notna().all()
    (tmp_path / "step_profile.json").write_text(json.dumps({**meta, "hardware": "Some Card"}))
    with pytest.raises(kr.LabError, match="no hardware preset matches"):
        kr.profile_vs_roofline(tmp_path, None)


def test_preset_for_device_reads_torch_and_smi_names():
    assert preset_for_device("NVIDIA H100 80GB HBM3") == "h100" and preset_for_device("NVIDIA H200") == "h200"
    assert preset_for_device("NVIDIA H100 PCIe") == "h100-pcie"
    assert preset_for_device("NVIDIA H20") == "h20" and preset_for_device("NVIDIA A100-SXM4-40GB") == "a100-40g"
    assert preset_for_device("NVIDIA GeForce RTX 4090") == "rtx-4090" and preset_for_device("cpu AVX2") == "cpu"
    assert preset_for_device("Tesla T4") == "other"
    from lab.config_sim import HARDWARE_NAMES
    from sim.hardware import DEVICE_NAME_KEYS
    assert {preset for _, preset in DEVICE_NAME_KEYS} | {"a100-40g", "cpu"} <= set(HARDWARE_NAMES)


def test_the_repository_tables_price_every_point_and_give_a_step_per_run(tmp_path, capsys):
    assert kr.main(["--fit", "--out", str(tmp_path)]) == 0
    runs = kr.load_tables(kr.DEFAULT_FILE)
    assert {r["device"] for r in runs} == {"h100", "h200"}
    points = kr.priced_points(runs)
    assert points.ratio.notna().all() and (points.measured_us > 0).all()
    steps = kr.kernel_steps(runs, points)
    assert set(steps.run) == {r["id"] for r in runs if r["points"]}
    assert any(r.get("sustained") for r in runs)
    assert {"points.csv", "steps.csv", "implied.csv", "summary.md"} <= {p.name for p in tmp_path.iterdir()}
    assert "Kernel-sum decode step" in capsys.readouterr().out


def test_bad_files_fail_with_one_line(tmp_path, capsys):
    bad = tmp_path / "k.yaml"
    bad.write_text(yaml.safe_dump({"runs": [{"id": "x", "device": "h100", "unit": "tflops", "points": []}]}))
    assert kr.main(["--file", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "runs[0].unit" in err and len(err.splitlines()) == 1
    for device in ("other", "h1000"):
        bad.write_text(yaml.safe_dump({"runs": [{"id": "x", "device": device, "unit": "us", "points": []}]}))
        assert kr.main(["--file", str(bad), "--out", str(tmp_path / "o")]) == 2
        assert "hardware preset" in capsys.readouterr().err
    point = {"gemm": "qkv", "m": 1, "n": 8, "k": 8, "dtype": "bf16", "value": "fast"}
    bad.write_text(yaml.safe_dump({"runs": [{"id": "x", "device": "h100", "unit": "us", "points": [point]}]}))
    assert kr.main(["--file", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "runs[0].points[0]" in capsys.readouterr().err
    assert kr.main(["--profile", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err


POINT = {"gemm": "qkv", "m": 1, "n": 8, "k": 8, "dtype": "bf16", "value": 1.0}
ATTENTION = {"phase": "decode", "batch": 1, "context": 64, "q_heads": 8, "kv_heads": 8, "head_dim": 64, "value": 1.0}


@pytest.mark.parametrize("changes, field", [
    ({"tp": "two"}, "runs[0].tp"), ({"tp": 0}, "runs[0].tp"), ({"layers": [36]}, "runs[0].layers"),
    ({"points": None}, "runs[0].points"), ({"points": 5}, "runs[0].points"), ({"points": [1]}, "runs[0].points"),
    ({"points": [{**POINT, "m": "one"}]}, "runs[0].points[0]"), ({"points": [{**POINT, "n": None}]}, "runs[0].points[0]"),
    ({"points": [{**POINT, "gemm": ["qkv"]}]}, "runs[0].points[0]"),
    ({"attention": [{**ATTENTION, "batch": 1.5}]}, "runs[0].attention[0]"), ({"attention": 3}, "runs[0].attention"),
])
def test_a_bad_field_is_one_line_not_a_traceback(tmp_path, capsys, changes, field):
    """Each of these passed the loader and failed later in pricing with a TypeError / ValueError traceback."""
    bad = tmp_path / "k.yaml"
    bad.write_text(yaml.safe_dump({"runs": [{"id": "x", "device": "h100", "unit": "us", "model": "qwen3-8b",
                                             "layers": 36, "points": [POINT], **changes}]}))
    assert kr.main(["--fit", "--file", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and field in err[0], err
    assert not (tmp_path / "o" / "points.csv").exists()


def test_a_table_of_gemms_only_or_of_no_points_still_fits(tmp_path):
    """--fit over a file without attention rows (or a run with no points) wrote nothing and raised AttributeError /
    KeyError; the terms it cannot see are left empty."""
    path = tmp_path / "k.yaml"
    for points in ([POINT], []):
        path.write_text(yaml.safe_dump({"runs": [{"id": "x", "device": "h100", "unit": "us", "points": points}]}))
        assert kr.main(["--fit", "--file", str(path), "--out", str(tmp_path / "o")]) == 0
        assert (tmp_path / "o" / "implied.csv").is_file()


def test_a_sustained_run_reports_the_mfu_of_its_settled_half(tmp_path):
    peak = get_hardware("h100").peak_for("bf16")
    busy = [{"t_s": i / 2, "tflops": 0.8 * peak if i < 4 else 0.6 * peak, "sm_mhz": 1980 if i < 4 else 1300,
             "power_w": 700.0} for i in range(8)]
    path = tmp_path / "k.yaml"
    path.write_text(yaml.safe_dump({"runs": [{"id": "busy", "device": "h100", "unit": "us", "points": [],
                                              "sustained": {"m": 8192, "n": 8192, "k": 8192, "points": busy}}]}))
    runs = kr.load_tables(path)
    terms = kr.implied(runs, kr.priced_points(runs))
    assert list(terms.term) == ["sustained gemm mfu"]
    assert terms.implied.iloc[0] == pytest.approx(0.6, rel=1e-3) and "1300 MHz" in terms["from"].iloc[0]
