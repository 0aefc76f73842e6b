"""Step times of a running engine from controlled batches, in the shared step-profile format.

    rows = measure_step_profile(base_url, spec, RandomTokens(vocab_size))
    sim.step_profile.write_profile(run_dir / "engine", rows, meta)      # step_profile.csv + .json

For every point of the grid batch x query_tokens x context_len (lab.config_engine.StepProfileSpec):
- query_tokens == 1 (decode): `batch` requests with distinct prompts of `context_len` tokens (at least 1)
  start together and each asks for output_tokens with ignore_eos; the engine then runs decode steps of the
  whole batch, so the gaps between streamed chunks are its step times (the first gap of each request is
  dropped: other requests may still be in prefill). step_ms = median gap, step_ms_p90 = 90th percentile.
  Only if the chunks reached the client as the steps ran: a loaded API server delivered a whole batch's
  60 chunks within 0.5 ms. So vLLM's step count is read around each batch, and a batch whose chunks show
  other than that many steps (real.engine.steps.steps_agree) is sent again, up to DECODE_TRIES in all
  (`decode_checks`: the batches sent again per point; the stage keeps them in step_profile.json as
  decode_resent). Where every try's chunks disagree the last is kept and logged; an engine that counts no
  steps is not checked.
- query_tokens > 1 (prefill): each of the `batch` requests first sends its own `context_len`-token prefix
  (one token out, so the prefix sits in the engine's prefix cache), then all send prefix + `query_tokens`
  new tokens together with max_tokens 1, and the time to the first token is one step that prefills
  batch x query_tokens tokens over context_len cached tokens each. step_ms = median over requests and
  repeats. One step only if the engine sees the whole batch at once: an idle vLLM steps as soon as the
  first request arrives and takes the rest, arrived milliseconds later, in the next step (4 x 64 here: the
  first request at 0.41 s, the other three at 1.36 s, two steps; session 16). So a batch > 1 is gated: a
  blocker request (one token out) is sent first, the batch GATE_S later, while the blocker's prefill step
  runs; the batch waits in the engine's queue and is scheduled as one step when the blocker's ends. The
  whole batch must be in the engine's queue before the blocker's step ends. Every 16-request batch ran as
  blocker + 2 steps in sessions 16 and 17 (never a 4-request one): the client had 16 connections, so the
  batch's last request waited for the blocker's to close; the client now holds one for the blocker besides
  the batch's (gated_connections). And vLLM's API server hands requests to the engine one by one, so the
  blocker's step must outlast that: its prompt grows with the batch (blocker_tokens:
  BLOCKER_TOKENS_PER_REQUEST per request, at least BLOCKER_TOKENS) and doubles on every retry, capped at
  max_prompt_tokens (one step's token budget, the model length less one).
  A request's sample is then its first token's time minus the later of its send and the blocker's first
  token (the step from when the engine could start it); vLLM's own step count (vllm:iteration_tokens_total,
  two steps: blocker and batch) is checked and the point retried, up to GATE_TRIES times, when it differs, or
  when the samples say part of the batch ran inside the blocker's step (rode_with_blocker: also two steps).
  A retry also shortens the gate to a quarter of the last blocker's step where that is under GATE_S (gate_s:
  a GPU's blocker prefill takes milliseconds, and a batch sent 0.1 s later would reach an idle engine).
On a speculative server (speculative_k > 0) a decode point's requests also verify drafts where the proposer
matches, so its decode rows come from its reconstructed steps and the draft tokens they verified, solved as
the simulator prices them (real/engine/spec_rows.py); its prefill points (one token out) draft nothing.
Every number includes what the HTTP front end adds to a step (as the load generator sees it).
A prefill point over a cached prefix is only that if the prefix was found in the engine's prefix cache: the
engine's own counters (vllm:prefix_cache_hits / _queries, in tokens) are read around the measured batch;
a point that hit less than PREFIX_HIT_MIN of its prefix tokens is primed and measured again (once), and
every such point's hit fraction is returned in `prefix_checks` (the stage records them in the profile's
meta), so a profile whose prefill rows paid for their prefix says so.
"""
from __future__ import annotations

import asyncio
import math
import statistics

import numpy as np
import pandas as pd
from tqdm import tqdm

from real.engine.loadgen import PlannedRequest, StreamRecord, stream_completion
from real.engine.metrics import engine_steps, prefix_cache_tokens


def _client(connections: int):
    """The profilers' HTTP client: `connections` requests in flight, a 300 s read timeout, no proxies."""
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0, connect=10.0), trust_env=False)


def send_batch(base_url: str, model: str, prompts: list[list[int]], max_tokens: int) -> list[StreamRecord]:
    """Send the prompts together (streaming) and wait for all of them; LabError if one fails."""
    async def run():
        async with _client(len(prompts)) as client:
            return await _batch(client, base_url, model, prompts, max_tokens)
    return asyncio.run(run())


def _row(batch: int, query: int, context: int, samples: list[float]) -> dict:
    """One profile row: the median and p90 of a point's samples (ms); LabError where there are none."""
    if not samples:
        from lab.errors import LabError

        raise LabError(f"engine step profile: no samples at batch {batch} x {query} tokens over {context}")
    return {"batch": batch, "query_tokens": query, "context_len": context, "step_ms": statistics.median(samples),
            "step_ms_p90": float(np.percentile(samples, 90)), "repeats": len(samples)}


DECODE_TRIES = 4  # a decode batch whose chunks hide the engine's steps is sent this many times at most


async def _decode_gaps(client, base_url, model, tokens, rng, batch: int, context: int, output_tokens: int,
                       any_chunk: bool = False) -> tuple[list[float], int, bool]:
    """`batch` requests of `context`-token prompts decoding together: their step gaps (decode_gaps_ms), the
    batches sent again, and whether the kept batch's chunks showed the engine's steps. vLLM's step count is
    read around the batch; where the steps the chunks show disagree with it (real.engine.steps.steps_agree:
    the API server delivered them bunched, so the gaps are short), the batch is sent again with new prompts,
    up to DECODE_TRIES in all, the last kept (logged) where every try disagrees. An engine that counts no
    steps: one batch, as sent."""
    from real.engine.steps import chunk_steps, steps_agree

    for attempt in range(DECODE_TRIES):
        prompts = [tokens.take(max(context, 1), rng) for _ in range(batch)]
        steps_before = await asyncio.to_thread(engine_steps, base_url)
        records = await _batch(client, base_url, model, prompts, output_tokens)
        counted = await asyncio.to_thread(engine_steps, base_url) - steps_before  # nan: not exported
        shown = 0 if math.isnan(counted) else len(chunk_steps(records, counted))
        if steps_agree(shown, counted):
            return decode_gaps_ms(records, any_chunk), attempt, True
    from real.embedded import log

    log(f"engine step profile: a decode batch of {batch} x {context} tokens ran {counted:.0f} engine steps but its "
        f"chunks showed {shown} (delivered bunched) in each of {DECODE_TRIES} tries; the last try's gaps are kept "
        "and may understate the step")
    return decode_gaps_ms(records, any_chunk), DECODE_TRIES - 1, False


async def _batch(client, base_url, model, prompts: list[list[int]], max_tokens: int,
                 t0: float | None = None) -> list[StreamRecord]:
    """Send the prompts together and wait for all; times in the records are seconds since t0 (default now)."""
    import time

    now = time.perf_counter()
    t0 = now if t0 is None else t0
    records = [StreamRecord(f"p{i}", len(p), now - t0) for i, p in enumerate(prompts)]
    await asyncio.gather(*(stream_completion(client, base_url, model, PlannedRequest(r.request_id, 0.0, p, max_tokens),
                                             t0, r) for r, p in zip(records, prompts)))
    failed = [r.error for r in records if r.error]
    if failed:
        from lab.errors import LabError

        raise LabError(f"engine step profile: a request failed: {failed[0]}")
    return records


def decode_gaps_ms(records: list[StreamRecord], any_chunk: bool = False) -> list[float]:
    """Inter-chunk gaps (ms) of one-token chunks (any_chunk: of every chunk, as a speculative server
    streams 1 + accepted tokens per step), each request's first gap dropped."""
    gaps = []
    for r in records:
        times, counts = np.asarray(r.chunk_s), np.asarray(r.chunk_tokens)
        keep = np.diff(counts) >= 1 if any_chunk else np.diff(counts) == 1
        gaps.extend((np.diff(times)[keep][1:] * 1000).tolist())
    return gaps


async def measure_spec_async(base_url: str, spec, tokens, drafts: int, model: str = "target", seed: int = 0,
                             show_progress: bool = True) -> list[dict]:
    """Decode steps of a speculative server: `batch` requests of `context_len`-token prompts (the load's
    kind of text, so the drafter matches as often as under load), every streamed chunk's gap a step. Rows
    in the shared format with query_tokens = 1 + drafts (a verify step; steps with no draft included, as
    under load). Each batch is checked against the engine's step count as a plain decode point's (_decode_gaps)."""
    rng = np.random.default_rng(seed)
    points = [(b, c) for b in spec.batches for c in spec.context_lens]
    rows = []
    async with _client(max(spec.batches)) as client:
        for b, c in tqdm(points, desc="speculative step profile", unit="point", disable=not show_progress):
            samples: list[float] = []
            for _ in range(spec.repeats):
                samples += (await _decode_gaps(client, base_url, model, tokens, rng, b, c, spec.output_tokens,
                                               any_chunk=True))[0]
            if not samples:
                from lab.errors import LabError

                raise LabError(f"speculative step profile: no decode gaps at batch {b}, context {c}")
            rows.append(_row(b, 1 + drafts, c, samples))
    return rows


def measure_spec_profile(base_url: str, spec, tokens, drafts: int, model: str = "target", seed: int = 0,
                         show_progress: bool = True) -> list[dict]:
    return asyncio.run(measure_spec_async(base_url, spec, tokens, drafts, model, seed, show_progress))


PREFIX_HIT_MIN = 0.8
# a speculative server's decode point: its requests accept drafts and finish in fewer steps (greedy output of
# random prompts repeats itself: 7-13 steps of 16 tokens x 2 batches here), so batches are sent again until
# the point holds this many steps, up to SPEC_DECODE_MAX_BATCHES x repeats batches
SPEC_DECODE_MIN_STEPS = 30
SPEC_DECODE_MAX_BATCHES = 4


BLOCKER_TOKENS = 128  # the gate's shortest prompt: its prefill step (~0.6 s here) outlasts sending 4 requests
BLOCKER_TOKENS_PER_REQUEST = 32  # ... and it grows with the batch (16 requests: 512 tokens)
GATE_S = 0.1  # the batch is sent this long after the blocker (whose step has begun by then) ...
GATE_FRACTION = 0.25  # ... or on a retry, where the last blocker's step was short (a GPU), this part of it
GATE_TRIES = 3


def gate_s(last_blocker_s: float | None, growth: float) -> float:
    """How long after the blocker the batch is sent: GATE_S, or on a retry GATE_FRACTION of the last blocker's
    time to first token times the blocker's growth since, where that is shorter. On this CPU a blocker's
    step is 0.6 s or more and the gate stays 0.1 s; on a GPU a 128-1024-token blocker's prefill takes 10-50 ms,
    so a batch sent 0.1 s later reaches an idle engine and can split."""
    if last_blocker_s is None:
        return GATE_S
    return min(GATE_S, GATE_FRACTION * last_blocker_s * growth)


def gated_connections(batch: int) -> int:
    """HTTP connections a profiler needs for a gated batch: the batch's and the blocker's. With one fewer,
    the batch's last request waited in the client's pool until the blocker's reply ended, so it reached
    the engine after the blocker's step: every 16-request batch ran as 3 steps (sessions 16 and 17, a
    16-connection client), never a 4-request one."""
    return batch + 1


def one_step_prompt_tokens(engine) -> int:
    """The longest prompt an engine section's server prefills in one step (one token out): its token budget
    per step, and the model length less that token."""
    return min(engine.max_num_batched_tokens, engine.max_model_len - 1)


def blocker_tokens(batch: int, attempt: int, max_prompt_tokens: int | None = None) -> int:
    """The gate's prompt length for a batch of `batch` requests at try `attempt` (0, 1, ...): it grows with
    the batch and doubles on every retry, capped at max_prompt_tokens (None: no cap)."""
    size = max(BLOCKER_TOKENS, BLOCKER_TOKENS_PER_REQUEST * batch) * 2 ** attempt
    return size if max_prompt_tokens is None else max(1, min(size, max_prompt_tokens))


async def _prefill_samples(client, base_url, model, prompts, tokens, rng,
                           max_prompt_tokens: int | None = None) -> list[float]:
    """ms per request of one prefill step of all the prompts (one token out each): time to first token for
    one prompt; several are gated behind a blocker so that they reach the engine as one step (module
    docstring)."""
    import time

    if len(prompts) == 1:
        records = await _batch(client, base_url, model, prompts, 1)
        return [r.chunk_s[0] * 1000 - r.sent_s * 1000 for r in records]
    last_blocker_s, last_tokens = None, 1
    for attempt in range(GATE_TRIES):
        steps_before = await asyncio.to_thread(engine_steps, base_url)
        t0 = time.perf_counter()
        gate = tokens.take(blocker_tokens(len(prompts), attempt, max_prompt_tokens), rng)
        blocker = asyncio.create_task(_batch(client, base_url, model, [gate], 1, t0))
        await asyncio.sleep(gate_s(last_blocker_s, len(gate) / last_tokens))
        records = await _batch(client, base_url, model, prompts, 1, t0)
        last_tokens = len(gate)
        (gate,) = await blocker
        last_blocker_s = gate.chunk_s[0] - gate.sent_s
        steps = await asyncio.to_thread(engine_steps, base_url) - steps_before
        samples = [(r.chunk_s[0] - max(r.sent_s, gate.chunk_s[0])) * 1000 for r in records]
        # blocker and batch (or an engine that does not count its steps), and no request inside the blocker's
        if (steps == 2 or math.isnan(steps)) and not rode_with_blocker(samples):
            break
    else:
        from real.embedded import log

        log(f"engine step profile: a gated batch of {len(prompts)} x {len(prompts[0])} tokens ran as {steps:.0f} "
            f"engine steps (blocker + batch = 2; samples {min(samples):.0f}-{max(samples):.0f} ms) in each of "
            f"{GATE_TRIES} tries (blockers of {blocker_tokens(len(prompts), 0, max_prompt_tokens)}-{len(gate)} "
            "tokens); its samples span those steps")
    return samples


ONE_STEP_SPREAD = 0.5  # a batch that ran as one step: its shortest sample is at least this x its longest


def rode_with_blocker(samples: list[float]) -> bool:
    """True where some of a gated batch ran inside the blocker's step, which vLLM's step count cannot tell from
    blocker + batch (blocker + 3 requests, then the 4th, is 2 steps too): those requests' first tokens came with
    the blocker's, so their samples are near 0 beside the others' whole step (fid-s19: one round measured 4 x 64
    @ 256 as 151 ms where the other two measured 1,292 and 1,304). One step for all makes the samples alike."""
    return len(samples) > 1 and min(samples) < ONE_STEP_SPREAD * max(samples)


async def _prefill_over_prefix(client, base_url, model, prefixes, prompts, tokens, rng,
                               max_prompt_tokens: int | None = None) -> tuple[list[float], float]:
    """Prime the prefixes, then time the prompts (_prefill_samples); retried once when the prefix cache
    missed. Returns the samples and the fraction of prefix tokens the cache served (nan where the engine
    exports no counter)."""
    wanted = float(sum(len(p) for p in prefixes))
    hit_fraction = float("nan")
    for _attempt in range(2):
        await _batch(client, base_url, model, prefixes, 1)
        hits_before, _ = await asyncio.to_thread(prefix_cache_tokens, base_url)
        samples = await _prefill_samples(client, base_url, model, prompts, tokens, rng, max_prompt_tokens)
        hits_after, _ = await asyncio.to_thread(prefix_cache_tokens, base_url)
        hit_fraction = (hits_after - hits_before) / wanted
        if not hit_fraction < PREFIX_HIT_MIN:  # also nan: nothing to check against
            break
    return samples, hit_fraction


async def point_samples(client, base_url: str, model: str, tokens, rng, point: tuple[int, int, int],
                        output_tokens: int, repeats: int, prefix_checks: list | None = None,
                        max_prompt_tokens: int | None = None, decode_checks: list | None = None) -> list[float]:
    """The samples (ms) of one grid point (batch, query_tokens, context_len), measured as the module
    docstring says: decode gaps for query_tokens 1, time to first token of a prefill otherwise.
    max_prompt_tokens: the longest prompt the engine takes in one step (caps a gated batch's blocker).
    decode_checks: a decode point appends {batch, context_len, resent (batches sent again: their chunks hid
    the engine's steps), unseen (batches kept although every try's did)}."""
    b, q, c = point
    samples: list[float] = []
    resent = unseen = 0
    for _ in range(repeats):
        if q == 1:
            gaps, again, seen = await _decode_gaps(client, base_url, model, tokens, rng, b, c, output_tokens)
            samples += gaps
            resent, unseen = resent + again, unseen + (not seen)
        else:
            prefixes = [tokens.take(c, rng) for _ in range(b)]
            prompts = [p + tokens.take(q, rng) for p in prefixes]
            if c:
                point_ms, hit = await _prefill_over_prefix(client, base_url, model, prefixes, prompts, tokens, rng,
                                                           max_prompt_tokens)
                if prefix_checks is not None:
                    prefix_checks.append({"batch": b, "query_tokens": q, "context_len": c,
                                          "prefix_hit_fraction": round(hit, 4)})
            else:
                point_ms = await _prefill_samples(client, base_url, model, prompts, tokens, rng, max_prompt_tokens)
            samples += point_ms
    if q == 1 and decode_checks is not None:
        decode_checks.append({"batch": b, "context_len": c, "resent": resent, "unseen": unseen})
    return samples


async def measure_async(base_url: str, spec, tokens, model: str = "target", seed: int = 0,
                        show_progress: bool = True, prefix_checks: list | None = None,
                        max_prompt_tokens: int | None = None, speculative_k: int = 0,
                        spec_steps_out: list | None = None, decode_checks: list | None = None) -> list[dict]:
    """The grid's rows in grid order. speculative_k > 0 (a server that drafts up to k tokens): its decode
    rows come from its steps and the drafts they verified (real.engine.spec_rows), not from gaps; those steps
    (batch, context_len, step_ms, rows) are appended to spec_steps_out where given. A plain server's decode
    points append their batches sent again to decode_checks (point_samples)."""
    from real.engine.spec_rows import decode_point_steps, decode_rows

    rng = np.random.default_rng(seed)
    points = [(b, q, c) for b in spec.batches for q in spec.query_tokens for c in spec.context_lens]
    rows: list[dict | None] = []
    spec_steps: dict[tuple[int, int], pd.DataFrame] = {}
    async with _client(gated_connections(max(spec.batches))) as client:
        await _batch(client, base_url, model, [tokens.take(16, rng)], 4)  # warm-up
        for point in tqdm(points, desc="engine step profile", unit="point", disable=not show_progress):
            b, q, c = point
            if speculative_k and q == 1:
                frames: list[pd.DataFrame] = []
                while len(frames) < spec.repeats or (sum(map(len, frames)) < SPEC_DECODE_MIN_STEPS
                                                     and len(frames) < SPEC_DECODE_MAX_BATCHES * spec.repeats):
                    frames.append(await decode_point_steps(client, base_url, model,
                                                           [tokens.take(max(c, 1), rng) for _ in range(b)],
                                                           spec.output_tokens, speculative_k))
                spec_steps[(b, c)] = pd.concat(frames, ignore_index=True)
                bunched = sum(bool(f.attrs.get("bunched")) for f in frames)
                if bunched:
                    from real.embedded import log

                    log(f"engine step profile: speculative decode point {b} x {c} tokens: {bunched} of {len(frames)} "
                        "batches dropped (their chunks arrived bunched and hid the engine's steps)")
                if spec_steps_out is not None:
                    spec_steps_out.append(spec_steps[(b, c)].assign(batch=b, context_len=c))
                rows.append(None)  # filled below, once every decode point of its context is in
                continue
            samples = await point_samples(client, base_url, model, tokens, rng, point, spec.output_tokens,
                                          spec.repeats, prefix_checks, max_prompt_tokens, decode_checks)
            rows.append(_row(*point, samples))
    if spec_steps:
        solved = decode_rows(spec_steps, list(spec.batches))
        for i, (b, q, c) in enumerate(points):
            if rows[i] is None:
                step_ms, p90, n = solved[(b, c)]
                rows[i] = {"batch": b, "query_tokens": q, "context_len": c, "step_ms": step_ms, "step_ms_p90": p90,
                           "repeats": n}
    return rows


def measure_step_profile(base_url: str, spec, tokens, model: str = "target", seed: int = 0,
                         show_progress: bool = True, prefix_checks: list | None = None,
                         max_prompt_tokens: int | None = None, speculative_k: int = 0,
                         spec_steps_out: list | None = None, decode_checks: list | None = None) -> list[dict]:
    return asyncio.run(measure_async(base_url, spec, tokens, model, seed, show_progress, prefix_checks,
                                     max_prompt_tokens, speculative_k, spec_steps_out, decode_checks))
