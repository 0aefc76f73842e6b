"""The engine's steps reconstructed from its streamed chunks, each priced by the simulator's cost model.

    python -m real.engine.steps RUN_DIR [--variant nospec] [--load low] [--profile CSV] [--gap-ms 30]

Where the simulator's error against vLLM comes from, step by step, without running either again. A load's
chunks.parquet holds every streamed chunk (request, time, output tokens so far); the chunks of one engine
step reach the client within milliseconds of each other, and steps are >= 100 ms apart here, so chunk times
closer than --gap-ms are one step. A request's first chunk ends its prefill (the step that prefilled its
prompt: prompts fit one step's token budget in these loads); a later chunk is one decode step of it (1 +
accepted drafts tokens). Each step is then priced by sim/cost.py with the profile the fidelity stage uses,
at what the step held: its decoding requests (their KV: prompt + tokens so far) and the prompts it
prefilled; a speculative step's drafts are k for a request that accepted some, and for the others the
load's remaining drafts (vLLM's num_drafts) spread evenly, each draft of vLLM's mean length.
A step's measured time is the gap from the previous step's chunks; a step after an idle engine (prefills
only, nothing decoding) starts at its earliest request's arrival instead, so it holds what the profile's
prefill rows hold too (the HTTP front end's time to the first token).
Step kinds: decode (decoding requests only), mixed (decoding requests and prefills), prefill (prefills
only; `after idle` when nothing ran before it). Printed per variant x load: steps, vLLM s, simulator s,
sim / vLLM per kind, then per kind and axis for the steps the profile read outside its measured grid
(`kind | query_tokens above`: extrapolated; `below`: clamped; sim/profile_coverage.py) and inside / outside it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from lab.arguments import ArgumentParser
from lab.errors import LabError

GAP_S = 0.03


def engine_steps(requests: pd.DataFrame, chunks: pd.DataFrame, gap_s: float = GAP_S) -> pd.DataFrame:
    """One row per reconstructed step: t_s (its chunks' latest time), start_s, vllm_s (measured time),
    decodes (requests decoding in it), decode_kv (their KV before the step, summed), emitted (their tokens),
    accepting (decoding requests that emitted > 1 token), prefills, prefill_tokens, kind, merged (a request
    with two chunks inside one step: --gap-ms too wide)."""
    meta = requests.set_index("request_id")
    frame = chunks.sort_values(["t_s", "request_id"], kind="stable").reset_index(drop=True)
    frame["before"] = frame.groupby("request_id")["output_tokens"].shift(1)
    frame["emitted"] = frame["output_tokens"] - frame["before"].fillna(0)
    frame["step"] = np.cumsum(np.r_[True, np.diff(frame["t_s"].to_numpy()) > gap_s])
    rows = []
    last_t = None
    for _, part in frame.groupby("step", sort=True):
        first = part["before"].isna()
        prefills = part[first]
        decodes = part[~first]
        prompts = meta.loc[prefills["request_id"], "input_tokens"].to_numpy() if len(prefills) else np.zeros(0)
        kv = (meta.loc[decodes["request_id"], "input_tokens"].to_numpy() + decodes["before"].to_numpy() - 1
              if len(decodes) else np.zeros(0))
        t = float(part["t_s"].max())
        arrived = float(meta.loc[part["request_id"], "arrival_s"].min())
        idle = last_t is None or (not len(decodes) and arrived > last_t)
        start = arrived if idle else last_t
        kind = "mixed" if len(decodes) and len(prefills) else ("decode" if len(decodes) else
                                                               ("prefill after idle" if idle else "prefill"))
        rows.append({"t_s": t, "start_s": start, "vllm_s": t - start, "decodes": len(decodes),
                     "decode_kv": float(kv.sum()), "emitted": int(decodes["emitted"].sum()),
                     "accepting": int((decodes["emitted"] > 1).sum()), "prefills": len(prefills),
                     "prefill_tokens": int(prompts.sum()), "kind": kind,
                     "merged": int(part["request_id"].duplicated().sum())})
        last_t = t
    return pd.DataFrame(rows)


STEP_GAP_FRACTION = 0.3


def step_gap_s(records, counted: float = float("nan")) -> float:
    """Chunk times closer than this are one step: GAP_S (30 ms), or less where the server's steps are short
    (a GPU's decode step takes 10-30 ms): STEP_GAP_FRACTION of its mean step, the batch's span over the
    engine's own step count (vllm:iteration_tokens_total), or where it exports none, of the median gap
    between a request's chunks. The chunks of one step reach the client within a few ms (the API server emits
    them in one pass). records: real.engine.loadgen.StreamRecord of one batch; counted: the engine's own step
    count over it (nan: not exported)."""
    if counted > 0:
        span = max(r.chunk_s[-1] for r in records if r.chunk_s) - min(r.sent_s for r in records)
        return min(GAP_S, STEP_GAP_FRACTION * span / counted)
    gaps = np.concatenate([np.diff(r.chunk_s) for r in records if len(r.chunk_s) > 1] or [np.zeros(0)])
    return GAP_S if not len(gaps) else min(GAP_S, STEP_GAP_FRACTION * float(np.median(gaps)))


def chunk_steps(records, counted: float = float("nan")) -> pd.DataFrame:
    """The steps one batch's streamed chunks show (engine_steps, chunks closer than step_gap_s one step);
    counted: the engine's own step count over the batch (nan: not exported)."""
    from real.engine.loadgen import chunk_frame

    requests = pd.DataFrame([r.row() for r in records])
    return engine_steps(requests, chunk_frame(records), step_gap_s(records, counted))


STEP_COUNT_SLACK = 0.2


def steps_agree(reconstructed: int, counted: float) -> bool:
    """Whether the steps read from the chunks are the engine's (vllm:iteration_tokens_total over the batch),
    within 2 steps or STEP_COUNT_SLACK of them (a chunked prefill's first part streams nothing): a batch whose
    chunks reached the client in bursts (seen here: a whole batch's 60 chunks within 0.5 ms, with a helper's
    jobs on the box) merges steps, and is sent again (real.engine.step_profile: a plain server's decode
    batches, and a speculative one's decode points). True where the engine counts nothing."""
    if math.isnan(counted):  # nothing to check against
        return True
    return abs(reconstructed - counted) <= max(2.0, STEP_COUNT_SLACK * counted)


def step_draft_tokens(steps: pd.DataFrame, k: int, drafts: float, draft_tokens: float) -> np.ndarray:
    """Draft tokens each step verified, from vLLM's counters over all the steps (it counts drafts, not which
    step drafted): a decoding request that accepted drafts drafted once, the rest of the `drafts` are spread
    evenly over the other decoding rows, each draft of vLLM's mean length (draft_tokens / drafts). Zeros
    without speculation (k == 0)."""
    if not k:
        return np.zeros(len(steps))
    accepting = steps["accepting"].to_numpy(float)  # [steps]
    decodes = steps["decodes"].to_numpy(float)  # [steps]
    others = float((decodes - accepting).sum())
    share = float(np.clip((drafts - accepting.sum()) / others, 0.0, 1.0)) if others else 0.0
    per_draft = draft_tokens / drafts if drafts else float(k)
    return per_draft * (accepting + share * (decodes - accepting))


def step_shapes(steps: pd.DataFrame, k: int = 0, drafts: int = 0, draft_tokens: int = 0):
    """Per step, what CostModel.step_time takes: (tokens, kv_sum, n_reqs, spec, drafts), as cluster.Replica
    plans it; k > 0: a speculative load of vLLM's `drafts` drafts and `draft_tokens` draft tokens
    (step_draft_tokens)."""
    drafted = step_draft_tokens(steps, k, drafts, draft_tokens)  # [steps]
    for i, s in enumerate(steps.itertuples(index=False)):
        n_drafts = float(drafted[i])
        tokens = s.decodes + n_drafts + s.prefill_tokens
        kv_sum = s.decode_kv + s.decodes + s.prefill_tokens  # the sequences the step reads, as Replica.plan
        yield tokens, kv_sum, s.decodes + s.prefills, bool(k and s.decodes), n_drafts


def price_steps(steps: pd.DataFrame, cost, k: int = 0, drafts: int = 0, draft_tokens: int = 0) -> np.ndarray:
    """The simulator's time (s) of every step (sim/cost.py, as cluster.Replica prices its steps). k > 0: a
    speculative load of vLLM's `drafts` drafts and `draft_tokens` draft tokens (step_draft_tokens)."""
    return np.array([cost.step_time(tokens, kv_sum, n, spec, n_drafts)
                     for tokens, kv_sum, n, spec, n_drafts in step_shapes(steps, k, drafts, draft_tokens)], float)


def profile_reach(steps: pd.DataFrame, cost, k: int = 0, drafts: int = 0, draft_tokens: int = 0) -> pd.Series:
    """Per step, where the cost model's profile read it relative to the measured grid (sim/profile_coverage.py):
    'inside', or the axes it left, e.g. 'query_tokens above' or 'batch below, context_len above'."""
    from sim.profile_coverage import AXES

    axes = cost.profile.axes
    out = []
    for tokens, kv_sum, n, _spec, n_drafts in step_shapes(steps, k, drafts, draft_tokens):
        point = cost.profile_point(tokens, kv_sum, n, n_drafts)
        where = [f"{axis} {'below' if x < axis_values[0] else 'above'}"
                 for axis, x, axis_values in zip(AXES, point, axes) if not axis_values[0] <= x <= axis_values[-1]]
        out.append(", ".join(where) or "inside")
    return pd.Series(out, index=steps.index, dtype=object)


def by_kind(steps: pd.DataFrame) -> pd.DataFrame:
    """Per step kind: steps, vLLM s, simulator s, sim / vLLM; with a `reach` column (profile_reach) also per
    kind and place in the profile's grid ('prefill after idle | query_tokens above')."""
    table = steps.groupby("kind").agg(steps=("vllm_s", "size"), vllm_s=("vllm_s", "sum"), sim_s=("sim_s", "sum"))
    if "reach" in steps.columns:
        outside = steps[steps["reach"] != "inside"]
        if len(outside):
            reach = outside.groupby(outside["kind"] + " | " + outside["reach"]).agg(
                steps=("vllm_s", "size"), vllm_s=("vllm_s", "sum"), sim_s=("sim_s", "sum"))
            table = pd.concat([table, reach])
        for name, part in (("inside the grid", steps[steps["reach"] == "inside"]), ("outside the grid", outside)):
            table.loc[name] = [len(part), part["vllm_s"].sum(), part["sim_s"].sum()]
    table.loc["all"] = [len(steps), steps["vllm_s"].sum(), steps["sim_s"].sum()]
    table["sim_over_vllm"] = table["sim_s"] / table["vllm_s"]
    return table


def load_steps(run: Path, variant, load: str, profile: Path, gap_s: float = GAP_S) -> pd.DataFrame:
    """The steps of one recorded variant x load, each priced with `profile` (the fidelity stage's config)."""
    from real.engine.fidelity import server_kv_settings, sim_section
    from sim.cost import CostModel

    cfg_engine = _config(run).engine
    load_dir = run / "engine" / variant.name / load
    if not (load_dir / "chunks.parquet").exists():
        raise LabError(f"{load_dir / 'chunks.parquet'}: missing (a run recorded before the engine stage kept chunks)")
    requests = pd.read_parquet(load_dir / "requests.parquet")
    steps = engine_steps(requests, pd.read_parquet(load_dir / "chunks.parquet"), gap_s)
    k = variant.speculative.num_speculative_tokens if variant.speculative.method != "none" else 0
    kv = server_kv_settings(run / "engine" / variant.name / "server.log")
    section = sim_section(cfg_engine, variant, load_dir, profile, kv, None if not k else {
        "source": "parametric", "max_draft": k})
    counters = json.loads((load_dir / "spec_counters.json").read_text())["delta"]
    cost = CostModel.from_config(section, run)
    spec = (k, int(counters["num_drafts"]), int(counters["num_draft_tokens"]))
    steps["sim_s"] = price_steps(steps, cost, *spec)
    steps["reach"] = profile_reach(steps, cost, *spec)  # where each step lies in the profile's grid
    return steps


def _config(run: Path):
    from lab.config import load_config

    if not (run / "config.yaml").is_file():
        raise LabError(f"{run}: not a run directory (no config.yaml)")
    cfg = load_config(run / "config.yaml")
    if cfg.engine is None:
        raise LabError(f"{run / 'config.yaml'}: engine: missing")
    return cfg


def main(argv: list[str] | None = None) -> int:
    import sys

    from real.engine.rounds import variant_profile

    parser = ArgumentParser(prog="python -m real.engine.steps", description="Engine steps from streamed chunks, priced by the simulator.")
    parser.add_argument("run", help="run directory of an experiment whose engine stage finished")
    parser.add_argument("--variant", action="append", help="variant(s) (default: all)")
    parser.add_argument("--load", action="append", help="load(s) (default: all)")
    parser.add_argument("--profile", default=None, help="step profile CSV (default: the one the fidelity stage "
                        "prices each variant by: its own server's where measured, else RUN/engine/step_profile.csv)")
    parser.add_argument("--gap-ms", type=float, default=GAP_S * 1000, help="chunks closer than this are one step")
    args = parser.parse_args(argv)
    run = Path(args.run)
    try:
        cfg = _config(run)
        for variant in cfg.engine.variants:
            if args.variant and variant.name not in args.variant:
                continue
            profile = Path(args.profile) if args.profile else variant_profile(run / "engine", variant.name)
            for load in cfg.engine.loads:
                if args.load and load.name not in args.load:
                    continue
                steps = load_steps(run, variant, load.name, profile, args.gap_ms / 1000)
                merged = int(steps["merged"].sum())
                print(f"## {variant.name}/{load.name}: {len(steps)} steps"
                      + (f" ({merged} chunks merged into a step: lower --gap-ms)" if merged else ""))
                print(by_kind(steps).to_string(float_format=lambda x: f"{x:.3f}"), end="\n\n")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
