"""Benchmark: the roofline's step time against a measured step profile on the same machine (BENCHMARKS.md).

    lab profile experiments/cpu_profile.yaml                      # Gemma3-270M fp32 on this CPU
    python -m sim.bench_profile runs/cpu_profile/<run_id> [runs/cpu_profile/<another_run_id> ...] \\
        --model-config ~/.cache/dspark-lab/gemma3-270m/config.json --dtype fp32 --out bench_profile/

Several profiles of the same grid (repeated `lab profile` runs) are averaged row by row, and how far one of
them sits from that average (median over rows and profiles) is printed: the measurement's own noise, the
floor under any cost model's error against a single profile.

1. Describes this machine as a spec sheet from two micro-benchmarks: a float32 numpy matmul (peak FLOP/s)
   and a large array copy (memory bandwidth, read + write bytes), median of repeats, with process CPU time
   and load average recorded.
2. Plain roofline: the cost model (sim/cost.py) with that sheet, mfu = bw_efficiency = 1 and no overheads,
   predicts every profile row (batch x query tokens x context); error per row and the median |error|.
3. Fitted roofline: the sheet's achievable terms named by --fit (default mfu, bw_efficiency,
   gemm_bw_efficiency, compute_memory_overlap: what eager PyTorch on a CPU needs, see sim/cost.py; the
   step / layer / request overheads may be added) fitted by least squares on log step time over half of the
   rows (alternate rows of the sorted grid) and scored on the other half. The same fit with the halves
   swapped is reported beside it (a check that the score does not hang on one split), never used for it.
   --row-tile N gives the sheet the row tile its matrix products run in (gemm_row_tile: the lab's CPU
   linears pad 9-15 rows to 16, real/cpu_linear.py) and --gemv-rows N the most rows whose products read
   the weights at the one-row rate (gemv_rows: 4 on session 36's AVX512 box); properties of the code and
   the BLAS, measured by `python -m real.cpu_linear`, so given, never fitted.
4. --validate PROFILE ...: the same terms fitted on every row of the profile(s) above, then scored on other
   profiles -- another grid (batches, query lengths, contexts the fit never saw), measured afterwards:
   the out-of-sample check (validate.csv).
Writes bench_profile.csv (row by row), spec_plain.yaml / spec_fitted.yaml (usable as sim.hardware.spec),
summary.json, roofline_vs_profile.png and residuals.png (fitted error vs batch, query tokens, context and
tokens per step) into --out.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lab.arguments import ArgumentParser, positive_int
from lab.config_sim import MAX_LAYER_OVERHEAD_US, MAX_REQUEST_OVERHEAD_US, MAX_STEP_OVERHEAD_MS, HardwareSheet
from lab.errors import LabError
from lab.io import atomic_path, make_dirs, write_json_atomic, write_text_atomic
from lab.paths import expand_path
from sim.cost import CostModel
from sim.models import from_hf_config, get_model
from sim.step_profile import read_profile


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_machine(matmul_n: int = 1536, copy_mib: int = 512, repeats: int = 7) -> dict:
    """Peak float32 matmul FLOP/s and copy bandwidth of this machine (numpy), with CPU time and load."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((matmul_n, matmul_n), dtype=np.float32)  # [n, n]
    b = rng.standard_normal((matmul_n, matmul_n), dtype=np.float32)  # [n, n]
    a @ b  # warm-up
    matmul_s = _median_time(lambda: a @ b, repeats)
    src = np.ones(copy_mib * 2**20 // 4, dtype=np.float32)  # [elements]
    dst = np.empty_like(src)
    np.copyto(dst, src)  # warm-up (pages touched)
    copy_s = _median_time(lambda: np.copyto(dst, src), repeats)
    return {"matmul_n": matmul_n, "flops_per_s": 2 * matmul_n**3 / matmul_s, "copy_mib": copy_mib,
            "copy_bytes_per_s": 2 * src.nbytes / copy_s, "wall_s": time.perf_counter() - wall0,
            "cpu_s": time.process_time() - cpu0, "load_avg": os.getloadavg()[0], "cpus": os.cpu_count()}


def given_machine(gflops: float, copy_gbs: float) -> dict:
    """The machine's peaks as given (--peaks) rather than measured: the same mapping as measure_machine."""
    return {"matmul_n": None, "flops_per_s": gflops * 1e9, "copy_mib": None, "copy_bytes_per_s": copy_gbs * 1e9,
            "wall_s": 0.0, "cpu_s": 0.0, "load_avg": os.getloadavg()[0], "cpus": os.cpu_count(), "given": True}


def parse_peaks(text: str) -> tuple[float, float]:
    try:
        gflops, gbs = (float(v) for v in text.split(","))
    except ValueError:
        raise LabError(f"--peaks: {text!r} is not GFLOPS,GBS (two numbers)") from None
    if not (0 < gflops < math.inf and 0 < gbs < math.inf):  # NaN fails both comparisons
        raise LabError(f"--peaks: {text!r}: both must be positive finite numbers")
    return gflops, gbs


def machine_sheet(machine: dict, dtype: str, **fitted) -> HardwareSheet:
    """This machine as a spec sheet: measured peaks; achievable fractions 1 and no overheads unless fitted."""
    values = {"mfu": 1.0, "bw_efficiency": 1.0, "step_overhead_ms": 0.0, "layer_overhead_us": 0.0,
              "request_overhead_us": 0.0, "moe_layer_us": 0.0, "act_quant_us": 0.0,  # GPU kernels' floors: none here
              "gemm_row_tile": machine.get("gemm_row_tile", 1), "gemv_rows": machine.get("gemv_rows", 1), **fitted}
    how = ("given: --peaks" if machine.get("given") else
           f"measured: numpy float32 matmul n={machine['matmul_n']}, copy {machine['copy_mib']} MiB")
    return HardwareSheet(name="this-cpu", description=how, peak_tflops={dtype: machine["flops_per_s"] / 1e12},
                         mem_bw_tbs=machine["copy_bytes_per_s"] / 1e12, mem_gib=16.0, **values)


def predict_ms(sheet: HardwareSheet, model, batch, query, context) -> np.ndarray:
    cm = CostModel(sheet, model, drafter_layers=0)
    # a `lab profile` step computes logits at every new position (real/profile.py: a verify step), so every one
    # of its b x q tokens is a sampled row: b requests + b x (q - 1) more, as drafts are (sim/cost.py)
    return np.array([cm.step_time(int(b * q), float(b * c), int(b), False, int(b * q) - int(b)) * 1e3
                     for b, q, c in zip(batch, query, context)])


# fittable sheet terms -> (start, lower bound, upper bound); fractions of a peak, or overheads in the sheet's units
FIT_TERMS = {
    "mfu": (0.5, 1e-3, 1.0), "bw_efficiency": (0.5, 1e-3, 1.0), "gemm_bw_efficiency": (0.5, 1e-3, 1.0),
    "kv_bw_efficiency": (0.5, 1e-3, 1.0), "compute_memory_overlap": (0.5, 0.0, 1.0),
    "step_overhead_ms": (1.0, 0.0, MAX_STEP_OVERHEAD_MS),  # the sheet's own bounds (lab/config_sim.py)
    "layer_overhead_us": (10.0, 0.0, MAX_LAYER_OVERHEAD_US), "request_overhead_us": (100.0, 0.0, MAX_REQUEST_OVERHEAD_US),
}
DEFAULT_FIT = ("mfu", "bw_efficiency", "gemm_bw_efficiency", "kv_bw_efficiency", "compute_memory_overlap")


def fit_sheet(machine: dict, dtype: str, model, rows: dict, train: np.ndarray,
              terms: tuple[str, ...] = DEFAULT_FIT) -> HardwareSheet:
    """Least squares on log step time over the training rows, of the sheet terms named in `terms`."""
    from scipy.optimize import least_squares

    b, q, c, measured = (rows[k][train] for k in ("batch", "query_tokens", "context_len", "step_ms"))

    def sheet_of(x):
        return machine_sheet(machine, dtype, **{name: float(v) for name, v in zip(terms, x)})

    def residuals(x):
        return np.log(predict_ms(sheet_of(x), model, b, q, c)) - np.log(measured)

    start, lower, upper = zip(*(FIT_TERMS[name] for name in terms))
    fit = least_squares(residuals, x0=start, bounds=(lower, upper))
    return sheet_of(fit.x)


def average_profiles(profiles) -> tuple:
    """One frame of the profiles' grid (sorted by context, batch, query tokens) with step_ms / step_ms_p90
    averaged over the profiles (step_ms_<k> keeps each), and the median |profile / average - 1| in percent
    (None for a single profile). Profiles of different grids are refused."""
    keys = ["context_len", "batch", "query_tokens"]
    frames = [p.frame().sort_values(keys).reset_index(drop=True) for p in profiles]
    frame = frames[0].copy()
    for p, other in zip(profiles[1:], frames[1:]):
        if not other[keys].equals(frame[keys]):
            raise LabError(f"{p.path}: its grid differs from {profiles[0].path}'s; average profiles of one grid")
    if len(frames) == 1:
        return frame, None
    each = np.stack([f["step_ms"].to_numpy() for f in frames])  # [profiles, rows]
    for k, values in enumerate(each, 1):
        frame[f"step_ms_{k}"] = values
    frame["step_ms"] = each.mean(axis=0)
    frame["step_ms_p90"] = np.mean([f["step_ms_p90"].to_numpy() for f in frames], axis=0)
    frame["repeats"] = np.sum([f["repeats"].to_numpy() for f in frames], axis=0)
    return frame, float(100 * np.median(np.abs(each / frame["step_ms"].to_numpy() - 1)))


def validate_frame(sheet: HardwareSheet, model, checks) -> pd.DataFrame:
    """Every row of the validation profiles with the sheet's prediction and its error (percent)."""
    frames = []
    for p in checks:
        f = p.frame()[["batch", "query_tokens", "context_len", "step_ms", "step_ms_p90"]].copy()
        f["fitted_ms"] = predict_ms(sheet, model, f["batch"], f["query_tokens"], f["context_len"])
        f["fitted_err_pct"] = 100 * (f["fitted_ms"] / f["step_ms"] - 1)
        f["profile"] = p.path.parent.name
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def fit_terms(text: str) -> tuple[str, ...]:
    terms = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in terms if t not in FIT_TERMS]
    if not terms or unknown:
        raise LabError(f"--fit: {', '.join(unknown) or 'nothing named'}; fittable: {', '.join(FIT_TERMS)}")
    return terms


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.bench_profile", description=__doc__.splitlines()[0])
    ap.add_argument("profile", nargs="+",
                    help="step_profile.csv, its .json or their directory (a run directory); several of the same "
                         "grid are averaged")
    ap.add_argument("--model", default=None, help="model preset of the profiled target (default: --model-config)")
    ap.add_argument("--model-config", default=None, help="the profiled target's config.json")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="the profile's weight dtype")
    ap.add_argument("--out", default="bench_profile", help="output directory")
    ap.add_argument("--peaks", default=None, metavar="GFLOPS,GBS",
                    help="this machine's fp32 matmul GFLOP/s and copy GB/s as measured before (e.g. on a quiet "
                         "machine) instead of measuring them now")
    ap.add_argument("--validate", nargs="+", default=None, metavar="PROFILE",
                    help="profiles of another grid to score a fit on every row of the profile(s) against")
    ap.add_argument("--row-tile", type=positive_int, default=1, metavar="ROWS",
                    help="the sheet's gemm_row_tile: the row tile of this machine's matrix products, as measured by "
                         "`python -m real.cpu_linear --row-tile` (not fitted: 1 = off)")
    ap.add_argument("--gemv-rows", type=positive_int, default=1, metavar="ROWS",
                    help="the sheet's gemv_rows: the most rows this machine's products read their weights at the "
                         "one-row rate, as measured by `python -m real.cpu_linear --gemv-rows` (not fitted: 1 = off)")
    ap.add_argument("--fit", default=",".join(DEFAULT_FIT),
                    help=f"comma-separated sheet terms to fit (of: {', '.join(FIT_TERMS)})")
    args = ap.parse_args(argv)
    try:
        terms = fit_terms(args.fit)
        peaks = None if args.peaks is None else parse_peaks(args.peaks)
        profiles = [read_profile(expand_path(p)) for p in args.profile]
        frame, noise = average_profiles(profiles)
        if len(frame) < 2:  # the fit and its held-out score need a row each
            raise LabError(f"{profiles[0].path}: {len(frame)} row; the fit needs at least 2 (even rows fit, odd "
                           "rows held out)")
        checks = [read_profile(expand_path(p)) for p in args.validate or []]
        if args.model_config:
            model = from_hf_config(expand_path(args.model_config))
        elif args.model:
            model = get_model(args.model)
        else:
            raise LabError("give --model or --model-config (the profiled target's shape)")
        from dataclasses import replace

        model = replace(model, dtype=args.dtype, kv_dtype=args.dtype)
        out = make_dirs(args.out)  # a file in the way is one line now, not a traceback after the fit
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cpu0, wall0 = time.process_time(), time.perf_counter()
    machine = measure_machine() if peaks is None else given_machine(*peaks)
    machine["gemm_row_tile"] = args.row_tile
    machine["gemv_rows"] = args.gemv_rows
    profile = profiles[0]
    rows = {k: frame[k].to_numpy() for k in frame.columns}
    train = np.arange(len(frame)) % 2 == 0
    plain = machine_sheet(machine, args.dtype)
    fitted = fit_sheet(machine, args.dtype, model, rows, train, terms)
    swapped = fit_sheet(machine, args.dtype, model, rows, ~train, terms)  # the check, not the score
    frame["plain_ms"] = predict_ms(plain, model, rows["batch"], rows["query_tokens"], rows["context_len"])
    frame["fitted_ms"] = predict_ms(fitted, model, rows["batch"], rows["query_tokens"], rows["context_len"])
    frame["plain_err_pct"] = 100 * (frame["plain_ms"] / frame["step_ms"] - 1)
    frame["fitted_err_pct"] = 100 * (frame["fitted_ms"] / frame["step_ms"] - 1)
    frame["split"] = np.where(train, "fit", "held-out")
    swapped_err = 100 * (predict_ms(swapped, model, rows["batch"], rows["query_tokens"], rows["context_len"])
                         / frame["step_ms"] - 1)
    validation = None
    if checks:
        every = fit_sheet(machine, args.dtype, model, rows, np.ones(len(frame), dtype=bool), terms)
        validation = validate_frame(every, model, checks)
    summary = {
        "profiles": [str(p.path) for p in profiles], "profile_meta": profile.meta,
        "profile_noise_median_abs_pct": noise, "model": model.name,
        "model_params_b": model.params_b, "dtype": args.dtype, "machine": machine,
        "plain_median_abs_err_pct": float(frame["plain_err_pct"].abs().median()),
        "fitted_median_abs_err_pct_fit_rows": float(frame.loc[train, "fitted_err_pct"].abs().median()),
        "fitted_median_abs_err_pct_held_out": float(frame.loc[~train, "fitted_err_pct"].abs().median()),
        "fit_terms": list(terms), "fitted": {k: getattr(fitted, k) for k in terms},
        "swapped_split": {"median_abs_err_pct_held_out": float(swapped_err[train].abs().median()),
                          "fitted": {k: getattr(swapped, k) for k in terms}},
        "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
    }
    if validation is not None:
        summary["validation"] = {"profiles": [str(p.path) for p in checks], "fitted": {k: getattr(every, k) for k in terms},
                                 "median_abs_err_pct": float(validation["fitted_err_pct"].abs().median())}
        if len(checks) > 1:  # the check profiles averaged row by row, as the fit's profiles are
            check_avg, check_noise = average_profiles(checks)
            avg_err = 100 * (predict_ms(every, model, check_avg["batch"], check_avg["query_tokens"],
                                        check_avg["context_len"]) / check_avg["step_ms"] - 1)
            summary["validation"].update({"averaged_median_abs_err_pct": float(np.median(np.abs(avg_err))),
                                          "profile_noise_median_abs_pct": check_noise})
    with atomic_path(out / "bench_profile.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4g")
    for label, sheet in (("plain", plain), ("fitted", fitted)):
        write_text_atomic(out / f"spec_{label}.yaml", yaml.safe_dump(sheet.model_dump(mode="json"), sort_keys=False))
    write_json_atomic(out / "summary.json", summary)
    _plot(frame, out / "roofline_vs_profile.png")
    _plot_residuals(frame, out / "residuals.png")
    print(f"machine: {machine['flops_per_s'] / 1e9:.1f} GFLOP/s fp32 matmul (n={machine['matmul_n']}), "
          f"{machine['copy_bytes_per_s'] / 1e9:.1f} GB/s copy{' (given)' if machine.get('given') else ''}; load avg {machine['load_avg']:.1f} on "
          f"{machine['cpus']} CPUs; micro-benchmarks wall {machine['wall_s']:.1f} s, CPU {machine['cpu_s']:.1f} s")
    for p in profiles:
        print(f"profile: {p.path} ({p.meta['model']} {p.meta['dtype']} on {p.meta['hardware']}, {p.meta['created']})")
    if noise is not None:
        print(f"profiles averaged: {len(profiles)}; one profile's median |distance| from their average {noise:.1f}%")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"median |error|: plain roofline {summary['plain_median_abs_err_pct']:.1f}%; fitted "
          f"{summary['fitted_median_abs_err_pct_fit_rows']:.1f}% on the fit rows, "
          f"{summary['fitted_median_abs_err_pct_held_out']:.1f}% held out ({_terms_text(fitted, terms)}); "
          f"halves swapped: {summary['swapped_split']['median_abs_err_pct_held_out']:.1f}% held out "
          f"({_terms_text(swapped, terms)})")
    if validation is not None:
        with atomic_path(out / "validate.csv") as tmp:
            validation.to_csv(tmp, index=False, float_format="%.4g")
        print(validation.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        print(f"validation ({len(checks)} profile(s) of another grid, {len(validation)} rows): median |error| "
              f"{summary['validation']['median_abs_err_pct']:.1f}% with the terms fitted on every row above "
              f"({_terms_text(every, terms)})")
        if "averaged_median_abs_err_pct" in summary["validation"]:
            v = summary["validation"]
            print(f"validation, its {len(checks)} profiles averaged row by row: median |error| "
                  f"{v['averaged_median_abs_err_pct']:.1f}% (one of them sits a median "
                  f"{v['profile_noise_median_abs_pct']:.1f}% from their average)")
    print(f"wrote {out}/ (bench_profile.csv, spec_plain.yaml, spec_fitted.yaml, summary.json, "
          f"roofline_vs_profile.png, residuals.png); wall {summary['wall_s']:.1f} s, CPU {summary['cpu_s']:.1f} s")
    return 0


def _terms_text(sheet: HardwareSheet, terms) -> str:
    return ", ".join(f"{name} {getattr(sheet, name):.3g}" for name in terms)


def _plot_residuals(frame, path: Path) -> None:
    """The fitted roofline's error per row against each axis of the grid (fit and held-out rows marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_of = {"batch": frame["batch"], "query tokens": frame["query_tokens"], "context": frame["context_len"],
               "tokens per step": frame["batch"] * frame["query_tokens"]}
    fig, axes = plt.subplots(1, len(axes_of), figsize=(3.2 * len(axes_of), 3.2), sharey=True)
    held = frame["split"] == "held-out"
    for ax, (label, x) in zip(axes, axes_of.items()):
        ax.scatter(x[~held], frame.loc[~held, "fitted_err_pct"], marker="o", label="fit rows")
        ax.scatter(x[held], frame.loc[held, "fitted_err_pct"], marker="x", label="held-out rows")
        ax.axhline(0, color="grey", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(label)
    axes[0].set_ylabel("fitted roofline error %")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot(frame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(frame["step_ms"], frame["plain_ms"], label="plain roofline", marker="o")
    held = frame["split"] == "held-out"
    ax.scatter(frame.loc[held, "step_ms"], frame.loc[held, "fitted_ms"], label="fitted (held-out rows)", marker="x")
    lo, hi = frame[["step_ms", "plain_ms", "fitted_ms"]].min().min(), frame[["step_ms", "plain_ms"]].max().max()
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured step ms")
    ax.set_ylabel("predicted step ms")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
