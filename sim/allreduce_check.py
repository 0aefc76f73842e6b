"""Published all-reduce timings against the cost model's tensor-parallel all-reduce, and its fit per card.

    python -m sim.allreduce_check --out allreduce/          # score the presets' links on every published point
    python -m sim.allreduce_check --fit --out allreduce/    # + fit latency and bandwidth per card and kernel

The data (sim/validation/allreduce.yaml, each run with its URL or stored-file id) are nccl-tests all_reduce_perf
tables and a few other NCCL timings on one node, and tables of vLLM's custom all-reduce kernel (kernel: custom) and
of torch symmetric memory as vLLM runs it (kernel: symm_mem):
the time of one all-reduce of B bytes on N GPUs. Each point is priced by sim.cost.allreduce_time_s -- the function
CostModel prices every tensor-parallel layer's two all-reduces with -- on the card's preset interconnect, at the
kernel the table timed: latency_us + 2 (N-1)/N x B / bandwidth_gbs of the link's own (NCCL) pair, or of its
custom_allreduce / symm_mem_allreduce pair for a custom-kernel / symmetric-memory table (the NCCL pair where the
card has none). These are the fit rows for
the link terms, so the serving rows of public_vllm.yaml stay held out from them.

--fit, per card, over the runs timed by nccl-tests on a stock setup (p2p disabled / enabled / nvlink; a patched
driver, other harnesses and runs marked `exclude` are listed, not fitted) and the sizes in --min-bytes..--max-bytes (default 8 KiB..64
MiB, what one decode or prefill step moves: tokens x hidden x 2 bytes): latency_us and bandwidth_gbs by least
squares on log time, each host weighing alike; beside it the same with a tp-dependent latency (latency_us +
2 (N-1) x per-step us, the ring's steps; or + log2 N x us), each scored leave-one-run-out and
leave-one-host-out, so that a tp term is only worth adopting where it prices runs it was not fitted on better;
and each run's own fit, which shows how much the hosts differ. A run with `fit_with: CARD` (a card whose link is
the same part) is fitted in CARD's block, priced on its own card's preset. The custom-kernel tables (any harness,
not excluded) are fitted apart, per card, the same way: rows `custom: pooled`, `custom: own: ...` (the
interconnect's custom_allreduce latency_us / bandwidth_gbs); `custom: preset` is what the preset prices them at now;
and so are torch symmetric memory's (kernel: symm_mem; rows `symm_mem: ...`, the symm_mem_allreduce pair).
Writes allreduce.csv (every point), allreduce_fit.csv, allreduce.md and allreduce.png into --out.
Bad input (missing file, bad field) prints one `error:` line and exits 2 with nothing written.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from lab.arguments import data_check_parser, load_inputs, positive_int, write_check_outputs
from lab.config_base import StrictModel
from lab.config_sim import HARDWARE_NAMES, InterconnectSheet
from lab.report import markdown_table
from sim.cost import allreduce_time_s, kernel_link
from sim.hardware import get_hardware
from sim.measured_plot import plot_measured_vs_priced
from sim.public_check import validated_runs

DEFAULT_FILE = Path(__file__).parent / "validation" / "allreduce.yaml"
FIT_BYTES = (8 * 1024, 64 * 1024 * 1024)
# tp-dependent latency forms tried beside the plain one: extra microseconds per unit of this factor of N GPUs
TP_TERMS = {"none": lambda n: 0.0 * n, "ring-steps": lambda n: 2.0 * (n - 1), "log2": lambda n: np.log2(n)}


class SourcedRun(StrictModel):
    """What every published run of the link checks carries (this module's all-reduce tables,
    sim.tp_decode_check's serving timings): an id, where it was read, the host and card, the GPUs' P2P state."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str | None = Field(default=None, pattern=r"^https://")
    find_string: str | None = None
    where: str | None = None
    host: str = Field(min_length=1, description="the machine the run is from; the fit weighs hosts alike")
    device: Literal[tuple(HARDWARE_NAMES)] = Field(description="a hardware preset name")  # type: ignore[valid-type]
    device_name: str | None = None
    p2p: Literal["disabled", "enabled", "patched", "nvlink"]
    exclude: str | None = Field(default=None, description="why a run is kept out of the fit (it is still scored)")
    note: str | None = None

    @model_validator(mode="after")
    def _source(self):
        if self.url is None and not (self.find_string and self.where):
            raise ValueError("a url, or find_string and where, is required")
        return self


class AllReduceRun(SourcedRun):
    """One published table: all-reduces on `gpus` GPUs of one node, bytes -> microseconds."""

    gpus: int = Field(ge=2, le=64)
    harness: Literal["nccl-tests", "other"]
    nccl: str | None = None
    cuda_graph: bool | None = None
    time_us: dict[Annotated[int, Field(ge=1)], Annotated[float, Field(gt=0)]] = Field(min_length=1)
    kernel: Literal["nccl", "custom", "symm_mem"] = Field(
        "nccl", description="what the table timed: nccl (ncclAllReduce, pynccl, torch.distributed), custom "
        "(vLLM's custom all-reduce kernel, the interconnect's custom_allreduce pair) or symm_mem (torch symmetric "
        "memory as vLLM's SymmMemCommunicator runs it, the interconnect's symm_mem_allreduce pair)")
    fit_with: Literal[tuple(HARDWARE_NAMES)] | None = Field(  # type: ignore[valid-type]
        default=None, description="fit this run in that card's block, not its own device's: a card with the same "
        "link (the A100 SXM4 40GB's NVLink 3 / NVSwitch is the 80GB's); it is still priced on its own device's preset")

    @property
    def fit_card(self) -> str:
        """The card whose link this run's points are fitted with (fit_with, else its own device)."""
        return self.fit_with or self.device

    @property
    def fittable(self) -> bool:
        """On a setup a serving box runs (not a patched driver), not excluded, and for an NCCL table timed by
        nccl-tests (the custom kernel and torch symmetric memory have only other harnesses' tables: vLLM's and
        SGLang's benchmarks)."""
        harness_ok = self.harness == "nccl-tests" or self.kernel != "nccl"
        return harness_ok and self.p2p != "patched" and self.exclude is None


def load_runs(path: str | Path) -> list[AllReduceRun]:
    """The runs of an all-reduce data file; LabError naming the file and the first bad field."""
    return validated_runs(AllReduceRun, path, "all-reduce runs", "<run>")


def priced_us(run: AllReduceRun, link: InterconnectSheet, extra_latency_us: float = 0.0) -> np.ndarray:
    """The cost model's time of each of the run's sizes (ascending) on `link` at the kernel the run timed
    (kernel_link: its NCCL, custom or symmetric-memory pair), microseconds; extra_latency_us is added to that pair's latency (a
    candidate tp term of the fit)."""
    link = kernel_link(link, run.kernel)
    if extra_latency_us:
        link = link.model_copy(update={"latency_us": link.latency_us + extra_latency_us})
    nbytes = np.array(sorted(run.time_us), dtype=np.float64)
    return allreduce_time_s(link, run.gpus, nbytes) * 1e6


def score(runs: list[AllReduceRun], links: dict[str, InterconnectSheet]) -> pd.DataFrame:
    """Every (run, size) point: measured, priced on its card's link, relative error (priced / measured - 1)."""
    rows = []
    for run in runs:
        link = links[run.device]
        for nbytes, sim in zip(sorted(run.time_us), priced_us(run, link)):
            measured = run.time_us[nbytes]
            rows.append({"run": run.id, "host": run.host, "device": run.device, "gpus": run.gpus, "p2p": run.p2p,
                         "kernel": run.kernel, "harness": run.harness, "fittable": run.fittable, "bytes": nbytes,
                         "measured_us": measured,
                         "sim_us": round(float(sim), 3), "rel_err": float(sim / measured - 1)})
    return pd.DataFrame(rows)


def preset_links(runs: list[AllReduceRun]) -> dict[str, InterconnectSheet]:
    return {d: get_hardware(d).interconnect for d in {r.device for r in runs}}


def _in_range(run: AllReduceRun, lo: int, hi: int) -> AllReduceRun:
    """The run with only its sizes in [lo, hi]."""
    return run.model_copy(update={"time_us": {b: t for b, t in run.time_us.items() if lo <= b <= hi}})


def fit_link(runs: list[AllReduceRun], base: InterconnectSheet, tp_term: str = "none") -> dict[str, float]:
    """latency_us, bandwidth_gbs (and with a tp term its us per unit) by least squares on log time over the runs'
    points, each host weighing alike and each run alike within its host (a run's residuals scaled by
    1 / sqrt(points x runs of its host)): one machine's several tables must not outvote another's one."""
    from scipy.optimize import least_squares

    runs = [r for r in runs if r.time_us]
    per_host = {h: sum(r.host == h for r in runs) for h in {r.host for r in runs}}
    measured = [np.log(np.array([r.time_us[b] for b in sorted(r.time_us)])) for r in runs]
    weights = [np.full(len(m), 1 / np.sqrt(len(m) * per_host[r.host])) for r, m in zip(runs, measured)]
    factor = TP_TERMS[tp_term]

    def residuals(x):
        link = base.model_copy(update={"latency_us": x[0], "bandwidth_gbs": x[1]})
        per_step = x[2] if len(x) > 2 else 0.0
        return np.concatenate([w * (np.log(priced_us(r, link, per_step * factor(r.gpus))) - m)
                               for r, m, w in zip(runs, measured, weights)])

    x0 = [10.0, 10.0] + ([2.0] if tp_term != "none" else [])
    low = [0.0, 0.05] + ([0.0] if tp_term != "none" else [])
    high = [1000.0, 2000.0] + ([200.0] if tp_term != "none" else [])
    best = None
    for scale in (1.0, 0.2, 5.0):  # several starts: the loss is not convex in (latency, 1 / bandwidth)
        start = np.clip(np.array(x0) * scale, np.array(low) + 1e-6, np.array(high) - 1e-6)
        fit = least_squares(residuals, x0=start, bounds=(low, high))
        if best is None or fit.cost < best.cost:
            best = fit
    out = {"latency_us": float(best.x[0]), "bandwidth_gbs": float(best.x[1])}
    if tp_term != "none":
        out["tp_term_us"] = float(best.x[2])
    return out


def _abs_errors(runs: list[AllReduceRun], base: InterconnectSheet, values: dict, tp_term: str) -> np.ndarray:
    link = base.model_copy(update={"latency_us": values["latency_us"], "bandwidth_gbs": values["bandwidth_gbs"]})
    per_step = values.get("tp_term_us", 0.0)
    return np.concatenate([np.abs(priced_us(r, link, per_step * TP_TERMS[tp_term](r.gpus))
                                  / np.array([r.time_us[b] for b in sorted(r.time_us)]) - 1) for r in runs])


def fit_all(runs: list[AllReduceRun], lo: int = FIT_BYTES[0], hi: int = FIT_BYTES[1]) -> pd.DataFrame:
    """Per card with fittable runs: the pooled fit for each tp term with its in-sample, leave-one-run-out and
    leave-one-host-out median |relative error| (%, over the left-out points); then each run's own fit (no tp
    term)."""
    usable = [_in_range(r, lo, hi) for r in runs if r.fittable]
    usable = [r for r in usable if r.time_us]
    rows = []

    def pct(errors):
        return round(100 * float(np.median(errors)), 1) if len(errors) else float("nan")

    for device, kernel in sorted({(r.fit_card, r.kernel) for r in usable}, key=lambda k: (k[0], k[1] != "nccl")):
        mine = [r for r in usable if r.fit_card == device and r.kernel == kernel]
        base = kernel_link(get_hardware(device).interconnect, kernel)  # one pair: the one being fitted
        tag = "" if kernel == "nccl" else f"{kernel}: "  # custom-kernel rows: "custom: pooled", ...
        rows.append({"device": device, "kernel": kernel, "fit": f"{tag}preset", "tp_term": "none", "runs": len(mine),
                     "points": sum(len(r.time_us) for r in mine), "latency_us": base.latency_us,
                     "bandwidth_gbs": base.bandwidth_gbs, "median_abs_err_pct":
                     pct(_abs_errors(mine, base, {"latency_us": base.latency_us,
                                                  "bandwidth_gbs": base.bandwidth_gbs}, "none"))})
        for tp_term in TP_TERMS:
            if tp_term != "none" and len({r.gpus for r in mine}) < 2:
                continue  # one GPU count cannot tell a tp term from the latency
            values = fit_link(mine, base, tp_term)
            row = {"device": device, "kernel": kernel, "fit": f"{tag}pooled", "tp_term": tp_term, "runs": len(mine),
                   "points": sum(len(r.time_us) for r in mine), **{k: round(v, 3) for k, v in values.items()},
                   "median_abs_err_pct": pct(_abs_errors(mine, base, values, tp_term))}
            if len(mine) > 2:
                left_out = [_abs_errors([r], base, fit_link([x for x in mine if x.id != r.id], base, tp_term), tp_term)
                            for r in mine]
                row["run_out_median_abs_err_pct"] = pct(np.concatenate(left_out))
            hosts = sorted({r.host for r in mine})
            if len(hosts) > 1:
                left_out = [_abs_errors([r for r in mine if r.host == h], base,
                                        fit_link([r for r in mine if r.host != h], base, tp_term), tp_term) for h in hosts]
                row["host_out_median_abs_err_pct"] = pct(np.concatenate(left_out))
            rows.append(row)
        for r in mine:
            values = fit_link([r], base)
            rows.append({"device": device, "kernel": kernel, "fit": f"{tag}own: {r.id}", "tp_term": "none", "runs": 1,
                         "points": len(r.time_us), **{k: round(v, 3) for k, v in values.items()},
                         "median_abs_err_pct": pct(_abs_errors([r], base, values, "none"))})
    return pd.DataFrame(rows)


def markdown(points: pd.DataFrame, fits: pd.DataFrame | None, lo: int, hi: int) -> str:
    """Per run: its sizes, measured and priced time at the ends of the fit range, median |error| there; then the
    fit table."""
    lines = [(f"Published all-reduce time vs the cost model's (latency_us + 2 (N-1)/N x bytes / bandwidth_gbs on the "
              f"card's preset link); errors over {lo:,}..{hi:,} bytes, error = priced / measured - 1"), "",
             ("| run | device | GPUs | p2p | harness | fitted | measured us (smallest .. largest in range) | priced us | "
              "median abs err | err at smallest / largest |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for run, f in points.groupby("run", sort=False):
        inside = f[(f.bytes >= lo) & (f.bytes <= hi)]
        first, last = (inside if len(inside) else f).iloc[[0, -1]].itertuples()
        head = (f"| {run} | {first.device} | {first.gpus} | {first.p2p} | {first.harness} | "
                f"{'yes' if first.fittable and len(inside) else 'no'} | ")  # fit_all drops a run with no size in range
        if not len(inside):  # its sizes were shown under "in range" (and scored) as if they were in it
            lines.append(head + f"none in range (its sizes: {first.bytes:,}..{last.bytes:,} bytes) | - | - | - |")
            continue
        lines.append(head + f"{first.measured_us:.4g} .. {last.measured_us:.4g} | "
                     f"{first.sim_us:.4g} .. {last.sim_us:.4g} | {100 * inside.rel_err.abs().median():.0f}% | "
                     f"{100 * first.rel_err:+.0f}% / {100 * last.rel_err:+.0f}% |")
    inside = points[(points.bytes >= lo) & (points.bytes <= hi)]
    by_card = inside[inside.fittable].groupby(["device", "kernel", "gpus"]).rel_err.agg(
        lambda e: f"{100 * e.abs().median():.0f}% (median signed {100 * e.median():+.0f}%)")
    lines += ["", "median |error| of the fitted runs' points by card and GPU count: "
              + ("; ".join(f"{d} x{g}{'' if k == 'nccl' else f' ({k} kernel)'}: {v}"
                           for (d, k, g), v in by_card.items()) if len(by_card) else
                 "none fitted (no fittable run has a size in range)")]
    if fits is not None and len(fits):
        lines += ["", markdown_table(fits, floatfmt="{:g}")]
    return "\n".join(lines) + "\n"


def plot(points: pd.DataFrame, path: Path) -> None:
    plot_measured_vs_priced(points, path, x="bytes", xlabel="bytes all-reduced", ylabel="one all-reduce, us",
                            title="all-reduce: published (dots; x = not fitted) vs the cost model on the preset link "
                                  "(lines)", label=lambda run, f: f"{run[:34]} (x{f.gpus.iloc[0]})",
                            marker=lambda f: "o" if f.fittable.iloc[0] else "x")


def main(argv=None) -> int:
    ap = data_check_parser("python -m sim.allreduce_check", __doc__, DEFAULT_FILE, "all-reduce timings", "allreduce",
                           "also fit latency_us and bandwidth_gbs per card and kernel (NCCL, vLLM's custom "
                           "all-reduce), with and without a tp-dependent latency, "
                           "scored leave-one-run-out and leave-one-host-out (allreduce_fit.csv); the presets are not "
                           "changed")
    ap.add_argument("--min-bytes", type=positive_int, default=FIT_BYTES[0], help="smallest size scored and fitted")
    ap.add_argument("--max-bytes", type=positive_int, default=FIT_BYTES[1], help="largest size scored and fitted")
    args = ap.parse_args(argv)
    if args.min_bytes > args.max_bytes:
        ap.error(f"--min-bytes {args.min_bytes} exceeds --max-bytes {args.max_bytes}")  # one line, exit 2
    runs = load_inputs(load_runs, args)
    if runs is None:
        return 2
    cpu0, wall0 = time.process_time(), time.perf_counter()
    points = score(runs, preset_links(runs))
    fits = fit_all(runs, args.min_bytes, args.max_bytes) if args.fit else None
    text = markdown(points, fits, args.min_bytes, args.max_bytes)
    plot(points, Path(args.out) / "allreduce.png")
    return write_check_outputs(args.out, {"allreduce.csv": points, "allreduce_fit.csv": fits}, "allreduce.md", text,
                               cpu0, wall0)


if __name__ == "__main__":
    sys.exit(main())
