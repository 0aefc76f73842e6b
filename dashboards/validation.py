"""Data of the Simulator validation page: the simulator's error against published vLLM runs, fused-MoE kernels and
GPU kernels measured on the card.

    python -m sim.public_check --out public_check/        # writes public_check/public_check.csv
    python -m sim.moe_kernels --fit --out moe_kernels/    # writes moe_kernels/moe_kernels.csv, moe_fit.csv
    python -m sim.kernel_roofline --fit --out kernel_roofline/   # GPU kernels measured on the card: steps.csv, implied.csv
    frame = public_check(Path("public_check"))            # None when absent; LabError (one line) when unreadable

Reads those output directories (read only, through dashboards.data.guarded_read); the numbers are the tools'
own, grouped as sim.public_check groups them (kind_table), never recomputed here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboards.data import guarded_read, with_columns
from lab.report import read_named_csv
from sim.public_check import kind_table

PUBLIC_COLUMNS = ("id", "half", "gpu", "model", "tp", "reported_tpot_mean_ms", "sim_tpot_mean_ms",
                  "rel_err_tpot_mean_ms", "rel_err_output_throughput_tok_s", "sim_model_kind")
KERNEL_COLUMNS = ("run", "device", "tokens", "measured_us", "sim_us", "rel_err", "cached")
STEP_COLUMNS = ("run", "device", "model", "tp", "batch", "context", "kernel_sum_ms", "roofline_ms",
                "roofline_with_overheads_ms")
IMPLIED_COLUMNS = ("run", "device", "term", "implied", "sheet", "points")


@st.cache_data(show_spinner=False)
def public_check(directory: str, mtime: float) -> pd.DataFrame | None:
    """public_check.csv of a `python -m sim.public_check --out DIR` directory (mtime: cache key)."""
    return guarded_read(Path(directory) / "public_check.csv", with_columns(read_named_csv, PUBLIC_COLUMNS),
                        "public_check table")


@st.cache_data(show_spinner=False)
def moe_kernels(directory: str, mtime: float) -> pd.DataFrame | None:
    """moe_kernels.csv of a `python -m sim.moe_kernels --out DIR` directory."""
    return guarded_read(Path(directory) / "moe_kernels.csv", with_columns(read_named_csv, KERNEL_COLUMNS),
                        "moe_kernels table")


@st.cache_data(show_spinner=False)
def moe_fit(directory: str, mtime: float) -> pd.DataFrame | None:
    return guarded_read(Path(directory) / "moe_fit.csv", with_columns(read_named_csv, ("fit", "device")),
                        "moe_fit table")


@st.cache_data(show_spinner=False)
def kernel_steps(directory: str, mtime: float) -> pd.DataFrame | None:
    """steps.csv of a `python -m sim.kernel_roofline --out DIR` directory: kernel-sum decode steps vs the sheet."""
    return guarded_read(Path(directory) / "steps.csv", with_columns(read_named_csv, STEP_COLUMNS), "kernel steps table")


@st.cache_data(show_spinner=False)
def kernel_implied(directory: str, mtime: float) -> pd.DataFrame | None:
    """implied.csv (sim.kernel_roofline --fit): the achievable fractions the measured kernels imply."""
    return guarded_read(Path(directory) / "implied.csv", with_columns(read_named_csv, IMPLIED_COLUMNS),
                        "implied terms table")


def implied_by_card(implied: pd.DataFrame) -> pd.DataFrame:
    """One row per (card, term): the range over the card's tables beside the sheet's value."""
    return (implied.dropna(subset=["implied"]).groupby(["device", "term"], sort=False)
            .agg(tables=("run", "size"), implied_min=("implied", "min"), implied_max=("implied", "max"),
                 sheet=("sheet", "first")).round(3).reset_index())


def stamp(directory: str | Path, name: str) -> float:
    path = Path(directory) / name
    return path.stat().st_mtime if path.exists() else 0.0


def headline(frame: pd.DataFrame) -> dict[str, str]:
    """Held-out rows, TPOT within 10% of those reporting it, median |TPOT error|, output throughput within 10%."""
    held = frame[frame["half"] == "held-out"]
    tpot = held["rel_err_tpot_mean_ms"].dropna().abs()
    thr = held["rel_err_output_throughput_tok_s"].dropna().abs()
    return {"held-out rows": str(len(held)),
            "TPOT within 10%": f"{int((tpot <= 0.10).sum())} of {len(tpot)}",
            "TPOT median |error|": f"{100 * tpot.median():.0f}%" if len(tpot) else "-",
            "out tok/s within 10%": f"{int((thr <= 0.10).sum())} of {len(thr)}"}


def kinds(frame: pd.DataFrame, by: str = "sim_model_kind") -> pd.DataFrame:
    """kind_table (by model kind, or by `card`) with the median as a percentage, for display."""
    table = kind_table(frame, by).copy()
    table["tpot_median_abs_err"] = (100 * table["tpot_median_abs_err"]).round(0)
    return table.rename(columns={"tpot_median_abs_err": "tpot_median_abs_err_pct"})


def tpot_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a reported and a simulated TPOT: the scatter's points (error in percent)."""
    points = frame.dropna(subset=["reported_tpot_mean_ms", "sim_tpot_mean_ms"]).copy()
    points["err_pct"] = (100 * points["rel_err_tpot_mean_ms"]).round(1)
    return points[["id", "half", "gpu", "model", "tp", "sim_model_kind", "reported_tpot_mean_ms", "sim_tpot_mean_ms",
                   "err_pct"]]


def kernel_summary(points: pd.DataFrame) -> pd.DataFrame:
    """Per kernel run: points HBM could have served, their median |error| (percent), tokens range."""
    served = points[~points["cached"].astype(bool)]
    rows = []
    for run, part in served.groupby("run", sort=False):
        rows.append({"run": run, "device": part["device"].iloc[0], "points": len(part),
                     "tokens": f"{part['tokens'].min()}-{part['tokens'].max()}",
                     "median_abs_err_pct": round(float(100 * np.median(np.abs(part["rel_err"]))), 1)})
    return pd.DataFrame(rows)
