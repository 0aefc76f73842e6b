"""Accelerators as spec sheets: the presets in sim/presets/hardware.yaml and a YAML's own sheet, one schema.

    hw = get_hardware("h100")              # a preset (names: HARDWARE_NAMES, read from the preset file)
    hw = hardware_from_config(sim.hardware)   # preset or own spec, with the section's overrides
    achievable_flops(hw, "bf16"), achievable_attention_flops(hw, "bf16"), achievable_bandwidth(hw)

The schema (HardwareSheet: dense peak TFLOP/s per dtype, memory bandwidth and size, interconnect kind /
bandwidth / latency, achievable fractions mfu, attn_mfu and bw_efficiency, per-step/layer/request overheads) lives in
lab/config_sim.py so that `lab validate` checks a YAML's sheet; this module is what the simulator calls.
"""
from __future__ import annotations

import bisect
import math
import re

from lab.config_sim import HARDWARE_NAMES, HardwareSheet, HardwareSpec, hardware_presets
from lab.errors import LabError

Hardware = HardwareSheet

__all__ = ["HARDWARE_NAMES", "Hardware", "achievable_attention_flops", "achievable_bandwidth", "achievable_flops",
           "engine_with_defaults", "get_hardware", "hardware_from_config", "vllm_serve_batch_defaults"]

# `vllm serve`'s batch defaults by card (vllm/engine/arg_utils.py, usage context OPENAI_API_SERVER, vLLM 0.8 on;
# get_batch_defaults in later versions; PRs 12369, 17073, 17885): a device of at least 70 GiB whose name has no "a100" runs 8192 batched tokens and 1024
# sequences, every other device 2048 and 256 (the A100 exception: larger batches lowered its throughput)
LARGE_CARD_GIB = 70.0


def get_hardware(name: str, mfu: float | None = None, bw_eff: float | None = None) -> Hardware:
    """A preset by name, optionally with other achievable fractions."""
    if name not in HARDWARE_NAMES:
        raise LabError(f"sim.hardware.preset: unknown hardware {name!r}; presets: {list(HARDWARE_NAMES)}")
    hw = Hardware.model_validate(hardware_presets()[name])
    update = {k: v for k, v in (("mfu", mfu), ("bw_efficiency", bw_eff)) if v is not None}
    return hw.model_copy(update=update) if update else hw


def hardware_from_config(section: HardwareSpec) -> Hardware:
    return section.sheet()


# device names as torch / nvidia-smi print them -> presets (the first key found in the lowercased name wins)
# (a key that is a prefix of another card's name comes after that card's: a100 before a10g / a10, l40s before l40 / l4;
# "nvidia a10" / "nvidia a40" so that the RTX A1000 / A4000 workstation cards do not read as them)
DEVICE_NAME_KEYS = (("h200", "h200"), ("h100 pcie", "h100-pcie"), ("h100", "h100"), ("h20", "h20"), ("b200", "b200"),
                    ("a100", "a100-80g"), ("nvidia a10g", "a10g"), ("nvidia a10", "a10"), ("nvidia a40", "a40"), ("rtx a6000", "rtx-a6000"),
                    ("6000 ada", "rtx-6000-ada"), ("l40s", "l40s"), ("nvidia l40", "l40"), ("nvidia l4", "l4"), ("3090", "rtx-3090"),
                    ("4090", "rtx-4090"), ("5090", "rtx-5090"), ("rtx pro 6000", "rtx-pro-6000"), ("mi300x", "mi300x"),
                    ("mi325x", "mi325x"), ("mi355x", "mi355x"))


def preset_for_device(device_name: str) -> str:
    """The preset a measured device name matches ('NVIDIA H100 80GB HBM3' -> h100, 'NVIDIA H100 PCIe' -> h100-pcie;
    a name starting 'cpu' -> cpu), else 'other'. An A100 40GB reads as a100-40g."""
    name = device_name.lower()
    if name.startswith("cpu"):
        return "cpu"
    for key, preset in DEVICE_NAME_KEYS:
        if key in name:
            return "a100-40g" if preset == "a100-80g" and "40gb" in name else preset
    return "other"


def vllm_serve_batch_defaults(hw: Hardware) -> dict[str, int]:
    """max_num_batched_tokens / max_num_seqs `vllm serve` picks on this card (LARGE_CARD_GIB): by the memory
    CUDA reports (the sheet's usable_mem_gib, else mem_gib) and whether its name or description says A100."""
    large = hw.kv_budget_gib >= LARGE_CARD_GIB and "a100" not in f"{hw.name} {hw.description or ''}".lower()
    return {"max_num_batched_tokens": 8192 if large else 2048, "max_num_seqs": 1024 if large else 256}


def engine_with_defaults(engine, hw: Hardware, model=None):
    """The engine section (lab.config_sim) with the max_num_seqs / max_num_batched_tokens / enable_chunked_prefill
    it left null set to what `vllm serve` picks on this card, and with engine.vllm_version every setting it left
    unset to that release's default (sim.vllm_versions.release_defaults; `model`, a sim.models.ModelShape, gives
    a V0 release the context length its defaults follow, and a Gated DeltaNet hybrid its first prefill's autotuning
    on this card, sim.linear_attn.first_prefill_autotune_s)."""
    from sim.vllm_versions import release_defaults

    from sim.linear_attn import first_prefill_autotune_s

    missing = release_defaults(engine, vllm_serve_batch_defaults(hw), model, vllm_platform(hw))
    if "linear_attn_autotune_s" not in engine.model_fields_set and model is not None:
        autotune = first_prefill_autotune_s(engine.vllm_version, hw.name, bool(model.linear_layers))
        if autotune:  # the release's first prefill autotunes FLA's kernels on this card
            missing["linear_attn_autotune_s"] = autotune
    return engine.model_copy(update=missing) if missing else engine


def vllm_platform(hw: Hardware) -> str:
    """The platform vLLM would see on this card: cpu (the cpu preset, a sheet named cpu...), rocm (AMD Instinct:
    its name or description says AMD, Instinct or MI<digits>), else cuda."""
    name, text = hw.name.lower(), f"{hw.name} {hw.description or ''}".lower()
    if name.startswith("cpu"):
        return "cpu"
    return "rocm" if re.search(r"\bamd\b|instinct|\bmi\d{3}", text) else "cuda"


def achievable_flops(hw: Hardware, dtype: str) -> float:
    """FLOP/s one device sustains for `dtype` matmuls: mfu x the sheet's dense peak."""
    return hw.peak_for(dtype) * 1e12 * hw.mfu


def dense_gemm_points(hw: Hardware) -> tuple[list[float], list[float]]:
    """(log M, fraction) of the sheet's dense_gemm_mfu points in M order; ([], []) without them (mfu at every M)."""
    points = sorted((hw.dense_gemm_mfu or {}).items())
    return [math.log(m) for m, _ in points], [f for _, f in points]


def dense_gemm_fraction(log_rows: list[float], fractions: list[float], mfu: float, rows: float) -> float:
    """The dense linears' achievable fraction of peak at a GEMM of `rows` rows: dense_gemm_points interpolated
    linearly in log rows, flat outside them; `mfu` without points."""
    if not fractions:
        return mfu
    x = math.log(max(rows, 1.0))
    i = bisect.bisect_right(log_rows, x)
    if i == 0:
        return fractions[0]
    if i == len(log_rows):
        return fractions[-1]
    w = (x - log_rows[i - 1]) / (log_rows[i] - log_rows[i - 1])
    return fractions[i - 1] + w * (fractions[i] - fractions[i - 1])


def achievable_attention_flops(hw: Hardware, dtype: str) -> float:
    """FLOP/s one device sustains for attention's score FLOPs in `dtype`: attn_mfu x the sheet's dense peak (the
    FlashAttention kernel's own fraction, sim.attention_kernels), or mfu x peak where the sheet gives none."""
    return hw.peak_for(dtype) * 1e12 * (hw.mfu if hw.attn_mfu is None else hw.attn_mfu)


def achievable_bandwidth(hw: Hardware) -> float:
    """Bytes/s one device streams from memory: bw_efficiency x the sheet's peak."""
    return hw.mem_bw_tbs * 1e12 * hw.bw_efficiency
