"""Speed benchmarks of the simulator (issue 4, BENCHMARKS.md).

    python -m sim.bench azure   --trace /work/shared/data/workloads/azure2023_splitwise_conv.csv --time-scale 1.0
    python -m sim.bench azure   --trace ... --time-scale 0.25          # 4x the arrival rate
    python -m sim.bench hour    --trace ...                            # 1 simulated hour, 8 replicas, ~80% busy
    python -m sim.bench azure ... --profile                            # cProfile top 25
    python -m sim.bench azure ... --async-scheduling on                # engine.async_scheduling set (default: unset)

Setup mirrors the Vidur anchor: Llama-2-7B on an A100-80G profile, 8 replicas, round-robin, chunked
prefill, speculative decoding with the DSpark prefix scheduler (gamma 7) over a parametric acceptance source
(per-request-step Beta(0.8, 4) rates; swap in recorded traces with --traces DIR). Prints simulated seconds,
requests, engine steps, decode tokens, events, wall time beside process CPU time (the machine is shared:
wall time moves with the load, CPU time much less) and the load average, and the per-second rates.
"""
from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time

from pydantic import ValidationError

from lab.arguments import ArgumentParser
from lab.config_base import validation_message
from lab.config_sim import SimSection
from lab.errors import LabError


def bench_config(args, duration: float) -> SimSection:
    acc = {"source": "parametric", "max_draft": 7,
           "parametric": {"kind": "iid", "alpha": args.alpha, "concentration": 4.0}}
    if args.traces:
        acc = {"source": "traces", "paths": [args.traces], "max_draft": 7}
    section = {
        "hardware": {"name": args.hardware}, "model": {"name": args.model, "drafter_layers": 2},
        "replicas": args.replicas, "router": "round_robin",
        "engine": {"max_num_seqs": 256, "max_num_batched_tokens": 4096},
        "workload": {"kind": "trace", "trace_path": args.trace, "time_scale": args.time_scale,
                     "duration_s": duration, "warmup_s": 0.0, "drain": True, "drain_limit_s": 3600},
        "acceptance": acc, "policies": [{"kind": args.policy}], "sweep": {"axis": "none"},
    }
    if args.async_scheduling is not None:  # unset: the default of the release (none named: sim.vllm_versions)
        section["engine"]["async_scheduling"] = args.async_scheduling == "on"
    try:
        return SimSection.model_validate(section)
    except ValidationError as exc:  # a flag's value the sim section refuses (--replicas 0, --alpha nan, --policy x)
        field = ".".join(str(p) for p in exc.errors()[0]["loc"])
        flag = next((f for key, f in FLAG_OF_FIELD.items() if field.startswith(key)), "the command line")
        raise LabError(f"python -m sim.bench: {flag}: {validation_message(exc)}") from None


FLAG_OF_FIELD = {"workload.time_scale": "--time-scale", "workload.duration_s": "--time-scale", "replicas": "--replicas",
                 "hardware": "--hardware", "model": "--model", "policies": "--policy", "acceptance.parametric.alpha":
                 "--alpha", "acceptance": "--traces", "workload.trace_path": "--trace"}


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.bench", description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["azure", "hour"])
    ap.add_argument("--trace", required=True, help="arrival CSV (arrived_at,num_prefill_tokens,num_decode_tokens)")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--hardware", default="a100-80g")
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--policy", default="prefix")
    ap.add_argument("--alpha", type=float, default=0.8)
    ap.add_argument("--traces", default=None, help="replay recorded traces instead of the parametric source")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--async-scheduling", choices=["on", "off"], default=None,
                    help="engine.async_scheduling (default: unset, the release's default)")
    args = ap.parse_args(argv)
    from sim.simulate import prepare_inputs, simulate

    try:
        if args.what == "hour":
            # one simulated hour: loop the trace's arrival pattern at a time scale that keeps replicas ~80% busy
            duration = 3600.0
        else:
            from sim.workload import load_arrival_trace

            duration = float(load_arrival_trace(args.trace)[-1, 0]) * args.time_scale + 1.0  # the whole trace
        sim = bench_config(args, duration)
        t0, cpu0 = time.perf_counter(), time.process_time()
        inputs = prepare_inputs(sim)
        if args.what == "hour":
            import numpy as np

            tr = inputs.arrival_trace
            span = tr[-1, 0] * args.time_scale
            reps = int(np.ceil(3600.0 / span)) if span > 0 else 1
            tiles = [np.c_[tr[:, 0] * args.time_scale + i * span, tr[:, 1:]] for i in range(reps)]
            tiled = np.concatenate(tiles)
            tiled[:, 0] /= args.time_scale  # open_loop_arrivals multiplies by time_scale again
            inputs.arrival_trace = tiled
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        res = simulate(inputs, sim.policies[0].label(), None, 0)
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = res.summary
    loop = s["wall_s"]
    print(f"bench {args.what}: {args.replicas} x {args.hardware} {args.model}, policy {args.policy}, "
          f"time_scale {args.time_scale}, acceptance {s['acceptance']}")
    print(f"  simulated {s['sim_time_s']:.0f} s, requests {s['requests']} (unfinished {s['unfinished']}), "
          f"utilization {s['utilization']:.2f}, mean decode batch {s['mean_decode_batch']:.2f}, tau {s['tau']:.2f}")
    print(f"  steps {s['steps']:,}, decode tokens {s['decode_tokens']:,}, events {s['events']:,}")
    print(f"  event loop {loop:.1f} s, wall {wall:.1f} s, process CPU {cpu:.1f} s (incl. reading inputs); "
          f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  per wall second (loop): {s['steps'] / loop:,.0f} steps, {s['decode_tokens'] / loop:,.0f} decode tokens, "
          f"{s['events'] / loop:,.0f} events; {loop / max(s['steps'], 1) * 1e6:.1f} us per step")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
