"""What vLLM's benchmark prints besides its means, for a simulated public row: TTFT / TPOT / ITL mean, median and P99
and the peak output throughput, read from when each streamed chunk reached the client.

    python -m sim.client_cadence ROW [ROW ...]                       # the public rows, as sim.public_check runs them
    python -m sim.client_cadence ROW --set request_overhead_us=50    # a what-if on the sheet's terms (not a fit)
    python -m sim.client_cadence ROW --frontend off                  # the engine alone

    result = simulate(inputs, "ar", record_tokens=True)             # sim.simulate: the steps' client times
    stats = client_stats(result.requests, result.token_log)         # dict of STATS

A `vllm bench serve` block prints, beside the mean TTFT / TPOT and output throughput that the public rows keep,
median and P99 TTFT and TPOT, mean / median / P99 ITL and "Peak output token throughput". They tell apart where a run
spends its time: in a burst the ITLs and the peak are set by the decode steps, P99 TPOT by the short replies whose
whole life falls in the prefill phase's mixed steps, TTFT by the intake (BENCHMARKS.md, session 38). Computed as
vllm/benchmarks/serve.py calculate_metrics computes them, over the finished requests: TTFT = first chunk - send time;
TPOT = (E2E - TTFT) / (output - 1) for outputs of more than one token; ITL = every gap between a request's
consecutive streamed chunks, pooled over requests; the peak = the most chunks whose arrival falls in one 1-s bucket
counted from the first send (int(t - min send time)), each request's first chunk included. The benchmark counts
chunks there, not tokens: the simulator streams one chunk per request and step (what the step emitted, drafts
included), vLLM's API server the same unless it falls behind and merges a request's waiting outputs into one chunk.
Percentiles are numpy's (linear), as the benchmark's.

The client times come from `simulate(..., record_tokens=True)` (sim/cluster.Cluster.token_log): for each step that
decoded, when its tokens reached the client (the front end's hand-over, sim/frontend.py; the step's end without one)
and which requests they belong to. The rows run as sim.public_check.simulate_row runs them (its config and matching
seed); `--set KEY=VALUE` overrides one of the sheet's numeric cost terms (sim.cost / lab.config_sim CostSpec fields,
or mfu / attn_mfu / bw_efficiency) for a what-if. Bad input (an unknown row, key or value) prints one `error:` line
and exits 2. Nothing is written.
"""
from __future__ import annotations

import sys
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from lab.arguments import ArgumentParser
from lab.config_base import validation_message
from lab.config_sim import CostSpec, HardwareSpec
from lab.errors import LabError, print_or_fail
from lab.report import markdown_table
from sim.public_check import DEFAULT_FILE, FRONTEND_MODES, rows_by_id, run_row
from sim.serving_metrics import per_request

# the statistics, in a vllm bench block's order (ms, and output tokens / s for the peak)
STATS = ("ttft_mean_ms", "ttft_median_ms", "ttft_p99_ms", "tpot_mean_ms", "tpot_median_ms", "tpot_p99_ms",
         "itl_mean_ms", "itl_median_ms", "itl_p99_ms", "peak_output_tok_s")
HARDWARE_TERMS = ("mfu", "attn_mfu", "bw_efficiency")  # row_sim_config's hardware overrides that are not cost fields
COST_TERMS = tuple(name for name, field in CostSpec.model_fields.items()
                   if field.annotation in (float, float | None, int | None))


def chunk_times(requests: pd.DataFrame, token_log: list) -> tuple[np.ndarray, np.ndarray]:
    """(request ids [T], client times [T]) of every streamed chunk of the finished requests -- first chunks from
    `requests` (first_token_s), later ones from `token_log` ([(time, request ids)] per step) -- ordered by request
    and then time."""
    finished = np.isfinite(requests["finish_s"].to_numpy(np.float64))
    first_ids = np.flatnonzero(finished)
    ids = [first_ids] + [np.asarray(rids, np.int64) for _, rids in token_log]
    times = [requests["first_token_s"].to_numpy(np.float64)[first_ids]]
    times += [np.full(len(rids), t, np.float64) for t, rids in token_log]
    rid, t = np.concatenate(ids), np.concatenate(times)
    keep = finished[rid]
    rid, t = rid[keep], t[keep]
    order = np.lexsort((t, rid))
    return rid[order], t[order]


def inter_token_latencies(rid: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Seconds between each request's consecutive chunks [T - requests], from chunk_times' ordered arrays."""
    same = rid[1:] == rid[:-1]
    return (t[1:] - t[:-1])[same]


def peak_chunks_per_s(t: np.ndarray, start: float) -> float:
    """The most chunks arriving within one 1-s bucket counted from `start` (the first request's send time)."""
    if not len(t):
        return float("nan")
    buckets = np.floor(t - start).astype(np.int64)
    return float(np.bincount(buckets[buckets >= 0]).max())


def mean_median_p99(values: np.ndarray, scale: float) -> tuple[float, float, float]:
    """Mean, median and P99 (numpy's linear interpolation, as vLLM's benchmark) of the finite `values` x `scale`;
    nan each where none is finite."""
    values = values[np.isfinite(values)]
    if not len(values):
        return (float("nan"),) * 3
    return (float(np.mean(values)) * scale, float(np.median(values)) * scale,
            float(np.percentile(values, 99)) * scale)


def client_stats(requests: pd.DataFrame, token_log: list | None) -> dict:
    """STATS of a simulated per-request log and its token log (simulate's RunResult.requests / .token_log)."""
    if token_log is None:
        raise LabError("sim.client_cadence: the run kept no client times: simulate(..., record_tokens=True)")
    per = per_request(requests)
    done = per[per["finished"]]
    rid, t = chunk_times(requests, token_log)
    out = dict(zip(("ttft_mean_ms", "ttft_median_ms", "ttft_p99_ms"),
                   mean_median_p99(done["ttft_s"].to_numpy(np.float64), 1e3)))
    out.update(zip(("tpot_mean_ms", "tpot_median_ms", "tpot_p99_ms"),
                   mean_median_p99(done["tpot_ms"].to_numpy(np.float64), 1.0)))
    out.update(zip(("itl_mean_ms", "itl_median_ms", "itl_p99_ms"),
                   mean_median_p99(inter_token_latencies(rid, t), 1e3)))
    start = float(done["arrival_s"].min()) if len(done) else 0.0
    out["peak_output_tok_s"] = peak_chunks_per_s(t, start)
    return out


def parse_settings(items: list[str]) -> dict:
    """`--set KEY=VALUE` items as row_sim_config's `hardware` overrides; LabError naming a bad key or value."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in COST_TERMS + HARDWARE_TERMS:
            raise LabError(f"sim.client_cadence: --set {item!r}: expected KEY=VALUE with KEY one of "
                           f"{', '.join(COST_TERMS + HARDWARE_TERMS)}")
        try:
            number = float(value)
        except ValueError:
            raise LabError(f"sim.client_cadence: --set {item!r}: {value!r} is not a number") from None
        if not np.isfinite(number):
            raise LabError(f"sim.client_cadence: --set {item!r}: a finite value is needed")
        # the field's own bounds (mfu 0 or 2, eager_penalty 0.5 were pydantic tracebacks from row_sim_config)
        section = HardwareSpec if key in HARDWARE_TERMS else CostSpec
        field = section.model_fields[key]
        try:
            TypeAdapter(Annotated[field.annotation, field]).validate_python(number)
        except ValidationError as exc:
            raise LabError(f"sim.client_cadence: --set {validation_message(exc, key)}") from None
        settings[key] = number
    return settings


def row_stats(row, settings: dict | None = None, frontend: str = "file") -> dict:
    """client_stats of one public row run as sim.public_check.simulate_row runs it (config, matching seed)."""
    result = run_row(row, settings or None, frontend, record_tokens=True)
    return client_stats(result.requests, result.token_log)


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.client_cadence", description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="+", help="row ids of the public rows file")
    ap.add_argument("--file", default=str(DEFAULT_FILE), help="public rows file (sim.public_check's format)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a sheet's cost term for a what-if (repeatable)")
    ap.add_argument("--frontend", choices=FRONTEND_MODES, default="file",
                    help="file: the row's front end; prior: that, else the file's frontend_prior per-request "
                         "terms (a what-if); off: none (the engine alone)")
    args = ap.parse_args(argv)

    def table() -> str:
        settings = parse_settings(args.set)
        rows = rows_by_id(args.file, args.rows, "sim.client_cadence")
        frame = pd.DataFrame([{"row": rid, **row_stats(row, settings, args.frontend)} for rid, row in rows.items()])
        return markdown_table(frame, floatfmt="{:.1f}") + "\n"
    return print_or_fail(table)

if __name__ == "__main__":
    sys.exit(main())
