"""sim.gemm_growth: the published decode-GEMM leak per die, the overlap the Ada sheets take from it, what it does to
a decode step on the RTX 4090, and bad files failing with one line and exit 2."""
import pytest
import yaml

from lab.errors import LabError
from sim import gemm_growth as gg
from sim.cost import CostModel
from sim.gemm_kernels import load_points
from sim.hardware import get_hardware
from sim.models import from_hf_config


def test_published_leaks_ada_torch_cutlass_and_hopper():
    """The file's runs: Ada (L40S, PR 6677) leaks 0.26-0.46 of the extra rows' peak FLOP time with torch, 0.43-0.78
    with vLLM's CUTLASS kernels; Hopper (H100, PR 49363) 0.20 -- and the Llama-3-8B gate_up by hand."""
    table = gg.leak_table(load_points(gg.DEFAULT_FILE))
    torch_ada = table[(table.die == "ada") & (table.kernel == "torch")].leak
    cutlass_ada = table[(table.die == "ada") & (table.kernel == "cutlass")].leak
    assert len(torch_ada) == len(cutlass_ada) == 4 and 0.25 < torch_ada.min() and torch_ada.max() < 0.47
    assert 0.43 < cutlass_ada.min() and cutlass_ada.max() < 0.79
    row = table[(table.run == "vllm6677-l40s-llama3-8b-gate-up") & (table.kernel == "torch")].iloc[0]
    assert row.leak == pytest.approx((200.6 - 181.9) / (127 * 2 * 4096 * 28672 / 733e12 * 1e6), abs=1e-3)
    leaks = gg.die_leaks(table)
    assert leaks == {"ada": pytest.approx(0.362, abs=1e-3), "hopper": pytest.approx(0.198, abs=1e-3)}
    assert gg.die_leaks(table, "cutlass")["ada"] > leaks["ada"] > leaks["hopper"]


def test_ada_sheets_take_their_dies_leak_and_others_stay_the_roofline():
    """Every Ada sheet (rtx-4090, l40s, l40, rtx-6000-ada: AD102; l4: AD104): compute_memory_overlap = 1 - leak x mfu
    (a sheet edit that skips it fails here); every other GPU sheet keeps the roofline's max (overlap 1)."""
    leak = gg.die_leaks(gg.leak_table(load_points(gg.DEFAULT_FILE)))["ada"]
    for name in gg.PRICED:
        hw = get_hardware(name)
        assert hw.compute_memory_overlap == gg.implied_overlap(leak, hw.mfu) < 1, name
    assert set(gg.PRICED) == {"rtx-4090", "l40s", "l40", "rtx-6000-ada", "l4"}
    for name in ("h100", "h200", "h100-pcie", "a100-80g", "rtx-5090", "rtx-pro-6000", "a40", "rtx-a6000", "a10g"):
        assert get_hardware(name).compute_memory_overlap == 1.0, name


def test_a_4090_decode_step_grows_by_the_leak_per_request():
    """On one RTX 4090 (DeepSeek-R1-Distill-Qwen-7B, no overheads), a decode step's growth from 4 to 40 requests at a
    short context is its KV reads plus the leak: (1 - overlap) x the 36 rows' FLOPs at mfu x peak = leak x FLOPs
    at the peak -- ~33 us a request, where the roofline (overlap 1) adds only the KV."""
    hw, m = get_hardware("rtx-4090"), from_hf_config("sim/validation/configs/deepseek-r1-distill-qwen-7b.json")
    def grow(sheet):
        cm = CostModel(sheet, m, step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0, spec_overhead_s=0)
        return cm.step_time(40, 40 * 300, 40, False) - cm.step_time(4, 4 * 300, 4, False)
    roofline = grow(hw.model_copy(update={"compute_memory_overlap": 1.0}))
    leak = gg.die_leaks(gg.leak_table(load_points(gg.DEFAULT_FILE)))["ada"]
    extra = (grow(hw) - roofline) / 36  # seconds a request
    assert extra == pytest.approx(leak * 2 * m.active_params_b * 1e9 / (hw.peak_tflops["bf16"] * 1e12), rel=0.05)
    assert 25e-6 < extra < 40e-6 and roofline / 36 < 30e-6  # ~33 us a request beside the KV's ~20


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(device="other"), "without a preset"),
    (lambda r: r.update(points=[p for p in r["points"] if p["m"] != 128]), "m 1 and m 128"),
    (lambda r: r.update(points=[{**p, "n": 4096} for p in r["points"]]), "fit the l40s's 96 MiB L2"),
])
def test_bad_runs_fail_with_one_line(tmp_path, capsys, edit, message):
    run = yaml.safe_load(gg.DEFAULT_FILE.read_text())["runs"][0]
    edit(run)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"runs": [run]}))
    with pytest.raises(LabError, match=message):
        gg.leak_table(load_points(path), str(path))
    assert gg.main(["--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_main_prints_the_table_and_the_sheets_overlap(capsys):
    assert gg.main([]) == 0
    out = capsys.readouterr().out
    assert "| vllm6677-l40s-llama3-8b-gate-up |" in out and "mean leak, torch:" in out
    assert "rtx-4090: ada leak 0.362 (torch) x mfu 0.6 -> compute_memory_overlap 0.783 (sheet: 0.783)" in out
