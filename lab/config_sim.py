"""Experiment-schema section for the serving simulator (`sim:` in experiments/*.yaml; issue 4).

    sim:
      hardware: {preset: h100}          # or spec: {...} / spec: card.yaml (sim/presets/hardware.yaml)
      model: {name: qwen3-8b}
      replicas: 8
      workload: {kind: closed_loop, lengths: {source: csv, csv_path: $DATA/azure2023_splitwise_conv.csv}}
      acceptance: {source: parametric, parametric: {kind: iid, alpha: 0.8, concentration: 4}}
      policies: [{kind: mtp}, {kind: fixed_k, k: 3}, {kind: prefix}]
      sweep: {axis: concurrency, values: [1, 8, 32, 128]}
      sla: {tok_s_per_user: [40, 80]}

Every block has defaults, unknown keys are errors, and cross-field rules (a trace workload needs a
path, fixed_k needs k, ...) are checked here so that a bad config fails at `lab validate`, not mid-run.
"""
from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator, model_validator

from lab.config_base import MAX_MODEL_LEN, Seed, StrictModel, validation_message
from lab.errors import LabError
from lab.paths import UserPath, config_json_path, expand_path
from lab.slug import Slug
from lab.yaml_load import load_yaml_bytes

POLICY_KINDS = ("ar", "mtp", "fixed_k", "threshold", "smartspec", "prefix", "prefix_async")

# ---- hardware, model and step cost (issue 9) -------------------------------------------------------------
# The presets are data files under sim/presets/ (the one source of hardware and model names); lab reads them
# as data, never importing sim.
PRESETS_DIR = Path(__file__).resolve().parent.parent / "sim" / "presets"
DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8", "fp4")


def _read_presets(file_name: str) -> dict[str, dict]:
    path = PRESETS_DIR / file_name
    data = load_yaml_bytes(path.read_bytes(), str(path))  # a repeated preset name is an error, not a silent overwrite
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise LabError(f"{path}: presets must be a mapping of name -> mapping")
    return data


@functools.cache
def hardware_presets() -> dict[str, dict]:
    """sim/presets/hardware.yaml: preset name -> spec-sheet mapping (HardwareSheet fields)."""
    return _read_presets("hardware.yaml")


@functools.cache
def model_presets() -> dict[str, dict]:
    """sim/presets/models.yaml: preset name -> model-shape mapping (sim.models.ModelShape fields)."""
    return _read_presets("models.yaml")


HARDWARE_NAMES = tuple(hardware_presets())
DRAFTER_PASSES = ("one", "per_token")  # how a drafter proposes its k tokens (sim/cost.py)
ALL2ALL_BACKENDS = ("allgather_reducescatter", "naive", "dispatch")  # vLLM's expert-parallel backends (sim/cost.py)
# how vLLM's sampler applies top-k / top-p, which sets the profile run's sampler peak (sim/kv_cache.py)
SAMPLERS = ("sort", "flashinfer", "triton")
# the CUDA-graph layout vLLM replays (sim/cuda_graphs.py): FULL_AND_PIECEWISE (0.11+ default), PIECEWISE (V1 0.8 - 0.10)
CUDA_GRAPH_MODES = ("full_and_piecewise", "piecewise")
# the Triton tiles of vLLM's fused-MoE kernel (engine.moe_tiles, sim/cost.py): a tuned config file, or its built-in ones
MOE_TILES = ("tuned", "default")
MODEL_NAMES = tuple(model_presets())
# a MoE layer's expert-popularity spread while serving (coefficient of variation of the experts' shares;
# sim/routing.py): the gamma shape whose concentration (1 - normalized entropy) is the 0.111 of a published
# Qwen3-30B-A3B trace over diverse prompts (sim/validation/moe_routing.yaml; python -m sim.moe_routing_check prints
# the fit, a test holds this to it)
ROUTING_SKEW = 1.16


class CustomAllReduceSheet(StrictModel):
    """vLLM's custom all-reduce (CUDA IPC one-shot / two-shot kernels, vllm/distributed/device_communicators/
    custom_all_reduce.py) on a card: its own latency and bandwidth, used for the tensor-parallel all-reduces below
    max_bytes; NCCL (the interconnect's own pair) prices the rest."""

    latency_us: float = Field(ge=0, description="per call, microseconds")
    bandwidth_gbs: float = Field(gt=0, description="per GPU and direction, GB/s (priced as the ring's "
                                 "2 (tp-1)/tp x bytes, as NCCL's pair)")
    max_bytes: int | dict[Annotated[int, Field(ge=2)], Annotated[int, Field(ge=1)]] = Field(
        description="all-reduces of fewer bytes run the custom kernel (should_custom_ar: inp_size < max_size): one "
        "size for every tp (8 MiB, CustomAllreduce's constructor default, where vLLM's per-architecture table does "
        "not apply), or a mapping tp -> bytes (a tp missing from it runs NCCL throughout)")

    @field_validator("max_bytes")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("max_bytes must be at least 1")
        return v


class SymmMemAllReduceSheet(StrictModel):
    """vLLM's torch symmetric-memory all-reduce (SymmMemCommunicator, vllm/distributed/device_communicators/
    symm_mem.py: torch.ops.symm_mem multimem_all_reduce_ at tp 4 / 6 / 8 on compute capability 9.0, two_shot_all_reduce_
    at tp 2; NVLink multicast needed), on by default from vLLM 0.11.0 (VLLM_ALLREDUCE_USE_SYMM_MEM, PR 24111; off
    before, sim.vllm_versions.vllm_symm_mem_allreduce). Where it is on, CustomAllreduce's max size drops to
    min(its own, custom_max_bytes[tp]) (CUSTOM_ALL_REDUCE_MAX_SIZES), this pair prices the sizes from there up to
    max_bytes[tp] (SYMM_MEM_ALL_REDUCE_MAX_SIZES), NCCL the rest (CudaCommunicator.all_reduce)."""

    latency_us: float = Field(ge=0, description="per call, microseconds")
    bandwidth_gbs: float = Field(gt=0, description="per GPU and direction, GB/s (priced as the ring's "
                                 "2 (tp-1)/tp x bytes, as NCCL's pair)")
    max_bytes: dict[Annotated[int, Field(ge=2)], Annotated[int, Field(ge=1)]] = Field(
        min_length=1, description="tp -> bytes: all-reduces of fewer bytes (and at least the custom kernel's limit) "
        "run symmetric memory (SYMM_MEM_ALL_REDUCE_MAX_SIZES; a tp missing from it: the communicator is off there)")
    custom_max_bytes: dict[Annotated[int, Field(ge=2)], Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="tp -> bytes: the custom kernel's max size while symmetric memory is on "
        "(CUSTOM_ALL_REDUCE_MAX_SIZES; the smaller of it and custom_allreduce.max_bytes applies; a tp missing: "
        "custom_allreduce.max_bytes)")


class InterconnectSheet(StrictModel):
    kind: Literal["nvlink", "pcie", "infinity_fabric", "ethernet", "none"] = Field(
        description="the link tensor-parallel all-reduces and expert all-to-alls use")
    bandwidth_gbs: float = Field(gt=0, le=1_000_000, description="per GPU and direction, GB/s (NCCL's achieved rate)")
    latency_us: float = Field(0.0, ge=0, description="per collective call, microseconds (NCCL's)")
    custom_allreduce: CustomAllReduceSheet | None = Field(
        None, description="vLLM's custom all-reduce where the GPUs have P2P: its own latency / bandwidth below "
        "max_bytes (sim.cost.allreduce_time_s; vLLM runs it at tp 2, 4, 6, 8 over NVLink / Infinity Fabric, and "
        "over PCIe at tp 2 only). null: every all-reduce at the pair above")
    symm_mem_allreduce: SymmMemAllReduceSheet | None = Field(
        None, description="vLLM's torch symmetric-memory all-reduce (NVLink multicast; on by default from vLLM "
        "0.11.0): its own latency / bandwidth between the custom kernel's limit and max_bytes[tp] on the releases "
        "that run it (sim.cost.allreduce_time_s). null: none (the custom kernel and NCCL only)")

    @model_validator(mode="after")
    def _custom_needs_p2p(self):
        if self.custom_allreduce is not None and self.kind in ("none", "ethernet"):
            raise ValueError(f"custom_allreduce needs GPU peer-to-peer on one node; kind {self.kind} has none "
                             "(vLLM disables its custom all-reduce across nodes)")
        if self.symm_mem_allreduce is not None and self.kind != "nvlink":
            raise ValueError(f"symm_mem_allreduce needs NVLink multicast; kind {self.kind} has none "
                             "(vLLM's SymmMemCommunicator turns itself off where handle.multicast_ptr is 0)")
        return self


MAX_PEAK_TFLOPS = 1_000_000  # a sheet's peak_tflops at most: ~100x the largest preset's
# the fixed host / launch terms at most (sheet and cost overrides; 1e300 and inf passed validate): the ranges
# sim.bench_profile's fit searches them within (its FIT_TERMS), a second a step or a request, 0.1 s a layer
MAX_STEP_OVERHEAD_MS = 1_000
MAX_LAYER_OVERHEAD_US = 100_000
MAX_REQUEST_OVERHEAD_US = 1_000_000


class HardwareSheet(StrictModel):
    """One accelerator from its spec sheet: the schema of every preset in sim/presets/hardware.yaml and of a
    YAML's own `sim.hardware.spec`."""

    name: str = Field(description="label in results")
    description: str | None = None
    sources: list[str] = Field(default_factory=list, description="public spec-sheet URLs the numbers come from")
    peak_tflops: dict[Literal[DTYPES], float] = Field(  # type: ignore[valid-type]
        description="dense (no sparsity) peak TFLOP/s per dtype, e.g. {bf16: 989.4, fp8: 1978.9}", min_length=1)
    # upper bounds ~100x past any device (the presets top out at 10,066 TFLOP/s, 8 TB/s, 288 GiB): 1e300 TFLOP/s
    # divided by zero mid-run, 1e300 GiB was infinite bytes ("does not fit ... in inf GiB")
    mem_bw_tbs: float = Field(gt=0, le=1000, description="peak memory bandwidth, TB/s")
    mem_gib: float = Field(gt=0, le=1_000_000, description="memory size, GiB (GPU vendors' GB)")
    usable_mem_gib: float | None = Field(
        None, gt=0, le=1_000_000, description="the device total as CUDA / ROCm report it (torch.cuda.mem_get_info, vLLM's "
        "'total_gpu_memory'), GiB: what gpu_memory_utilization multiplies. ECC and the driver's reservation make "
        "it smaller than the size sold (79.2 on an 80 GB H100, 44.3 on a 48 GB L40S); null: mem_gib")
    graphs: bool = Field(True, description="the device replays captured CUDA / HIP graphs (vLLM's default on "
                         "GPUs), whose memory vLLM 0.20+ keeps back from the KV cache (engine.cuda_graph_memory); "
                         "false on a CPU")
    l2_mib: float | None = Field(
        None, gt=0, description="on-chip L2 cache, MiB (whitepaper / spec sheet). Not used to price steps (a "
        "serving step streams many layers' weights through it); kernel-timing checks (sim.moe_kernels) treat a "
        "benchmark point whose touched weights fit in it as cache-served (the benchmarks replay one routing). "
        "null: unknown")
    interconnect: InterconnectSheet = Field(
        default_factory=lambda: InterconnectSheet(kind="none", bandwidth_gbs=1.0),
        description="GPU-to-GPU link (kind none: a single device)")
    mfu: float = Field(0.45, gt=0, le=1, description="achievable fraction of peak FLOP/s")
    bw_efficiency: float = Field(0.75, gt=0, le=1, description="achievable fraction of peak memory bandwidth "
                                 "(0.75: public vLLM decode runs, sim/presets/hardware.yaml header)")
    gemm_bw_efficiency: float | None = Field(
        None, gt=0, le=1, description="achievable fraction of peak bandwidth for the weight reads of a step with "
        "more than one query token (matrix-matrix products); null: bw_efficiency. On a CPU these reads are "
        "much slower than a one-token step's matrix-vector products (BLAS packs the weights per call)")
    kv_bw_efficiency: float | None = Field(
        None, gt=0, le=1, description="achievable fraction of peak bandwidth for attention's KV reads; null: "
        "bw_efficiency. Eager attention on a CPU (KV heads repeated for grouped queries, masks built per call) "
        "moves its KV far slower than a weight read")
    linear_state_bw_efficiency: float | None = Field(
        None, gt=0, le=1, description="achievable fraction of peak bandwidth for a hybrid linear-attention model's "
        "recurrent state (Gated DeltaNet: each request's state read and written back by the fused recurrent decode "
        "kernel); null: kv_bw_efficiency. Fitted on published kernel timings (python -m sim.gdn_kernels --fit; "
        "vLLM PR 31722: 0.54 on an H200, 0.43 on a B200)")
    compute_memory_overlap: float = Field(
        1.0, ge=0, le=1, description="share of the shorter of a step's compute and memory time hidden under the "
        "longer: 1 = the roofline's max (GPUs stream weights while they compute), 0 = their sum (a CPU that "
        "packs weights, then multiplies); the Ada sheets (rtx-4090, l40s, l40, rtx-6000-ada, l4) 1 - 0.362 x mfu, the share of a decode "
        "GEMM's FLOP time published L40S timings leave unhidden (python -m sim.gemm_growth)")
    gemm_row_tile: int = Field(
        1, ge=1, le=4096, description="matrix-matrix products run in tiles of this many rows (the BLAS micro-kernel's "
        "width): a step of more query tokens than one tile is charged the FLOPs of whole tiles (12 tokens at "
        "tile 8 cost 16). 1: off, every GPU preset. On this AVX2 CPU a 262,144 x 640 product over 9-16 rows "
        "costs what 16 rows cost (python -m real.cpu_linear --rows ...)")
    gemv_rows: int = Field(
        1, ge=1, le=4096, description="a step of up to this many query tokens reads its weights as a one-token step "
        "does (bw_efficiency; more tokens: gemm_bw_efficiency): the BLAS runs a product of so few rows as a "
        "matrix-vector one. 1: only one-token steps, every GPU preset. On the AVX512 EPYC of session 36 the lab's "
        "switched linears read the 262,144 x 640 LM head in 16-19 ms over 1-4 rows, 21.6 at 5, 35 at 8: 4 "
        "(python -m real.cpu_linear --gemv-rows)")
    moe_layer_us: float = Field(
        35.8, ge=0, description="GPU time of one MoE layer's fused-experts call beyond its weight reads and FLOPs "
        "(routing, token sort, the grouped GEMMs' floor), per MoE layer and step. 35.8: one value fitted on 111 "
        "published fused-MoE kernel timings on five GPUs, points served from cache left out (python -m "
        "sim.moe_kernels --fit); 0 on a CPU")
    moe_expert_us: float = Field(
        0.0, ge=0, description="GPU time per routed expert a step touches, per MoE layer (the grouped GEMMs' "
        "per-expert tiles); 0: off (python -m sim.moe_kernels --fit --terms ... fits it)")
    moe_bw_efficiency: float | None = Field(
        0.85, gt=0, le=1, description="achievable fraction of peak bandwidth for the routed experts' 16-bit weight "
        "reads (fused-MoE kernels); null: bw_efficiency. 0.85: fitted on fused-MoE layers timed in bf16 (two "
        "published runs, H100 and B200, three measured by real.bench_moe on an H100; python -m sim.moe_kernels)")
    moe_quant_bw_efficiency: float | None = Field(
        0.75, gt=0, le=1, description="the same for quantized experts (fp8 / int8 / int4 / mxfp4 fused-MoE kernels "
        "stream their narrower weights at a lower fraction of peak: 0.71-0.75 on the published fp8 timings); null: "
        "moe_bw_efficiency")
    moe_mfu: float | None = Field(
        None, gt=0, le=1, description="achievable fraction of peak FLOP/s for the routed experts' grouped GEMMs; "
        "null: mfu")
    moe_lowp_efficiency: float | None = Field(
        None, gt=0, le=1, description="achievable fraction of the sheet's fp8 / int8 peak FLOP/s for the routed "
        "experts' grouped GEMMs of a w8a8 checkpoint (vLLM's Triton fused-MoE fp8 / int8 kernels, per-tensor or "
        "block scales), in place of (moe_mfu or mfu) x lowp_matmul_efficiency -- the dense fp8 GEMMs' fraction, "
        "which those kernels do not reach. null: that product (today's pricing); fp4 and weight-only (Marlin) "
        "experts never use it. Fitted on published and lab fused-MoE fp8 kernel timings (python -m sim.moe_kernels "
        "--fit --terms moe_lowp_efficiency)")
    moe_default_tile_mfu: float | None = Field(
        None, gt=0, le=1, description="achievable fraction of peak FLOP/s for the routed experts' unquantized "
        "(bf16 / fp16) grouped GEMMs when vLLM runs its built-in Triton tiles -- no tuned config file for the "
        "shape at that release, so it logs 'Using default MoE config. Performance might be sub-optimal!' -- as "
        "get_default_config chose them before vLLM PR 34846 (64 x 64 x 32 tiles past E tokens, no warps / stages "
        "set); used only where sim.engine.moe_tiles is default and the fused-MoE call's tokens exceed the GPU's "
        "experts (that function's 64 x 64 x 32 branch), in place of moe_mfu / mfu. null: as tuned tiles. Fitted on "
        "the lab's H100 / H200 runs of those tiles (python -m sim.moe_kernels --fit --terms "
        "moe_default_tile_mfu,moe_default_tile_bw_efficiency)")
    moe_default_tile_bw_efficiency: float | None = Field(
        None, gt=0, le=1, description="the same tiles' achievable fraction of peak bandwidth for the unquantized "
        "experts' weight reads, in place of moe_bw_efficiency (same cases); null: as tuned tiles")
    marlin_efficiency: float | None = Field(
        None, gt=0, le=1, description="a weight-only quantized checkpoint's matmuls (linears and routed experts) "
        "relative to bf16 ones: a factor on mfu (moe_mfu for the experts). vLLM runs them through Marlin, which "
        "dequantizes in the kernel and multiplies at the activation dtype (GPTQ / AWQ, and fp8 or mxfp4 weights on "
        "a card without that peak, e.g. an A100). null: 1 (as bf16). a100: 0.61, Marlin's published A100 timings at "
        "M >= 1024 (sim/validation/gemm_kernels.yaml; python -m sim.gemm_kernels --fit)")
    attn_mfu: float | None = Field(
        None, gt=0, le=1, description="achievable fraction of peak FLOP/s for attention's score FLOPs (QK^T and "
        "PV over the cached tokens each query token attends to: the FlashAttention kernel vLLM runs, FA3 on "
        "Hopper, FA2 on Ampere / Ada); null: mfu. Set from published FlashAttention forward benchmarks (python "
        "-m sim.attention_kernels), not from serving rows")
    mixed_decode_tile_rows: int | None = Field(
        None, ge=2, le=256, description="query rows vLLM's attention kernel computes, per query head, for each "
        "decoding request of a step that also runs a prefill chunk (V1 engine): FA2 (compute capability 8.x and "
        "12.x: vLLM's FLASH_ATTN takes FA3 on 9.x only, FlashInfer leads on 10.x) runs "
        "the whole mixed batch as one paged flash_attn_varlen_func call, the split-KV kernel's kBlockM = 64 rows "
        "per (request, query head) tile, and packs GQA heads only when every query is one token (max_seqlen_q == "
        "1); so a decode there costs 64 rows x its context (rounded up to kBlockN = 128) of attention FLOPs per "
        "query head, at attn_mfu. null: its own row (FA3 packs GQA heads and schedules tiles)")
    mixed_kv_reread: bool = Field(
        False, description="with mixed_decode_tile_rows: each (request, query head) tile of that FA2 kernel loads "
        "the request's K / V itself (the grid runs every request of one query head before the next), so a step "
        "with a prefill chunk prices its attention as a kernel of its own after the GEMMs, the longer of its FLOPs "
        "(the padded tiles too) and its KV read once per query head of a group (once where one layer's KV of one "
        "KV head fits in l2_mib). Set on every sheet with mixed_decode_tile_rows (the same kernel): a100-80g / a100-40g (session 39, h130), "
        "the other FA2 cards (h138); not rtx-4090 (held, as its tile rows)")
    dense_gemm_mfu: dict[int, float] | None = Field(
        None, description="achievable fraction of the matmul peak for the dense (non-expert) linears' GEMMs by the "
        "step's GEMM rows M (its query tokens): {M: fraction}, interpolated linearly in log M between the points and "
        "flat outside them; it replaces mfu for those linears only (routed experts: moe_mfu / mfu; attention: "
        "attn_mfu / mfu; a drafter: mfu). null: mfu at every M. Set from published GEMM timings at a model's layer "
        "shapes (sim/validation/gemm_kernels.yaml)")
    lowp_matmul_efficiency: dict[Literal[DTYPES], float] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"fp8": 0.8, "fp4": 0.65},
        description="a low-precision (fp8 / int8 / fp4) matmul's achievable fraction of its peak relative to mfu "
        "(1: as a bf16 matmul of its own); defaults fitted on published GEMM timings of the same shapes in bf16 "
        "and fp8 / fp4 (python -m sim.gemm_kernels --fit)")
    act_quant_us: float = Field(
        3.24, ge=0, description="GPU time of one on-the-fly activation quantization (a w8a8 / w4a4 checkpoint's "
        "dynamic quant kernel before each quantized linear), per linear and step; fitted with "
        "lowp_matmul_efficiency; 0 on a CPU")
    step_overhead_ms: float = Field(0.13, ge=0, le=MAX_STEP_OVERHEAD_MS,
                                    description="per-step CPU/launch overhead (BLIS beta7 ~126 us), ms, <= 1,000")
    layer_overhead_us: float = Field(32.0, ge=0, le=MAX_LAYER_OVERHEAD_US,
                                     description="per-layer overhead (BLIS beta5 ~32 us), us, <= 100,000")
    request_overhead_us: float = Field(4.0, ge=0, le=MAX_REQUEST_OVERHEAD_US,
                                       description="per-request overhead (BLIS beta6 ~4 us), us, <= 1,000,000")
    step_host_ms: float = Field(  # at most a second a step (1e300 passed validate)
        0.0, ge=0, le=1000, description="the engine core's host time per step beyond the per-request term "
        "(scheduling, input preparation, output processing), ms, <= 1,000: in series with the GPU's without async "
        "scheduling (vLLM before 0.14), beside it with it (engine.async_scheduling: the step lasts the longer of the "
        "two); 0: none beyond step_overhead_ms. No preset sets it (session 39's byte / layer split trial, "
        "BENCHMARKS.md; python -m sim.step_floor_check --fit)")

    @model_validator(mode="after")
    def _positive_peaks(self):
        if any(not 0 < v <= MAX_PEAK_TFLOPS for v in self.peak_tflops.values()):
            raise ValueError(f"peak_tflops values must be positive and at most {MAX_PEAK_TFLOPS:,} TFLOP/s")
        if self.usable_mem_gib is not None and self.usable_mem_gib > self.mem_gib:
            raise ValueError(f"usable_mem_gib {self.usable_mem_gib:g} is more than mem_gib {self.mem_gib:g}")
        if any(not 0 < v <= 2 for v in self.lowp_matmul_efficiency.values()):
            raise ValueError("lowp_matmul_efficiency values must be in (0, 2] (a factor on mfu)")
        if self.dense_gemm_mfu is not None and (not self.dense_gemm_mfu or any(
                m < 1 or not 0 < f <= 1 for m, f in self.dense_gemm_mfu.items())):
            raise ValueError("dense_gemm_mfu: a non-empty {rows >= 1: fraction in (0, 1]} mapping, or null")
        return self

    @property
    def kv_budget_gib(self) -> float:
        """The memory vLLM's gpu_memory_utilization is a fraction of: usable_mem_gib, else mem_gib."""
        return self.usable_mem_gib or self.mem_gib

    def has_peak(self, dtype: str) -> bool:
        """Whether the sheet gives a dense peak for `dtype` (fp16 and bf16 stand in for each other)."""
        return dtype in self.peak_tflops or {"fp16": "bf16", "bf16": "fp16"}.get(dtype) in self.peak_tflops

    def peak_for(self, dtype: str) -> float:
        """Dense peak TFLOP/s for `dtype` (fp16 falls back to bf16 and back)."""
        for key in (dtype, {"fp16": "bf16", "bf16": "fp16"}.get(dtype)):
            if key in self.peak_tflops:
                return self.peak_tflops[key]
        raise LabError(f"sim.hardware: {self.name} gives no peak_tflops for {dtype} (has {sorted(self.peak_tflops)})")


def _load_spec_file(value):
    """`spec: path/to/card.yaml` -> the mapping in that file (read at validation, so `lab validate` checks it)."""
    if not isinstance(value, str):
        return value
    path = expand_path(value)
    if not path.is_file():
        raise ValueError(f"spec file {value!r} not found")
    try:  # the project's safe loader: duplicate keys, alias bombs and binary files are refused
        data = load_yaml_bytes(path.read_bytes(), f"spec file {value!r}")
    except LabError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict):
        raise ValueError(f"spec file {value!r} must hold one mapping of HardwareSheet fields")  # noqa: TRY004 - pydantic reports ValueError
    try:  # checked here, so that the error names the file and the field in it, not only sim.hardware.spec
        return HardwareSheet.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"spec file {value!r}: {validation_message(exc)}") from None


class HardwareSpec(StrictModel):
    preset: str | None = Field(None, validation_alias=AliasChoices("preset", "name"),
                               description="a preset of sim/presets/hardware.yaml (`name:` is accepted too)")
    spec: Annotated[HardwareSheet | None, BeforeValidator(_load_spec_file)] = Field(
        None, description="the device's own spec sheet: a mapping of HardwareSheet fields or a path to a YAML file "
                          "holding one")
    tp: int = Field(1, ge=1, le=64, description="tensor-parallel degree (GPUs per replica)")
    ep: int = Field(1, ge=1, le=1024, description="expert-parallel degree for MoE models: routed experts are "
                                                  "spread over this many GPUs, tp x dp as vLLM's "
                                                  "--enable-expert-parallel lays them (1 or a multiple of tp); "
                                                  "over dp > 1 replicas tokens reach them through all2all")
    all2all: Literal[ALL2ALL_BACKENDS] = Field(  # type: ignore[valid-type]
        "allgather_reducescatter", description="vLLM's all2all backend (--all2all-backend / VLLM_ALL2ALL_BACKEND) "
        "for ep over ep / tp > 1 data-parallel ranks, priced per MoE layer by the bytes it moves (sim/cost.py "
        "all2all_cost): allgather_reducescatter (vLLM's default since 0.11: every rank gathers all ranks' hidden "
        "states, then reduce-scatters the expert output), naive (the default up to 0.10: broadcasts + an "
        "all-reduce), dispatch (pplx / deepep: each token to its top-k experts' ranks only). Left out: the default "
        "of sim.engine.vllm_version's release (naive before 0.11)")
    interconnect: InterconnectSheet | None = Field(None, description="override of the sheet's link (e.g. PCIe)")
    mfu: float | None = Field(None, gt=0, le=1, description="override of the sheet's achievable FLOP/s fraction")
    attn_mfu: float | None = Field(None, gt=0, le=1,
                                   description="override of the sheet's achievable FLOP/s fraction for attention")
    bw_efficiency: float | None = Field(None, gt=0, le=1,
                                        description="override of the sheet's achievable bandwidth fraction")

    @model_validator(mode="after")
    def _one_source(self):
        if self.preset is not None and self.spec is not None:
            raise ValueError("give hardware.preset or hardware.spec, not both")
        if self.preset is not None and self.preset not in HARDWARE_NAMES:
            # as a card is written on its sheet: "H100", "RTX PRO 6000", "MI300X" name the presets h100, ...
            spelled = "-".join(self.preset.lower().replace("_", " ").split())
            if spelled in HARDWARE_NAMES:
                self.preset = spelled
        if self.preset is not None and self.preset not in HARDWARE_NAMES:
            raise ValueError(f"hardware preset {self.preset!r} is not one of {HARDWARE_NAMES}; "
                             "or describe the device with hardware.spec")
        if (self.tp > 1 or self.ep > 1) and self.interconnect is None and self.spec is not None \
                and self.spec.interconnect.kind == "none":
            # the sheet's default link is none (a single device): collectives would be priced at its 1 GB/s
            raise ValueError(f"hardware.tp {self.tp} / ep {self.ep} price collectives on the GPUs' link, and "
                             "hardware.spec gives none: set spec.interconnect (kind: pcie | nvlink | "
                             "infinity_fabric | ethernet, bandwidth_gbs per GPU and direction, latency_us)")
        return self

    @property
    def described(self) -> bool:
        """True when the YAML named the device (a preset or a spec) rather than taking the default."""
        return self.preset is not None or self.spec is not None

    def sheet(self) -> HardwareSheet:
        """The effective spec sheet: preset or own spec (default h100), with this section's overrides."""
        sheet = self.spec or HardwareSheet.model_validate(hardware_presets()[self.preset or "h100"])
        update = {k: v for k, v in (("interconnect", self.interconnect), ("mfu", self.mfu),
                                    ("attn_mfu", self.attn_mfu), ("bw_efficiency", self.bw_efficiency))
                  if v is not None}
        return sheet.model_copy(update=update) if update else sheet

    @property
    def label(self) -> str:
        return self.sheet().name


class ModelSpec(StrictModel):
    name: str | None = Field("qwen3-8b", description="a preset of sim/presets/models.yaml (qwen3-8b, llama-2-7b, "
                                                     "...); with `config` a label (default: from the config)")
    config: UserPath | None = Field(None, description="a Hugging Face config.json, or a checkpoint directory "
                                                      "holding one (dense or MoE: Qwen3-MoE, "
                                                      "DeepSeek-V3 styles; sliding-window or hybrid linear "
                                                      "attention: Gemma3, Qwen3-Next, Qwen3.5); read at "
                                                      "validation")
    dtype: Literal[DTYPES] | None = Field(None, description="weight precision; default: preset's, else the "  # type: ignore[valid-type]
                                                            "config's torch_dtype, else bf16")
    kv_dtype: Literal[DTYPES] | None = Field(None, description="KV-cache precision; default: the weights'")  # type: ignore[valid-type]
    drafter_layers: int = Field(2, ge=0, le=16,
                                description="drafter decoder layers of target width (DSpark: 2); prices drafting")
    drafter_passes: Literal[DRAFTER_PASSES] = Field(  # type: ignore[valid-type]
        "one", description="one: the drafter proposes every draft in one pass (DSpark, DFlash); per_token: one pass "
                           "per draft token in a chain (EAGLE, EAGLE-3, MTP as vLLM runs them)")
    drafter_head_vocab: int = Field(0, ge=0, le=4_000_000,
                                    description="LM-head rows each drafter pass reads beyond its layers (EAGLE / "
                                                "DSpark share the target's head: its vocabulary; EAGLE-3: its "
                                                "32k draft vocabulary); 0: not counted")
    routing_skew: float = Field(ROUTING_SKEW, ge=0, le=10,
                                description="MoE models: how unevenly a layer's router spreads tokens over its experts "
                                "(coefficient of variation of the experts' shares of the selections; sim/routing.py): "
                                "a skewed router's step of B tokens touches fewer distinct experts, so reads fewer "
                                "expert bytes, than uniform routing; 0: uniform (what fused-MoE kernel benchmarks "
                                "route); default: the published Qwen3-30B-A3B skew over diverse prompts "
                                "(python -m sim.moe_routing_check)")

    @model_validator(mode="after")
    def _known(self):
        if self.config is None:
            if self.name not in MODEL_NAMES:
                raise ValueError(f"model {self.name!r} is not a preset {MODEL_NAMES}; or set model.config "
                                 "to a Hugging Face config.json")
            return self
        path = config_json_path(self.config)
        if not path.is_file():
            hub = re.fullmatch(r"[\w.-]+/[\w.-]+", str(self.config)) and not expand_path(self.config).parent.exists()
            raise ValueError(f"model.config {self.config!r} not found" + (
                f" (no config.json in the directory)" if expand_path(self.config).is_dir() else
                f" (nothing is fetched from a model hub: save https://huggingface.co/{self.config}/blob/main/"
                "config.json and give its path)" if hub else ""))
        try:
            data = json.loads(path.read_text())
        except ValueError:
            raise ValueError(f"model.config {self.config!r} is not valid JSON") from None
        # a decoder's own keys, or a multimodal wrapper's (sim/models.py TEXT_CONFIG_KEYS reads them)
        if not isinstance(data, dict) or not {"hidden_size", "text_config", "llm_config", "language_config"} & set(data):
            raise ValueError(f"model.config {self.config!r} has no hidden_size: not a transformer config.json")
        if self.dtype is None:  # a quantized checkpoint: its method must be one the simulator prices
            from sim.quant import quant_scheme
            try:
                quant_scheme(data.get("quantization_config"), f"model.config {self.config!r}")
            except LabError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def label(self) -> str:
        """What results call the model: the preset's name, or with `config` the name given, else the config's path
        (the default preset name means nothing there)."""
        if self.config is None or "name" in self.model_fields_set and self.name:
            return str(self.name)
        return str(self.config)


class CostSpec(StrictModel):
    profile: UserPath | Literal["run"] | None = Field(
        None, description="a measured step profile (step_profile.csv, its .json or their directory; `run`: this "
                          "run's own, written by `lab profile`) used as the step cost instead of the roofline")
    spec_profile: UserPath | None = Field(
        None, description="decode steps measured on the speculative server (a step profile whose query_tokens is "
                          "1 + drafts, `lab run` engine stage: engine/<variant>/step_profile.csv): a speculative "
                          "step costs what it adds over the profile's step of the same shape; needs profile")
    step_overhead_ms: float | None = Field(None, ge=0, le=MAX_STEP_OVERHEAD_MS,
                                           description="override of the hardware's per-step overhead, ms")
    layer_overhead_us: float | None = Field(None, ge=0, le=MAX_LAYER_OVERHEAD_US,
                                            description="override of the hardware's per-layer overhead, us")
    request_overhead_us: float | None = Field(None, ge=0, le=MAX_REQUEST_OVERHEAD_US,
                                              description="override of the hardware's per-request overhead, us")
    spec_overhead_ms: float = Field(0.3, ge=0,
                                    description="extra per-step cost of any speculative mode (sampler, rejection)")
    cuda_graph_buckets: list[int] | None = Field(
        None, description="token counts captured as CUDA graphs; a step is padded up to the next bucket "
                          "(jagged SPS); above the last bucket the step runs eagerly")
    eager_penalty: float = Field(1.1, ge=1, description="step-time multiplier when no CUDA graph bucket fits")

    @model_validator(mode="after")
    def _sorted(self):
        b = self.cuda_graph_buckets
        if b is not None and (not b or any(x < 1 for x in b) or b != sorted(set(b))):
            raise ValueError("cost.cuda_graph_buckets must be a non-empty strictly increasing list of ints >= 1")
        return self



def _version_text(value):
    """A release number must be text: YAML reads an unquoted 0.10 as the number 0.1 (and 0.8 as 0.8, by luck).
    vLLM's release tag (v0.10.1) reads as its number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"{value!r} is a number: quote the release, e.g. '0.10.1' (YAML reads an unquoted 0.10 as 0.1)")
    if isinstance(value, str) and value[:1] in ("v", "V") and value[1:2].isdigit():
        value = value[1:]
    if isinstance(value, str) and not re.match(r"\d+\.\d+", value):
        raise ValueError(f"{value!r} is not a vLLM release: give its number, e.g. '0.10.1' (`vllm --version`)")
    return value

class EngineSpec(StrictModel):
    """One replica's engine settings, named as vLLM names them (sim/kv_cache.py, sim/cluster.py)."""

    kv_policy: Literal["paged", "reserve"] = Field(
        "paged", description="paged: vLLM's KV blocks, admission by the blocks needed now, growth per step, "
                             "preemption by recompute; reserve: prompt + output reserved at admission (old model)")
    block_size: int = Field(16, ge=1, le=1024, description="token slots per KV block (paged)")
    hybrid_kv: bool = Field(
        True, description="vLLM's hybrid KV cache manager (paged): sliding-window layers keep only their window's "
                          "blocks, in KV cache groups sharing one pool; false = vLLM's "
                          "--disable-hybrid-kv-cache-manager (every layer keeps the whole context)")
    prefix_caching: bool = Field(
        True, description="vLLM V1's automatic prefix caching (paged, one KV cache group): a freed request's full "
                          "blocks stay cached until evicted (least recently freed first), so a preempted request "
                          "resumes recomputing only what was evicted; false = --no-enable-prefix-caching")
    vllm_version: Annotated[str | None, BeforeValidator(_version_text)] = Field(
        None, pattern=r"^\d+\.\d+", description="the vLLM release being modelled (e.g. 0.6.0): every engine "
        "setting this section leaves unset takes that release's `vllm serve` default (sim/vllm_versions.py) -- "
        "before 0.8 (the V0 engine) 256 sequences, chunked prefill off (on for max_model_len > 32K from 0.5.3), "
        "max(max_model_len, 2048) batched tokens unchunked (512, from 0.6.5 2048, chunked), no prefix caching, "
        "the sorting sampler and 0.9 of the GPU; null: the current release's defaults")
    max_num_seqs: int | None = Field(None, ge=1, le=8192, description="requests running at once; null: what "
                                     "`vllm serve` picks on the card (1024 on a device of >= 70 GiB that is not "
                                     "an A100, else 256; sim.hardware.vllm_serve_batch_defaults; 256 before "
                                     "vLLM 0.8: vllm_version)")
    max_num_batched_tokens: int | None = Field(
        None, ge=16, description="tokens in one step (decode + drafts + prefill chunks); null: what `vllm serve` "
                                 "picks on the card (8192 on a device of >= 70 GiB that is not an A100, else 2048; "
                                 "before vLLM 0.8 by max_model_len: vllm_version)")
    enable_chunked_prefill: bool | None = Field(
        None, description="split prompts into chunks that fit the token budget; null: what `vllm serve` picks "
                          "(on from vLLM 0.8; before it off unless max_model_len > 32K: vllm_version). Off on a "
                          "V0 release (vllm_version before 0.8) a step runs whole prompts alone, the running decodes "
                          "paused, or decodes alone (sim.vllm_versions.v0_prefill_steps)")
    linear_attn_mixed: Literal["unified", "split"] = Field(
        "split", description="how a step holding prefills beside single-token decodes runs a hybrid linear-attention "
        "model's Gated DeltaNet layers (Qwen3-Next / Qwen3.5; others: no effect): unified (vLLM before PR 44700, "
        "2026-06-06: every request not verifying drafts goes through the chunked kernel, its recurrent state "
        "gathered into a copy and scattered back in every linear layer), split (from it: the prefill requests "
        "only; the decodes update their states in place). sim/linear_attn.py")
    linear_attn_autotune_s: float = Field(
        0.0, ge=0, le=3600, description="seconds a Gated DeltaNet hybrid model's (Qwen3-Next / Qwen3.5) first step "
        "holding a prefill adds once per replica: a fresh server's Triton autotuning of FLA's chunked kernels (others: "
        "no effect); unset: what engine.vllm_version does on the card (sim.linear_attn.first_prefill_autotune_s: "
        "before 0.18 on cards other than compute capability 9.0); at most an hour (1e300 stalled every replica's "
        "clock past any run's end)")
    gpu_memory_utilization: float = Field(
        0.92, gt=0, le=1, description="fraction of GPU memory for weights, activations, CUDA graphs and KV; 0.92: "
        "vLLM's default since 0.20, which keeps the CUDA-graph estimate back too (PR 38284; 0.9 before)")
    activation_reserve_gib: float | None = Field(
        None, ge=0, description="per-GPU memory kept from the KV cache for activations (vLLM's profiled peak); "
                                "default: an estimate from the model width and vocab, max_num_batched_tokens, "
                                "max_num_seqs and the sampler (sim/kv_cache.activation_reserve_bytes)")
    sampler: Literal[SAMPLERS] = Field(  # type: ignore[valid-type]
        "flashinfer", description="how vLLM's sampler applies top-k / top-p, which sets the memory its profile "
        "run's dummy sampler (max_num_seqs rows of vocab logits) keeps back from the KV cache: sort (PyTorch "
        "sort: vLLM V0, V1 0.11.1 - 0.16, or wherever FlashInfer is absent), flashinfer (V1 0.8 - 0.11.0 where "
        "installed, as in the official images, and from PR 40376 on: the default here), triton (0.17 - 0.19)")
    cuda_graph_memory: Literal["estimate", "none"] | Annotated[float, Field(ge=0)] = Field(
        "estimate", description="per-GPU CUDA-graph memory vLLM keeps back from the KV cache beside the reserve: "
        "estimate (vLLM 0.20+ default, VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1: its capture-and-extrapolate "
        "estimate priced from max_num_seqs and max_num_batched_tokens, sim/cuda_graphs.py), none (--enforce-eager, "
        "-O0, VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0, or vLLM before 0.20, which captured graphs after sizing "
        "the KV cache), or GiB (what your log's 'Estimated CUDA graph memory' prints)")
    # full_and_piecewise: vLLM 0.11+ (PR 25444), a decode step one graph, what the sheets' fixed terms are scored on;
    # piecewise: V1 0.8 - 0.10 (or -O.cudagraph_mode=PIECEWISE), attention eager between graphs (sim/cuda_graphs.py)
    cuda_graph_mode: Literal[CUDA_GRAPH_MODES] = Field(  # type: ignore[valid-type]
        "full_and_piecewise", description="the CUDA-graph layout the server replays: piecewise pays 14.3 us more "
        "per layer and step than full_and_piecewise (vLLM PR 20059's measured gap); no effect on a device without "
        "graphs (cpu) or with a measured sim.cost.profile")
    async_scheduling: bool | None = Field(
        None, description="the engine core schedules step N+1 and prepares its inputs while step N runs on the "
        "GPU (vLLM --async-scheduling; the default from vLLM 0.14: vllm_version): the per-request host time "
        "(cost.request_overhead_us x the step's requests) overlaps the GPU's instead of adding to it, so a step "
        "lasts the longer of the two; false (vLLM 0.8 - 0.13's default): in series. null (left out): the release's "
        "default (engine.vllm_version; no release named: the current release's, on; the CPU backend: off; "
        "sim.vllm_versions.engine_async_scheduling)")
    moe_tiles: Literal[MOE_TILES] = Field(  # type: ignore[valid-type]
        "tuned", description="the Triton tiles vLLM's fused-MoE kernel runs for an unquantized MoE model's "
        "per-GPU expert shape: tuned (a config file E=..,N=..,device_name=.. ships for it, or vLLM PR 34846's "
        "batch-aware defaults, within 0-11% of tuned in the published bf16 tables of vLLM PRs 40542 / 44818) or default (vLLM before PR 34846 found "
        "no file and logged 'Using default MoE config. Performance might be sub-optimal!': its expert GEMMs run at "
        "the sheet's moe_default_tile_mfu where the sheet sets one)")
    kv_capacity_tokens: int | None = Field(
        None, ge=1, description="KV cache size in tokens per replica, overriding the memory computation")
    max_model_len: int | None = Field(
        None, ge=1, le=MAX_MODEL_LEN, description="the server's --max-model-len (at most 2**24 tokens): a request whose prompt + output pass it is refused "
                                "as vLLM's server refuses it (never scheduled, counted too_long; unset: the length "
                                "the model's config.json states, none for a preset); with sliding-window layers, KV "
                                "sizes in tokens are read and reported as newer vLLM logs them (max concurrency x "
                                "max_model_len; sim/kv_cache.KVGroups); None: as vLLM <= 0.11 (pool blocks // "
                                "groups x block_size). "
                                "Before vLLM 0.8 (vllm_version) it also sets the default batch limits and chunked "
                                "prefill; None there: the length vLLM derives from the model's config.json")
    disaggregated_prefill: bool = Field(
        False, description="prefill runs on separate prefill nodes (PD disaggregation): a request reaches its "
                           "decode replica with its KV after one prefill pass priced by the cost model "
                           "(prefill-node queueing is not modelled); TTFT = that pass")
    dp_lockstep: bool = Field(
        True, description="a MoE model's data-parallel replicas of one expert-parallel group (hardware.ep / "
                          "hardware.tp replicas; all replicas under dp_mode vllm) step together, as vLLM's DP ranks do: every MoE layer's "
                          "all-to-all waits for all of them, so a step lasts as long as the group's longest and an "
                          "idle rank runs a dummy batch (padded as dp_padding says); false: each replica steps "
                          "alone")
    dp_mode: Literal["separate", "vllm"] = Field(
        "separate", description="what sim.replicas > 1 of a MoE model are when hardware.ep is 1: separate (each "
        "replica a whole copy with every expert, stepping alone), vllm (one `vllm serve --data-parallel-size "
        "replicas` without --enable-expert-parallel: attention and the dense layers replicated per DP rank, the MoE "
        "layers tensor-parallel over replicas x tp GPUs -- vLLM's FusedMoEParallelConfig.make flattens tp across dp "
        "-- so each GPU holds 1/(replicas x tp) of every expert, every MoE layer all-gathers the DP ranks' tokens "
        "and reduce-scatters its output on the link, and the ranks step in lockstep as engine.dp_lockstep says). "
        "vllm needs hardware.ep 1 (or tp x replicas: expert parallelism, as without dp_mode). A dense model's DP "
        "ranks are independent replicas in vLLM too: separate whatever this says")
    dp_padding: Literal["cuda_graphs", "always", "none"] = Field(
        "cuda_graphs", description="vLLM's DP padding of a lockstep group (each rank runs the group's most "
        "tokens): cuda_graphs (vLLM since PR #34102, 2026-02: only while every rank's step fits a CUDA graph -- "
        "the last cost.cuda_graph_buckets, else min(2 x max_num_seqs, 512)), always (vLLM before it, 0.10 / 0.11 "
        "included: every step unless --enforce-eager), none")


class FrontendSpec(StrictModel):
    """vLLM's API server in front of each replica's engine (sim/frontend.py): one event loop serving in turn
    each request's work before the engine sees it and each step's streamed tokens (the output handler's work
    never waits for the admission backlog), after a pure delay per request that occupies nothing; `intake` says
    whether the requests' work is served one after another (fifo) or interleaved (shared). All 0 (the default):
    no front end, requests reach the engine when they arrive and tokens the client when emitted."""

    latency_ms: float = Field(0.0, ge=0,
                              description="delay on every request's way to the engine that does not occupy the "
                                          "server (client, HTTP, tokeniser thread, engine-core hand-off), ms; "
                                          "many requests can be in it at once; before the request's work")

    request_ms: float = Field(0.0, ge=0,
                              description="front-end work per request before the engine sees it (HTTP, chat "
                                          "template, tokenising, hand-off), ms; caps admissions at 1000 / this "
                                          "per second")
    output_token_ms: float = Field(0.0, ge=0,
                                   description="front-end work per emitted token (detokenising, SSE streaming), "
                                               "ms; a token reaches the client when its step's tokens are served")
    intake: Literal["fifo", "shared"] = Field(
        "fifo", description="how the requests' work shares the server: fifo = one after another (N at once reach "
                            "the engine request_ms apart), shared = interleaved in pieces as asyncio runs them "
                            "(processor sharing: N at once reach the engine together, N x request_ms later)")

    @property
    def enabled(self) -> bool:
        return self.request_ms > 0 or self.output_token_ms > 0 or self.latency_ms > 0


# `batching:` is the engine section's old name; its keys map onto the vLLM names
_BATCHING_KEYS = {"max_batched_tokens": "max_num_batched_tokens", "chunked_prefill": "enable_chunked_prefill",
                  "gpu_mem_util": "gpu_memory_utilization"}


class LengthSpec(StrictModel):
    """Request lengths of a synthetic workload (README, "A `sim:` section"; sim/workload.py samples them)."""

    source: Literal["fixed", "random", "csv", "sharegpt", "recorded"] = Field(
        "fixed", description="fixed numbers; random: vLLM bench's --dataset-name random (uniform around "
                             "prompt_tokens / output_tokens by range_ratio); csv: rows of a lengths table "
                             "(yours, e.g. from a production log); sharegpt: vLLM bench's --dataset-name sharegpt "
                             "(the ShareGPT table of `python -m real.sharegpt_lengths`, vLLM's filter); or the "
                             "recorded output length of the replayed prompt")
    prompt_tokens: int = Field(512, ge=1)
    output_tokens: int = Field(256, ge=1)
    range_ratio: float = Field(0.0, ge=0, lt=1, description="random: --random-range-ratio r; lengths uniform over "
                                                            "the integers [floor(x(1 - r)), ceil(x(1 + r))]")
    csv_path: UserPath | None = Field(
        None, description="csv: a table with columns prompt_tokens,output_tokens (or input_tokens,output_tokens, "
                          "or num_prefill_tokens,num_decode_tokens); sharegpt: another ShareGPT table than the "
                          "cached one; $VARS expand")
    tokenizer: Slug = Field("qwen3", description="sharegpt: whose token counts, the table "
                                                 "$DSPARK_LAB_CACHE/lengths/sharegpt-<tokenizer>.csv")
    sharegpt_output_len: int | None = Field(None, ge=1, description="sharegpt: --sharegpt-output-len (every "
                                                                    "output this long; vLLM's filter follows it)")
    borrow: bool = Field(
        False, description="sharegpt: where `tokenizer` has no table (nor an alias's) in the cache, draw another "
                           "tokenizer's conversations (the cached table whose kept prompt mean is nearest "
                           "prompt_tokens), every prompt and output scaled by one factor and vLLM's filter applied "
                           "again so the kept rows' means are prompt_tokens / output_tokens (sim/workload.py "
                           "borrowed_sharegpt_table)")
    draw: Literal["iid", "shuffle"] | None = Field(
        None, description="csv / sharegpt rows: iid = drawn independently (csv's default); shuffle = a seeded "
                          "permutation taken in order, distinct rows as vLLM's benchmark sends them (sharegpt's)")
    max_prompt_tokens: int = Field(32768, ge=1, description="longer prompts are clipped")
    max_output_tokens: int = Field(8192, ge=1, description="longer outputs are clipped")

    @model_validator(mode="after")
    def _csv(self):
        if self.source == "csv" and not self.csv_path:
            raise ValueError("lengths.source 'csv' needs lengths.csv_path")
        table = self.source in ("csv", "sharegpt")
        for name, applies, given in (("draw", table, self.draw is not None),
                                     ("range_ratio", self.source == "random", self.range_ratio != 0),
                                     ("sharegpt_output_len", self.source == "sharegpt", self.sharegpt_output_len),
                                     ("borrow", self.source == "sharegpt", self.borrow)):
            if given and not applies:
                raise ValueError(f"lengths.{name} does not apply to lengths.source {self.source!r}")
        if self.borrow and self.csv_path:
            raise ValueError("lengths.borrow does not apply with lengths.csv_path (that table is read as it is)")
        return self

    @property
    def table_draw(self) -> str:
        """How table rows are drawn: `draw`, or its default for the source."""
        return self.draw or ("shuffle" if self.source == "sharegpt" else "iid")


REPLAY_KINDS = ("trace", "replay_log")  # workloads that replay recorded arrivals


CLOSED_LOOP_USERS = 8  # a closed loop's users where workload.concurrency leaves them out
# The most closed-loop users one simulated point runs: each is a request in flight from the start (10^18 of them was
# an "Unable to allocate 6.94 EiB" traceback); far above any served batch (vLLM's max_num_seqs tops out at 8192)
MAX_USERS = 1_000_000


class WorkloadSpec(StrictModel):
    kind: Literal["poisson", "gamma", "closed_loop", "trace", "replay_log"] = Field(
        "closed_loop", description="Poisson, bursty gamma, N concurrent users, replay of an arrival CSV, or replay "
                                   "of a real engine's per-request log (compared with it: sim/fidelity.csv)")
    rate: float = Field(1.0, gt=0, allow_inf_nan=True,
                        description="requests/s (poisson, gamma); the sweep axis 'rate' overrides it. .inf (vLLM "
                                    "bench's --request-rate inf): every request at once, run as the closed loop of "
                                    "max_concurrency users, or of max_requests where it gives none (all_at_once)")
    cv: float = Field(2.0, gt=0, description="gamma inter-arrival coefficient of variation (burstiness)")
    client_seed: int | None = Field(
        None, ge=0, le=2**32 - 1,
        description="poisson / gamma: send the requests when vLLM's benchmark client run with --seed N sent them "
                    "(benchmark_serving.py up to vLLM 0.9 with a ShareGPT dataset: numpy's legacy "
                    "generator seeded N, the first request at 0 and one gamma gap after each, shape 1 / cv^2, 1 for "
                    "poisson; sim/workload.py vllm_client_send_times); unset: the run's own draw, new with each seed")
    concurrency: int = Field(CLOSED_LOOP_USERS, ge=1,
                             description="closed-loop users; the sweep axis 'concurrency' overrides it")
    max_concurrency: int | None = Field(
        None, ge=1, description="poisson / gamma: vLLM bench's --max-concurrency beside --request-rate: at most this "
                                "many requests in flight; one whose arrival comes while they are waits in the client "
                                "for a slot, first come first served, and is timed (TTFT, E2E) from its send; the "
                                "sweep axis 'concurrency' overrides it")
    think_time_s: float = Field(0.0, ge=0, description="closed-loop pause between a reply and the next request")
    trace_path: UserPath | None = Field(None, description="arrival CSV arrived_at,num_prefill_tokens,num_decode_tokens")
    log_path: UserPath | None = Field(
        None, description="replay_log: per-request log (Parquet or CSV: request_id, arrival_s, input_tokens, "
                          "output_tokens, first_token_s, finish_s; or a `vllm bench serve --save-result "
                          "--save-detailed` JSON, or SGLang bench_serving's --output-details .jsonl of one "
                          "run); a relative path is looked up in the run first")
    time_scale: float = Field(1.0, gt=0, description="trace replay: arrival times are multiplied by this")
    lengths: LengthSpec = Field(default_factory=LengthSpec)
    duration_s: float | None = Field(
        None, gt=0, description="simulated seconds of arrivals; default 600, replays and bounded runs "
                                "(max_requests): the whole run, every request sent (cut at this time when set)")
    warmup_s: float | None = Field(
        None, ge=0, description="requests arriving before this are excluded from metrics; default 30 s, replays and "
                                "bounded runs (max_requests): 0 (measured over the whole run, as vLLM's benchmark is)")
    drain: bool = Field(True, description="after duration_s, keep running until admitted requests finish")
    drain_limit_s: float = Field(600.0, ge=0, description="longest drain; later requests are reported unfinished")
    max_requests: int | None = Field(
        None, ge=1, description="cap on arrivals; a closed loop stops sending after this many (vLLM bench's "
                                "--num-prompts with --max-concurrency) and ends with the last reply")
    warm_prefix_cache: bool = Field(
        False, description="poisson / gamma: the same requests ran once before on this server -- a sweep of vLLM's "
                           "benchmark client, one --seed (so the same sampled prompts at every point) against one "
                           "`vllm serve` -- so the run starts with their full KV blocks (prompt and reply) in each "
                           "replica's prefix cache (engine.prefix_caching), freed in request order, the least "
                           "recently freed evicted past the pool (sim.cluster Cluster.warm_prefix_cache)")

    @field_validator("rate", mode="before")
    @classmethod
    def _rate_is_a_number(cls, value):
        """NaN is refused as NaN (.inf is --request-rate inf; gt=0 would call NaN 'not greater than 0')."""
        if isinstance(value, (float, str)) and str(value).strip().lower() in ("nan", ".nan"):
            raise ValueError("Input should be a number of requests/s > 0, or .inf, not NaN")
        return value

    @property
    def replay(self) -> bool:
        return self.kind in REPLAY_KINDS

    @property
    def all_at_once(self) -> bool:
        """poisson / gamma at rate .inf (vLLM bench's --request-rate inf): every request created at once, at most
        `max_concurrency` of them (else all) in flight -- the closed loop of that many users (`users`)."""
        return self.kind in ("poisson", "gamma") and math.isinf(self.rate)

    @property
    def users(self) -> int:
        """The users of a closed loop: `concurrency` (kind closed_loop); at rate .inf (all_at_once)
        `max_concurrency`, else max_requests (every request in flight at once)."""
        if not self.all_at_once:
            return self.concurrency
        return self.max_concurrency or self.max_requests

    @property
    def client_limit(self) -> int | None:
        """The benchmark client's --max-concurrency over Poisson / gamma arrivals at a finite rate (None: no limit)."""
        return None if self.all_at_once else self.max_concurrency

    @property
    def sweeps_concurrency(self) -> bool:
        """Whether a sweep axis 'concurrency' has a concurrency here to vary: a closed loop's users (kind closed_loop,
        or rate .inf: vLLM bench's --request-rate inf --max-concurrency C), or the client's --max-concurrency beside
        a finite rate (vLLM bench takes the two together: the rate initiates, the limit caps what runs)."""
        return self.kind == "closed_loop" or self.all_at_once or self.client_limit is not None

    @property
    def bounded(self) -> bool:
        """A synthetic workload of max_requests requests (vLLM bench's --num-prompts): like vLLM's benchmark, it sends
        them all and is measured over all of them and its whole run, not over a steady-state window."""
        return self.max_requests is not None and not self.replay

    @property
    def warmup(self) -> float:
        """warmup_s, or its default for the kind: 0 for replays and bounded runs, else 30 s."""
        if self.warmup_s is not None:
            return self.warmup_s
        return 0.0 if self.replay or self.bounded else 30.0

    @property
    def duration(self) -> float:
        """duration_s, or its default: 600 s, or no cut for replays and bounded runs."""
        if self.duration_s is not None:
            return self.duration_s
        return float("inf") if self.replay or self.bounded else 600.0

    @model_validator(mode="after")
    def _trace(self):
        if self.kind == "trace" and not self.trace_path:
            raise ValueError("workload.kind 'trace' needs workload.trace_path")
        if self.kind == "replay_log" and not self.log_path:
            raise ValueError("workload.kind 'replay_log' needs workload.log_path")
        if self.client_seed is not None and self.kind not in ("poisson", "gamma"):
            raise ValueError(f"workload.client_seed applies to kind poisson / gamma, not {self.kind!r}")
        if self.max_concurrency is not None and self.kind not in ("poisson", "gamma"):
            where = {"closed_loop": "; a closed loop's users are workload.concurrency",
                     "replay_log": "; a replayed log's own --max-concurrency is read from it"}.get(self.kind, "")
            raise ValueError(f"workload.max_concurrency (--max-concurrency beside --request-rate) applies to kind "
                             f"poisson / gamma, not {self.kind!r}{where}")
        if math.isinf(self.rate) and self.kind not in ("poisson", "gamma"):
            raise ValueError(f"workload.rate .inf (--request-rate inf) applies to kind poisson / gamma, not "
                             f"{self.kind!r}")
        if self.all_at_once and self.max_concurrency is None and self.max_requests is None:
            raise ValueError("workload.rate .inf sends every request at once: give workload.max_requests "
                             "(--num-prompts) or workload.max_concurrency (--max-concurrency)")
        if self.all_at_once and self.client_seed is not None:
            raise ValueError("workload.client_seed draws send times at a finite rate: not with workload.rate .inf")
        if self.warm_prefix_cache and (self.kind not in ("poisson", "gamma") or self.all_at_once):
            raise ValueError("workload.warm_prefix_cache applies to kind poisson / gamma at a finite rate (the "
                             "requests are drawn before the run), not "
                             f"{self.kind!r}{' at rate .inf' if self.all_at_once else ''}")
        if self.warmup >= self.duration:
            raise ValueError("workload.warmup_s must be below workload.duration_s")
        return self


class ParametricSpec(StrictModel):
    kind: Literal["iid", "curve"] = Field("iid", description="i.i.d. per-position rate, or a per-position curve")
    alpha: float = Field(0.8, gt=0, lt=1, description="iid: conditional acceptance rate per position")
    rates: list[float] | None = Field(None, description="curve: conditional rate per position, length max_draft")
    concentration: float | None = Field(
        None, gt=0, description="if set, each request-step draws its rate from Beta(mean, concentration) and the "
                                "drafter's confidence reports it (heterogeneity the prefix scheduler can exploit)")
    confidence_noise: float = Field(0.0, ge=0, description="std of logit noise added to reported confidences")
    output_tokens: int = Field(256, ge=1, description="'recorded' output length for parametric sources")
    draft_probability: float = Field(
        1.0, gt=0, le=1, description="share of request-steps that have a draft (a prompt-lookup proposer such as "
                                     "n-gram finds none otherwise: that request verifies nothing); rates are then "
                                     "conditional on a draft")
    draft_tokens_mean: float | None = Field(
        None, ge=1, description="mean tokens of a draft, if below max_draft (vLLM's n-gram proposer drafts fewer "
                                "than k where its match lies near the end of the context: num_draft_tokens / "
                                "num_drafts); drafts are then floor or ceil of it long and rates conditional on "
                                "the position being drafted; default: every draft max_draft tokens")

    @model_validator(mode="after")
    def _rates(self):
        if self.kind == "curve" and (not self.rates or any(not 0 <= r <= 1 for r in self.rates)):
            raise ValueError("parametric.rates must be a non-empty list of values in [0, 1] for kind 'curve'")
        return self


class AcceptanceSpec(StrictModel):
    source: Literal["run", "traces", "parametric"] = Field(
        "parametric", description="run: this run's traces/ dir; traces: explicit paths; parametric: what-if")
    paths: list[UserPath] = Field(default_factory=list, description="trace files or directories (source: traces)")
    method: str | None = Field(None, description="trace method to replay (default: the only one, or dspark)")
    temperature: float | None = Field(None, ge=0, description="trace temperature to replay (default: lowest)")
    datasets: dict[str, float] | None = Field(None, description="dataset -> mixing weight (default: equal)")
    table: Literal["auto", "anchors", "rounds"] = Field(
        "auto", description="auto: anchors (exact) where recorded, rounds (approximate) otherwise")
    max_draft: int = Field(7, ge=1, le=32, description="gamma: longest verify length a policy may pick")
    assign: Literal["random", "in_order"] = Field(
        "random", description="traces: which recorded prompt a request replays: a random one (weighted by datasets), "
                              "or in_order: request i the i-th prompt (sorted by dataset, prompt_id; a replay_log "
                              "of the very requests the traces recorded)")
    use_calibration: bool = Field(True, description="apply calibration.json (STS) to confidences when present")
    calibration_path: UserPath | None = Field(None, description="default: the run's calibration.json")
    parametric: ParametricSpec = Field(default_factory=ParametricSpec)

    @model_validator(mode="after")
    def _paths(self):
        if self.source == "traces" and not self.paths:
            raise ValueError("acceptance.source 'traces' needs acceptance.paths")
        if self.parametric.kind == "curve" and self.parametric.rates and len(self.parametric.rates) < self.max_draft:
            raise ValueError(f"parametric.rates has {len(self.parametric.rates)} values, max_draft is {self.max_draft}")
        mean = self.parametric.draft_tokens_mean
        if mean is not None and mean > self.max_draft:
            raise ValueError(f"parametric.draft_tokens_mean {mean:g} exceeds max_draft {self.max_draft}")
        return self


class PolicySpec(StrictModel):
    kind: Literal[POLICY_KINDS] = Field(description=f"one of {POLICY_KINDS}")  # type: ignore[valid-type]
    name: Slug | None = Field(None, description="label in results (default: kind, plus k/threshold)")
    k: int | None = Field(None, ge=0, le=32, description="fixed_k: verify length")
    threshold: float | None = Field(None, ge=0, le=1, description="threshold: stop at first confidence below it")
    max_draft: int | None = Field(None, ge=1, le=32, description="cap on verify length (default acceptance.max_draft)")
    method: str | None = Field(None, description="trace method this policy replays (e.g. mtp); default: acceptance's")
    alpha: float | None = Field(None, gt=0, lt=1,
                                description="parametric override of the acceptance rate for this policy (e.g. MTP)")
    drafter_layers: int | None = Field(None, ge=0, le=16, description="this policy's drafter: layers of target width "
                                                                      "(default: sim.model.drafter_layers)")
    drafter_passes: Literal[DRAFTER_PASSES] | None = Field(  # type: ignore[valid-type]
        None, description="this policy's drafter: one | per_token (a chain of k passes, EAGLE / MTP; default: "
                          "sim.model.drafter_passes)")
    drafter_head_vocab: int | None = Field(None, ge=0, le=4_000_000,
                                           description="this policy's drafter: LM-head rows per pass (default: "
                                                       "sim.model.drafter_head_vocab)")
    stale_steps: int = Field(2, ge=0, le=8, description="prefix_async: age of the confidences that set the budget")
    k0_bonus: float = Field(1.1, ge=1, description="smartspec: goodput bonus for k=0")
    ema: float = Field(0.15, gt=0, le=1, description="smartspec: weight of the newest acceptance observation")

    @model_validator(mode="after")
    def _kind_fields(self):
        if self.kind == "fixed_k" and self.k is None:
            raise ValueError("policy kind 'fixed_k' needs k")
        if self.kind == "threshold" and self.threshold is None:
            raise ValueError("policy kind 'threshold' needs threshold")
        return self

    def label(self) -> str:
        if self.name:
            return self.name
        if self.kind == "fixed_k":
            return f"fixed_k{self.k}"
        if self.kind == "threshold":
            return f"threshold{self.threshold:g}"
        if self.kind == "mtp":
            return "mtp1"
        return self.kind


class SweepSpec(StrictModel):
    axis: Literal["concurrency", "rate", "none"] = Field(
        "concurrency", description="what the sweep varies (left out: concurrency for a closed-loop workload, none "
                                   "when it gives workload.concurrency and no sweep.values; for an open-loop one "
                                   "rate when values are given, else none)")
    values: list[float] = Field(default_factory=lambda: [1, 4, 16, 64], description="points on the axis")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1,
                              description="repeats per point (seed offsets)")
    workers: int = Field(0, ge=0, description="worker processes; 0 = all local cores, 1 = in process")
    backend: Literal["process", "ray"] = Field("process", description="ray needs the optional `ray` extra")

    @model_validator(mode="after")
    def _values(self):
        if self.axis != "none" and (not self.values or any(v <= 0 for v in self.values)):
            raise ValueError("sweep.values must be a non-empty list of positive numbers")
        return self


class SlaSpec(StrictModel):
    tok_s_per_user: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [20.0, 40.0, 80.0], description="SLA points: per-user tok/s = 1000 / TPOT_ms")
    percentile: Literal[50, 90, 99] = Field(50,
                              description="TPOT percentile that must meet the SLA (50: median user, 90: P90)")
    ttft_cap_s: float | None = Field(None, gt=0, description="goodput: a request must also meet this TTFT")
    baseline: str = Field("mtp1", description="policy label the gains are reported against")


class CalibrationSpec(StrictModel):
    holdout_frac: float = Field(0.5, gt=0, lt=1, description="prompts held out to evaluate ECE after fitting")
    t_min: float = Field(0.25, gt=0)
    t_max: float = Field(4.0, gt=0)
    grid: int = Field(61, ge=3, description="temperatures tried per position (log-spaced)")
    bins: int = Field(20, ge=2, description="ECE bins")
    table: Literal["auto", "anchors", "rounds"] = "auto"

    @model_validator(mode="after")
    def _range(self):
        if self.t_min >= self.t_max:
            raise ValueError("calibration.t_min must be below t_max")
        return self


class SimSection(StrictModel):
    hardware: HardwareSpec = Field(default_factory=HardwareSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    cost: CostSpec = Field(default_factory=CostSpec)
    replicas: int = Field(1, ge=1, le=4096)
    router: Literal["round_robin", "least_loaded"] = "round_robin"
    engine: EngineSpec = Field(default_factory=EngineSpec)
    frontend: FrontendSpec = Field(default_factory=FrontendSpec)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    acceptance: AcceptanceSpec = Field(default_factory=AcceptanceSpec)
    policies: list[PolicySpec] = Field(default_factory=lambda: [PolicySpec(kind="mtp"), PolicySpec(kind="prefix")],
                                       min_length=1)
    sweep: SweepSpec = Field(default_factory=SweepSpec)
    sla: SlaSpec = Field(default_factory=SlaSpec)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    plots: bool = Field(True, description="write PNG plots under sim/")

    @model_validator(mode="before")
    @classmethod
    def _old_batching_name(cls, data):
        if isinstance(data, dict) and "batching" in data:
            if "engine" in data:
                raise ValueError("give sim.engine only (sim.batching is its old name)")
            data = dict(data)
            old = data.pop("batching") or {}
            data["engine"] = {_BATCHING_KEYS.get(k, k): v for k, v in old.items()} if isinstance(old, dict) else old
        return data

    @model_validator(mode="after")
    def _axis_fits_workload(self):
        if "axis" not in self.sweep.model_fields_set and self.workload.kind != "closed_loop":
            # the default axis (concurrency) belongs to closed-loop users; an open-loop workload left without one
            # runs at its own rate, or sweeps the rate multiplier over the values it gives (at rate .inf, whose
            # rate cannot scale, its users: --max-concurrency)
            given = "values" in self.sweep.model_fields_set
            self.sweep.axis = ("concurrency" if self.workload.all_at_once else "rate") if given else "none"
        if (not {"axis", "values"} & self.sweep.model_fields_set and self.workload.kind == "closed_loop"
                and "concurrency" in self.workload.model_fields_set):
            # a closed loop that names its users (vLLM bench's --max-concurrency) runs at them, not at the default
            # sweep's [1, 4, 16, 64]; sweep.values (or axis) asks for a sweep
            self.sweep.axis = "none"
        if self.sweep.axis == "concurrency" and not self.workload.sweeps_concurrency:
            raise ValueError(f"sweep.axis 'concurrency' has no concurrency to vary in a {self.workload.kind} workload "
                             "without workload.max_concurrency: it varies closed-loop users (kind closed_loop, or "
                             "rate .inf) or vLLM bench's --max-concurrency beside a poisson / gamma rate; sweep "
                             "'rate' (a multiplier of the arrival rate) instead, or set workload.max_concurrency")
        if self.sweep.axis == "rate" and self.workload.kind == "closed_loop":
            raise ValueError("sweep.axis 'rate' needs an open-loop workload (poisson, gamma, trace or replay_log)")
        if self.sweep.axis == "rate" and self.workload.all_at_once:
            raise ValueError("sweep.axis 'rate' cannot scale workload.rate .inf (every request at once)")
        self._users_fit()
        return self

    def _users_fit(self) -> None:
        """Concurrency values are whole numbers (0.5 ran int(0.5) = 0 users: an empty point) and a closed loop's
        users, as many as its requests at most, no more than MAX_USERS."""
        wl, sweep = self.workload, self.sweep
        if sweep.axis == "concurrency":
            fractional = [v for v in sweep.values if v != int(v)]
            if fractional:
                raise ValueError(f"sweep.values {fractional[0]:g}: a concurrency is a whole number of requests")
        if not (wl.kind == "closed_loop" or wl.all_at_once):
            return
        swept = sweep.axis == "concurrency"
        points = [(int(v), "sweep.values") for v in sweep.values] if swept else [
            (wl.users, "workload.concurrency" if wl.kind == "closed_loop" else
             "workload.max_concurrency" if wl.max_concurrency else "workload.max_requests")]
        for users, field in points:
            if min(users, wl.max_requests or users) > MAX_USERS:
                raise ValueError(f"{field}: {users:,} closed-loop users, more than the simulator runs at once "
                                 f"({MAX_USERS:,}, each a request in flight from the start)")

    @model_validator(mode="after")
    def _frontend_streams_without_disaggregation(self):
        if self.frontend.output_token_ms > 0 and self.engine.disaggregated_prefill:
            raise ValueError("sim.frontend.output_token_ms with sim.engine.disaggregated_prefill is not modelled "
                             "(the prefill node's first token bypasses the replica's API server): set one of them")
        return self

    @model_validator(mode="after")
    def _vllm_data_parallel_is_one_group(self):  # before the EP check: the more specific line
        tp, ep, n = self.hardware.tp, self.hardware.ep, self.replicas
        if self.engine.dp_mode == "vllm" and ep not in (1, tp * n):
            raise ValueError(f"sim.hardware.ep {ep} with sim.engine.dp_mode vllm: the {n} replicas are one vLLM "
                             f"server's data-parallel ranks, so ep must be 1 (MoE layers tensor-parallel over "
                             f"{tp * n} GPUs) or tp x replicas = {tp * n} (--enable-expert-parallel)")
        if self.engine.dp_mode == "vllm" and ep == 1 and n > 1 and self.hardware.all2all == "dispatch":
            raise ValueError("sim.hardware.all2all dispatch with sim.engine.dp_mode vllm and hardware.ep 1: vLLM's "
                             "dispatch all2all kernels (pplx / DeepEP) run only with expert parallelism; set all2all "
                             "allgather_reducescatter or naive, or hardware.ep to tp x replicas")
        return self

    @model_validator(mode="after")
    def _expert_parallel_groups_are_whole(self):
        tp, ep = self.hardware.tp, self.hardware.ep
        if ep > 1 and ep % tp:
            raise ValueError(f"sim.hardware.ep {ep} over tp {tp}: vLLM's expert parallelism spans tp x dp GPUs "
                             "(--enable-expert-parallel: ep = tp x data-parallel size), so ep must be 1 or a "
                             "multiple of tp")
        if ep > tp and self.replicas > 1 and (ep % tp or self.replicas % (ep // tp)):
            raise ValueError(f"sim.hardware.ep {ep} over tp {tp} spans {ep / tp:g} data-parallel replicas: ep must "
                             f"be a multiple of tp and sim.replicas ({self.replicas}) a multiple of ep / tp (or 1: "
                             "one rank of the group simulated, the others assumed alike)")
        return self

    @model_validator(mode="after")
    def _spec_profile_needs_a_profile(self):
        if self.cost.spec_profile is not None and self.cost.profile is None:
            raise ValueError("sim.cost.spec_profile prices what speculation adds to the measured profile: "
                             "set sim.cost.profile too")
        return self

    @model_validator(mode="after")
    def _profile_needs_a_device(self):
        if self.cost.profile is not None and not self.hardware.described and self.engine.kv_capacity_tokens is None:
            raise ValueError("sim.cost.profile gives step times but not memory: name the device it was measured on "
                             "(sim.hardware.preset or spec) or set sim.engine.kv_capacity_tokens")
        return self

    @model_validator(mode="after")
    def _unique_labels(self):
        labels = [p.label() for p in self.policies]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"sim.policies labels must be unique, repeated: {dupes} (set name:)")
        return self
