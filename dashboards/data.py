"""Cached loaders for the dashboards: run directories in, DataFrames out, through lab and sim only.

    from dashboards import data
    runs = data.runs_table("runs")                     # one row per runs/<name>/<run_id>/manifest.json
    frame = data.traces(run_dir, data.stamp(run_dir))  # lab.trace.read_traces, cached until files change

Every number shown by a page comes from lab.metrics, lab.report or sim (tau, survival, conditional rates,
vLLM counters, ECE, STS prefix probabilities, frontier, SLA table); this module only groups and caches.
Caches are keyed by path plus `mtime` (data.stamp(run): the newest mtime under the run), so a rerun
stage shows up on reload.
Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from lab.metrics import conditional_rates, ece, reliability_bins, survival, tau_table, vllm_counters
from lab.report import table1_layout
from lab.trace import read_traces

RUNS_ENV = "DSPARK_LAB_RUNS"
GROUP = ["method", "dataset", "temperature", "table"]


def default_root() -> str:
    return os.environ.get(RUNS_ENV, "runs")


def run_dirs(root: str | Path) -> list[Path]:
    """Run directories under root: <root>/<name>/<run_id>/manifest.json (or root itself is a run)."""
    root = Path(root)
    if (root / "manifest.json").is_file():
        return [root]
    return sorted(p.parent for p in root.glob("*/*/manifest.json"))


def stamp(run: str | Path) -> float:
    """Newest mtime of any file in the run: the cache key part that changes when a stage rewrites output."""
    newest = 0.0
    for dirpath, _, files in os.walk(run):
        for f in files:
            try:
                newest = max(newest, os.stat(os.path.join(dirpath, f)).st_mtime)
            except OSError:
                continue
    return newest


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def runs_table(root: str) -> pd.DataFrame:
    rows = []
    for run in run_dirs(root):
        m = _json(run / "manifest.json") or {}
        stages = (
            sorted(p.stem for p in (run / ".stages").glob("*.done")) if (run / ".stages").is_dir() else []
        )
        opened = m.get("opened_at")
        rows.append(
            {
                "name": m.get("name", run.parent.name),
                "run_id": m.get("run_id", run.name),
                "opened": pd.to_datetime(opened, unit="s").strftime("%Y-%m-%d %H:%M") if opened else "",
                "stages_done": ", ".join(stages),
                "seed": m.get("seed"),
                "config_hash": m.get("config_hash", ""),
                "git_sha": str(m.get("git_sha", ""))[:10],
                "traces": (run / "traces").is_dir(),
                "calibration": (run / "calibration.json").is_file(),
                "sim": (run / "sim" / "results.parquet").is_file(),
                "path": str(run),
            }
        )
    return pd.DataFrame(rows)


def manifest(run: str | Path) -> dict:
    return _json(Path(run) / "manifest.json") or {}


def text(run: str | Path, name: str) -> str | None:
    p = Path(run) / name
    return p.read_text() if p.is_file() else None


def pngs(run: str | Path) -> list[Path]:
    return sorted(Path(run).rglob("*.png"))


# ---- acceptance ------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Reading traces ...")
def traces(run: str, mtime: float) -> pd.DataFrame:
    """All shards under <run>/traces, validated by lab.trace (LabError on a corrupt shard)."""
    return read_traces(Path(run) / "traces")


@st.cache_data(show_spinner=False)
def tau_csv(run: str, mtime: float) -> pd.DataFrame | None:
    p = Path(run) / "tau.csv"
    return pd.read_csv(p) if p.is_file() else None


def table1(tau: pd.DataFrame, value: str) -> pd.DataFrame:
    """Drafters x datasets + macro average (lab.report.table1_layout)."""
    return table1_layout(tau, value)


@st.cache_data(show_spinner=False)
def tau_by_table(run: str, mtime: float) -> pd.DataFrame:
    """lab.metrics.tau_table per method x dataset x temperature x table (rounds and anchors)."""
    return tau_table(traces(run, mtime), by=tuple(GROUP))


@st.cache_data(show_spinner=False)
def positions(run: str, mtime: float, table: str) -> pd.DataFrame:
    """Long frame: method, dataset, temperature, position, conditional c_j, survival s_j (lab.metrics)."""
    f = traces(run, mtime)
    f = f[f["table"] == table]
    rows = []
    for (method, dataset, temp), g in f.groupby(["method", "dataset", "temperature"], sort=True):
        for j, (c, s) in enumerate(zip(conditional_rates(g), survival(g)), start=1):
            rows.append(
                {
                    "method": method,
                    "dataset": dataset,
                    "temperature": float(temp),
                    "position": j,
                    "conditional": c,
                    "survival": s,
                }
            )
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False)
def counters(run: str, mtime: float) -> pd.DataFrame:
    """lab.metrics.vllm_counters per group; per-position counts as a list column."""
    rows = []
    for key, g in traces(run, mtime).groupby(GROUP, sort=True):
        rows.append({**dict(zip(GROUP, key)), **vllm_counters(g)})
    return pd.DataFrame(rows)


# ---- calibration -----------------------------------------------------------------------------------
def calibration(run: str | Path) -> dict | None:
    return _json(Path(run) / "calibration.json")


@st.cache_data(show_spinner="Computing reliability ...")
def reliability(
    run: str,
    mtime: float,
    method: str,
    temperature: float,
    table: str,
    temps: tuple[float, ...] | None,
    bins: int = 20,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cumulative-product confidences prod_{j<=k} c_j (STS-scaled when temps) against 1[accepted >= k].

    Returns (diagram points per variant, ECE per position per variant). Rows and arrays come from
    sim.trace_rows (the simulator's own selection and packing), prefix products from sim.calibrate.
    """
    from sim.calibrate import prefix_probs
    from sim.trace_rows import pack_rows, select_rows

    f = traces(run, mtime)
    f = f[(f["method"] == method) & np.isclose(f["temperature"], temperature) & (f["table"] == table)]
    gamma = int(f["k"].max()) if len(f) else 0
    if gamma < 1:
        return pd.DataFrame(), pd.DataFrame()
    conf, _, kcap, accepted = pack_rows(select_rows(f, method, temperature, table, where=f"{run}/traces").rows, gamma)
    pos = np.arange(gamma)[None, :]
    valid = kcap[:, None] > pos  # [n, gamma]: position drafted
    label = (accepted[:, None] > pos).astype(np.float64)  # [n, gamma]: accepted prefix reaches it
    variants = [("raw", np.ones(gamma))]
    if temps:
        t = np.ones(gamma)
        n = min(len(temps), gamma)
        t[:n] = temps[:n]
        t[n:] = temps[-1]
        variants.append(("STS", t))
    points, per_pos = [], []
    for name, t in variants:
        p = prefix_probs(conf, t)
        b = reliability_bins(p[valid], label[valid], bins)
        b["variant"] = name
        points.append(b)
        for k in range(gamma):
            rows = valid[:, k]
            per_pos.append(
                {
                    "variant": name,
                    "position": k + 1,
                    "n": int(rows.sum()),
                    "mean_confidence": float(p[rows, k].mean()) if rows.any() else np.nan,
                    "accept_rate": float(label[rows, k].mean()) if rows.any() else np.nan,
                    "ece": ece(p[rows, k], label[rows, k], bins),
                }
            )
    return pd.concat(points, ignore_index=True), pd.DataFrame(per_pos)


# ---- simulation ------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False)
def sim_outputs(run: str, mtime: float) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """<run>/sim/results.parquet and sla.csv (either may be None)."""
    d = Path(run) / "sim"
    results = pd.read_parquet(d / "results.parquet") if (d / "results.parquet").is_file() else None
    sla = pd.read_csv(d / "sla.csv") if (d / "sla.csv").is_file() else None
    return results, sla


def frontier(results: pd.DataFrame, percentile: int = 50) -> pd.DataFrame:
    """sim.sweep.frontier: per policy and sweep value, tok/s/user at the TPOT percentile vs tok/s/GPU."""
    from sim.sweep import frontier as sim_frontier

    return sim_frontier(results, percentile)


def gains_wide(sla: pd.DataFrame) -> pd.DataFrame:
    """sla.csv pivoted: one row per SLA point, throughput and gains per policy as columns."""
    wide = sla.pivot_table(
        index="sla_tok_s_user",
        columns="policy",
        values=["throughput_per_gpu", "gain_vs_baseline", "gain_vs_best_fixed_k"],
        sort=False,
    )
    wide.columns = [f"{policy} {metric}" for metric, policy in wide.columns]
    return wide.reset_index()


@st.cache_data(show_spinner="Simulating ...", max_entries=32)
def ablation(sim_json: str, run: str | None, mtime: float | None, seed: int = 0):
    """Run a small sweep in process: sim.simulate.prepare_inputs + sim.sweep.run_sweep(workers=1) + sla_table.

    sim_json: a lab.config_sim.SimSection as JSON (validated here, so a bad knob is one LabError line).
    """
    from pydantic import ValidationError

    from lab.config_sim import SimSection
    from lab.errors import LabError
    from sim.simulate import prepare_inputs
    from sim.sweep import run_sweep, sla_table

    try:
        sim = SimSection.model_validate_json(sim_json)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise LabError(f"sim.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    inputs = prepare_inputs(sim, Path(run) if run else None, seed)
    results = run_sweep(inputs, show_progress=False, workers=1)
    return results, sla_table(results, sim), list(inputs.notes)
