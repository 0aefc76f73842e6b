"""A public row's simulated inter-token latencies by the kind of step that set them -- decodes alone, or decodes with
a prefill chunk beside them -- to hold against the ITL statistics vLLM's benchmark prints (mean, median, P99).

    python -m sim.itl_breakdown gpustack-h100-qwen3-32b-32k-rate-inf gpustack-a100-qwen3-32b-32k-rate-inf
    python -m sim.itl_breakdown ROW_ID ... --file sim/validation/public_vllm.yaml

Each row runs once as sim.public_check runs it (row_sim_config, its matching seed, policy ar) with the replicas
recording their steps (sim.simulate's record_steps). vLLM's benchmark takes an ITL sample for every streamed chunk
after a request's first: one per decoding request per engine step, lasting that step (a step that finishes a
prompt's prefill gives that request its first token, not an ITL). So the simulated ITLs are the step times weighted
by the decoding requests in each step. The table splits the steps by kind: decode-only (the pure decode step; where
most ITLs come from such steps, the median ITL is its time) and mixed (decodes beside a prefill chunk: what lifts
the mean and the P99), with the share of ITLs the mixed steps set and the chunk tokens they carry; prefill-only
steps set no ITL but fill the run's time. So a source's median ITL checks the pure decode step's price, its P99 (where
mixed steps set more than 1% of the ITLs) the mixed step's, and (mean - median) / (P99 - median) roughly the mixed
share, the batch composition that KV capacity and chunked prefill set (BENCHMARKS.md, session 38).
Bad input (a row id the file lacks, a bad file) prints one `error:` line and exits 2 with nothing written.
"""
from __future__ import annotations

import sys

import numpy as np

from lab.arguments import ArgumentParser
from lab.errors import print_or_fail
from sim.client_cadence import mean_median_p99
from sim.public_check import DEFAULT_FILE, rows_by_id, run_row

COLUMNS = ["steps", "decode-only steps", "decode-only ms (median)", "mixed steps", "mixed ms (median)",
           "mixed chunk tokens (median)", "prefill-only steps", "prefill-only s", "run s",
           "ITL mean ms", "ITL median ms", "ITL P99 ms", "mixed share of ITLs"]


def median_or_nan(values: np.ndarray) -> float:
    """The median of `values`, nan where there are none (a kind of step the run never took)."""
    return float(np.median(values)) if len(values) else float("nan")


def itl_stats(steps: np.ndarray) -> dict[str, float]:
    """The COLUMNS of one run's steps, [n, 4] rows (seconds, decoding requests, prefill chunks, chunk tokens):
    step counts and median durations by kind (nan where a kind has none) and the ITL statistics -- each step's
    time repeated once per decoding request in it (P99: numpy's linear interpolation)."""
    steps = np.asarray(steps, dtype=np.float64).reshape(-1, 4)
    dt, dec, chunks, chunk_tokens = steps.T
    alone, mixed, prefill = (dec > 0) & (chunks == 0), (dec > 0) & (chunks > 0), dec == 0
    itl_mean, itl_median, itl_p99 = mean_median_p99(np.repeat(dt, dec.astype(np.int64)), 1e3)
    return {
        "steps": len(steps), "decode-only steps": int(alone.sum()),
        "decode-only ms (median)": 1e3 * median_or_nan(dt[alone]),
        "mixed steps": int(mixed.sum()), "mixed ms (median)": 1e3 * median_or_nan(dt[mixed]),
        "mixed chunk tokens (median)": median_or_nan(chunk_tokens[mixed]),
        "prefill-only steps": int(prefill.sum()), "prefill-only s": float(dt[prefill].sum()), "run s": float(dt.sum()),
        "ITL mean ms": itl_mean, "ITL median ms": itl_median, "ITL P99 ms": itl_p99,
        "mixed share of ITLs": float(dec[mixed].sum() / dec.sum()) if dec.sum() else float("nan"),
    }


def row_steps(row) -> np.ndarray:
    """The simulated steps of one public row, every replica's in turn: [n, 4] as itl_stats reads them."""
    result = run_row(row, keep_cluster=True, record_steps=True)
    logs = [rep.step_log for rep in result.cluster.replicas]
    return np.array([s for log in logs for s in log], dtype=np.float64).reshape(-1, 4)


def markdown(stats: dict[str, dict[str, float]]) -> str:
    """One line per row: the COLUMNS, durations to 0.1 ms."""
    lines = ["| row | " + " | ".join(COLUMNS) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
    for row_id, s in stats.items():
        cells = []
        for col in COLUMNS:
            v = s[col]
            cells.append(f"{v:.0%}" if col.startswith("mixed share") else f"{v:,.0f}" if col.endswith(" s")
                         else f"{v:.1f}" if "ms" in col else f"{v:,.0f}")
        lines.append(f"| {row_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.itl_breakdown", description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="+", help="row ids of the public rows file")
    ap.add_argument("--file", default=str(DEFAULT_FILE), help="public rows file (sim.public_check's format)")
    args = ap.parse_args(argv)
    return print_or_fail(lambda: markdown({rid: itl_stats(row_steps(row)) for rid, row in
                                           rows_by_id(args.file, args.rows, "sim.itl_breakdown").items()}))

if __name__ == "__main__":
    sys.exit(main())
