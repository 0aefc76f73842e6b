"""Measured step profile: the target's forward step time on its device over batch x query tokens x context.

    lab profile experiments/quickstart.yaml        # the `profile` stage alone; or stages: [profile, sim, ...]
    rows = measure_profile(target, ProfileSection(batch=[1, 4], query_tokens=[1, 8], context_len=[128]))

One step = one target forward of `batch` requests, each appending `query_tokens` new tokens to a KV cache of
`context_len` tokens, with logits for every new position (a verify step). Per (batch, context) the cache is
filled once (untimed: one row prefilled, repeated to `batch` rows); every step is then rolled back (crop) so
that each repeat sees the same context. `warmup` untimed steps precede the `repeats` timed ones; on CUDA the device is
synchronised around each timed step. The result is sim/step_profile.py's shared format, written as
step_profile.csv + step_profile.json into the run directory; the simulator uses it with `sim.cost.profile:
run` (or a path) as its step cost.
"""
from __future__ import annotations

import datetime as dt
import time

import numpy as np
import torch
from tqdm import tqdm

from lab.config import ProfileSection
from lab.runs import package_versions
from real.rng import device_generator
from real.timing import now_ms
from sim.step_profile import CSV_NAME, write_profile


def measure_profile(target, section: ProfileSection, show_progress: bool = True) -> list[dict]:
    """Rows of the step-profile CSV for every point of the section's grid (see the module docstring)."""
    device = target.device
    generator = device_generator("cpu", section.seed)  # host-side token ids
    points = [(b, c) for c in section.context_len for b in section.batch]
    rows = []
    bar = tqdm(total=len(points) * len(section.query_tokens), desc="profile", unit="point",
               disable=not show_progress)
    for batch, context in points:
        # the target's engine decides the cache: eager a DynamicCache, static / graphs a StaticKV (on CUDA a
        # batch-1 step then replays a CUDA graph, as the decode loops do)
        cache = target.new_batch_cache(batch, context + max(section.query_tokens) + 8)
        if context:
            # prompt ids [1, context]: random tokens of the ordinary vocabulary range, prefilled once (a step's
            # cost does not depend on what the KV holds)
            prompt = torch.randint(100, 5000, (1, context), generator=generator)
            if target.engine == "eager":  # one row prefilled, the cache repeated to `batch` rows
                target.forward(prompt, cache, last_logits_only=True)
                target.crop(cache, 0)
                if batch > 1:
                    cache.batch_repeat_interleave(batch)
            else:  # a static cache is allocated per batch: prefill every row
                target.forward(prompt.expand(batch, -1), cache, last_logits_only=True)
                target.crop(cache, 0)
        for query in section.query_tokens:
            step_ids = torch.randint(100, 5000, (batch, query), generator=generator)  # [batch, query]
            times = []
            for i in range(section.warmup + section.repeats):
                start = now_ms(device)
                target.forward(step_ids, cache)
                elapsed_ms = now_ms(device) - start
                target.crop(cache, query)  # roll back: every step sees the same context
                if i >= section.warmup:
                    times.append(elapsed_ms)
            rows.append({"batch": batch, "query_tokens": query, "context_len": context,
                         "step_ms": float(np.median(times)), "step_ms_p90": float(np.percentile(times, 90)),
                         "repeats": section.repeats})
            bar.update(1)
        del cache
    bar.close()
    return rows


def device_meta(target, model_label: str) -> dict:
    """The step_profile.json fields: what was measured, where, with which versions."""
    device = target.device
    capability = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else None
    threads = torch.get_num_threads()
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"cpu {capability} {threads} threads"
    versions = package_versions()
    return {"source": "lab", "model": model_label, "dtype": str(target.dtype).removeprefix("torch."),
            "device": str(device), "hardware": hardware,
            "cpu_capability": capability if device.type == "cpu" else None,
            "threads": threads if device.type == "cpu" else None, "versions": versions, "engine": target.engine,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def run_stage(ctx) -> None:
    """The `profile` stage: measure the run's target and write step_profile.csv/json into the run directory."""
    from real.targets import load_target, require_context

    cfg = ctx.cfg
    out = ctx.root
    if (out / CSV_NAME).is_file() and "profile" not in ctx.forced:
        print(f"profile: done already ({out / CSV_NAME})")
        ctx.mark_done("profile")
        return
    target = load_target(cfg.target)
    require_context(target, max(cfg.profile.context_len) + max(cfg.profile.query_tokens),
                    "profile.context_len + profile.query_tokens")
    section = cfg.profile
    n_points = len(section.batch) * len(section.query_tokens) * len(section.context_len)
    print(f"profile: {cfg.target.name} ({cfg.target.dtype}) on {cfg.target.device}, {n_points} points x "
          f"({section.warmup} warm-up + {section.repeats} timed) steps")
    start = time.perf_counter()
    rows = measure_profile(target, section, show_progress=ctx.show_progress)
    path = write_profile(out, rows, device_meta(target, cfg.target.name))
    fastest = min(rows, key=lambda r: r["step_ms"])
    slowest = max(rows, key=lambda r: r["step_ms"])
    print(f"profile: {path} ({time.perf_counter() - start:.0f} s): step {fastest['step_ms']:.1f} ms "
          f"(batch {fastest['batch']} x {fastest['query_tokens']} over {fastest['context_len']}) to "
          f"{slowest['step_ms']:.1f} ms (batch {slowest['batch']} x {slowest['query_tokens']} over "
          f"{slowest['context_len']})")
    ctx.mark_done("profile", {"points": len(rows)})
