"""The simulator's two pipeline stages (registered in lab/stages.py): `calibrate` and `sim`.

    lab run experiments/fig7_sla.yaml        # runs the stages its YAML lists; each calls a function here
    run_calibrate(ctx)   # STS on the run's traces (or sim.acceptance paths) -> calibration.json, reliability.png
    run_sim(ctx)         # sweep every policy -> sim/results.parquet, requests.parquet, sla.csv, plots, summary.md
                         # and, replaying a real engine's log (workload.kind replay_log), fidelity.csv/.png
    check_calibrate(cfg, run_root, ahead), check_sim(cfg, run_root, ahead)   # their input files, read before
                         # the run starts (lab/preflight.py: `lab validate`, `lab run`); LabError at a bad one

Kept apart from sim/simulate.py (one point) and sim/sweep.py (many points) so that neither imports the other
back. Outputs are written atomically; a finished stage is skipped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lab.errors import LabError
from lab.io import atomic_path, write_json_atomic, write_text_atomic


def run_calibrate(ctx) -> None:
    """Read the run's traces (or sim.acceptance paths), fit STS, write calibration.json and reliability.png."""
    from lab.config_sim import SimSection
    from sim.calibrate import calibrate_frame, plot_reliability

    out = ctx.path("calibration.json")
    if ctx.stage_done("calibrate") and out.exists():
        return
    sim = ctx.cfg.sim or SimSection()
    frame = calibration_traces(sim, ctx.root)
    payload = calibrate_frame(frame, sim.calibration, ctx.cfg.seed, sim.acceptance.max_draft,
                              sim.acceptance.temperature)
    plot_reliability(payload, ctx.path("reliability.png"), sim.calibration.bins)
    for m in payload["methods"].values():
        m.pop("_eval")
    write_json_atomic(out, payload)
    ctx.mark_done("calibrate", {"methods": sorted(payload["methods"])})


def calibration_traces(sim, run_root: Path, later=None) -> pd.DataFrame | None:
    """The traces the calibrate stage fits: sim.acceptance.paths (source traces) or the run's traces/;
    None when `later` (sim.simulate.written_later) says they are still to be written."""
    from lab.trace import read_traces
    from sim.simulate import nothing_later, read_acceptance_traces

    later = later or nothing_later
    if sim.acceptance.source == "traces":
        return read_acceptance_traces(sim.acceptance, later)[0]
    tdir = Path(run_root) / "traces"
    if later(tdir):
        return None
    if not tdir.is_dir():
        raise LabError(f"calibrate: {tdir} does not exist; run the evaluate stage first "
                       "(or set sim.acceptance.source: traces with paths)")
    return read_traces(tdir)


def check_calibrate(cfg, run_root: Path, ahead: bool) -> None:
    """Before a run (lab/preflight.py): the traces the calibrate stage will read, read and checked as it reads
    them; with `ahead` (stages before it in this run) files inside run_root are left to the stage."""
    from lab.config_sim import SimSection
    from sim.simulate import written_later

    calibration_traces(cfg.sim or SimSection(), run_root, written_later(run_root) if ahead else None)


def check_sim(cfg, run_root: Path, ahead: bool) -> None:
    """Before a run (lab/preflight.py): every file the sim stage will read (step profiles, model config,
    traces, calibration, workload CSVs, a replayed log), read and checked by the stage's own
    prepare_inputs; with `ahead` (stages before it in this run) files inside run_root are left to the
    stage. A config without a sim section is the stage's own error."""
    from sim.simulate import prepare_inputs

    if cfg.sim is not None:
        check_replayed_names(cfg)
        prepare_inputs(cfg.sim, run_root, cfg.seed, ahead=ahead)


def check_replayed_names(cfg) -> None:
    """acceptance.source run replays the traces this experiment's evaluate stage writes: one method per drafter
    (its name), its prompt sets, its temperatures. A method, dataset or temperature the sim section names outside
    them stopped the sim stage after prepare, train and evaluate had run (sim/trace_rows.py's own errors)."""
    acc = cfg.sim.acceptance
    if acc.source != "run" or not cfg.drafters or cfg.prompts is None:
        return
    methods = [d.name for d in cfg.drafters]
    named = [("sim.acceptance.method", acc.method)] + [
        (f"sim.policies[{i}].method", p.method) for i, p in enumerate(cfg.sim.policies)]
    for field, method in named:
        if method is not None and method not in methods:
            raise LabError(f"{field} {method!r}: not a drafter of this experiment, whose traces the sim replays "
                           f"(drafters: {', '.join(methods)})")
    unnamed = acc.method is None and any(p.method is None for p in cfg.sim.policies)
    if unnamed and len(methods) > 1 and "dspark" not in methods:
        raise LabError(f"sim.acceptance.method: the traces will hold several drafters ({', '.join(methods)}); "
                       "name the one to replay")
    if acc.datasets:
        sets = [d.name for d in cfg.prompts.datasets]
        unknown = sorted(set(acc.datasets) - set(sets))
        if unknown:
            raise LabError(f"sim.acceptance.datasets: {unknown} are not prompt sets of this experiment "
                           f"(prompts.datasets: {', '.join(sets)})")
    temps = cfg.decode.temperatures
    if acc.temperature is not None and not any(abs(acc.temperature - t) <= 1e-8 + 1e-5 * abs(t) for t in temps):
        raise LabError(f"sim.acceptance.temperature {acc.temperature:g}: not one of decode.temperatures "
                       f"{[float(t) for t in temps]}")


def run_sim(ctx) -> None:
    """Sweep every policy; write results.parquet, requests.parquet, sla.csv, plots, summary.md (+ fidelity.csv)."""
    from sim.simulate import prepare_inputs
    from sim.sweep import (
        bench_serve_lines,
        compares_policies,
        plot_results,
        sla_table,
        summary_markdown,
        sweep_points,
    )

    sim = ctx.cfg.sim
    if sim is None:
        raise LabError(f"{ctx.cfg.name}: stage 'sim' needs a sim: section in the experiment YAML")
    out = ctx.path("sim")
    if ctx.stage_done("sim") and (out / "results.parquet").exists():
        return
    inputs = prepare_inputs(sim, ctx.root, ctx.cfg.seed)
    points = sweep_points(inputs, show_progress=ctx.show_progress, with_requests=True)
    results = pd.DataFrame([summary for summary, _ in points])
    requests = pd.concat([log for _, log in points], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.parquet") as tmp:
        results.to_parquet(tmp, index=False)
    with atomic_path(out / "requests.parquet") as tmp:
        requests.to_parquet(tmp, index=False)
    sla = sla_table(results, sim)
    with atomic_path(out / "sla.csv") as tmp:
        sla.to_csv(tmp, index=False)
    if sim.plots and compares_policies(results, sim):  # fig7 / fig8 compare policies: none for `ar` alone
        plot_results(results, sla, sim, out)
    text = summary_markdown(results, sla, sim, inputs.notes)
    print("\n".join(bench_serve_lines(results, sim)))  # the numbers to hold against a benchmark's, on the terminal
    if inputs.cost is not None and inputs.cost.profile is not None:
        lines = coverage_lines(results, inputs.cost.profile.axes)
        for line in lines[1:]:  # the warning (stdout too)
            print(line)
        text += "\n" + "\n".join(lines) + "\n"
    if inputs.reference_log is not None:
        fidelity = fidelity_frame(points, inputs.reference_log)
        with atomic_path(out / "fidelity.csv") as tmp:
            fidelity.to_csv(tmp, index=False)
        section = fidelity_markdown(fidelity, sim.workload.log_path, inputs.replay_users)
        print(section)
        text += "\n" + section
        if sim.plots:
            plot_fidelity(points, inputs.reference_log, out / "fidelity.png")
    write_text_atomic(out / "summary.md", text)
    ctx.mark_done("sim", {"points": len(results)})


def coverage_lines(results: pd.DataFrame, axes) -> list[str]:
    """summary.md's step-profile coverage (sim/profile_coverage.py): one line over all points, then, where some
    point's share of step time outside the measured grid reaches WARN_SHARE, one warning line for the worst."""
    from sim.profile_coverage import coverage_text, coverage_warning, pooled

    rows = results.to_dict("records")
    lines = [f"Step profile coverage (all {len(rows)} points): {coverage_text(pooled(rows), axes)}."]
    worst = max(rows, key=lambda r: r["profile_outside_share"])
    warning = coverage_warning(worst, axes)
    if warning is not None:
        point = "" if not np.isfinite(worst["value"]) else f" at {worst['value']:g}"
        lines.append(f"{warning} [worst point: {worst['policy']}{point}, seed {worst['seed']}]")
    return lines


def fidelity_frame(points, reference_log: pd.DataFrame) -> pd.DataFrame:
    """The error table of every sweep point against the replayed log: policy, value, seed, metric, sim, log,
    rel_error (sim / log - 1)."""
    from sim.serving_metrics import fidelity_table

    frames = []
    for summary, log in points:
        t = fidelity_table(log, reference_log)
        t.insert(0, "seed", summary["seed"])
        t.insert(0, "value", summary["value"])
        t.insert(0, "policy", summary["policy"])
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def plot_fidelity(points, reference_log: pd.DataFrame, path) -> None:
    """fidelity.png: per-request TTFT, TPOT and E2E distributions (CDFs), the log against each sweep point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.serving_metrics import per_request

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    curves = [("log", per_request(reference_log))]
    curves += [(f"sim {s['policy']}" + ("" if not np.isfinite(s["value"]) else f" @ {s['value']:g}"), per_request(log))
               for s, log in points]
    for ax, (col, label) in zip(axes, (("ttft_s", "TTFT (s)"), ("tpot_ms", "TPOT (ms)"), ("e2e_s", "E2E (s)"))):
        for name, per in curves:
            x = np.sort(per.loc[per["finished"], col].to_numpy(np.float64))
            x = x[np.isfinite(x)]
            ax.plot(x, np.arange(1, len(x) + 1) / max(len(x), 1), label=name, lw=2 if name == "log" else 1)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
    axes[0].legend(fontsize=8)
    fig.suptitle("Simulator vs the replayed per-request log")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def fidelity_markdown(fidelity: pd.DataFrame, where: str, users: int | None = None) -> str:
    """The 'Simulator vs the replayed log' section of summary.md (and so of REPORT.md); `users`: the log's
    --max-concurrency, replayed closed-loop."""
    sent = (f"The same requests in send order to {users} closed-loop users (--max-concurrency {users}), same "
            "input and output tokens" if users else "Same arrivals, input and output tokens")
    lines = [f"### Simulator vs the replayed log ({where})", "",
             (f"{sent}; vLLM benchmark definitions (sim/serving_metrics.py): "
              "TPOT = (E2E - TTFT) / (output tokens - 1), throughput = output tokens / (last finish - first "
              "arrival)."), "", "| policy | point | metric | sim | log | error |", "|---|---|---|---|---|---|"]
    for _, r in fidelity.iterrows():
        point = "-" if not np.isfinite(r.value) else f"{r.value:g}"
        err = "n/a" if not np.isfinite(r.rel_error) else f"{r.rel_error * 100:+.1f}%"
        lines.append(f"| {r.policy} | {point} | {r.metric} | {r.sim:.4g} | {r.log:.4g} | {err} |")
    return "\n".join(lines) + "\n"


def expert_split(cost) -> str:
    """`lab validate`'s words for where a MoE model's routed experts live and the weights one GPU holds ("" for a
    dense model): each replica whole, spread over an expert-parallel group, or split over the DP ranks (dp_mode
    vllm: vLLM's DP without EP)."""
    m = cost.model
    if not m.moe_experts:
        return ""
    ranks = cost._dp * cost.moe_dp  # replicas sharing one copy of the experts
    per_gpu = (m.resident_weight_bytes(ranks) + m.replicated_extra_bytes(cost.tp)) / cost.tp / 2**30
    if cost.moe_dp > 1:
        where = (f"every expert split over {cost.moe_dp} DP ranks x tp {cost.tp} = {cost.moe_dp * cost.tp} GPUs, "
                 "dp_mode vllm")
    elif cost.ep > 1:
        where = f"experts spread over ep {cost.ep} GPUs"
    else:
        where = f"every expert on each replica's {cost.tp} GPU{'s' if cost.tp > 1 else ''}"
    return f", {per_gpu:.1f} GiB per GPU ({where})"


def describe_sim(sim) -> str | None:
    """One line for `lab validate`: what the simulator will serve -- the model's size, the KV cache one replica holds
    and the engine limits it runs with (vLLM's defaults for the card where the YAML leaves them out), to compare with
    the `vllm serve` log of the server being modelled ("GPU KV cache size: N tokens"). None where the step cost
    needs files a stage of the run writes first (cost.profile: run)."""
    from sim.cost import CostModel
    from sim.hardware import engine_with_defaults
    from sim.simulate import kv_pool

    try:
        cost = CostModel.from_config(sim)
    except LabError:
        return None
    engine = engine_with_defaults(sim.engine, cost.hw, cost.model)
    tokens, _ = kv_pool(sim.model_copy(update={"engine": engine}), cost)
    m = cost.model
    gib = m.weight_bytes / 2**30
    return (f"sim: {sim.replicas} x {cost.hw.name} (tp {cost.tp}), {m.name}: {m.params_b:.2f} B parameters "
            f"({gib:.1f} GiB of weights, {m.dtype}){expert_split(cost)}; KV cache {tokens:,} tokens per replica; "
            "max_num_seqs "
            f"{engine.max_num_seqs}, max_num_batched_tokens {engine.max_num_batched_tokens} (compare the served "
            "engine's log: 'GPU KV cache size')")
