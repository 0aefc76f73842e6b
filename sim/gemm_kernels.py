"""Published bf16-vs-low-precision GEMM timings against the simulator's own low-precision speed-up.

    python -m sim.gemm_kernels --out gemm_kernels/         # ~1 s; writes gemm_kernels.{csv,md}
    python -m sim.gemm_kernels --fit --out gemm_kernels/   # + act_quant_us / lowp_matmul_efficiency /
                                                           #   marlin_efficiency / mfu_from_mamf /
                                                           #   dense_gemm_mfu (gemm_fit.json)

The data (sim/validation/gemm_kernels.yaml, each run with its URL) time one dense GEMM C[M,N] = A[M,K] W[N,K]^T of
the same shape in bf16 (or fp16) and in fp8 / fp4, or weight-only int4 (Marlin, int4_w4a16: dequantized in the
kernel, multiplied in fp16 / bf16), on the same card in the same source. For every low-precision
point this prints the published speed-up over the source's fastest bf16 point of that shape, beside the speed-up the
cost model gives the same GEMM on the card's preset (sim/cost.py: one-layer model of N x K weights, no overheads:
max(weight bytes / achievable bandwidth, 2 M N K / (mfu x peak[dtype]))), grouped by card, dtype, whether the
column includes the activation's on-the-fly quantization (vLLM's columns without `-noquant`), and M (<= 256:
weight-bandwidth bound; >= 1024: compute bound). Runs on cards without a preset (`other`) are listed, not priced.
Runs marked `mamf: true` hold one bf16 point each, a card's Maximum Achievable Matmul FLOPS (the best shape of a
torch.matmul grid): --fit turns them into mfu_from_mamf, the H100 sheet's serving mfu scaled by the card's MAMF
fraction of its own peak over the H100's (how the AMD sheets' mfu is set, sim/presets/hardware.yaml). --fit's
dense_gemm_mfu: per card, the bf16 / fp16 points' achieved fraction of the bf16 peak at each M >= DENSE_MIN_ROWS (the
median over the card's runs, MAMF runs left out): a sheet's dense_gemm_mfu, the dense linears' fraction by GEMM rows.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lab.arguments import data_check_parser
from lab.errors import LabError
from lab.io import make_dirs, write_json_atomic, write_text_atomic
from lab.report import markdown_table
from lab.yaml_load import load_runs_list
from sim.cost import CostModel
from sim.hardware import HARDWARE_NAMES, get_hardware
from sim.models import ModelShape

DEFAULT_FILE = Path(__file__).parent / "validation" / "gemm_kernels.yaml"
BASE_DTYPES = ("bf16", "fp16")
# the kernel's dtype -> (matmul dtype, None: weight-only at the activation dtype; bits per weight incl. scales)
LOW_DTYPES = {"fp8_w8a8": ("fp8", 8.0), "int8_w8a8": ("int8", 8.0), "fp4_w4a4": ("fp4", 4.5),
              "int4_w4a16": (None, 4.125)}  # GPTQ 4-bit, an fp16 scale per 128 (Marlin)
WEIGHT_ONLY = tuple(t for t, (matmul, _) in LOW_DTYPES.items() if matmul is None)
# dense_gemm_mfu's smallest M: below it a bf16 GEMM of a layer's weights is paced by their reads, not its FLOPs (the
# vllm2497 A100 points: M 16-64 move the weights at 0.9 of the card's bandwidth), so a FLOP fraction there says nothing
DENSE_MIN_ROWS = 128


def load_points(path: str | Path) -> pd.DataFrame:
    """One row per published point: run, device, m, n, k, dtype, kernel, us, speed (1 / us), mamf (the run is a
    card's Maximum Achievable Matmul FLOPS point)."""
    p = Path(path)
    rows = []
    for i, run in enumerate(load_runs_list(p, "GEMM runs")):
        for key in ("id", "device", "unit", "points"):
            if key not in run:
                raise LabError(f"{p}: runs[{i}].{key}: missing")
        if run["device"] != "other" and run["device"] not in HARDWARE_NAMES:
            raise LabError(f"{p}: runs[{i}].device: {run['device']!r} is neither a hardware preset nor `other`")
        if run["unit"] not in ("us", "tflops"):
            raise LabError(f"{p}: runs[{i}].unit: {run['unit']!r} is not us or tflops")
        if not isinstance(run["points"], list) or not run["points"]:
            raise LabError(f"{p}: runs[{i}].points: a non-empty list of points expected")
        mamf = run.get("mamf", False)
        pts = run["points"]
        one_bf16 = isinstance(pts, list) and len(pts) == 1 and isinstance(pts[0], dict) and pts[0].get("dtype") == "bf16"
        if not isinstance(mamf, bool) or (mamf and not one_bf16):
            raise LabError(f"{p}: runs[{i}].mamf: true or false; a mamf run holds one bf16 point")
        for j, point in enumerate(run["points"]):
            try:
                m, n, k, value = (int(point["m"]), int(point["n"]), int(point["k"]), float(point["value"]))
                dtype, kernel = str(point["dtype"]), str(point["kernel"])
            except (KeyError, TypeError, ValueError, OverflowError):
                raise LabError(f"{p}: runs[{i}].points[{j}]: m, n, k, dtype, kernel and value expected") from None
            if min(m, n, k) < 1 or not value > 0 or dtype not in BASE_DTYPES + tuple(LOW_DTYPES):
                raise LabError(f"{p}: runs[{i}].points[{j}]: positive m, n, k, value and a dtype of "
                               f"{BASE_DTYPES + tuple(LOW_DTYPES)} expected")
            us = 2.0 * m * n * k / (value * 1e12) * 1e6 if run["unit"] == "tflops" else value
            if not 0.0 < us < math.inf:  # 1e308 TFLOP/s is 0 us
                raise LabError(f"{p}: runs[{i}].points[{j}].value: {value!r} {run['unit']} is not a finite time")
            rows.append({"run": run["id"], "device": run["device"], "m": m, "n": n, "k": k, "dtype": dtype,
                         "kernel": kernel, "us": us, "speed": 1.0 / us, "mamf": mamf})
    return pd.DataFrame(rows)


def sim_seconds(sheet, m: int, n: int, k: int, dtype: str, act_quant: bool = False) -> float:
    """The cost model's time of one M x N x K GEMM on a sheet (a one-layer model of N x K weights; with
    `act_quant` its input quantized on the fly first)."""
    params_b = n * k / 1e9
    low = LOW_DTYPES.get(dtype)
    model = ModelShape(name="gemm", params_b=params_b, n_layers=1, hidden=k, n_heads=1, n_kv_heads=1, head_dim=1,
                       dtype="bf16", quant_method=dtype if low else None, quant_bits=low[1] if low else None,
                       quant_dense_params_b=params_b if low else 0.0, matmul_dtype=low[0] if low else None,
                       quant_linears=int(bool(low) and low[0] is not None and act_quant))
    cm = CostModel(sheet, model, drafter_layers=0, step_overhead_s=0.0, layer_overhead_s=0.0, request_overhead_s=0.0)
    return cm.step_time(m, 0.0, 1, False)


def speedups(points: pd.DataFrame, sheets: dict | None = None) -> pd.DataFrame:
    """Every low-precision point with its published speed-up over the shape's fastest bf16 point, and the
    simulator's on `sheets` (default: the presets; NaN on cards without one)."""
    sheets = sheets or {d: get_hardware(d) for d in points.device.unique() if d != "other"}
    base = points[points.dtype.isin(BASE_DTYPES)].groupby(["run", "m", "n", "k"]).speed.max().rename("base_speed")
    low = points[~points.dtype.isin(BASE_DTYPES)].merge(base.reset_index(), on=["run", "m", "n", "k"])
    low["published"] = low.speed / low.base_speed
    low["with_act_quant"] = np.where(low.kernel.str.contains("noquant") | low.dtype.isin(WEIGHT_ONLY), "no",
                                     np.where(low.kernel.str.match(r"^(fp8-|nvfp4$)"), "yes", "not stated"))
    low["regime"] = np.where(low.m >= 1024, "M >= 1024", np.where(low.m <= 256, "M <= 256", "256 < M < 1024"))
    low["simulated"] = [
        sim_seconds(sheets[d], m, n, k, "bf16") / sim_seconds(sheets[d], m, n, k, t, q == "yes") if d in sheets
        else np.nan for d, m, n, k, t, q in zip(low.device, low.m, low.n, low.k, low.dtype, low.with_act_quant)]
    return low


def fit(points: pd.DataFrame) -> dict:
    """act_quant_us: the median, over vLLM's paired columns (a scheme with and without `-noquant`), of the
    microseconds the activation quantization adds to the same GEMM; lowp_matmul_efficiency per dtype: the median,
    over compute-bound points (M >= 1024) of GEMMs timed without it on preset cards, of the published speed-up over
    the one the cost model gives at efficiency 1 (its peak ratio there); marlin_efficiency per card: the same median
    over its weight-only (Marlin) points, whose peak ratio is 1 (both multiply at the activation dtype);
    mfu_from_mamf per card with a MAMF run: the h100 sheet's mfu x (the card's MAMF / its bf16 peak) / (the H100's MAMF
    / its bf16 peak) -- the H100's serving-fitted mfu carried over at the ratio of measured matmul fractions."""
    quant = points[points.kernel.str.match(r"^fp8-") & ~points.kernel.str.contains("noquant")]
    bare = points[points.kernel.str.contains("noquant")].assign(kernel=lambda f: f.kernel.str.replace("-noquant", ""))
    paired = quant.merge(bare, on=["run", "m", "n", "k", "kernel"], suffixes=("", "_bare"))
    plain = {d: get_hardware(d).model_copy(update={"lowp_matmul_efficiency": {}, "marlin_efficiency": None})
             for d in points.device.unique() if d != "other"}
    low = speedups(points, plain)
    bound = low[(low.m >= 1024) & (low.with_act_quant != "yes") & low.simulated.notna()]
    ratio = bound.published / bound.simulated
    lowp = ~bound.dtype.isin(WEIGHT_ONLY)
    efficiency = ratio[lowp].groupby(bound.dtype[lowp]).median()
    marlin = ratio[~lowp].groupby(bound.device[~lowp]).median()
    return {"act_quant_us": round(float((paired.us - paired.us_bare).median()), 2), "act_quant_pairs": len(paired),
            "lowp_matmul_efficiency": {LOW_DTYPES[t][0]: round(float(v), 3) for t, v in efficiency.items()},
            "efficiency_points": {LOW_DTYPES[t][0]: int(n) for t, n in bound.dtype[lowp].value_counts().items()},
            "marlin_efficiency": {d: round(float(v), 3) for d, v in marlin.items()},
            "marlin_points": {d: int(n) for d, n in bound.device[~lowp].value_counts().items()},
            **mamf_mfu(points), "dense_gemm_mfu": dense_gemm_mfu(points)}


def dense_gemm_mfu(points: pd.DataFrame) -> dict:
    """{card: {M: fraction}}: each bf16 / fp16 point's achieved TFLOP/s over the card's bf16 peak, the median per M
    over the card's runs, for M >= DENSE_MIN_ROWS (MAMF runs and cards without a preset left out)."""
    base = points[points.dtype.isin(BASE_DTYPES) & ~points.mamf & (points.device != "other")
                  & (points.m >= DENSE_MIN_ROWS)]
    # [points] achieved fraction of the card's bf16 peak
    fraction = [2.0 * m * n * k / (us * 1e6) / get_hardware(d).peak_for("bf16")
                for d, m, n, k, us in zip(base.device, base.m, base.n, base.k, base.us)]
    per_m = base.assign(fraction=fraction).groupby(["device", "m"]).fraction.median()
    return {d: {int(m): round(float(f), 3) for (dev, m), f in per_m.items() if dev == d}
            for d in sorted(base.device.unique())}


def mamf_mfu(points: pd.DataFrame) -> dict:
    """mamf_fraction (each MAMF run's TFLOP/s over its card's bf16 peak) and mfu_from_mamf (see fit); empty without
    an h100 MAMF run."""
    mamf = points[points.mamf & (points.device != "other")]
    # [cards] achieved bf16 TFLOP/s of the best shape over the sheet's peak
    fraction = {d: 2.0 * m * n * k / (us * 1e6) / get_hardware(d).peak_for("bf16")
                for d, m, n, k, us in zip(mamf.device, mamf.m, mamf.n, mamf.k, mamf.us)}
    if "h100" not in fraction:
        return {"mamf_fraction": {}, "mfu_from_mamf": {}}
    ratio = get_hardware("h100").mfu / fraction["h100"]
    return {"mamf_fraction": {d: round(f, 3) for d, f in fraction.items()},
            "mfu_from_mamf": {d: round(ratio * f, 3) for d, f in fraction.items()}}


def summary(low: pd.DataFrame) -> pd.DataFrame:
    return (low.groupby(["device", "dtype", "with_act_quant", "regime"])
            .agg(points=("published", "size"), published_median=("published", "median"),
                 published_min=("published", "min"), published_max=("published", "max"),
                 simulated_median=("simulated", "median")).round(2).reset_index())


def main(argv=None) -> int:
    ap = data_check_parser("python -m sim.gemm_kernels", __doc__, DEFAULT_FILE, "GEMM timings", "gemm_kernels",
                           "also fit act_quant_us, lowp_matmul_efficiency, marlin_efficiency, mfu_from_mamf and "
                           "dense_gemm_mfu "
                           "(gemm_fit.json); the presets are not changed")
    args = ap.parse_args(argv)
    try:
        points = load_points(args.file)
        make_dirs(args.out)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    low = speedups(points)
    table = summary(low)
    out = Path(args.out)
    write_text_atomic(out / "gemm_kernels.csv", low.to_csv(index=False))
    text = ("Low-precision GEMM speed-up over bf16 of the same shape: published vs the cost model\n\n"
            + markdown_table(table, floatfmt="{:g}") + "\n")
    if args.fit:
        fitted = fit(points)
        write_json_atomic(out / "gemm_fit.json", fitted)
        text += f"\nfit: {json.dumps(fitted)}\n"
    write_text_atomic(out / "gemm_kernels.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
