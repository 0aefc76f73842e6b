"""vLLM's per-step floor on GPUs: published decode-step timings of small models against the cost model's fixed
terms and roofline.

    python -m sim.step_floor_check --out step_floor/          # price every published step on its preset card
    python -m sim.step_floor_check --fit --out step_floor/    # + one scale on the fixed terms, left-one-host-out,
                                                              #   and the byte / layer split per host

The data (sim/validation/step_floor.yaml, each run with its URL) are decode steps of one model at low batch on one
card, measured as the TPOT of a pure-decode phase. The check prices each step with CostModel (the run's config.json,
its preset card, `batch` requests of `context_tokens` each, one token each) and splits the price into the fixed
terms (step_overhead + n_layers x layer_overhead + step_host + batch x request_overhead, the sheet's; the two host
terms overlap the GPU's step where the run had async scheduling, and are left out of it there) and the rest (the roofline:
weights, KV, attention, LM head). `implied fixed` is what the measurement leaves for the fixed terms once the
roofline is paid: measured - roofline. On a small model that is most of the step, so these rows say whether the
fixed terms are right in level; on a bandwidth-bound model they mostly check bw_efficiency.

--fit pools one factor k on the fixed terms (k x (step + layers + requests), the roofline kept) over the runs, each
host weighing alike (least squares on log(priced / measured)), and scores each host priced with the k fitted on the
others beside k = 1 (the sheets' values): a new level is only worth adopting where it prices the hosts it was not
fitted on better than the sheets do. --fit also splits each host's one-user steps (batch <= 2) into a per-byte and a
per-layer part: measured = roofline at bw_efficiency f + n_layers x t_layer + the sheet's step and request terms, f
and t_layer fitted together (least squares on log(priced / measured), f on a grid, t_layer in closed form for each f).
Models of different sizes on one host (one card, one vLLM build) tell the two apart: bytes grow ~30x from a 0.5B to
a 14B model, layers ~2x. A host with one model size cannot, and is listed as not identified. Nothing is changed. The held-out serving rows of public_vllm.yaml are not here
and choose nothing: they are scored by sim.public_check. Writes step_floor.csv (every priced point),
step_floor_fit.csv, step_floor_split.csv (--fit) and step_floor.md into --out. Bad input (missing file, bad field) prints one `error:` line and
exits 2 with nothing written.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from lab.arguments import start_data_check, write_check_outputs
from lab.config_base import StrictModel
from lab.report import markdown_table
from sim.cost import CostModel
from sim.hardware import get_hardware
from sim.public_check import HardwarePreset, RepoFile, repo_model, validated_runs

DEFAULT_FILE = Path(__file__).parent / "validation" / "step_floor.yaml"
SCALE_RANGE = (0.0, 5.0)  # where the factor on the fixed terms is looked for
SPLIT_BW_GRID = np.round(np.arange(0.60, 1.0001, 0.005), 3)  # bw_efficiency values the byte / layer split tries
SPLIT_MAX_BATCH = 2  # the split reads one-user steps only (a larger batch adds per-request costs it does not fit)


class StepPoint(StrictModel):
    """One measured decode step: `batch` requests, `context_tokens` cached each."""

    batch: int = Field(ge=1, le=4096)
    context_tokens: int = Field(ge=0)
    step_ms: float = Field(gt=0)


class StepFloorRun(StrictModel):
    """One source: decode steps of one model on one card at one or more batch sizes / contexts."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str = Field(pattern=r"^https://")
    where: str = Field(min_length=1)
    host: str = Field(min_length=1, description="the machine the run is from; the fit weighs hosts alike")
    device: HardwarePreset = Field(description="a hardware preset name")
    device_name: str = Field(min_length=1)
    engine: str = Field(min_length=1)
    engine_version: str | None = None
    cuda_graphs: str | None = None
    async_scheduling: bool = Field(False, description="whether the server ran async scheduling (vLLM's default from "
                                                      "0.14): the sheet's host terms then overlap the GPU's step")
    model: str = Field(min_length=1)
    model_config_path: RepoFile = Field(alias="model_config", description="a config.json, repository-relative")
    points: list[StepPoint] = Field(min_length=1)
    note: str | None = None


def load_runs(path: str | Path) -> list[StepFloorRun]:
    """The runs of a step-floor data file; LabError naming the file and the first bad field."""
    return validated_runs(StepFloorRun, path, "decode-step timings", "<run>")



def priced(run: StepFloorRun, point: StepPoint) -> tuple[float, float]:
    """(fixed, roofline) of the cost model's decode step of `point` on the run's preset card, ms: fixed = step +
    n_layers x layer + batch x request overhead (the sheet's), roofline = the rest of CostModel.step_time."""
    model = repo_model(run.model_config_path)
    cost = CostModel(hw=get_hardware(run.device), model=model, tp=1, async_scheduling=run.async_scheduling)
    b = point.batch
    total = cost.step_time(b, b * point.context_tokens, b, False) * 1e3
    host = 0.0 if run.async_scheduling else cost.host_s(b)  # beside the GPU's if async
    fixed = (cost.step_overhead_s + model.n_layers * cost.layer_overhead_s + host) * 1e3
    return fixed, total - fixed


def priced_without_layers(run: StepFloorRun, point: StepPoint, bw_efficiency: float) -> float:
    """The cost model's decode step of `point` at `bw_efficiency` (weights and KV alike) with no per-layer overhead,
    ms: everything but n_layers x layer_overhead, which adds to it linearly (sim/cost.py's fixed terms)."""
    hw = get_hardware(run.device).model_copy(update={"bw_efficiency": bw_efficiency, "layer_overhead_us": 0.0})
    b = point.batch
    return CostModel(hw=hw, model=repo_model(run.model_config_path), tp=1,
                     async_scheduling=run.async_scheduling).step_time(b, b * point.context_tokens, b, False) * 1e3


def _layer_us_for(rest_ms: np.ndarray, layers: np.ndarray, measured: np.ndarray) -> float:
    """The per-layer overhead (us, >= 0) minimising sum(((rest + layers x t) / measured - 1)^2): closed form."""
    a = layers / 1e3 / measured
    return max(0.0, float(np.sum(a * (1 - rest_ms / measured)) / np.sum(a * a)))


def fit_split(runs: list[StepFloorRun]) -> pd.DataFrame:
    """Per host, from its steps of batch <= SPLIT_MAX_BATCH: bw_efficiency f and layer_overhead_us t fitted together
    (least squares on log(priced / measured)), the median |error| there and at the sheet's own values, and t at the
    sheet's f; a host with one model size is listed with `identified` False and no fit."""
    rows = []
    for host in sorted({r.host for r in runs}):
        pts = [(r, p) for r in runs if r.host == host for p in r.points if p.batch <= SPLIT_MAX_BATCH]
        if not pts:
            continue
        hw = get_hardware(pts[0][0].device)
        models = sorted({r.model_config_path for r, _ in pts})
        layers = np.array([repo_model(r.model_config_path).n_layers for r, _ in pts], dtype=float)
        measured = np.array([p.step_ms for _, p in pts])
        sheet = np.array([sum(priced(r, p)) for r, p in pts])
        row = {"host": host, "device": pts[0][0].device, "models": len(models), "points": len(pts),
               "identified": len(models) >= 2, "sheet_bw_efficiency": hw.bw_efficiency,
               "sheet_layer_overhead_us": hw.layer_overhead_us,
               "sheet_abs_err_pct": round(100 * float(np.median(np.abs(sheet / measured - 1))), 1)}
        rest_at_sheet = np.array([priced_without_layers(r, p, hw.bw_efficiency) for r, p in pts])
        row["layer_us_at_sheet_bw"] = round(_layer_us_for(rest_at_sheet, layers, measured), 1)
        if row["identified"]:
            best = None
            for f in SPLIT_BW_GRID:
                rest = np.array([priced_without_layers(r, p, float(f)) for r, p in pts])
                t = _layer_us_for(rest, layers, measured)
                err = (rest + layers * t / 1e3) / measured - 1
                loss = float(np.sum(np.log1p(err) ** 2))
                if best is None or loss < best[0]:
                    best = (loss, float(f), t, err)
            _, f, t, err = best
            row.update({"bw_efficiency": f, "layer_overhead_us": round(t, 1),
                        "fit_abs_err_pct": round(100 * float(np.median(np.abs(err))), 2)})
        rows.append(row)
    return pd.DataFrame(rows)


def score(runs: list[StepFloorRun]) -> pd.DataFrame:
    """Every point: measured, priced (fixed + roofline), relative error (priced / measured - 1), implied fixed."""
    rows = []
    for run in runs:
        layers = repo_model(run.model_config_path).n_layers
        for p in run.points:
            fixed, roof = priced(run, p)
            rows.append({"run": run.id, "host": run.host, "device": run.device, "device_name": run.device_name,
                         "model": run.model, "layers": layers, "batch": p.batch, "context_tokens": p.context_tokens,
                         "measured_ms": p.step_ms, "sim_ms": fixed + roof, "fixed_ms": fixed, "roofline_ms": roof,
                         "rel_err": (fixed + roof) / p.step_ms - 1, "implied_fixed_ms": p.step_ms - roof})
    return pd.DataFrame(rows)


def fit_scale(points: pd.DataFrame) -> float:
    """The factor k on the fixed terms that prices `points` best: least squares on log((k fixed + roofline) /
    measured), each host weighing alike and each point alike within its host."""
    from scipy.optimize import minimize_scalar

    w = 1.0 / points.groupby("host")["host"].transform("size").to_numpy()
    fixed, roof, meas = (points[c].to_numpy() for c in ("fixed_ms", "roofline_ms", "measured_ms"))

    def loss(k):
        return float(np.sum(w * np.log((k * fixed + roof) / meas) ** 2))

    return float(minimize_scalar(loss, bounds=SCALE_RANGE, method="bounded", options={"xatol": 1e-4}).x)


def _abs_err_pct(points: pd.DataFrame, k: float) -> float:
    e = (k * points.fixed_ms + points.roofline_ms) / points.measured_ms - 1
    return round(100 * float(np.median(np.abs(e))), 1)


def fit_all(points: pd.DataFrame) -> pd.DataFrame:
    """Per host: its own k, the pooled k, and its error at k = 1 (the sheets), at the pooled k and at the k fitted on
    the other hosts (leave-one-host-out); median |error| over its points."""
    pooled = fit_scale(points)
    rows = []
    for host in sorted(points.host.unique()):
        mine, others = points[points.host == host], points[points.host != host]
        out = fit_scale(others) if len(others) else float("nan")
        rows.append({"host": host, "points": len(mine), "own_k": round(fit_scale(mine), 3),
                     "sheet_abs_err_pct": _abs_err_pct(mine, 1.0), "pooled_k": round(pooled, 3),
                     "pooled_abs_err_pct": _abs_err_pct(mine, pooled), "left_out_k": round(out, 3),
                     "left_out_abs_err_pct": _abs_err_pct(mine, out) if len(others) else float("nan")})
    return pd.DataFrame(rows)


def markdown(points: pd.DataFrame, fits: pd.DataFrame | None, split: pd.DataFrame | None = None) -> str:
    lines = [("vLLM decode steps of small models: measured vs the cost model on each run's preset card "
              "(error = priced / measured - 1; fixed = step + layers + requests overhead; implied fixed = measured "
              "- roofline)"), "",
             ("| run | card (preset) | layers | batch | context | measured ms | priced ms | error | fixed ms | "
              "roofline ms | implied fixed ms |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, p in points.iterrows():
        lines.append(f"| {p.run} | {p.device_name} ({p.device}) | {p.layers} | {p.batch} | {p.context_tokens} | "
                     f"{p.measured_ms:.4g} | {p.sim_ms:.4g} | {100 * p.rel_err:+.1f}% | {p.fixed_ms:.3f} | "
                     f"{p.roofline_ms:.3f} | {p.implied_fixed_ms:.3f} |")
    e = points.rel_err.abs()
    lines += ["", f"{len(points)} points: median |error| {100 * e.median():.1f}%, within 10%: {(e <= 0.10).sum()}"]
    if fits is not None and len(fits):
        lines += ["", "One factor k on the fixed terms, pooled and left one host out (k = 1: the sheets):", "",
                  markdown_table(fits, floatfmt="{:g}")]
    if split is not None and len(split):
        lines += ["", (f"The byte / layer split of each host's steps at batch <= {SPLIT_MAX_BATCH}: bw_efficiency and "
                       "layer_overhead_us fitted together (identified: two or more model sizes on the host), and "
                       "layer_overhead_us at the sheet's bw_efficiency:"), "",
                  markdown_table(split, floatfmt="{:g}")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args, runs, cpu0, wall0 = start_data_check(
        load_runs, argv, "python -m sim.step_floor_check", __doc__, DEFAULT_FILE, "decode-step timings", "step_floor",
        "also fit one factor on the fixed terms, scored leave-one-host-out beside the sheets' (step_floor_fit.csv), "
        "and split each host's one-user steps into bw_efficiency and layer_overhead_us (step_floor_split.csv); "
        "the sheets are not changed")
    if runs is None:
        return 2
    points = score(runs)
    fits = fit_all(points) if args.fit else None
    split = fit_split(runs) if args.fit else None
    text = markdown(points, fits, split)
    return write_check_outputs(args.out, {"step_floor.csv": points, "step_floor_fit.csv": fits,
                                          "step_floor_split.csv": split}, "step_floor.md", text, cpu0, wall0)


if __name__ == "__main__":
    sys.exit(main())
