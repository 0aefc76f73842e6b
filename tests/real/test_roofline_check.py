"""real.roofline_check: scores the profiles it finds (fit grid against the other grid) with the given CPU
properties, writes its verdict; bad options and a missing grid are one error line."""
import json

import pytest

from sim.bench_profile import machine_sheet
from real.roofline_check import main
from tests.sim.test_bench_profile import MACHINE, MAIN_GRID, OTHER_GRID, _sheet_profile


def _grids(runs, sheet):
    _sheet_profile(runs / "cpu_profile" / "a", sheet, MAIN_GRID)
    _sheet_profile(runs / "cpu_profile_check" / "a", sheet, OTHER_GRID)


def test_scores_the_profiles_it_holds(tmp_path, capsys):
    truth = machine_sheet({**MACHINE, "given": True}, "fp32", mfu=0.5, bw_efficiency=0.6, gemm_bw_efficiency=0.3,
                          kv_bw_efficiency=0.2, compute_memory_overlap=0.0, gemm_row_tile=8, gemv_rows=4)
    _grids(tmp_path / "runs", truth)
    assert main(["--skip-measure", "--gemv-rows", "4", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["gemv_rows"] == 4 and summary["row_tile"] == 8 and summary["fit_profiles"] == 1
    assert summary["goal_pct"] == 5.0 and summary["goal_met"] == (summary["other_grid_median_abs_err_pct"] <= 5.0)
    assert (tmp_path / "bench_profile" / "validate.csv").is_file()
    assert "roofline check (" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--runs", "0"], "error: --runs 0: at least 1"),
    (["--skip-measure"], "no profiles of both grids to score"),
    (["--skip-measure", "--gemv-rows", "0"], "argument --gemv-rows: '0': must be at least 1"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, args, message):
    try:
        code = main([*args, "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
