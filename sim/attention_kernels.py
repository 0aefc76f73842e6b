"""Published FlashAttention forward timings against the cost model's attention term.

    python -m sim.attention_kernels --out attention_kernels/         # ~1 s; writes attention_kernels.{csv,md}
    python -m sim.attention_kernels --fit --out attention_kernels/   # + attn_mfu per card (attention_fit.csv)

The data (sim/validation/attention_kernels.yaml, each run with its URL) time one attention forward call over `batch`
sequences of `seqlen` tokens with `heads` heads of `head_dim` (causal or not) and print TFLOP/s. Every point is priced
by the cost model's own attention term on the card's preset (sim/cost.py CostModel.attention_time: attended (query
token x cached token) pairs x 4 x heads x head_dim FLOPs / (attn_mfu, else mfu, x peak[bf16]) on a one-layer
attention-only model; a causal sequence of L tokens attends L (L + 1) / 2 pairs, as a prompt's prefill does in
step_time), and printed beside the published time with error = simulated / published - 1 (negative: the model is
too fast). The kernels reach less of peak at short sequences (causal masking and the per-tile prologue weigh more);
a sheet's single attn_mfu is what the card's fit runs (the kernel vLLM runs there: FA3 on Hopper) sustain over all
their points together, their summed FLOPs over their summed time (--fit): the long sequences, whose attention
dominates a serving step, weigh the most.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lab.arguments import start_data_check, write_check_outputs
from lab.errors import LabError
from lab.report import markdown_table
from lab.yaml_load import load_runs_list
from sim.cost import CostModel
from sim.hardware import HARDWARE_NAMES, get_hardware
from sim.models import ModelShape

DEFAULT_FILE = Path(__file__).parent / "validation" / "attention_kernels.yaml"
MAX_SIZE = 2**31  # a point's batch, seqlen, heads or head_dim (1e308 read as an integer overflows the FLOP count)
POINT_KEYS = ("batch", "seqlen", "heads", "head_dim")


def load_points(path: str | Path) -> pd.DataFrame:
    """One row per published point: run, device, kernel, fit, batch, seqlen, heads, head_dim, causal, tflops,
    published_us (from the printed TFLOP/s and the FlashAttention FLOP count)."""
    p = Path(path)
    rows = []
    for i, run in enumerate(load_runs_list(p, "attention runs")):
        for key in ("id", "device", "kernel", "unit", "fit", "points"):
            if key not in run:
                raise LabError(f"{p}: runs[{i}].{key}: missing")
        if run["device"] not in HARDWARE_NAMES:
            raise LabError(f"{p}: runs[{i}].device: {run['device']!r} is not a hardware preset {HARDWARE_NAMES}")
        if run["unit"] != "tflops":
            raise LabError(f"{p}: runs[{i}].unit: {run['unit']!r} is not tflops")
        if not isinstance(run["fit"], bool):
            raise LabError(f"{p}: runs[{i}].fit: true or false expected")
        if not isinstance(run["points"], list) or not run["points"]:
            raise LabError(f"{p}: runs[{i}].points: a non-empty list expected")
        for j, point in enumerate(run["points"]):
            try:
                batch, seqlen, heads, head_dim = (int(point[k]) for k in POINT_KEYS)
                value, causal = float(point["value"]), point["causal"]
            except (KeyError, TypeError, ValueError):
                raise LabError(f"{p}: runs[{i}].points[{j}]: batch, seqlen, heads, head_dim, causal and value "
                               "expected") from None
            sizes = (batch, seqlen, heads, head_dim)
            if min(sizes) < 1 or max(sizes) > MAX_SIZE or not 0 < value < math.inf or not isinstance(causal, bool):
                raise LabError(f"{p}: runs[{i}].points[{j}]: batch, seqlen, heads, head_dim from 1 to {MAX_SIZE}, a "
                               "positive finite value, causal true or false expected")
            flops = 4.0 * batch * seqlen**2 * heads * head_dim / (2.0 if causal else 1.0)
            rows.append({"run": run["id"], "device": run["device"], "kernel": str(run["kernel"]), "fit": run["fit"],
                         "batch": batch, "seqlen": seqlen, "heads": heads, "head_dim": head_dim, "causal": causal,
                         "tflops": value, "published_us": flops / (value * 1e12) * 1e6})
    return pd.DataFrame(rows)


def attended_pairs(batch, seqlen, causal):
    """(query token, cached token) pairs one call attends, as the cost model counts them: a causal sequence of L
    tokens L (L + 1) / 2 (step_time's prefill chunk from context 0), else L^2; scalars or numpy arrays."""
    seqlen = np.asarray(seqlen, dtype=np.float64)
    return np.asarray(batch, dtype=np.float64) * np.where(causal, seqlen * (seqlen + 1) / 2, seqlen**2)


def attention_model(heads: int, head_dim: int) -> ModelShape:
    """A one-layer attention-only model of `heads` query (and KV) heads of `head_dim` (its weights do not enter
    CostModel.attention_time)."""
    return ModelShape(name="attention", params_b=1e-6, n_layers=1, hidden=heads * head_dim, n_heads=heads,
                      n_kv_heads=heads, head_dim=head_dim, dtype="bf16")


def sim_us(sheet, batch: int, seqlen: int, heads: int, head_dim: int, causal: bool) -> float:
    """The cost model's attention time of one call on `sheet`, microseconds."""
    cm = CostModel(sheet, attention_model(heads, head_dim), drafter_layers=0, step_overhead_s=0.0,
                   layer_overhead_s=0.0, request_overhead_s=0.0)
    return float(cm.attention_time(attended_pairs(batch, seqlen, causal))) * 1e6


def score(points: pd.DataFrame, sheets: dict | None = None) -> pd.DataFrame:
    """Every point with the simulated time on `sheets` (default: the presets) and error = simulated / published
    - 1, and the fraction of the sheet's bf16 peak the point reached (published_fraction)."""
    sheets = sheets or {d: get_hardware(d) for d in points.device.unique()}
    out = points.copy()
    out["simulated_us"] = [sim_us(sheets[d], b, s, h, hd, c) for d, b, s, h, hd, c in
                           zip(out.device, out.batch, out.seqlen, out.heads, out.head_dim, out.causal)]
    out["error"] = out.simulated_us / out.published_us - 1.0
    out["published_fraction"] = [t / sheets[d].peak_for("bf16") for d, t in zip(out.device, out.tflops)]
    return out


def fit(points: pd.DataFrame) -> pd.DataFrame:
    """attn_mfu per card from its fit runs: their summed FLOPs (as the cost model counts them) over their summed
    published time, as a fraction of the sheet's bf16 peak -- the single fraction at which the cost model's summed
    time of those points equals the published sum -- beside the sheet's attn_mfu and mfu."""
    rows = []
    for device, part in points[points.fit].groupby("device"):
        sheet = get_hardware(device)
        flops = sum(attended_pairs(b, s, c) * 4.0 * h * hd for b, s, h, hd, c in
                    zip(part.batch, part.seqlen, part.heads, part.head_dim, part.causal))
        fraction = float(flops / (part.published_us.sum() * 1e-6) / (sheet.peak_for("bf16") * 1e12))
        rows.append({"device": device, "points": len(part), "runs": " ".join(sorted(part.run.unique())),
                     "attn_mfu_fitted": round(fraction, 3), "attn_mfu_sheet": sheet.attn_mfu, "mfu_sheet": sheet.mfu})
    return pd.DataFrame(rows)


def summary(scored: pd.DataFrame) -> pd.DataFrame:
    """Per run: points, the published fraction of peak (min..max), the median and the longest sequence's error."""
    rows = []
    for run, part in scored.groupby("run", sort=False):
        longest = part.loc[part.seqlen.idxmax()]
        rows.append({"run": run, "device": part.device.iloc[0], "kernel": part.kernel.iloc[0],
                     "fit": bool(part.fit.iloc[0]), "points": len(part),
                     "published_fraction": f"{part.published_fraction.min():.2f}-{part.published_fraction.max():.2f}",
                     "median_abs_error": round(float(part.error.abs().median()), 3),
                     "error_longest": round(float(longest.error), 3)})
    return pd.DataFrame(rows)


def markdown(scored: pd.DataFrame, fits: pd.DataFrame | None) -> str:
    cols = ["run", "batch", "seqlen", "heads", "head_dim", "causal", "tflops", "published_fraction", "published_us",
            "simulated_us", "error"]
    text = ("FlashAttention forward: published vs the cost model's attention term (error = simulated / published - 1)"
            "\n\n" + markdown_table(summary(scored), floatfmt="{:g}") + "\n\nPer point:\n\n"
            + markdown_table(scored[cols].round({"published_fraction": 3, "published_us": 1, "simulated_us": 1,
                                                 "error": 3}), floatfmt="{:g}") + "\n")
    if fits is not None:
        text += ("\nattn_mfu per card (fit runs: summed FLOPs / summed published time / bf16 peak):\n\n"
                 + markdown_table(fits, floatfmt="{:g}") + "\n")
    return text


def main(argv=None) -> int:
    args, points, cpu0, wall0 = start_data_check(
        load_points, argv, "python -m sim.attention_kernels", __doc__, DEFAULT_FILE, "attention timings",
        "attention_kernels", "also fit attn_mfu per card on its fit runs (attention_fit.csv); the presets are not "
        "changed")
    if points is None:
        return 2
    scored = score(points)
    fits = fit(points) if args.fit else None
    return write_check_outputs(args.out, {"attention_kernels.csv": scored, "attention_fit.csv": fits},
                               "attention_kernels.md", markdown(scored, fits), cpu0, wall0)


if __name__ == "__main__":
    sys.exit(main())
