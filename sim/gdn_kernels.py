"""Published Gated DeltaNet decode-kernel timings against the cost model's linear-attention state term.

    python -m sim.gdn_kernels --out gdn_kernels/         # ~1 s; writes gdn_kernels.{csv,md}
    python -m sim.gdn_kernels --fit --out gdn_kernels/   # + linear_state_bw_efficiency per card (gdn_fit.csv)

The data (sim/validation/gdn_kernels.yaml, each run with its URL) time vLLM's fused recurrent GDN kernel over `batch`
requests of one decode token each: it reads every request's recurrent state (v_heads x k_dim x v_dim on one GPU)
and writes it back. The cost model prices that traffic as 2 x state bytes per request at the card's peak bandwidth
x linear_state_bw_efficiency (sim/cost.py linear_state_bandwidth; null on a sheet: the KV reads' fraction), and
the kernel's fixed part is left to the per-layer overhead (layer_overhead_us). Each point is printed beside the
published time, error = simulated / published - 1 (negative: the model is too fast; at small batches the kernel's
own floor, ~7 us on an H200, dominates and is not part of this term). --fit: per card, a least-squares line through
its fit runs' points, time = floor + batch x state bytes moved / (efficiency x peak bandwidth): one efficiency
(the slope) and one floor per card; the presets are not changed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lab.arguments import start_data_check, write_check_outputs
from lab.errors import LabError
from lab.report import markdown_table
from lab.yaml_load import load_runs_list
from sim.cost import linear_state_bandwidth
from sim.hardware import HARDWARE_NAMES, get_hardware
from sim.linear_attn import STATE_DTYPE_BYTES

DEFAULT_FILE = Path(__file__).parent / "validation" / "gdn_kernels.yaml"
RUN_KEYS = ("id", "url", "device", "v_heads", "k_dim", "v_dim", "state_dtype", "fit", "kernel_us")


def load_points(path: str | Path) -> pd.DataFrame:
    """One row per published point: run, device, fit, batch, moved_bytes (state read + written, all requests),
    published_us."""
    p = Path(path)
    rows = []
    for i, run in enumerate(load_runs_list(p, "GDN kernel runs")):
        for key in RUN_KEYS:
            if key not in run:
                raise LabError(f"{p}: runs[{i}].{key}: missing")
        if run["device"] not in HARDWARE_NAMES:
            raise LabError(f"{p}: runs[{i}].device: {run['device']!r} is not a hardware preset {HARDWARE_NAMES}")
        if not isinstance(run["state_dtype"], str) or run["state_dtype"] not in STATE_DTYPE_BYTES:
            raise LabError(f"{p}: runs[{i}].state_dtype: {run['state_dtype']!r} is not one of "
                           f"{sorted(STATE_DTYPE_BYTES)}")
        if not isinstance(run["fit"], bool):
            raise LabError(f"{p}: runs[{i}].fit: true or false expected")
        for key in ("v_heads", "k_dim", "v_dim"):
            if isinstance(run[key], bool) or not isinstance(run[key], int) or run[key] < 1:
                raise LabError(f"{p}: runs[{i}].{key}: a positive integer expected, not {run[key]!r}")
        times = run["kernel_us"]
        if not isinstance(times, dict) or not times:
            raise LabError(f"{p}: runs[{i}].kernel_us: a non-empty mapping batch -> microseconds expected")
        per_request = 2.0 * run["v_heads"] * run["k_dim"] * run["v_dim"] * STATE_DTYPE_BYTES[run["state_dtype"]]
        for batch, us in times.items():
            if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1 \
                    or isinstance(us, bool) or not isinstance(us, (int, float)) or us <= 0:
                raise LabError(f"{p}: runs[{i}].kernel_us: {batch!r}: {us!r} is not a positive batch and time")
            rows.append({"run": run["id"], "device": run["device"], "fit": run["fit"], "batch": batch,
                         "moved_bytes": batch * per_request, "published_us": float(us)})
    return pd.DataFrame(rows)


def score(points: pd.DataFrame) -> pd.DataFrame:
    """Each point priced by the cost model's state term on its card's preset: moved bytes / linear_state_bandwidth."""
    out = points.copy()
    bandwidth = {d: linear_state_bandwidth(get_hardware(d)) for d in out.device.unique()}
    out["sim_us"] = out.moved_bytes / out.device.map(bandwidth) * 1e6
    out["error"] = out.sim_us / out.published_us - 1.0
    return out


def fit(points: pd.DataFrame) -> pd.DataFrame:
    """Per card, over its fit runs: time = floor + moved bytes / (efficiency x peak bandwidth), least squares."""
    rows = []
    for device, grp in points[points.fit].groupby("device"):
        peak = get_hardware(device).mem_bw_tbs * 1e12
        x = grp.moved_bytes.to_numpy() / peak * 1e6  # (points,) microseconds at peak bandwidth
        design = np.stack([np.ones_like(x), x], axis=1)  # (points, 2)
        (floor, slope), *_ = np.linalg.lstsq(design, grp.published_us.to_numpy(), rcond=None)
        resid = design @ np.array([floor, slope]) / grp.published_us.to_numpy() - 1.0
        rows.append({"device": device, "points": len(grp), "linear_state_bw_efficiency": 1.0 / slope,
                     "floor_us": floor, "max_abs_rel_residual": float(np.abs(resid).max())})
    return pd.DataFrame(rows)


def markdown(scored: pd.DataFrame, fits: pd.DataFrame | None) -> str:
    """The scored points per run (median error) and, with --fit, the per-card fit."""
    lines = ["# GDN decode kernel (fused recurrent) vs the cost model's state term", ""]
    table = scored.groupby(["run", "device", "fit"], sort=False).agg(
        points=("batch", "size"), median_error=("error", "median")).reset_index()
    table["median_error"] = table.median_error.map(lambda e: f"{e * 100:+.1f}%")
    lines += [markdown_table(table), ""]
    if fits is not None:
        shown = fits.copy()
        for col in ("linear_state_bw_efficiency", "floor_us", "max_abs_rel_residual"):
            shown[col] = shown[col].map(lambda v: f"{v:.3f}")
        lines += ["## Fit: floor + state bytes / (efficiency x peak bandwidth)", "", markdown_table(shown), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args, points, cpu0, wall0 = start_data_check(
        load_points, argv, "python -m sim.gdn_kernels", __doc__, DEFAULT_FILE, "GDN decode-kernel timings",
        "gdn_kernels", "also fit linear_state_bw_efficiency per card on its fit runs (gdn_fit.csv); the presets are "
        "not changed")
    if points is None:
        return 2
    scored = score(points)
    fits = fit(points) if args.fit else None
    return write_check_outputs(args.out, {"gdn_kernels.csv": scored, "gdn_fit.csv": fits}, "gdn_kernels.md",
                               markdown(scored, fits), cpu0, wall0)


if __name__ == "__main__":
    sys.exit(main())
