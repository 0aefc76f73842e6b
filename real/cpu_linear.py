"""Few-row linear layers on CPU as W @ x^T: the same product, the fast BLAS path for a verify step.

A target's linear layers compute y = x @ W^T (F.linear). On CPU with few rows -- a verify step of k
tokens, a decode step of a small batch -- that call takes a path that is 2-4x slower than the same
product written as (W @ x^T)^T. Measured on this 2-core AVX2 box (torch 2.13, fp32, 2 threads): the
tied 262,144 x 640 LM head of Gemma3-270M over 4 rows took 144 ms as F.linear and 37 ms as W @ x^T;
one row (a plain decode step, a matrix-vector product) takes 55 ms either way. A whole 4-token verify
step fell from 249 ms to 122 ms, a 1-token decode step stayed at ~115 ms -- so on this CPU a verify was
2.2x a decode before and ~1x after, which is what speculative decoding's economics assume.

Machines differ (AVX512, AMX, other BLAS builds), so `auto` measures both forms once per weight shape,
dtype, thread count and CPU model, at a few row counts, keeps the answer in $DSPARK_LAB_CACHE/
cpu_linear.json, and switches a shape only up to the largest row count where W @ x^T measured faster.
One row (a batch-1 decode step) is measured on its own and switched only where W @ x measured faster:
on the AVX2 box it made no difference, on a faster AVX512 EPYC (session 35) F.linear over one row ran the
LM head at the speed of four rows. The result is the same product (fp32 rounding may differ in the last
bits, as between any two BLAS kernels); greedy identity is tested with the switch on
(tests/real/test_cpu_linear.py). CUDA and MPS targets are never touched.

    record = use_fast_few_row_linears(target.model, mode="auto", device="cpu")   # load_target does this
    python -m real.cpu_linear --model-shapes 262144x640,2048x640 --dtype float32   # print the probes
    python -m real.cpu_linear --model-shapes 262144x640 --rows 4,8,12,16   # + the switched (padded) layer
"""
from __future__ import annotations

import argparse
import functools
import json
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from lab.arguments import ArgumentParser, int_list
from lab.io import write_json_atomic

MODES = ("auto", "on", "off")
ROW_PROBES = (4, 16, 64, 256)   # row counts `auto` times; a shape switches up to the last that won
ONE_ROW = 1                     # timed on its own: a decode step's matrix-vector product is another kernel
ONE_ROW_PADDED = 2              # ... switched, one row is computed as two (a zero row added): a matrix product
ON_ROW_LIMIT = 64               # `on`: switch every shape up to this many rows, unmeasured
MIN_GAIN = 1.1                  # W @ x^T must be at least this much faster to count as a win (noise margin)
CACHE_FILE = "cpu_linear.json"
ROW_TILE = 8  # past one tile, rows are padded with zeros to whole tiles of this many (see transposed_linear)


def padded_rows(rows: int, tile: int = ROW_TILE) -> int:
    """The rows a switched product computes: one row as two (BLAS runs one row as a matrix-vector product, the
    slow kernel here), `rows` up to one tile, whole tiles past it (12 -> 16 at tile 8)."""
    if rows == ONE_ROW:
        return ONE_ROW_PADDED
    return rows if rows <= tile else -(-rows // tile) * tile


def transposed_linear(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """module(x), computed as (W @ x^T)^T when x holds 2..row_limit rows, or one row where that was
    measured faster (module._lab_one_row); F.linear otherwise.

    Past one tile of ROW_TILE rows the input is padded with zero rows to whole tiles: on this AVX2 box the
    262,144 x 640 LM head over 9..15 rows took 118-229 ms as it came (13-15 rows slower than 16) and 135-162
    ms padded to 16, so a step's cost is a staircase in whole tiles, which the simulator's CPU sheet
    describes with gemm_row_tile (sim/cost.py). Zero rows add nothing to the real rows' products."""
    in_features = x.shape[-1]
    rows = x.numel() // in_features
    if not (2 <= rows <= module._lab_row_limit or (rows == 1 and getattr(module, "_lab_one_row", False))):
        return F.linear(x, module.weight, module.bias)
    x2 = x.reshape(rows, in_features)  # [M, in]
    padded = padded_rows(rows)
    if padded != rows:
        x2 = torch.cat([x2, x2.new_zeros(padded - rows, in_features)])  # [M', in], zero rows past M
    else:
        x2 = x2.contiguous()
    y = torch.mm(module.weight, x2.t()).t()[:rows]  # [M, out], a transposed view
    if module.bias is not None:
        y = y + module.bias
    return y.contiguous().reshape(*x.shape[:-1], module.weight.shape[0])


@functools.cache
def cpu_model_name() -> str:
    """The CPU's model string (/proc/cpuinfo), part of the cache key: another CPU measures afresh."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return torch.backends.cpu.get_cpu_capability()


def _best_ms(fn, repeats: int = 3) -> float:
    fn()  # warm-up: first-touch of the output, BLAS buffers
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


@torch.inference_mode()
def probe_shape(weight: torch.Tensor, rows_list=ROW_PROBES) -> list[list[float]]:
    """[[rows, F.linear ms, W @ x^T ms], ...] for this weight [out, in]. Inputs are constants: no RNG draw,
    so measuring never moves a run's random stream. Past the first multi-row loss it stops (the crossover:
    larger row counts only favour F.linear more); one row is a kernel of its own and never stops it."""
    probes = []
    for rows in rows_list:
        x = torch.full((rows, weight.shape[1]), 0.01, dtype=weight.dtype, device=weight.device)  # [M, in]
        padded = x if padded_rows(rows) == rows else torch.cat([x, x.new_zeros(padded_rows(rows) - rows, weight.shape[1])])  # [M', in]
        default_ms = _best_ms(lambda x=x: F.linear(x, weight))
        transposed_ms = _best_ms(lambda x=padded, rows=rows: torch.mm(weight, x.t()).t()[:rows].contiguous())
        probes.append([rows, round(default_ms, 4), round(transposed_ms, 4)])
        if rows != ONE_ROW and transposed_ms * MIN_GAIN > default_ms:
            break
    return probes


def _wins(default_ms: float, transposed_ms: float) -> bool:
    return transposed_ms * MIN_GAIN <= default_ms


def row_limit(probes: list[list[float]]) -> int:
    """The largest probed row count (>= 2) up to which W @ x^T won every multi-row probe (1: never switch)."""
    limit = 1
    for rows, default_ms, transposed_ms in probes:
        if rows == ONE_ROW:
            continue
        if not _wins(default_ms, transposed_ms):
            break
        limit = int(rows)
    return limit


def one_row_wins(probes: list[list[float]]) -> bool:
    """Whether W @ x beat F.linear over one row (False when one row was not probed)."""
    return any(rows == ONE_ROW and _wins(default_ms, transposed_ms) for rows, default_ms, transposed_ms in probes)


def _cache_key(weight: torch.Tensor) -> str:
    dtype = str(weight.dtype).removeprefix("torch.")
    return (f"{cpu_model_name()} | torch {torch.__version__} | {dtype} | {torch.get_num_threads()} threads | "
            f"{weight.shape[0]}x{weight.shape[1]}")


def _cache_path() -> Path:
    from real.embedded import cache_root

    return cache_root() / CACHE_FILE


def measured_limits(weights: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per shape "OUTxIN": {"row_limit", "one_row", "probes", "cached"}; probes measured once per machine and
    kept. An entry from before one row was probed (its first probe is not one row) is measured again."""
    path = _cache_path()
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}  # a damaged cache is re-measured, never trusted
    out, changed = {}, False
    for shape, weight in weights.items():
        key = _cache_key(weight)
        entry = cache.get(key)
        cached = isinstance(entry, list) and bool(entry) and isinstance(entry[0], list) and entry[0][:1] == [ONE_ROW]
        if not cached:
            cache[key] = probe_shape(weight, rows_list=(ONE_ROW, *ROW_PROBES))
            changed = True
        out[shape] = {"row_limit": row_limit(cache[key]), "one_row": one_row_wins(cache[key]),
                      "probes": cache[key], "cached": cached}
    if changed:
        try:
            write_json_atomic(path, cache)
        except OSError:
            pass  # a read-only cache only costs a re-measurement next time
    return out


def use_fast_few_row_linears(model: torch.nn.Module, mode: str = "auto", device: str = "cpu") -> dict:
    """Switch the model's nn.Linear layers to transposed_linear where it is faster; returns what was done
    (target.json records it). mode: auto (measured per shape, one row on its own), on (every shape from one
    row up to ON_ROW_LIMIT rows), off (F.linear everywhere; undoes an earlier switch)."""
    if mode not in MODES:
        raise ValueError(f"cpu_linear mode {mode!r}: one of {MODES}")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if torch.device(device).type != "cpu":
        return {"mode": mode, "applied": False, "reason": f"device {device}: CPU only"}
    weights = {}
    for m in linears:
        weights.setdefault(f"{m.weight.shape[0]}x{m.weight.shape[1]}", m.weight)
    if mode == "auto":
        shapes = measured_limits(weights)
    else:
        limit = ON_ROW_LIMIT if mode == "on" else 1
        shapes = {shape: {"row_limit": limit, "one_row": mode == "on"} for shape in weights}
    for m in linears:
        decided = shapes[f"{m.weight.shape[0]}x{m.weight.shape[1]}"]
        m._lab_row_limit, m._lab_one_row = decided["row_limit"], decided["one_row"]
        if m._lab_row_limit > 1 or m._lab_one_row:
            m.forward = types.MethodType(transposed_linear, m)
        elif "forward" in m.__dict__:
            del m.forward  # back to nn.Linear.forward
    switched = sorted(s for s, v in shapes.items() if v["row_limit"] > 1 or v["one_row"])
    return {"mode": mode, "applied": bool(switched), "threads": torch.get_num_threads(),
            "switched_shapes": switched, "shapes": shapes}


def weight_shapes(text: str) -> list[tuple[int, int]]:
    """An argparse `type`: comma-separated OUTxIN weight shapes ("262144x640,2048x640"), each side >= 1."""
    shapes = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        sides = item.lower().split("x")
        if len(sides) != 2 or not all(side.isdigit() and int(side) >= 1 for side in sides):
            raise argparse.ArgumentTypeError(f"{item!r} is not OUTxIN (two whole numbers >= 1, e.g. 2048x640)")
        shapes.append((int(sides[0]), int(sides[1])))
    if not shapes:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one OUTxIN shape")
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m real.cpu_linear", description=__doc__.split("\n")[0])
    parser.add_argument("--model-shapes", type=weight_shapes, default="262144x640,2048x640,640x2048",
                        help="comma-separated OUTxIN weight shapes to probe")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--rows", type=int_list, default=",".join(str(r) for r in (ONE_ROW, *ROW_PROBES)),
                        help="comma-separated row counts to time (each >= 1)")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    rows = args.rows
    print(f"cpu {cpu_model_name()} | capability {torch.backends.cpu.get_cpu_capability()} | "
          f"torch {torch.__version__} | {torch.get_num_threads()} threads | {args.dtype}")
    for out_features, in_features in args.model_shapes:
        shape = f"{out_features}x{in_features}"
        weight = torch.full((out_features, in_features), 0.01, dtype=dtype)
        for r, default_ms, transposed_ms in probe_shape(weight, rows_list=rows):
            # what a switched layer runs (padded to whole tiles past ROW_TILE rows), on the probe's own weight:
            # no nn.Linear, whose random init would allocate and draw a second weight per row count
            layer = types.SimpleNamespace(weight=weight, bias=None, _lab_row_limit=r, _lab_one_row=True)
            x = torch.full((r, in_features), 0.01, dtype=dtype)
            with torch.inference_mode():
                switched_ms = _best_ms(lambda x=x, layer=layer: transposed_linear(layer, x))
            print(f"{shape:>12} rows {r:4d}: F.linear {default_ms:9.2f} ms   W @ x^T {transposed_ms:9.2f} ms"
                  f"   x{default_ms / transposed_ms:.2f}   switched ({padded_rows(r)} rows) {switched_ms:9.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
