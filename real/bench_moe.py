"""Fused-MoE layer timings on this GPU, in the format of the published ones (sim/validation/moe_kernels.yaml).

    python -m real.bench_moe --config sim/validation/configs/qwen3-30b-a3b.json --device cuda --out moe.yaml
    python -m real.bench_moe --config <config.json> --tp 8 --ep 1 --dtypes fp8 --m 1,8,64 --out moe.yaml
    python -m sim.moe_kernels --file moe.yaml --out moe_check/      # each point against the cost model's price

One MoE layer of the model's shape (its experts over --ep ranks, each expert's intermediate split over --tp), run
by real/fused_moe.py's Triton kernel (vLLM's algorithm: token sort, grouped w13 GEMM, SiLU x up, grouped w2 GEMM,
weighted sum) on random bf16 weights (fp8: their per-expert e4m3 copies, w8a8 per-tensor), M tokens routed
uniformly at random (as vLLM's benchmark_moe draws them). Unlike the published tables, which replay one layer's
weights 10 times inside a CUDA graph (small batches then read their experts from L2), --layers distinct layers
(own weights, own routing) run back to back in one CUDA graph, as a model's MoE layers do, and the time per layer
is their mean: no layer finds its weights in L2. Per M and dtype two tile choices are timed: vLLM's built-in
default (fused_moe.get_default_config) and the best of a small search (real/fused_moe.SEARCH_CONFIGS; vLLM
tunes per shape with a larger one). `kernel_us` leaves the token sort out: here it is ~15 torch ops (58-143 us
per layer on an H100, timed alone in a graph of its own and written as `align_us`), where vLLM runs one CUDA
kernel of a few microseconds (moe_align_block_size) that its published times include. Before timing, each tile
choice's output is checked against real/fused_moe.reference_moe (fp32) at one M; a mismatch stops the run (exit 2).

Expert parallel (--ep N > 1): the rank's layer sees the tokens of all N data-parallel ranks (M counts them all),
holds E / N experts, and computes only the slots routed to them (vLLM's all-gather / reduce-scatter layout).
CUDA + Triton only: on a machine without them it exits 2 with one line (the CPU tests cover the sort and the
reference; the kernel itself is checked against the reference here, on the GPU).
"""
from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lab.arguments import int_list
from lab.errors import LabError
from lab.io import add_runs_to_file
from real.bench_kernels import bench_parser, device_facts, read_config, spin_up
from real.fused_moe import (
    SEARCH_CONFIGS,
    KernelConfig,
    align_tokens,
    default_config,
    fused_moe,
    local_ids,
    quantize_experts,
    reference_moe,
    route_uniform,
    tile_label,
    triton,
)
from real.rng import device_generator
from sim.hardware import preset_for_device
from sim.models import text_config

M_DEFAULT = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096"
CHECK_TOKENS = 64  # the M at which each tile choice is checked against the fp32 reference
KERNEL_DTYPE = {"bf16": "bf16", "fp8": "fp8_w8a8"}  # this module's dtype -> moe_kernels.yaml's


def moe_shape(config: dict, tp: int, ep: int) -> dict[str, int]:
    """experts (all), experts_local (this rank's), shard_intermediate, hidden, top_k of a MoE config.json
    (Qwen3-MoE / DeepSeek-V3 / Mixtral keys); LabError naming the key otherwise."""
    cfg = text_config(config)
    experts = cfg.get("num_experts") or cfg.get("n_routed_experts") or cfg.get("num_local_experts")
    top_k = cfg.get("num_experts_per_tok")
    inter = cfg.get("moe_intermediate_size") or cfg.get("intermediate_size")
    hidden = cfg.get("hidden_size")
    for key, value in (("num_experts", experts), ("num_experts_per_tok", top_k),
                       ("moe_intermediate_size", inter), ("hidden_size", hidden)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LabError(f"config.json: {key} must be a positive integer (a MoE model), not {value!r}")
    if experts % ep:
        raise LabError(f"--ep {ep}: {experts} experts do not split evenly over {ep} ranks")
    if inter % tp:
        raise LabError(f"--tp {tp}: moe_intermediate_size {inter} does not split evenly over {tp} GPUs")
    return {"experts": experts, "experts_local": experts // ep, "shard_intermediate": inter // tp,
            "hidden": hidden, "top_k": top_k}


class Layers:
    """`count` MoE layers of one rank with their own random weights [E_local, 2I, H] / [E_local, H, I]."""

    def __init__(self, shape: dict, count: int, device: torch.device, generator: torch.Generator, fp8: bool):
        e, inter, hidden = shape["experts_local"], shape["shard_intermediate"], shape["hidden"]
        scale = hidden ** -0.5
        self.w13 = [torch.randn(e, 2 * inter, hidden, generator=generator, device=device, dtype=torch.bfloat16)
                    .mul_(scale) for _ in range(count)]
        self.w2 = [torch.randn(e, hidden, inter, generator=generator, device=device, dtype=torch.bfloat16)
                   .mul_(inter ** -0.5) for _ in range(count)]
        self.fp8 = [quantize_experts(a, b) for a, b in zip(self.w13, self.w2)] if fp8 else None


def check_config(layers: Layers, shape: dict, config: KernelConfig, fp8: bool, generator: torch.Generator,
                 device: torch.device, rank: int) -> float:
    """Relative RMS error |kernel - reference| / |reference| of layer 0 at CHECK_TOKENS tokens (fp8 against the
    bf16 weights' reference: its quantization error included, ~5% per GEMM for e4m3's 3 mantissa bits)."""
    ids, weights = route_uniform(CHECK_TOKENS, shape["experts"], shape["top_k"], generator, device)
    x = torch.randn(CHECK_TOKENS, shape["hidden"], generator=generator, device=device, dtype=torch.bfloat16)
    out = fused_moe(x, layers.w13[0], layers.w2[0], ids, weights, config, rank,
                    layers.fp8[0] if fp8 else None).float()
    ref = reference_moe(x, layers.w13[0], layers.w2[0], ids, weights, rank)
    return float((out - ref).norm() / ref.norm().clamp(min=1e-12))


def time_layers(layers: Layers, shape: dict, tokens: int, config: KernelConfig, fp8: bool, rank: int,
                generator: torch.Generator, device: torch.device, repeats: int) -> tuple[float, float]:
    """(us per layer without the token sort, us of the sort per layer): the layers back to back in one CUDA
    graph, each on its own routing of `tokens` tokens, replayed `repeats` times (median replay / layers), less
    the sort alone timed the same way."""
    count = len(layers.w13)
    routes = [route_uniform(tokens, shape["experts"], shape["top_k"], generator, device) for _ in range(count)]
    x = torch.randn(tokens, shape["hidden"], generator=generator, device=device, dtype=torch.bfloat16)

    def step():
        for i, (ids, weights) in enumerate(routes):
            fused_moe(x, layers.w13[i], layers.w2[i], ids, weights, config, rank,
                      layers.fp8[i] if fp8 else None)

    def sort_only():
        for ids, _ in routes:
            align_tokens(local_ids(ids, shape["experts_local"], rank), shape["experts_local"], config.block_m)

    sort_us = replay_us(sort_only, device, repeats) / count
    return replay_us(step, device, repeats) / count - sort_us, sort_us


def replay_us(fn, device: torch.device, repeats: int) -> float:
    """Median microseconds of one replay of a CUDA graph holding `fn` (captured after two warm-up calls)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        fn()
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    del graph
    times.sort()
    return times[len(times) // 2]


def measure(args) -> list[dict]:
    """The runs (moe_kernels.yaml format) of one shape: per dtype, the default tiles and the searched best."""
    config = read_config(args.config)
    try:
        shape = moe_shape(config, args.tp, args.ep)
    except LabError as exc:
        raise LabError(f"--config {args.config}: {str(exc).removeprefix('config.json: ')}") from None
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise LabError(f"--device {args.device}: the fused-MoE kernel needs a CUDA device")
    if triton is None:
        raise LabError("Triton is not installed (it ships with CUDA builds of torch)")
    facts = device_facts(device)
    sheet = args.sheet or preset_for_device(facts["device_name"])
    model = args.name or Path(args.config).stem
    rank = 0
    generator = device_generator(device, args.seed)  # device-side draws: no host copies
    spin_up(device)
    runs = []
    for dtype in args.dtypes:
        fp8 = dtype == "fp8"
        layers = Layers(shape, args.layers, device, generator, fp8)
        choices = {"default": None, **{tile_label(c): c for c in SEARCH_CONFIGS}}
        for label, config_choice in choices.items():
            chosen = config_choice or default_config(CHECK_TOKENS, shape["experts_local"])
            err = check_config(layers, shape, chosen, fp8, generator, device, rank)
            print(f"check {dtype} {label}: relative RMS error {err:.4f}", file=sys.stderr)
            if err > (0.15 if fp8 else 0.02):
                raise LabError(f"{label} ({dtype}): kernel differs from the fp32 reference by {err:.3g} (relative "
                               "RMS)")
        by_choice: dict[str, dict[int, tuple[float, float]]] = {}
        with tqdm(total=len(args.m) * len(choices), desc=f"moe {model} {dtype}", unit="point",
                  file=sys.stderr) as bar:
            for label, config_choice in choices.items():
                for m in args.m:
                    chosen = config_choice or default_config(m, shape["experts_local"])
                    by_choice.setdefault(label, {})[m] = time_layers(layers, shape, m, chosen, fp8, rank,
                                                                     generator, device, args.repeats)
                    bar.update(1)
        best = {m: min((by_choice[label][m][0], label) for label in choices if label != "default") for m in args.m}
        stamp = dt.datetime.now(dt.timezone.utc)
        base = {"tool": "lab", "harness": "bench_moe", "device": sheet, "device_name": facts["device_name"],
                "model": model, "tp": args.tp, "ep": args.ep, "experts": shape["experts_local"],
                "shard_intermediate": shape["shard_intermediate"], "hidden": shape["hidden"],
                "top_k": shape["top_k"], "dtype": KERNEL_DTYPE[dtype]}
        note = (f"python -m real.bench_moe, {stamp:%Y-%m-%d %H:%M} UTC, {args.layers} distinct layers in one CUDA "
                f"graph, median of {args.repeats} replays; {facts['device_name']}, torch {facts['torch']}, "
                f"CUDA {facts.get('cuda')}, Triton {triton.__version__}")
        runs.append({"id": f"lab-{sheet}-{model}-tp{args.tp}-ep{args.ep}-{dtype}-default", **base,
                     "config": "default", "note": note,
                     "kernel_us": {m: round(by_choice["default"][m][0], 2) for m in args.m},
                     "align_us": {m: round(by_choice["default"][m][1], 2) for m in args.m}})
        runs.append({"id": f"lab-{sheet}-{model}-tp{args.tp}-ep{args.ep}-{dtype}-searched", **base,
                     "config": "searched",
                     "note": note + "; best of " + ", ".join(tile_label(c) for c in SEARCH_CONFIGS),
                     "kernel_us": {m: round(best[m][0], 2) for m in args.m},
                     "tiles": {m: best[m][1] for m in args.m},
                     "align_us": {m: round(by_choice[best[m][1]][m][1], 2) for m in args.m}})
        del layers
        torch.cuda.empty_cache()
    return runs


def parse_args(argv=None):
    ap = bench_parser("python -m real.bench_moe", __doc__, "a MoE model's config.json", "cuda", M_DEFAULT,
                      "tokens entering the layer", "expert intermediate split")
    ap.add_argument("--ep", type=lambda s: int_list(s)[0], default=1, help="expert-parallel ranks")
    ap.add_argument("--layers", type=lambda s: int_list(s)[0], default=8, help="distinct layers per graph")
    ap.add_argument("--repeats", type=lambda s: int_list(s)[0], default=20)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        runs = add_runs_to_file(args.out, lambda: measure(args), "kernel-run file")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(runs)} runs in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
