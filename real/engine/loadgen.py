"""Load generator for an OpenAI-compatible engine (vLLM's /v1/completions), asyncio + httpx, streaming.

    frame, streams = run_load("http://127.0.0.1:8765", load_spec, RandomTokens(vocab_size=262144))
    write_request_log(frame, run_dir / "engine/nospec/low/requests.parquet")

Workloads (lab.config_engine.LoadSpec): open-loop Poisson at `rate`, replay of an arrival trace (Azure 2023
/ Splitwise CSV: arrived_at, num_prefill_tokens, num_decode_tokens; times scaled by `time_scale`, lengths
capped by prompt_tokens/output_tokens, so a GPU-sized trace fits this machine), or `concurrency` closed-loop
users. Prompts are token ids of exactly the planned length; every request asks for `max_tokens` with
`ignore_eos`, so output lengths are what the plan says. Bounded: at most max_requests are sent, none after
duration_s, and the whole load is cut at timeout_s (open requests are cancelled and logged as failed).

The per-request log has the shared columns request_id, arrival_s, input_tokens, output_tokens,
first_token_s, finish_s (seconds since the load's start; NaN for failed requests). `streams` keeps every
request's chunk times and cumulative token counts (the step profiler reads inter-token times from them;
chunk_frame(streams) is the engine stage's chunks.parquet: tokens per step of every request).
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lab.config_sim import WorkloadSpec
from lab.errors import LabError
from lab.io import atomic_path
from sim.serving_metrics import LOG_COLUMNS, fidelity_metrics
from sim.workload import LengthSampler, load_arrival_trace, open_loop_arrivals


class RandomTokens:
    """Prompts of uniformly random token ids in [low, high) (no special tokens at the bottom of the vocab)."""

    def __init__(self, vocab_size: int, low: int = 1000):
        self.low, self.high = min(low, vocab_size - 1), vocab_size

    def take(self, n: int, rng: np.random.Generator) -> list[int]:
        return rng.integers(self.low, self.high, size=n).tolist()


class TextTokens:
    """Prompts cut from a stream of real text token ids (a window at a seeded offset, wrapped)."""

    def __init__(self, ids: list[int]):
        if len(ids) < 2:
            raise LabError("engine prompts: the text token stream is empty")
        self.ids = np.asarray(ids, dtype=np.int64)

    def take(self, n: int, rng: np.random.Generator) -> list[int]:
        start = int(rng.integers(0, len(self.ids)))
        return np.take(self.ids, np.arange(start, start + n), mode="wrap").tolist()


@dataclass
class PlannedRequest:
    request_id: str
    arrival_s: float  # scheduled send time (closed loop: 0, the user sends when its previous reply ends)
    prompt: list[int]
    max_tokens: int


@dataclass
class StreamRecord:
    """What one streamed request saw: send time, chunk times and cumulative output tokens after each."""
    request_id: str
    input_tokens: int
    sent_s: float
    chunk_s: list[float] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    output_tokens: int = 0
    error: str | None = None

    def row(self) -> dict:
        ok = self.error is None and self.chunk_s
        return {"request_id": self.request_id, "arrival_s": self.sent_s, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens if ok else 0,
                "first_token_s": self.chunk_s[0] if ok else math.nan,
                "finish_s": self.chunk_s[-1] if ok else math.nan}


def trace_rows(load, where: str) -> np.ndarray:
    """A trace load's arrival rows from its trace_offset on, times from 0 ([n, 3]); LabError naming `where`."""
    trace = load_arrival_trace(load.trace_path, f"{where}.trace_path")
    if load.trace_offset >= len(trace):
        raise LabError(f"{where}.trace_offset: {load.trace_offset} is beyond the trace's {len(trace)} rows")
    trace = trace[load.trace_offset:].copy()
    trace[:, 0] -= trace[0, 0]
    return trace


def check_loads(cfg, run_root: Path, ahead: bool) -> None:
    """Before a run (lab/stages.py STAGE_CHECKS, `lab validate` and `lab run`): each trace load's CSV read as the
    engine stage reads it -- a missing or malformed one stopped the stage after vLLM had started (minutes)."""
    if cfg.engine is None:
        return
    for i, load in enumerate(cfg.engine.loads):
        if load.kind == "trace":
            trace_rows(load, f"engine.loads[{i}]")


def plan_requests(load, tokens, trace: np.ndarray | None = None, text_round: int = 0) -> list[PlannedRequest]:
    """The requests of an open-loop load (poisson, trace) or the request pool of a closed-loop one.
    text_round k > 0: the same arrivals and lengths with other prompt text (drawn from the seed (load.seed, k)),
    so that a load driven again on one server (engine.rounds) does not find its prompts in the prefix cache."""
    rng = np.random.default_rng(load.seed)
    lengths = LengthSampler("fixed", load.prompt_tokens, load.output_tokens, None, load.prompt_tokens,
                            load.output_tokens)
    if load.kind == "closed_loop":
        times = np.zeros(load.max_requests)
        p, o = lengths.sample(load.max_requests, rng)
    else:
        if load.kind == "trace" and trace is None:
            trace = trace_rows(load, f"engine.loads {load.name!r}")
        elif load.kind == "trace":
            if load.trace_offset >= len(trace):
                raise LabError(f"engine.loads {load.name!r}: trace_offset {load.trace_offset} beyond the "
                               f"trace's {len(trace)} rows")
            trace = trace[load.trace_offset:].copy()
            trace[:, 0] -= trace[0, 0]
        workload = WorkloadSpec(kind=load.kind, rate=load.rate, trace_path=load.trace_path, time_scale=load.time_scale,
                                duration_s=load.duration_s, warmup_s=0.0, max_requests=load.max_requests)
        times, p, o = open_loop_arrivals(workload, lengths, rng, trace=trace)  # the simulator's own arrivals
    text_rng = rng if text_round == 0 else np.random.default_rng([load.seed, text_round])
    return [PlannedRequest(f"{load.name}-{i}", float(t), tokens.take(int(n_in), text_rng), int(n_out))
            for i, (t, n_in, n_out) in enumerate(zip(times, p, o))]


async def stream_completion(client, base_url: str, model: str, req: PlannedRequest, t0: float,
                            record: StreamRecord) -> None:
    """POST one streaming completion; fill `record` with chunk times (s since t0) and token counts."""
    body = {"model": model, "prompt": req.prompt, "max_tokens": req.max_tokens, "ignore_eos": True,
            "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    tokens_seen = 0
    async with client.stream("POST", f"{base_url}/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode("utf-8", "replace")
            record.error = f"HTTP {resp.status_code}: {text[:200]}"
            return
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            now = time.perf_counter() - t0
            chunk = json.loads(data)
            usage = chunk.get("usage") or {}
            text = "".join(c.get("text", "") for c in chunk.get("choices", []))
            count = usage.get("completion_tokens")
            if count is None:
                count = tokens_seen + (1 if text else 0)
            if "prompt_tokens" in usage:
                record.input_tokens = int(usage["prompt_tokens"])
            if count > tokens_seen:
                record.chunk_s.append(now)
                record.chunk_tokens.append(int(count))
                tokens_seen = int(count)
    record.output_tokens = tokens_seen
    if tokens_seen == 0:
        record.error = "no tokens streamed"


async def _send(client, base_url, model, req, t0, records) -> None:
    record = StreamRecord(req.request_id, len(req.prompt), time.perf_counter() - t0)
    records.append(record)
    try:
        await stream_completion(client, base_url, model, req, t0, record)
    except asyncio.CancelledError:
        record.error = "cut at the load's timeout"
        raise
    except Exception as exc:  # noqa: BLE001 (a failed request is data: logged, not fatal)
        record.error = f"{type(exc).__name__}: {exc}"[:200]


async def _open_loop(client, base_url, model, plan, t0, records, progress) -> None:
    tasks = []
    for req in plan:
        delay = req.arrival_s - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_send(client, base_url, model, req, t0, records))
        task.add_done_callback(lambda _t: progress())
        tasks.append(task)
    await asyncio.gather(*tasks)


async def _closed_loop(client, base_url, model, plan, t0, records, progress, users: int, duration_s: float):
    queue = iter(plan)

    async def user() -> None:
        for req in queue:  # shared iterator: each request is taken by exactly one user
            if time.perf_counter() - t0 > duration_s:
                return
            await _send(client, base_url, model, req, t0, records)
            progress()

    await asyncio.gather(*(user() for _ in range(users)))


async def run_load_async(base_url: str, load, tokens, model: str = "target", show_progress: bool = True,
                         plan: list[PlannedRequest] | None = None) -> tuple[pd.DataFrame, list[StreamRecord]]:
    import httpx
    from tqdm import tqdm

    plan = plan if plan is not None else plan_requests(load, tokens)
    records: list[StreamRecord] = []
    users = load.concurrency if load.kind == "closed_loop" else len(plan)
    limits = httpx.Limits(max_connections=max(users, 1), max_keepalive_connections=max(users, 1))
    timeout = httpx.Timeout(load.timeout_s, connect=10.0)
    bar = tqdm(total=len(plan), desc=f"load {load.name}", unit="req", disable=not show_progress, leave=False)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        if load.kind == "closed_loop":
            job = _closed_loop(client, base_url, model, plan, t0, records, bar.update, users, load.duration_s)
        else:
            job = _open_loop(client, base_url, model, plan, t0, records, bar.update)
        try:
            await asyncio.wait_for(job, timeout=load.timeout_s)
        except asyncio.TimeoutError:
            pass  # requests still open were cancelled by wait_for and carry their error
    bar.close()
    return request_frame(records), records


def run_load(base_url: str, load, tokens, model: str = "target", show_progress: bool = True,
             plan: list[PlannedRequest] | None = None) -> tuple[pd.DataFrame, list[StreamRecord]]:
    return asyncio.run(run_load_async(base_url, load, tokens, model, show_progress, plan))


def request_frame(records: list[StreamRecord]) -> pd.DataFrame:
    frame = pd.DataFrame([r.row() for r in records], columns=list(LOG_COLUMNS))
    frame = frame.astype({"request_id": str, "arrival_s": float, "input_tokens": "int64",
                          "output_tokens": "int64", "first_token_s": float, "finish_s": float})
    return frame.sort_values("arrival_s", kind="stable").reset_index(drop=True)


def chunk_frame(records: list[StreamRecord]) -> pd.DataFrame:
    """Every streamed chunk that carried tokens: request_id, t_s (since the load's start) and the request's
    output tokens so far. A chunk is one engine step's output for that request (1 + accepted drafts under
    speculation) unless the server merged the outputs of several steps, so chunks per request are a lower
    bound on its steps."""
    rows = [(r.request_id, t, n) for r in records for t, n in zip(r.chunk_s, r.chunk_tokens)]
    frame = pd.DataFrame(rows, columns=["request_id", "t_s", "output_tokens"])
    return frame.astype({"request_id": str, "t_s": float, "output_tokens": "int64"})


def write_request_log(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def load_summary(frame: pd.DataFrame, records: list[StreamRecord]) -> dict:
    """Counts, errors and the vLLM-benchmark metrics of one load (sim.serving_metrics.fidelity_metrics)."""
    ok = int(frame["finish_s"].notna().sum())
    errors = sorted({r.error for r in records if r.error})
    return {"requests": len(frame), "completed": ok, "failed": len(frame) - ok, "errors": errors[:5],
            **fidelity_metrics(frame)}
