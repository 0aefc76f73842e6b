"""real.bench_kernels: a model's GEMM and attention shapes from its config.json, a kernel table timed on this CPU
in the format sim.kernel_roofline reads, passes merged by their lower median, bad inputs one line and exit 2 with
nothing written over."""
import json
from pathlib import Path

import pytest
import yaml

import lab.io
from real import bench_kernels as bk
from sim.kernel_roofline import load_tables, priced_points

ROOT = Path(__file__).resolve().parents[2]
TINY = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "intermediate_size": 96, "vocab_size": 512, "num_hidden_layers": 3}


def test_layer_shapes_follow_vllm_tensor_parallel_layout():
    qwen3_8b = json.loads((ROOT / "real" / "presets" / "qwen3-8b.json").read_text())
    shapes = bk.layer_shapes(qwen3_8b)
    assert shapes["qkv"] == ((32 + 2 * 8) * 128, 4096) and shapes["o"] == (4096, 32 * 128)
    assert shapes["gate_up"] == (2 * 12288, 4096) and shapes["down"] == (4096, 12288)
    assert shapes["lm_head"] == (qwen3_8b["vocab_size"], 4096)
    tp2 = bk.layer_shapes(qwen3_8b, tp=2)
    assert tp2["qkv"] == ((16 + 2 * 4) * 128, 4096) and tp2["down"] == (4096, 6144)
    tp16 = bk.layer_shapes(qwen3_8b, tp=16)  # past tp = kv heads each GPU keeps one whole KV head
    assert tp16["qkv"] == ((2 + 2 * 1) * 128, 4096)
    assert bk.attention_heads(qwen3_8b, tp=2) == (16, 4, 128)


def test_best_of_passes_keeps_the_lower_median_and_the_spread():
    one = [{"gemm": "qkv", "m": 1, "value": 10.0}, {"gemm": "qkv", "m": 2, "value": 30.0}]
    two = [{"gemm": "qkv", "m": 1, "value": 15.0}, {"gemm": "qkv", "m": 2, "value": 20.0}]
    merged = bk.best_of_passes([one, two])
    assert [(p["value"], p["spread"]) for p in merged] == [(10.0, 1.5), (20.0, 1.5)]


def test_cpu_table_is_written_in_the_format_the_roofline_check_reads(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "kernels.yaml"
    args = ["--config", str(config), "--m", "1,8", "--dtypes", "bf16", "--batches", "1,2", "--contexts", "32",
            "--prefill", "32", "--warmup", "1", "--repeats", "3", "--out", str(out)]
    assert bk.main(args) == 0
    assert bk.main(args + ["--tp", "2"]) == 0  # a second table joins the file
    runs = load_tables(out)
    assert [r["id"].rsplit("-", 1)[0] for r in runs] == ["lab-cpu-tiny-tp1", "lab-cpu-tiny-tp2"]
    table = runs[0]
    assert table["device"] == "cpu" and table["layers"] == 3 and table["timing"]["passes"] == 2
    assert {p["gemm"] for p in table["points"]} == {"qkv", "o", "gate_up", "down", "lm_head"}
    assert len(table["points"]) == 5 * 2 and len(table["attention"]) == 2 + 1
    assert all(p["value"] > 0 and p["spread"] >= 1 for p in table["points"] + table["attention"])
    priced = priced_points(runs)
    assert priced.simulated_us.gt(0).all() and priced.ratio.notna().all()
    assert "GEMM and 3 attention points on cpu" in capsys.readouterr().out


def test_bad_inputs_fail_with_one_line_and_leave_files_alone(tmp_path, capsys):
    other = tmp_path / "notes.yaml"
    other.write_text("hello: world\n")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    assert bk.main(["--config", str(config), "--m", "1", "--attention", "none", "--out", str(other)]) == 2
    assert other.read_text() == "hello: world\n"
    assert "not a kernel table" in capsys.readouterr().err
    assert bk.main(["--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "k.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --config") and len(err.splitlines()) == 1
    config.write_text(json.dumps({k: v for k, v in TINY.items() if k != "vocab_size"}))
    assert bk.main(["--config", str(config), "--out", str(tmp_path / "k.yaml")]) == 2
    assert "vocab_size" in capsys.readouterr().err and not (tmp_path / "k.yaml").exists()
    for key, value in (("hidden_size", 0), ("num_hidden_layers", "36"), ("intermediate_size", True)):
        config.write_text(json.dumps({**TINY, key: value}))
        assert bk.main(["--config", str(config), "--out", str(tmp_path / "k.yaml")]) == 2
        assert key in capsys.readouterr().err and not (tmp_path / "k.yaml").exists()
    with pytest.raises(SystemExit) as exc:
        bk.main(["--config", str(config), "--dtypes", "fp16", "--out", str(tmp_path / "k.yaml")])
    assert exc.value.code == 2


def test_sustained_run_on_a_cpu_has_throughput_and_no_telemetry(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "k.yaml"
    assert bk.main(["--config", str(config), "--m", "1,256", "--dtypes", "bf16", "--attention", "none",
                    "--sustained", "0.3", "--repeats", "2", "--out", str(out)]) == 0
    busy = load_tables(out)[0]["sustained"]
    assert (busy["m"], busy["n"], busy["k"]) == (256, 2 * 96, 64)  # gate/up, the widest layer GEMM
    assert busy["points"] and all(p["tflops"] > 0 and p["sm_mhz"] is None for p in busy["points"])


def test_an_unwritable_output_fails_before_measuring(tmp_path, capsys, monkeypatch):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    measured = []
    monkeypatch.setattr(bk, "run", lambda args: measured.append(args))
    monkeypatch.setattr(lab.io.os, "access", lambda path, mode: False)  # (root ignores mode bits: fake the answer)
    assert bk.main(["--config", str(config), "--m", "1", "--out", str(tmp_path / "out" / "k.yaml")]) == 2
    assert "not writable" in capsys.readouterr().err and measured == []


@pytest.mark.parametrize("args, fragment", [
    (["--out", "{tmp}"], "is a directory, a YAML file path is needed"),  # was found after measuring
    (["--out", "{tmp}/binary.yaml"], "exists and is not UTF-8 text"),  # was a UnicodeDecodeError traceback
    (["--config", "{tmp}/list.json"], "a config.json holds one JSON object, not a list"),  # was AttributeError
    (["--sheet", "h1000"], "argument --sheet: 'h1000' is not a hardware preset"),  # was written into the table
    (["--device", "tpu"], "argument --device: 'tpu' is not a device"),  # was torch's RuntimeError
    (["--repeats", "0"], "argument --repeats: '0': must be at least 1"),  # was StatisticsError after the warm-up
    (["--sustained", "nan"], "argument --sustained: 'nan': a finite number of seconds"),
])
def test_bad_arguments_fail_before_measuring_with_one_line(tmp_path, capsys, monkeypatch, args, fragment):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "binary.yaml").write_bytes(b"\x81\xff\x00runs")
    measured = []
    monkeypatch.setattr(bk, "spin_up", lambda device: measured.append(device))  # the first step of measuring
    argv = ["--config", str(config), "--m", "1", "--attention", "none", "--out", str(tmp_path / "k.yaml")]
    try:
        code = bk.main(argv + [a.format(tmp=tmp_path) for a in args])
    except SystemExit as exc:  # argparse's one line
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and fragment in err and "\n" not in err, err
    assert measured == [] and not (tmp_path / "k.yaml").exists()
    assert (tmp_path / "binary.yaml").read_bytes() == b"\x81\xff\x00runs"


def test_kernel_timer_synchronises_cuda_events_only_on_cuda():
    """The CPU path times with perf_counter and allocates no flush buffer (a CUDA-only object on a CPU box would
    be a device bug the GPU run would hit first)."""
    import torch

    timer = bk.KernelTimer(torch.device("cpu"), warmup=1, repeats=3)
    assert timer.flush is None and not timer.cuda
    assert timer(lambda: sum(range(1000))) > 0
    yaml.safe_dump({"facts": bk.device_facts(torch.device("cpu"))})  # plain types only (torch's version string)
