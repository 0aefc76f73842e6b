"""Benchmark: the roofline's step time against a measured step profile on the same machine (BENCHMARKS.md).

    lab profile experiments/cpu_profile.yaml                      # Gemma3-270M fp32 on this CPU
    python -m sim.bench_profile runs/cpu_profile/<run_id> \\
        --model-config ~/.cache/dspark-lab/gemma3-270m/config.json --dtype fp32 --out bench_profile/

1. Describes this machine as a spec sheet from two micro-benchmarks: a float32 numpy matmul (peak FLOP/s)
   and a large array copy (memory bandwidth, read + write bytes), median of repeats, with process CPU time
   and load average recorded.
2. Plain roofline: the cost model (sim/cost.py) with that sheet, mfu = bw_efficiency = 1 and no overheads,
   predicts every profile row (batch x query tokens x context); error per row and the median |error|.
3. Fitted roofline: mfu, bw_efficiency, the per-step and per-request overheads fitted (least squares on
   log step time) on half of the rows (alternate rows of the sorted grid) and scored on the other half.
Writes bench_profile.csv (row by row), spec_plain.yaml / spec_fitted.yaml (usable as sim.hardware.spec),
summary.json and roofline_vs_profile.png into --out.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from lab.config_sim import HardwareSheet
from lab.errors import LabError
from lab.io import atomic_path, write_json_atomic, write_text_atomic
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


def machine_sheet(machine: dict, dtype: str, **fitted) -> HardwareSheet:
    """This machine as a spec sheet: measured peaks; achievable fractions 1 and no overheads unless fitted."""
    values = {"mfu": 1.0, "bw_efficiency": 1.0, "step_overhead_ms": 0.0, "layer_overhead_us": 0.0,
              "request_overhead_us": 0.0, **fitted}
    return HardwareSheet(name="this-cpu", description=f"measured: numpy float32 matmul n={machine['matmul_n']}, "
                         f"copy {machine['copy_mib']} MiB", peak_tflops={dtype: machine["flops_per_s"] / 1e12},
                         mem_bw_tbs=machine["copy_bytes_per_s"] / 1e12, mem_gib=16.0, **values)


def predict_ms(sheet: HardwareSheet, model, batch, query, context) -> np.ndarray:
    cm = CostModel(sheet, model, drafter_layers=0)
    return np.array([cm.step_time(int(b * q), float(b * c), int(b), False) * 1e3
                     for b, q, c in zip(batch, query, context)])


def fit_sheet(machine: dict, dtype: str, model, rows: dict, train: np.ndarray) -> HardwareSheet:
    """Least squares on log step time over the training rows: mfu, bw_efficiency, step and request overhead."""
    from scipy.optimize import least_squares

    b, q, c, measured = (rows[k][train] for k in ("batch", "query_tokens", "context_len", "step_ms"))

    def sheet_of(x):
        return machine_sheet(machine, dtype, mfu=float(x[0]), bw_efficiency=float(x[1]),
                             step_overhead_ms=float(x[2]), request_overhead_us=float(x[3]) * 1e3)

    def residuals(x):
        return np.log(predict_ms(sheet_of(x), model, b, q, c)) - np.log(measured)

    fit = least_squares(residuals, x0=[0.5, 0.5, 1.0, 0.1], bounds=([1e-3, 1e-3, 0, 0], [1, 1, 1e3, 1e3]))
    return sheet_of(fit.x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.bench_profile", description=__doc__.splitlines()[0])
    ap.add_argument("profile", help="step_profile.csv, its .json or their directory (a run directory)")
    ap.add_argument("--model", default=None, help="model preset of the profiled target (default: --model-config)")
    ap.add_argument("--model-config", default=None, help="the profiled target's config.json")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="the profile's weight dtype")
    ap.add_argument("--out", default="bench_profile", help="output directory")
    args = ap.parse_args(argv)
    try:
        profile = read_profile(expand_path(args.profile))
        if args.model_config:
            model = from_hf_config(expand_path(args.model_config))
        elif args.model:
            model = get_model(args.model)
        else:
            raise LabError("give --model or --model-config (the profiled target's shape)")
        from dataclasses import replace

        model = replace(model, dtype=args.dtype, kv_dtype=args.dtype)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cpu0, wall0 = time.process_time(), time.perf_counter()
    machine = measure_machine()
    frame = profile.frame().sort_values(["context_len", "batch", "query_tokens"]).reset_index(drop=True)
    rows = {k: frame[k].to_numpy() for k in frame.columns}
    train = np.arange(len(frame)) % 2 == 0
    plain = machine_sheet(machine, args.dtype)
    fitted = fit_sheet(machine, args.dtype, model, rows, train)
    frame["plain_ms"] = predict_ms(plain, model, rows["batch"], rows["query_tokens"], rows["context_len"])
    frame["fitted_ms"] = predict_ms(fitted, model, rows["batch"], rows["query_tokens"], rows["context_len"])
    frame["plain_err_pct"] = 100 * (frame["plain_ms"] / frame["step_ms"] - 1)
    frame["fitted_err_pct"] = 100 * (frame["fitted_ms"] / frame["step_ms"] - 1)
    frame["split"] = np.where(train, "fit", "held-out")
    summary = {
        "profile": str(profile.path), "profile_meta": profile.meta, "model": model.name,
        "model_params_b": model.params_b, "dtype": args.dtype, "machine": machine,
        "plain_median_abs_err_pct": float(frame["plain_err_pct"].abs().median()),
        "fitted_median_abs_err_pct_fit_rows": float(frame.loc[train, "fitted_err_pct"].abs().median()),
        "fitted_median_abs_err_pct_held_out": float(frame.loc[~train, "fitted_err_pct"].abs().median()),
        "fitted": {k: getattr(fitted, k) for k in ("mfu", "bw_efficiency", "step_overhead_ms",
                                                  "request_overhead_us")},
        "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "bench_profile.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4g")
    for label, sheet in (("plain", plain), ("fitted", fitted)):
        write_text_atomic(out / f"spec_{label}.yaml", yaml.safe_dump(sheet.model_dump(mode="json"), sort_keys=False))
    write_json_atomic(out / "summary.json", summary)
    _plot(frame, out / "roofline_vs_profile.png")
    print(f"machine: {machine['flops_per_s'] / 1e9:.1f} GFLOP/s fp32 matmul (n={machine['matmul_n']}), "
          f"{machine['copy_bytes_per_s'] / 1e9:.1f} GB/s copy; load avg {machine['load_avg']:.1f} on "
          f"{machine['cpus']} CPUs; micro-benchmarks wall {machine['wall_s']:.1f} s, CPU {machine['cpu_s']:.1f} s")
    print(f"profile: {profile.path} ({profile.meta['model']} {profile.meta['dtype']} on {profile.meta['hardware']})")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"median |error|: plain roofline {summary['plain_median_abs_err_pct']:.1f}%; fitted "
          f"{summary['fitted_median_abs_err_pct_fit_rows']:.1f}% on the fit rows, "
          f"{summary['fitted_median_abs_err_pct_held_out']:.1f}% held out "
          f"(mfu {fitted.mfu:.3f}, bw_efficiency {fitted.bw_efficiency:.3f}, step {fitted.step_overhead_ms:.2f} ms, "
          f"request {fitted.request_overhead_us:.0f} us)")
    print(f"wrote {out}/ (bench_profile.csv, spec_plain.yaml, spec_fitted.yaml, summary.json, "
          f"roofline_vs_profile.png); wall {summary['wall_s']:.1f} s, CPU {summary['cpu_s']:.1f} s")
    return 0


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
