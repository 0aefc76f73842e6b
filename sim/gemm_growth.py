"""How much of a decode GEMM's FLOP time its weight stream fails to hide, from published timings of one weight
shape at M = 1 and M = 128 rows -- and the compute_memory_overlap that share gives a card's sheet.

    python -m sim.gemm_growth                                  # the table and each library's mean share, per die
    python -m sim.gemm_growth --file sim/validation/gemm_growth.yaml

A GEMM of M rows over weights too big for the L2 reads every weight once whatever M is; its time grows with M
only by the part of the extra FLOP work the weight stream does not hide. Per run (sim/validation/gemm_growth.yaml):
    leak = (t(128) - t(1)) / (127 x 2 N K / peak[dtype])      -- the growth over those FLOPs' time at the tensor peak
At M <= 128 these shapes are weight-bandwidth bound on the sheets (their FLOPs at the sheet's mfu take less than
the weights' read), so in sim/cost.py's step formula t = max(compute, memory) + (1 - overlap) x min(compute,
memory) the growth is (1 - overlap) x FLOPs / (mfu x peak): a sheet reproduces the published leak with
    overlap = 1 - leak x mfu                                    (implied_overlap)
The leak that prices a card is its die's mean over the runs of the library vLLM's unquantized linears call
(torch: cuBLAS / cuBLASLt), LIBRARY. Published: the L40S (AD102, the RTX 4090's die; vLLM PR 6677, fp8) leaks 0.26-0.46
with torch._scaled_mm, 0.43-0.78 with vLLM's CUTLASS kernels; the H100 (PR 49363, bf16) 0.19 -- Ada's tensor
work hides under its weight stream far less than Hopper's. PRICED: the sheets that take their die's value -- every
Ada preset: the AD102 boards (L40S, RTX 4090, L40, RTX 6000 Ada) measured, the L4 (AD104, the same Ada SM) inferred.
Bad input (a missing or malformed file, a run on no preset, a run without both M = 1 and M = 128 of one kernel,
weights that fit the card's L2) prints one `error:` line and exits 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from lab.arguments import ArgumentParser
from lab.errors import LabError, print_or_fail
from lab.report import markdown_table
from sim.gemm_kernels import LOW_DTYPES, load_points
from sim.hardware import get_hardware

DEFAULT_FILE = Path(__file__).parent / "validation" / "gemm_growth.yaml"
M_REF = 128       # rows: still weight-bound on every sheet here, and the largest M every run prints
LIBRARY = "torch"  # the kernel family vLLM's unquantized linears run (torch.nn.functional.linear -> cuBLAS)
# preset -> its architecture's leak: AD102 (l40s, rtx-4090, l40, rtx-6000-ada), AD104 (l4: the same Ada SM, inferred,
# no AD104 timings read), GH100
DIE_OF = {"l40s": "ada", "rtx-4090": "ada", "l40": "ada", "rtx-6000-ada": "ada", "l4": "ada", "h100": "hopper"}
PRICED = ("l40s", "rtx-4090", "l40", "rtx-6000-ada", "l4")  # sheets whose compute_memory_overlap is the Ada leak
WEIGHT_BYTES = {"bf16": 2, "fp16": 2, "fp8_w8a8": 1}


def leak_table(points: pd.DataFrame, source: str = "") -> pd.DataFrame:
    """One row per (run, kernel): t(1), t(M_REF), the extra rows' FLOP time at the card's peak and the leak; LabError
    on a run whose card has no preset, lacks either M, or whose weights fit the card's L2."""
    rows = []
    for (run, kernel), g in points.groupby(["run", "kernel"], sort=False):
        device, (n, k, dtype) = g.device.iloc[0], g[["n", "k", "dtype"]].iloc[0]
        if device == "other":
            raise LabError(f"{source}: run {run}: a card without a preset has no peak to measure the leak by")
        if dtype not in WEIGHT_BYTES:
            raise LabError(f"{source}: run {run}: dtype {dtype} is not one of {sorted(WEIGHT_BYTES)}")
        sheet = get_hardware(device)
        weights = n * k * WEIGHT_BYTES[dtype]
        if sheet.l2_mib is not None and weights <= sheet.l2_mib * 2**20:
            raise LabError(f"{source}: run {run}: {weights / 2**20:.0f} MiB of weights fit the {device}'s "
                           f"{sheet.l2_mib:g} MiB L2 (served from cache: no DRAM stream to measure)")
        at = g.groupby("m").us.min()
        if 1 not in at.index or M_REF not in at.index:
            raise LabError(f"{source}: run {run} ({kernel}): points at m 1 and m {M_REF} expected")
        matmul = LOW_DTYPES[dtype][0] if dtype in LOW_DTYPES else "bf16"
        flops_us = (M_REF - 1) * 2.0 * n * k / (sheet.peak_tflops[matmul] * 1e12) * 1e6
        rows.append({"run": run, "device": device, "die": DIE_OF.get(device, device), "kernel": kernel,
                     "n": n, "k": k, "dtype": dtype, "weights MB": round(weights / 1e6, 1),
                     "t(1) us": at[1], f"t({M_REF}) us": at[M_REF], "FLOP time at peak us": round(flops_us, 1),
                     "leak": round((at[M_REF] - at[1]) / flops_us, 3)})
    return pd.DataFrame(rows)


def die_leaks(table: pd.DataFrame, library: str = LIBRARY) -> dict[str, float]:
    """Each die's mean leak over its runs of `library`."""
    sub = table[table.kernel == library]
    return {die: round(float(v), 3) for die, v in sub.groupby("die").leak.mean().items()}


def implied_overlap(leak: float, mfu: float) -> float:
    """The compute_memory_overlap with which a sheet of this mfu prices the published leak (module docstring)."""
    return round(1.0 - leak * mfu, 3)


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.gemm_growth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", default=str(DEFAULT_FILE), help="published GEMM growth runs (YAML)")
    args = ap.parse_args(argv)

    def run() -> str:
        table = leak_table(load_points(args.file), args.file)
        lines = [markdown_table(table), ""]
        lines += [f"mean leak, {library}: {die_leaks(table, library)}" for library in sorted(table.kernel.unique())]
        leaks = die_leaks(table)
        lines.append("")
        for sheet in PRICED:
            die, hw = DIE_OF[sheet], get_hardware(sheet)
            if die in leaks:
                lines.append(f"{sheet}: {die} leak {leaks[die]} ({LIBRARY}) x mfu {hw.mfu} -> compute_memory_overlap "
                             f"{implied_overlap(leaks[die], hw.mfu)} (sheet: {hw.compute_memory_overlap})")
        return "\n".join(lines) + "\n"

    return print_or_fail(run)


if __name__ == "__main__":
    sys.exit(main())
