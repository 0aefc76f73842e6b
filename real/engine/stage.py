"""The `engine` stage: serve the run's target with vLLM (its own environment), drive the loads, profile.

    lab run experiments/fidelity_vllm.yaml --stages engine

For each engine.variants entry (a speculative config) one `vllm serve` is started, health-checked and
stopped; each engine.loads entry is driven against it. Outputs, all under <run>/engine/:
    engine.json                         settings, versions, argv and start-up time per variant
    export/target, export/<drafter>     a tiny-* target saved as a checkpoint; each `speculative.drafter`
                                        exported to vLLM's eagle3 layout (real/engine/served.py)
    step_profile.csv / .json            step times (first variant, when engine.step_profile is set)
    <variant>/profile/step_profile.csv  another variant's own server's step times, with engine.profile_every_variant
                                        (a speculative server's also decode_steps.csv: the steps its decode rows
                                        were solved from, real/engine/spec_rows.py)
    <variant>/step_profile.csv / .json  a speculative variant's decode steps (query_tokens = 1 + drafts), only
                                        with engine.spec_step_profile: true (the fidelity stage does not use it)
    <variant>/server.log                the server's own log (kept)
    <variant>/<load>/requests.parquet   the shared per-request log
    <variant>/<load>/chunks.parquet     every streamed chunk: request_id, t_s, output tokens so far (one chunk
                                        per engine step of that request unless the server merged some)
    <variant>/<load>/spec_counters.json vLLM's spec-decode counters before/after/delta (lab.metrics names)
    <variant>/api_probe/round<k>.json   the API path on an idle engine, each round (server_side.idle_probe)
    <variant>/<load>/server_side.json   vLLM's own latency means and its processes' CPU time over the load,
                                        beside the client's TTFT (real/engine/server_side.py: the API path)
    <variant>/<load>/summary.json       TTFT/TPOT/E2E and throughput of the load
    <variant>/<load>/reference.json     with engine.reference: some profile points measured again right
                                        before and after the load, and their ratio to the profile (drift.py)
    summary.csv                         one row per variant x load
Resumable: a load whose requests.parquet exists is not driven again; a variant with every load done is
not started at all.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import pandas as pd

from lab.errors import LabError
from lab.io import write_json_atomic, write_text_atomic
from real.embedded import log
from real.engine.loadgen import (
    RandomTokens,
    TextTokens,
    chunk_frame,
    load_summary,
    plan_requests,
    run_load,
    write_request_log,
)
from real.engine.metrics import counter_table, scrape_spec_counters
from real.engine.rounds import (
    api_probe_path,
    combine_profiles,
    load_dirs,
    profile_home,
    profile_round_dir,
    variant_profile,
)
from real.engine.served import exported_drafter, needs_drafters, served_model_dir
from real.engine.server import EngineServer, vllm_command
from real.engine.server_side import server_side_record, server_snapshot
from real.engine.setup import read_marker, require_engine

SERVED_NAME = "target"


def prompt_tokens_source(cfg, model_dir: Path):
    """Real text (the experiment's prompt datasets, tokenized) when a prompts section exists, else random ids."""
    if cfg.prompts is None:
        return RandomTokens(_vocab_size(model_dir))
    from transformers import AutoTokenizer

    from real.prompts import load_prompt_sets

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids: list[int] = []
    for prompts in load_prompt_sets(cfg.prompts).values():
        for prompt in prompts:
            ids += tokenizer("\n\n".join(prompt.turns), add_special_tokens=False)["input_ids"]
    return TextTokens(ids)


def _variant_done(ctx, variant, loads, rounds: int = 1) -> bool:
    return all((folder / "requests.parquet").exists() for load in loads
               for folder in load_dirs(ctx.path("engine"), variant.name, load.name, rounds))


def run_stage(ctx) -> None:
    cfg = ctx.cfg
    section = cfg.engine
    if section is None:
        raise LabError("stage 'engine' needs an engine section in the experiment")
    venv = require_engine(section.venv, section.kind)
    model_dir = served_model_dir(cfg, ctx)
    drafter_dirs = _export_drafters(ctx) if needs_drafters(section) else {}
    tokens = prompt_tokens_source(cfg, model_dir)
    forced = "engine" in ctx.forced
    info_path = ctx.path("engine", "engine.json")
    info = json.loads(info_path.read_text()) if info_path.exists() and not forced else {}
    info.update(engine=read_marker(venv), model=str(model_dir), settings=section.model_dump(mode="json"))
    info.setdefault("variants", {})
    summaries = []
    rounds = section.rounds
    for index, variant in enumerate(section.variants):
        home = _profile_home(ctx, section, index, variant)
        want_profile = home is not None and (forced or not (home / "step_profile.csv").exists())
        want_spec_profile = (variant.speculative.method != "none" and section.step_profile is not None
                             and section.spec_step_profile
                             and (forced or not ctx.path("engine", variant.name, "step_profile.csv").exists()))
        if _variant_done(ctx, variant, section.loads, rounds) and not forced and not want_profile \
                and not want_spec_profile:
            log(f"engine {variant.name}: every load done already, not started")
        else:
            argv, env = vllm_command(section, variant.speculative, model_dir, venv, SERVED_NAME,
                                     drafter_dirs.get(variant.speculative.drafter))
            server = EngineServer(argv, env, ctx.path("engine", variant.name, "server.log"), section.port,
                                  section.startup_timeout_s, label=f"vllm {variant.name}")
            with server:
                info["variants"][variant.name] = {"argv": argv, "startup_s": round(server.startup_s, 1),
                                                  "env": {k: env[k] for k in env if k.startswith("VLLM_CPU")}}
                write_json_atomic(info_path, info)
                _warm_up(server.base_url, tokens)
                profile_tokens = _profile_tokens(tokens, variant, model_dir, section.speculative_profile_prompts)
                for round_index in range(rounds):
                    if want_profile:
                        _profile_round(ctx, server.base_url, section, profile_tokens, model_dir, venv, round_index,
                                       forced, home, variant)
                    if want_spec_profile and round_index == 0:
                        _spec_profile(ctx, server.base_url, section, variant, tokens, model_dir, venv)
                    _api_probe(ctx, server, variant, tokens, round_index, forced)
                    for load in section.loads:
                        folder = load_dirs(ctx.path("engine"), variant.name, load.name, rounds)[round_index]
                        _drive(ctx, server.base_url, section, variant, load, tokens, forced, folder, round_index,
                               server.proc.pid)
                if want_profile and rounds > 1:
                    _combine_profile_rounds(home, rounds)
        for load in section.loads:
            for round_index, folder in enumerate(load_dirs(ctx.path("engine"), variant.name, load.name, rounds)):
                summary = json.loads((folder / "summary.json").read_text())
                summaries.append({"variant": variant.name, "load": load.name, "round": round_index, **_flat(summary)})
    write_text_atomic(ctx.path("engine", "summary.csv"), pd.DataFrame(summaries).to_csv(index=False))
    write_json_atomic(info_path, info)
    ctx.mark_done("engine", {"variants": len(section.variants), "loads": len(section.loads)})


def _export_drafters(ctx) -> dict[str, Path]:
    """Every `speculative.drafter` of the engine section exported to vLLM's layout (the target loaded once)."""
    from real.targets import load_target

    names = sorted({v.speculative.drafter for v in ctx.cfg.engine.variants if v.speculative.drafter})
    target = load_target(ctx.cfg.target)
    return {name: exported_drafter(ctx, name, target) for name in names}


def _flat(summary: dict) -> dict:
    out = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update({f"{key}_{k}": v for k, v in value.items()})
        elif not isinstance(value, list):
            out[key] = value
    return out


def _warm_up(base_url: str, tokens) -> None:
    """Two requests before anything is measured. The first use of a speculative method compiles its
    proposer (vLLM's n-gram matcher is numba-jitted): on a fresh n-gram server the first two requests of
    a load took 3.8 and 2.9 s to the first token where the rest took 0.6-1.2 s. The prompt repeats itself,
    so an n-gram proposer finds matches and drafts."""
    import numpy as np

    from real.engine.step_profile import send_batch

    text = tokens.take(48, np.random.default_rng(0))
    send_batch(base_url, SERVED_NAME, [text + text, text + text + text], 24)


def _drive(ctx, base_url: str, section, variant, load, tokens, forced: bool, folder: Path,
           round_index: int = 0, server_pid: int | None = None) -> None:
    """Drive one round of one load into `folder` (real.engine.rounds.load_dirs), unless done already."""
    label = f"{variant.name}/{load.name}" + (f" round {round_index}" if section.rounds > 1 else "")
    if (folder / "requests.parquet").exists() and not forced:
        log(f"engine {label}: done already")
        return
    reference = section.reference
    if reference is not None:
        bracket_before = _reference(base_url, section, tokens, variant, load, "before", round_index)
    before = scrape_spec_counters(base_url)
    server_before = server_snapshot(base_url, server_pid)
    start = time.perf_counter()
    frame, records = run_load(base_url, load, tokens, SERVED_NAME, show_progress=ctx.show_progress,
                              plan=plan_requests(load, tokens, text_round=round_index))
    wall = time.perf_counter() - start
    server_side = server_side_record(server_before, server_snapshot(base_url, server_pid, cpu_first=True), frame)
    table = counter_table(before, scrape_spec_counters(base_url))
    summary = {"wall_s": round(wall, 2), **load_summary(frame, records)}
    if reference is not None:
        _write_reference(ctx, folder, variant, bracket_before,
                         _reference(base_url, section, tokens, variant, load, "after", round_index))
    write_json_atomic(folder / "spec_counters.json", table)
    write_json_atomic(folder / "server_side.json", server_side)
    write_json_atomic(folder / "summary.json", summary)
    write_request_log(chunk_frame(records), folder / "chunks.parquet")
    write_request_log(frame, folder / "requests.parquet")  # last: its presence marks the load done
    log(f"engine {label}: {summary['completed']}/{summary['requests']} requests, "
        f"TPOT mean {summary['tpot_mean_ms']:.1f} ms, {summary['throughput_tok_s']:.1f} tok/s, "
        f"tau {table['derived']['tau']}; front end {1e3 * server_side['front_end_delay_s']:.0f} ms/request, "
        f"API server CPU {server_side['api_server_cpu_ms_per_request']:.0f} ms/request")


def _api_probe(ctx, server, variant, tokens, round_index: int, forced: bool) -> None:
    """The API path on an idle engine (real.engine.server_side.idle_probe), once per variant and round."""
    import zlib

    from real.engine.server_side import idle_probe

    path = api_probe_path(ctx.path("engine"), variant.name, round_index)
    if path.exists() and not forced:
        return
    seed = zlib.crc32(f"api-probe/{variant.name}/{round_index}".encode())
    record = idle_probe(server.base_url, SERVED_NAME, tokens, seed, server.proc.pid)
    write_json_atomic(path, record)
    log(f"engine {variant.name}: idle API path {1e3 * record['front_end_delay_s']:.0f} ms/request "
        f"(client TTFT {1e3 * record['client_ttft_mean_s']:.0f} ms), API server CPU "
        f"{record['api_server_cpu_ms_per_request']:.0f} ms/request")


def _reference(base_url: str, section, tokens, variant, load, which: str, round_index: int = 0) -> dict:
    """One bracket of the load's drift control (real.engine.drift), prompts drawn afresh for each bracket
    and round (a prompt seen before would come from the prefix cache)."""
    import zlib

    from real.engine.drift import measure_reference
    from real.engine.step_profile import one_step_prompt_tokens

    seed = zlib.crc32(f"{variant.name}/{load.name}/{which}".encode() + (f"/{round_index}".encode() if round_index else b""))
    return measure_reference(base_url, section.reference, tokens, variant.speculative.method != "none", SERVED_NAME,
                             seed, max_prompt_tokens=one_step_prompt_tokens(section))


def _write_reference(ctx, folder: Path, variant, before: dict, after: dict) -> None:
    """reference.json: both brackets and, when the profile exists, their ratio to its same points."""
    from real.engine.drift import reference_ratio
    from sim.step_profile import read_profile

    record = {"speculative_server": variant.speculative.method != "none", "before": before, "after": after}
    profile = variant_profile(ctx.path("engine"), variant.name)  # the profile fidelity prices this variant by
    if profile.exists():
        record.update(profile=str(profile), **reference_ratio(record, read_profile(profile)))
    write_json_atomic(folder / "reference.json", record)
    if record.get("ratio") is not None:
        log(f"engine {variant.name}/{folder.name}: reference points at {record['ratio']:.3f} x the profile "
            f"(after / before {record['after_over_before']:.3f}; {before['wall_s'] + after['wall_s']:.0f} s)")


def _profile_home(ctx, section, index: int, variant) -> Path | None:
    """Where this variant's server writes its step profile (real.engine.rounds.profile_home), None where it
    measures none: the first variant's in engine/, every other's in engine/<variant>/profile/ with
    engine.profile_every_variant."""
    if section.step_profile is None or (index and not section.profile_every_variant):
        return None
    return profile_home(ctx.path("engine"), variant.name if index else None)


def _profile_tokens(tokens, variant, model_dir: Path, prompts: str = "text"):
    """The prompts a server is profiled with: the run's own (text where the experiment has prompts), and for a
    speculative server under engine.speculative_profile_prompts `random` random token ids instead. On text its
    proposer drafts as it does in the loads, so the steps its decode rows are solved from (real/engine/
    spec_rows.py) hold the loads' mixes of requests and drafts: in fid-s21 (random ids) a lone request verifying
    4 drafts was never profiled, and the loads' steps of 3-8 verified rows took 96-124 ms where the profile
    priced 116-137 (BENCHMARKS.md, session 22). Random ids draft only where greedy output repeats itself."""
    if variant.speculative.method == "none" or prompts == "text":
        return tokens
    return RandomTokens(_vocab_size(model_dir))


def _vocab_size(model_dir: Path) -> int:
    """The served checkpoint's vocabulary size (config.json; a multimodal Gemma3 keeps it under text_config)."""
    vocab = json.loads((model_dir / "config.json").read_text())
    return int(vocab.get("vocab_size") or vocab.get("text_config", {}).get("vocab_size"))


def _profile_round(ctx, base_url: str, section, tokens, model_dir: Path, venv: Path, round_index: int,
                   forced: bool, home: Path, variant) -> None:
    """Round `round_index`'s step profile of this server: <home>/step_profile.csv with one round, else
    <home>/profile_rounds/round<k>/ (combined by _combine_profile_rounds); skipped where already written."""
    if section.rounds == 1:
        _profile(ctx, base_url, section, tokens, model_dir, venv, home, variant)
        return
    out_dir = profile_round_dir(home, round_index)
    if (out_dir / "step_profile.csv").exists() and not forced:
        log(f"engine {variant.name} step profile round {round_index}: done already")
        return
    _profile(ctx, base_url, section, tokens, model_dir, venv, out_dir, variant, seed=round_index)


def _combine_profile_rounds(home: Path, rounds: int) -> None:
    """<home>/step_profile.csv: the per-point median of the rounds' profiles (real.engine.rounds)."""
    path = combine_profiles([profile_round_dir(home, k) / "step_profile.csv" for k in range(rounds)], home)
    log(f"engine: the step profile's {rounds} rounds combined (per-point median) into {path}")


def _profile(ctx, base_url: str, section, tokens, model_dir: Path, venv: Path, out_dir: Path, variant,
             seed: int = 0) -> None:
    from real.engine.step_profile import PREFIX_HIT_MIN, measure_step_profile, one_step_prompt_tokens
    from sim.step_profile import write_profile

    checks: list[dict] = []
    decode_checks: list[dict] = []
    before = scrape_spec_counters(base_url)
    speculative_k = variant.speculative.num_speculative_tokens if variant.speculative.method != "none" else 0
    decode_steps: list[pd.DataFrame] = []
    rows = measure_step_profile(base_url, section.step_profile, tokens, SERVED_NAME, seed=seed,
                                show_progress=ctx.show_progress, prefix_checks=checks,
                                max_prompt_tokens=one_step_prompt_tokens(section), speculative_k=speculative_k,
                                spec_steps_out=decode_steps, decode_checks=decode_checks)
    if decode_steps:  # a speculative server's decode steps, from which its decode rows were solved
        write_text_atomic(out_dir / "decode_steps.csv", pd.concat(decode_steps).to_csv(index=False))
    drafted = counter_table(before, scrape_spec_counters(base_url))["delta"]
    cold = [c for c in checks if c["prefix_hit_fraction"] < PREFIX_HIT_MIN]  # nan compares False: not checkable
    for c in cold:
        log(f"engine step profile: batch {c['batch']} x {c['query_tokens']} over {c['context_len']}: the prefix "
            f"cache served {c['prefix_hit_fraction']:.0%} of the prefix (the row includes recomputing the rest)")
    meta = {**_profile_meta(section, model_dir, venv), "prefix_cache": checks, "decode_resent": decode_checks,
            "server": variant.name,
            "speculative": variant.speculative.model_dump(mode="json"),
            "spec_counters": {k: drafted[k] for k in ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
                              if k in drafted}}
    write_profile(out_dir, rows, meta)
    note = (f" ({drafted.get('num_drafts', 0):.0f} drafts while it ran)"
            if variant.speculative.method != "none" else "")
    log(f"engine {variant.name}: step profile of {len(rows)} points written to {out_dir / 'step_profile.csv'}{note}")


def _spec_profile(ctx, base_url: str, section, variant, tokens, model_dir: Path, venv: Path) -> None:
    """engine/<variant>/step_profile.csv: the speculative server's decode steps (sim.cost.spec_profile)."""
    from real.engine.step_profile import measure_spec_profile
    from sim.step_profile import write_profile

    drafts = variant.speculative.num_speculative_tokens
    rows = measure_spec_profile(base_url, section.step_profile, tokens, drafts, SERVED_NAME,
                                show_progress=ctx.show_progress)
    meta = {**_profile_meta(section, model_dir, venv), "speculative": variant.speculative.model_dump(mode="json")}
    write_profile(ctx.path("engine", variant.name), rows, meta)
    log(f"engine {variant.name}: speculative step profile of {len(rows)} points written")


def _profile_meta(section, model_dir: Path, venv: Path) -> dict:
    marker = read_marker(venv) or {}
    threads = section.threads_bind
    return {"source": "vllm", "model": str(model_dir), "dtype": section.dtype, "device": marker.get("device", "cpu"),
            "hardware": (f"{platform.processor() or platform.machine()}, vLLM worker on "
                         f"{'cores ' + threads if threads else 'its default cores'}"),
            "cpu_capability": _cpu_capability(marker.get("device", "cpu")), "threads": _thread_count(threads),
            "versions": {k: marker[k] for k in ("version", "torch", "transformers") if k in marker},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _cpu_capability(device: str) -> str | None:
    """This CPU's SIMD level as torch reports it (AVX2, AVX512, ...), recorded with every CPU number; None on GPU."""
    if device != "cpu":
        return None
    import torch

    return torch.backends.cpu.get_cpu_capability()


def _thread_count(bind: str | None) -> int | None:
    """Cores named by a VLLM_CPU_OMP_THREADS_BIND value like '0-1' or '0,2,4-5'."""
    if not bind or bind in ("auto", "all"):
        return None
    count = 0
    for part in bind.split("|")[0].split(","):
        lo, _, hi = part.partition("-")
        count += (int(hi) - int(lo) + 1) if hi else 1
    return count
