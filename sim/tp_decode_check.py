"""Tensor parallelism on PCIe cards while serving: public decode timings and in-engine all-reduces against the cost
model's all-reduce.

    python -m sim.tp_decode_check --out tp_decode/          # score the presets' links on every source
    python -m sim.tp_decode_check --fit --out tp_decode/    # + the serving latency per all-reduce, left-one-source-out

The data (sim/validation/tp_decode.yaml, each run with its URL) are of two kinds. decode: one model served on one
box at two or more tensor-parallel sizes at the same low concurrency; the check prices the decode step at each tp
with CostModel (the run's config.json, its preset card, `batch` requests of `context_tokens` each) and compares the
step-time ratio across tp, measured (batch / output tok/s) vs priced. A ratio, because the card's own speed cancels in
it while the 2 x layers all-reduces per step do not. serving-allreduce: one all-reduce as a serving engine ran it,
bytes -> us, priced by sim.cost.allreduce_time_s on the preset's link. The held-out serving rows of public_vllm.yaml
are not here: they are scored by sim.public_check, and choose nothing.

Each run's implied latency is the link latency_us (bandwidth_gbs kept at the preset's) at which the cost model
prices it exactly. --fit pools them, per link class (p2p disabled / enabled) over the runs not marked `exclude`, each
host weighing alike (least squares on the log error), and scores each source priced with the latency fitted on the
others (leave-one-source-out) beside the preset's own: a serving latency is only worth adopting where it prices the
sources it was not fitted on better than the preset does. Writes tp_decode.csv (every priced point),
tp_decode_fit.csv and tp_decode.md into --out. Bad input (missing file, bad field) prints one `error:` line and exits
2 with nothing written.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from lab.arguments import start_data_check, write_check_outputs
from lab.config_sim import InterconnectSheet
from lab.report import markdown_table
from sim.allreduce_check import SourcedRun
from sim.cost import CostModel, allreduce_time_s
from sim.hardware import get_hardware
from sim.public_check import RepoFile, repo_model, validated_runs

DEFAULT_FILE = Path(__file__).parent / "validation" / "tp_decode.yaml"
LATENCY_RANGE_US = (0.0, 2000.0)  # where an implied latency is looked for


class TpDecodeRun(SourcedRun):
    """One source: decode steps of one model at several tensor-parallel sizes, or one in-engine all-reduce table."""

    kind: Literal["decode", "serving-allreduce"]
    engine: str = Field(min_length=1)
    engine_version: str | None = None
    custom_allreduce: bool | None = Field(None, description="whether the engine's own all-reduce kernel ran")
    # decode
    model: str | None = None
    model_config_path: RepoFile | None = Field(None, alias="model_config", description="a config.json, repository-relative")
    batch: int | None = Field(None, ge=1, le=4096)
    context_tokens: int | None = Field(None, ge=0)
    output_tok_s: dict[Annotated[int, Field(ge=1, le=64)], Annotated[float, Field(gt=0)]] | None = None
    # serving-allreduce
    gpus: int | None = Field(None, ge=2, le=64)
    time_us: dict[Annotated[int, Field(ge=1)], Annotated[float, Field(gt=0)]] | None = None

    @model_validator(mode="after")
    def _kind_fields(self):
        need = (("model_config_path", "batch", "context_tokens", "output_tok_s") if self.kind == "decode"
                else ("gpus", "time_us"))
        missing = [name for name in need if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} run needs {', '.join(missing)}")
        if self.kind == "decode" and len(self.output_tok_s) < 2:
            raise ValueError("a decode run needs output_tok_s at two or more tensor-parallel sizes")
        if self.kind == "serving-allreduce" and not self.time_us:
            raise ValueError("time_us: at least one size")
        return self

    @property
    def fittable(self) -> bool:
        return self.exclude is None

    @property
    def link_class(self) -> str:
        return "no-p2p" if self.p2p == "disabled" else "p2p"


def load_runs(path: str | Path) -> list[TpDecodeRun]:
    """The runs of a tp-decode data file; LabError naming the file and the first bad field."""
    return validated_runs(TpDecodeRun, path, "tensor-parallel serving runs", "<run>")



def with_latency(link: InterconnectSheet, latency_us: float) -> InterconnectSheet:
    return link.model_copy(update={"latency_us": latency_us})


def step_ms(run: TpDecodeRun, link: InterconnectSheet, tp: int) -> float:
    """The cost model's decode step of the run at tensor-parallel size `tp` on its preset card with `link`: `batch`
    requests, one token each, `context_tokens` cached each; milliseconds."""
    hw = get_hardware(run.device).model_copy(update={"interconnect": link})
    cost = CostModel(hw=hw, model=repo_model(run.model_config_path), tp=tp)
    b = run.batch
    return cost.step_time(b, b * run.context_tokens, b, False) * 1e3


def measured_step_ms(run: TpDecodeRun) -> dict[int, float]:
    """tp -> one decode step, ms: batch / output tok/s."""
    return {tp: 1e3 * run.batch / tok_s for tp, tok_s in sorted(run.output_tok_s.items())}


def _points(run: TpDecodeRun, link: InterconnectSheet) -> list[dict]:
    """The run's priced points on `link`. decode: one per tp above the smallest, its step-time ratio to the smallest
    tp's (measured and priced); serving-allreduce: one per size."""
    if run.kind == "serving-allreduce":
        nbytes = np.array(sorted(run.time_us), dtype=np.float64)
        sim = allreduce_time_s(link, run.gpus, nbytes) * 1e6
        return [{"x": f"{int(b)} B", "tp": run.gpus, "measured": run.time_us[int(b)], "sim": float(s)}
                for b, s in zip(nbytes, sim)]
    steps = measured_step_ms(run)
    base = min(steps)
    sim_base = step_ms(run, link, base)
    rows = []
    for tp, ms in steps.items():
        if tp == base:
            continue
        sim = step_ms(run, link, tp)
        rows.append({"x": f"tp {tp} / tp {base}", "tp": tp, "measured": ms / steps[base], "sim": sim / sim_base,
                     "measured_ms": ms, "sim_ms": sim, "measured_base_ms": steps[base], "sim_base_ms": sim_base})
    return rows


def log_errors(run: TpDecodeRun, link: InterconnectSheet) -> np.ndarray:
    """log(priced / measured) of each of the run's points on `link`."""
    return np.array([np.log(p["sim"] / p["measured"]) for p in _points(run, link)])


def implied_latency_us(run: TpDecodeRun, link: InterconnectSheet) -> float:
    """The link latency_us (bandwidth kept) at which the cost model prices the run's points best (least squares on
    the log error; exact where the run has one point). The priced ratios and times grow with the latency, so a run
    priced too slow even at 0 us gives 0 and one too fast at the range's top gives the top."""
    from scipy.optimize import minimize_scalar

    def loss(lat):
        return float(np.sum(log_errors(run, with_latency(link, lat)) ** 2))

    fit = minimize_scalar(loss, bounds=LATENCY_RANGE_US, method="bounded", options={"xatol": 1e-3})
    return float(fit.x)


def fit_latency(runs: list[TpDecodeRun], links: dict[str, InterconnectSheet]) -> float:
    """One latency_us for all the runs (each on its own preset's bandwidth): least squares on the log error, each
    host weighing alike and each run alike within its host."""
    from scipy.optimize import minimize_scalar

    per_host = {h: sum(r.host == h for r in runs) for h in {r.host for r in runs}}

    def loss(lat):
        total = 0.0
        for r in runs:
            e = log_errors(r, with_latency(links[r.device], lat))
            total += float(np.sum(e ** 2)) / (len(e) * per_host[r.host])
        return total

    return float(minimize_scalar(loss, bounds=LATENCY_RANGE_US, method="bounded", options={"xatol": 1e-3}).x)


def preset_links(runs: list[TpDecodeRun]) -> dict[str, InterconnectSheet]:
    return {d: get_hardware(d).interconnect for d in {r.device for r in runs}}


def score(runs: list[TpDecodeRun], links: dict[str, InterconnectSheet]) -> pd.DataFrame:
    """Every priced point on its card's link: measured, priced, relative error (priced / measured - 1); and each run's
    implied latency."""
    rows = []
    for run in runs:
        link = links[run.device]
        implied = implied_latency_us(run, link)
        for p in _points(run, link):
            rows.append({"run": run.id, "kind": run.kind, "host": run.host, "device": run.device,
                         "device_name": run.device_name, "p2p": run.p2p, "fittable": run.fittable,
                         "link_latency_us": link.latency_us, "link_bandwidth_gbs": link.bandwidth_gbs, **p,
                         "rel_err": p["sim"] / p["measured"] - 1, "implied_latency_us": round(implied, 2)})
    return pd.DataFrame(rows)


def fit_all(runs: list[TpDecodeRun], links: dict[str, InterconnectSheet]) -> pd.DataFrame:
    """Per link class with fittable runs: the pooled latency, each source scored on the preset's latency and on the
    latency fitted without it (leave-one-source-out: a source is a host), median |error| over its points."""
    rows = []
    for cls in sorted({r.link_class for r in runs if r.fittable}):
        mine = [r for r in runs if r.fittable and r.link_class == cls]
        pooled = fit_latency(mine, links)
        hosts = sorted({r.host for r in mine})
        for host in hosts:
            left = [r for r in mine if r.host == host]
            others = [r for r in mine if r.host != host]
            out = fit_latency(others, links) if others else float("nan")

            def err(lat, left=left):
                e = np.concatenate([np.exp(log_errors(r, with_latency(links[r.device], lat))) - 1 for r in left])
                return round(100 * float(np.median(np.abs(e))), 1), round(100 * float(np.median(e)), 1)

            preset = [links[r.device].latency_us for r in left]
            rows.append({"link_class": cls, "source": host, "runs": ", ".join(r.id for r in left),
                         "preset_latency_us": preset[0], "preset_abs_err_pct": err(preset[0])[0],
                         "preset_signed_err_pct": err(preset[0])[1],
                         "implied_latency_us": round(fit_latency(left, links), 2),
                         "pooled_latency_us": round(pooled, 2), "pooled_abs_err_pct": err(pooled)[0],
                         "left_out_latency_us": round(out, 2),
                         "left_out_abs_err_pct": err(out)[0] if others else float("nan")})
    return pd.DataFrame(rows)


def markdown(points: pd.DataFrame, fits: pd.DataFrame | None) -> str:
    lines = [("Tensor parallelism while serving: measured vs the cost model on each run's preset link "
              "(error = priced / measured - 1; decode: ratio of step times to the smallest tp's)"), "",
             "| run | kind | card (preset) | p2p | fitted | point | measured | priced | error | implied latency_us |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, p in points.iterrows():
        lines.append(f"| {p.run} | {p.kind} | {p.device_name} ({p.device}) | {p.p2p} | "
                     f"{'yes' if p.fittable else 'no'} | {p.x} | {p.measured:.4g} | {p.sim:.4g} | "
                     f"{100 * p.rel_err:+.1f}% | {p.implied_latency_us:g} (preset {p.link_latency_us:g}) |")
    if fits is not None and len(fits):
        lines += ["", "Serving latency per all-reduce, pooled per link class and left one source out:", "",
                  markdown_table(fits, floatfmt="{:g}")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args, runs, cpu0, wall0 = start_data_check(
        load_runs, argv, "python -m sim.tp_decode_check", __doc__, DEFAULT_FILE, "tensor-parallel serving timings",
        "tp_decode", "also fit one serving latency per all-reduce per link class, scored leave-one-source-out beside "
        "the preset's (tp_decode_fit.csv); the presets are not changed")
    if runs is None:
        return 2
    links = preset_links(runs)
    points = score(runs, links)
    fits = fit_all(runs, links) if args.fit else None
    text = markdown(points, fits)
    return write_check_outputs(args.out, {"tp_decode.csv": points, "tp_decode_fit.csv": fits}, "tp_decode.md", text,
                               cpu0, wall0)


if __name__ == "__main__":
    sys.exit(main())
