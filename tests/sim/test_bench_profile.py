"""sim.bench_profile: the fit recovers the achievable fractions, CPU terms and overheads behind a synthetic
profile; a bad --fit is one error line."""
import json

import numpy as np
import pytest

from sim.bench_profile import DEFAULT_FIT, fit_sheet, machine_sheet, main, predict_ms
from sim.models import get_model

MACHINE = {"matmul_n": 512, "flops_per_s": 200e9, "copy_mib": 64, "copy_bytes_per_s": 20e9}
MAIN_GRID = [(b, q, c) for b in (1, 4, 16) for q in (1, 4, 8) for c in (128, 512)]  # experiments/cpu_profile.yaml
OTHER_GRID = [(b, q, c) for b in (2, 8) for q in (2, 6) for c in (64, 320)]  # experiments/cpu_profile_check.yaml


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


def _sheet_profile(directory, sheet, grid):
    from dataclasses import replace

    from sim.step_profile import write_profile

    model = replace(get_model("gemma3-270m"), dtype="fp32", kv_dtype="fp32")  # as main() reads --dtype fp32
    b, q, c = (np.array(x) for x in zip(*grid))
    ms = predict_ms(sheet, model, b, q, c)
    rows = [{"batch": int(bi), "query_tokens": int(qi), "context_len": int(ci), "step_ms": float(m),
             "step_ms_p90": float(m), "repeats": 3} for bi, qi, ci, m in zip(b, q, c, ms)]
    meta = {"source": "lab", "model": "gemma3-270m", "dtype": "fp32", "device": "cpu", "hardware": "cpu",
            "cpu_capability": "AVX2", "threads": 2, "versions": {}, "created": "2026-11-26T00:00:00"}
    write_profile(directory, rows, meta)
    return directory


def test_validate_scores_a_fit_on_another_grid(tmp_path, capsys):
    """--validate: terms fitted on every row of one grid predict another grid's rows; a machine the fit can
    describe scores ~0%, and a validation profile that is not the same machine does not."""
    truth = machine_sheet({**MACHINE, "given": True}, "fp32", mfu=0.5, bw_efficiency=0.45, gemm_bw_efficiency=0.6,
                          kv_bw_efficiency=0.12, compute_memory_overlap=0.0)
    _sheet_profile(tmp_path / "main", truth, MAIN_GRID)
    _sheet_profile(tmp_path / "check", truth, OTHER_GRID)
    slower = truth.model_copy(update={"kv_bw_efficiency": 0.03})
    _sheet_profile(tmp_path / "other_machine", slower, OTHER_GRID)
    peaks = ["--peaks", f"{MACHINE['flops_per_s'] / 1e9},{MACHINE['copy_bytes_per_s'] / 1e9}"]
    common = ["--model", "gemma3-270m", "--dtype", "fp32", *peaks]
    assert main([str(tmp_path / "main"), "--validate", str(tmp_path / "check"), "--out", str(tmp_path / "o1"),
                 *common]) == 0
    summary = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert summary["validation"]["median_abs_err_pct"] < 1.0
    assert summary["validation"]["fitted"]["kv_bw_efficiency"] == pytest.approx(0.12, rel=0.05)
    assert (tmp_path / "o1" / "validate.csv").is_file() and "validation (1 profile(s)" in capsys.readouterr().out
    assert main([str(tmp_path / "main"), "--validate", str(tmp_path / "other_machine"), "--out",
                 str(tmp_path / "o2"), *common]) == 0
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["validation"]["median_abs_err_pct"] > 10
    assert main([str(tmp_path / "main"), "--validate", str(tmp_path / "nothing"), *common]) == 2


def test_row_tile_is_given_and_validation_profiles_are_averaged(tmp_path, capsys):
    """A machine whose products run in 8-row tiles: --row-tile 8 predicts the other grid's 12-token steps
    (2 x 6), --row-tile 1 under-prices them; two check profiles are also scored averaged row by row."""
    truth = machine_sheet({**MACHINE, "given": True}, "fp32", mfu=0.5, bw_efficiency=0.45, gemm_bw_efficiency=0.6,
                          kv_bw_efficiency=0.12, compute_memory_overlap=0.0, gemm_row_tile=8)
    _sheet_profile(tmp_path / "main", truth, MAIN_GRID)
    _sheet_profile(tmp_path / "check_a", truth, OTHER_GRID)
    _sheet_profile(tmp_path / "check_b", truth, OTHER_GRID)
    peaks = ["--peaks", f"{MACHINE['flops_per_s'] / 1e9},{MACHINE['copy_bytes_per_s'] / 1e9}"]
    errors = {}
    for tile in (1, 8):
        out = tmp_path / f"tile{tile}"
        assert main([str(tmp_path / "main"), "--validate", str(tmp_path / "check_a"), str(tmp_path / "check_b"),
                     "--model", "gemma3-270m", "--dtype", "fp32", *peaks, "--row-tile", str(tile),
                     "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["machine"]["gemm_row_tile"] == tile and summary["validation"]["profile_noise_median_abs_pct"] == 0
        rows = __import__("pandas").read_csv(out / "validate.csv")
        errors[tile] = rows.loc[rows["query_tokens"] == 6, "fitted_err_pct"]
        assert summary["validation"]["averaged_median_abs_err_pct"] == pytest.approx(
            summary["validation"]["median_abs_err_pct"], abs=1e-6)  # identical profiles: the same score
    assert errors[8].abs().max() < 1.0
    assert (errors[1][rows.loc[rows["query_tokens"] == 6, "batch"] == 2] < -3).all()  # 12 rows priced as 12
    assert "profiles averaged row by row" in capsys.readouterr().out


def test_gemv_rows_is_given_and_prices_few_row_steps_at_the_one_row_rate(tmp_path):
    """A machine whose products read weights at the one-row rate up to 4 rows (session 36's AVX512 box): with
    --gemv-rows 4 the fit recovers it to ~0% on both grids; with 1 it cannot (4-token steps charged the slow
    matrix-matrix read)."""
    truth = machine_sheet({**MACHINE, "given": True}, "fp32", mfu=0.5, bw_efficiency=0.6, gemm_bw_efficiency=0.3,
                          kv_bw_efficiency=0.2, compute_memory_overlap=0.0, gemm_row_tile=8, gemv_rows=4)
    _sheet_profile(tmp_path / "main", truth, MAIN_GRID)
    _sheet_profile(tmp_path / "check", truth, OTHER_GRID)
    peaks = ["--peaks", f"{MACHINE['flops_per_s'] / 1e9},{MACHINE['copy_bytes_per_s'] / 1e9}"]
    scores = {}
    for rows in (1, 4):
        out = tmp_path / f"gemv{rows}"
        assert main([str(tmp_path / "main"), "--validate", str(tmp_path / "check"), "--model", "gemma3-270m",
                     "--dtype", "fp32", *peaks, "--row-tile", "8", "--gemv-rows", str(rows), "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["machine"]["gemv_rows"] == rows
        assert __import__("yaml").safe_load((out / "spec_fitted.yaml").read_text())["gemv_rows"] == rows
        scores[rows] = (summary["fitted_median_abs_err_pct_fit_rows"], summary["validation"]["median_abs_err_pct"])
    assert max(scores[4]) < 1.0 and max(scores[1]) > 3.0


def test_zero_rows_are_one_error_line(tmp_path, capsys):
    for flag in ("--row-tile", "--gemv-rows"):
        with pytest.raises(SystemExit) as exit_info:
            main([str(tmp_path), "--model", "gemma3-270m", flag, "0"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"argument {flag}: '0': must be at least 1" in err[0]


def test_a_profile_row_samples_every_new_position():
    """`lab profile` computes logits at every new position (real/profile.py), so a row of q > 1 tokens per request
    is priced with the LM head on all b x q rows (as drafts), not only on each request's last (vLLM's prefill)."""
    from sim.cost import CostModel
    from sim.models import from_hf_config

    model = from_hf_config("real/presets/gemma3-270m.json")  # vocab 262,144: the head is most of its FLOPs
    sheet = machine_sheet(MACHINE, "bf16")
    cm = CostModel(sheet, model, drafter_layers=0)
    ms = predict_ms(sheet, model, np.array([4]), np.array([8]), np.array([128]))[0]
    assert ms == pytest.approx(cm.step_time(32, 4 * 128.0, 4, False, 28) * 1e3, rel=1e-12)
    assert ms > cm.step_time(32, 4 * 128.0, 4, False) * 1e3 * 1.2  # a prefill's one row each would be far cheaper
