"""The one place that wires a simulation run: config -> inputs -> cluster -> metrics.

    inputs = prepare_inputs(sim_cfg, run_root, seed)        # all file reading happens here, once
    result = simulate(inputs, policy_label, value, seed)    # one point: RunResult(summary, requests, cluster)

The `sim` stage that sweeps points and writes outputs is sim/stages.py.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from lab.errors import LabError
from lab.paths import expand_path
from sim.acceptance import ParametricSource, TraceSource
from sim.calibrate import check_calibration
from sim.cluster import Cluster, CountingEnvironment
from sim.cost import CostModel, cost_profile_path
from sim.cuda_graphs import cuda_graph_memory_bytes, graph_counts
from sim.hardware import engine_with_defaults
from sim.kv_cache import GIB, activation_reserve_bytes, kv_groups
from sim.policies import make_policy
from sim.profile_coverage import coverage_summary
from sim.serving_metrics import read_request_log, summarize
from sim.trace_rows import resolve_method
from sim.vllm_bench_log import bench_client
from sim.workload import (
    CLOSED_LOOP_CUT_S,
    LengthSampler,
    LogQueue,
    arrival_draws,
    check_closed_loop_size,
    check_requests_fit,
    length_table_file,
    load_arrival_trace,
    open_loop_arrivals,
    read_lengths,
    sharegpt_lengths_label,
)

LENGTHS_STREAM = 1  # the third seed word of the requests' lengths generator (the run's is [seed, seed])


def lengths_rng(inputs_seed: int, seed: int) -> np.random.Generator:
    """The generator a run's request lengths are drawn from: its own stream, apart from the arrivals'."""
    return np.random.default_rng([inputs_seed, seed, LENGTHS_STREAM])


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
    reference_log: pd.DataFrame | None = None  # replay_log: the real engine's per-request log
    replay_users: int | None = None  # replay_log of a --max-concurrency run at --request-rate inf: its slots
    client_limit: int | None = None  # replay_log of a --max-concurrency run at a finite rate: its slots
    cost: CostModel | None = None  # built once here (it may read a step profile)
    notes: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    summary: dict
    requests: pd.DataFrame
    cluster: Cluster | None = None
    token_log: list | None = None  # record_tokens: (client time, request ids) per decoding step (Cluster.token_log)


def prepare_inputs(sim, run_root: Path | None = None, seed: int = 0, ahead: bool = False) -> SimInputs:
    """Read traces, calibration and workload CSVs named by the config; LabError on anything missing.

    ahead=True: the check before a run starts (sim/stages.py check_sim, for `lab validate` and `lab run`)
    while stages before sim may still write into run_root: files inside run_root are left unread then
    (and what needs them: sources from unread traces, the replay's warm-up check)."""
    from lab.trace import read_traces

    later = written_later(run_root) if ahead else nothing_later
    cost = _cost_model(sim, run_root, later)
    # `vllm serve`'s batch sizes (and, with engine.vllm_version, that release's defaults)
    sim = sim.model_copy(update={"engine": engine_with_defaults(sim.engine, cost.hw, cost.model)})
    kv_pool(sim, cost)  # a model whose weights leave no KV memory fails here, before any run directory is written
    inputs = SimInputs(sim=sim, seed=seed, cost=cost)
    acc = sim.acceptance
    if acc.source == "run":
        if run_root is None:
            raise LabError("sim.acceptance.source 'run' needs a run directory (use `lab run`)")
        tdir = Path(run_root) / "traces"
        if not later(tdir):
            if not tdir.is_dir():
                raise LabError(f"sim.acceptance.source 'run': {tdir} does not exist; run the evaluate stage "
                               "first or set acceptance.source to traces/parametric")
            inputs.traces, inputs.traces_where = read_traces(tdir), str(tdir)
    elif acc.source == "traces":
        inputs.traces, inputs.traces_where = read_acceptance_traces(acc, later)
    if acc.use_calibration and acc.source != "parametric":
        cal = expand_path(acc.calibration_path) if acc.calibration_path else (
            Path(run_root) / "calibration.json" if run_root else None)
        if cal is not None and not later(cal):
            if cal.is_file():
                try:
                    payload = json.loads(cal.read_text())
                except (OSError, ValueError):  # binary bytes are a UnicodeDecodeError, a ValueError too
                    raise LabError(f"{cal}: calibration file is not valid JSON") from None
                inputs.calibration = check_calibration(payload, str(cal))
                inputs.notes.append(f"confidences calibrated with {cal}")
            elif acc.calibration_path:
                raise LabError(f"sim.acceptance.calibration_path: {cal} does not exist")
    wl = sim.workload
    table_file, _ = length_table_file(wl.lengths)
    if table_file is not None and not later(table_file):
        inputs.length_table = read_lengths(wl.lengths)
        if wl.lengths.source == "sharegpt":
            counted = f" (counted as {sharegpt_lengths_label(wl.lengths)})" if wl.lengths.borrow else ""
            inputs.notes.append(f"lengths: {len(inputs.length_table)} ShareGPT conversations of {table_file}"
                                f"{counted} pass vLLM bench's filter")
    if wl.kind == "trace" and not later(expand_path(wl.trace_path)):
        inputs.arrival_trace = load_arrival_trace(wl.trace_path)
    elif wl.kind == "replay_log":
        path = expand_path(wl.log_path)
        in_run = Path(run_root) / path if not path.is_absolute() and run_root is not None else None
        if in_run is not None and in_run.exists():
            path = in_run
        # a relative log found nowhere yet may be one an earlier stage (engine) writes into the run
        if not (later(path) or in_run is not None and not path.exists() and later(in_run)):
            log = read_request_log(path)
            inputs.reference_log = log
            keep = log[log["output_tokens"] >= 1].sort_values("arrival_s", kind="stable")
            inputs.arrival_trace = keep[["arrival_s", "input_tokens", "output_tokens"]].to_numpy(np.float64)
            if len(keep) < len(log):
                inputs.notes.append(f"{len(log) - len(keep)} logged requests without output tokens are not "
                                    "replayed")
            inputs.notes.append(f"replaying {len(keep)} requests of {path}")
            if path.suffix.lower() in (".json", ".jsonl"):
                limit, burst = bench_client(path)
                inputs.replay_users = limit if burst else None
                if limit and not burst and "client_wait_s" in keep:
                    # offered when the client drew them (send - slot wait), sent while fewer than N are in flight
                    offered = (keep["arrival_s"] - keep["client_wait_s"]).to_numpy(np.float64)  # [n]
                    order = np.argsort(offered, kind="stable")
                    trace = inputs.arrival_trace[order].copy()
                    trace[:, 0] = offered[order] - offered.min()
                    inputs.arrival_trace, inputs.client_limit = trace, limit
                    inputs.notes.append(f"--max-concurrency {limit} at a finite rate: requests offered at their "
                                        f"send less their client wait (queue_times), at most {limit} in flight")
                elif limit and not burst:
                    inputs.notes.append(f"--max-concurrency {limit} at a finite rate, no queue_times saved: "
                                        "replayed open-loop at the recorded sends (after the client's queue)")
                if inputs.replay_users and sim.sweep.axis == "rate":
                    raise LabError(f"sim.sweep.axis: 'rate' cannot scale {path}: it was sent closed-loop "
                                   f"(--max-concurrency {inputs.replay_users} at --request-rate inf)")
                if inputs.replay_users and wl.time_scale != 1:
                    raise LabError(f"sim.workload.time_scale: {path} was sent closed-loop (--max-concurrency "
                                   f"{inputs.replay_users} at --request-rate inf): it has no arrival times to "
                                   "scale")
                if inputs.replay_users:
                    inputs.notes.append(f"closed loop as sent (--max-concurrency {inputs.replay_users} at "
                                        f"--request-rate inf): {inputs.replay_users} users take the log's "
                                        "requests in send order, each sending its next when its last ends")
    if (wl.replay and inputs.arrival_trace is not None and wl.warmup > 0
            and wl.warmup >= float(inputs.arrival_trace[-1, 0]) * wl.time_scale):
        raise LabError(f"sim.workload.warmup_s: {wl.warmup:g} s is not below the replay's last arrival at "
                       f"{inputs.arrival_trace[-1, 0] * wl.time_scale:.1f} s (replays default to 0)")
    check_closed_loop_size(wl, sim.replicas, cost.step_time(1, 0.0, 1, False))  # a loop that would not end
    field = {"trace": "sim.workload.trace_path", "replay_log": "sim.workload.log_path"}.get(wl.kind,
                                                                                           "sim.workload.lengths")
    if not (wl.replay and inputs.arrival_trace is None):  # a replayed file a stage before sim writes: left to it
        check_requests_fit(LengthSampler.from_spec(wl.lengths, inputs.length_table),
                           inputs.arrival_trace if wl.replay else None,
                           sim.engine.max_model_len or cost.model.stated_max_model_len, field)
    if wl.kind in ("poisson", "gamma") and not wl.all_at_once:  # arrivals a point could not draw, before any runs
        for rate in ([wl.rate * v for v in sim.sweep.values] if sim.sweep.axis == "rate" else [wl.rate]):
            arrival_draws(rate, bounded_arrival_horizon(wl, rate).duration, wl.max_requests)
    # fail early on sources that cannot be built (unknown method, dataset weights, ...)
    if acc.source == "parametric" or inputs.traces is not None:
        for spec in sim.policies:
            build_source(inputs, spec)
    return inputs


def written_later(run_root: Path | None):
    """A predicate: True for a path inside run_root (a file a stage of the run may still write)."""
    root = Path(run_root).resolve() if run_root is not None else None

    def later(path) -> bool:
        return root is not None and Path(path).resolve().is_relative_to(root)

    return later


def nothing_later(path) -> bool:
    """The predicate of a run whose inputs are all written already (no stage before this one runs)."""
    return False


def read_acceptance_traces(acc, later=nothing_later) -> tuple[pd.DataFrame | None, str]:
    """The traces `sim.acceptance.paths` names (source traces), concatenated, and where they come from;
    (None, "") while one of them is still to be written (see written_later). LabError at a missing path."""
    from lab.trace import read_traces

    files = [expand_path(p) for p in acc.paths]
    if any(later(p) for p in files):
        return None, ""
    for p in files:
        if not p.exists():
            raise LabError(f"sim.acceptance.paths: {p} does not exist")
    return pd.concat([read_traces(p) for p in files], ignore_index=True), ", ".join(str(p) for p in files)


def _cost_model(sim, run_root: Path | None, later) -> CostModel:
    """CostModel.from_config, less the step profiles that a stage of the run may still write."""
    c = sim.cost
    unwritten = {}
    if c.profile is not None and later(cost_profile_path(c.profile, run_root)):
        unwritten["profile"] = None
    if c.spec_profile is not None and later(expand_path(c.spec_profile)):
        unwritten["spec_profile"] = None
    if unwritten:
        sim = sim.model_copy(update={"cost": c.model_copy(update=unwritten)})
    return CostModel.from_config(sim, run_root)


def build_source(inputs: SimInputs, spec):
    sim = inputs.sim
    acc = sim.acceptance
    gamma = acc.max_draft
    if acc.source == "parametric":
        p = acc.parametric
        alpha = spec.alpha or p.alpha
        rates = None if spec.alpha else p.rates
        return ParametricSource(gamma, alpha=alpha, rates=rates, concentration=p.concentration,
                                confidence_noise=p.confidence_noise, output_tokens=p.output_tokens,
                                draft_probability=p.draft_probability, draft_tokens_mean=p.draft_tokens_mean)
    method = resolve_method(inputs.traces, spec.method or acc.method, inputs.traces_where)
    temps = None
    if inputs.calibration:
        fitted = inputs.calibration.get("methods", {})
        if method in fitted:
            temps = fitted[method].get("temperatures")
    source = TraceSource.from_frame(inputs.traces, method, gamma, acc.temperature, acc.datasets, acc.table,
                                    temps=temps, where=inputs.traces_where)
    source.in_order = acc.assign == "in_order"
    return source


def policy_spec(sim, label: str):
    for spec in sim.policies:
        if spec.label() == label:
            return spec
    raise LabError(f"sim.policies: no policy labelled {label!r}")


def policy_cost(cost: CostModel, spec, policy) -> CostModel:
    """The cost model of the server a policy runs on: its own drafter where the policy names one (drafter_layers /
    drafter_passes / drafter_head_vocab, else the model's), and a chain drafter (per_token) drafting the policy's
    own most tokens each step, as vLLM drafts num_speculative_tokens whatever it verifies."""
    changes = {key: getattr(spec, key) for key in ("drafter_layers", "drafter_passes", "drafter_head_vocab")
               if getattr(spec, key) is not None}
    if changes.get("drafter_passes", cost.drafter_passes) == "per_token" and policy.spec:
        changes["max_draft"] = policy.max_verify()
    return replace(cost, **changes) if changes else cost


def kv_capacity_tokens(sim, cost, spec_tokens: int = 0) -> int:
    """KV slots per replica as vLLM logs them ("GPU KV cache size"): engine.kv_capacity_tokens, or vLLM's
    memory split (sim/kv_cache.py); `spec_tokens` > 0: a speculative server's (kv_pool)."""
    return kv_pool(sim, cost, spec_tokens)[0]


def kv_pool(sim, cost, spec_tokens: int = 0) -> tuple[int, int | None]:
    """(KV tokens per replica as vLLM logs them, pool blocks or None where only the tokens are known). A
    model of one KV cache group takes cost.kv_capacity_tokens; a hybrid one (sliding-window layers,
    engine.hybrid_kv; or linear-attention layers, at the block size they force) sizes its pool in blocks of one
    group's layers (sim/kv_cache.KVGroups). `spec_tokens` > 0 sizes a speculative server's pool (vLLM's
    --speculative-config num_speculative_tokens): its drafter's weights and KV (cost.drafter_memory_bytes,
    none for drafter_layers 0, an n-gram drafter) and CUDA graphs captured for 1 + spec_tokens tokens per
    sequence (sim/cuda_graphs.py) come out of the same memory."""
    e = engine_with_defaults(sim.engine, cost.hw, cost.model)
    m = cost.model
    groups = kv_groups(m, e.hybrid_kv, cost.tp, e.block_size)
    hybrid = e.kv_policy != "reserve" and groups.layers != m.n_layers  # several groups: a group-block pool
    bs = groups.block_size or e.block_size
    if e.kv_capacity_tokens:
        if hybrid and e.max_model_len:  # a newer vLLM's log: the pool exactly
            return e.kv_capacity_tokens, groups.pool_blocks(e.kv_capacity_tokens, bs, e.max_model_len,
                                                            e.max_num_batched_tokens)
        return e.kv_capacity_tokens, None
    reserve = (e.activation_reserve_gib * GIB if e.activation_reserve_gib is not None
               else engine_reserve_bytes(sim, cost)) + engine_cuda_graph_bytes(sim, cost, spec_tokens)
    drafter = spec_tokens > 0
    if not hybrid:
        tokens = cost.kv_capacity_tokens(e.gpu_memory_utilization, reserve, e.block_size, drafter=drafter)
        return tokens, tokens // e.block_size
    blocks = cost.kv_blocks(e.gpu_memory_utilization, reserve, bs, layers=groups.layers, drafter=drafter)
    return groups.reported_tokens(blocks, bs, e.max_model_len, e.max_num_batched_tokens), blocks


def engine_reserve_bytes(sim, cost) -> float:
    """vLLM's default per-GPU reserve beside the weights for this engine and the cost model's model, card and tp
    (sim/kv_cache.activation_reserve_bytes): max_num_batched_tokens and max_num_seqs, the sampler, and custom
    all-reduce buffers where the GPUs talk over NVLink (vLLM turns custom all-reduce off without P2P)."""
    e, m = engine_with_defaults(sim.engine, cost.hw, cost.model), cost.model
    return activation_reserve_bytes(m.hidden, e.max_num_batched_tokens, m.vocab, e.max_num_seqs, e.sampler, cost.tp,
                                    cost.hw.interconnect.kind == "nvlink")


def engine_cuda_graph_bytes(sim, cost, spec_tokens: int = 0) -> float:
    """Per-GPU CUDA-graph memory vLLM keeps back from the KV cache beside the reserve (engine.cuda_graph_memory):
    vLLM 0.20+'s estimate for the default capture sizes of this engine's max_num_seqs and max_num_batched_tokens
    (and a speculative server's 1 + spec_tokens tokens per sequence; sim/cuda_graphs.py), none, or the GiB
    given; none on a device without graphs (the sheet's `graphs`)."""
    e = engine_with_defaults(sim.engine, cost.hw, cost.model)
    if e.cuda_graph_memory == "none" or not cost.hw.graphs:
        return 0.0
    if e.cuda_graph_memory == "estimate":
        return cuda_graph_memory_bytes(*graph_counts(e.max_num_seqs, e.max_num_batched_tokens, spec_tokens))
    return float(e.cuda_graph_memory) * GIB


def lockstep_group(sim, cost) -> int:
    """Replicas that step together: a MoE model's data-parallel ranks of one expert-parallel group (ep / tp of
    them) or of one vLLM server whose MoE layers span them without EP (cost.moe_dp, engine.dp_mode vllm), while
    sim.engine.dp_lockstep; 1 (each alone) for a dense model, separate replicas, or a single replica."""
    tp, ep = sim.hardware.tp, sim.hardware.ep
    if not (sim.engine.dp_lockstep and cost.model.moe_experts and sim.replicas > 1):
        return 1
    return ep // tp if ep > tp else cost.moe_dp


def simulate(inputs: SimInputs, label: str, value: float | None = None, seed: int = 0,
             keep_cluster: bool = False, record_steps: bool = False, record_tokens: bool = False) -> RunResult:
    """Run one point: policy `label` at sweep value `value` (concurrency or rate multiplier) and seed.
    `record_steps`: every replica keeps its steps' shapes (sim.cluster Replica.step_log; with keep_cluster).
    `record_tokens`: keep when each decoding step's tokens reached the client (RunResult.token_log; the streamed
    chunks sim.client_cadence reads vLLM bench's ITL and peak output throughput from)."""
    sim = inputs.sim
    spec = policy_spec(sim, label)
    wl = sim.workload
    rng = np.random.default_rng([inputs.seed, seed])
    source = build_source(inputs, spec)
    gamma = sim.acceptance.max_draft
    probe = make_policy(spec, gamma)
    cost = policy_cost(inputs.cost if inputs.cost is not None else CostModel.from_config(sim), spec, probe)
    # a speculative policy runs on a speculative server: its drafter and wider graphs share the KV memory
    kv_cap, kv_blocks = kv_pool(sim, cost, probe.max_verify())
    env = CountingEnvironment()
    # the requests' lengths from a stream of their own: the same requests at every rate / concurrency of a sweep
    lengths = LengthSampler.from_spec(wl.lengths, inputs.length_table, rng=lengths_rng(inputs.seed, seed))
    closed = None
    axis = sim.sweep.axis
    end = wl.duration
    warmup = wl.warmup
    if wl.kind == "closed_loop" or wl.all_at_once:  # rate .inf: vLLM's client at --request-rate inf, a closed loop
        end = min(end, CLOSED_LOOP_CUT_S)  # a bounded loop (max_requests) is not cut: it ends with its last reply
        closed = {"think": wl.think_time_s, "stop_at": end, "lengths": lengths, "max_requests": wl.max_requests}
    elif inputs.replay_users:  # the log's requests in send order to its client's slots (vLLM's semaphore)
        rows = inputs.arrival_trace[:wl.max_requests or None].copy()  # [n, 3] arrival, input, output tokens
        rows[:, 1] = np.clip(rows[:, 1], 1, lengths.max_prompt)
        rows[:, 2] = np.clip(rows[:, 2], 1, lengths.max_output)
        end = min(end, CLOSED_LOOP_CUT_S)
        closed = {"think": 0.0, "stop_at": end, "lengths": LogQueue(rows), "max_requests": len(rows)}
    arrivals = None
    if closed is None:
        rate = wl.rate * value if (axis == "rate" and value is not None and not wl.replay) else None
        trace = inputs.arrival_trace
        if wl.replay and axis == "rate" and value is not None:
            trace = trace.copy()
            trace[:, 0] /= value  # rate multiplier = 1 / time scale
        arrivals = open_loop_arrivals(bounded_arrival_horizon(wl, rate), lengths, rng, trace=trace, rate=rate)
        if (wl.replay or wl.bounded) and len(arrivals[0]):
            end = max(min(end, float(arrivals[0][-1])), 1e-9)  # arrivals stop with the recording's (or cap's) last
    if end <= warmup:
        raise LabError(f"sim.workload.warmup_s {warmup:g} is not below the last arrival at {end:.1f} s")
    # a replay or a bounded run (max_requests: vLLM bench's --num-prompts) is measured over all its requests and
    # their whole run (vLLM's benchmark); a synthetic workload over requests arriving in [warmup, duration] and
    # tokens emitted then
    whole_run = wl.replay or wl.bounded
    window = (warmup, float("inf") if whole_run else end)
    cluster = Cluster(env, cost, lambda: make_policy(spec, gamma), source, sim.replicas, sim.engine, rng,
                      kv_capacity=kv_cap, router=sim.router, window=window, closed_loop=closed, kv_blocks=kv_blocks,
                      frontend=sim.frontend if sim.frontend.enabled else None, lockstep=lockstep_group(sim, cost),
                      record_steps=record_steps)
    if record_tokens:
        cluster.token_log = []
    if wl.warm_prefix_cache:  # the same requests ran on this server just before (a sweep at one --seed)
        cluster.warm_prefix_cache(arrivals[1], arrivals[2])
    feeder = None
    # the benchmark client's --max-concurrency over open-loop arrivals: a replayed log's, or the workload's own
    limit = inputs.client_limit or wl.client_limit
    if axis == "concurrency" and value is not None and wl.client_limit is not None:
        limit = int(value)  # the sweep varies --max-concurrency at the workload's own rate
    if wl.kind == "closed_loop" or wl.all_at_once:
        users = int(value) if (axis == "concurrency" and value is not None) else wl.users
        cluster.start_closed_loop(users)
    elif closed is not None:
        cluster.start_closed_loop(inputs.replay_users)
    else:
        feeder = env.process(cluster.open_loop(*arrivals, limit=limit))
    t0 = time.perf_counter()
    if closed is not None and closed["max_requests"]:
        # a bounded closed loop (vLLM's --max-concurrency with --num-prompts) ends with its last reply
        done = env.event()  # not at an idle moment between a reply and a user's next request (think_time_s)
        cluster_done_hook(cluster, done, sent_all=cluster.closed_loop_sent_all)
        env.run(until=simpy.AnyOf(env, [done, env.timeout(end)]))
    else:
        env.run(until=end)
    if limit and feeder.is_alive and wl.drain:
        if whole_run:  # every request is sent, as vLLM's client sends them: those still waiting for a slot too
            env.run(until=feeder)
        else:  # a steady-state window's end: requests still waiting for a slot are not sent
            feeder.interrupt()
            env.run(until=feeder)
    # a replay ends at its last arrival, and run(until=t) stops before the events at t: with nothing in the system
    # then, that last request would never be sent (the feeder is still alive) -- drain it like any other
    if wl.drain and (not cluster.all_done() or ((wl.replay or wl.bounded) and feeder is not None
                                                and feeder.is_alive)):
        done = env.event()
        cluster_done_hook(cluster, done)
        env.run(until=simpy.AnyOf(env, [done, env.timeout(wl.drain_limit_s)]))
    wall = time.perf_counter() - t0
    frame = cluster.requests_frame()
    n_gpus = sim.replicas * sim.hardware.tp
    summary = summarize(frame, window, n_gpus, None if whole_run else cluster.tokens_in_window,
                        ttft_cap_s=sim.sla.ttft_cap_s, sla_tok_s_user=sim.sla.tok_s_per_user)
    stats = cluster.step_stats()
    summary.update(stats)
    if cost.profile is not None:  # how much of the run the profile priced outside its grid (profile_* keys)
        summary.update(coverage_summary([r.coverage for r in cluster.replicas], stats["busy_time_s"]))
    summary.update({
        "policy": label, "kind": spec.kind, "value": float(value) if value is not None else float("nan"),
        "axis": axis, "seed": seed, "acceptance": source.label, "exact_replay": bool(source.exact),
        "kv_policy": sim.engine.kv_policy,
        "sim_time_s": env.now, "wall_s": wall, "events": env.n_events, "rejected": len(cluster.rejected),
        "too_long": len(cluster.too_long),
        "utilization": stats["busy_time_s"] / (sim.replicas * max(env.now, 1e-9)),
    })
    if sim.frontend.enabled:  # the API servers' share of the run (sim/frontend.py)
        summary["frontend_utilization"] = (sum(r.fe.busy_s for r in cluster.replicas)
                                           / (sim.replicas * max(env.now, 1e-9)))
    return RunResult(summary, frame, cluster if keep_cluster else None, cluster.token_log)


def bounded_arrival_horizon(wl, rate: float | None):
    """`wl` as open_loop_arrivals should read it: a bounded Poisson / gamma run (max_requests, no duration_s) with
    an arrival window that holds all its requests, three times their mean span at the point's rate and a minute
    more (its run still ends with the last arrival's reply); any other workload as it is."""
    if not wl.bounded or wl.kind == "closed_loop" or wl.duration_s is not None:
        return wl
    return wl.model_copy(update={"duration_s": 3.0 * wl.max_requests / (rate or wl.rate) + 60.0})


def cluster_done_hook(cluster: Cluster, done, sent_all=lambda: True):
    """Trigger `done` when the last admitted request finishes (drain phase), once `sent_all()` says no more will
    come."""
    original = cluster.on_finish

    def on_finish(rid, now):
        original(rid, now)
        if cluster.all_done() and sent_all() and not done.triggered:
            done.succeed()

    cluster.on_finish = on_finish
