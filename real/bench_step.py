"""Engine step benchmark: one target forward (batch x query tokens over a context of KV), eager vs static.

    python -m real.bench_step --target gemma3-270m --dtype float32 --batches 1,4 --queries 1,8 --context 256
    python -m real.bench_step --target qwen3-4b --init random --device cuda --engines eager,static,graphs

Per point: a prefill of `context` random tokens per row, two warm-up steps, then `repeats` timed steps,
each followed by a rollback so every repeat sees the same context (what a verify does). Reports the median
and p90 wall ms (the device synchronized around each step) and the process CPU ms per step. The static
engine's last logits are compared with eager's (max abs diff) so a fast path cannot be a wrong one.
--weights-read prints, instead of measuring, what reading a target's weights once costs on the sim's GPU
profiles (params x bytes / bandwidth): the floor of a decode step there. BENCHMARKS.md quotes the output.
--kernels adds, per engine, the device kernels and kernel time of one batch-1 step (torch.profiler; on a
CPU there are none to count); --compile wraps the model's forward in torch.compile first (GPU experiment).
--cpu-linear off,auto times each point with the target's few-row linears as F.linear and as W @ x^T
(real/cpu_linear.py), side by side, and reports the logits' max |diff| against the first variant.

    python -m real.bench_step --engines eager --cpu-linear off,auto --batches 1,4 --queries 1,2,4,8,16 --context 128
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
from tqdm import tqdm

from lab.arguments import ArgumentParser, int_list, positive_int
from lab.config import TargetSection
from lab.errors import exit_on_user_error
from real.cpu_linear import MODES, use_fast_few_row_linears
from real.rng import device_generator
from real.targets import cpu_capability, load_target
from real.timing import now_ms


def time_steps(target, engine: str, batch: int, query: int, context: int, repeats: int) -> dict:
    """Median / p90 wall ms and CPU ms of one step of `query` tokens per row over `context` tokens of KV."""
    device = target.device
    ids = torch.randint(100, 5000, (batch, context + query), generator=device_generator("cpu", batch * 1000 + query))
    target.engine = engine
    cache = target.new_batch_cache(batch, context + query + 8)
    target.forward(ids[:, :context], cache, last_logits_only=True)
    target.crop(cache, 0)
    step_ids = ids[:, context:]  # [B, query]
    walls, cpus = [], []
    for i in range(repeats + 2):  # two warm-up steps, not recorded
        cpu0, t0 = time.process_time(), now_ms(device)
        out = target.forward(step_ids, cache)
        wall, cpu = now_ms(device) - t0, (time.process_time() - cpu0) * 1000.0
        target.crop(cache, query)
        if i >= 2:
            walls.append(wall)
            cpus.append(cpu)
    walls.sort()
    return {"engine": engine, "batch": batch, "query_tokens": query, "context_len": context,
            "step_ms": walls[len(walls) // 2], "step_ms_p90": walls[min(len(walls) - 1, int(0.9 * len(walls)))],
            "cpu_ms": sorted(cpus)[len(cpus) // 2], "repeats": repeats, "last_logits": out.logits[:, -1].float().cpu()}


def kernel_profile(target, engine: str, query: int, context: int, steps: int = 5) -> dict:
    """Device kernels per batch-1 step and their device time (torch.profiler): two profiled runs of
    time_steps, 1 and 1 + steps timed steps; their difference / steps is one step (prefill and warm-ups
    cancel). Top five kernels by time in the longer run."""
    from torch.profiler import ProfilerActivity, profile

    time_steps(target, engine, 1, query, context, 1)  # warm: graphs captured, caches sized
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    totals = []
    for repeats in (1, 1 + steps):
        with profile(activities=activities) as prof:
            time_steps(target, engine, 1, query, context, repeats)
        events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        totals.append((sum(e.count for e in events), sum(e.self_device_time_total for e in events), events))
    (count_1, time_1, _), (count_n, time_n, events) = totals
    top = sorted(events, key=lambda e: -e.self_device_time_total)[:5]
    return {"engine": engine, "query_tokens": query, "context_len": context,
            "kernels_per_step": (count_n - count_1) / steps, "device_ms_per_step": (time_n - time_1) / steps / 1e3,
            "top": [(e.key[:60], e.count, round(e.self_device_time_total / 1e3, 2)) for e in top]}


def weights_read_rows(target_name: str) -> list[dict]:
    """params x 2 bytes (bf16) / peak bandwidth for the sim's GPU profiles: computed, not measured."""
    from real.sizing import build_preset_model, preset_config
    from sim.hardware import get_hardware

    model = build_preset_model(preset_config(target_name), "meta", torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    return [{"target": target_name, "gpu": name, "params": params,
             "weights_read_ms": params * 2 / (get_hardware(name).mem_bw_tbs * 1e12) * 1000.0}
            for name in ("h100", "h200")]


def _linear_modes(text: str) -> list[str]:
    """An argparse `type`: comma-separated target.cpu_linear modes."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated modes of {', '.join(MODES)}")
    return modes


@exit_on_user_error("python -m real.bench_step")
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m real.bench_step", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="gemma3-270m")
    parser.add_argument("--init", default="pretrained", choices=["pretrained", "random"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engines", default="eager,static")
    parser.add_argument("--batches", type=int_list, default="1,4")
    parser.add_argument("--queries", type=int_list, default="1,8")
    parser.add_argument("--context", type=positive_int, default=256)
    parser.add_argument("--repeats", type=positive_int, default=7)
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--cpu-linear", type=_linear_modes, default=None,
                        help="comma-separated target.cpu_linear modes to time side by side (CPU: off,auto)")
    parser.add_argument("--weights-read", action="store_true", help="print the GPU weights-read bounds and exit")
    parser.add_argument("--out", default=None)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's forward (default mode, no cudagraphs of its own) first")
    parser.add_argument("--kernels", action="store_true",
                        help="torch.profiler over one extra point per engine (batch 1, first query): kernel count "
                             "and device time per step, top kernels")
    args = parser.parse_args(argv)
    if args.weights_read:
        for row in weights_read_rows(args.target):
            print(json.dumps(row))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    target = load_target(TargetSection(name=args.target, init=args.init, dtype=args.dtype, device=args.device))
    if args.compile:
        target.model.forward = torch.compile(target.model.forward, dynamic=False)
    linear_modes = args.cpu_linear or [None]
    points = [(e, mode, b, q) for b in args.batches for q in args.queries
              for mode in linear_modes for e in args.engines.split(",")]
    rows, reference = [], {}
    for engine, mode, batch, query in tqdm(points, desc="steps"):
        if mode is not None:  # probes are cached after the first switch: switching back and forth is free
            use_fast_few_row_linears(target.model, mode, args.device)
        row = time_steps(target, engine, batch, query, args.context, args.repeats)
        if mode is not None:
            row["cpu_linear"] = mode
        logits = row.pop("last_logits")
        if (batch, query) not in reference:
            reference[(batch, query)] = logits
        else:
            row["max_abs_diff_vs_eager"] = float((logits - reference[(batch, query)]).abs().max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.kernels:
        for engine in args.engines.split(","):
            print(json.dumps(kernel_profile(target, engine, args.queries[0], args.context)))
    result = {"target": args.target, "init": args.init, "dtype": args.dtype, "device": args.device,
              "hardware": torch.cuda.get_device_name() if args.device.startswith("cuda") else
              f"cpu {cpu_capability()} {torch.get_num_threads()} threads",
              "cpu_capability": cpu_capability(), "load_average": os.getloadavg(), "rows": rows}
    print("| engine | cpu_linear | batch | query tokens | context | step ms (median) | p90 | CPU ms | "
          "max |diff| vs the first variant |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        diff = r.get("max_abs_diff_vs_eager")
        print(f"| {r['engine']} | {r.get('cpu_linear', target.cpu_linear['mode'])} | {r['batch']} | "
              f"{r['query_tokens']} | {r['context_len']} | {r['step_ms']:.1f} | "
              f"{r['step_ms_p90']:.1f} | {r['cpu_ms']:.1f} | {'' if diff is None else f'{diff:.1e}'} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
