"""Serving metrics from per-request records: TTFT, TPOT, per-user tok/s, E2E, throughput, goodput.

    summary = summarize(requests, window=(warmup, end), n_gpus=8, ttft_cap_s=None, tpot_cap_ms=None)

Definitions follow vLLM's benchmark_serving: TPOT = (E2E - TTFT) / (n_out - 1) (undefined for one-token
outputs, which are left out of TPOT stats), per-user speed = 1000 / TPOT_ms, E2E = finish - arrival.
Throughput per GPU = output tokens emitted inside the measurement window / window length / GPUs.
Goodput = requests per second (arrived in the window) that finished meeting every given SLO.
Percentiles P50, P90, P99 of each.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

PCTS = (50, 90, 99)


def per_request(frame: pd.DataFrame) -> pd.DataFrame:
    f = frame.copy()
    f["ttft_s"] = f["first_token"] - f["arrival"]
    f["e2e_s"] = f["finish"] - f["arrival"]
    n = f["output_len"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(n > 1, (f["finish"] - f["first_token"]).to_numpy() / (n - 1), np.nan)
    f["tpot_ms"] = tpot * 1e3
    with np.errstate(divide="ignore"):
        f["tok_s_user"] = 1000.0 / f["tpot_ms"]
    f["finished"] = np.isfinite(f["finish"].to_numpy())
    return f


def _pct(values: np.ndarray, name: str, out: dict) -> None:
    values = values[np.isfinite(values)]
    for p in PCTS:
        out[f"{name}_p{p}"] = float(np.percentile(values, p)) if values.size else float("nan")
    out[f"{name}_mean"] = float(values.mean()) if values.size else float("nan")


def summarize(frame: pd.DataFrame, window: tuple[float, float], n_gpus: int, tokens_in_window: int,
              ttft_cap_s: float | None = None, tpot_cap_ms: float | None = None,
              sla_tok_s_user: list[float] | None = None) -> dict:
    f = per_request(frame)
    t0, t1 = window
    span = max(t1 - t0, 1e-9)
    m = f[(f["arrival"] >= t0) & (f["arrival"] <= t1)]
    out: dict = {"requests": len(f), "measured_requests": len(m),
                 "finished": int(f["finished"].sum()), "unfinished": int((~f["finished"]).sum()),
                 "measured_unfinished": int((~m["finished"]).sum())}
    done = m[m["finished"]]
    for col, name in (("ttft_s", "ttft_s"), ("tpot_ms", "tpot_ms"), ("e2e_s", "e2e_s"),
                      ("tok_s_user", "tok_s_user")):
        _pct(done[col].to_numpy(dtype=np.float64), name, out)
    out["throughput_tok_s"] = tokens_in_window / span
    out["throughput_per_gpu"] = out["throughput_tok_s"] / n_gpus
    out["request_rate"] = len(m) / span
    good = m["finished"].to_numpy().copy()
    if ttft_cap_s is not None:
        good &= m["ttft_s"].to_numpy() <= ttft_cap_s
    if tpot_cap_ms is not None:
        good &= ~(m["tpot_ms"].to_numpy() > tpot_cap_ms)
    out["goodput_req_s"] = float(good.sum()) / span
    # goodput at each per-user SLA: finished, TPOT <= 1000 / SLA (and the TTFT cap if one is set)
    tpot = m["tpot_ms"].to_numpy()
    for s in sla_tok_s_user or []:
        ok = good & ~(tpot > 1000.0 / s)
        out[f"goodput_req_s_at_{s:g}"] = float(ok.sum()) / span
    return out
