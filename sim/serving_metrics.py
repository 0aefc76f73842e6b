"""Serving metrics from a per-request log: the one place their definitions live (simulator and real engine).

    log = read_request_log("runs/x/<id>/engine/requests.parquet")   # or a simulation's sim/requests.parquet
    per = per_request(log)              # + ttft_s, e2e_s, tpot_ms, tok_s_user, finished
    fidelity_metrics(log)               # TTFT mean/P90, TPOT mean/P90, E2E mean, throughput (vLLM benchmark)
    fidelity_table(sim_log, real_log)   # metric, sim, log, relative error
    summary = summarize(log, window=(warmup, end), n_gpus=8, tokens_in_window=None)   # a sweep point's row

Per-request log (shared format): request_id, arrival_s, input_tokens, output_tokens, first_token_s, finish_s
(seconds since the run's start; first_token_s / finish_s NaN for a request that failed), extras after them.
Definitions follow vLLM's benchmark (benchmark_serving / vllm bench serve): TTFT = first_token - arrival;
E2E = finish - arrival; TPOT = (E2E - TTFT) / (output_tokens - 1), only for outputs longer than one token;
per-user speed = 1000 / TPOT_ms; throughput = output tokens of finished requests / (last finish - first
arrival). A sweep point of a synthetic workload measures throughput instead as the tokens emitted inside
its measurement window / window length (steady state, without the ramp-up and drain).
Goodput = requests per second (arrived in the window) that finished meeting every given SLO.
Percentiles P50, P90, P99 (numpy's linear interpolation, as vLLM).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lab.errors import LabError
from sim.workload import MAX_TOKENS, token_counts

LOG_COLUMNS = ("request_id", "arrival_s", "input_tokens", "output_tokens", "first_token_s", "finish_s")
PCTS = (50, 90, 99)
# the comparison table of a replayed log: (name, per-request column or None, statistic)
FIDELITY = (("ttft_mean_s", "ttft_s", "mean"), ("ttft_p90_s", "ttft_s", "p90"),
            ("tpot_mean_ms", "tpot_ms", "mean"), ("tpot_p90_ms", "tpot_ms", "p90"),
            ("e2e_mean_s", "e2e_s", "mean"), ("throughput_tok_s", None, "throughput"))


def read_request_log(path: str | Path, field: str = "sim.workload.log_path") -> pd.DataFrame:
    """A per-request log (Parquet, CSV by extension, or a `vllm bench serve --save-detailed` result JSON / an
    SGLang bench_serving --output-details JSONL line: sim/vllm_bench_log) with the shared columns; LabError
    naming `field`."""
    p = Path(path)
    if not p.is_file():
        raise LabError(f"{field}: {p} does not exist")
    if p.suffix.lower() in (".json", ".jsonl"):  # vLLM's result JSON, SGLang's one-run-per-line JSONL
        from sim.vllm_bench_log import read_vllm_bench_json

        log = read_vllm_bench_json(p, field)
    else:
        log = _read_table(p, field)
    return _checked_log(log, p, field)


def _read_table(p: Path, field: str) -> pd.DataFrame:
    try:
        log = pd.read_csv(p) if p.suffix.lower() == ".csv" else pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise LabError(f"{field}: {p} is not a readable {'CSV' if p.suffix.lower() == '.csv' else 'Parquet'} "
                       f"file ({type(exc).__name__})") from None
    return log


def _checked_log(log: pd.DataFrame, p: Path, field: str) -> pd.DataFrame:
    """The shared columns present, numeric and in range; request_id as text."""
    missing = [c for c in LOG_COLUMNS if c not in log.columns]
    if missing:
        raise LabError(f"{field}: {p} lacks columns {missing} (has {list(log.columns)})")
    if len(log) == 0:
        raise LabError(f"{field}: {p} has no rows")
    raw = log[list(LOG_COLUMNS[1:])]
    num = raw.apply(pd.to_numeric, errors="coerce")
    words = (num.isna() & raw.notna()).any()
    if words.any():  # NaN marks a failed request's times; a word is a broken file, not a failure
        raise LabError(f"{field}: {p} column {words.idxmax()} holds values that are not numbers")
    if num[["arrival_s", "input_tokens", "output_tokens"]].isna().any().any():
        raise LabError(f"{field}: {p} has missing or non-numeric arrival_s / input_tokens / output_tokens")
    arrival = num["arrival_s"].to_numpy(np.float64)
    if not (np.isfinite(arrival) & (arrival >= 0)).all():
        raise LabError(f"{field}: {p} column arrival_s must hold finite seconds >= 0 since the run's start")
    for col in ("input_tokens", "output_tokens"):
        if not token_counts(num[col].to_numpy(np.float64)).all():
            raise LabError(f"{field}: {p} column {col} must hold whole numbers in 0 .. {MAX_TOKENS:,}")
    # a failed request's times are NaN; a time before the one it follows gave negative TTFTs and E2Es silently
    first, finish = num["first_token_s"].to_numpy(np.float64), num["finish_s"].to_numpy(np.float64)
    for col, later, earlier, what in (("first_token_s", first, arrival, "arrival_s"),
                                      ("finish_s", finish, first, "first_token_s")):
        early = later < earlier - 1e-6  # NaN compares False: a failed request, or no first token logged
        if early.any():
            row = int(np.argmax(early))
            raise LabError(f"{field}: {p} row {row + 1}: {col} {later[row]:g} is before its {what} "
                           f"{earlier[row]:g}")
    log = log.copy()
    log[list(LOG_COLUMNS[1:])] = num
    log["request_id"] = log["request_id"].astype(str)
    return log


def per_request(log: pd.DataFrame) -> pd.DataFrame:
    """The log plus ttft_s, e2e_s, tpot_ms (NaN for one-token outputs), tok_s_user, finished."""
    f = log.copy()
    f["ttft_s"] = f["first_token_s"] - f["arrival_s"]
    f["e2e_s"] = f["finish_s"] - f["arrival_s"]
    n = f["output_tokens"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(n > 1, (f["e2e_s"] - f["ttft_s"]).to_numpy() / (n - 1), np.nan)
    f["tpot_ms"] = tpot * 1e3
    with np.errstate(divide="ignore"):
        f["tok_s_user"] = 1000.0 / f["tpot_ms"]
    f["finished"] = np.isfinite(f["finish_s"].to_numpy(dtype=np.float64))
    return f


def throughput_tok_s(per: pd.DataFrame) -> float:
    """vLLM benchmark throughput: output tokens of finished requests / (last finish - first arrival)."""
    done = per[per["finished"]]
    if len(done) == 0:
        return float("nan")
    span = float(done["finish_s"].max() - per["arrival_s"].min())
    return float(done["output_tokens"].sum()) / span if span > 0 else float("nan")


def _stat(values: np.ndarray, stat: str) -> float:
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan")
    return float(values.mean()) if stat == "mean" else float(np.percentile(values, int(stat[1:])))


def fidelity_metrics(log: pd.DataFrame) -> dict:
    """TTFT mean/P90, TPOT mean/P90, E2E mean over finished requests, and throughput (FIDELITY names)."""
    per = per_request(log)
    done = per[per["finished"]]
    out = {}
    for name, col, stat in FIDELITY:
        out[name] = throughput_tok_s(per) if col is None else _stat(done[col].to_numpy(np.float64), stat)
    return out


def fidelity_table(sim_log: pd.DataFrame, real_log: pd.DataFrame) -> pd.DataFrame:
    """metric, sim, log, rel_error = sim / log - 1 (one row per FIDELITY metric)."""
    s, r = fidelity_metrics(sim_log), fidelity_metrics(real_log)
    rows = []
    for name, _, _ in FIDELITY:
        rel = s[name] / r[name] - 1 if np.isfinite(r[name]) and r[name] != 0 else float("nan")
        rows.append({"metric": name, "sim": s[name], "log": r[name], "rel_error": rel})
    return pd.DataFrame(rows)


def _pct(values: np.ndarray, name: str, out: dict) -> None:
    for p in PCTS:
        out[f"{name}_p{p}"] = _stat(values, f"p{p}")
    out[f"{name}_mean"] = _stat(values, "mean")


def summarize(log: pd.DataFrame, window: tuple[float, float], n_gpus: int, tokens_in_window: int | None,
              ttft_cap_s: float | None = None, tpot_cap_ms: float | None = None,
              sla_tok_s_user: list[float] | None = None) -> dict:
    """A sweep point's metrics over requests arriving in `window`; throughput from `tokens_in_window` over the
    window, or (tokens_in_window None: replays) vLLM's definition over those requests."""
    f = per_request(log)
    t0, t1 = window
    m = f[(f["arrival_s"] >= t0) & (f["arrival_s"] <= t1)]
    if tokens_in_window is None:
        done = m[m["finished"]]
        span = max(float(done["finish_s"].max() - m["arrival_s"].min()), 1e-9) if len(done) else 1e-9
        throughput = throughput_tok_s(m)
    else:
        span = max(t1 - t0, 1e-9)
        throughput = tokens_in_window / span
    out: dict = {"requests": len(f), "measured_requests": len(m),
                 "finished": int(f["finished"].sum()), "unfinished": int((~f["finished"]).sum()),
                 "measured_unfinished": int((~m["finished"]).sum())}
    done = m[m["finished"]]
    for name in ("ttft_s", "tpot_ms", "e2e_s", "tok_s_user"):
        _pct(done[name].to_numpy(dtype=np.float64), name, out)
    out["throughput_tok_s"] = throughput
    out["throughput_per_gpu"] = throughput / n_gpus
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
