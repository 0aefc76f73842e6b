"""Does a per-step cost grow with the tensor-parallel size? Public decode series against the cost model.

    python -m sim.tp_growth_check --out tp_growth/

The data (sim/validation/tp_growth.yaml, each point with its URL) are decode series: one dense model served by one
engine on one box at tensor parallel 1 / 2 / 4 / 8 with the same prompts, all sent at once. At each tp the longest
reply ends the run, so its mean decode step is (duration - its TTFT) / (its output tokens - 1): the measured step.
The check prices the same decode steps with the cost model the simulator builds for the run (CostModel.from_config of
the `sim:` section sim.public_check would write for it: its preset card, its config.json, the engine `vllm serve` of
its engine_version picks -- sim.public_check.release_engine, section_with_defaults): step t (1 .. longest - 1) holds
the requests with more than t output tokens, each reading its prompt + t + 1 cached tokens; the priced step is their
mean. That schedule -- every prompt prefilled in one step, then decode steps alone -- is the one that release runs
only where the prompts fit in one step's max_num_seqs and max_num_batched_tokens (V0 before 0.8: 256 sequences);
a point beyond them is refused (load_runs). An engine_version of another engine than vllm is not passed on.

    residual(tp) = measured - priced, ms;   growth = residual(largest tp) - residual(tp 2)

Across tp >= 2 the cost model's fixed terms (step and layer overheads, each all-reduce's latency) are the same at
every tp, so a missing cost that grows with tp -- the engine's per-step broadcast to more workers, a logits gather,
an all-reduce whose latency grows with the GPU count -- shows as growth > 0. A weight read priced at the wrong
fraction f of peak bandwidth moves the residuals too: the step's reads (weights / tp and KV / tp) take mem(tp) / f,
mem(tp) their time at peak, so its error shrinks as 1/tp -- in per cent, a gap that looks like it grows with tp.
With one f at every tp the residuals move by mem(tp) x (1 / preset - 1 / f), and growth is given three ways:
  - at the card's preset bw_efficiency;
  - at f_pair, the f at which the two largest tps' residuals are equal (the series' own bandwidth, read off that
    pair: between them a constant missing cost and a bandwidth error are told apart). A cost that grows between
    those two tps is taken for bandwidth here, so this growth is the tp 2 -> 4 part only;
  - at f_floor, the lowest f the series allows (its smallest tp's step is at least its reads: mem / measured): the
    most growth one bandwidth fraction at every tp can leave -- an upper bound.
Each is also given per all-reduce (growth / (2 x layers)): what an all-reduce latency growing with tp could carry.

    python -m sim.tp_growth_check --public-csv pc/public_check.csv --rows ID,ID,ID --out tp_growth/

adds held-out rows of sim/validation/public_vllm.yaml read the same way, as a diagnostic (scored only, nothing is
chosen on them): the named rows (one model on one card at three or more tps) with their reported and simulated
median TPOT (the mean where a row reports no median) from a public_check.csv, their reads at peak from CostModel at
the row's simulated mean decode batch and mid-reply context. They have no tp-1 point, so no f_floor.

Writes tp_growth.csv (every run x tp), tp_growth_summary.csv and tp_growth.md into --out. Bad input (missing file,
bad field, an unknown row) prints one `error:` line and exits 2 with nothing written.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, model_validator

from lab.arguments import data_check_parser, load_inputs, write_check_outputs
from lab.config_base import StrictModel, validation_message
from lab.config_sim import SimSection
from lab.errors import LabError
from lab.report import markdown_table
from sim.allreduce_check import SourcedRun
from sim.cost import CostModel, check_tp_split
from sim.hardware import get_hardware
from sim.public_check import DEFAULT_FILE as PUBLIC_FILE
from sim.public_check import (
    REPO_ROOT,
    RepoFile,
    load_rows,
    read_public_csv,
    release_engine,
    repo_model,
    section_with_defaults,
    validated_runs,
)

DEFAULT_FILE = Path(__file__).parent / "validation" / "tp_growth.yaml"


class SeriesPoint(StrictModel):
    """One result file: the run's wall time, every request's output tokens, the longest reply's TTFT."""

    duration_s: float = Field(gt=0)
    ttft_s: float = Field(ge=0)
    output_tokens: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    median_tpot_ms: float | None = Field(None, gt=0)


class TpSeries(SourcedRun):
    """One model on one box at several tensor-parallel sizes, the same prompts at each."""

    url_pattern: str | None = Field(None, pattern=r"^https://.*\{n\}")
    engine: str = Field(min_length=1)
    engine_version: str | None = None
    max_model_len: int | None = Field(None, ge=1, description="the server's --max-model-len (a V0 release's batch "
                                                                "limits and chunked prefill follow it)")
    model: str = Field(min_length=1)
    model_config_path: RepoFile = Field(alias="model_config", description="a config.json, repository-relative")
    input_tokens: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    points: dict[Annotated[int, Field(ge=1, le=64)], SeriesPoint]

    @model_validator(mode="after")
    def _series(self):
        if len([tp for tp in self.points if tp >= 2]) < 3:
            raise ValueError("points: a series needs three or more tensor-parallel sizes of 2 or more")
        for tp, p in self.points.items():
            if len(p.output_tokens) != len(self.input_tokens):
                raise ValueError(f"points.{tp}.output_tokens: {len(p.output_tokens)} requests, input_tokens "
                                 f"{len(self.input_tokens)}")
            if max(p.output_tokens) < 2:
                raise ValueError(f"points.{tp}.output_tokens: no request decodes (every reply under 2 tokens)")
            if p.ttft_s >= p.duration_s:
                raise ValueError(f"points.{tp}: ttft_s {p.ttft_s} is not below duration_s {p.duration_s}")
        return self

    @property
    def n_layers(self) -> int:
        return repo_model(self.model_config_path).n_layers

    @property
    def vllm_version(self) -> str | None:
        """The vLLM release the series was served by (engine_version of a vllm run; None: not said, or another
        engine: priced at the current release's defaults)."""
        return self.engine_version if self.engine == "vllm" else None


def run_section(run: TpSeries, tp: int, bw_efficiency: float | None = None) -> SimSection:
    """The `sim:` section of the run's point at `tp` as sim.public_check writes a row's: its preset card (with
    bw_efficiency, the reads' fraction of peak, where given), its config.json, and the engine settings `vllm serve`
    of its release picks there for its --max-model-len (release_engine, then section_with_defaults: the batch
    limits and scheduling)."""
    hardware = {"preset": run.device, "tp": tp, **({} if bw_efficiency is None else {"bw_efficiency": bw_efficiency})}
    section = {"hardware": hardware, "model": {"name": run.id, "config": str(REPO_ROOT / run.model_config_path)},
               "engine": release_engine(run.vllm_version, {} if run.max_model_len is None else
                                        {"max_model_len": run.max_model_len}), "policies": [{"kind": "ar"}], "sweep": {"axis": "none"},
               "plots": False}
    return section_with_defaults(SimSection.model_validate(section))


def check_one_prefill_step(run: TpSeries, tp: int) -> None:
    """LabError unless the engine of the run's release (run_section) prefills every prompt in one step before
    decoding, as decode_schedule prices it: all requests within max_num_seqs, their prompts within
    max_num_batched_tokens."""
    engine = run_section(run, tp).engine
    release = f"vLLM {run.vllm_version}" if run.vllm_version else "the current vLLM"
    n, tokens = len(run.input_tokens), sum(run.input_tokens)
    if n > engine.max_num_seqs or tokens > engine.max_num_batched_tokens:
        raise LabError(f"{n} requests of {tokens} prompt tokens do not prefill in one step on {release} "
                       f"(max_num_seqs {engine.max_num_seqs}, max_num_batched_tokens {engine.max_num_batched_tokens} "
                       f"on {run.device}); the check's decode schedule assumes they do")


def load_runs(path: str | Path) -> list[TpSeries]:
    """The series of a tp-growth data file; LabError naming the file and the first bad field, a point whose tp
    vLLM would refuse to start the model at (it was priced with a fractional head count per GPU), or one whose
    prompts the run's release would not prefill in one step (check_one_prefill_step)."""
    runs = validated_runs(TpSeries, path, "tensor-parallel decode series", "<run>")
    for i, run in enumerate(runs):
        model = repo_model(run.model_config_path)
        for tp in run.points:
            try:
                check_tp_split(model, tp, field="tp")
                check_one_prefill_step(run, tp)
            except LabError as exc:
                raise LabError(f"{path}: runs[{i}].points.{tp}: {exc}") from None
            except ValidationError as exc:  # the sim section the run makes (engine_version: 'abc' is no release)
                raise LabError(f"{path}: runs[{i}]: as a sim section, {validation_message(exc)}") from None
    return runs


def measured_step_ms(point: SeriesPoint) -> float:
    """The longest reply's mean decode step, ms: it ends the run, so (duration - its TTFT) / (its tokens - 1)."""
    return 1e3 * (point.duration_s - point.ttft_s) / (max(point.output_tokens) - 1)


def decode_schedule(inputs: list[int], outputs: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(batch, cached tokens read) of every decode step t = 1 .. longest - 1 after one prefill of every prompt: the
    requests with more than t output tokens, each at its prompt + t + 1 tokens. Shapes [longest - 1] each."""
    inp = np.asarray(inputs, dtype=np.float64)  # [requests]
    out = np.asarray(outputs, dtype=np.int64)  # [requests]
    t = np.arange(1, int(out.max()))  # [steps]
    live = out[None, :] > t[:, None]  # [steps, requests]
    batch = live.sum(axis=1)  # [steps]
    kv = (live * (inp[None, :] + t[:, None] + 1)).sum(axis=1)  # [steps]
    return batch, kv


def priced_step_ms(run: TpSeries, tp: int, bw_efficiency: float | None = None) -> float:
    """The cost model's mean decode step of the run's point at `tp`, ms, as the simulator prices it at the run's
    release on its preset card (run_section; bw_efficiency: the weight and KV reads' fraction of peak, at most 1;
    None: the preset's)."""
    cost = CostModel.from_config(run_section(run, tp, bw_efficiency))
    batch, kv = decode_schedule(run.input_tokens, run.points[tp].output_tokens)
    steps = [cost.step_time(int(b), float(k), int(b), False) for b, k in zip(batch, kv)]
    return 1e3 * float(np.mean(steps))


def reads_at_peak_ms(run: TpSeries, tp: int) -> float:
    """mem(tp): the mean step's weight and KV reads at the card's peak bandwidth, ms -- from the priced step at the
    preset's fraction and at 1 (the decode steps here are read-bound: the step is mem / f + what does not read)."""
    preset = get_hardware(run.device).bw_efficiency
    return (priced_step_ms(run, tp) - priced_step_ms(run, tp, 1.0)) / (1.0 / preset - 1.0)


def series_terms(run: TpSeries) -> dict:
    """Everything the summary reads, per tp: measured, priced at the preset, mem at peak."""
    tps = sorted(run.points)
    measured = {tp: measured_step_ms(run.points[tp]) for tp in tps}
    priced = {tp: priced_step_ms(run, tp) for tp in tps}
    mem = {tp: reads_at_peak_ms(run, tp) for tp in tps}
    return {"tps": tps, "measured": measured, "priced": priced, "mem": mem,
            "preset": get_hardware(run.device).bw_efficiency}


def residuals_at(terms: dict, f: float) -> dict[int, float]:
    """tp -> measured - priced with the reads at fraction f of peak (exact: the priced step is linear in 1 / f)."""
    shift = 1.0 / terms["preset"] - 1.0 / f
    return {tp: terms["measured"][tp] - terms["priced"][tp] + terms["mem"][tp] * shift for tp in terms["tps"]}


def growth_ms(residuals: dict[int, float]) -> float:
    """residual at the largest tp less residual at the smallest tp of 2 or more, ms."""
    multi = [tp for tp in sorted(residuals) if tp >= 2]
    return residuals[multi[-1]] - residuals[multi[0]]


def pair_fraction(terms: dict) -> float:
    """f_pair: the read fraction at which the two largest tps' residuals are equal (inf or negative: none physical,
    returned as nan)."""
    lo, hi = terms["tps"][-2], terms["tps"][-1]
    r = residuals_at(terms, terms["preset"])
    inv = 1.0 / terms["preset"] + (r[hi] - r[lo]) / (terms["mem"][hi] - terms["mem"][lo])
    return 1.0 / inv if inv > 0 else float("nan")


def floor_fraction(terms: dict) -> float:
    """f_floor: the lowest read fraction the series allows -- its smallest tp's step is at least its reads."""
    tp = terms["tps"][0]
    return terms["mem"][tp] / terms["measured"][tp]


# the public_check.csv columns public_terms reads beside the TPOTs (a row's simulated mean batch and lengths)
CSV_SIZES = ("sim_mean_decode_batch", "sim_mean_input", "sim_mean_output")
CSV_COLUMNS = ("id", *CSV_SIZES)  # the TPOTs: median or mean (public_terms)


def read_csv_by_id(path: Path) -> pd.DataFrame:
    """The --public-csv indexed by row id; LabError naming it when it is missing, is not a CSV table, lacks a column
    public_terms reads or repeats an id."""
    table = read_public_csv(path, "--public-csv", CSV_COLUMNS)
    repeated = table["id"][table["id"].duplicated()]
    if len(repeated):
        raise LabError(f"--public-csv: {path}: id {repeated.iloc[0]!r} on more than one line")
    return table.set_index("id")


def public_terms(csv_path: str | Path, ids: list[str], rows_file: str | Path = PUBLIC_FILE) -> tuple[dict, dict]:
    """(terms, about) of public rows read as one series: their reported / simulated median TPOT (mean where a row
    reports no median) from a public_check.csv as measured / priced, the reads at peak from CostModel at the row's
    simulated mean decode batch and mid-reply context; LabError on a row that is not in both files, rows of more
    than one model or card, fewer than three tps of 2 or more, or a TPOT missing."""
    if not ids:
        raise LabError("--rows: no row ids")
    rows = {r.id: r for r in load_rows(rows_file)}
    path = Path(csv_path)
    table = read_csv_by_id(path)
    picked = []
    for rid in ids:
        if rid not in rows or rid not in table.index:
            raise LabError(f"--rows: {rid!r} is not a row of both {rows_file} and {path}")
        picked.append((rows[rid], table.loc[rid]))
    if len({(r.model_config_path, r.gpu) for r, _ in picked}) != 1:
        raise LabError("--rows: the rows are not one model on one card")
    if len({r.tp for r, _ in picked if r.tp >= 2}) < 3 or len({r.tp for r, _ in picked}) != len(picked):
        raise LabError("--rows: a series needs three or more distinct tensor-parallel sizes of 2 or more")
    row0 = picked[0][0]
    preset = get_hardware(row0.gpu).bw_efficiency
    model = repo_model(row0.model_config_path)
    terms = {"tps": sorted(r.tp for r, _ in picked), "measured": {}, "priced": {}, "mem": {}, "preset": preset}
    for r, c in picked:
        kind = "median" if pd.notna(c.get("reported_tpot_median_ms")) else "mean"
        rep, sim = c.get(f"reported_tpot_{kind}_ms"), c.get(f"sim_tpot_{kind}_ms")
        if pd.isna(rep) or pd.isna(sim):
            raise LabError(f"--rows: {r.id} has no reported and simulated TPOT in {path}")
        for col in (f"reported_tpot_{kind}_ms", f"sim_tpot_{kind}_ms", *CSV_SIZES):  # a word, nan, inf, 0
            value = pd.to_numeric(c[col], errors="coerce")
            if not (np.isfinite(value) and value > 0):
                raise LabError(f"--public-csv: {path}: row {r.id} {col} {str(c[col])!r} is not a positive finite "
                               "number")
        terms["measured"][r.tp], terms["priced"][r.tp] = float(rep), float(sim)
        batch = float(c["sim_mean_decode_batch"])
        kv = batch * (float(c["sim_mean_input"]) + float(c["sim_mean_output"]) / 2)  # mid-reply context
        step = {f: CostModel(hw=get_hardware(r.gpu, bw_eff=f), model=model, tp=r.tp).step_time(batch, kv, batch, False)
                for f in (preset, 1.0)}
        terms["mem"][r.tp] = 1e3 * (step[preset] - step[1.0]) / (1.0 / preset - 1.0)
    about = {"run": "public rows: " + ", ".join(ids), "device": row0.gpu, "layers": model.n_layers}
    return terms, about


def public_summary(terms: dict, about: dict) -> dict:
    """The summary row of public rows read as a series: growth at the preset and at f_pair (no tp 1: no f_floor)."""
    f_pair = pair_fraction(terms)
    per_ar = 2 * about["layers"]
    row = {**about, "engine": "", "tps": "/".join(map(str, terms["tps"])), "preset_bw": terms["preset"],
           "f_pair": f_pair, "f_floor": float("nan")}
    g = {"preset": growth_ms(residuals_at(terms, terms["preset"])),
         "fpair": growth_ms(residuals_at(terms, f_pair)) if np.isfinite(f_pair) else float("nan"), "max": float("nan")}
    for key, value in g.items():
        row[f"growth_{key}_ms"] = value
        row[f"growth_{key}_us_per_allreduce"] = 1e3 * value / per_ar
    return row


def check(runs: list[TpSeries]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, summary): every run x tp measured and priced; per run the growth at the preset, f_pair and f_floor."""
    points, summary = [], []
    for run in runs:
        terms = series_terms(run)
        f_pair, f_floor = pair_fraction(terms), floor_fraction(terms)
        r_preset = residuals_at(terms, terms["preset"])
        r_pair = residuals_at(terms, f_pair) if np.isfinite(f_pair) else None
        for tp in terms["tps"]:
            batch, _ = decode_schedule(run.input_tokens, run.points[tp].output_tokens)
            m = terms["measured"][tp]
            points.append({"run": run.id, "device": run.device, "tp": tp, "mean_batch": round(float(batch.mean()), 3),
                           "measured_ms": m, "priced_ms": terms["priced"][tp], "rel_err": terms["priced"][tp] / m - 1,
                           "residual_ms": r_preset[tp], "reads_at_peak_ms": terms["mem"][tp],
                           "residual_fpair_ms": r_pair[tp] if r_pair else float("nan"),
                           "file_median_tpot_ms": run.points[tp].median_tpot_ms})
        per_ar = 2 * run.n_layers
        g = {"preset": growth_ms(r_preset), "fpair": growth_ms(r_pair) if r_pair else float("nan"),
             "max": growth_ms(residuals_at(terms, f_floor))}
        row = {"run": run.id, "device": run.device, "engine": f"{run.engine} {run.engine_version or ''}".strip(),
               "layers": run.n_layers, "tps": "/".join(map(str, terms["tps"])), "preset_bw": terms["preset"],
               "f_pair": f_pair, "f_floor": f_floor}
        for key, value in g.items():
            row[f"growth_{key}_ms"] = value
            row[f"growth_{key}_us_per_allreduce"] = 1e3 * value / per_ar
        summary.append(row)
    return pd.DataFrame(points), pd.DataFrame(summary)


def markdown(points: pd.DataFrame, summary: pd.DataFrame) -> str:
    lines = ["Decode series at several tensor-parallel sizes: the longest reply's mean step, measured vs the cost "
             "model at the preset bandwidth (residual = measured - priced; at f_pair: the reads at the series' own "
             "fraction, read off its two largest tps)", "",
             "| run | tp | mean batch | measured ms | priced ms | error | residual ms | reads at peak ms | "
             "residual at f_pair ms |", "|---|---|---|---|---|---|---|---|---|"]
    for _, p in points.iterrows():
        lines.append(f"| {p.run} | {p.tp} | {p.mean_batch:.2f} | {p.measured_ms:.3f} | {p.priced_ms:.3f} | "
                     f"{100 * p.rel_err:+.1f}% | {p.residual_ms:+.3f} | {p.reads_at_peak_ms:.3f} | "
                     f"{p.residual_fpair_ms:+.3f} |")
    table = summary.drop(columns=["engine"]).copy()
    for col in table.columns:
        if col.endswith("_ms") or col.startswith("f_"):
            table[col] = table[col].round(3)
        elif col.endswith("_allreduce"):
            table[col] = table[col].round(2)
    lines += ["", "Growth from tp 2 to the largest tp (residual there less at tp 2): at the preset bandwidth, at "
              "f_pair (the tp 2 -> 4 part only) and at f_floor (the most one bandwidth fraction at every tp leaves); "
              "per all-reduce: over the step's 2 x layers all-reduces:", "",
              markdown_table(table, floatfmt="{:g}")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import time

    ap = data_check_parser("python -m sim.tp_growth_check", __doc__, DEFAULT_FILE, "tensor-parallel decode series",
                           "tp_growth", "(no fit: every series is read at its own bandwidth fractions in any case)")
    ap.add_argument("--public-csv", default=None, help="a public_check.csv whose --rows to read as one series too")
    ap.add_argument("--rows", default=None, help="comma-separated row ids of one model on one card at 3+ tps")
    args = ap.parse_args(argv)
    if (args.public_csv is None) != (args.rows is None):
        ap.error("--public-csv and --rows go together")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    extra = None
    if args.public_csv is not None:
        try:
            extra = public_summary(*public_terms(args.public_csv, [x for x in args.rows.split(",") if x]))
        except LabError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    runs = load_inputs(load_runs, args)
    if runs is None:
        return 2
    points, summary = check(runs)
    if extra is not None:
        summary = pd.concat([summary, pd.DataFrame([extra])], ignore_index=True)
    return write_check_outputs(args.out, {"tp_growth.csv": points, "tp_growth_summary.csv": summary},
                               "tp_growth.md", markdown(points, summary), cpu0, wall0)


if __name__ == "__main__":
    sys.exit(main())
