"""The `fidelity` stage: the simulator against the real engine, on the very workloads the engine served.

    lab run experiments/fidelity_vllm.yaml          # stages engine, fidelity

For every engine variant x load of the run (engine/<variant>/<load>/requests.parquet), the simulator replays
that per-request log (workload kind replay_log: same arrivals, input and output tokens) configured only from
what the engine stage recorded:
- step cost: the engine's measured step profile (engine/step_profile.csv, source vllm), read at the
  load's mean KV length;
- batching: vLLM's max_num_seqs and max_num_batched_tokens, paged KV with the KV capacity and block size
  the server's log reports (VLLM_CPU_KVCACHE_SPACE decides it);
- a speculative variant's own decode-step profile (engine/<variant>/step_profile.csv, when measured) as
  sim.cost.spec_profile: what its steps cost over the plain profile's step of the same shape;
- speculation: none -> policy ar; ngram (k drafts) -> fixed_k with k, acceptance a per-position curve from
  vLLM's own counters of that load: survival s_j = num_accepted_tokens_per_pos[j-1] / decode steps, where
  decode steps = output tokens - accepted tokens - requests (a step without an n-gram match is a draft
  with nothing accepted, so tokens per step match vLLM's).
Outputs: engine/fidelity.csv (variant, load, metric, sim, log, rel_error) and engine/fidelity.md (the table
BENCHMARKS.md quotes), engine/fidelity.png (relative error per metric and load),
engine/fidelity/<variant>/<load>/sim_requests.parquet (the simulated log).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lab.config_sim import SimSection
from lab.errors import LabError
from lab.io import atomic_path, write_text_atomic
from real.embedded import log

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


def acceptance_curve(counters: dict, frame: pd.DataFrame) -> list[float]:
    """Conditional acceptance rate per position over ALL decode steps (see the module docstring)."""
    delta = counters["delta"]
    per_pos = np.asarray(delta["num_accepted_tokens_per_pos"], dtype=np.float64)
    done = frame.dropna(subset=["finish_s"])
    steps = float(done["output_tokens"].sum() - delta["num_accepted_tokens"] - len(done))
    if steps <= 0 or not len(per_pos):
        raise LabError("fidelity: the speculative load has no decode steps or no per-position counters")
    survival = np.concatenate([[1.0], per_pos / steps])
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(survival[:-1] > 0, survival[1:] / survival[:-1], 0.0)
    return [float(np.clip(r, 0.0, 1.0)) for r in rates]


def sim_section(engine, variant, load_dir: Path, profile: Path, kv: dict, rates: list[float] | None,
                spec_profile: Path | None = None) -> SimSection:
    spec = variant.speculative
    data = {
        "hardware": {"preset": "cpu"},  # memory only: the measured profile is the step cost
        "model": {"name": "gemma3-270m", "drafter_layers": 0},
        "cost": {"profile": str(profile), "spec_overhead_ms": 0.0,
                 **({"spec_profile": str(spec_profile)} if spec_profile is not None else {})},
        "engine": {"kv_policy": "paged", "block_size": kv.get("block_size", DEFAULT_BLOCK_SIZE),
                   "max_num_seqs": engine.max_num_seqs, "max_num_batched_tokens": engine.max_num_batched_tokens,
                   **({"kv_capacity_tokens": kv["kv_capacity_tokens"]} if "kv_capacity_tokens" in kv else {})},
        "workload": {"kind": "replay_log", "log_path": str(load_dir / "requests.parquet")},
        "sweep": {"axis": "none", "workers": 1},
        "plots": False,
    }
    if spec.method == "none":
        data["policies"] = [{"kind": "ar"}]
    else:
        k = spec.num_speculative_tokens
        data["policies"] = [{"kind": "fixed_k", "k": k}]
        data["acceptance"] = {"source": "parametric", "max_draft": k,
                              "parametric": {"kind": "curve", "rates": rates}}
    try:
        return SimSection.model_validate(data)
    except Exception as exc:  # noqa: BLE001 - a config we build: report it as the stage's error
        raise LabError(f"fidelity: simulator config for {variant.name}/{load_dir.name}: {exc}") from None


def run_stage(ctx) -> None:
    from sim.serving_metrics import fidelity_table
    from sim.simulate import prepare_inputs
    from sim.sweep import sweep_points

    engine = ctx.cfg.engine
    if engine is None:
        raise LabError("stage 'fidelity' needs an engine section (and the engine stage's outputs)")
    root = ctx.path("engine")
    profile = root / "step_profile.csv"
    if not profile.exists():
        raise LabError(f"fidelity: {profile} missing; run the engine stage with engine.step_profile set")
    rows = []
    for variant in engine.variants:
        kv = server_kv_settings(root / variant.name / "server.log")
        for load in engine.loads:
            load_dir = root / variant.name / load.name
            if not (load_dir / "requests.parquet").exists():
                raise LabError(f"fidelity: {load_dir / 'requests.parquet'} missing; run the engine stage first")
            real = pd.read_parquet(load_dir / "requests.parquet")
            rates = None
            if variant.speculative.method != "none":
                rates = acceptance_curve(json.loads((load_dir / "spec_counters.json").read_text()), real)
            spec_profile = root / variant.name / "step_profile.csv"
            sim = sim_section(engine, variant, load_dir, profile, kv, rates,
                              spec_profile if rates is not None and spec_profile.exists() else None)
            inputs = prepare_inputs(sim, ctx.root, ctx.cfg.seed)
            (_summary, sim_log), = sweep_points(inputs, show_progress=False, with_requests=True)
            with atomic_path(root / "fidelity" / variant.name / load.name / "sim_requests.parquet") as tmp:
                sim_log.to_parquet(tmp, index=False)
            table = fidelity_table(sim_log, inputs.reference_log)
            table.insert(0, "load", load.name)
            table.insert(0, "variant", variant.name)
            rows.append(table)
            tpot = table.set_index("metric").loc["tpot_mean_ms"]
            log(f"fidelity {variant.name}/{load.name}: TPOT mean sim {tpot.sim:.1f} ms vs vLLM {tpot.log:.1f} ms "
                f"({tpot.rel_error * 100:+.1f}%)")
    frame = pd.concat(rows, ignore_index=True)
    with atomic_path(root / "fidelity.csv") as tmp:
        frame.to_csv(tmp, index=False)
    write_text_atomic(root / "fidelity.md", fidelity_markdown(frame))
    plot_fidelity(frame, root / "fidelity.png")
    ctx.mark_done("fidelity", {"comparisons": len(rows)})


def fidelity_markdown(frame: pd.DataFrame) -> str:
    """One row per variant x load, one column per metric: 'sim / vLLM (error)'."""
    metrics = list(dict.fromkeys(frame["metric"]))
    lines = ["| variant | load | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for (variant, load), group in frame.groupby(["variant", "load"], sort=False):
        cells = []
        for _, r in group.set_index("metric").loc[metrics].iterrows():
            err = "n/a" if not np.isfinite(r.rel_error) else f"{r.rel_error * 100:+.1f}%"
            cells.append(f"{r.sim:.3g} / {r.log:.3g} ({err})")
        lines.append(f"| {variant} | {load} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_fidelity(frame: pd.DataFrame, path: Path) -> None:
    """Relative error (sim / vLLM - 1) per metric, one bar per variant x load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = frame.assign(case=frame["variant"] + "/" + frame["load"]).pivot_table(
        index="metric", columns="case", values="rel_error", sort=False) * 100
    fig, ax = plt.subplots(figsize=(9, 4))
    table.plot.bar(ax=ax, width=0.8)
    ax.axhline(0, color="black", linewidth=0.8)
    for goal in (-5, 5):
        ax.axhline(goal, color="grey", linestyle=":", linewidth=0.8)
    ax.set_ylabel("simulator vs vLLM, % error")
    ax.set_xlabel("")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
