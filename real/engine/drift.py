"""Drift control: the engine's speed right before and right after each load, against its step profile.

    rows = measure_reference(base_url, cfg.engine.reference, tokens, speculative=False, seed=7)
    record = reference_record(before, after, ...)            # engine/<variant>/<load>/reference.json
    info = reference_ratio(record, read_profile(profile))    # {"ratio": 1.23, "points": [...]}
    scaled_profile(profile_csv, info["ratio"], out_dir)      # the profile x ratio, for the simulator

The simulator is configured from a step profile measured minutes before or after the loads, and a shared
machine's speed drifts by more than the fidelity goals between those minutes (BENCHMARKS.md, issue 10). So
the engine stage measures a few of the profile's own grid points (engine.reference.points) with the
profiler's own method (real.engine.step_profile.point_samples) right before and right after every load.
A load's ratio is the geometric mean over those points of mean(before, after) / the profile's step_ms; the
fidelity stage reports the simulator with the profile as measured (the raw table, the headline) and with
the profile scaled by that ratio (the drift-corrected table: how much of the raw error is the machine).
On a speculative server only prefill points (query_tokens > 1, one output token: a step that verifies no
draft) are measured: its decode steps carry drafts, which the plain profile's decode rows do not.
"""
from __future__ import annotations

import asyncio
import math
import statistics
import time
from pathlib import Path

from lab.errors import LabError


def reference_points(spec, speculative: bool) -> list[tuple[int, int, int]]:
    """The points a server measures: all of spec.points, or only the prefill points on a speculative server."""
    return [tuple(p) for p in spec.points if not (speculative and p[1] == 1)]


async def measure_reference_async(base_url: str, spec, tokens, speculative: bool, model: str = "target",
                                  seed: int = 0, max_prompt_tokens: int | None = None) -> list[dict]:
    """One bracket: {batch, query_tokens, context_len, step_ms (median), samples} per reference point
    (max_prompt_tokens: the longest one-step prompt, for a gated batch's blocker; step_profile.point_samples)."""
    import numpy as np

    from real.engine.step_profile import _client, gated_connections, point_samples

    rng = np.random.default_rng(seed)
    points = reference_points(spec, speculative)
    rows = []
    if not points:
        return rows
    async with _client(gated_connections(max(p[0] for p in points))) as client:
        for point in points:
            samples = await point_samples(client, base_url, model, tokens, rng, point, spec.output_tokens,
                                          spec.repeats, max_prompt_tokens=max_prompt_tokens)
            if not samples:
                raise LabError(f"engine.reference: no samples at point {list(point)}")
            rows.append({"batch": point[0], "query_tokens": point[1], "context_len": point[2],
                         "step_ms": round(statistics.median(samples), 3), "samples": len(samples)})
    return rows


def measure_reference(base_url: str, spec, tokens, speculative: bool, model: str = "target",
                      seed: int = 0, max_prompt_tokens: int | None = None) -> dict:
    """measure_reference_async with its wall-clock window: {"start", "end" (UTC ISO), "wall_s", "rows"}."""
    start, t0 = _utc_now(), time.perf_counter()
    rows = asyncio.run(measure_reference_async(base_url, spec, tokens, speculative, model, seed, max_prompt_tokens))
    return {"start": start, "end": _utc_now(), "wall_s": round(time.perf_counter() - t0, 2), "rows": rows}


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def reference_ratio(record: dict, profile) -> dict:
    """The load's speed over the profile's at the reference points. `record`: reference.json ({"before":
    {"rows"}, "after": {"rows"}}); `profile`: a sim.step_profile.StepProfile. Returns {"ratio": geometric
    mean of mean(before, after) / profile (None without points), "after_over_before": the same for after /
    before (the drift during the load), "points": per point before, after, profile ms and ratio}."""
    before = {_key(r): r["step_ms"] for r in record["before"]["rows"]}
    after = {_key(r): r["step_ms"] for r in record["after"]["rows"]}
    points = []
    for key, first in before.items():
        if key not in after:
            raise LabError(f"reference.json: point {list(key)} measured before the load but not after")
        profiled = float(profile.step_ms(*key))
        if not profiled > 0:
            raise LabError(f"reference.json: the profile's step at {list(key)} is {profiled} ms")
        points.append({"batch": key[0], "query_tokens": key[1], "context_len": key[2], "before_ms": first,
                       "after_ms": after[key], "profile_ms": round(profiled, 3),
                       "ratio": round((first + after[key]) / 2 / profiled, 4)})
    if not points:
        return {"ratio": None, "after_over_before": None, "points": []}
    return {"ratio": round(_geomean(p["ratio"] for p in points), 4),
            "after_over_before": round(_geomean(p["after_ms"] / p["before_ms"] for p in points), 4),
            "points": points}


def _key(row: dict) -> tuple[int, int, int]:
    return int(row["batch"]), int(row["query_tokens"]), int(row["context_len"])


def _geomean(values) -> float:
    logs = [math.log(v) for v in values]
    return math.exp(sum(logs) / len(logs))


def scaled_profile(profile_csv: Path, ratio: float, out_dir: Path) -> Path:
    """The profile at profile_csv with step_ms and step_ms_p90 multiplied by `ratio`, written (CSV + JSON,
    the meta saying so) into out_dir; returns the CSV path."""
    from sim.step_profile import read_profile, write_profile

    profile = read_profile(profile_csv)
    frame = profile.frame()
    frame["step_ms"] = frame["step_ms"] * ratio
    frame["step_ms_p90"] = frame["step_ms_p90"] * ratio
    meta = {**profile.meta, "drift_scale": ratio, "scaled_from": str(profile_csv)}
    return write_profile(out_dir, frame, meta)
