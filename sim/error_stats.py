"""Signed error statistics of the simulator against reported numbers, shared by sim.public_check and
sim.ttft_breakdown (a library, no command: run either of those).

An error is sim / reported - 1 per row. Beside the mean, two that a few rows cannot drag: the median signed error
and the geometric mean of sim / reported, minus 1. And for bursts (vllm bench serve --request-rate inf, every
prompt at once) the TTFT error against the throughput error: a burst's TTFT is mostly its wait behind the requests
before it, the work ahead over the throughput, so its TTFT ratio should be about the inverse of its throughput
ratio; burst residual = TTFT ratio x throughput ratio (1 where it is exactly that).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def pct(x: float | None) -> str:
    """A signed error as +1.2%; '-' for none (an empty set of rows, NaN)."""
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:+.1f}%"


def signed_stats(err: np.ndarray) -> dict:
    """median_signed and geomean_ratio_minus_1 (exp(mean log(1 + err)) - 1) of errors err [rows]; NaN for none."""
    err = np.asarray(err, np.float64)
    if not err.size:
        return {"median_signed": float("nan"), "geomean_ratio_minus_1": float("nan")}
    return {"median_signed": float(np.median(err)),
            "geomean_ratio_minus_1": float(np.exp(np.log1p(err).mean()) - 1.0)}


def load_shape(rate: float, concurrency: float, prompts: float) -> str:
    """A row's load shape from its --request-rate, --max-concurrency (NaN: none) and --num-prompts."""
    if (pd.notna(concurrency) and concurrency <= 1) or prompts <= 1:
        return "single-user"
    if np.isfinite(rate):
        return "open-loop"
    if pd.notna(concurrency) and concurrency < prompts:
        return "closed-loop"
    return "burst"


def burst_throughput(rows: pd.DataFrame, load: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(throughput ratio sim / reported [rows], the metric used: 'output', 'total' or '') for the burst rows (load
    == 'burst') with a throughput error: output throughput, total throughput where a source gives only that; NaN and
    '' elsewhere. rows: public_check.csv columns rel_err_{output,total}_throughput_tok_s."""
    out_thr = rows["rel_err_output_throughput_tok_s"]
    thr_err = out_thr.where(out_thr.notna(), rows["rel_err_total_throughput_tok_s"])
    burst = (np.asarray(load) == "burst") & thr_err.notna().to_numpy()
    ratio = np.where(burst, 1.0 + thr_err.to_numpy(np.float64), np.nan)
    metric = np.where(~burst, "", np.where(out_thr.notna(), "output", "total"))
    return ratio, metric


def burst_inverse_error(table: pd.DataFrame) -> dict:
    """The bursts of a public_check table that report a mean TTFT and a throughput: rows, and the median of
    (sim / reported TTFT) / (reported / sim throughput) - 1 (the TTFT error the throughput error does not explain;
    NaN for no such row)."""
    load = pd.Series([load_shape(r.rate, r.concurrency, r.prompts) for r in table.itertuples(index=False)],
                     index=table.index, dtype=object)
    thr_ratio, _ = burst_throughput(table, load)
    resid = (1.0 + table["rel_err_ttft_mean_ms"].to_numpy(np.float64)) * thr_ratio
    resid = resid[np.isfinite(resid)]
    return {"rows": int(resid.size), "median": float(np.median(resid) - 1.0) if resid.size else float("nan")}
