"""Benchmark: issue 9's CPU roofline check in one command -- measure two step-profile grids of the embedded
target several times, then score the roofline fitted on the first grid against the second (BENCHMARKS.md,
"Roofline vs measured profile on this CPU"; goal: median step error <= 5% on the other grid).

    python -m real.roofline_check --out roofline_check/            # 4 + 4 profiles, ~4 min on a quiet 2-core box
    python -m real.roofline_check --runs 2 --out DIR               # fewer repeats
    python -m real.roofline_check --skip-measure --out DIR         # score the profiles DIR already holds

Each profile is a fresh `lab profile` process (as a user runs it): experiments/cpu_profile.yaml (batch 1/4/16 x
query 1/4/8 x context 128/512, the fit) and experiments/cpu_profile_check.yaml (batch 2/8 x query 2/6 x context
64/320, never seen by the fit), alternated so that a change in the machine's load touches both grids alike.
Their runs go under DIR/runs/. The 1-minute load average before and after each profile, its wall and process CPU
time, and torch's CPU capability are written to DIR/measure.json; then `python -m sim.bench_profile` fits the
roofline on the first grid's profiles averaged and scores it on the second's (its outputs in DIR/bench_profile/),
with the sheet's two given CPU properties: gemm_row_tile (--row-tile, the lab's linears' tile: 8) and gemv_rows,
measured here on the target's LM head (real/cpu_linear.matrix_vector_rows; --gemv-rows N gives it instead).
DIR/summary.json holds the verdict; a profile measured while the box was busy (load past its cores + 1) is named
in the summary: the machine is shared, and such a number describes the load, not the model.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from lab.arguments import ArgumentParser, positive_int
from lab.errors import LabError
from lab.io import make_dirs, write_json_atomic
from real.cpu_linear import ROW_TILE, matrix_vector_rows
from sim import bench_profile

GRIDS = {"fit": "experiments/cpu_profile.yaml", "check": "experiments/cpu_profile_check.yaml"}
GOAL_PCT = 5.0  # issue 9: median step error of the roofline against the measured profile on this CPU
REPO = Path(__file__).resolve().parent.parent
MODEL_CONFIG = REPO / "real" / "presets" / "gemma3-270m.json"  # the embedded target's shape (its config.json)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def measure_profile(grid: str, run_id: str, runs_dir: Path) -> dict:
    """One `lab profile` of `grid` as run `run_id` under runs_dir: wall, child CPU time, load before / after."""
    config = REPO / GRIDS[grid]
    load_before = os.getloadavg()[0]
    cpu_before = os.times()
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "lab.cli", "profile", str(config), "--quiet", "--set", f"run_id={run_id}",
           "--set", f"output_dir={runs_dir}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    cpu_after = os.times()
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LabError(f"{GRIDS[grid]}: lab profile exited {done.returncode}: {tail}")
    return {"grid": grid, "run_id": run_id, "wall_s": round(wall, 1),
            "cpu_s": round((cpu_after.children_user - cpu_before.children_user)
                           + (cpu_after.children_system - cpu_before.children_system), 1),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def run_dirs(runs_dir: Path, grid: str) -> list[Path]:
    """The profile runs of `grid` under runs_dir (each holds a step_profile.csv), in name order."""
    name = Path(GRIDS[grid]).stem
    return sorted(p.parent for p in (runs_dir / name).glob("*/step_profile.csv"))


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m real.roofline_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="roofline_check", help="output directory (profiles under OUT/runs/)")
    ap.add_argument("--runs", type=int, default=4, help="profiles of each grid (default 4)")
    ap.add_argument("--skip-measure", action="store_true", help="score the profiles OUT/runs/ already holds")
    ap.add_argument("--row-tile", type=positive_int, default=ROW_TILE,
                    help=f"the sheet's gemm_row_tile (default {ROW_TILE}: real/cpu_linear.py's tile)")
    ap.add_argument("--gemv-rows", type=positive_int, default=None,
                    help="the sheet's gemv_rows (default: measured now on the target's LM head)")
    args = ap.parse_args(argv)
    try:
        if args.runs < 1:
            raise LabError(f"--runs {args.runs}: at least 1")
        out = make_dirs(args.out)
        runs_dir = make_dirs(out / "runs")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    measured = []
    if not args.skip_measure:
        from tqdm import tqdm

        stamp = time.strftime("%Y%m%d-%H%M%S")
        order = [(grid, i) for i in range(args.runs) for grid in GRIDS]  # alternated: fit, check, fit, check ...
        for grid, i in tqdm(order, desc="profiles"):
            try:
                measured.append(measure_profile(grid, f"{stamp}-{i}", runs_dir))
            except LabError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            write_json_atomic(out / "measure.json", {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                                     "cores": _cores(), "profiles": measured})
    fit_runs, check_runs = run_dirs(runs_dir, "fit"), run_dirs(runs_dir, "check")
    if not fit_runs or not check_runs:
        print(f"error: {runs_dir}: no profiles of both grids to score (run without --skip-measure)", file=sys.stderr)
        return 2
    gemv_rows, gemv_timed = args.gemv_rows, None
    if gemv_rows is None:
        config = json.loads(MODEL_CONFIG.read_text())
        head = torch.full((config["vocab_size"], config["hidden_size"]), 0.01)  # [vocab, hidden] fp32, as profiled
        gemv_rows, gemv_timed = matrix_vector_rows(head)
        del head
        print(f"gemv_rows {gemv_rows}: the LM head's switched product by rows, ms: "
              + ", ".join(f"{r}: {ms:.1f}" for r, ms in gemv_timed))
    bench_out = out / "bench_profile"
    code = bench_profile.main([*map(str, fit_runs), "--validate", *map(str, check_runs), "--row-tile",
                               str(args.row_tile), "--gemv-rows", str(gemv_rows), "--model-config",
                               str(MODEL_CONFIG), "--dtype", "fp32", "--out", str(bench_out)])
    if code != 0:
        return code
    scored = json.loads((bench_out / "summary.json").read_text())
    other = scored["validation"].get("averaged_median_abs_err_pct", scored["validation"]["median_abs_err_pct"])
    busy = [m["run_id"] + f" ({m['grid']}, load {max(m['load_before'], m['load_after'])})" for m in measured
            if max(m["load_before"], m["load_after"]) > _cores() + 1]
    summary = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": _cores(),
               "fit_profiles": len(fit_runs), "check_profiles": len(check_runs), "row_tile": args.row_tile,
               "gemv_rows": gemv_rows, "gemv_rows_measured": gemv_timed,
               "fitted_median_abs_err_pct_held_out": scored["fitted_median_abs_err_pct_held_out"],
               "other_grid_median_abs_err_pct": other, "goal_pct": GOAL_PCT, "goal_met": other <= GOAL_PCT,
               "measured_while_busy": busy}
    write_json_atomic(out / "summary.json", summary)
    print(f"roofline check ({torch.backends.cpu.get_cpu_capability()}, {_cores()} cores, row tile {args.row_tile}, "
          f"gemv_rows {gemv_rows}): other grid median |error| "
          f"{other:.1f}% (goal <= {GOAL_PCT:.0f}%: {'met' if other <= GOAL_PCT else 'NOT met'}); held-out half of the "
          f"fit grid {scored['fitted_median_abs_err_pct_held_out']:.1f}%"
          + (f"; measured while busy: {', '.join(busy)}" if busy else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
