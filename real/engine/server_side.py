"""What the engine itself measured over a load, and what its processes spent: the API path, split out.

    before = server_snapshot(base_url, server_pid)
    ...   # drive the load
    record = server_side_record(before, server_snapshot(base_url, server_pid), frame)   # <load>/server_side.json

The client (real.engine.loadgen) times a request from its send to its chunks' arrival. vLLM times the same
request twice more, in its /metrics histograms (vllm/v1/metrics/stats.py):
  - vllm:time_to_first_token_seconds, vllm:e2e_request_latency_seconds: from `arrival_time`, stamped in the API
    server once the request is parsed and rendered, to the output processor's handling of the token;
  - vllm:request_queue_time_seconds, vllm:request_prefill_time_seconds (and _decode_, _inference_): engine-core
    timestamps (queued -> scheduled -> first token -> last token).
So per request, on average over the load:
  client TTFT - vLLM TTFT              the HTTP path outside vLLM's clock (parse, render, SSE write, client read)
  client TTFT - (queue + prefill)      everything on the way to the first token that is not the engine core's
                                       scheduling and steps: the API server's front end, as sim.frontend models it
And what that front end occupies: the API server process's own CPU time (Linux /proc: utime + stime of the
`vllm serve` process, not its children) over the load, per request and per output token, beside the engine
processes' (its descendants: engine core and workers). A front-end delay much longer than its CPU time per
request is latency (waiting: on the engine core's reply, on a core the engine spins on), not occupancy; the
ratio is the occupancy fraction sim/public_check's `frontend_occupancy` asks for.
Histograms are summed over engines and label sets; a name the engine does not export gives NaN; no /proc
(not Linux) gives NaN CPU times.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from real.engine.metrics import parse_prometheus
from real.engine.server import http_get

# vLLM's per-request latency histograms (seconds): their _sum and _count give a mean over a load
HISTOGRAMS = ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds",
              "vllm:request_queue_time_seconds", "vllm:request_prefill_time_seconds",
              "vllm:request_decode_time_seconds", "vllm:request_inference_time_seconds",
              "vllm:inter_token_latency_seconds")
_PROC = Path("/proc")


def histogram_totals(text: str) -> dict[str, list[float]]:
    """{histogram: [sum, count]} from one /metrics body, summed over label sets; missing names absent."""
    out: dict[str, list[float]] = {}
    for name, _labels, value in parse_prometheus(text):
        for suffix, index in (("_sum", 0), ("_count", 1)):
            base = name.removesuffix(suffix)
            if base != name and base in HISTOGRAMS:
                out.setdefault(base, [0.0, 0.0])[index] += value
    return out


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of this process alone) from /proc/<pid>/stat, None if gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # from field 3 (state) on: the name before it may hold spaces
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks  # ppid; utime + stime


def process_cpu(root_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of `root_pid` itself (the API server) and of all its descendants (the engine)."""
    nan = {"api_server_cpu_s": math.nan, "engine_cpu_s": math.nan}
    if root_pid is None or not _PROC.is_dir():
        return nan
    stats = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    if root_pid not in stats:
        return nan
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cpu) in stats.items():
        children.setdefault(ppid, []).append(pid)
    engine, todo = 0.0, list(children.get(root_pid, []))
    while todo:
        pid = todo.pop()
        engine += stats[pid][1]
        todo += children.get(pid, [])
    return {"api_server_cpu_s": stats[root_pid][1], "engine_cpu_s": engine}


def server_snapshot(base_url: str, server_pid: int | None, cpu_first: bool = False) -> dict:
    """The engine's latency histograms and its processes' CPU times, now. The scrape costs the API server CPU
    of its own (rendering /metrics): a window's opening snapshot reads the CPU after it, its closing one
    (cpu_first) before it, so neither scrape is counted in the window."""
    cpu = process_cpu(server_pid) if cpu_first else None
    status, body = http_get(f"{base_url}/metrics", timeout=10.0)
    return {"histograms": histogram_totals(body if status == 200 else ""), **(cpu or process_cpu(server_pid))}


def _mean(before: dict, after: dict, name: str) -> float:
    """The histogram's mean over the interval (seconds), NaN where not exported or nothing was observed."""
    if name not in after["histograms"]:
        return math.nan
    s0, c0 = before["histograms"].get(name, [0.0, 0.0])
    s1, c1 = after["histograms"][name]
    return (s1 - s0) / (c1 - c0) if c1 > c0 else math.nan


def server_side_record(before: dict, after: dict, frame: pd.DataFrame) -> dict:
    """One load's server-side view beside the client's (frame: real.engine.loadgen's per-request log)."""
    done = frame[frame["finish_s"].notna()]
    ttft_client = float((done["first_token_s"] - done["arrival_s"]).mean()) if len(done) else math.nan
    vllm = {name.removeprefix("vllm:").removesuffix("_seconds"): _mean(before, after, name) for name in HISTOGRAMS}
    tokens = float(done["output_tokens"].sum()) if len(done) else 0.0
    api_cpu = after["api_server_cpu_s"] - before["api_server_cpu_s"]
    engine_cpu = after["engine_cpu_s"] - before["engine_cpu_s"]
    path_delay = ttft_client - vllm["request_queue_time"] - vllm["request_prefill_time"]
    return {
        "requests": len(done), "output_tokens": int(tokens), "vllm_means_s": vllm,
        "client_ttft_mean_s": ttft_client,
        "http_outside_vllm_s": ttft_client - vllm["time_to_first_token"],  # client TTFT - vLLM's TTFT
        "front_end_delay_s": path_delay,  # client TTFT - (engine queue + prefill)
        "api_server_cpu_s": api_cpu, "engine_cpu_s": engine_cpu,
        "api_server_cpu_ms_per_request": 1e3 * api_cpu / len(done) if len(done) else math.nan,
    }


def occupancy_fit(records: list[dict], probes: list[dict]) -> dict:
    """The API server's CPU time as a x requests + b x output tokens, least squares over the loads' and idle
    probes' records, and the occupancy fraction: a over the idle probes' mean front-end delay (the path's
    delay with no step to wait for). Empty where fewer than two records have CPU times."""
    rows = [r for r in records + probes if r["requests"] and np.isfinite(r["api_server_cpu_s"])]
    if len(rows) < 2:
        return {}
    design = np.array([[r["requests"], r["output_tokens"]] for r in rows], dtype=np.float64)  # [records, 2]
    cpu = np.array([r["api_server_cpu_s"] for r in rows])  # [records]
    (per_request, per_token), *_ = np.linalg.lstsq(design, cpu, rcond=None)
    delays = [r["front_end_delay_s"] for r in probes if np.isfinite(r["front_end_delay_s"])]
    idle_delay = float(np.mean(delays)) if delays else math.nan
    return {"api_cpu_ms_per_request": 1e3 * per_request, "api_cpu_ms_per_output_token": 1e3 * per_token,
            "idle_front_end_delay_ms": 1e3 * idle_delay, "records": len(rows), "probes": len(delays),
            "occupancy_fraction": per_request / idle_delay if idle_delay > 0 else math.nan}


def api_path_markdown(records: list[dict], probes: list[dict]) -> str:
    """fidelity.md's section on the API path: one row per variant x load (means over its rounds; the idle
    probes as load `idle probe`) and the occupancy fit. records / probes: server_side.json / api_probe
    contents with `variant` and `load` added."""
    if not records:
        return ""
    frame = pd.DataFrame([{"variant": r["variant"], "load": r["load"], "client": r["client_ttft_mean_s"],
                           "vllm": r["vllm_means_s"]["time_to_first_token"],
                           "engine": r["vllm_means_s"]["request_queue_time"] + r["vllm_means_s"]["request_prefill_time"],
                           "delay": r["front_end_delay_s"], "cpu": r["api_server_cpu_ms_per_request"]}
                          for r in records + probes])
    lines = [("**The API path** (vLLM's own clocks and its API server's CPU time, real/engine/server_side.py; "
             "means over rounds, ms)"), "",
             "| variant | load | client TTFT | vLLM TTFT | engine queue + prefill | front-end delay | API server CPU / request |",
             "|---|---|---|---|---|---|---|"]
    for (variant, load), g in frame.groupby(["variant", "load"], sort=False):
        lines.append(f"| {variant} | {load} | {1e3 * g.client.mean():.0f} | {1e3 * g.vllm.mean():.0f} | "
                     f"{1e3 * g.engine.mean():.0f} | {1e3 * g.delay.mean():.0f} | {g.cpu.mean():.1f} |")
    fit = occupancy_fit(records, probes)
    if fit:
        lines += ["", (f"API server CPU = {fit['api_cpu_ms_per_request']:.1f} ms x requests + "
                       f"{fit['api_cpu_ms_per_output_token']:.2f} ms x output tokens (least squares over "
                       f"{fit['records']} loads and probes); the idle probes' front-end delay "
                       f"{fit['idle_front_end_delay_ms']:.0f} ms (mean of {fit['probes']}): occupancy fraction "
                       f"{fit['occupancy_fraction']:.2f} of the per-request delay")]
    return "\n".join(lines) + "\n"


def idle_probe(base_url: str, model: str, tokens, seed: int, server_pid: int | None, requests: int = 8,
               prompt_tokens: int = 32) -> dict:
    """The API path with nothing else in flight: `requests` short requests (2 tokens out) sent one after the
    other to an idle engine, so no request waits for a running step and the front-end delay is the path's
    own; the API server's CPU per request is then (nearly) all request work. Prompts drawn afresh (seed)."""
    from real.engine.loadgen import request_frame
    from real.engine.step_profile import send_batch

    rng = np.random.default_rng(seed)
    before = server_snapshot(base_url, server_pid)
    records = []
    for _ in range(requests):
        records += send_batch(base_url, model, [tokens.take(prompt_tokens, rng)], 2)
    return server_side_record(before, server_snapshot(base_url, server_pid, cpu_first=True), request_frame(records))
