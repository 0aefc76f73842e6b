"""The report stage: REPORT.md for a run, assembled from what the other stages wrote.

    lab run experiments/smoke.yaml --stages report

Reads tau.csv (evaluate), traces/ (per-position rates), calibration.json (calibrate), sim/summary.md
and sim/sla.csv (sim), and links every PNG in the run. Computes nothing that is stored elsewhere.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lab.config import RANDOM_INIT_NOTE
from lab.io import write_text_atomic
from lab.metrics import conditional_counts, reported_speedup
from lab.runs import RunContext
from lab.trace import read_traces


# every column of a CSV the lab writes that holds a name (a drafter, dataset, policy, engine variant or load,
# a check's row id, GPU or model): a dataset called NA, null or 007 stays that name
NAME_COLUMNS = ("method", "dataset", "drafter", "prompt_id", "policy", "variant", "load", "profile", "priced_by",
                "metric", "id", "half", "gpu", "model", "sim_model_kind", "frontend", "run", "device", "fit", "term")


def read_named_csv(path) -> pd.DataFrame:
    """A CSV the lab wrote (tau.csv, sim/sla.csv, engine/fidelity.csv, the validation tables), its name
    columns (NAME_COLUMNS) as plain text. pandas reads a name NA, nan, null or None as a missing value, and
    007 or 1e3 as a number: the NA dataset's column vanished from REPORT.md's tables and its macro average,
    a policy named None from the dashboards' SLA table; so the name columns are read again as text."""
    frame = pd.read_csv(path)
    text = [c for c in NAME_COLUMNS if c in frame.columns]
    if text and len(frame):
        frame[text] = pd.read_csv(path, usecols=text, dtype=str, keep_default_na=False)[text]
    return frame


read_tau_csv = read_named_csv  # the name callers used before it read every name-keyed CSV


def markdown_table(frame: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "n/a" if np.isnan(v) else floatfmt.format(v)
        return str(v)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def table1_layout(summary: pd.DataFrame, value: str) -> pd.DataFrame:
    """Drafters as rows, datasets as columns, plus the macro average (the paper's Table 1 layout)."""
    wide = summary.pivot_table(index=["temperature", "method"], columns="dataset", values=value).reset_index()
    datasets = [c for c in wide.columns if c not in ("temperature", "method")]
    wide["macro"] = wide[datasets].mean(axis=1)
    return wide


def position_table(traces: pd.DataFrame) -> pd.DataFrame:
    """Conditional acceptance c_j per (table, temperature, drafter), one column per position j; each cell
    is "c_j (n)" with n the drafts that reached position j (late positions rest on few drafts)."""
    rows = []
    for (table, temperature, method), group in traces.groupby(["table", "temperature", "method"]):
        row = {"table": table, "temperature": temperature, "method": method}
        for j, (reached, passed) in enumerate(zip(*conditional_counts(group)), start=1):
            row[f"c{j}"] = "n/a" if reached == 0 else f"{passed / reached:.2f} ({reached})"
        rows.append(row)
    return pd.DataFrame(rows)


def ratio_table(summary: pd.DataFrame, reference: str) -> pd.DataFrame:
    """tau of `reference` (a drafter name) over each drafter's tau, macro-averaged over datasets first
    (the paper's +x% comparisons), per temperature."""
    macro = summary.groupby(["temperature", "method"])["tau"].mean().unstack("method")  # [T, drafters]
    if reference not in macro:
        return pd.DataFrame()
    rows = [{"temperature": t, "drafter": m, "tau macro": macro.loc[t, m],
             f"tau({reference}) / tau(drafter)": macro.loc[t, reference] / macro.loc[t, m]}
            for t in macro.index for m in macro.columns if m != reference]
    return pd.DataFrame(rows)


def time_table(summary: pd.DataFrame) -> pd.DataFrame:
    """tau.csv -> per (method, temperature) means over datasets of the cost columns."""
    cols = ["tau", "draft_ms", "verify_ms", "ar_ms_per_token", "tau_break_even", "speedup"]
    table = summary.groupby(["method", "temperature"], sort=False)[cols].mean().reset_index()
    table["tau_for_1.6x"] = 1.6 * table["tau_break_even"]
    return table


def training_table(drafters_dir) -> pd.DataFrame:
    """Each drafter's train_log.csv -> loss, analytic tau and first-slot acceptance on the training batches,
    averaged over the first and the last tenth of its steps (a learning curve in two points)."""
    rows = []
    for log_path in sorted(drafters_dir.glob("*/train_log.csv")):
        log = pd.read_csv(log_path)
        if log.empty:
            continue
        window = max(1, len(log) // 10)
        first, last = log.head(window), log.tail(window)
        rows.append({"drafter": log_path.parent.name, "steps": int(log["step"].max()),
                     "loss first": first["loss"].mean(), "loss last": last["loss"].mean(),
                     "tau first": first["tau"].mean(), "tau last": last["tau"].mean(),
                     "accept@1 first": first["accept@1"].mean(), "accept@1 last": last["accept@1"].mean(),
                     "s/step": log["seconds"].mean()})
    return pd.DataFrame(rows)


def calibration_table(payload: dict) -> pd.DataFrame:
    rows = []
    for method, entry in payload.get("methods", {}).items():
        for j, (temp, before, after) in enumerate(zip(entry["temperatures"], entry["ece_before"],
                                                      entry["ece_after"]), start=1):
            rows.append({"method": method, "table": entry.get("table"), "T": entry.get("sampling_temperature"),
                         "position": j, "sts_temperature": temp, "ece_before": before, "ece_after": after})
    return pd.DataFrame(rows)


def section(title: str, explanation: str, table: pd.DataFrame, floatfmt: str = "{:.3f}") -> list[str]:
    """A REPORT.md section: heading, one paragraph saying how to read it, the table."""
    return [f"## {title}", "", explanation, "", markdown_table(table, floatfmt), ""]


def target_line(ctx: RunContext) -> tuple[str, str]:
    """The target as the real stages recorded it in target.json (the resolved dtype when the YAML says
    auto, the CPU capability or the GPU's name); the YAML's own words when no real stage ran."""
    cfg, path = ctx.cfg, ctx.path("target.json")
    if not path.exists():
        return cfg.target.dtype, f"{cfg.target.dtype} on {cfg.target.device}"
    rec = json.loads(path.read_text())
    dtype = rec["dtype"] + (" (auto)" if rec.get("dtype_requested") == "auto" else "")
    where = rec.get("cuda_device") or f"CPU capability {rec.get('cpu_capability')}"
    engine = f", {rec['engine']} engine" if rec.get("engine") else ""
    if (rec.get("cpu_linear") or {}).get("applied"):
        engine += f", few-row linears as W @ x^T ({rec['cpu_linear']['mode']}; target.json)"
    return rec["dtype"], f"{dtype} on {rec['device']}, {where}{engine}"


def budget_lines(ctx: RunContext) -> list[str]:
    """One paragraph when decode.time_budget_s cut evaluate short (evaluate.json), none otherwise."""
    path = ctx.path("evaluate.json")
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    groups = list(record["groups"].values())
    decoded, available = sum(g["prompts"] for g in groups), sum(g["available"] for g in groups)
    if decoded >= available:
        return []
    per_group = ", ".join(f"{g['dataset']} T={g['temperature']:g}: {g['prompts']}/{g['available']}" for g in groups)
    return [(f"**Evaluate ran {decoded} of {available} prompts** within its time budget "
            f"(decode.time_budget_s {record['time_budget_s']:g} s; per group {per_group}): every number below "
            "comes from those prompts only. Raise or drop the budget for all of them."), ""]


REAL_OUTPUTS = ("target.json", "traces", "tau.csv", "drafters")  # what the real stages leave in a run directory


def build_report(ctx: RunContext) -> str:
    cfg = ctx.cfg
    dtype, target_desc = target_line(ctx)
    lines = [f"# {cfg.name} — run {ctx.run_id}", ""]
    if cfg.target.init == "random":
        lines += [(f"**{RANDOM_INIT_NOTE.capitalize()}.** The target `{cfg.target.name}` is a weights-free "
                   "sizing target (real architecture and tokenizer, random weights): its step times and the "
                   "pipeline are real, every acceptance length, rate and speedup below is not."), ""]
    if any(ctx.path(name).exists() for name in REAL_OUTPUTS):
        lines += [
                 (f"Target: `{cfg.target.name}` ({target_desc}); "
                 f"drafters: {', '.join(d.name for d in cfg.drafters)}; max_new_tokens {cfg.decode.max_new_tokens}."),
                 ("All numbers below were measured in this run; speedups compare the drafter and plain decoding of "
                 "the same prompts, decoded side by side."), ""]
    else:  # no real stage wrote anything here: the target section was never used
        lines += [(f"Simulation only (stages: {', '.join(cfg.stages)}): no model was loaded and nothing was decoded; "
                   "every number below is the simulator's."), ""]
    training = training_table(ctx.path("drafters"))
    if len(training):
        lines += section("Training (on the training batches, from each drafter's train_log.csv)",
                         "Means over the first and the last tenth of the steps. accept@1 = 1 - TV(p_draft, "
                         "p_target) of the first slot (its T=1 acceptance rate, teacher-forced); analytic tau = "
                         "1 + sum_j prod_(i<=j) accept@i; s/step = the drafter's own update time.", training)
    tau_path = ctx.path("tau.csv")
    if tau_path.exists():
        summary = read_named_csv(tau_path)
        flagged = summary[summary["speedup_unexplained"]] if "speedup_unexplained" in summary else summary[:0]
        summary = summary.assign(speedup=reported_speedup(summary))  # flagged values never print as results
        lines += budget_lines(ctx)
        lines += ["## Acceptance length tau (accepted + 1 per round)", "", markdown_table(table1_layout(summary, "tau")), ""]
        lines += ["## Wall-clock speedup vs autoregressive decoding (tokens/s ratio)", "",
                  markdown_table(table1_layout(summary, "speedup")), ""]
        if len(flagged):
            lines += section("Flagged speedups (not results)",
                             "These measured speedups exceed what the run's own tau and step times can explain "
                             "(bound = tau x AR ms per token / (draft ms + verify ms) x 1.1), so they are shown "
                             "n/a above: a cold or disturbed timer, not the drafter. Rerun before quoting them.",
                             flagged[["method", "dataset", "temperature", "tau", "speedup", "speedup_bound",
                                      "ar_ms_per_token", "draft_ms", "verify_ms"]])
        dspark = next((d.name for d in cfg.drafters if d.method == "dspark"), None)
        ratios = ratio_table(summary, dspark) if dspark else pd.DataFrame()
        if len(ratios):
            lines += section(f"{dspark} against each drafter (tau ratio, macro over datasets)",
                             "The paper reports DSpark +16-18% over DFlash and +27-31% over EAGLE-3 on Qwen3 "
                             "(drafters trained to convergence); these are this run's numbers.", ratios)
        if "tau_break_even" in summary:
            lines += section("Where the time goes (mean over datasets)",
                             "ms per verify round (drafting + verification) against the baseline's ms per token. "
                             "tau_break_even = round ms / AR ms per token: the acceptance length at which a "
                             "drafter only pays for itself; tau_for_1.6x is 1.6 times that. Prefill is left out.",
                             time_table(summary))
        greedy = summary[summary["temperature"] == 0]
        if len(greedy):
            lines += section("Greedy identity: spec-decoded output == the target's own greedy output",
                             f"Fraction of prompts identical token for token ({dtype}). In bf16 a "
                             "k-token verify can pick a different argmax than a 1-token decode; fp32 must be 1.000.",
                             greedy[["method", "dataset", "prompts", "identical_to_ar"]])
        lines += ["Full table: `tau.csv`.", ""]
    if ctx.path("traces").exists():
        positions = position_table(read_traces(ctx.path("traces")))
        if len(positions):
            lines += section("Per-position acceptance",
                             "conditional c_j = P(accepted >= j | accepted >= j-1), in brackets the drafts that "
                             "reached position j (c1 = P(first draft accepted) = s1, the survival curve's first point, over the rounds that drafted). rounds: real decode rounds; anchors "
                             "(greedy): a draft at every position of the target's own output. A falling c_j is "
                             "suffix decay.", positions)
    calibration = ctx.path("calibration.json")
    if calibration.exists():
        lines += section("Confidence calibration (STS)",
                         "Per-position temperatures fitted left to right on held-out prompts; ECE of the prefix "
                         "product before and after, on the evaluation prompts (`calibration.json`, "
                         "`reliability.png`).", calibration_table(json.loads(calibration.read_text())), "{:.4f}")
    sim_summary = ctx.path("sim", "summary.md")
    if sim_summary.exists():
        lines += ["## Serving simulation", "", sim_summary.read_text(), ""]
    pngs = sorted(p.relative_to(ctx.root) for p in ctx.root.rglob("*.png"))
    if pngs:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.as_posix()})" for p in pngs] + [""]
    return "\n".join(lines)


def run_stage(ctx: RunContext) -> None:
    write_text_atomic(ctx.path("REPORT.md"), build_report(ctx))
    ctx.mark_done("report")
