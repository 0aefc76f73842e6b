"""sim.bench_profile: the fit recovers the achievable fractions, CPU terms and overheads behind a synthetic
profile; a bad --fit is one error line."""
import json

import numpy as np
import pytest

from sim.bench_profile import DEFAULT_FIT, fit_sheet, machine_sheet, main, predict_ms
from sim.models import get_model

MACHINE = {"matmul_n": 512, "flops_per_s": 200e9, "copy_mib": 64, "copy_bytes_per_s": 20e9}


def _grid():
    return (np.array(x) for x in zip(*[(b, q, c) for b in (1, 4, 16) for q in (1, 4, 8) for c in (128, 512)]))


@pytest.mark.parametrize("truth, terms", [
    ({"mfu": 0.4, "bw_efficiency": 0.6, "step_overhead_ms": 3.0, "request_overhead_us": 200.0},
     ("mfu", "bw_efficiency", "step_overhead_ms", "request_overhead_us")),
    ({"mfu": 0.5, "bw_efficiency": 0.4, "gemm_bw_efficiency": 0.17, "compute_memory_overlap": 0.0}, DEFAULT_FIT),
])
def test_fit_recovers_a_known_sheet(truth, terms):
    model = get_model("gemma3-270m")
    sheet = machine_sheet(MACHINE, "bf16", **truth)
    b, q, c = _grid()
    rows = {"batch": b, "query_tokens": q, "context_len": c, "step_ms": predict_ms(sheet, model, b, q, c)}
    train = np.arange(len(b)) % 2 == 0
    fitted = fit_sheet(MACHINE, "bf16", model, rows, train, terms)
    assert predict_ms(fitted, model, b, q, c) == pytest.approx(rows["step_ms"], rel=1e-3)
    plain = predict_ms(machine_sheet(MACHINE, "bf16"), model, b, q, c)
    assert np.all(plain < rows["step_ms"])  # peaks and no overheads: the plain roofline is a lower bound


def test_cpu_terms_are_needed_for_a_cpu_shaped_profile():
    """A profile where multi-token steps read weights slower and nothing overlaps: the old four terms
    cannot describe it, the CPU terms can."""
    model = get_model("gemma3-270m")
    sheet = machine_sheet(MACHINE, "bf16", mfu=0.5, bw_efficiency=0.4, gemm_bw_efficiency=0.17,
                          compute_memory_overlap=0.0)
    b, q, c = _grid()
    rows = {"batch": b, "query_tokens": q, "context_len": c, "step_ms": predict_ms(sheet, model, b, q, c)}
    train = np.arange(len(b)) % 2 == 0
    old = fit_sheet(MACHINE, "bf16", model, rows, train,
                    ("mfu", "bw_efficiency", "step_overhead_ms", "request_overhead_us"))
    err = np.abs(predict_ms(old, model, b, q, c) / rows["step_ms"] - 1)
    assert np.median(err[~train]) > 0.05


def test_profiles_of_one_grid_are_averaged_and_their_noise_reported(tmp_path):
    from sim.bench_profile import average_profiles
    from sim.step_profile import read_profile
    from tests.sim.test_cost import write_grid_profile

    a = read_profile(write_grid_profile(tmp_path / "a", lambda b, q, c: 10.0 * b))
    b = read_profile(write_grid_profile(tmp_path / "b", lambda b, q, c: 12.0 * b))
    frame, noise = average_profiles([a, b])
    assert np.allclose(frame["step_ms"], 11.0 * frame["batch"])
    assert np.allclose(frame["step_ms_1"], 10.0 * frame["batch"]) and noise == pytest.approx(100 / 11)
    assert average_profiles([a])[1] is None


@pytest.mark.parametrize("args, message", [
    (["--fit", "mfu,warp_speed"], "error: --fit: warp_speed"),
    (["--peaks", "138"], "error: --peaks: '138' is not GFLOPS,GBS"),
    (["--peaks", "138,-1"], "error: --peaks: '138,-1': both must be positive"),
])
def test_bad_option_is_one_error_line(tmp_path, capsys, args, message):
    assert main([str(tmp_path), "--model", "gemma3-270m", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)


def test_given_peaks_replace_the_measurement(tmp_path, capsys):
    from tests.sim.test_cost import write_grid_profile

    write_grid_profile(tmp_path / "p", lambda b, q, c: 50.0 + b * q)
    out = tmp_path / "out"
    assert main([str(tmp_path / "p"), "--model", "gemma3-270m", "--dtype", "fp32", "--peaks", "100,10",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["machine"]["flops_per_s"] == 100e9 and summary["machine"]["given"]
    assert (out / "residuals.png").is_file() and summary["swapped_split"]["fitted"].keys() == set(DEFAULT_FIT)
