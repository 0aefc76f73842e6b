"""The `fidelity` stage: the simulator against the real engine, on the very workloads the engine served.

    lab run experiments/fidelity_vllm.yaml          # stages engine, fidelity
    python -m real.engine.fidelity RUN_DIR [--out DIR]   # the simulator side only, on a recorded engine run

The module entry point replays a finished engine stage (RUN_DIR/config.yaml and RUN_DIR/engine/) through
the simulator as it is now, without starting the engine, and writes the outputs below into DIR (default
RUN_DIR/engine); a recorded run stays as it was when --out names another directory.

For every engine variant x load of the run (engine/<variant>/<load>/requests.parquet), the simulator replays
that per-request log (workload kind replay_log: same arrivals, input and output tokens) configured only from
what the engine stage recorded:
- step cost: the engine's measured step profile (engine/step_profile.csv, source vllm), read per step by
  sim/cost.py (a verified draft token read as one more decoding request's token); with
  engine.profile_every_variant each later variant is priced by its own server's profile
  (engine/<variant>/profile/step_profile.csv, measured every round right before that server's loads, as the
  first server's is before its own), `--profiles first` prices every variant by the first's (an A/B on one run),
  `--profiles round` each round's log by the profile its server measured in that round (not the rounds' median;
  on fid-s21 / s22 / s23 it met 18 / 22 / 18 of 24 goals against the median's 17 / 21 / 21: no better overall);
- batching: vLLM's max_num_seqs and max_num_batched_tokens, paged KV with the KV capacity and block size
  the server's log reports (VLLM_CPU_KVCACHE_SPACE decides it);
- not the speculative variant's own decode-step profile (engine/<variant>/step_profile.csv): its rows are
  medians of gaps with and without a draft (a bimodal sample), and with draft tokens priced as decoding
  requests' tokens adding what they exceed the plain profile by made every n-gram load's error larger
  (BENCHMARKS.md, issue 10); `sim.cost.spec_profile` still reads it for a simulator config that wants it;
- speculation: none -> policy ar; ngram (k drafts) -> fixed_k with k and acceptance, `--acceptance`:
  chunks (auto where the load kept chunks.parquet): each request replays its own steps as vLLM streamed
  them (chunk_rounds: a greedy `rounds` trace, one prompt per request, replayed in order);
  counters (runs before chunks.parquet): from vLLM's own counters of that load
  (sim.acceptance.rates_from_counters), a per-position curve conditional on a draft
  (num_accepted_tokens_per_pos[j] / num_drafts) and the share of request-steps that have a draft at all
  (the n-gram proposer finds no match in the others: that request verifies nothing in that step), solved
  so that these requests, their last step cut at max_tokens, make num_drafts drafts; a draft is
  num_draft_tokens / num_drafts tokens on average (sim.acceptance.parametric.draft_tokens_mean: vLLM's n-gram
  proposer drafts fewer than k where its match lies near the end of the context), the rates conditional on
  the position being drafted.
Drift control: where a load recorded reference.json (engine.reference: some of the profile's points measured
again right before and after the load, real/engine/drift.py), the load is replayed a second time with the
profile scaled by that load's speed ratio (geometric mean of mean(before, after) / profile over the points).
The raw rows (the profile as measured) stay the headline; the drift-corrected rows say how much of the raw
error is the machine's speed moving between the profile and the load, not the simulator.
Rounds (engine.rounds > 1, real/engine/rounds.py): every round's log is replayed as above (the profile is the
rounds' per-point median) and a load's row holds the means over rounds of the simulated and the engine's
metrics, the error between those means, and the engine's own round-to-round spread (log_spread: standard
deviation over mean); the per-round outputs go to .../<load>/round<k>/.
Outputs: engine/fidelity.csv (variant, load, profile = raw | drift_corrected, profile_scale, metric, sim, log,
rel_error), engine/fidelity_coverage.csv (per variant x load: the raw replays' steps and share of step time the
profile priced outside its measured grid, per axis, sim/profile_coverage.py; a log line warns at >= 5%) and
engine/fidelity.md (the tables BENCHMARKS.md quotes: raw, then drift-corrected; the API path; that coverage),
engine/fidelity.png (relative error per metric and load; a second panel drift-corrected),
engine/fidelity/<variant>/<load>/sim_requests.parquet (the simulated log), sim_requests_drift_corrected.parquet
and profile_drift_corrected/ (the scaled profile), and .../traces/ (the replayed per-request steps,
acceptance chunks).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lab.arguments import ArgumentParser
from lab.config_sim import SimSection
from lab.errors import LabError
from lab.io import atomic_path, write_text_atomic
from real.embedded import log
from real.engine.drift import reference_ratio, scaled_profile
from real.engine.rounds import aggregate_rounds, api_probe_path, load_dirs, profile_round_dir, variant_profile
from real.engine.server_side import api_path_markdown
from sim.acceptance import rates_from_counters
from sim.profile_coverage import AXES, WARN_SHARE, coverage_warning, pooled
from sim.step_profile import read_profile

DEFAULT_BLOCK_SIZE = 16


def server_kv_settings(server_log: Path) -> dict:
    """KV capacity (tokens) and block size as vLLM's log states them; {} for what it does not state."""
    text = server_log.read_text(errors="replace") if server_log.exists() else ""
    out: dict = {}
    tokens = re.findall(r"KV cache size: ([\d,]+) tokens", text)
    if tokens:
        out["kv_capacity_tokens"] = int(tokens[-1].replace(",", ""))
    block = re.findall(r"block_size[=:]\s*(\d+)", text)
    if block:
        out["block_size"] = int(block[-1])
    return out


def speculation_from_counters(counters: dict, frame: pd.DataFrame, k: int) -> tuple[float, list[float], float]:
    """(draft probability, conditional rate per position, draft tokens per draft) of a speculative load (see
    the module docstring)."""
    delta = counters["delta"]
    done = frame.dropna(subset=["finish_s"])
    drafts = int(delta["num_drafts"])
    mean = min(int(delta["num_draft_tokens"]) / drafts, float(k)) if drafts else float(k)
    try:
        p, rates = rates_from_counters(k, delta["num_accepted_tokens_per_pos"], drafts,
                                       (done["output_tokens"] - 1).clip(lower=0).tolist(), draft_tokens_mean=mean)
    except ValueError as exc:
        raise LabError(f"fidelity: spec_counters.json: {exc}") from None
    return p, rates, mean


def sim_section(engine, variant, load_dir: Path, profile: Path, kv: dict, acceptance: dict | None) -> SimSection:
    """The simulator config of one variant x load: `acceptance` is the speculative variant's acceptance
    section (counters_acceptance or chunks_acceptance), None without speculation."""
    spec = variant.speculative
    data = {
        "hardware": {"preset": "cpu"},  # memory only: the measured profile is the step cost
        "model": {"name": "gemma3-270m", "drafter_layers": 0},
        "cost": {"profile": str(profile), "spec_overhead_ms": 0.0},
        "engine": {"kv_policy": "paged", "block_size": kv.get("block_size", DEFAULT_BLOCK_SIZE),
                   "max_num_seqs": engine.max_num_seqs, "max_num_batched_tokens": engine.max_num_batched_tokens,
                   "max_model_len": engine.max_model_len,  # how vLLM's log states a hybrid model's KV size
                   **({"kv_capacity_tokens": kv["kv_capacity_tokens"]} if "kv_capacity_tokens" in kv else {})},
        "workload": {"kind": "replay_log", "log_path": str(load_dir / "requests.parquet")},
        "sweep": {"axis": "none", "workers": 1},
        "plots": False,
    }
    if spec.method == "none":
        data["policies"] = [{"kind": "ar"}]
    else:
        data["policies"] = [{"kind": "fixed_k", "k": spec.num_speculative_tokens}]
        data["acceptance"] = acceptance
    try:
        return SimSection.model_validate(data)
    except Exception as exc:  # noqa: BLE001 - a config we build: report it as the stage's error
        raise LabError(f"fidelity: simulator config for {variant.name}/{load_dir.name}: {exc}") from None


def counters_acceptance(load_dir: Path, log: pd.DataFrame, k: int) -> tuple[dict, str]:
    """The load's acceptance from vLLM's counters: the same curve and draft share for every request."""
    drafted, rates, mean = speculation_from_counters(json.loads((load_dir / "spec_counters.json").read_text()),
                                                     log, k)
    section = {"source": "parametric", "max_draft": k,
               "parametric": {"kind": "curve", "rates": rates, "draft_probability": drafted,
                              "draft_tokens_mean": mean}}
    return section, f"counters: drafts in {drafted:.0%} of request-steps, {mean:.2f} tokens per draft"


def chunk_rounds(chunks: pd.DataFrame, log: pd.DataFrame, k: int, drafts: int, method: str,
                 seed: int = 0, draft_tokens: int | None = None) -> tuple[list, dict]:
    """Every replayed request's own decode steps, as greedy `rounds` trace records (lab.trace.StepRecord),
    one prompt per request in the replay's order (arrival; prompt_id = its index).

    A chunk after the first is one step of that request: it emitted e = 1 + accepted tokens. e > 1 was a
    draft (vLLM drafts whenever the proposer matched); e = 1 was a draft with nothing accepted or no
    draft at all: drafted with the probability that makes all the load's drafts vLLM's `num_drafts`. A
    chunk of more than k + 1 tokens is several steps the server merged (split into steps of k + 1). A
    request without decode steps gets one empty round (so that request i still replays prompt i).
    A draft is k tokens, or, given vLLM's `num_draft_tokens` (draft_tokens), shorter where the n-gram
    proposer's match ran out of context (vLLM drafted 3.8-3.96 tokens per draft at k = 4 here): the replay
    keeps vLLM's tokens per draft (draft_tokens / drafts), the missing tokens taken from drafted steps at
    random, never below a step's accepted tokens (nor below 1). The simulator verifies a record's k (its
    verify length is capped at the replayed row's drafts)."""
    from lab.trace import StepRecord

    keep = log[log["output_tokens"] >= 1].sort_values("arrival_s", kind="stable")  # what replay_log replays
    by_request = {rid: g.sort_values("t_s", kind="stable")["output_tokens"].to_numpy()
                  for rid, g in chunks.groupby("request_id")}
    steps: list[list[int]] = []
    merged = 0
    for rid in keep["request_id"]:
        counts = by_request.get(rid, np.zeros(0, np.int64))
        emitted = np.diff(np.concatenate([[1], counts])) if len(counts) else np.zeros(0, np.int64)
        mine = []
        for e in emitted.tolist():
            while e > k + 1:
                mine.append(k + 1)
                e -= k + 1
                merged += 1
            if e > 0:
                mine.append(e)
        steps.append(mine)
    many = sum(e > 1 for mine in steps for e in mine)
    ones = sum(e == 1 for mine in steps for e in mine)
    p_one = float(np.clip((drafts - many) / ones, 0.0, 1.0)) if ones else 0.0
    rng = np.random.default_rng(seed)
    # [request][step] tokens emitted, and whether the step drafted
    drafted = [[bool(e > 1 or rng.random() < p_one) for e in mine] for mine in steps]
    per_draft = draft_tokens / drafts if draft_tokens is not None and drafts else None
    lengths = _draft_lengths(steps, drafted, k, per_draft, np.random.default_rng(seed + 1))
    records = []
    for i, (prompt, mine, flags, sizes) in enumerate(zip(keep["input_tokens"], steps, drafted, lengths)):
        done = 1
        for j, (e, size) in enumerate(zip(mine or [1], sizes or [0])):
            records.append(StepRecord(run_id="engine", method=method, target="engine", dataset="engine",
                                      prompt_id=f"{i:06d}", table="rounds", temperature=0.0, step=j,
                                      context_len=int(prompt) + done, k=size, accepted=e - 1 if mine else 0,
                                      accept_prob=[1.0] * size, confidence=[1.0] * size))
            done += e
    total = sum(sum(sizes) for sizes in lengths)
    n_drafted = sum(sum(flags) for flags in drafted)
    info = {"request_steps": many + ones, "merged_chunks_split": merged, "p_draft_one_token_step": p_one,
            "draft_tokens_per_draft": total / n_drafted if n_drafted else 0.0}
    return records, info


def _draft_lengths(steps: list[list[int]], drafted: list[list[bool]], k: int, per_draft: float | None,
                   rng: np.random.Generator) -> list[list[int]]:
    """Each step's draft length: k where drafted, 0 where not; then, given the load's tokens per draft, the
    missing round(drafted steps x (k - per_draft)) tokens removed one at a time from drafted steps drawn
    at random among their removable tokens (a step keeps at least max(accepted, 1))."""
    lengths = [[k if flag else 0 for flag in flags] for flags in drafted]
    if per_draft is None:
        return lengths
    where = [(i, j) for i, flags in enumerate(drafted) for j, flag in enumerate(flags) if flag]
    # removable tokens per drafted step: k - max(accepted, 1)
    room = np.array([k - max(steps[i][j] - 1, 1) for i, j in where], dtype=np.int64)
    missing = int(np.clip(round(len(where) * (k - per_draft)), 0, room.sum()))
    if missing:
        slots = np.repeat(np.arange(len(where)), room)  # one entry per removable token
        cut = np.bincount(rng.choice(len(slots), size=missing, replace=False), minlength=len(slots))
        removed = np.bincount(slots, weights=cut, minlength=len(where)).astype(np.int64)
        for (i, j), r in zip(where, removed.tolist()):
            lengths[i][j] -= r
    return lengths


def chunks_acceptance(load_dir: Path, log: pd.DataFrame, k: int, method: str, out_dir: Path) -> tuple[dict, str]:
    """Each request's own recorded steps (chunk_rounds), written as a trace under out_dir and replayed in
    order: request i verifies and accepts what vLLM's request i did, step by step."""
    from lab.trace import shard_name, write_shard

    counters = json.loads((load_dir / "spec_counters.json").read_text())["delta"]
    records, info = chunk_rounds(pd.read_parquet(load_dir / "chunks.parquet"), log, k,
                                 int(counters["num_drafts"]), method, draft_tokens=int(counters["num_draft_tokens"]))
    path = write_shard(records, out_dir / shard_name(method, "engine", "rounds", 0.0))
    section = {"source": "traces", "paths": [str(path)], "method": method, "table": "rounds",
               "temperature": 0.0, "max_draft": k, "assign": "in_order", "use_calibration": False}
    return section, (f"per-request steps from chunks: {info['request_steps']} request-steps, "
                     f"{info['merged_chunks_split']} merged chunks split, one-token steps drafted with "
                     f"p {info['p_draft_one_token_step']:.2f}, {info['draft_tokens_per_draft']:.2f} tokens per draft")


def run_stage(ctx) -> None:
    if ctx.cfg.engine is None:
        raise LabError("stage 'fidelity' needs an engine section (and the engine stage's outputs)")
    rows = compare(ctx.cfg, ctx.path("engine"), ctx.path("engine"), ctx.root)
    ctx.mark_done("fidelity", {"comparisons": rows})


ACCEPTANCE = ("auto", "chunks", "counters")


PROFILES = ("own", "first", "round")


def compare(cfg, engine_dir: Path, out_dir: Path, run_root: Path | None = None, acceptance: str = "auto",
            profiles: str = "own") -> int:
    """Replay every variant x load of engine_dir through the simulator; write the outputs into out_dir.
    acceptance: chunks (each request's own steps, chunks.parquet), counters (the load's counters), auto
    (chunks where recorded). profiles: own (each variant priced by its own server's profile where the run
    measured one, engine.profile_every_variant) or first (every variant by the first variant's). Returns the
    number of comparisons (variant x load; the drift-corrected rows of a load with reference.json are the same
    comparison)."""
    engine = cfg.engine
    first_profile = engine_dir / "step_profile.csv"
    if not first_profile.exists():
        raise LabError(f"fidelity: {first_profile} missing; run the engine stage with engine.step_profile set")
    rounds = engine.rounds
    if acceptance == "chunks":  # refused before anything is written
        for variant in engine.variants:
            for load in engine.loads if variant.speculative.method != "none" else ():
                for load_dir in load_dirs(engine_dir, variant.name, load.name, rounds):
                    if not (load_dir / "chunks.parquet").exists():
                        raise LabError(f"fidelity: {load_dir / 'chunks.parquet'} missing (recorded before the engine "
                                       "stage kept chunks); use --acceptance counters")
    rows, api_path, api_probes, coverage = [], [], [], []
    for variant in engine.variants:
        profile = first_profile if profiles == "first" else variant_profile(engine_dir, variant.name)
        measured = read_profile(profile)
        log(f"fidelity {variant.name}: steps priced by {profile.relative_to(engine_dir)}")
        for round_index in range(rounds):
            probe = api_probe_path(engine_dir, variant.name, round_index)
            if probe.exists():
                api_probes.append({"variant": variant.name, "load": "idle probe", **json.loads(probe.read_text())})
        kv = server_kv_settings(engine_dir / variant.name / "server.log")
        for load in engine.loads:
            per_profile: dict[str, list[pd.DataFrame]] = {"raw": [], "drift_corrected": []}
            ratios, summaries = [], []
            for round_index, load_dir in enumerate(load_dirs(engine_dir, variant.name, load.name, rounds)):
                if (load_dir / "server_side.json").exists():  # recorded since session 20
                    api_path.append({"variant": variant.name, "load": load.name,
                                     **json.loads((load_dir / "server_side.json").read_text())})
                where = out_dir / "fidelity" / variant.name / load.name
                where = where / load_dir.relative_to(engine_dir / variant.name / load.name)
                priced = round_profile(profile, round_index) if profiles == "round" else profile
                raw, summary, corrected, ratio = _replay_round(engine, variant, load_dir, where, priced, measured,
                                                               kv, acceptance, run_root, cfg.seed)
                per_profile["raw"].append(raw)
                summaries.append(summary)
                if corrected is not None:
                    per_profile["drift_corrected"].append(corrected)
                    ratios.append(ratio)
            covered = {"variant": variant.name, "load": load.name, "rounds": len(summaries), **pooled(summaries)}
            coverage.append(covered)
            warning = coverage_warning(covered, measured.axes)
            if warning is not None:
                log(f"fidelity {variant.name}/{load.name}: {warning}")
            for kind, tables in per_profile.items():
                if not tables:
                    continue
                table = aggregate_rounds(tables) if rounds > 1 else tables[0]
                scale = 1.0 if kind == "raw" else float(np.exp(np.mean(np.log(ratios))))
                priced_by = str(profile.parent.relative_to(engine_dir))
                if profiles == "round":  # each round by its own round's profile
                    priced_by += "/profile_rounds/round<k>"
                rows.append(_label(table, variant.name, load.name, kind, scale, priced_by))
                tpot = table.set_index("metric").loc["tpot_mean_ms"]
                what = "" if kind == "raw" else f", profile x {scale:.3f} (drift-corrected)"
                over = f" (mean of {rounds} rounds; vLLM's spread {tpot.log_spread * 100:.1f}%)" if rounds > 1 else ""
                log(f"fidelity {variant.name}/{load.name}{what}: TPOT mean sim {tpot.sim:.1f} ms vs vLLM "
                    f"{tpot.log:.1f} ms ({tpot.rel_error * 100:+.1f}%){over}")
    frame = pd.concat(rows, ignore_index=True)
    with atomic_path(out_dir / "fidelity.csv") as tmp:
        frame.to_csv(tmp, index=False)
    coverage_frame = pd.DataFrame(coverage)
    with atomic_path(out_dir / "fidelity_coverage.csv") as tmp:
        coverage_frame.to_csv(tmp, index=False)
    write_text_atomic(out_dir / "fidelity.md", fidelity_markdown(frame) + "\n" + api_path_markdown(api_path, api_probes)
                      + "\n" + coverage_markdown(coverage_frame))
    plot_fidelity(frame, out_dir / "fidelity.png")
    return sum(int((t["profile"] == "raw").all()) for t in rows)


def round_profile(profile: Path, round_index: int) -> Path:
    """The step profile that server measured in round `round_index` (profile_rounds/round<k>/ beside the
    rounds' median `profile`), or `profile` itself where the run kept no per-round profiles (one round)."""
    own = profile_round_dir(profile.parent, round_index) / profile.name
    return own if own.exists() else profile


def _replay_round(engine, variant, load_dir: Path, where: Path, profile: Path, measured, kv: dict, acceptance: str,
                  run_root: Path | None, seed: int) -> tuple[pd.DataFrame, dict, pd.DataFrame | None, float | None]:
    """One round of one load through the simulator: its raw fidelity table, the raw run's summary and, where the
    round recorded reference.json, the drift-corrected table and its profile scale (else None, None)."""
    if not (load_dir / "requests.parquet").exists():
        raise LabError(f"fidelity: {load_dir / 'requests.parquet'} missing; run the engine stage first")
    real = pd.read_parquet(load_dir / "requests.parquet")
    section, note = None, ""
    if variant.speculative.method != "none":
        k = variant.speculative.num_speculative_tokens
        use_chunks = acceptance == "chunks" or (acceptance == "auto" and (load_dir / "chunks.parquet").exists())
        section, note = (chunks_acceptance(load_dir, real, k, variant.speculative.method, where / "traces")
                         if use_chunks else counters_acceptance(load_dir, real, k))
        log(f"fidelity {load_dir}: acceptance {note}")
    raw, summary = _simulate(sim_section(engine, variant, load_dir, profile, kv, section), run_root, seed,
                             where / "sim_requests.parquet")
    ratio = load_ratio(load_dir, measured)
    if ratio is None:
        return raw, summary, None, None
    scaled = scaled_profile(profile, ratio, where / "profile_drift_corrected")  # the profile x this load's ratio
    corrected, _ = _simulate(sim_section(engine, variant, load_dir, scaled, kv, section), run_root, seed,
                             where / "sim_requests_drift_corrected.parquet")
    return raw, summary, corrected, ratio


def _simulate(sim: SimSection, run_root: Path | None, seed: int, requests_path: Path) -> tuple[pd.DataFrame, dict]:
    """Run one replay; write its simulated log to requests_path; the fidelity table against the engine's, and
    the run's summary (its profile_* keys: the steps the profile priced outside its grid)."""
    from sim.serving_metrics import fidelity_table
    from sim.simulate import prepare_inputs
    from sim.sweep import sweep_points

    inputs = prepare_inputs(sim, run_root, seed)
    (summary, sim_log), = sweep_points(inputs, show_progress=False, with_requests=True)
    with atomic_path(requests_path) as tmp:
        sim_log.to_parquet(tmp, index=False)
    return fidelity_table(sim_log, inputs.reference_log), summary


def _label(table: pd.DataFrame, variant: str, load: str, profile: str, scale: float, priced_by: str = ".") -> pd.DataFrame:
    """The fidelity table's leading columns: variant, load, profile (raw | drift_corrected), profile_scale, and
    priced_by: the folder under engine/ of the step profile the simulator read ('.': the first variant's)."""
    table = table.copy()
    for position, (column, value) in enumerate((("variant", variant), ("load", load), ("profile", profile),
                                                ("profile_scale", scale), ("priced_by", priced_by))):
        table.insert(position, column, value)
    return table


def load_ratio(load_dir: Path, profile) -> float | None:
    """The load's measured speed over the profile's (reference.json, real.engine.drift), recomputed against
    the profile the simulator reads; None where the load has no reference measurement or no usable point."""
    path = load_dir / "reference.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise LabError(f"{path}: not readable JSON ({exc})") from None
    try:
        return reference_ratio(record, profile)["ratio"]
    except LabError as exc:
        raise LabError(f"{path}: {exc}") from None


PROFILE_TITLES = {
    "raw": "Raw (the headline): the simulator with the step profile as measured",
    "drift_corrected": ("Drift-corrected: the profile x each load's speed ratio (profile x), measured at the "
                        "profile's own points right before and after that load (reference.json); what of the "
                        "raw error is the machine's drift between the profile and the load"),
}


def fidelity_markdown(frame: pd.DataFrame) -> str:
    """The raw table, and the drift-corrected one where the run measured references: one row per variant x
    load, one column per metric, 'sim / vLLM (error)'; with engine.rounds > 1 both are the rounds' means and
    the cell adds vLLM's round-to-round standard deviation over its mean ('vLLM sd')."""
    if "profile" not in frame.columns:  # a fidelity.csv written before drift correction
        return _markdown_table(frame, with_scale=False)
    parts = []
    if "priced_by" in frame.columns:  # which server's step profile priced each variant
        priced = frame.drop_duplicates("variant").set_index("variant")["priced_by"]
        parts.append("Step profiles: " + "; ".join(
            f"{v} priced by {'the first variant' if p == '.' else 'its own server'} (engine/{p}/step_profile.csv)"
            .replace("engine/./", "engine/") for v, p in priced.items()) + "\n")
    for profile, title in PROFILE_TITLES.items():
        part = frame[frame["profile"] == profile]
        if len(part):
            parts.append(f"**{title}**\n\n" + _markdown_table(part, with_scale=profile != "raw"))
    return "\n".join(parts)


def coverage_markdown(coverage: pd.DataFrame) -> str:
    """fidelity.md's table of the steps each load's raw replay priced outside its step profile's measured grid
    (sim/profile_coverage.py; steps summed over rounds, shares of the simulated step time)."""
    lines = [(f"**Step profile coverage** (the raw replays' steps priced outside the measured grid: below an axis' "
              f"first value clamped, above its last extrapolated; summed over rounds; warned at "
              f">= {100 * WARN_SHARE:g}% of step time, fidelity_coverage.csv)"), "",
             "| variant | load | steps | outside (share of time) | " + " | ".join(AXES) + " |",
             "|---|---|---|---|" + "---|" * len(AXES)]
    for _, r in coverage.iterrows():
        cells = []
        for axis in AXES:
            parts = []
            if r[f"profile_{axis}_below_steps"]:
                parts.append(f"below {int(r[f'profile_{axis}_below_steps'])} "
                             f"({100 * r[f'profile_{axis}_below_share']:.1f}%)")
            if r[f"profile_{axis}_above_steps"]:
                parts.append(f"above {int(r[f'profile_{axis}_above_steps'])} "
                             f"({100 * r[f'profile_{axis}_above_share']:.1f}%, up to "
                             f"{r[f'profile_{axis}_above_max']:.4g})")
            cells.append("; ".join(parts) or "-")
        lines.append(f"| {r.variant} | {r.load} | {int(r.steps)} | {int(r.profile_outside_steps)} "
                     f"({100 * r.profile_outside_share:.1f}%) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _markdown_table(frame: pd.DataFrame, with_scale: bool) -> str:
    metrics = list(dict.fromkeys(frame["metric"]))
    scale_head, scale_rule = ("profile x | ", "---|") if with_scale else ("", "")
    lines = ["| variant | load | " + scale_head + " | ".join(metrics) + " |",
             "|---|---|" + scale_rule + "---|" * len(metrics)]
    for (variant, load), group in frame.groupby(["variant", "load"], sort=False):
        cells = [f"{group['profile_scale'].iloc[0]:.3f}"] if with_scale else []
        for _, r in group.set_index("metric").loc[metrics].iterrows():
            err = "n/a" if not np.isfinite(r.rel_error) else f"{r.rel_error * 100:+.1f}%"
            spread = r.get("log_spread", float("nan"))
            if np.isfinite(spread):  # several rounds: the engine's own round-to-round sd beside the error
                err += f"; vLLM sd {spread * 100:.1f}%"
            cells.append(f"{r.sim:.3g} / {r.log:.3g} ({err})")
        lines.append(f"| {variant} | {load} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_fidelity(frame: pd.DataFrame, path: Path) -> None:
    """Relative error (sim / vLLM - 1) per metric, one bar per variant x load (with rounds, vLLM's own
    round-to-round sd as its error bar); a second panel with the drift-corrected profile where the run
    measured references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "profile" not in frame.columns:
        frame = frame.assign(profile="raw")
    panels = [p for p in PROFILE_TITLES if (frame["profile"] == p).any()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 4 * len(panels)), sharey=True, squeeze=False)
    for ax, profile in zip(axes[:, 0], panels):
        part = frame[frame["profile"] == profile]
        cased = part.assign(case=part["variant"] + "/" + part["load"])
        table = cased.pivot_table(index="metric", columns="case", values="rel_error", sort=False) * 100
        spread = None  # several rounds: vLLM's own round-to-round sd as each bar's error bar
        if "log_spread" in cased.columns and cased["log_spread"].notna().any():
            spread = cased.pivot_table(index="metric", columns="case", values="log_spread", sort=False,
                                       dropna=False).reindex_like(table) * 100
        table.plot.bar(ax=ax, width=0.8, yerr=spread, capsize=2, error_kw={"elinewidth": 0.7})
        ax.axhline(0, color="black", linewidth=0.8)
        for goal in (-5, 5):
            ax.axhline(goal, color="grey", linestyle=":", linewidth=0.8)
        ax.set_ylabel("simulator vs vLLM, % error")
        ax.set_title("raw: the profile as measured" if profile == "raw"
                     else "drift-corrected: the profile x each load's reference ratio", fontsize=9)
        ax.set_xlabel("")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """python -m real.engine.fidelity RUN_DIR [--out DIR]: the simulator side of a recorded engine run."""
    import sys

    from lab.config import load_config

    parser = ArgumentParser(prog="python -m real.engine.fidelity", description="Replay a recorded engine run's loads through the simulator.")
    parser.add_argument("run", help="run directory of an experiment whose engine stage finished")
    parser.add_argument("--out", default=None, help="where the outputs go (default: RUN/engine)")
    parser.add_argument("--profiles", choices=PROFILES, default="own",
                        help="own: each variant priced by its own server's step profile where the run measured one "
                             "(engine.profile_every_variant; with rounds, the rounds' median); first: every variant "
                             "by the first variant's; round: each round's log by the profile its server measured in "
                             "that round, minutes before that round's loads")
    parser.add_argument("--acceptance", choices=ACCEPTANCE, default="auto",
                        help="speculative loads: each request's own steps (chunks.parquet), the load's counters, "
                             "or auto: chunks where the run recorded them")
    args = parser.parse_args(argv)
    run = Path(args.run)
    try:
        if not (run / "config.yaml").is_file():
            raise LabError(f"{run}: not a run directory (no config.yaml)")
        cfg = load_config(run / "config.yaml")
        if cfg.engine is None:
            raise LabError(f"{run / 'config.yaml'}: engine: missing; the run has no engine stage to compare with")
        out = Path(args.out) if args.out else run / "engine"
        compare(cfg, run / "engine", out, run, args.acceptance, args.profiles)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "fidelity.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
