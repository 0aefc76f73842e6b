"""Kernel table on this device: a model's dense GEMMs (bf16, fp8) and its attention, timed one kernel at a time.

    python -m real.bench_kernels --config real/presets/qwen3-8b.json --device cuda --out kernels.yaml
    python -m real.bench_kernels --config real/presets/qwen3-0.6b.json --m 1,16 --dtypes bf16 --attention none
    python -m sim.kernel_roofline --file kernels.yaml          # each point against the cost model's price

What the simulator's roofline prices per step (sim/cost.py), measured kernel by kernel on the device itself, so
that a GPU sheet's bw_efficiency / mfu / kv_bw_efficiency can be read off the card instead of fitted on serving runs.

GEMMs, from the model's config.json (one decoder layer, tp 1; --tp N splits them as vLLM's column- and row-parallel
layers do): fused QKV (N = (q_heads + 2 kv_heads) x head_dim, K = hidden), output (N = hidden, K = q_heads x
head_dim), fused gate/up (N = 2 x intermediate, K = hidden), down (N = hidden, K = intermediate), and the LM head
(N = vocab / tp, K = hidden; M = the requests whose logits a step computes); C[M, N] = A[M, K] W[N, K]^T for M tokens. Kernels: `torch-bf16` = torch.nn.functional.linear (cuBLAS on CUDA, what vLLM's unquantized
dense layers call); `fp8-tensor-w-tensor-a-noquant` / `fp8-channel-w-token-a-noquant` = torch._scaled_mm of e4m3
operands with per-tensor scales / per-token x per-channel scales, the activation already quantized (the GEMM alone,
vLLM's -noquant columns).

Attention (torch's scaled_dot_product_attention; the first of flash, cuDNN, efficient, math that runs the shape is
used and its name written): decode = `batch` requests x 1 query token over `context` cached tokens each (GQA, the
model's heads); prefill = one request's causal attention over `context` tokens.

Timing as triton.testing.do_bench: warm-up calls, then per repeat the L2 flushed (a 256 MiB write on CUDA) and one
call timed between CUDA events; the median. The card is first kept busy for ~1 s (clocks up), and the whole grid is
timed --passes times (default 2): a point's value is the lower of its medians, `spread` the higher over the lower
(a transient -- a clock ramp, a lazy kernel load -- shows there instead of in the value). On a CPU: perf_counter around each call, no flush (a CPU table is for
tests and for comparison, not for a GPU sheet). --sustained S then runs the widest layer GEMM (gate/up) at the largest
M back to back for S seconds and writes its TFLOP/s per half second with the SM clock, board power and temperature
(NVML through torch): a serving card is kept busy, a kernel table is not.
Output: a YAML file in sim/validation/gemm_kernels.yaml's run format
(unit us) plus an `attention` list, with the device, versions and date; progress on stderr.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from lab.arguments import ArgumentParser, int_list, positive_int
from lab.errors import LabError
from lab.io import add_runs_to_file
from lab.runs import package_versions
from real.rng import device_generator
from sim.hardware import HARDWARE_NAMES, preset_for_device
from sim.models import text_config

M_DEFAULT = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096,8192"
FP8_KERNELS = ("fp8-tensor-w-tensor-a-noquant", "fp8-channel-w-token-a-noquant")
BACKENDS = ("flash", "cudnn", "efficient", "math")
FLUSH_BYTES = 256 * 2**20


def model_dims(config: dict) -> dict[str, int]:
    """The decoder sizes this module reads from a config.json's dict, each a positive integer (LabError naming the
    key otherwise): hidden, heads, kv_heads, head_dim, intermediate, vocab, layers."""
    cfg = text_config(config)

    def positive(key: str, default: int | None = None) -> int:
        value = cfg.get(key) or default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LabError(f"config.json: {key} must be a positive integer, not {cfg.get(key)!r}")
        return value

    hidden, heads = positive("hidden_size"), positive("num_attention_heads")
    return {"hidden": hidden, "heads": heads, "kv_heads": positive("num_key_value_heads", heads),
            "head_dim": positive("head_dim", hidden // heads), "intermediate": positive("intermediate_size"),
            "vocab": positive("vocab_size"), "layers": positive("num_hidden_layers")}


def layer_shapes(config: dict, tp: int = 1) -> dict[str, tuple[int, int]]:
    """(N, K) of one decoder layer's four dense GEMMs and of the LM head at `tp` GPUs, from a config.json's dict."""
    d = model_dims(config)
    h, n_heads, head_dim, inter = d["hidden"], d["heads"], d["head_dim"], d["intermediate"]
    if n_heads % tp or inter % tp:
        raise LabError(f"--tp {tp}: does not divide the {n_heads} heads and {inter} intermediate size")
    kv_tp = max(1, d["kv_heads"] // tp)  # vLLM: each GPU holds max(1, kv_heads // tp) KV heads
    return {"qkv": ((n_heads // tp + 2 * kv_tp) * head_dim, h), "o": (h, n_heads // tp * head_dim),
            "gate_up": (2 * inter // tp, h), "down": (h, inter // tp), "lm_head": (-(-d["vocab"] // tp), h)}


def attention_heads(config: dict, tp: int = 1) -> tuple[int, int, int]:
    """(query heads, KV heads, head dim) one GPU runs at `tp`."""
    d = model_dims(config)
    return d["heads"] // tp, max(1, d["kv_heads"] // tp), d["head_dim"]


class KernelTimer:
    """Median microseconds of a call on a device (see the module docstring for the method)."""

    def __init__(self, device: torch.device, warmup: int, repeats: int):
        self.device, self.warmup, self.repeats = device, warmup, repeats
        self.cuda = device.type == "cuda"
        # on CUDA: a buffer larger than L2, rewritten before each timed call so that no operand starts in L2
        self.flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device=device) if self.cuda else None

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeats):
            if self.cuda:
                self.flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e6)
        return float(statistics.median(times))


def spin_up(device: torch.device, seconds: float = 1.0) -> None:
    """Keep a CUDA device busy for ~`seconds` so that its clocks are up before the first timed point."""
    if device.type != "cuda":
        return
    x = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)  # [4096, 4096]
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            x = torch.mm(x, x).clamp_(-1, 1)
        torch.cuda.synchronize(device)


def best_of_passes(passes: list[list[dict]]) -> list[dict]:
    """One entry per point (matched on every field but `value`): the lowest value over the passes and the
    spread max / min of the passes that timed it."""
    merged: dict[tuple, dict] = {}
    for points in passes:
        for point in points:
            key = tuple((k, v) for k, v in point.items() if k != "value")
            merged.setdefault(key, {**point, "values": []})["values"].append(point["value"])
    out = []
    for point in merged.values():
        values = point.pop("values")
        out.append({**point, "value": min(values), "spread": round(max(values) / min(values), 3)})
    return out


def fp8_supported(device: torch.device) -> str | None:
    """None where torch._scaled_mm runs e4m3 on this device, else why not (one line)."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        return f"fp8 GEMMs need compute capability 8.9+ (this card: {torch.cuda.get_device_capability(device)})"
    try:
        a = torch.ones(16, 32, device=device).to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)
        torch._scaled_mm(a, a.t(), one, one, out_dtype=torch.bfloat16)
    except (RuntimeError, AttributeError) as exc:
        return f"torch._scaled_mm: {str(exc).splitlines()[0]}"
    return None


def gemm_points(shapes: dict, ms: list[int], dtypes: list[str], timer: KernelTimer, seed: int,
                bar: tqdm, skipped: list[str]) -> list[dict]:
    """One point per (GEMM, M, kernel): us of C[M, N] = A[M, K] W[N, K]^T. A kernel that refuses a shape is
    noted in `skipped` (once per kernel and GEMM) and the table goes on."""
    device = timer.device
    gen = device_generator(device, seed)
    points = []
    for name, (n, k) in shapes.items():
        weight = torch.randn(n, k, generator=gen, device=device, dtype=torch.bfloat16)  # [N, K]
        w8 = weight.to(torch.float8_e4m3fn) if "fp8" in dtypes else None
        w_scale = torch.rand(1, n, generator=gen, device=device) + 0.5 if w8 is not None else None  # [1, N]
        for m in ms:
            act = torch.randn(m, k, generator=gen, device=device, dtype=torch.bfloat16)  # [M, K]
            if "bf16" in dtypes:
                us = timer(partial(torch.nn.functional.linear, act, weight))
                points.append({"gemm": name, "m": m, "n": n, "k": k, "dtype": "bf16", "kernel": "torch-bf16",
                               "value": round(us, 3)})
                bar.update(1)
            if w8 is not None:
                a8 = act.to(torch.float8_e4m3fn)  # [M, K]
                one = torch.ones((), device=device)
                a_scale = torch.rand(m, 1, generator=gen, device=device) + 0.5  # [M, 1]
                variants = {FP8_KERNELS[0]: (one, one), FP8_KERNELS[1]: (a_scale, w_scale)}
                for kernel, (sa, sb) in variants.items():
                    bar.update(1)
                    try:
                        us = timer(partial(torch._scaled_mm, a8, w8.t(), sa, sb, out_dtype=torch.bfloat16))
                    except RuntimeError as exc:
                        note = f"{kernel} {name}: {str(exc).splitlines()[0]}"
                        if not any(s.startswith(f"{kernel} {name}:") for s in skipped):
                            skipped.append(note)
                        continue
                    points.append({"gemm": name, "m": m, "n": n, "k": k, "dtype": "fp8_w8a8", "kernel": kernel,
                                   "value": round(us, 3)})
    return points


def _backend_enum(name: str):
    from torch.nn.attention import SDPBackend
    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


def sdpa_timed(timer: KernelTimer, q, k, v, causal: bool) -> tuple[float, str]:
    """(us, backend) of one scaled_dot_product_attention call, on the first backend that runs the shape."""
    from torch.nn.attention import sdpa_kernel

    gqa = q.shape[1] != k.shape[1]
    for name in BACKENDS:
        try:
            with sdpa_kernel([_backend_enum(name)]):
                fn = (lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                                               enable_gqa=gqa))
                fn()  # raises here when the backend cannot run the shape
                return timer(fn), name
        except RuntimeError:
            continue
    raise LabError("scaled_dot_product_attention: no backend runs this shape")


def attention_points(heads: tuple[int, int, int], batches: list[int], contexts: list[int], prefill: list[int],
                     timer: KernelTimer, seed: int, bar: tqdm) -> list[dict]:
    """Decode (batch x 1 query over context) and causal prefill (1 x context) attention points, in us."""
    q_heads, kv_heads, head_dim = heads
    device, gen = timer.device, device_generator(timer.device, seed)
    points = []
    for context in contexts:
        for batch in batches:
            k = torch.randn(batch, kv_heads, context, head_dim, generator=gen, device=device, dtype=torch.bfloat16)
            v = torch.randn_like(k)  # [batch, kv_heads, context, head_dim]
            q = torch.randn(batch, q_heads, 1, head_dim, generator=gen, device=device, dtype=torch.bfloat16)
            us, backend = sdpa_timed(timer, q, k, v, causal=False)
            points.append({"phase": "decode", "batch": batch, "query_tokens": 1, "context": context,
                           "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": head_dim, "backend": backend,
                           "value": round(us, 3)})
            bar.update(1)
            del k, v, q
    for context in prefill:
        q = torch.randn(1, q_heads, context, head_dim, generator=gen, device=device, dtype=torch.bfloat16)
        k = torch.randn(1, kv_heads, context, head_dim, generator=gen, device=device, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        us, backend = sdpa_timed(timer, q, k, v, causal=True)
        points.append({"phase": "prefill", "batch": 1, "query_tokens": context, "context": context,
                       "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": head_dim, "backend": backend,
                       "value": round(us, 3)})
        bar.update(1)
    return points


def _reading(read, device):
    """A CUDA telemetry reading (torch.cuda.clock_rate / power_draw / temperature, through NVML), or None."""
    try:
        return float(read(device))
    except Exception:  # noqa: BLE001 - no NVML, no permission, a CPU: the reading is simply absent
        return None


def sustained_points(shape: tuple[int, int], m: int, seconds: float, device: torch.device, seed: int,
                     bucket_s: float = 0.5) -> list[dict]:
    """One layer GEMM (bf16, M x N x K) launched back to back for `seconds`, as serving keeps a card busy:
    per bucket of ~`bucket_s` its TFLOP/s and, on CUDA, the SM clock (MHz), board power (W) and temperature (C)
    read at the bucket's end. Kernel-by-kernel timings (the L2 flushed, idle between calls) run a card cool; this
    says what the same GEMM sustains."""
    n, k = shape
    gen = device_generator(device, seed)
    weight = torch.randn(n, k, generator=gen, device=device, dtype=torch.bfloat16)  # [N, K]
    act = torch.randn(m, k, generator=gen, device=device, dtype=torch.bfloat16)  # [M, K]
    flops = 2.0 * m * n * k
    torch.nn.functional.linear(act, weight)
    per_call = max(1e-6, _timed_seconds(lambda: torch.nn.functional.linear(act, weight), device, 3) / 3)
    calls = max(1, int(bucket_s / per_call))
    points, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds:
        elapsed = _timed_seconds(lambda: torch.nn.functional.linear(act, weight), device, calls)
        points.append({"t_s": round(time.perf_counter() - started, 2), "calls": calls,
                       "tflops": round(flops * calls / elapsed / 1e12, 3),
                       "sm_mhz": _reading(torch.cuda.clock_rate, device) if device.type == "cuda" else None,
                       "power_w": _watts(_reading(torch.cuda.power_draw, device)) if device.type == "cuda" else None,
                       "temp_c": _reading(torch.cuda.temperature, device) if device.type == "cuda" else None})
    return points


def _watts(milliwatts: float | None) -> float | None:
    return None if milliwatts is None else round(milliwatts / 1e3, 1)  # NVML (torch.cuda.power_draw) reports mW


def _timed_seconds(fn, device: torch.device, calls: int) -> float:
    """Seconds of `calls` back-to-back calls (CUDA events on a GPU, perf_counter on a CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - t0


def device_facts(device: torch.device) -> dict:
    """What the table was measured on: card (or CPU capability), versions."""
    facts = {"device_type": device.type, "torch": str(torch.__version__)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(device_name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                     multiprocessors=props.multi_processor_count, cuda=str(torch.version.cuda),
                     capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    else:
        facts.update(device_name=f"cpu {torch.backends.cpu.get_cpu_capability()}",
                     threads=torch.get_num_threads())
    return facts


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LabError(f"--device {args.device}: CUDA is not available on this machine")
    config = read_config(args.config)
    try:
        shapes = layer_shapes(config, args.tp)
    except LabError as exc:
        raise LabError(f"--config {args.config}: {str(exc).removeprefix('config.json: ')}") from None
    dtypes = list(args.dtypes)
    facts = device_facts(device)
    skipped = []
    if "fp8" in dtypes:
        why = fp8_supported(device)
        if why:
            skipped.append(f"fp8: {why}")
            dtypes.remove("fp8")
    timer = KernelTimer(device, args.warmup, args.repeats)
    kernels_per_m = ("bf16" in dtypes) + 2 * ("fp8" in dtypes)
    do_attention = args.attention != "none"
    total = len(shapes) * len(args.m) * kernels_per_m
    total += (len(args.batches) * len(args.contexts) + len(args.prefill)) * do_attention
    model = args.name or Path(args.config).stem
    started = time.perf_counter()
    spin_up(device)
    gemm_passes, attention_passes = [], []
    with tqdm(total=total * args.passes, desc=f"kernels {model}", unit="point", file=sys.stderr) as bar:
        for _ in range(args.passes):
            gemm_passes.append(gemm_points(shapes, args.m, dtypes, timer, args.seed, bar, skipped))
            attention_passes.append(attention_points(attention_heads(config, args.tp), args.batches, args.contexts,
                                                     args.prefill, timer, args.seed + 1, bar) if do_attention else [])
    gemms, attention = best_of_passes(gemm_passes), best_of_passes(attention_passes)
    widest = (max((nk for name, nk in shapes.items() if name != "lm_head"), key=lambda nk: nk[0] * nk[1])
              if args.sustained else None)
    sustained = (sustained_points(widest, max(args.m), args.sustained, device, args.seed + 2) if widest else [])
    stamp = dt.datetime.now(dt.timezone.utc)
    sheet = args.sheet or preset_for_device(facts["device_name"])
    return {"id": f"lab-{sheet}-{model}-tp{args.tp}-{stamp:%Y%m%d}", "device": sheet,
            "device_name": facts["device_name"], "tool": "python -m real.bench_kernels", "unit": "us",
            "model": model, "tp": args.tp, "layers": model_dims(config)["layers"], "measured": stamp.isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 1), "facts": facts,
            "versions": package_versions(), "timing": {"warmup": args.warmup, "repeats": args.repeats, "passes": args.passes,
                                                       "l2_flush_mib": FLUSH_BYTES >> 20 if timer.cuda else 0},
            "skipped": skipped, "points": gemms, "attention": attention,
            **({"sustained": {"m": max(args.m), "n": widest[0], "k": widest[1], "points": sustained}}
               if sustained else {})}


def read_config(path: str) -> dict:
    """The --config file's JSON object; LabError naming --config when it is unreadable or not one mapping."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"--config {path}: not a readable config.json ({exc})") from None
    if not isinstance(config, dict):
        raise LabError(f"--config {path}: a config.json holds one JSON object, not a {type(config).__name__}")
    return config


def _device(text: str) -> str:
    """An argparse `type`: a torch device name (cpu, cuda, cuda:N); whether this machine has it is run's check."""
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: cpu, cuda or cuda:N") from None
    return text


def _sheet(text: str) -> str:
    """An argparse `type`: a hardware preset (sim/presets/hardware.yaml), checked before minutes of timing."""
    if text not in HARDWARE_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hardware preset ({', '.join(HARDWARE_NAMES)})")
    return text


def _seconds(text: str) -> float:
    """An argparse `type`: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a finite number of seconds, 0 or more")
    return value


def _dtypes(text: str) -> list[str]:
    values = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in values if t not in ("bf16", "fp8")]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of bf16, fp8")
    return values


def bench_parser(prog: str, doc: str, config_help: str, device: str, m_default: str, m_help: str,
                 tp_help: str) -> ArgumentParser:
    """The arguments a device benchmark that writes a kernel-run file shares (real.bench_kernels, real.bench_moe):
    --config --name --device --tp --m --dtypes --seed --sheet --out."""
    ap = ArgumentParser(prog=prog, description=doc.splitlines()[0])
    ap.add_argument("--config", required=True, help=config_help)
    ap.add_argument("--name", help="model label in the output (default: the config file's stem)")
    ap.add_argument("--device", type=_device, default=device,
                    help="cpu, cuda or cuda:N" if device == "cpu" else "cuda or cuda:N")
    ap.add_argument("--tp", type=lambda s: int_list(s)[0], default=1, help=tp_help)
    ap.add_argument("--m", type=int_list, default=int_list(m_default), help=m_help)
    ap.add_argument("--dtypes", type=_dtypes, default=["bf16", "fp8"], help="bf16,fp8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", type=_sheet, help="the hardware preset the runs are priced on (default: from the device name)")
    ap.add_argument("--out", required=True, help="YAML file to write (atomic; an existing file gains this run)")
    return ap


def parse_args(argv=None):
    ap = bench_parser("python -m real.bench_kernels", __doc__, "a Hugging Face config.json (e.g. "
                      "real/presets/qwen3-8b.json)", "cpu", M_DEFAULT, "token counts M of the GEMMs",
                      "tensor-parallel split of the shapes")
    ap.add_argument("--attention", choices=("sdpa", "none"), default="sdpa")
    ap.add_argument("--batches", type=int_list, default=int_list("1,8,32,128"), help="decode batches")
    ap.add_argument("--contexts", type=int_list, default=int_list("512,2048,8192"), help="decode KV lengths")
    ap.add_argument("--prefill", type=lambda s: int_list(s) if s != "none" else [],
                    default=int_list("512,1024,2048,4096,8192"), help="prefill lengths, or none")
    ap.add_argument("--warmup", type=lambda s: int_list(s, low=0)[0], default=5)
    ap.add_argument("--repeats", type=positive_int, default=25)
    ap.add_argument("--passes", type=lambda s: int_list(s)[0], default=2, help="times the grid is timed")
    ap.add_argument("--sustained", type=_seconds, default=0.0,
                    help="seconds of the widest GEMM at the largest M back to back (clock, power: see the docstring)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        table, = add_runs_to_file(args.out, lambda: [run(args)], "kernel table")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(table['points'])} GEMM and {len(table['attention'])} attention points on "
          f"{table['device_name']} in {table['seconds']} s" + "".join(f"; skipped {s}" for s in table["skipped"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
