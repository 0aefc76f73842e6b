"""Loaders for the dashboards: run directories in, DataFrames out, through lab and sim only.

    from dashboards import data
    runs = data.run_dirs("runs")                        # newest first (manifest opened_at, else mtime)
    frame = data.traces(run_dir, data.stamp(run_dir))   # every readable trace shard; bad shards skipped
    tau = data.tau_csv(run_dir, data.stamp(run_dir))    # None if absent; LabError naming the file if bad
    table = data.fidelity(run_dir, data.stamp(run_dir)) # engine/fidelity.csv: the simulator against vLLM

Every file a page reads goes through `guarded_read`: a missing file is None, a file that exists but cannot
be read (empty, truncated, malformed, wrong columns) is one LabError "<path>: <what is wrong>", which the
page shows as one red line (ui.attempt / ui.guard). Trace shards are read one by one, so a corrupt shard
is reported and skipped instead of hiding every other method.

Every number shown by a page comes from lab.metrics, lab.report or sim (tau, survival, conditional rates,
vLLM counters, ECE, STS prefix probabilities, frontier, SLA table, per-request serving metrics, counter
acceptance, step profiles); this module only reads, groups and caches. Caches are keyed by path plus
`mtime` (data.stamp(run): the newest mtime under the run), so a rerun stage shows up on reload.
Nothing here imports torch.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import streamlit as st
import yaml

from lab.errors import LabError
from lab.metrics import (
    conditional_counts,
    conditional_rates,
    counter_acceptance,
    ece,
    num_drafts,
    reliability_bins,
    survival,
    tau_table,
    vllm_counters,
)
from lab.report import read_named_csv, table1_layout
from lab.trace import read_traces, run_ids_by_file, trace_files
from lab.yaml_load import load_yaml_bytes

RUNS_ENV = "DSPARK_LAB_RUNS"
GROUP = ["method", "dataset", "temperature", "table"]
PREFERRED_METHOD = "dspark"  # the default drafter wherever a page picks one
TAU_COLUMNS = ("method", "dataset", "temperature", "tau")
RESULTS_COLUMNS = ("policy", "value", "tpot_ms_p50", "throughput_per_gpu")
SLA_COLUMNS = ("sla_tok_s_user", "policy", "throughput_per_gpu", "gain_vs_baseline", "gain_vs_best_fixed_k")
DECODE_COLUMNS = ("method", "prompt_id", "tokens", "n_tokens")
# the derived tables' columns, also when no trace row (or no drafted token) is there to make a row from
TAU_TABLE_COLUMNS = (*GROUP, "tau", "rounds", "draft_acceptance_rate", "prompts")
POSITION_COLUMNS = ("method", "dataset", "temperature", "position", "survival", "drafts", "conditional", "reached")
COUNTER_COLUMNS = (*GROUP, "num_drafts", "num_draft_tokens", "num_accepted_tokens", "num_accepted_tokens_per_pos")

T = TypeVar("T")


# ---- the one guarded read --------------------------------------------------------------------------
def guarded_read(path: str | Path, reader: Callable[[Path], T], what: str) -> T | None:
    """Read `path` with `reader`: None if it does not exist, LabError("<path>: <what is wrong>") if it
    exists but cannot be read as a `what` (empty, truncated, malformed, missing columns)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return reader(path)
    except LabError:
        raise
    except pd.errors.EmptyDataError:
        raise LabError(f"{path}: empty file (no header, no rows)") from None
    except json.JSONDecodeError as exc:
        raise LabError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except yaml.YAMLError as exc:
        raise LabError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LabError(f"{path}: not a readable {what} ({type(exc).__name__}: {detail[:160]})") from None


def with_columns(read: Callable[[Path], pd.DataFrame], columns) -> Callable[[Path], pd.DataFrame]:
    def reader(path: Path) -> pd.DataFrame:
        frame = read(path)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise LabError(f"{path}: missing columns {missing} (has {list(frame.columns)})")
        return frame

    return reader


def _mapping(path: Path, parse: Callable[[str], object], kind: str) -> dict:
    value = parse(path.read_text())
    if not isinstance(value, dict):
        raise LabError(f"{path}: expected a {kind}, found {type(value).__name__}")
    return value


def _json_object(path: Path) -> dict:
    return _mapping(path, json.loads, "JSON object")


def _calibration_payload(path: Path) -> dict:
    from sim.calibrate import check_calibration  # the simulator's own check of what it reads

    return check_calibration(_json_object(path), str(path))


def _yaml_mapping(path: Path) -> dict:
    # the lab's own loader: a repeated key or an alias bomb in a copied run's config.yaml is one line too
    value = load_yaml_bytes(path.read_bytes(), str(path))
    if not isinstance(value, dict):
        raise LabError(f"{path}: expected a YAML mapping, found {type(value).__name__}")
    return value


# ---- runs ------------------------------------------------------------------------------------------
def default_root() -> str:
    return os.environ.get(RUNS_ENV, "runs")


def opened_at(run: Path) -> float:
    """When the run was opened: manifest.json's opened_at, else the manifest file's mtime."""
    try:
        return float(json.loads((run / "manifest.json").read_text())["opened_at"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return (run / "manifest.json").stat().st_mtime
        except OSError:
            return 0.0


def run_dirs(root: str | Path) -> list[Path]:
    """Run directories under root, newest first: <root>/<name>/<run_id>/manifest.json (or root is a run)."""
    root = Path(root)
    if (root / "manifest.json").is_file():
        return [root]
    runs = [p.parent for p in root.glob("*/*/manifest.json")]
    # newest first; a copy of a run keeps its opened_at, so the directory's own mtime breaks the tie
    return sorted(runs, key=lambda r: (opened_at(r), (r / "manifest.json").stat().st_mtime, str(r)), reverse=True)


def stamp(run: str | Path) -> float:
    """Newest mtime of any file in the run: the cache key part that changes when a stage rewrites output."""
    newest = 0.0
    for dirpath, _, files in os.walk(run):
        for f in files:
            try:
                newest = max(newest, os.stat(os.path.join(dirpath, f)).st_mtime)
            except OSError:
                continue
    return newest


def run_label(run: Path, root: str | Path) -> str:
    try:
        return run.relative_to(root).as_posix() or run.name
    except ValueError:
        return run.as_posix()


def runs_table(root: str) -> pd.DataFrame:
    """One row per run (newest first); a manifest that cannot be read is named in `problem`."""
    rows = []
    for run in run_dirs(root):
        problem = ""
        try:
            m = manifest(run)
        except LabError as exc:
            m, problem = {}, str(exc)
        stages = sorted(p.stem for p in (run / ".stages").glob("*.done")) if (run / ".stages").is_dir() else []
        rows.append(
            {
                "directory": run_label(run, root),
                "name": m.get("name", run.parent.name),
                "run_id": m.get("run_id", run.name),
                "opened": pd.Timestamp(opened_at(run), unit="s").strftime("%Y-%m-%d %H:%M:%S"),
                "stages_done": ", ".join(stages),
                "seed": m.get("seed"),
                "config_hash": m.get("config_hash", ""),
                "git_sha": str(m.get("git_sha", ""))[:10],
                "traces": (run / "traces").is_dir(),
                "decode": (run / "decode").is_dir(),
                "calibration": (run / "calibration.json").is_file(),
                "sim": (run / "sim" / "results.parquet").is_file(),
                "problem": problem,
                "path": str(run),
            }
        )
    return pd.DataFrame(rows)


def manifest(run: str | Path) -> dict:
    return guarded_read(Path(run) / "manifest.json", _json_object, "JSON object") or {}


def text(run: str | Path, name: str) -> str | None:
    return guarded_read(Path(run) / name, Path.read_text, "text file")


def pngs(run: str | Path) -> list[Path]:
    return sorted(Path(run).rglob("*.png"))


def _image_bytes(path: Path) -> bytes:
    from PIL import Image

    raw = path.read_bytes()
    try:
        Image.open(io.BytesIO(raw)).verify()
    except (OSError, SyntaxError) as exc:  # PIL reports a broken PNG as SyntaxError
        raise LabError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    return raw


def image(path: str | Path) -> bytes | None:
    """A PNG's bytes, checked by PIL (a truncated plot is one LabError line, not a broken image)."""
    return guarded_read(path, _image_bytes, "image")


def config(run: str | Path) -> dict:
    """The run's config.yaml as a mapping ({} when absent)."""
    return guarded_read(Path(run) / "config.yaml", _yaml_mapping, "YAML mapping") or {}


def drafter_methods(run: str | Path) -> dict[str, str]:
    """Drafter name -> method from config.yaml (e.g. {"mtp": "mtp", "dspark": "dspark"})."""
    drafters = config(run).get("drafters") or []
    return {d["name"]: d.get("method", d["name"]) for d in drafters if isinstance(d, dict) and "name" in d}


def pick_default(options: list, preferred=PREFERRED_METHOD) -> int:
    """Index of the preferred option (dspark) when present, else 0."""
    return options.index(preferred) if preferred in options else 0


# ---- traces ----------------------------------------------------------------------------------------
@st.cache_resource(show_spinner="Reading traces ...", max_entries=8)
def trace_shards(run: str, mtime: float) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(rows of every readable shard under <run>/traces, the readable shard paths, one line per shard that
    was skipped: lab.trace's LabError text naming the file and what is wrong).

    A shared resource, not a copy per call (unpickling a large trace frame on every rerun was the pages'
    main cost): callers select and derive, never modify it in place."""
    tdir = Path(run) / "traces"
    empty = pd.DataFrame(columns=["run_id", *GROUP, "prompt_id", "step", "k", "accepted"])
    if not tdir.is_dir():
        return empty, [], []
    try:
        files = trace_files(tdir)
    except LabError as exc:
        return empty, [], [str(exc)]
    frames, good, problems = [], [], []
    for f in files:
        try:
            frames.append(read_traces(f))
            good.append(f)
        except LabError as exc:
            problems.append(str(exc))
    frames, good, foreign = own_run_shards(Path(run).name, frames, good)
    problems += foreign
    return (pd.concat(frames, ignore_index=True) if frames else empty), [str(f) for f in good], problems


def own_run_shards(run_id: str, frames: list[pd.DataFrame], files: list[Path]):
    """(frames, files, one line per file left out): the shards of one run when another run's were copied in
    beside them -- those of run_id (the run directory's name), or of the run most files hold when none is."""
    owners = run_ids_by_file(files, frames)
    if len(owners) <= 1:
        return frames, files, []
    keep = run_id if run_id in owners else max(owners, key=lambda r: len(owners[r]))
    kept, kept_files, left_out = [], [], []
    for f, frame in zip(files, frames):
        others = sorted(set(map(str, pd.unique(frame["run_id"]))) - {keep})
        if others:
            left_out.append(f"{f}: rows of run_id {', '.join(repr(o) for o in others)}, not this run's {keep!r} "
                            "(another run's shard copied in; left out)")
        else:
            kept.append(frame)
            kept_files.append(f)
    return kept, kept_files, left_out


def traces(run: str, mtime: float) -> pd.DataFrame:
    """All readable trace rows of the run (see trace_problems for the shards that were skipped)."""
    return trace_shards(run, mtime)[0]


def trace_problems(run: str, mtime: float) -> list[str]:
    return trace_shards(run, mtime)[2]


@st.cache_data(show_spinner=False)
def tau_csv(run: str, mtime: float) -> pd.DataFrame | None:
    return guarded_read(Path(run) / "tau.csv", with_columns(read_named_csv, TAU_COLUMNS), "CSV table")


def table1(tau: pd.DataFrame, value: str) -> pd.DataFrame:
    """Drafters x datasets + macro average (lab.report.table1_layout)."""
    return table1_layout(tau, value)


@st.cache_data(show_spinner=False)
def tau_by_table(run: str, mtime: float) -> pd.DataFrame:
    """lab.metrics.tau_table per method x dataset x temperature x table (rounds and anchors)."""
    f = traces(run, mtime)
    return tau_table(f, by=tuple(GROUP)) if len(f) else pd.DataFrame(columns=list(TAU_TABLE_COLUMNS))


@st.cache_data(show_spinner=False)
def coverage(run: str, mtime: float) -> pd.DataFrame:
    """Per method x dataset x temperature x table: rounds and drafted tokens (to say why a curve is absent)."""
    f = traces(run, mtime)
    if f.empty:
        return pd.DataFrame(columns=[*GROUP, "rounds", "drafted_tokens"])
    return f.groupby(GROUP, sort=True).agg(rounds=("k", "size"), drafted_tokens=("k", "sum")).reset_index()


@st.cache_data(show_spinner=False)
def positions(run: str, mtime: float, table: str) -> pd.DataFrame:
    """Long frame per method x dataset x temperature x position j: survival s_j over the group's `drafts`
    (rounds with k > 0, vLLM's num_drafts), and the conditional rate c_j over the `reached` drafts that
    drafted and reached j (lab.metrics)."""
    f = traces(run, mtime)
    f = f[f["table"] == table]
    rows = []
    for (method, dataset, temp), g in f.groupby(["method", "dataset", "temperature"], sort=True):
        reached, _ = conditional_counts(g)
        for j, (c, s, n) in enumerate(zip(conditional_rates(g), survival(g), reached), start=1):
            rows.append(
                {
                    "method": method,
                    "dataset": dataset,
                    "temperature": float(temp),
                    "position": j,
                    "survival": s,
                    "drafts": num_drafts(g),
                    "conditional": c,
                    "reached": int(n),
                }
            )
    # a run whose drafter never proposed (every k = 0: an n-gram drafter on prompts with no repeats) has no
    # position: the columns stay, so that the page says "no rows with drafts" (a KeyError 'method' before)
    return pd.DataFrame(rows, columns=list(POSITION_COLUMNS))


@st.cache_data(show_spinner=False)
def counters(run: str, mtime: float) -> pd.DataFrame:
    """lab.metrics.vllm_counters per group; per-position counts as a list column."""
    rows = []
    for key, g in traces(run, mtime).groupby(GROUP, sort=True):
        rows.append({**dict(zip(GROUP, key)), **vllm_counters(g)})
    return pd.DataFrame(rows, columns=list(COUNTER_COLUMNS))


def absent_drafters(cover: pd.DataFrame, drafters: list[str], datasets: list[str], temperature: float,
                    table: str, problems: list[str]) -> list[str]:
    """One line per selected drafter that has no curve in this slice, with the reason."""
    lines = []
    for name in drafters:
        c = cover[(cover["method"] == name) & cover["dataset"].isin(datasets)
                  & np.isclose(cover["temperature"].astype(float), temperature) & (cover["table"] == table)]
        skipped = [p for p in problems if f"__{name}__" in Path(p.split(": ", 1)[0]).name]
        if c.empty:
            reason = f"no {table} rows at T={temperature:g}"
            if skipped:
                reason += f" (its shard {Path(skipped[0].split(': ', 1)[0]).name} was skipped, see above)"
            lines.append(f"{name}: {reason}")
        elif int(c["drafted_tokens"].sum()) == 0:
            lines.append(f"{name}: {int(c['rounds'].sum())} {table} rows at T={temperature:g}, none drafted a token (k = 0)")
    return lines


# ---- calibration -----------------------------------------------------------------------------------
@st.cache_data(show_spinner=False)
def calibration(run: str | Path, mtime: float | None = None) -> dict | None:
    """calibration.json (None if absent; LabError if malformed)."""
    return guarded_read(Path(run) / "calibration.json", _calibration_payload, "calibration file")


def sts_temperatures(cal: dict | None, method: str, temperature: float) -> tuple[list[float] | None, str]:
    """(STS temperatures to apply to this method at this sampling temperature, a note saying why not).

    STS is fitted per sampling temperature (sim.calibrate writes `sampling_temperature`); temperatures fitted
    at one sampling temperature are not applied to another."""
    entry = ((cal or {}).get("methods") or {}).get(method)
    if not cal:
        return None, "no calibration.json in this run"
    if entry is None:
        return None, f"calibration.json has no entry for {method!r}"
    fitted = entry.get("sampling_temperature")
    if fitted is None:
        return list(entry["temperatures"]), "calibration.json does not record its sampling temperature"
    if not np.isclose(float(fitted), temperature):
        return None, (f"STS temperatures of {method!r} were fitted at sampling temperature T={float(fitted):g}; "
                      f"not applied at T={temperature:g}")
    return list(entry["temperatures"]), ""


@st.cache_data(show_spinner="Computing reliability ...")
def reliability(
    run: str,
    mtime: float,
    method: str,
    temperature: float,
    table: str,
    temps: tuple[float, ...] | None,
    bins: int = 20,
    datasets: tuple[str, ...] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cumulative-product confidences prod_{j<=k} c_j (STS-scaled when temps) against 1[accepted >= k].

    Returns (diagram points per variant, ECE per position per variant). Rows and arrays come from
    sim.trace_rows (the simulator's own selection and packing), prefix products from sim.calibrate.
    """
    from sim.calibrate import prefix_probs
    from sim.trace_rows import pack_rows, select_rows

    f = traces(run, mtime)
    f = f[(f["method"] == method) & np.isclose(f["temperature"], temperature) & (f["table"] == table)]
    if datasets:  # the page's dataset filter (default: every dataset)
        f = f[f["dataset"].isin(datasets)]
    gamma = int(f["k"].max()) if len(f) else 0
    if gamma < 1:
        return pd.DataFrame(), pd.DataFrame()
    conf, _, kcap, accepted = pack_rows(select_rows(f, method, temperature, table, where=f"{run}/traces").rows, gamma)
    pos = np.arange(gamma)[None, :]
    valid = kcap[:, None] > pos  # [n, gamma]: position drafted
    label = (accepted[:, None] > pos).astype(np.float64)  # [n, gamma]: accepted prefix reaches it
    variants = [("raw", np.ones(gamma))]
    if temps:
        t = np.ones(gamma)
        n = min(len(temps), gamma)
        t[:n] = temps[:n]
        t[n:] = temps[-1]
        variants.append(("STS", t))
    points, per_pos = [], []
    for name, t in variants:
        p = prefix_probs(conf, t)
        b = reliability_bins(p[valid], label[valid], bins)
        b["variant"] = name
        points.append(b)
        for k in range(gamma):
            rows = valid[:, k]
            per_pos.append(
                {
                    "variant": name,
                    "position": k + 1,
                    "n": int(rows.sum()),
                    "mean_confidence": float(p[rows, k].mean()) if rows.any() else np.nan,
                    "accept_rate": float(label[rows, k].mean()) if rows.any() else np.nan,
                    "ece": ece(p[rows, k], label[rows, k], bins),
                }
            )
    return pd.concat(points, ignore_index=True), pd.DataFrame(per_pos)


# ---- simulation ------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False)
def sim_results(run: str, mtime: float) -> pd.DataFrame | None:
    """<run>/sim/results.parquet (None if absent; LabError if unreadable)."""
    return guarded_read(Path(run) / "sim" / "results.parquet",
                        with_columns(pd.read_parquet, RESULTS_COLUMNS), "Parquet table")


@st.cache_data(show_spinner=False)
def sim_sla(run: str, mtime: float) -> pd.DataFrame | None:
    """<run>/sim/sla.csv (None if absent; LabError if unreadable)."""
    return guarded_read(Path(run) / "sim" / "sla.csv", with_columns(read_named_csv, SLA_COLUMNS), "CSV table")


def frontier(results: pd.DataFrame, percentile: int = 50) -> pd.DataFrame:
    """sim.sweep.frontier: per policy and sweep value, tok/s/user at the TPOT percentile vs tok/s/GPU."""
    from sim.sweep import frontier as sim_frontier

    return sim_frontier(results, percentile)


def coinciding(front: pd.DataFrame, columns=("tok_s_user", "throughput_per_gpu")) -> list[list[str]]:
    """Groups of policies whose frontier points are identical (drawn on top of each other)."""
    series = {}
    for policy, g in front.groupby("policy", sort=False):
        series[policy] = g.sort_values("value")[["value", *columns]].to_numpy(dtype=np.float64)
    groups: list[list[str]] = []
    for policy, points in series.items():
        for group in groups:
            other = series[group[0]]
            if other.shape == points.shape and np.allclose(other, points, rtol=1e-9, atol=0, equal_nan=True):
                group.append(policy)
                break
        else:
            groups.append([policy])
    return [g for g in groups if len(g) > 1]


def percent(v) -> str:
    """A gain as summary.md writes it (+12.3%, n/a, baseline misses SLA): sim.sweep's own formatter."""
    from sim.sweep import _pct

    return _pct(v)


def sla_display(sla: pd.DataFrame) -> pd.DataFrame:
    """sla.csv with the gains as percentages, as in sim/summary.md."""
    shown = sla.copy()
    for column in ("gain_vs_baseline", "gain_vs_best_fixed_k"):
        shown[column] = shown[column].map(percent)
    return shown


def gains_wide(sla: pd.DataFrame) -> pd.DataFrame:
    """sla.csv pivoted: one row per SLA point, throughput and gains (percent) per policy as columns."""
    wide = sla.pivot_table(
        index="sla_tok_s_user",
        columns="policy",
        values=["throughput_per_gpu", "gain_vs_baseline", "gain_vs_best_fixed_k"],
        sort=False,
    )
    for column in wide.columns:
        if column[0].startswith("gain"):
            wide[column] = wide[column].map(percent)
    wide.columns = [f"{policy} {metric}" for metric, policy in wide.columns]
    return wide.reset_index()


@st.cache_data(show_spinner="Simulating ...", max_entries=32)
def ablation(sim_json: str, run: str | None, mtime: float | None, seed: int = 0):
    """Run a small sweep in process: sim.simulate.prepare_inputs + sim.sweep.run_sweep(workers=1) + sla_table.

    sim_json: a lab.config_sim.SimSection as JSON (validated here, so a bad knob is one LabError line).
    run: the run directory when acceptance.source is 'run' (None otherwise); mtime keys the cache.
    """
    from pydantic import ValidationError

    from lab.config_sim import SimSection
    from sim.simulate import prepare_inputs
    from sim.sweep import run_sweep, sla_table

    try:
        sim = SimSection.model_validate_json(sim_json)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise LabError(f"sim.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    inputs = prepare_inputs(sim, Path(run) if run else None, seed)
    results = run_sweep(inputs, show_progress=False, workers=1)
    return results, sla_table(results, sim), list(inputs.notes)


# ---- per-prompt decode files -----------------------------------------------------------------------
def decode_files(run: str | Path) -> list[Path]:
    """<run>/decode/<dataset>__T<t>.parquet, sorted."""
    d = Path(run) / "decode"
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


@st.cache_data(show_spinner=False)
def decode_frame(path: str, mtime: float) -> pd.DataFrame | None:
    """One decode file: a row per prompt x method (tokens, timings; prompt and token_text when recorded)."""
    return guarded_read(path, with_columns(pd.read_parquet, DECODE_COLUMNS), "Parquet decode file")


def round_spans(n_tokens: int, accepted: list[int]) -> list[tuple[int, int, int, str]]:
    """Split a speculative decode's emitted tokens into (start, end, round, kind) spans, kind "prefill"
    (the first token, from the prefill), "draft" (the drafts accepted in a round) or "target" (the round's
    bonus or corrected token from the target). Round r emits accepted[r] drafts then one target token
    (real/decode.py); the output may be cut at max_new_tokens or EOS, so spans are clipped to n_tokens."""
    spans = [(0, min(1, n_tokens), -1, "prefill")] if n_tokens else []
    pos = 1
    for r, a in enumerate(accepted):
        if pos >= n_tokens:
            break
        if a:
            spans.append((pos, min(pos + a, n_tokens), r, "draft"))
        if pos + a < n_tokens:
            spans.append((pos + a, pos + a + 1, r, "target"))
        pos += a + 1
    return spans


def rounds_of(run: str, mtime: float, method: str, dataset: str, temperature: float, prompt_id: str) -> pd.DataFrame:
    """The rounds-table rows of one decode (one prompt, one drafter), in decode order."""
    f = traces(run, mtime)
    f = f[(f["table"] == "rounds") & (f["method"] == method) & (f["dataset"] == dataset)
          & np.isclose(f["temperature"].astype(float), temperature) & (f["prompt_id"] == prompt_id)]
    return f.sort_values("step")


@st.cache_data(show_spinner=False)
def prompt_tau(run: str, mtime: float, dataset: str, temperature: float) -> pd.DataFrame:
    """tau per prompt (rows) and drafter (columns) from the rounds table (lab.metrics.tau_table)."""
    f = traces(run, mtime)
    f = f[(f["table"] == "rounds") & (f["dataset"] == dataset) & np.isclose(f["temperature"].astype(float), temperature)]
    if f.empty:
        return pd.DataFrame()
    return tau_table(f, by=("prompt_id", "method")).pivot(index="prompt_id", columns="method", values="tau").reset_index()


# ---- the engine stage (vLLM beside the lab) and measured step profiles ----------------------------
FIDELITY_COLUMNS = ("variant", "load", "metric", "sim", "log", "rel_error")
# issue 10's goals for the simulator against vLLM: |sim / vLLM - 1| at most this (BENCHMARKS.md quotes them)
FIDELITY_GOALS = {"tpot_mean_ms": 0.05, "throughput_tok_s": 0.05, "ttft_mean_s": 0.15}
# fidelity.csv's `profile` column -> the simulated per-request log of that replay (real/engine/fidelity.py)
SIM_LOGS = {"raw": "sim_requests.parquet", "drift_corrected": "sim_requests_drift_corrected.parquet"}
PROFILE_LABELS = {"raw": "raw (the step profile as measured)",
                  "drift_corrected": "drift-corrected (the profile x each load's reference ratio)"}
CHUNK_COLUMNS = ("request_id", "t_s", "output_tokens")
COUNTER_NAMES = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
PER_POS = "num_accepted_tokens_per_pos"


def engine_dir(run: str | Path) -> Path:
    return Path(run) / "engine"


def profile_paths(run: str | Path) -> list[Path]:
    """A run's step profiles: step_profile.csv (`lab profile`), engine/step_profile.csv (the vLLM server's)
    and engine/<variant>/step_profile.csv (a speculative variant's decode steps)."""
    run = Path(run)
    found = [p for p in (run / "step_profile.csv", engine_dir(run) / "step_profile.csv") if p.is_file()]
    return found + sorted(engine_dir(run).glob("*/step_profile.csv"))


def engine_runs(root: str | Path) -> list[Path]:
    """The runs under root with an engine stage or a step profile (newest first)."""
    return [r for r in run_dirs(root) if engine_dir(r).is_dir() or profile_paths(r)]


@st.cache_data(show_spinner=False)
def engine_info(run: str, mtime: float) -> dict | None:
    """engine/engine.json: the engine's versions, the served model, the engine section's settings."""
    return guarded_read(engine_dir(run) / "engine.json", _json_object, "JSON object")


def engine_cases(run: str | Path, info: dict | None) -> list[tuple[str, str]]:
    """(variant, load) of every load the engine drove (engine/<variant>/<load>/requests.parquet), in the
    engine section's order (engine.json settings) where it names them, else by name."""
    settings = (info or {}).get("settings") or {}

    def order(key: str) -> dict[str, int]:
        entries = settings.get(key) if isinstance(settings.get(key), list) else []
        return {e["name"]: i for i, e in enumerate(entries) if isinstance(e, dict) and "name" in e}

    variants, loads = order("variants"), order("loads")
    found = [(p.parent.parent.name, p.parent.name) for p in engine_dir(run).glob("*/*/requests.parquet")]
    return sorted(found, key=lambda c: (variants.get(c[0], len(variants)), c[0], loads.get(c[1], len(loads)), c[1]))


def _fidelity_table(path: Path) -> pd.DataFrame:
    frame = with_columns(read_named_csv, FIDELITY_COLUMNS)(path)
    if "profile" not in frame.columns:  # written before the drift correction: every row is raw
        frame = frame.assign(profile="raw", profile_scale=1.0)
    return frame


@st.cache_data(show_spinner=False)
def fidelity(run: str, mtime: float) -> pd.DataFrame | None:
    """engine/fidelity.csv (the fidelity stage): variant, load, profile, profile_scale, metric, sim, log
    (vLLM), rel_error = sim / log - 1."""
    return guarded_read(engine_dir(run) / "fidelity.csv", _fidelity_table, "CSV table")


def with_goals(table: pd.DataFrame) -> pd.DataFrame:
    """The fidelity rows plus `goal` (FIDELITY_GOALS, NaN for metrics without one) and `verdict`: met,
    missed, n/a (no finite error) or empty (no goal)."""
    out = table.copy()
    out["goal"] = out["metric"].map(FIDELITY_GOALS).astype(float)
    error = out["rel_error"].abs()
    out["verdict"] = np.select([out["goal"].isna(), ~np.isfinite(error), error <= out["goal"]],
                               ["", "n/a", "met"], "missed")
    return out


def fidelity_wide(table: pd.DataFrame, profile: str) -> pd.DataFrame:
    """One row per variant x load of one profile: the error of each metric in percent, the goals met
    (`goals met` "k/n") and the names of those missed; with engine.rounds > 1 (columns rounds, log_spread)
    also the rounds and vLLM's own round-to-round sd of each goal metric (`<metric> vLLM sd %`)."""
    part = with_goals(table[table["profile"] == profile])
    rows = []
    for (variant, load), g in part.groupby(["variant", "load"], sort=False):
        row = {"variant": variant, "load": load}
        if "priced_by" in g.columns:  # the step profile the simulator read: the first server's (".") or its own
            row["priced by"] = "first variant" if g["priced_by"].iloc[0] == "." else "own server"
        if profile != "raw":
            row["profile x"] = float(g["profile_scale"].iloc[0])
        row.update({f"{m} error %": e * 100 for m, e in zip(g["metric"], g["rel_error"])})
        if "log_spread" in g.columns and g["log_spread"].notna().any():
            row["rounds"] = int(g["rounds"].iloc[0])
            row.update({f"{m} vLLM sd %": sd * 100 for m, sd in zip(g["metric"], g["log_spread"])
                        if m in FIDELITY_GOALS})
        goals = g[g["verdict"] != ""]
        row["goals met"] = f"{int((goals['verdict'] == 'met').sum())}/{len(goals)}"
        row["missed"] = ", ".join(goals.loc[goals["verdict"] != "met", "metric"])
        rows.append(row)
    return pd.DataFrame(rows)


def _request_log(path: Path) -> pd.DataFrame:
    """A per-request log read and checked by sim.serving_metrics, with its per-request metrics and each
    request's place in arrival order (`request`, 1-based: the replay keeps the engine's order)."""
    from sim.serving_metrics import per_request, read_request_log

    per = per_request(read_request_log(path, field="per-request log"))
    per["request"] = per["arrival_s"].rank(method="first").astype(int)
    return per


@st.cache_data(show_spinner=False)
def request_log(path: str, mtime: float) -> pd.DataFrame | None:
    """A per-request log (engine/<variant>/<load>/requests.parquet, or the simulator's replay of it) with
    ttft_s, e2e_s, tpot_ms, finished (sim.serving_metrics.per_request) and `request` (arrival order)."""
    return guarded_read(path, _request_log, "per-request log")


def request_logs(run: str | Path, variant: str, load: str, profile: str) -> dict[str, Path]:
    """Side -> path of the per-request logs of one load: vLLM's and the simulator's replay of it."""
    return {"vLLM": engine_dir(run) / variant / load / "requests.parquet",
            "simulator": engine_dir(run) / "fidelity" / variant / load / SIM_LOGS[profile]}


def ecdf(logs: dict[str, pd.DataFrame], column: str) -> pd.DataFrame:
    """side, value, fraction: the empirical CDF of a per-request column (finished requests) per side."""
    parts = []
    for side, per in logs.items():
        values = np.sort(per.loc[per["finished"], column].dropna().to_numpy(dtype=np.float64))
        parts.append(pd.DataFrame({"side": side, "value": values,
                                   "fraction": np.arange(1, len(values) + 1) / max(len(values), 1)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["side", "value", "fraction"])


def timeline(per: pd.DataFrame) -> pd.DataFrame:
    """One row per phase of each finished request: `to first token` (arrival -> first token: queueing and
    prefill) and `decoding` (first token -> finish), start_s and end_s, with the request's place in arrival
    order and its TTFT / TPOT for the tooltip."""
    done = per[per["finished"]]
    keep = ["request", "request_id", "output_tokens", "ttft_s", "tpot_ms"]
    first = done[keep].assign(phase="to first token", start_s=done["arrival_s"], end_s=done["first_token_s"])
    decode = done[keep].assign(phase="decoding", start_s=done["first_token_s"], end_s=done["finish_s"])
    return pd.concat([first, decode], ignore_index=True)


@st.cache_data(show_spinner=False)
def chunks(run: str, mtime: float, variant: str, load: str) -> pd.DataFrame | None:
    """engine/<variant>/<load>/chunks.parquet: every streamed chunk (request_id, t_s, output tokens so far)."""
    return guarded_read(engine_dir(run) / variant / load / "chunks.parquet",
                        with_columns(pd.read_parquet, CHUNK_COLUMNS), "Parquet table")


def _counter_file(path: Path) -> dict:
    table = _json_object(path)
    delta = table.get("delta")
    if not isinstance(delta, dict):
        raise LabError(f"{path}: no \"delta\" object (the counters' change over the load)")
    for name in COUNTER_NAMES:
        if not isinstance(delta.get(name), int) or isinstance(delta.get(name), bool) or delta[name] < 0:
            raise LabError(f"{path}: delta.{name} is not a non-negative integer")
    per_pos = delta.get(PER_POS)
    if not (isinstance(per_pos, list) and all(isinstance(c, int) and c >= 0 for c in per_pos)):
        raise LabError(f"{path}: delta.{PER_POS} is not a list of non-negative integers")
    return table


@st.cache_data(show_spinner=False)
def spec_counters(run: str, mtime: float, variant: str, load: str) -> dict | None:
    """engine/<variant>/<load>/spec_counters.json: vLLM's spec-decode counters before, after and their
    delta over the load, under lab.metrics.vllm_counters' names."""
    return guarded_read(engine_dir(run) / variant / load / "spec_counters.json", _counter_file, "JSON object")


def replay_traces(run: str | Path, variant: str, load: str) -> list[Path]:
    """The per-request steps the simulator replayed for a speculative load (engine/fidelity/.../traces)."""
    tdir = engine_dir(run) / "fidelity" / variant / load / "traces"
    return trace_files(tdir) if tdir.is_dir() else []


@st.cache_data(show_spinner=False)
def replay_counters(path: str, mtime: float) -> dict:
    """lab.metrics.vllm_counters of a replayed trace shard: what the simulator verified and accepted."""
    return vllm_counters(read_traces(path))


def counter_row(source: str, counters: dict, decode_tokens: list[int] | None) -> tuple[dict, pd.DataFrame]:
    """One counter table as a row (lab.metrics.counter_acceptance: tau, draft acceptance rate) plus
    `drafted steps`, the share of request-steps with a draft (sim.acceptance.rates_from_counters, given the
    load's decode tokens per finished request), and its per-position frame: survival s_j (per draft; n =
    drafts) and conditional c_j (n = drafts that reached j)."""
    from sim.acceptance import rates_from_counters

    per_pos = list(counters[PER_POS])
    drafts = int(counters["num_drafts"])
    derived = counter_acceptance(counters)
    row = {"source": source, **{n: int(counters[n]) for n in COUNTER_NAMES}, PER_POS: ", ".join(map(str, per_pos)),
           "tau": derived["tau"], "draft_acceptance_rate": derived["draft_acceptance_rate"]}
    if not drafts or not per_pos:
        return row, pd.DataFrame()
    try:
        drafted, rates = rates_from_counters(len(per_pos), per_pos, drafts, decode_tokens or [])
    except ValueError as exc:
        raise LabError(f"{source}: {exc}") from None
    if decode_tokens:
        row["drafted steps"] = drafted
    reached = [drafts, *per_pos[:-1]]
    positions = pd.DataFrame({"source": source, "position": range(1, len(per_pos) + 1),
                              "survival": derived["survival"], "drafts": drafts, "conditional": rates,
                              "reached": reached})
    return row, positions


def decode_tokens(per: pd.DataFrame | None) -> list[int] | None:
    """Tokens each finished request emitted in its decode steps (output - 1: the first came from prefill)."""
    if per is None:
        return None
    return (per.loc[per["finished"], "output_tokens"] - 1).clip(lower=0).astype(int).tolist()


@st.cache_data(show_spinner=False)
def reference(run: str, mtime: float, variant: str, load: str) -> dict | None:
    """engine/<variant>/<load>/reference.json: profile points measured again right before and after the
    load (real/engine/drift.py) and their ratio to the profile (the drift-corrected replay's scale)."""
    return guarded_read(engine_dir(run) / variant / load / "reference.json", _json_object, "JSON object")


def _step_profile(path: Path) -> tuple[pd.DataFrame, dict]:
    from sim.step_profile import read_profile

    profile = read_profile(path)
    return profile.frame(), profile.meta


@st.cache_data(show_spinner=False)
def step_profile(path: str, mtime: float) -> tuple[pd.DataFrame, dict] | None:
    """A step profile read and checked by sim.step_profile (the CSV and the JSON beside it): (rows, meta)."""
    return guarded_read(path, _step_profile, "step profile")


def profile_meta(meta: dict) -> pd.DataFrame:
    """field, value: the profile's metadata for display (versions joined; lists counted)."""
    rows = []
    for key, value in meta.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = f"{len(value)} entries"
        rows.append({"field": key, "value": "null" if value is None else str(value)})
    return pd.DataFrame(rows)
