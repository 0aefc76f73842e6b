"""Few-row linear layers on CPU as W @ x^T: the same product, the fast BLAS path for a verify step.

A target's linear layers compute y = x @ W^T (F.linear). On CPU with few rows -- a verify step of k
tokens, a decode step of a small batch -- that call takes a path that is 2-4x slower than the same
product written as (W @ x^T)^T. Measured on this 2-core AVX2 box (torch 2.13, fp32, 2 threads): the
tied 262,144 x 640 LM head of Gemma3-270M over 4 rows took 144 ms as F.linear and 37 ms as W @ x^T;
one row (a plain decode step, a matrix-vector product) takes 55 ms either way. A whole 4-token verify
step fell from 249 ms to 122 ms, a 1-token decode step stayed at ~115 ms -- so on this CPU a verify was
2.2x a decode before and ~1x after, which is what speculative decoding's economics assume.

Machines differ (AVX512, AMX, other BLAS builds), so `auto` measures once per model, dtype, thread count
and CPU model and keeps the answer in $DSPARK_LAB_CACHE/cpu_linear.json: whole forward passes of the model
itself over 1, 4, 16 and 64 rows, every linear layer as F.linear against every layer switched (interleaved,
best of 3), and switches all layers up to the largest row count before F.linear first wins a pass by 10% (one
row, a batch-1 decode step's matrix-vector product, decided on its own; a tie switches). Whole passes, not each weight shape timed
alone: on a faster AVX512 EPYC (session 35) the small projections' F.linear won alone but lost inside the
model, and per-shape decisions ran a 1 x 8 verify step in 113 ms where switching every layer ran it in 71.
$DSPARK_LAB_CPU_LINEAR_CACHE, if set, names another file. A measurement taken while the machine is busy (1-minute load average past the core count + 1) is used for
that run only and not kept. The result is the same product (fp32 rounding may differ in the last bits, as
between any two BLAS kernels); greedy identity is tested with the switch on (tests/real/test_cpu_linear.py).
CUDA and MPS targets are never touched.

    record = use_fast_few_row_linears(target.model, mode="auto", device="cpu")   # load_target does this
    python -m real.cpu_linear --model-shapes 262144x640,2048x640 --dtype float32   # one weight shape alone
    python -m real.cpu_linear --model-shapes 262144x640 --rows 4,8,12,16   # + the switched (padded) layer
    python -m real.cpu_linear --model-shapes 262144x640 --gemv-rows        # rows read at the one-row rate
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from lab.arguments import ArgumentParser, int_list
from lab.io import write_json_atomic

MODES = ("auto", "on", "off")
ROW_PROBES = (4, 16, 64, 256)   # row counts the per-shape probe (the CLI) times
MODEL_ROW_PROBES = (4, 16, 64)  # row counts `auto` times whole forward passes at; switched up to the last that won
ONE_ROW = 1                     # timed on its own: a decode step's matrix-vector product is another kernel
ONE_ROW_PADDED = 2              # ... switched, one row is computed as two (a zero row added): a matrix product
ON_ROW_LIMIT = 64               # `on`: switch every shape up to this many rows, unmeasured
MIN_GAIN = 1.1                  # W @ x^T must be at least this much faster to count as a win (noise margin)
CACHE_FILE = "cpu_linear.json"
PROBE = "whole passes v2"        # in the cache key: entries of another probe or rule are measured again
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


def _f_linear_wins(default_ms: float, transposed_ms: float) -> bool:
    return default_ms * MIN_GAIN <= transposed_ms


def row_limit(probes: list[list[float]]) -> int:
    """The largest probed row count (>= 2, at most ON_ROW_LIMIT) up to which F.linear won no probe by the margin
    (1: never switch). A tie switches: then the step's cost stays one staircase of whole tiles up to the limit,
    the shape the simulator's CPU sheet describes (gemm_row_tile), instead of turning on noise between forms."""
    limit = 1
    for rows, default_ms, transposed_ms in probes:
        if rows == ONE_ROW:
            continue
        if rows > ON_ROW_LIMIT or _f_linear_wins(default_ms, transposed_ms):
            break
        limit = int(rows)
    return limit


def one_row_switched(probes: list[list[float]]) -> bool:
    """Whether one row is switched: probed, and F.linear did not win it by the margin (False when not probed)."""
    return any(rows == ONE_ROW and not _f_linear_wins(default_ms, transposed_ms)
               for rows, default_ms, transposed_ms in probes)


def _shape(module: torch.nn.Linear) -> str:
    return f"{module.weight.shape[0]}x{module.weight.shape[1]}"


def _cache_key(model: torch.nn.Module, linears: list[torch.nn.Linear]) -> str:
    """CPU model, torch, dtype, threads and the model: its class and every linear weight shape with its count."""
    dtype = str(linears[0].weight.dtype).removeprefix("torch.")
    counts: dict[str, int] = {}
    for m in linears:
        counts[_shape(m)] = counts.get(_shape(m), 0) + 1
    layers = ",".join(f"{shape}*{n}" for shape, n in sorted(counts.items()))
    return (f"{cpu_model_name()} | torch {torch.__version__} | {dtype} | {torch.get_num_threads()} threads | "
            f"{type(model).__name__} | {layers} | {PROBE}")


CACHE_ENV = "DSPARK_LAB_CPU_LINEAR_CACHE"  # where auto keeps its probes, if set (the tests point it at a scratch file)


def _cache_path() -> Path:
    from real.embedded import cache_root

    return Path(os.environ[CACHE_ENV]).expanduser() if os.environ.get(CACHE_ENV) else cache_root() / CACHE_FILE


def machine_busy() -> tuple[bool, float]:
    """(busy, 1-minute load average): busy when more runnable work than cores + 1 -- another process is
    competing for the cores, and a timing taken now would not describe this machine."""
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return load > cores + 1, round(load, 2)


def _switch(linears: list[torch.nn.Linear], row_limit: int, one_row: bool) -> None:
    """Every layer computes 2..row_limit rows (and one row, if one_row) as W @ x^T, F.linear otherwise."""
    for m in linears:
        m._lab_row_limit, m._lab_one_row = row_limit, one_row
        if row_limit > 1 or one_row:
            m.forward = types.MethodType(transposed_linear, m)
        elif "forward" in m.__dict__:
            del m.forward  # back to nn.Linear.forward


def _probe_ids(model: torch.nn.Module, rows: int) -> torch.Tensor:
    config = getattr(model, "config", None)
    token = getattr(config, "bos_token_id", None)
    token = token if isinstance(token, int) else 1
    device = next(model.parameters()).device
    return torch.full((1, rows), token, dtype=torch.long, device=device)  # [1, rows]: one sequence of `rows` tokens


@torch.inference_mode()
def probe_model(model: torch.nn.Module, linears: list[torch.nn.Linear], rows_list=MODEL_ROW_PROBES,
                repeats: int = 3, forward=None) -> list[list[float]]:
    """[[rows, F.linear ms, switched ms], ...]: whole forward passes over `rows` tokens (one sequence, no KV
    cache: every linear layer sees `rows` rows), all layers F.linear against all switched, interleaved and best
    of `repeats` each. One row first (a kernel of its own, never ends the probe), then `rows_list` until
    F.linear first wins a multi-row count by the margin (larger row counts only favour F.linear more). Constant inputs: no RNG draw. The
    layers are left as F.linear. `forward(ids)` defaults to model(input_ids=ids, use_cache=False)."""
    forward = forward or (lambda ids: model(input_ids=ids, use_cache=False))
    probes = []
    for rows in (ONE_ROW, *rows_list):
        ids = _probe_ids(model, rows)
        best = {"off": float("inf"), "on": float("inf")}
        for variant in ("off", "on", "off", "on"):  # warm-up round, not timed
            _switch(linears, rows if variant == "on" else 1, variant == "on")
            forward(ids)
        for _ in range(repeats):
            for variant in ("off", "on"):
                _switch(linears, rows if variant == "on" else 1, variant == "on")
                start = time.perf_counter()
                forward(ids)
                best[variant] = min(best[variant], (time.perf_counter() - start) * 1e3)
        _switch(linears, 1, False)
        probes.append([rows, round(best["off"], 3), round(best["on"], 3)])
        if rows != ONE_ROW and _f_linear_wins(best["off"], best["on"]):
            break
    return probes


def measured_model_limits(model: torch.nn.Module, linears: list[torch.nn.Linear], forward=None) -> dict:
    """{"row_limit", "one_row", "probes", "cached", "kept", "load_average"}: the whole-pass probe of this model
    on this machine, measured once and kept -- unless measured while the machine was busy (then used for this
    run only, and measured again next time)."""
    path = _cache_path()
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}  # a damaged cache is re-measured, never trusted
    key = _cache_key(model, linears)
    entry = cache.get(key)
    cached = (isinstance(entry, dict) and isinstance(entry.get("probes"), list) and bool(entry["probes"])
              and all(isinstance(p, list) and len(p) == 3 for p in entry["probes"]))
    kept = cached
    if not cached:
        busy, load = machine_busy()
        entry = {"probes": probe_model(model, linears, forward=forward), "load_average": load}
        if not busy:
            cache = {k: v for k, v in cache.items() if isinstance(v, dict)}  # per-shape entries of before: dropped
            cache[key] = entry
            try:
                write_json_atomic(path, cache)
                kept = True
            except OSError:
                pass  # a read-only cache only costs a re-measurement next time
    return {"row_limit": row_limit(entry["probes"]), "one_row": one_row_switched(entry["probes"]),
            "probes": entry["probes"], "cached": cached, "kept": kept, "load_average": entry.get("load_average")}


def use_fast_few_row_linears(model: torch.nn.Module, mode: str = "auto", device: str = "cpu", forward=None) -> dict:
    """Switch the model's nn.Linear layers to transposed_linear where it is faster; returns what was done
    (target.json records it). mode: auto (measured on whole forward passes, one row on its own; the same
    decision for every layer), on (every layer from one row up to ON_ROW_LIMIT rows), off (F.linear
    everywhere; undoes an earlier switch). `forward(ids)`: how auto runs the model (default
    model(input_ids=ids, use_cache=False))."""
    if mode not in MODES:
        raise ValueError(f"cpu_linear mode {mode!r}: one of {MODES}")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if torch.device(device).type != "cpu":
        return {"mode": mode, "applied": False, "reason": f"device {device}: CPU only"}
    record = {"mode": mode, "threads": torch.get_num_threads()}
    if not linears:
        decided = {"row_limit": 1, "one_row": False}
    elif mode == "auto":
        decided = measured_model_limits(model, linears, forward=forward)
    else:
        decided = {"row_limit": ON_ROW_LIMIT if mode == "on" else 1, "one_row": mode == "on"}
    _switch(linears, decided["row_limit"], decided["one_row"])
    applied = decided["row_limit"] > 1 or decided["one_row"]
    return {**record, "applied": applied, **decided,
            "switched_shapes": sorted({_shape(m) for m in linears}) if applied else []}


GEMV_TOLERANCE = 1.2  # a row count whose switched product costs at most this x one row's reads at the one-row rate
GEMV_MAX_ROWS = 16


@torch.inference_mode()
def matrix_vector_rows(weight: torch.Tensor, max_rows: int = GEMV_MAX_ROWS) -> tuple[int, list[list[float]]]:
    """(rows, [[rows, ms], ...]): the most rows a switched product over `weight` [out, in] (as transposed_linear
    computes it, whole tiles past ROW_TILE) reads at the one-row rate -- the largest count within GEMV_TOLERANCE
    of the fastest of one and two rows (odd counts run a little slower than the even ones around them: on the
    AVX512 box 3 rows took 1.1-1.3x what 4 did, so a count below it may miss the tolerance). The simulator's CPU
    sheet calls it gemv_rows: a step of so few tokens costs a one-token step's weight read (sim/cost.py).
    Constant inputs: no RNG draw."""
    layer = types.SimpleNamespace(weight=weight, bias=None, _lab_row_limit=max_rows, _lab_one_row=True)
    timed = []
    for rows in range(1, max_rows + 1):
        x = torch.full((rows, weight.shape[1]), 0.01, dtype=weight.dtype, device=weight.device)  # [M, in]
        timed.append([rows, round(_best_ms(lambda x=x: transposed_linear(layer, x), repeats=5), 4)])
    floor = min(ms for _, ms in timed[:2])
    return max(rows for rows, ms in timed if ms <= GEMV_TOLERANCE * floor), timed


MAX_WEIGHT_ELEMENTS = 2**31  # one probed weight; the largest default (Gemma3's 262144 x 640 LM head) is 1.7e8


def weight_shapes(text: str) -> list[tuple[int, int]]:
    """An argparse `type`: comma-separated OUTxIN weight shapes ("262144x640,2048x640"), each side >= 1."""
    shapes = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        sides = item.lower().split("x")
        if len(sides) != 2 or not all(side.isdigit() and int(side) >= 1 for side in sides):
            raise argparse.ArgumentTypeError(f"{item!r} is not OUTxIN (two whole numbers >= 1, e.g. 2048x640)")
        if int(sides[0]) * int(sides[1]) > MAX_WEIGHT_ELEMENTS:  # torch's storage-size overflow, or an OOM
            raise argparse.ArgumentTypeError(f"{item!r}: more than {MAX_WEIGHT_ELEMENTS} weights (8 GiB in float32)")
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
    parser.add_argument("--gemv-rows", action="store_true",
                        help="instead: the most rows each shape's switched product reads at the one-row rate (the "
                             "simulator's gemv_rows; sim.bench_profile --gemv-rows)")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    rows = args.rows
    print(f"cpu {cpu_model_name()} | capability {torch.backends.cpu.get_cpu_capability()} | "
          f"torch {torch.__version__} | {torch.get_num_threads()} threads | {args.dtype}")
    for out_features, in_features in args.model_shapes:
        shape = f"{out_features}x{in_features}"
        weight = torch.full((out_features, in_features), 0.01, dtype=dtype)
        if args.gemv_rows:
            limit, timed = matrix_vector_rows(weight)
            print(f"{shape:>12}: gemv_rows {limit} -- switched product ms by rows: "
                  + ", ".join(f"{r}: {ms:.2f}" for r, ms in timed))
            continue
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
