"""A speculative server's decode rows of the step profile, from its own steps with the drafts they verified.

    steps = await decode_point_steps(client, base_url, model, prompts, output_tokens, k)   # one decode point
    values = decode_rows({(b, c): steps_bc, ...}, batches=[1, 4, 16])     # {(b, c): (step_ms, p90, steps)}

A profile's decode row (batch b, query_tokens 1, context c) is the step time of b requests decoding one token
each. On a server that speculates, b requests decoding together also verify drafts where its proposer finds
one (vLLM's n-gram proposer matched in 22% of request-steps of random-token prompts here: greedy output of a
base model on gibberish repeats itself), so their step gaps are not that row: at 16 x 256 the gaps' median was
225 ms where the server without speculation took 158. The server's own decode rows are recovered as the
simulator reads them: it prices a step of n decoding requests that verify d draft tokens as the profile's
decode row at batch n + d (sim/cost.py: a draft token is one more decoding request's token), interpolated
along the batch axis and extended above it. So each measured step s, of n_s requests and d_s draft tokens,
gives t_s ~ sum_j W(n_s + d_s)_j v_j, linear in the rows v_j of the batch grid (sim.step_profile.axis_weights),
and the rows are the least-absolute-error solution over every step of one context's decode points (a point
whose steps verified nothing gets the median of its steps, as the plain profile does). d_s comes from the
steps reconstructed from the streamed chunks (real.engine.steps.chunk_steps: chunks closer than step_gap_s,
30 ms or less, are one step) and vLLM's spec-decode counters over the point (real.engine.steps.step_draft_tokens);
a batch whose steps disagree with vLLM's own count (real.engine.steps.steps_agree) is dropped.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd

IRLS_ITERATIONS = 200


async def decode_point_steps(client, base_url: str, model: str, prompts: list[list[int]], output_tokens: int,
                             k: int) -> pd.DataFrame:
    """The prompts decoding together on a speculative server: one row per engine step that only decoded (the
    first, right after the prefill, dropped as the plain profile drops each request's first gap; a request that
    accepted more drafts finishes earlier, so later steps hold fewer requests): step_ms and rows (requests in
    the step + draft tokens it verified). Empty, with attrs["bunched"], where the chunks hid the engine's steps
    (their count disagrees with vLLM's own: real.engine.steps.steps_agree)."""
    from real.engine import metrics
    from real.engine.step_profile import _batch
    from real.engine.steps import chunk_steps, step_draft_tokens, steps_agree

    before, steps_before = await asyncio.to_thread(metrics.spec_counters_and_steps, base_url)
    records = await _batch(client, base_url, model, prompts, output_tokens)
    after, steps_after = await asyncio.to_thread(metrics.spec_counters_and_steps, base_url)
    counted = steps_after - steps_before  # nan: not exported
    delta = metrics.counter_table(before, after)["delta"]
    steps = chunk_steps(records, counted)
    if not steps_agree(len(steps), counted):  # chunks came bunched: the client's clock cannot see the steps
        dropped = pd.DataFrame({"step_ms": [], "rows": []})
        dropped.attrs["bunched"] = True  # the caller counts and logs such batches
        return dropped
    drafted = step_draft_tokens(steps, k, float(delta.get("num_drafts", 0)), float(delta.get("num_draft_tokens", 0)))
    decode = (steps["kind"] == "decode").to_numpy()  # [steps]
    keep = decode & np.r_[False, decode[:-1]]  # a decode step after another: not the one right after prefill
    return pd.DataFrame({"step_ms": steps["vllm_s"].to_numpy()[keep] * 1000,
                         "rows": steps["decodes"].to_numpy()[keep] + drafted[keep]})


def decode_rows(points: dict[tuple[int, int], pd.DataFrame], batches: list[int]) -> dict[tuple[int, int], tuple]:
    """{(batch, context): (step_ms, step_ms_p90, steps)} for every decode point: per context, the grid rows that
    price the points' steps with least absolute error (module docstring); p90 over the point's steps with
    the other rows' share removed (t_s - (W_s v - v_b)). LabError where a point has no steps."""
    from lab.errors import LabError
    from sim.step_profile import axis_weights

    out = {}
    for context in sorted({c for _, c in points}):
        here = [b for b in batches if (b, context) in points]
        for b in here:
            if points[(b, context)].empty:
                raise LabError(f"engine step profile: no decode steps of {b} requests at context {context} "
                               "(every request finished within two steps of its prefill, or every batch's chunks "
                               "arrived bunched: see the log)")
        frames = [points[(b, context)].assign(point=i) for i, b in enumerate(here)]
        steps = pd.concat(frames, ignore_index=True)
        t = steps["step_ms"].to_numpy(float)  # [steps]
        weights = axis_weights(here, steps["rows"].to_numpy(float))  # [steps, len(here)]
        values = _least_absolute(weights, t, [float(np.median(f["step_ms"])) for f in frames])  # [len(here)]
        point = steps["point"].to_numpy()
        for i, b in enumerate(here):
            mine = point == i
            corrected = t[mine] - (weights[mine] @ values - values[i])
            # the fit's median can sit above most of one point's own corrected steps: the p90 is kept at
            # least that median, which sim.step_profile requires of every row
            p90 = max(float(np.percentile(corrected, 90)), float(values[i]))
            out[(b, context)] = (float(values[i]), p90, int(mine.sum()))
    return out


def _least_absolute(weights: np.ndarray, t: np.ndarray, start: list[float]) -> np.ndarray:
    """argmin_v sum |t - weights @ v| by iteratively reweighted least squares from `start`."""
    values = np.asarray(start, float)
    floor = 1e-6 * max(float(np.median(np.abs(t))), 1e-9)
    for _ in range(IRLS_ITERATIONS):
        w = 1.0 / np.maximum(np.abs(t - weights @ values), floor)  # [steps]
        lhs = weights.T @ (weights * w[:, None])
        updated = np.linalg.lstsq(lhs, weights.T @ (w * t), rcond=None)[0]
        if np.max(np.abs(updated - values)) < 1e-6 * max(float(np.max(np.abs(values))), 1.0):
            return updated
        values = updated
    return values
