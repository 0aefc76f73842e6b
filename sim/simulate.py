"""The one place that wires a simulation run: config -> inputs -> cluster -> metrics (and the `sim` stage).

    lab run experiments/fig7_sla.yaml                       # stage 'sim' calls run_stage(ctx)
    inputs = prepare_inputs(sim_cfg, run_root, seed)        # all file reading happens here, once
    result = simulate(inputs, policy_label, value, seed)    # one point: RunResult(summary, requests, cluster)

Outputs of the stage under <run>/sim/: results.parquet (one row per policy x sweep point x seed),
sla.csv (throughput per GPU at each SLA, gains vs the baseline and the best fixed-k), fig7_sla.png,
fig8_budget.png, summary.md (embedded by the report).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from lab.errors import LabError
from lab.paths import expand_path
from sim.acceptance import ParametricSource, TraceSource
from sim.cluster import Cluster, CountingEnvironment
from sim.cost import CostModel
from sim.policies import make_policy
from sim.serving_metrics import summarize
from sim.workload import LengthSampler, load_arrival_trace, load_length_table, open_loop_arrivals


@dataclass
class SimInputs:
    """Everything a worker needs, read once in the parent (picklable)."""

    sim: object  # lab.config_sim.SimSection
    seed: int = 0
    traces: pd.DataFrame | None = None
    traces_where: str = ""
    calibration: dict | None = None
    length_table: np.ndarray | None = None
    arrival_trace: np.ndarray | None = None
    cost: CostModel | None = None  # built once here (it may read a step profile)
    notes: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    summary: dict
    requests: pd.DataFrame
    cluster: Cluster | None = None


def prepare_inputs(sim, run_root: Path | None = None, seed: int = 0) -> SimInputs:
    """Read traces, calibration and workload CSVs named by the config; LabError on anything missing."""
    from lab.trace import read_traces

    inputs = SimInputs(sim=sim, seed=seed, cost=CostModel.from_config(sim, run_root))
    acc = sim.acceptance
    if acc.source == "run":
        if run_root is None:
            raise LabError("sim.acceptance.source 'run' needs a run directory (use `lab run`)")
        tdir = Path(run_root) / "traces"
        if not tdir.is_dir():
            raise LabError(f"sim.acceptance.source 'run': {tdir} does not exist; run the evaluate stage first "
                           "or set acceptance.source to traces/parametric")
        inputs.traces, inputs.traces_where = read_traces(tdir), str(tdir)
    elif acc.source == "traces":
        files = [expand_path(p) for p in acc.paths]
        for p in files:
            if not p.exists():
                raise LabError(f"sim.acceptance.paths: {p} does not exist")
        inputs.traces = pd.concat([read_traces(p) for p in files], ignore_index=True)
        inputs.traces_where = ", ".join(str(p) for p in files)
    if acc.use_calibration and acc.source != "parametric":
        cal = expand_path(acc.calibration_path) if acc.calibration_path else (
            Path(run_root) / "calibration.json" if run_root else None)
        if cal is not None and cal.is_file():
            try:
                inputs.calibration = json.loads(cal.read_text())
            except json.JSONDecodeError:
                raise LabError(f"{cal}: calibration file is not valid JSON") from None
            inputs.notes.append(f"confidences calibrated with {cal}")
        elif acc.calibration_path:
            raise LabError(f"sim.acceptance.calibration_path: {cal} does not exist")
    wl = sim.workload
    if wl.lengths.source == "csv":
        inputs.length_table = load_length_table(wl.lengths.csv_path)
    if wl.kind == "trace":
        inputs.arrival_trace = load_arrival_trace(wl.trace_path)
    # fail early on sources that cannot be built (unknown method, dataset weights, ...)
    for spec in sim.policies:
        build_source(inputs, spec)
    return inputs


def build_source(inputs: SimInputs, spec):
    sim = inputs.sim
    acc = sim.acceptance
    gamma = acc.max_draft
    if acc.source == "parametric":
        p = acc.parametric
        alpha = spec.alpha or p.alpha
        rates = None if spec.alpha else p.rates
        return ParametricSource(gamma, alpha=alpha, rates=rates, concentration=p.concentration,
                                confidence_noise=p.confidence_noise, output_tokens=p.output_tokens)
    method = spec.method or acc.method
    temps = None
    if inputs.calibration:
        methods = inputs.calibration.get("methods", {})
        if method is None and len(set(inputs.traces["method"])) == 1:
            method_key = inputs.traces["method"].iloc[0]
        else:
            method_key = method or "dspark"
        if method_key in methods:
            temps = methods[method_key].get("temperatures")
    return TraceSource.from_frame(inputs.traces, method, gamma, acc.temperature, acc.datasets, acc.table,
                                  temps=temps, where=inputs.traces_where)


def policy_spec(sim, label: str):
    for spec in sim.policies:
        if spec.label() == label:
            return spec
    raise LabError(f"sim.policies: no policy labelled {label!r}")


def simulate(inputs: SimInputs, label: str, value: float | None = None, seed: int = 0,
             keep_cluster: bool = False) -> RunResult:
    """Run one point: policy `label` at sweep value `value` (concurrency or rate multiplier) and seed."""
    sim = inputs.sim
    spec = policy_spec(sim, label)
    wl = sim.workload
    rng = np.random.default_rng([inputs.seed, seed])
    cost = inputs.cost if inputs.cost is not None else CostModel.from_config(sim)
    kv_cap = sim.batching.kv_capacity_tokens or cost.kv_capacity_tokens(sim.batching.gpu_mem_util)
    source = build_source(inputs, spec)
    gamma = sim.acceptance.max_draft
    env = CountingEnvironment()
    lengths = LengthSampler.from_spec(wl.lengths, inputs.length_table)
    closed = None
    axis = sim.sweep.axis
    if wl.kind == "closed_loop":
        closed = {"think": wl.think_time_s, "stop_at": wl.duration_s, "lengths": lengths}
    end = wl.duration_s
    arrivals = None
    if wl.kind != "closed_loop":
        rate = wl.rate * value if (axis == "rate" and value is not None and wl.kind != "trace") else None
        trace = inputs.arrival_trace
        if wl.kind == "trace" and axis == "rate" and value is not None:
            trace = trace.copy()
            trace[:, 0] /= value  # rate multiplier = 1 / time scale
        arrivals = open_loop_arrivals(wl, lengths, rng, trace=trace, rate=rate)
        if wl.kind == "trace" and len(arrivals[0]):
            end = min(end, float(arrivals[0][-1]))  # a replayed trace ends with its last arrival
    if end <= wl.warmup_s:
        raise LabError(f"sim.workload.warmup_s {wl.warmup_s} is not below the last arrival at {end:.1f} s")
    cluster = Cluster(env, cost, lambda: make_policy(spec, gamma), source, sim.replicas, sim.batching, rng,
                      kv_capacity=kv_cap, router=sim.router, window=(wl.warmup_s, end),
                      closed_loop=closed)
    if wl.kind == "closed_loop":
        users = int(value) if (axis == "concurrency" and value is not None) else wl.concurrency
        cluster.start_closed_loop(users)
    else:
        env.process(cluster.open_loop(*arrivals))
    t0 = time.perf_counter()
    env.run(until=end)
    if wl.drain and not cluster.all_done():
        done = env.event()
        cluster_done_hook(cluster, done)
        env.run(until=simpy.AnyOf(env, [done, env.timeout(wl.drain_limit_s)]))
    wall = time.perf_counter() - t0
    frame = cluster.requests_frame()
    n_gpus = sim.replicas * sim.hardware.tp
    summary = summarize(frame, (wl.warmup_s, end), n_gpus, cluster.tokens_in_window,
                        ttft_cap_s=sim.sla.ttft_cap_s, sla_tok_s_user=sim.sla.tok_s_per_user)
    summary.update(cluster.step_stats())
    summary.update({
        "policy": label, "kind": spec.kind, "value": float(value) if value is not None else float("nan"),
        "axis": axis, "seed": seed, "acceptance": source.label, "exact_replay": bool(source.exact),
        "sim_time_s": env.now, "wall_s": wall, "events": env.n_events, "rejected": len(cluster.rejected),
        "utilization": cluster.step_stats()["busy_time_s"] / (sim.replicas * max(env.now, 1e-9)),
    })
    return RunResult(summary, frame, cluster if keep_cluster else None)


def cluster_done_hook(cluster: Cluster, done):
    """Trigger `done` when the last admitted request finishes (drain phase)."""
    original = cluster.on_finish

    def on_finish(rid, now):
        original(rid, now)
        if cluster.all_done() and not done.triggered:
            done.succeed()

    cluster.on_finish = on_finish


def run_stage(ctx) -> None:
    """The `sim` stage: sweep every policy, write results.parquet, sla.csv, plots and summary.md."""
    from lab.io import atomic_path, write_text_atomic
    from sim.sweep import plot_results, run_sweep, sla_table, summary_markdown

    sim = ctx.cfg.sim
    if sim is None:
        raise LabError(f"{ctx.cfg.name}: stage 'sim' needs a sim: section in the experiment YAML")
    out = ctx.path("sim")
    if ctx.stage_done("sim") and (out / "results.parquet").exists():
        return
    inputs = prepare_inputs(sim, ctx.root, ctx.cfg.seed)
    results = run_sweep(inputs, show_progress=ctx.show_progress)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    sla = sla_table(results, sim)
    with atomic_path(out / "sla.csv") as tmp:
        sla.to_csv(tmp, index=False)
    if sim.plots:
        plot_results(results, sla, sim, out)
    write_text_atomic(out / "summary.md", summary_markdown(results, sla, sim, inputs.notes))
    ctx.mark_done("sim", {"points": len(results)})
