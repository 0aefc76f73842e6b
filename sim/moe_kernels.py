"""Published fused-MoE kernel timings against the cost model's routed-expert terms, and their fit per card.

    python -m sim.moe_kernels --out moe_kernels/           # score the presets' MoE terms on every run
    python -m sim.moe_kernels --fit --out moe_kernels/     # + fit them per card (the presets are not changed)

The data (sim/validation/moe_kernels.yaml, each run with its URL) are the tables vLLM's
benchmarks/kernels/benchmark_moe.py and SGLang's tuning_fused_moe_triton.py print when a pull request adds a tuned
config: the GPU time of one MoE layer's fused-experts call (top-k routing, token sort, the w13 and w2 grouped
GEMMs, activation, sum) over M tokens under a CUDA graph, with random gating (tokens spread uniformly over the
experts). These are the simulator's fit rows for its MoE terms, so the serving rows of public_vllm.yaml stay
held out from them.

Each run is priced as a one-layer MoE model (its per-GPU experts, per-GPU intermediate size, hidden size, top-k and
dtype) by CostModel.moe_layer_time on its card's preset: per layer, moe_layer_us + moe_expert_us x experts touched
+ max(touched experts' weight bytes / (moe_bw_efficiency x bandwidth), expert FLOPs / (moe_mfu x peak[dtype])).
--fit picks the terms named by --terms (default moe_layer_us, the one the presets adopted; the others stay each
sheet's own: bw_efficiency and mfu where moe_bw_efficiency / moe_mfu are unset) by least squares on log time:
pooled over every card's runs (each on its own sheet), scored on each card with that card's runs left out of the
fit, and per card with each run left out in turn. Runs on devices without a preset (`other`) or timed by another
harness are kept in the file but not fitted; the lab's own runs (tool lab) and vLLM's fused_experts timed by a third
party's harness (harness fused_experts) inform the read and FLOP fractions only, not the per-call floor (fit_runs). --terms moe_lowp_efficiency (the w8a8 experts' own fraction of the fp8 / int8
peak) fits on the fp8 / int8 runs alone; --terms moe_default_tile_mfu (unquantized experts on vLLM's built-in tiles,
sim.engine.moe_tiles default) on the lab's bf16 runs of those tiles alone (builtin_tiles), which every other fit leaves
out; --terms marlin_efficiency (weight-only experts through vLLM's fused_marlin_moe, their FLOPs' fraction of the
bf16 rate) on the published runs of that kernel alone (marlin_runs), whichever harness timed them. Writes moe_kernels.csv (every run x
batch), moe_fit.csv, moe_kernels.md and moe_kernels.png (measured and priced time per run) into --out.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from lab.arguments import data_check_parser
from lab.config_base import StrictModel
from lab.config_sim import HARDWARE_NAMES
from lab.errors import LabError
from lab.io import make_dirs, write_text_atomic
from lab.report import markdown_table
from sim.cost import CostModel
from sim.hardware import Hardware, get_hardware
from sim.measured_plot import plot_measured_vs_priced
from sim.models import ModelShape
from sim.public_check import validated_runs
from sim.quant import W8A8_DTYPES

DEFAULT_FILE = Path(__file__).parent / "validation" / "moe_kernels.yaml"
# the kernel's dtype -> (bits per expert weight, matmul dtype or None for weight-only kernels, activation dtype)
KERNEL_DTYPES = {
    "bf16": (16.0, None, "bf16"), "fp16": (16.0, None, "fp16"),
    "fp8_w8a8": (8.0, "fp8", "bf16"), "fp8_w8a8_block": (8.0 + 32 / 128 ** 2, "fp8", "bf16"),
    "int8_w8a8": (8.0, "int8", "bf16"), "int8_w8a16": (8.0, None, "bf16"), "int4_w4a16": (4.25, None, "bf16"),
    "mxfp4_w4a16": (4.25, None, "bf16"),  # gpt-oss's format through Marlin: 4-bit e2m1 + an 8-bit scale per 32
}
# fittable MoE terms of the hardware sheet -> (start, lower bound, upper bound)
MOE_TERMS = {"moe_layer_us": (20.0, 0.0, 500.0), "moe_expert_us": (0.1, 0.0, 20.0),
             "moe_bw_efficiency": (0.8, 0.05, 1.0), "moe_quant_bw_efficiency": (0.8, 0.05, 1.0),
             "moe_mfu": (0.3, 0.01, 1.0), "moe_lowp_efficiency": (0.2, 0.01, 1.0),
             "moe_default_tile_mfu": (0.2, 0.01, 1.0), "moe_default_tile_bw_efficiency": (0.6, 0.05, 1.0),
             "marlin_efficiency": (0.8, 0.05, 1.0)}
DEFAULT_TERMS = ("moe_layer_us",)  # what the presets adopted (BENCHMARKS.md, "fused-MoE kernels")
LAB_TERMS = ("moe_bw_efficiency", "moe_quant_bw_efficiency", "moe_mfu",  # what the lab's own kernel runs inform
             "moe_lowp_efficiency")
W8A8_TERMS = ("moe_lowp_efficiency",)  # terms only w8a8 (fp8 / int8 matmul) runs depend on
DEFAULT_TILE_TERMS = ("moe_default_tile_mfu", "moe_default_tile_bw_efficiency")  # terms only runs of vLLM's built-in tiles depend on (builtin_tiles)
MARLIN_TERMS = ("marlin_efficiency",)  # terms only weight-only experts (vLLM's fused_marlin_moe: marlin_runs) depend on


def marlin_runs(run: "KernelRun") -> bool:
    """Whether a run timed weight-only quantized experts, which vLLM runs through fused_marlin_moe (dequantized in the
    kernel, bf16 math: KERNEL_DTYPES' quantized weights with no matmul dtype of their own)."""
    bits, matmul, _ = KERNEL_DTYPES[run.dtype]
    return bits < 16.0 and matmul is None


def builtin_tiles(run: "KernelRun") -> bool:
    """Whether a run timed vLLM's built-in Triton tiles as get_default_config chose them before vLLM PR 34846
    (https://github.com/vllm-project/vllm/pull/34846, merged 2026-02-18: BLOCK_SIZE_K 32, no warps / stages set;
    vllm/model_executor/layers/fused_moe/fused_moe.py at vllm-project/vllm@000d1458): the lab's `default` runs,
    whose tiles real/fused_moe.default_config copies from that function. The published `default` columns here are
    of vLLM PR 34846's batch-aware defaults (PRs 40542, 44688, 45142, 45379, 53710, 53819: dated 2026-04 on),
    SGLang's own, or stop at 96 tokens or fewer (PRs 19049, 31448), where the FLOPs never bind; they are priced as
    tuned tiles."""
    return run.tool == "lab" and run.config == "default"


class KernelRun(StrictModel):
    """One published table: a fused-MoE shape on one GPU, tokens -> microseconds."""

    id: str = Field(min_length=1)
    url: str | None = None  # required for published runs; the lab's own (tool lab) say how in `note`
    tool: Literal["vllm", "sglang", "lab"]
    harness: Literal["benchmark_moe", "tuning_fused_moe_triton", "bench_moe", "fused_experts", "other"] = "benchmark_moe"
    device: str = Field(description="a hardware preset name, or `other` (not priced)")
    device_name: str | None = None
    model: str
    tp: int = Field(1, ge=1)
    ep: int = Field(1, ge=1, description="expert-parallel ranks: the layer's tokens are all ranks' tokens")
    experts: int = Field(ge=1, description="routed experts on one GPU")
    shard_intermediate: int = Field(ge=1, description="one expert's intermediate size on one GPU")
    hidden: int = Field(ge=1)
    top_k: int = Field(ge=1)
    dtype: Literal[tuple(KERNEL_DTYPES)]  # type: ignore[valid-type]
    config: str = "default"
    note: str | None = None
    partial: bool = False  # the source's table was read only in part
    also_posted: str | None = None
    kernel_us: dict[int, float] = Field(min_length=1)
    align_us: dict[int, float] | None = None  # real.bench_moe: its token sort, timed alone, not in kernel_us
    tiles: dict[int, str] | None = None  # real.bench_moe's searched run: the tile choice that won at each M
    exclude: str | None = None  # why the run is scored but not fitted (None: fitted)

    @field_validator("url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("an https:// address of the source expected")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "other" and v not in HARDWARE_NAMES:
            raise ValueError(f"{v!r} is neither a hardware preset ({', '.join(HARDWARE_NAMES)}) nor `other`")
        return v

    @field_validator("kernel_us")
    @classmethod
    def _positive(cls, v: dict[int, float]) -> dict[int, float]:
        if any(k < 1 or t <= 0 for k, t in v.items()):
            raise ValueError("token counts >= 1 and positive microseconds expected")
        return v

    @model_validator(mode="after")
    def _top_k_within_experts(self):
        if self.top_k > self.experts * self.ep:
            raise ValueError(f"top_k {self.top_k} exceeds the {self.experts * self.ep} experts")
        if self.url is None and self.tool != "lab":
            raise ValueError("url: a published run needs the https:// address of its source")
        return self

    def layer_model(self) -> ModelShape:
        """This run's MoE layer as a one-layer model (tp 1: the shard one GPU holds; all ep ranks' experts)."""
        bits, matmul, act = KERNEL_DTYPES[self.dtype]
        experts = self.experts * self.ep
        expert_b = experts * 3 * self.hidden * self.shard_intermediate / 1e9
        quantized = bits != 16.0
        return ModelShape(name=self.id, params_b=expert_b, n_layers=1, hidden=self.hidden, n_heads=1, n_kv_heads=1,
                          head_dim=1, active_params_b=expert_b * self.top_k / experts, dtype=act,
                          moe_experts=experts, moe_top_k=self.top_k, expert_params_b=expert_b,
                          quant_method=self.dtype if quantized else None, quant_bits=bits if quantized else None,
                          quant_experts=quantized, matmul_dtype=matmul)


def load_runs(path: str | Path) -> list[KernelRun]:
    """The runs of a kernel data file; LabError naming the file and field on anything wrong."""
    return validated_runs(KernelRun, path, "kernel runs", "<run>")


def priced_us(run: KernelRun, hw: Hardware) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, priced microseconds) of a run on a sheet: the cost model's one MoE layer."""
    tokens = np.array(sorted(run.kernel_us), dtype=np.float64)
    return tokens, layer_us(run, hw, tokens)


def layer_us(run: KernelRun, hw: Hardware, tokens: np.ndarray) -> np.ndarray:
    """The cost model's microseconds of the run's layer over `tokens` tokens entering it (all ep ranks' tokens;
    the cost model counts one rank's own)."""
    cm = CostModel(hw, run.layer_model(), ep=run.ep, drafter_layers=0,
                   moe_tiles="default" if builtin_tiles(run) else "tuned")
    return cm.moe_layer_time(tokens / run.ep) * 1e6


def score(runs: list[KernelRun], sheets: dict[str, Hardware]) -> pd.DataFrame:
    """Every (run, tokens) point of the runs on a priced card: measured, priced, error. `cached`: the point
    was served from cache, not HBM -- it ran faster than its touched weights at the sheet's peak bandwidth, or
    those weights fit in the card's L2 (`l2_mib`): the benchmarks replay one routing, so a second replay finds
    them there, which a serving step (every layer's own experts) does not."""
    rows = []
    for run in runs:
        if run.device not in sheets:
            continue
        hw = sheets[run.device]
        tokens, priced = priced_us(run, hw)
        model = run.layer_model()
        touched = model.routed_bytes_read(tokens / run.ep, run.ep)  # this rank's touched weight bytes
        hbm_us = touched / (hw.mem_bw_tbs * 1e12) * 1e6  # at the peak
        in_l2 = touched <= (hw.l2_mib or 0.0) * 2**20
        for m, sim, bound, fits_l2 in zip(tokens, priced, hbm_us, in_l2):
            measured = run.kernel_us[int(m)]
            rows.append({"run": run.id, "device": run.device, "model": run.model, "kernel_dtype": run.dtype,
                         "experts": run.experts, "shard_intermediate": run.shard_intermediate, "hidden": run.hidden,
                         "top_k": run.top_k, "config": run.config, "tokens": int(m), "measured_us": measured,
                         "sim_us": float(sim), "rel_err": float(sim / measured - 1),
                         "hbm_bound_us": float(bound), "cached": bool(measured < bound or fits_l2)})
    return pd.DataFrame(rows)


def with_terms(hw: Hardware, values: dict[str, float]) -> Hardware:
    return hw.model_copy(update={name: float(v) for name, v in values.items()})


def fit_terms(runs: list[KernelRun], terms: tuple[str, ...] = DEFAULT_TERMS) -> dict[str, float]:
    """The MoE terms named in `terms` (the others: each sheet's own) by least squares on log time over the runs' points, each run priced on its
    own card's preset, from several starts. Cache-served points (score's `cached`: faster than their touched
    weights at the sheet's peak bandwidth, or those weights fit in its L2) are left out."""
    from scipy.optimize import least_squares

    sheets = {d: get_hardware(d) for d in {r.device for r in runs}}
    frame = score(runs, sheets)
    frame = frame[~frame.cached]
    priced_runs = [(r, frame.tokens[frame.run == r.id].to_numpy(np.float64)) for r in runs]
    priced_runs = [(r, t) for r, t in priced_runs if len(t)]
    measured = np.log(frame.measured_us.to_numpy())  # score's order: the runs' order, tokens ascending

    def residuals(x):
        values = dict(zip(terms, x))
        priced = [layer_us(r, with_terms(sheets[r.device], values), t) for r, t in priced_runs]
        return np.log(np.concatenate(priced)) - measured

    first, low, high = (np.array(v) for v in zip(*(MOE_TERMS[t] for t in terms)))
    best = None
    for scale in (1.0, 0.3, 2.0):  # several starts: the max() makes the loss kinked
        fit = least_squares(residuals, x0=np.clip(first * scale, low, high), bounds=(low, high))
        if best is None or fit.cost < best.cost:
            best = fit
    return {t: float(v) for t, v in zip(terms, best.x)}


def own_floor(run: KernelRun) -> bool:
    """Whether a run's per-call floor is vLLM's or SGLang's own kernel benchmark's: not the lab's kernel (tool lab:
    vLLM's algorithm in the lab's code) nor vLLM's fused_experts timed by a third party's harness (harness
    fused_experts: its own router, launches and timer around vLLM's kernels)."""
    return run.tool != "lab" and run.harness != "fused_experts"


def fit_runs(runs: list[KernelRun], terms: tuple[str, ...] = DEFAULT_TERMS) -> list[KernelRun]:
    """The runs a fit of `terms` uses: on a preset card, timed by vLLM's or SGLang's own kernel benchmark, by
    real.bench_moe or by another harness around vLLM's fused_experts, and not excluded (`exclude` says why). The
    last two inform only LAB_TERMS (own_floor): the lab's kernel is vLLM's algorithm (the same reads and FLOPs) but
    not vLLM's code, and a third party's harness adds its own router and launches, so their per-call floor and
    per-expert cost are their own (the lab's floor fits 44 us where vLLM's and SGLang's published tables fit 31)."""
    if set(terms) <= set(DEFAULT_TILE_TERMS):  # the built-in tiles' own runs, unquantized (their `exclude` keeps
        return [r for r in runs if builtin_tiles(r) and r.device != "other"  # them out of every other fit)
                and KERNEL_DTYPES[r.dtype][0] == 16.0]
    if set(terms) <= set(MARLIN_TERMS):  # vLLM's own fused_marlin_moe, whoever's harness timed it: the FLOP fraction
        return [r for r in runs if marlin_runs(r) and r.device != "other"  # is read where the FLOPs bind, past the
                and r.tool != "lab" and r.exclude is None]                   # harness's per-call floor
    own_code_ok = set(terms) <= set(LAB_TERMS)
    w8a8_only = set(terms) <= set(W8A8_TERMS)  # a fit of those alone: the runs they price (others add constants)
    return [r for r in runs if r.device != "other" and r.harness != "other" and r.exclude is None
            and (own_floor(r) or own_code_ok) and (not w8a8_only or KERNEL_DTYPES[r.dtype][1] in W8A8_DTYPES)]


def scored(runs: list[KernelRun], values) -> pd.DataFrame:
    """score() with every card's preset given the MoE terms `values`; cached points dropped."""
    frame = score(runs, {d: with_terms(get_hardware(d), values) for d in {r.device for r in runs}})
    return frame[~frame.cached]


def fit_all(runs: list[KernelRun], terms: tuple[str, ...] = DEFAULT_TERMS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One set of the MoE terms for every card (`pooled`: all fit runs, each on its own sheet), scored on each
    card with that card's runs left out of the fit (leave one card out); beside it each card's own fit with its
    in-sample error and a leave-one-run-out check. Returns (the table, the left-out points of the pooled fit)."""
    usable = fit_runs(runs, terms)
    pooled = fit_terms(usable, terms)
    rows, left_out = [], []

    def median_pct(frame):
        return round(100 * float(frame.rel_err.abs().median()), 1)

    everything = scored(usable, pooled)
    rows.append({"fit": "pooled", "device": "all", "runs": len(usable), "points": len(everything),
                 **{t: round(v, 4) for t, v in pooled.items()}, "median_abs_err_pct": median_pct(everything)})
    for device in sorted({r.device for r in usable}):
        mine = [r for r in usable if r.device == device]
        others = [r for r in usable if r.device != device]
        inside = scored(mine, pooled)
        row = {"fit": "pooled", "device": device, "runs": len(mine), "points": len(inside),
               "median_abs_err_pct": median_pct(inside)}
        if others:
            out = scored(mine, fit_terms(others, terms))
            left_out.append(out)
            row["left_out_median_abs_err_pct"] = median_pct(out)
        rows.append(row)
        own = fit_terms(mine, terms)
        inside = scored(mine, own)
        row = {"fit": "own card", "device": device, "runs": len(mine), "points": len(inside),
               **{t: round(v, 4) for t, v in own.items()}, "median_abs_err_pct": median_pct(inside)}
        if len(mine) > 1:
            row["left_out_median_abs_err_pct"] = median_pct(pd.concat(
                [scored([r], fit_terms([x for x in mine if x.id != r.id], terms)) for r in mine]))
        rows.append(row)
    return pd.DataFrame(rows), (pd.concat(left_out, ignore_index=True) if left_out else pd.DataFrame())


def markdown(points: pd.DataFrame, fits: pd.DataFrame | None) -> str:
    """Per run: tokens range, median |error|, error at the fewest and most tokens; per card: the summary."""
    lines = [("| run | device | dtype | E / N / hidden / k | tokens | measured us (fewest .. most) | priced us | "
             "median abs err | err at fewest / most |"), "|---|---|---|---|---|---|---|---|---|"]
    for run, f in points.groupby("run", sort=False):
        f = f[~f.cached] if (~f.cached).any() else f  # cache-served points are counted below, not here
        first, last = f.iloc[0], f.iloc[-1]
        lines.append(f"| {run} | {first.device} | {first.kernel_dtype} | {first.experts} / {first.shard_intermediate} / "
                     f"{first.hidden} / {first.top_k} | {first.tokens}-{last.tokens} | {first.measured_us:.4g} .. "
                     f"{last.measured_us:.4g} | {first.sim_us:.4g} .. {last.sim_us:.4g} | "
                     f"{100 * f.rel_err.abs().median():.0f}% | {100 * first.rel_err:+.0f}% / {100 * last.rel_err:+.0f}% |")
    served = points[~points.cached]
    by_card = served.groupby("device").rel_err.agg(lambda e: 100 * e.abs().median()).round(1)
    lines += ["", "median |error| by card over the points HBM could have served: "
              + ", ".join(f"{d} {v}%" for d, v in by_card.items()),
              (f"{int(points.cached.sum())} of {len(points)} points were served from cache (faster than their "
              "touched weights at the sheet's peak bandwidth, or those weights fit in its L2; the benchmark replays "
              "one routing 10 times); listed, not fitted or summarised")]
    if fits is not None and len(fits):
        lines += ["", markdown_table(fits, floatfmt="{:g}")]
    return "\n".join(lines) + "\n"


def plot(points: pd.DataFrame, path: Path) -> None:
    plot_measured_vs_priced(points, path, x="tokens", xlabel="tokens in the step", ylabel="one MoE layer, us",
                            title="fused-MoE kernel: published (dots) vs the cost model (lines)")


def main(argv=None) -> int:
    ap = data_check_parser("python -m sim.moe_kernels", __doc__, DEFAULT_FILE, "fused-MoE kernel timings",
                           "moe_kernels", "also fit the MoE terms (pooled over the cards and per card) and score "
                           "them on runs left out (moe_fit.csv); the presets are not changed")
    ap.add_argument("--terms", default=",".join(DEFAULT_TERMS),
                    help=f"with --fit: comma-separated terms to fit, of {', '.join(MOE_TERMS)} (default: the one the "
                         "presets adopted); the others stay each sheet's own")
    args = ap.parse_args(argv)
    try:
        terms = tuple(t.strip() for t in args.terms.split(",") if t.strip())
        unknown = [t for t in terms if t not in MOE_TERMS]
        if not terms or unknown:
            raise LabError(f"--terms: {', '.join(unknown) or 'nothing named'}; fittable: {', '.join(MOE_TERMS)}")
        runs = load_runs(args.file)
        make_dirs(args.out)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cpu0, wall0 = time.process_time(), time.perf_counter()
    priced = [r for r in runs if r.device != "other"]
    points = score(priced, {d: get_hardware(d) for d in {r.device for r in priced}})
    fits = left_out = None
    if args.fit:
        fits, left_out = fit_all(priced, terms)
        write_text_atomic(Path(args.out) / "moe_fit.csv", fits.to_csv(index=False))
        if len(left_out):
            write_text_atomic(Path(args.out) / "moe_left_out.csv", left_out.to_csv(index=False))
    out = Path(args.out)
    write_text_atomic(out / "moe_kernels.csv", points.to_csv(index=False))
    text = markdown(points, fits)
    skipped = len(runs) - len(priced)
    if skipped:
        text += f"\n{skipped} run(s) on devices without a preset (`other`) are kept in the file, not priced.\n"
    write_text_atomic(out / "moe_kernels.md", text)
    plot(points, out / "moe_kernels.png")
    print(text)
    print(f"wall {time.perf_counter() - wall0:.1f} s, process CPU {time.process_time() - cpu0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
