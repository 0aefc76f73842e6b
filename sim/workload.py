"""Workloads: who asks for what, when. Poisson, bursty (gamma), closed-loop N users, or a replay (an arrival
CSV trace, or a real engine's per-request log read by sim/serving_metrics.read_request_log).

    lengths = LengthSampler.from_spec(spec.lengths, table)     # table = load_length_table(csv) or None
    times, prompts, outputs = open_loop_arrivals(spec, lengths, rng)
    CSV traces (Azure 2023 / Splitwise): columns arrived_at, num_prefill_tokens, num_decode_tokens.

A request's output length comes from the workload (fixed, sampled CSV row, or the trace row); with
`source: recorded` it is the recorded output length of the prompt the acceptance source replays (-1 here).
Constructors do no I/O; load_length_table / load_arrival_trace are the only readers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.errors import LabError
from lab.paths import expand_path

TRACE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")


def _read_csv(path: str, field: str, columns) -> pd.DataFrame:
    p = expand_path(path)
    if not p.is_file():
        raise LabError(f"{field}: {p} does not exist")
    try:
        frame = pd.read_csv(p)
    except Exception as exc:  # noqa: BLE001
        raise LabError(f"{field}: {p} is not a readable CSV ({exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LabError(f"{field}: {p} lacks columns {missing} (has {list(frame.columns)})")
    if len(frame) == 0:
        raise LabError(f"{field}: {p} has no rows")
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if not (np.isfinite(values) & (values >= 0)).all():  # NaN, words, inf, negative: a traceback later
        raise LabError(f"{field}: {p}: columns {list(columns)} must hold finite numbers >= 0 in every row")
    return frame


def load_length_table(path: str) -> np.ndarray:
    """[n, 2] int array of (prompt tokens, output tokens) rows."""
    f = _read_csv(path, "sim.workload.lengths.csv_path", TRACE_COLUMNS[1:])
    return f[list(TRACE_COLUMNS[1:])].to_numpy(dtype=np.int64)


def load_arrival_trace(path: str) -> np.ndarray:
    """[n, 3] float array of (arrival s, prompt tokens, output tokens), sorted by arrival."""
    f = _read_csv(path, "sim.workload.trace_path", TRACE_COLUMNS)
    arr = f[list(TRACE_COLUMNS)].to_numpy(dtype=np.float64)
    return arr[np.argsort(arr[:, 0], kind="stable")]


@dataclass
class LengthSampler:
    source: str
    prompt_tokens: int
    output_tokens: int
    table: np.ndarray | None
    max_prompt: int
    max_output: int

    @classmethod
    def from_spec(cls, spec, table: np.ndarray | None) -> LengthSampler:
        return cls(spec.source, spec.prompt_tokens, spec.output_tokens, table, spec.max_prompt_tokens,
                   spec.max_output_tokens)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(prompt lengths, output lengths); output -1 means 'the replayed prompt's recorded length'."""
        if self.source == "csv":
            rows = self.table[rng.integers(0, len(self.table), size=n)]
            p, o = rows[:, 0], rows[:, 1]
        elif self.source == "recorded":
            p, o = np.full(n, self.prompt_tokens), np.full(n, -1)
        else:
            p, o = np.full(n, self.prompt_tokens), np.full(n, self.output_tokens)
        p = np.clip(p, 1, self.max_prompt)
        o = np.where(o < 0, -1, np.clip(o, 1, self.max_output))
        return p.astype(np.int64), o.astype(np.int64)


def open_loop_arrivals(spec, lengths: LengthSampler, rng: np.random.Generator,
                       trace: np.ndarray | None = None, rate: float | None = None):
    """Arrival times (s), prompt and output lengths for poisson, gamma and replayed (trace, replay_log) ones."""
    duration = spec.duration
    cap = spec.max_requests or 10**9
    if spec.replay:
        times = trace[:, 0] * spec.time_scale
        keep = times <= duration
        times = times[keep][:cap]
        p = np.clip(trace[keep][:cap, 1].astype(np.int64), 1, lengths.max_prompt)
        o = np.clip(trace[keep][:cap, 2].astype(np.int64), 1, lengths.max_output)
        return times, p, o
    rate = rate or spec.rate
    n_guess = int(rate * duration * 1.5 + 10 * np.sqrt(rate * duration) + 20)
    if spec.kind == "poisson":
        gaps = rng.exponential(1.0 / rate, size=n_guess)
    else:  # gamma: mean 1/rate, coefficient of variation cv
        shape = 1.0 / spec.cv**2
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n_guess)
    times = np.cumsum(gaps)
    times = times[times <= duration][:cap]
    p, o = lengths.sample(len(times), rng)
    return times, p, o
