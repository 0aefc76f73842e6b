"""GPU kernels measured on the card (real.bench_kernels) against the cost model's price of the same work.

    python -m sim.kernel_roofline --out kernel_roofline/          # the lab's tables, sim/validation/kernels_measured.yaml
    python -m sim.kernel_roofline --file kernels.yaml --fit --out kernel_roofline/      # + implied.csv
    python -m sim.kernel_roofline --profile runs/gpu_profile/<run_id> --out kernel_roofline/   # + a lab step profile

Every point of a measured table (one dense GEMM, or one attention call, timed alone with the L2 flushed) is priced by
the cost model's own code (sim/cost.py) on the table's hardware preset: a GEMM as a one-layer model of N x K weights
(sim.gemm_kernels.sim_seconds), decode attention as a one-layer attention-only model stepping `batch` requests of
`context` cached tokens, causal prefill as one request's `context` tokens attending to their predecessors; no
overheads. Out: points.csv (measured, simulated, measured / simulated) and summary.md by table, kind and regime.

--fit adds implied.csv: the achievable fractions each table implies, beside the sheet's (sim/presets/hardware.yaml):
weight bandwidth and the per-GEMM floor (bf16 GEMMs of M <= 16 tokens, the LM head included: a line through weight
bytes and time, its slope as a fraction of peak bandwidth and its intercept in us: what a small kernel costs beyond
its bytes),
GEMM mfu (bf16, M >= 4096: 2 M N K / time / peak), fp8 over bf16 mfu (the same M: lowp_matmul_efficiency), KV read
bandwidth (decode attention over >= 256 MiB of KV), attention mfu (prefill of >= 4096 tokens; beside the sheet's
attn_mfu, else mfu: torch's SDPA runs FlashAttention 2, vLLM FA3 on Hopper), and for a table with a `sustained` run (real.bench_kernels --sustained) the GEMM mfu its second half held with the card busy.

Kernel-sum step: where a table has the LM head and the layer count, each decode point (batch, context) gives
layers x (the four GEMMs at M = batch + decode attention) + the LM head at M = batch, in ms: the step of those
kernels back to back with no gaps or elementwise kernels (norms, rotary, activation, residual adds: fused in vLLM, not
timed here), beside the cost model's step of the same model (real/presets/<model>.json) with and without the sheet's
step / layer / request overheads (steps.csv). At tp > 1 both cost-model columns hold the step's all-reduces (link
latency and bytes), which no kernel here times.

--profile DIR: a `lab profile` run (step_profile.csv + .json) against the roofline of its model on --sheet (default:
the card its json names), row by row (profile.csv): the lab's own transformers engine, not vLLM.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lab.arguments import data_check_parser
from lab.config_sim import HARDWARE_NAMES
from lab.errors import LabError
from lab.io import make_dirs, write_text_atomic
from lab.report import markdown_table
from lab.yaml_load import load_runs_list
from sim.cost import CostModel
from sim.gemm_kernels import sim_seconds
from sim.hardware import get_hardware, preset_for_device
from sim.models import ModelShape, from_hf_config
from sim.step_profile import read_profile

DEFAULT_FILE = Path(__file__).parent / "validation" / "kernels_measured.yaml"
PRESETS = Path(__file__).resolve().parents[1] / "real" / "presets"
LAYER_GEMMS = ("qkv", "o", "gate_up", "down")
MIB = 2**20


def load_tables(path: str | Path) -> list[dict]:
    """The runs of a real.bench_kernels file, each checked for the fields this module reads."""
    p = Path(path)
    runs = load_runs_list(p, "kernel tables")
    for i, run in enumerate(runs):
        for key in ("id", "device", "unit", "points"):
            if key not in run:
                raise LabError(f"{p}: runs[{i}].{key}: missing")
        if run["unit"] != "us":
            raise LabError(f"{p}: runs[{i}].unit: {run['unit']!r}; measured tables are in us")
        if run["device"] not in HARDWARE_NAMES:
            raise LabError(f"{p}: runs[{i}].device: {run['device']!r} is not a hardware preset (one is needed to "
                           "price the table)")
        for key in ("tp", "layers"):  # optional; when given, the decode-step table multiplies by them
            if key in run and not _positive_int(run[key]):
                raise LabError(f"{p}: runs[{i}].{key}: {run[key]!r}; a positive integer expected")
        for key, points in (("points", run["points"]), ("attention", run.get("attention") or [])):
            if not isinstance(points, list) or not all(isinstance(x, dict) for x in points):
                raise LabError(f"{p}: runs[{i}].{key}: a list of mappings expected")
        for j, point in enumerate(run["points"]):
            if (not all(k in point for k in ("gemm", "m", "n", "k", "dtype", "value")) or not _positive(point["value"])
                    or not all(_positive_int(point[k]) for k in ("m", "n", "k"))
                    or not all(isinstance(point[k], str) for k in ("gemm", "dtype"))):
                raise LabError(f"{p}: runs[{i}].points[{j}]: gemm and dtype (words), positive integers m, n, k and a "
                               "positive value expected")
        for j, point in enumerate(run.get("attention") or []):
            sizes = ("batch", "context", "q_heads", "kv_heads", "head_dim")
            if (not all(k in point for k in ("phase", *sizes, "value"))
                    or point["phase"] not in ("decode", "prefill") or not _positive(point["value"])
                    or not all(_positive_int(point[k]) for k in sizes)):
                raise LabError(f"{p}: runs[{i}].attention[{j}]: phase (decode or prefill), positive integers batch, "
                               "context, q_heads, kv_heads, head_dim and a positive value expected")
    return runs


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def attention_seconds(sheet, phase: str, batch: int, context: int, q_heads: int, kv_heads: int,
                      head_dim: int) -> float:
    """The cost model's time of one attention call: a one-layer, attention-only model (no weights)."""
    model = ModelShape(name="attention", params_b=0.0, n_layers=1, hidden=q_heads * head_dim, n_heads=q_heads,
                       n_kv_heads=kv_heads, head_dim=head_dim, dtype="bf16")
    cm = CostModel(sheet, model, drafter_layers=0, step_overhead_s=0.0, layer_overhead_s=0.0, request_overhead_s=0.0)
    if phase == "decode":
        return cm.step_time(batch, float(batch * context), batch, False)
    return cm.step_time(context, float(context), 1, False, attn_ctx=context * (context + 1) / 2.0)


def gemm_regime(m: int) -> str:
    return "M <= 16" if m <= 16 else ("M >= 1024" if m >= 1024 else "16 < M < 1024")


def priced_points(runs: list[dict]) -> pd.DataFrame:
    """Every measured point with the cost model's price on its table's sheet."""
    rows = []
    for run in runs:
        sheet = get_hardware(run["device"])
        for p in run["points"]:
            dtype = p["dtype"]
            simulated = sim_seconds(sheet, p["m"], p["n"], p["k"], dtype) * 1e6
            rows.append({"run": run["id"], "device": run["device"], "kind": f"gemm {dtype}", "name": p["gemm"],
                         "kernel": p.get("kernel", ""), "m": p["m"], "n": p["n"], "k": p["k"],
                         "regime": gemm_regime(p["m"]), "measured_us": p["value"], "spread": p.get("spread"),
                         "simulated_us": simulated})
        for a in run.get("attention") or []:
            simulated = attention_seconds(sheet, a["phase"], a["batch"], a["context"], a["q_heads"], a["kv_heads"],
                                          a["head_dim"]) * 1e6
            regime = f"context {a['context']}" if a["phase"] == "prefill" else f"batch x context {a['batch'] * a['context']}"
            rows.append({"run": run["id"], "device": run["device"], "kind": f"attention {a['phase']}",
                         "name": a.get("backend", ""), "kernel": a.get("backend", ""), "batch": a["batch"],
                         "context": a["context"], "q_heads": a["q_heads"], "kv_heads": a["kv_heads"],
                         "head_dim": a["head_dim"], "regime": regime, "measured_us": a["value"],
                         "spread": a.get("spread"), "simulated_us": simulated})
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["run", "device", "kind", "name", "regime",
                                                                   "measured_us", "simulated_us"])
    frame["ratio"] = frame.measured_us / frame.simulated_us
    for column in ("m", "n", "k", "batch", "context", "q_heads", "kv_heads", "head_dim"):  # a file of one kind only
        if column not in frame:
            frame[column] = np.nan
    return frame


def summary(points: pd.DataFrame) -> pd.DataFrame:
    kind_regime = points.assign(regime=np.where(points.kind.str.startswith("attention"), "", points.regime))
    return (kind_regime.groupby(["run", "kind", "regime"], sort=False)
            .agg(points=("ratio", "size"), measured_over_simulated_median=("ratio", "median"),
                 min=("ratio", "min"), max=("ratio", "max")).round(2).reset_index())


def implied(runs: list[dict], points: pd.DataFrame) -> pd.DataFrame:
    """Per table: the achievable fractions its kernels imply, beside the sheet's (see the module docstring)."""
    rows = []
    for run in runs:
        sheet = get_hardware(run["device"])
        bw, peak = sheet.mem_bw_tbs * 1e12, sheet.peak_for("bf16") * 1e12
        sustained = (run.get("sustained") or {}).get("points") or []
        if sustained:  # the second half of the busy run: the clocks have settled
            s = run["sustained"]
            late = pd.DataFrame(sustained[len(sustained) // 2:])
            rows.append({"run": run["id"], "device": run["device"], "term": "sustained gemm mfu",
                         "implied": round(float(late.tflops.median() * 1e12 / peak), 3), "sheet": sheet.mfu,
                         "points": len(late), "from": f"bf16 {s['m']} x {s['n']} x {s['k']} GEMMs back to back, "
                         f"second half of the run: SM clock {late.sm_mhz.median():.0f} MHz, "
                         f"power {late.power_w.median():.0f} W"})
        if not run["points"]:
            continue
        g = points[(points.run == run["id"]) & points.kind.str.startswith("gemm")]
        layer = g[g.name.isin(LAYER_GEMMS)]
        small = g[(g.kind == "gemm bf16") & (g.m <= 16)]  # the layer's GEMMs and the LM head
        # time = floor + weight bytes / achieved bandwidth: a line through (bytes, us)
        slope, intercept = (np.polyfit(small.n * small.k * 2.0, small.measured_us, 1) if small.n.nunique() > 1
                            else (np.nan, np.nan))
        big = layer[(layer.kind == "gemm bf16") & (layer.m >= 4096)]
        mfu = big.m * big.n * big.k * 2.0 / (big.measured_us * 1e-6) / peak
        fp8 = layer[(layer.kind == "gemm fp8_w8a8") & (layer.m >= 4096)]
        fp8_mfu = fp8.m * fp8.n * fp8.k * 2.0 / (fp8.measured_us * 1e-6) / sheet.peak_for("fp8") / 1e12 \
            if sheet.has_peak("fp8") else pd.Series(dtype=float)
        att = points[(points.run == run["id"]) & points.kind.str.startswith("attention")]
        dec = att[att.kind == "attention decode"]
        kv_bytes = dec.batch * dec.context * dec.kv_heads * dec.head_dim * 2 * 2.0
        dec_big = kv_bytes >= 256 * MIB
        pre = att[(att.kind == "attention prefill") & (att.context >= 4096)]
        pre_flops = 4.0 * pre.q_heads * pre.head_dim * pre.context * (pre.context + 1) / 2.0

        def add(term, value, sheet_value, n, how, run=run):
            rows.append({"run": run["id"], "device": run["device"], "term": term,
                         "implied": round(float(value), 3) if n else None, "sheet": sheet_value, "points": int(n),
                         "from": how})

        add("bw_efficiency", 1e6 / slope / bw, sheet.bw_efficiency, len(small),
            "bf16 GEMMs, M <= 16: 1 / slope of time over weight bytes / peak bandwidth")
        add("gemm mfu", mfu.median(), sheet.mfu, len(big), "bf16 layer GEMMs, M >= 4096: 2MNK / time / peak")
        if len(fp8_mfu) and len(mfu):
            add("lowp_matmul_efficiency fp8", fp8_mfu.median() / mfu.median(),
                sheet.lowp_matmul_efficiency.get("fp8"), len(fp8), "fp8 GEMM mfu (own peak) / bf16 GEMM mfu, M >= 4096")
        add("kv_bw_efficiency", (kv_bytes[dec_big] / (dec.measured_us[dec_big] * 1e-6) / bw).median(),
            sheet.kv_bw_efficiency or sheet.bw_efficiency, int(dec_big.sum()),
            "decode attention over >= 256 MiB of KV: KV bytes / time / peak bandwidth")
        add("attention mfu", (pre_flops / (pre.measured_us * 1e-6) / peak).median(),
            sheet.mfu if sheet.attn_mfu is None else sheet.attn_mfu, len(pre),
            "causal prefill attention, >= 4096 tokens: 4 H d L(L+1)/2 / time / peak")
        add("small-GEMM floor us", intercept, sheet.layer_overhead_us / len(LAYER_GEMMS), len(small),
            "bf16 GEMMs, M <= 16: intercept of the same line (a kernel's cost beyond its bytes); sheet column: "
            "layer_overhead_us / 4 GEMMs")
    return pd.DataFrame(rows, columns=["run", "device", "term", "implied", "sheet", "points", "from"])


def kernel_steps(runs: list[dict], points: pd.DataFrame) -> pd.DataFrame:
    """Per table with an LM head and a layer count: the kernel-sum decode step beside the cost model's step."""
    rows = []
    for run in runs:
        config = PRESETS / f"{run.get('model')}.json"
        g = points[(points.run == run["id"]) & (points.kind == "gemm bf16")]
        dec = points[(points.run == run["id"]) & (points.kind == "attention decode")]
        if not run.get("layers") or "lm_head" not in set(g.name) or not config.is_file() or dec.empty:
            continue
        sheet = get_hardware(run["device"])
        model = from_hf_config(config, name=run["model"])
        tp = int(run.get("tp", 1))
        full = CostModel(sheet, model, tp=tp, drafter_layers=0)
        bare = CostModel(sheet, model, tp=tp, drafter_layers=0, step_overhead_s=0.0, layer_overhead_s=0.0,
                         request_overhead_s=0.0)
        us = g.set_index(["name", "m"]).measured_us
        for a in dec.itertuples():
            b = int(a.batch)
            if not all((name, b) in us.index for name in LAYER_GEMMS + ("lm_head",)):
                continue
            layer_us = sum(us[(name, b)] for name in LAYER_GEMMS) + a.measured_us
            kernels_ms = (run["layers"] * layer_us + us[("lm_head", b)]) / 1e3
            kv = float(b * a.context)
            rows.append({"run": run["id"], "device": run["device"], "model": run["model"], "tp": tp, "batch": b,
                         "context": int(a.context), "kernel_sum_ms": round(kernels_ms, 3),
                         "roofline_ms": round(bare.step_time(b, kv, b, False) * 1e3, 3),
                         "roofline_with_overheads_ms": round(full.step_time(b, kv, b, False) * 1e3, 3)})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["kernel_sum_over_roofline"] = (frame.kernel_sum_ms / frame.roofline_ms).round(3)
        frame["kernel_sum_over_with_overheads"] = (frame.kernel_sum_ms / frame.roofline_with_overheads_ms).round(3)
    return frame


def profile_vs_roofline(run_dir: str | Path, sheet_name: str | None) -> pd.DataFrame:
    """A `lab profile` run's rows beside the roofline of its model (real/presets) on the sheet."""
    profile = read_profile(run_dir)
    meta = profile.meta
    sheet_name = sheet_name or preset_for_device(str(meta.get("hardware", "")))
    if sheet_name == "other":
        raise LabError(f"--profile {run_dir}: no hardware preset matches {meta.get('hardware')!r}; give --sheet")
    sheet = get_hardware(sheet_name)
    config = PRESETS / f"{meta.get('model')}.json"
    if not config.is_file():
        raise LabError(f"--profile {run_dir}: model {meta.get('model')!r} has no config in {PRESETS}")
    cm = CostModel(sheet, from_hf_config(config, name=meta["model"]), drafter_layers=0)
    rows = []
    for b, q, c, ms in zip(profile.batch, profile.query_tokens, profile.context_len, profile.step_ms_median):
        b, q, c = int(b), int(q), int(c)
        rows.append({"hardware": meta.get("hardware"), "sheet": sheet.name, "engine": meta.get("engine"),
                     "batch": b, "query_tokens": q, "context_len": c, "measured_ms": round(float(ms), 3),
                     # logits at every new position, as `lab profile` computes them (real/profile.py)
                     "roofline_ms": round(cm.step_time(b * q, float(b * (c + q)), b, False, b * q - b) * 1e3, 3)})
    frame = pd.DataFrame(rows)
    frame["measured_over_roofline"] = (frame.measured_ms / frame.roofline_ms).round(2)
    return frame


def markdown(frame: pd.DataFrame) -> str:
    return markdown_table(frame, floatfmt="{:g}") + "\n"  # the tables' numbers are rounded already


def main(argv=None) -> int:
    ap = data_check_parser("python -m sim.kernel_roofline", __doc__, DEFAULT_FILE, "kernel tables measured on GPUs",
                           "kernel_roofline", "also write the achievable fractions the tables imply (implied.csv); "
                           "the presets are not changed")
    ap.add_argument("--profile", action="append", default=[], help="a `lab profile` run directory (repeatable)")
    ap.add_argument("--sheet", help="the hardware preset --profile rows are priced on (default: from the json)")
    args = ap.parse_args(argv)
    try:
        runs = load_tables(args.file)
        make_dirs(args.out)
        profiles = [profile_vs_roofline(d, args.sheet) for d in args.profile]
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    points = priced_points(runs)
    write_text_atomic(out / "points.csv", points.to_csv(index=False))
    text = "Measured kernels over the cost model's price on the table's sheet\n\n" + markdown(summary(points))
    steps = kernel_steps(runs, points)
    if not steps.empty:
        write_text_atomic(out / "steps.csv", steps.to_csv(index=False))
        text += "\nKernel-sum decode step vs the cost model's step (ms)\n\n" + markdown(steps)
    if args.fit:
        terms = implied(runs, points)
        write_text_atomic(out / "implied.csv", terms.to_csv(index=False))
        text += "\nAchievable fractions the kernels imply\n\n" + markdown(terms.drop(columns=["from"]))
    if profiles:
        prof = pd.concat(profiles, ignore_index=True)
        write_text_atomic(out / "profile.csv", prof.to_csv(index=False))
        text += "\nLab step profile vs the roofline (ms)\n\n" + markdown(prof)
    write_text_atomic(out / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
