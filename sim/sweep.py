"""SLA sweeps: run every policy over the sweep axis on local worker processes (or Ray), build the frontier
(per-user tok/s vs throughput per GPU), interpolate throughput at each SLA, report gains.

    results = run_sweep(inputs)                 # one row per (policy, value, seed)
    points = sweep_points(inputs, with_requests=True)   # [(summary, per-request log)] per point
    sla = sla_table(results, sim_cfg)           # throughput per GPU at each SLA + gains
    plot_results(results, sla, sim_cfg, out_dir)

Per-user speed at a point is 1000 / TPOT_pXX (sla.percentile: 50 = the median user, 90 = the slowest 10%).
Throughput at an SLA s is the best throughput on the policy's frontier with speed >= s, linearly
interpolated between adjacent sweep points that straddle s; NaN when no point meets s.
"""
from __future__ import annotations

import os
import signal
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from lab.errors import LabError
from sim.simulate import simulate

_INPUTS = None
_WITH_REQUESTS = False


def _init_worker(inputs, with_requests: bool = False):
    global _INPUTS, _WITH_REQUESTS
    _INPUTS, _WITH_REQUESTS = inputs, with_requests


def _init_pool_worker(inputs, with_requests: bool = False):
    """A pool worker ignores Ctrl-C: the parent gets it and stops the pool (_stop), so the user sees one line
    at once instead of every worker's KeyboardInterrupt and a wait for the points already queued."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(inputs, with_requests)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Drop the points not started and end the running ones now (Python 3.14 has pool.terminate_workers)."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)


def _run_point(task):
    """(summary, per-request log with policy/value/seed columns, or None) of one sweep point."""
    label, value, seed = task
    res = simulate(_INPUTS, label, value, seed)
    if not _WITH_REQUESTS:
        return res.summary, None
    log = res.requests
    log["policy"], log["value"], log["seed"] = label, float("nan") if value is None else float(value), seed
    return res.summary, log


def sweep_tasks(sim) -> list[tuple[str, float | None, int]]:
    values = sim.sweep.values if sim.sweep.axis != "none" else [None]
    return [(p.label(), v, s) for p in sim.policies for v in values for s in sim.sweep.seeds]


def run_sweep(inputs, show_progress: bool = False, workers: int | None = None) -> pd.DataFrame:
    """One row per (policy, value, seed)."""
    return pd.DataFrame([summary for summary, _ in sweep_points(inputs, show_progress, workers)])


def sweep_points(inputs, show_progress: bool = False, workers: int | None = None,
                 with_requests: bool = False) -> list[tuple[dict, pd.DataFrame | None]]:
    """Every sweep point's (summary, per-request log or None), in sweep_tasks order."""
    sim = inputs.sim
    tasks = sweep_tasks(sim)
    n = workers if workers is not None else (sim.sweep.workers or os.cpu_count() or 1)
    n = max(1, min(n, len(tasks)))
    if sim.sweep.backend == "ray":
        return _run_ray(inputs, tasks, with_requests)
    if n == 1:
        _init_worker(inputs, with_requests)
        return [_run_point(t) for t in _progress(tasks, show_progress)]
    # biggest points first so that the pool drains evenly
    order = sorted(range(len(tasks)), key=lambda i: -(tasks[i][1] or 0))
    with ProcessPoolExecutor(max_workers=n, initializer=_init_pool_worker, initargs=(inputs, with_requests)) as pool:
        try:
            done = list(_progress(pool.map(_run_point, [tasks[i] for i in order]), show_progress, len(tasks)))
        except BaseException:
            _stop(pool)  # Ctrl-C or a failed point: leaving the block would first run every queued point
            raise
    points = [None] * len(tasks)
    for i, point in zip(order, done):
        points[i] = point
    return points


def _progress(it, show: bool, total: int | None = None):
    if not show:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc="sim sweep", leave=False)


def _run_ray(inputs, tasks, with_requests: bool):
    try:
        import ray
    except ImportError:
        raise LabError("sim.sweep.backend 'ray' needs Ray: pip install 'dspark-lab[ray]'") from None
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True)
    ref = ray.put(inputs)

    @ray.remote
    def point(inp, task):
        _init_worker(inp, with_requests)
        return _run_point(task)

    return ray.get([point.remote(ref, t) for t in tasks])


# ---- frontier and SLA ------------------------------------------------------------------------------
def frontier(results: pd.DataFrame, percentile: int = 50) -> pd.DataFrame:
    """Mean over seeds per (policy, value): speed (tok/s/user at the TPOT percentile) and throughput/GPU."""
    col = f"tpot_ms_p{percentile}"
    f = results.groupby(["policy", "kind", "value"], as_index=False, dropna=False).agg(
        tpot=(col, "mean"), throughput_per_gpu=("throughput_per_gpu", "mean"),
        verify_per_req_step=("verify_per_req_step", "mean"), tau=("tau", "mean"))
    f["tok_s_user"] = 1000.0 / f["tpot"]
    return f.sort_values(["policy", "value"]).reset_index(drop=True)


def throughput_at(speed: np.ndarray, thr: np.ndarray, sla: float) -> float:
    """Best throughput with speed >= sla along a sweep (points in sweep order), interpolating crossings."""
    best = np.nan
    ok = np.isfinite(speed) & np.isfinite(thr)
    speed, thr = speed[ok], thr[ok]
    for i in range(len(speed)):
        if speed[i] >= sla:
            best = thr[i] if np.isnan(best) else max(best, thr[i])
        if i + 1 < len(speed) and (speed[i] - sla) * (speed[i + 1] - sla) < 0:
            w = (speed[i] - sla) / (speed[i] - speed[i + 1])
            y = thr[i] + w * (thr[i + 1] - thr[i])
            best = y if np.isnan(best) else max(best, y)
    return float(best)


def sla_table(results: pd.DataFrame, sim) -> pd.DataFrame:
    front = frontier(results, sim.sla.percentile)
    rows = []
    kinds = dict(zip(front["policy"], front["kind"]))
    for s in sim.sla.tok_s_per_user:
        thr = {}
        for policy, g in front.groupby("policy", sort=False):
            thr[policy] = throughput_at(g["tok_s_user"].to_numpy(), g["throughput_per_gpu"].to_numpy(), s)
        base = thr.get(sim.sla.baseline, np.nan)
        has_base = sim.sla.baseline in thr
        has_fixed = any(kinds[p] == "fixed_k" for p in thr)
        fixed = [v for p, v in thr.items() if kinds[p] == "fixed_k" and np.isfinite(v)]
        best_fixed = max(fixed) if fixed else np.nan
        for policy, v in thr.items():
            rows.append({"sla_tok_s_user": s, "percentile": sim.sla.percentile, "policy": policy,
                         "throughput_per_gpu": v,
                         "gain_vs_baseline": _gain(v, base) if has_base else np.nan,
                         "gain_vs_best_fixed_k": _gain(v, best_fixed) if has_fixed else np.nan,
                         "baseline": sim.sla.baseline})
    return pd.DataFrame(rows)


def _gain(v: float, base: float) -> float:
    if not np.isfinite(v):
        return np.nan
    if not np.isfinite(base) or base <= 0:
        return np.inf  # the baseline cannot meet this SLA at all
    return v / base - 1.0


def compares_policies(results: pd.DataFrame, sim) -> bool:
    """True where a run's SLA gains (vs sim.sla.baseline, vs the best fixed-k) and its Fig. 7 / 8 plots mean
    something: more than one policy ran, the baseline among them. A lone `ar` (a plain vLLM server's prediction)
    has nothing to compare."""
    policies = set(results["policy"])
    return len(policies) > 1 and sim.sla.baseline in policies


def speculates(results: pd.DataFrame) -> bool:
    """True where some policy drafts (any but `ar`): only then does the acceptance source shape the results."""
    return bool((results["kind"] != "ar").any())


def plot_results(results: pd.DataFrame, sla: pd.DataFrame, sim, out_dir) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = frontier(results, sim.sla.percentile)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    lines, names = [], []
    for policy, g in front.groupby("policy", sort=False):
        lines += ax.plot(g["tok_s_user"], g["throughput_per_gpu"], marker="o")
        names.append(policy)
    for s in sim.sla.tok_s_per_user:
        ax.axvline(s, color="grey", ls=":", lw=1)
    ax.set_xlabel(f"per-user tok/s (1000 / TPOT P{sim.sla.percentile})")
    ax.set_ylabel("output tok/s per GPU")
    ax.set_title("Throughput vs SLA (Fig. 7 shape)")
    _save(fig, ax, lines, names, out_dir / "fig7_sla.png")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    lines, names = [], []
    for policy, g in front.groupby("policy", sort=False):
        lines += ax.plot(g["value"], g["verify_per_req_step"], marker="o")
        names.append(policy)
    ax.set_xlabel(sim.sweep.axis)
    ax.set_ylabel("verify tokens per request per step (incl. its own)")
    if sim.sweep.axis != "none":
        ax.set_xscale("log")
    ax.set_title("Verify budget vs load (Fig. 8 shape)")
    _save(fig, ax, lines, names, out_dir / "fig8_budget.png")


def _save(fig, ax, lines, names, path) -> None:
    """Legend (one entry per policy line), layout, atomic PNG write, close."""
    import matplotlib.pyplot as plt

    from lab.io import atomic_path

    # labels given to legend() itself: a label= starting with "_" (a policy named _k3) is left out
    ax.legend(lines, names, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def summary_markdown(results: pd.DataFrame, sla: pd.DataFrame, sim, notes: list[str]) -> str:
    acc = sorted(set(results["acceptance"]))
    exact = bool(results["exact_replay"].all())
    lines = [(f"{sim.replicas} x {sim.hardware.label} (tp {sim.hardware.tp}), model {sim.model.label}, "
              f"{workload_description(sim.workload, sim.sweep.axis)}, {sweep_description(sim.sweep)}.")]
    if speculates(results):  # a run of `ar` alone accepts nothing
        lines.append(f"Acceptance: {', '.join(acc)} "
                     f"({'exact anchor replay' if exact else 'approximate or parametric'}).")
    lines += [*[f"Note: {n}." for n in notes], "", *bench_serve_lines(results, sim), ""]
    if compares_policies(results, sim):
        lines += [(f"Throughput per GPU (output tok/s) at each SLA (per-user tok/s at TPOT P{sim.sla.percentile}); "
                   f"gains vs {sim.sla.baseline} and vs the best fixed-k:"), "",
                  "| SLA tok/s/user | policy | tok/s/GPU | vs baseline | vs best fixed-k |", "|---|---|---|---|---|"]
        for _, r in sla.iterrows():
            lines.append(f"| {r.sla_tok_s_user:g} | {r.policy} | {_fmt(r.throughput_per_gpu)} | "
                         f"{_pct(r.gain_vs_baseline)} | {_pct(r.gain_vs_best_fixed_k)} |")
        lines.append("")
    elif results["policy"].nunique() > 1:
        lines += [(f"No gains at the SLAs and no fig7 / fig8 plots: the SLA baseline {sim.sla.baseline} is not "
                   "among the policies (set sim.sla.baseline to one of them)."), ""]
    lines += ["Per point (mean over seeds):", "",
              (f"| policy | {sim.sweep.axis if sim.sweep.axis != 'none' else 'point'} | tok/s/GPU | TPOT P50 / P90 ms | TTFT P50 / P99 s | tau | "
               "verify tok/req/step |"), "|---|---|---|---|---|---|---|"]
    cols = ["throughput_per_gpu", "tpot_ms_p50", "tpot_ms_p90", "ttft_s_p50", "ttft_s_p99", "tau",
            "verify_per_req_step"]
    per = results.groupby(["policy", "value"], sort=False, dropna=False)[cols].mean().reset_index()
    for _, r in per.iterrows():
        point = "-" if pd.isna(r.value) else f"{r.value:g}"  # no sweep: the one point has no axis value
        lines.append(f"| {r.policy} | {point} | {_fmt(r.throughput_per_gpu)} | {r.tpot_ms_p50:.1f} / "
                     f"{r.tpot_ms_p90:.1f} | {r.ttft_s_p50:.2f} / {r.ttft_s_p99:.2f} | {r.tau:.2f} | "
                     f"{r.verify_per_req_step:.2f} |")
    unfinished = int(results["unfinished"].sum())
    too_long = int(results["too_long"].sum()) if "too_long" in results else 0
    rejected = int(results["rejected"].sum()) if "rejected" in results else 0
    why = [(f"{too_long} of them refused as longer than max_model_len, prompt + output, as vLLM's server refuses "
            "each such request")] if too_long else []
    if rejected:  # answered with an error, as vLLM's client gets one: a closed loop's user sends on
        why.append(f"{rejected} of them rejected as never fitting in a replica's KV cache")
    refused = f" ({'; '.join(why)})" if why else ""
    lines += ["", (f"Points: {len(results)}; unfinished requests over all points: {unfinished}{refused}; "
                   f"simulator wall time {results['wall_s'].sum():.1f} s."), ""]
    return "\n".join(lines)


def bench_serve_lines(results: pd.DataFrame, sim) -> list[str]:
    """Each point's numbers under the names `vllm bench serve` prints them (ms for TTFT and TPOT, output token
    throughput of all the GPUs), the ones to hold against a benchmark's result (mean over seeds)."""
    wl = sim.workload
    if wl.replay or wl.bounded:
        over = "every request of the run, measured over its whole length as vLLM's benchmark is"
    else:
        over = (f"the requests arriving in [{wl.warmup:g}, {wl.duration:g}] s (a steady-state window: set "
                "workload.max_requests, vLLM bench's --num-prompts, to measure a whole run as vLLM's benchmark does)")
    cols = ["measured_requests", "finished", "throughput_tok_s", "ttft_s_mean", "ttft_s_p50", "tpot_ms_mean",
            "tpot_ms_p50", "tpot_ms_p99"]
    per = results.groupby(["policy", "value"], sort=False, dropna=False)[cols].mean().reset_index()
    axis = sim.sweep.axis if sim.sweep.axis != "none" else "point"
    lines = [f"As `vllm bench serve` prints them, over {over}:", "",
             f"| policy | {axis} | Successful requests | Output token throughput (tok/s) | Mean TTFT (ms) | Median TTFT (ms) | "
             "Mean TPOT (ms) | Median TPOT (ms) | P99 TPOT (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in per.iterrows():
        point = "-" if pd.isna(r.value) else f"{r.value:g}"
        lines.append(f"| {r.policy} | {point} | {r.finished:g} | {_num(r.throughput_tok_s, 1)} | "
                     f"{_num(r.ttft_s_mean * 1e3, 2)} | {_num(r.ttft_s_p50 * 1e3, 2)} | {_num(r.tpot_ms_mean, 2)} | "
                     f"{_num(r.tpot_ms_p50, 2)} | {_num(r.tpot_ms_p99, 2)} |")
    return lines


def _num(v, digits: int) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:,.{digits}f}"


def workload_description(wl, axis: str) -> str:
    """'workload poisson at 4 req/s, at most 16 in flight (--max-concurrency 16), 200 requests (--num-prompts)':
    the workload as vLLM bench's flags give it (the client's limit changes every number it prints)."""
    text = f"workload {wl.kind}"
    if wl.kind in ("poisson", "gamma"):
        rate = "rate .inf (every request at once)" if wl.all_at_once else f"{wl.rate:g} req/s"
        text += f" at {rate}{' x each swept rate value' if axis == 'rate' else ''}"
        text += f", cv {wl.cv:g}" if wl.kind == "gamma" and not wl.all_at_once else ""
        if axis == "concurrency":
            text += ", at most the swept concurrency in flight (--max-concurrency)"
        elif wl.max_concurrency is not None:
            text += f", at most {wl.max_concurrency} in flight (--max-concurrency {wl.max_concurrency})"
    elif wl.kind == "closed_loop" and axis != "concurrency":
        text += f" of {wl.concurrency} users"
    if wl.max_requests is not None and not wl.replay:
        text += f", {wl.max_requests} requests (--num-prompts)"
    return text


def sweep_description(sweep) -> str:
    """'sweep concurrency [1, 8]', or 'one point (no sweep)' when the axis is none (its values are unused)."""
    if sweep.axis == "none":
        return "one point (no sweep)"
    return f"sweep {sweep.axis} [{', '.join(f'{v:g}' for v in sweep.values)}]"


def _fmt(v):
    return "n/a" if not np.isfinite(v) else f"{v:,.0f}"


def _pct(v):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    if np.isinf(v):
        return "baseline misses SLA"
    return f"{v * 100:+.1f}%"
