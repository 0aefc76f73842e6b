"""A `vllm bench serve --save-result --save-detailed` result JSON as the lab's per-request log.

    python -m sim.vllm_bench_log result.json                   # vLLM's own means beside the lab's, from the records
    python -m sim.vllm_bench_log result.json --out requests.parquet   # ... and write the shared per-request log

    log = read_vllm_bench_json("result.json")   # request_id, arrival_s, input_tokens, output_tokens,
                                                # first_token_s, finish_s (sim/serving_metrics.LOG_COLUMNS)

A simulation replays such a file directly: `sim.workload: {kind: replay_log, log_path: result.json}` (a `.json`
or `.jsonl` log path is read here, any other through sim.serving_metrics.read_request_log's Parquet / CSV reader).
SGLang's `python -m sglang.bench_serving --output-details` line (one run per JSONL line, the same per-request
lists, no start_times) reads the same way when the file holds that one run.

What vLLM's benchmark saves per request with --save-detailed (vllm/benchmarks/serve.py, `benchmark()`'s result
and `main_async`, which drops these lists without the flag; benchmarks/benchmark_serving.py before it):
  input_lens[i]   prompt tokens
  output_lens[i]  generated tokens (0 for a failed request)
  start_times[i]  the client's time.perf_counter() when request i was sent (newer vLLM; absent in older ones)
  ttfts[i]        seconds from send to the first streamed token (0 for a failed request)
  itls[i]         seconds between successive streamed chunks after the first
  errors[i]       "" for a request that succeeded
The request function sets latency = the last chunk's time - send time and appends every later chunk's gap to
itl, so finish = send + ttft + sum(itls) is exactly the time its E2E latency ends; TPOT = (E2E - TTFT) /
(output - 1) is then vLLM's own per-request TPOT (sim/serving_metrics). Arrivals are the send times less the
first one. A file without start_times (vLLM's benchmark_serving.py before them, SGLang) has no arrivals, except
a run sent at `request_rate: inf`: with no `max_concurrency` every request arrives at 0; with --max-concurrency
N (saved since the flag came) its client created every request at once and N semaphore slots sent them first
come first served, each slot its next request when its last ended, so the send times follow from the
latencies in list order (_slot_sends; a failed request holds its slot for its `latencies` entry where saved,
else 0). A run at a finite
rate with --max-concurrency N whose result saves `queue_times` (newer vLLM: each request's wait for a slot,
start_times being the sends after it) gets a `client_wait_s` column: the replay offers request i at its send less
that wait and holds it while N are in flight (first come first served), as the client did. A run at a finite
rate without start_times is refused with one line (its Poisson draws cannot be recovered). A --max-concurrency
run at --request-rate inf replays closed-loop (closed_loop_users; sim/simulate.py): N simulated users take the
log's requests in send order, so the simulated engine's own pace sets the sends, not the real engine's.
Also refused, each with one line naming the file: a result saved without the per-request lists (vLLM without
--save-detailed keeps only aggregates and, in newer versions, `latencies` / `queue_times`: no arrivals, no token
counts), several runs appended one per line (vLLM --append-result, SGLang's JSONL; the line says which runs carry
records), and vLLM's `<result>.pytorch.json` companion (a JSON list of per-metric records).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lab.errors import LabError
from lab.io import atomic_path

DETAILED = ("input_lens", "output_lens", "ttfts", "itls")  # per-request lists the reader needs
# vLLM's benchmark client gives each request at most 6 hours (AIOHTTP_TIMEOUT = aiohttp.ClientTimeout(total=6 *
# 60 * 60), https://github.com/vllm-project/vllm/blob/main/vllm/benchmarks/lib/endpoint_request_func.py): a TTFT,
# gap or whole request past it is no measurement (an ITL of 1e300 s made a TPOT of 2.5e302 ms)
CLIENT_TIMEOUT_S = 6 * 60 * 60
SAVE_DETAILED = ("rerun the benchmark with --save-result --save-detailed (vLLM's benchmark_serving.py before the "
                 "flag saved them with --save-result alone; SGLang's bench_serving: --output-details)")
# vLLM's summary fields the CLI sets beside the lab's numbers: (vLLM key, lab metric, scale to vLLM's unit)
SUMMARY_KEYS = (("mean_ttft_ms", "ttft_mean_s", 1e3), ("mean_tpot_ms", "tpot_mean_ms", 1.0),
                ("output_throughput", "throughput_tok_s", 1.0))


def _load_result(path: Path, field: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"{field}: {path} cannot be read ({type(exc).__name__})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        if len(lines) > 1 and all(line.lstrip().startswith("{") for line in lines):
            _refuse_appended(lines, path, field)
        raise LabError(f"{field}: {path} is not a JSON file") from None
    if isinstance(result, list):
        raise LabError(f"{field}: {path} is a JSON list, not one benchmark result (vLLM writes its per-metric "
                       "records to <result>.pytorch.json beside the result: point at the result JSON itself)")
    if not isinstance(result, dict):
        raise LabError(f"{field}: {path} is not a vLLM benchmark result (a JSON object)")
    return result


def _refuse_appended(lines: list[str], path: Path, field: str) -> None:
    """One run per line (vLLM --append-result, SGLang's --output-file JSONL): name the lines worth keeping."""
    try:
        runs = [json.loads(line) for line in lines]
    except json.JSONDecodeError:
        raise LabError(f"{field}: {path} is not a JSON file (nor one JSON result per line)") from None
    detailed = [i + 1 for i, run in enumerate(runs) if isinstance(run, dict) and all(k in run for k in DETAILED)]
    if not detailed:
        raise LabError(f"{field}: {path} holds {len(runs)} results, one per line, none with per-request records "
                       f"({', '.join(DETAILED)}): aggregates alone cannot be replayed; {SAVE_DETAILED}")
    raise LabError(f"{field}: {path} holds {len(runs)} results, one per line (--append-result / SGLang's "
                   f"--output-file): keep the one to replay in a file of its own (per-request records on line(s) "
                   f"{', '.join(map(str, detailed))})")


def _per_request_lists(result: dict, path: Path, field: str) -> tuple[dict, int]:
    missing = [k for k in DETAILED if k not in result]
    if missing:
        raise LabError(f"{field}: {path} has no per-request records ({', '.join(missing)} missing; aggregates "
                       f"and per-request latencies alone carry no arrivals or token counts): {SAVE_DETAILED}")
    lists = {k: result[k] for k in (*DETAILED, "start_times", "errors") if k in result}
    sizes = {k: len(v) for k, v in lists.items() if isinstance(v, list)}
    if len(sizes) < len(lists) or len(set(sizes.values())) != 1:
        raise LabError(f"{field}: {path} per-request lists must be lists of one length (got {sizes})")
    n = next(iter(sizes.values()))
    if n == 0:
        raise LabError(f"{field}: {path} holds no requests")
    return lists, n


def _numbers(values, name: str, path: Path, field: str, seconds: bool = False) -> np.ndarray:
    """values as floats [n], all finite and >= 0; `seconds`: also at most the client's timeout, each."""
    try:
        arr = np.asarray(values, dtype=np.float64)  # [n]
    except (TypeError, ValueError):
        raise LabError(f"{field}: {path} {name} holds values that are not numbers") from None
    if arr.ndim != 1 or not np.isfinite(arr).all() or (arr < 0).any():
        raise LabError(f"{field}: {path} {name} must hold finite numbers >= 0")
    if seconds and (arr > CLIENT_TIMEOUT_S).any():
        at = int(np.argmax(arr > CLIENT_TIMEOUT_S))
        raise LabError(f"{field}: {path} {name}[{at}] = {arr[at]:.6g} s: past the benchmark client's "
                       f"{CLIENT_TIMEOUT_S // 3600}-hour request timeout, no measured time")
    return arr


def _is_inf(rate) -> bool:
    """vLLM saves an unbounded --request-rate as the string "inf"; SGLang as the JSON literal Infinity."""
    return str(rate).lower() == "inf" or (isinstance(rate, (int, float)) and math.isinf(rate))


def client_limit(result: dict) -> int | None:
    """The run's --max-concurrency N (its client's semaphore slots), else None."""
    users = result.get("max_concurrency")
    if not isinstance(users, int) or isinstance(users, bool) or users < 1:
        return None
    return users


def closed_loop_users(result: dict) -> int | None:
    """--max-concurrency N of a run sent at --request-rate inf: its N client slots, else None (open loop)."""
    return client_limit(result) if _is_inf(result.get("request_rate", "inf")) else None


def bench_client(path: str | Path, field: str = "sim.workload.log_path") -> tuple[int | None, bool]:
    """(--max-concurrency N or None, sent at --request-rate inf) of the result JSON at `path`."""
    result = _load_result(Path(path), field)
    return client_limit(result), _is_inf(result.get("request_rate", "inf"))


def _slot_sends(latency: np.ndarray, users: int) -> np.ndarray:
    """Send times [n] of requests taken in order by `users` client slots, each freed when its request ends:
    vLLM's semaphore at --request-rate inf (every task created at once, woken first come first served)."""
    free = np.zeros(users)  # [users] when each slot is next free
    send = np.empty(len(latency))
    for i, lat in enumerate(latency):
        k = int(np.argmin(free))
        send[i] = free[k]
        free[k] += lat
    return send


def _arrivals(result: dict, lists: dict, n: int, latency: np.ndarray, path: Path, field: str) -> np.ndarray:
    """Send times less the first one [n]; for a file without start_times: all zero for a burst, the slots'
    send times for --max-concurrency at --request-rate inf."""
    if "start_times" in lists:
        start = np.asarray(lists["start_times"], dtype=np.float64) if all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in lists["start_times"]) else None
        if start is None or not np.isfinite(start).all():
            raise LabError(f"{field}: {path} start_times holds values that are not numbers")
        return start - start.min()
    rate = result.get("request_rate", "inf")
    users = closed_loop_users(result)
    if _is_inf(rate) and users is not None:
        return _slot_sends(latency, users)
    if not (_is_inf(rate) and result.get("max_concurrency") is None):
        raise LabError(f"{field}: {path} has no start_times (vLLM before `vllm bench serve` saved them, or "
                       f"SGLang) and was not sent all at once (request_rate {rate}, max_concurrency "
                       f"{result.get('max_concurrency')}): its arrivals cannot be recovered; rerun with a vLLM "
                       "whose result saves start_times, or at --request-rate inf")
    return np.zeros(n)


def read_vllm_bench_json(path: str | Path, field: str = "sim.workload.log_path") -> pd.DataFrame:
    """The result's requests in the shared per-request log format (LOG_COLUMNS; NaN times for a failed
    request); LabError naming `field` for a file that is not a detailed vLLM benchmark result."""
    p = Path(path)
    if not p.is_file():
        raise LabError(f"{field}: {p} does not exist")
    result = _load_result(p, field)
    lists, n = _per_request_lists(result, p, field)
    input_tokens = _numbers(lists["input_lens"], "input_lens", p, field)
    output_tokens = _numbers(lists["output_lens"], "output_lens", p, field)
    ttft = _numbers(lists["ttfts"], "ttfts", p, field, seconds=True)
    for name, tokens in (("input_lens", input_tokens), ("output_lens", output_tokens)):
        if (tokens != np.round(tokens)).any():
            raise LabError(f"{field}: {p} {name} must hold whole numbers")
    decode_s = np.empty(n)  # [n] sum of each request's inter-token gaps
    for i, gaps in enumerate(lists["itls"]):
        if not isinstance(gaps, list):
            raise LabError(f"{field}: {p} itls[{i}] is not a list of seconds")
        decode_s[i] = _numbers(gaps, f"itls[{i}]", p, field, seconds=True).sum() if gaps else 0.0
        if ttft[i] + decode_s[i] > CLIENT_TIMEOUT_S:
            raise LabError(f"{field}: {p} request {i}: ttfts[{i}] + sum(itls[{i}]) = {ttft[i] + decode_s[i]:.6g} s, "
                           f"past the benchmark client's {CLIENT_TIMEOUT_S // 3600}-hour request timeout")
    errors = lists.get("errors", [""] * n)
    failed = np.array([bool(e) for e in errors]) | (output_tokens == 0)  # [n]
    # a failed request held its slot until it failed: newer vLLM saves that time in latencies, older ones not
    held = result.get("latencies")
    held = (np.asarray(held, dtype=np.float64) if isinstance(held, list) and len(held) == n
            and all(isinstance(v, (int, float)) for v in held) else np.zeros(n))
    arrival = _arrivals(result, lists, n, np.where(failed, held, ttft + decode_s), p, field)
    first = np.where(failed, np.nan, arrival + ttft)
    finish = np.where(failed, np.nan, arrival + ttft + decode_s)
    log = pd.DataFrame({"request_id": [str(i) for i in range(n)], "arrival_s": arrival,
                        "input_tokens": input_tokens, "output_tokens": output_tokens,
                        "first_token_s": first, "finish_s": finish})
    waits = result.get("queue_times")  # newer vLLM: seconds each request waited for a client slot before its send
    if ("start_times" in lists and client_limit(result) and closed_loop_users(result) is None
            and isinstance(waits, list) and len(waits) == n):
        log["client_wait_s"] = _numbers(waits, "queue_times", p, field)  # [n]
    return log


def compare_with_summary(result: dict, log: pd.DataFrame) -> pd.DataFrame:
    """vLLM's own summary numbers of the file beside the lab's from its records (sim.serving_metrics)."""
    from sim.serving_metrics import fidelity_metrics

    ours = fidelity_metrics(log)
    rows = []
    for key, metric, scale in SUMMARY_KEYS:
        theirs = result.get(key)
        mine = ours[metric] * scale
        rel = mine / theirs - 1 if isinstance(theirs, (int, float)) and theirs else float("nan")
        rows.append({"metric": key, "vllm": theirs, "lab": mine, "rel_diff": rel})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.vllm_bench_log", description=__doc__.split("\n")[0])
    ap.add_argument("result", help="a `vllm bench serve --save-result --save-detailed` JSON")
    ap.add_argument("--out", help="write the per-request log here (.parquet or .csv)")
    args = ap.parse_args(argv)
    try:
        log = read_vllm_bench_json(args.result, field="result")
        result = _load_result(Path(args.result), "result")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = int(log["finish_s"].isna().sum())
    print(f"{args.result}: {len(log)} requests ({failed} failed), arrivals over "
          f"{log['arrival_s'].max():.2f} s, {int(log['output_tokens'].sum())} output tokens")
    users = closed_loop_users(result)
    if users:
        print(f"sent with --max-concurrency {users} at --request-rate inf: a replay runs it closed-loop, "
              f"{users} users taking its requests in send order")
    print(compare_with_summary(result, log).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.out:
        out = Path(args.out)
        if out.suffix.lower() not in (".parquet", ".csv"):
            print(f"error: --out: {out} must end in .parquet or .csv", file=sys.stderr)
            return 2
        try:
            with atomic_path(out) as tmp:
                log.to_csv(tmp, index=False) if out.suffix.lower() == ".csv" else log.to_parquet(tmp, index=False)
        except LabError as exc:
            print(f"error: --out: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
