"""The evaluate stage: every drafter x every dataset x every temperature, against plain decoding.

    lab run experiments/smoke.yaml --stages evaluate

For each (dataset, temperature) and each prompt, the target first decodes autoregressively (the
baseline and, under greedy, the reference output), then each drafter spec-decodes the same prompt, so
that timings are taken side by side. Writes, inside the run directory:
  traces/rounds__<drafter>__<dataset>__T<t>.parquet    one row per verify round (lab/trace.py)
  traces/anchors__<drafter>__<dataset>__T0.parquet     greedy only: a draft at every output position
  decode/<dataset>__T<t>.parquet                       per prompt and method: tokens, timings, identity,
                                                       the prompt text and each emitted token's text
  tau.csv                                              tau, speedup and identity per group
  evaluate.json                                        prompts decoded / available per group, the budget
A (dataset, temperature) whose files exist is skipped, so an interrupted run resumes. With
decode.time_budget_s each group still to decode gets an equal share of the budget left, and stops before
a prompt its own measured pace says would overrun that share (the first prompt always runs): on a slow CPU
the quickstart decodes fewer prompts instead of running for half an hour, and says so.
"""
from __future__ import annotations

import hashlib
import json
import time

import pandas as pd
from tqdm import tqdm

from lab.config import RANDOM_INIT_NOTE
from lab.io import atomic_path, write_json_atomic, write_text_atomic
from lab.metrics import flag_unexplained_speedups, tau
from lab.runs import RunContext
from lab.trace import StepRecord, read_traces, shard_name, write_shard
from real.anchors import anchor_steps
from real.decode import DecodeResult, StepInfo, autoregressive_decode, speculative_decode
from real.drafters import build_drafter
from real.plots import plot_positions
from real.prompts import encode_prompt, load_prompt_sets
from real.rng import device_generator
from real.targets import load_run_target, require_context
from real.verify import GREEDY_EPS

AR_METHOD = "ar"


def stable_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def to_records(steps: list[StepInfo], table: str, run_id: str, method: str, target: str, dataset: str,
               prompt_id: str, temperature: float) -> list[StepRecord]:
    return [StepRecord(run_id=run_id, method=method, target=target, dataset=dataset, prompt_id=prompt_id,
                       table=table, temperature=temperature, step=i if table == "rounds" else s.context_len,
                       context_len=s.context_len, k=s.k, accepted=s.accepted, accept_prob=s.accept_prob,
                       confidence=s.confidence, draft_ms=s.draft_ms, verify_ms=s.verify_ms)
            for i, s in enumerate(steps)]


def decode_row(method: str, prompt_id: str, result: DecodeResult, reference: list[int] | None,
               prompt_text: str, tokenizer) -> dict:
    """One decode/*.parquet row. prompt and token_text (each emitted token decoded on its own) let the
    dashboard's prompt viewer show the text with the accepted draft spans of each round marked."""
    return {"method": method, "prompt_id": prompt_id, "prompt": prompt_text,
            "tokens": result.tokens, "token_text": tokenizer.batch_decode([[t] for t in result.tokens]),
            "n_tokens": len(result.tokens),
            "prefill_ms": result.prefill_ms, "decode_ms": result.decode_ms, "wall_ms": result.wall_ms,
            "rounds": len(result.steps),
            "identical_to_ar": None if reference is None else result.tokens == reference}


def warm_up(target, drafters, prompt_ids: list[int], temperature: float, seed: int) -> None:
    """Run every timed path once -- plain decoding and each drafter, at this temperature -- so that no
    measured request pays for first-call costs (kernel selection, allocator growth, lazy init, CUDA
    graphs' capture). Unwarmed, plain decoding measured 69 ms/token at T=0 against 26.6 at T=1 on one
    H200, which made impossible speedups."""
    prompt_ids = prompt_ids[:32]
    autoregressive_decode(target, prompt_ids, 8, temperature, device_generator(target.device, seed), False)
    for drafter in drafters:
        speculative_decode(target, drafter, prompt_ids, 2 * drafter.block_size + 2, temperature,
                           device_generator(target.device, seed), False)


def group_deadline(stage_start: float, budget_s: float | None, groups_left: int) -> float | None:
    """time.monotonic() by which the next group should finish: an equal share of the budget left."""
    if budget_s is None:
        return None
    left = max(0.0, budget_s - (time.monotonic() - stage_start))
    return time.monotonic() + left / max(1, groups_left)


def evaluate_group(ctx: RunContext, target, drafters, dataset: str, prompts, encoded, temperature: float,
                   deadline: float | None = None) -> int:
    """Decode one dataset at one temperature with the baseline and every drafter; write its files.
    deadline (time.monotonic()): stop before a prompt that the mean pace so far says would end past it
    (the first prompt always runs). Returns the number of prompts decoded."""
    cfg = ctx.cfg
    greedy = temperature < GREEDY_EPS
    run_id, max_new = ctx.run_id, cfg.decode.max_new_tokens
    rounds = {d.name: [] for d in drafters}
    anchors = {d.name: [] for d in drafters}
    rows = []
    desc = f"{dataset} T={temperature:g}"
    started, decoded = time.monotonic(), 0
    for prompt, prompt_ids in tqdm(list(zip(prompts, encoded)), desc=desc, disable=not ctx.show_progress):
        pace = (time.monotonic() - started) / decoded if decoded else 0.0
        if deadline is not None and decoded and time.monotonic() + pace > deadline:
            break  # decode.time_budget_s: the next prompt would overrun this group's share
        decoded += 1
        seed = stable_seed(cfg.seed, dataset, temperature, prompt.prompt_id)
        reference = None
        if cfg.decode.baseline or greedy:
            gen = device_generator(target.device, seed)
            base = autoregressive_decode(target, prompt_ids, max_new, temperature, gen, cfg.decode.stop_at_eos)
            rows.append(decode_row(AR_METHOD, prompt.prompt_id, base, None, prompt.turns[0], target.tokenizer))
            reference = base.tokens if greedy else None
        for drafter in drafters:
            gen = device_generator(target.device, seed)
            result = speculative_decode(target, drafter, prompt_ids, max_new, temperature, gen,
                                        cfg.decode.stop_at_eos)
            rows.append(decode_row(drafter.name, prompt.prompt_id, result, reference, prompt.turns[0],
                                   target.tokenizer))
            rounds[drafter.name] += to_records(result.steps, "rounds", run_id, drafter.name, target.name,
                                               dataset, prompt.prompt_id, temperature)
            if greedy and cfg.decode.anchors:
                steps = anchor_steps(target, drafter, prompt_ids, reference)
                anchors[drafter.name] += to_records(steps, "anchors", run_id, drafter.name, target.name,
                                                    dataset, prompt.prompt_id, temperature)
    for drafter in drafters:
        write_shard(rounds[drafter.name], ctx.path("traces", shard_name(drafter.name, dataset, "rounds", temperature)))
        if anchors[drafter.name]:
            write_shard(anchors[drafter.name],
                        ctx.path("traces", shard_name(drafter.name, dataset, "anchors", temperature)))
    frame = pd.DataFrame(rows)
    frame.insert(0, "dataset", dataset)
    frame.insert(1, "temperature", temperature)
    with atomic_path(decode_path(ctx, dataset, temperature)) as tmp:
        frame.to_parquet(tmp)
    return decoded


def decode_path(ctx: RunContext, dataset: str, temperature: float):
    return ctx.path("decode", f"{dataset}__T{temperature:g}.parquet")


def summarize(ctx: RunContext) -> pd.DataFrame:
    """tau, speedup vs autoregressive decoding (tokens/s ratio, same prompts) and greedy identity, plus
    where the time goes: draft and verify ms per round, the baseline's ms per token, and the tau at which
    this drafter's rounds would break even with plain decoding (tau_break_even = round ms / AR ms per token;
    speedup ~ tau / tau_break_even, prefill aside)."""
    decode = pd.concat([pd.read_parquet(p) for p in sorted(ctx.path("decode").glob("*.parquet"))],
                       ignore_index=True)
    traces = read_traces(ctx.path("traces"))
    rounds = traces[traces["table"] == "rounds"]
    rows = []
    for (dataset, temperature), group in decode.groupby(["dataset", "temperature"]):
        base = group[group["method"] == AR_METHOD]
        base_tps = base["n_tokens"].sum() / base["wall_ms"].sum() * 1000.0 if len(base) else float("nan")
        steps_after_prefill = (base["n_tokens"] - 1).clip(lower=0).sum()
        ar_ms = base["decode_ms"].sum() / steps_after_prefill if steps_after_prefill else float("nan")
        for method, runs in group[group["method"] != AR_METHOD].groupby("method"):
            tps = runs["n_tokens"].sum() / runs["wall_ms"].sum() * 1000.0
            sel = rounds[(rounds["method"] == method) & (rounds["dataset"] == dataset)
                         & (rounds["temperature"] == temperature)]
            identical = runs["identical_to_ar"].dropna()
            draft_ms = float(sel["draft_ms"].mean()) if len(sel) else float("nan")
            verify_ms = float(sel["verify_ms"].mean()) if len(sel) else float("nan")
            rows.append({"method": method, "dataset": dataset, "temperature": temperature, "tau": tau(sel),
                         "rounds": len(sel), "prompts": len(runs), "tokens_per_s": tps,
                         "ar_tokens_per_s": base_tps, "speedup": tps / base_tps,
                         "identical_to_ar": float(identical.mean()) if len(identical) else float("nan"),
                         "draft_ms": draft_ms, "verify_ms": verify_ms, "ar_ms_per_token": ar_ms,
                         "tau_break_even": (draft_ms + verify_ms) / ar_ms})
    frame = flag_unexplained_speedups(pd.DataFrame(rows))
    if ctx.cfg.target.init == "random":  # a weights-free sizing target: its drafts match nothing real
        frame["note"] = RANDOM_INIT_NOTE
    return frame


def run_stage(ctx: RunContext) -> None:
    cfg = ctx.cfg
    cfg.require_real_inputs("evaluate")
    target = load_run_target(ctx)
    require_context(target, cfg.prompts.max_prompt_tokens + cfg.decode.max_new_tokens,
                    "prompts.max_prompt_tokens + decode.max_new_tokens")
    prompt_sets = load_prompt_sets(cfg.prompts)
    drafters = [build_drafter(spec, target, ctx.path("drafters", spec.name)) for spec in cfg.drafters]
    warmed: set[float] = set()
    groups = [(dataset, temperature) for dataset in prompt_sets for temperature in cfg.decode.temperatures
              if not decode_path(ctx, dataset, temperature).exists() or "evaluate" in ctx.forced]
    counts = read_counts(ctx)  # groups decoded by an earlier, interrupted invocation keep their counts
    encoded_sets: dict[str, list[list[int]]] = {}  # one encoding per dataset, shared by its temperatures
    stage_start = time.monotonic()
    for i, (dataset, temperature) in enumerate(groups):
        prompts = prompt_sets[dataset]
        if dataset not in encoded_sets:
            encoded_sets[dataset] = [encode_prompt(target.tokenizer, p, cfg.prompts.chat_template,
                                                   cfg.prompts.max_prompt_tokens) for p in prompts]
        encoded = encoded_sets[dataset]
        if temperature not in warmed:
            warm_up(target, drafters, encoded[0], temperature, cfg.seed)
            warmed.add(temperature)
        deadline = group_deadline(stage_start, cfg.decode.time_budget_s, len(groups) - i)
        decoded = evaluate_group(ctx, target, drafters, dataset, prompts, encoded, temperature, deadline)
        counts[f"{dataset}__T{temperature:g}"] = {"dataset": dataset, "temperature": temperature,
                                                  "prompts": decoded, "available": len(prompts)}
        write_counts(ctx, counts)
    summary = summarize(ctx)
    write_text_atomic(ctx.path("tau.csv"), summary.to_csv(index=False))
    plot_positions(ctx.root)
    ctx.mark_done("evaluate", {"groups": len(summary), "prompts": sum(c["prompts"] for c in counts.values()),
                               "prompts_available": sum(c["available"] for c in counts.values())})


COUNTS_FILE = "evaluate.json"


def read_counts(ctx: RunContext) -> dict:
    path = ctx.path(COUNTS_FILE)
    return json.loads(path.read_text())["groups"] if path.exists() else {}


def write_counts(ctx: RunContext, counts: dict) -> None:
    """evaluate.json: {"time_budget_s", "groups": {"<dataset>__T<t>": {dataset, temperature, prompts,
    available}}} -- what REPORT.md quotes when a budget cut a group short."""
    write_json_atomic(ctx.path(COUNTS_FILE), {"time_budget_s": ctx.cfg.decode.time_budget_s, "groups": counts})
