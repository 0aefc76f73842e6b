"""Quantized checkpoints: what a config.json's `quantization_config` says about weight bytes and matmul precision.

    scheme = quant_scheme(cfg["quantization_config"], where="path/config.json", activation_dtype="bf16")
    scheme.weight_bits            # bits per quantized weight, scales and zero points included (AWQ 4-bit g128: 4.25)
    scheme.matmul_dtype           # the peak the matmuls run at: "bf16" (weight-only), "fp8", "int8" or "fp4"
    scheme.quantizes("experts")   # which module classes are stored quantized

The simulator prices a step by the bytes of weights it reads and the FLOPs of its matmuls (sim/cost.py); a 4-bit
checkpoint of a 32B model reads a quarter of the bf16 bytes per decode step. sim/models.from_hf_config splits a
model's parameters into module classes (MODULE_CLASSES: attention, the dense MLP, routed and shared experts, the
LM head; input embeddings and norms are never quantized: a row lookup and vectors) and stores the classes this
scheme quantizes at `weight_bits`, the rest at the activation dtype.

Methods read (vLLM's names; `*_marlin` aliases are the same formats):
- awq / gptq: `bits` (AWQ: w_bit) weights with an fp16 scale and a `bits`-wide zero point per `group_size`
  (-1: one per output channel, ~0 overhead); weight-only: matmuls at the activation dtype (Marlin dequantizes).
- fp8 (DeepSeek-V3, Qwen3-*-FP8): 8-bit weights, block scales (fp32 per weight_block_size block); w8a8: fp8 peak.
- compressed-tensors (llm-compressor): the first config group's `weights` (num_bits, type, group_size, strategy,
  symmetric) and `input_activations` (null: weight-only; 8-bit float: fp8; 8-bit int: int8; 4-bit float: fp4);
  modules in `ignore` stay unquantized; the LM head is quantized unless ignored (llm-compressor targets Linear).
- mxfp4 (gpt-oss): 4-bit e2m1 with an 8-bit scale per 32 weights (4.25 bits); weight-only here (Hopper and
  older run it through Marlin / Triton kernels at the activation dtype).
- modelopt (NVIDIA ModelOpt): quant_algo FP8 (w8a8 fp8) or NVFP4 (4 bits + an fp8 scale per 16: 4.5 bits, w4a4
  fp4); modules in `exclude_modules` stay unquantized.
- bitsandbytes: load_in_4bit (NF4/FP4, an fp32 absmax per 64 weights, or 8-bit with double quantisation) or
  load_in_8bit (LLM.int8: an fp32 scale per row, ~8 bits); weight-only.
- fbgemm_fp8 (Meta's Llama-3.1-405B-FP8): fp8 weights, per-token dynamic fp8 activations: as fp8.
- quark (AMD Quark exports): global_quant_config's `weight` dtype (fp8_e4m3 / e5m2, int8 / uint8, int4 / uint4
  with its group_size, OCP MX fp4: 4 bits + an 8-bit scale per 32) and `input_tensors` dtype (fp8, int8 or fp4
  matmuls; none: weight-only); modules in `exclude` stay unquantized.
An unknown method is an error (pricing its weights as bf16 would be wrong by 2-4x); `sim.model.dtype` set in the
YAML prices every weight at that one precision instead.

Which module classes a `modules_to_not_convert` / `ignore` / `exclude_modules` list removes is read from each
entry's name: "lm_head", "embed", "shared_expert", "experts", "attn" / "attention", a whole "mlp" (dense MLP,
experts and shared experts); routers ("gate", "router") are never quantized here anyway; entries naming one
layer's index or one projection (q_proj, down_proj, ...) are partial and not modelled (a few layers at 16 bits
change a model's bytes by a few percent), nor are vision towers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lab.errors import LabError

MODULE_CLASSES = ("attention", "mlp", "experts", "shared_experts", "lm_head")
WEIGHT_ONLY = None  # matmul_dtype of a weight-only scheme: the activation dtype
W8A8_DTYPES = ("fp8", "int8")  # matmul dtypes of w8a8 schemes (8-bit weights and activations; fp4 is w4a4)
METHODS = ("awq", "gptq", "fp8", "compressed-tensors", "mxfp4", "modelopt", "bitsandbytes", "quark")
ALIASES = {"awq_marlin": "awq", "gptq_marlin": "gptq", "marlin": "gptq", "compressed_tensors": "compressed-tensors",
           "modelopt_fp4": "modelopt", "bnb": "bitsandbytes", "fbgemm_fp8": "fp8"}
_PARTIAL = re.compile(r"layers\.\d|_proj\b|\.(w1|w2|w3)\b|visual|vision|mm_projector|multi_modal")


@dataclass(frozen=True)
class QuantScheme:
    method: str
    weight_bits: float  # bits per quantized weight, scale / zero-point overhead included
    matmul_dtype: str | None  # peak the quantized matmuls run at; None: the activation dtype (weight-only)
    excluded: frozenset = frozenset()  # MODULE_CLASSES stored unquantized

    def quantizes(self, module_class: str) -> bool:
        return module_class not in self.excluded


def excluded_classes(names, where: str, default: tuple = ("lm_head",)) -> frozenset:
    """Module classes (MODULE_CLASSES) a not-converted / ignore list keeps unquantized, plus `default`."""
    if names is None:
        names = []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise LabError(f"{where}: the list of modules not quantized must be a list of module names")
    out = set(default)
    for name in names:
        low = name.lower()
        if _PARTIAL.search(low) or re.search(r"(gate|router)\W*$", low):  # one layer / projection; a router or
            continue  # gate (mlp.gate, shared_expert_gate): never quantized here anyway
        if "lm_head" in low:
            out.add("lm_head")
        elif "shared_expert" in low:
            out.add("shared_experts")
        elif "expert" in low:
            out.add("experts")
        elif "attn" in low or "attention" in low:
            out.add("attention")
        elif re.search(r"(^|[.:*])mlp([.$*]|$)", low) and not re.search(r"gate|router", low):
            out.update(("mlp", "experts", "shared_experts"))
    return frozenset(out)


def _number(qc: dict, keys: tuple, default, where: str, kind=int):
    for key in keys:
        if key in qc and qc[key] is not None:
            value = qc[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LabError(f"{where}: quantization_config {key!r} must be a number, not {value!r}")
            return kind(value)
    return default


def _group_overhead(group_size: int, scale_bits: float, zero_bits: float) -> float:
    """Bits per weight its group's scale and zero point add (group_size <= 0: per channel, ~0)."""
    return (scale_bits + zero_bits) / group_size if group_size > 0 else 0.0


def _int_group(qc: dict, where: str, default_group: int = 128) -> tuple[int, int]:
    bits = _number(qc, ("bits", "w_bit"), 4, where)
    group = _number(qc, ("group_size", "q_group_size"), default_group, where)
    if bits not in (2, 3, 4, 8):
        raise LabError(f"{where}: quantization_config bits {bits} is not 2, 3, 4 or 8")
    return bits, group


def _compressed_tensors(qc: dict, where: str) -> QuantScheme:
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise LabError(f"{where}: compressed-tensors quantization_config has no config_groups")
    group = next(iter(groups.values()))
    weights = group.get("weights") if isinstance(group, dict) else None
    if not isinstance(weights, dict):
        raise LabError(f"{where}: compressed-tensors config group has no `weights` scheme")
    bits = _number(weights, ("num_bits",), 8, where)
    kind = str(weights.get("type", "int"))
    size = _number(weights, ("group_size",), 0, where) if weights.get("strategy") in ("group", "tensor_group") else 0
    if kind == "float":
        scale_bits = 8 if bits == 4 else 32  # NVFP4: an fp8 scale per 16; fp8: per-channel / per-tensor fp32
        overhead = _group_overhead(size, scale_bits, 0)
    else:
        zero = 0 if weights.get("symmetric", True) else bits
        overhead = _group_overhead(size, 16, zero)
    acts = group.get("input_activations")
    if isinstance(acts, dict) and acts.get("num_bits") is not None:
        a_bits, a_kind = _number(acts, ("num_bits",), 16, where), str(acts.get("type", "int"))
        matmul = {(8, "float"): "fp8", (8, "int"): "int8", (4, "float"): "fp4"}.get((a_bits, a_kind), WEIGHT_ONLY)
    else:
        matmul = WEIGHT_ONLY
    return QuantScheme("compressed-tensors", bits + overhead, matmul,
                       excluded_classes(qc.get("ignore"), where, default=()))


def _quark(qc: dict, where: str) -> QuantScheme:
    glob = qc.get("global_quant_config")
    weight = glob.get("weight") if isinstance(glob, dict) else None
    if isinstance(weight, list):  # several weight quantizers (e.g. a double-quantised scale): the first
        weight = weight[0] if weight else None
    if not isinstance(weight, dict) or not isinstance(weight.get("dtype"), str):
        raise LabError(f"{where}: quark quantization_config has no global_quant_config.weight.dtype")
    dtype = weight["dtype"].lower()
    group = _number(weight, ("group_size",), 0, where)
    if dtype.startswith("fp8"):
        bits = 8.0
    elif dtype in ("int8", "uint8"):
        bits = 8.0 + _group_overhead(group, 16, 8 if dtype == "uint8" else 0)
    elif dtype in ("int4", "uint4"):
        bits = 4.0 + _group_overhead(group, 16, 4 if dtype == "uint4" else 0)
    elif dtype in ("fp4", "mx_fp4", "mxfp4", "fp4_e2m1"):
        bits = 4.0 + _group_overhead(group or 32, 8, 0)
    else:
        raise LabError(f"{where}: quark weight dtype {dtype!r} is not one the simulator reads "
                       "(fp8_e4m3, fp8_e5m2, int8, uint8, int4, uint4, fp4)")
    acts = glob.get("input_tensors")
    if isinstance(acts, list):
        acts = acts[0] if acts else None
    act = str(acts.get("dtype", "")).lower() if isinstance(acts, dict) else ""
    matmul = "fp8" if act.startswith("fp8") else "int8" if act in ("int8", "uint8") else \
        "fp4" if "fp4" in act else WEIGHT_ONLY
    return QuantScheme("quark", bits, matmul, excluded_classes(qc.get("exclude"), where, default=()))


def quant_scheme(qc, where: str) -> QuantScheme | None:
    """The scheme of a config.json's quantization_config (None: absent or empty)."""
    if not qc:
        return None
    if not isinstance(qc, dict):
        raise LabError(f"{where}: quantization_config must be a JSON object")
    raw = str(qc.get("quant_method") or ("bitsandbytes" if qc.get("load_in_4bit") or qc.get("load_in_8bit")
                                         else "")).lower()
    method = ALIASES.get(raw, raw)
    not_converted = qc.get("modules_to_not_convert")
    if method in ("awq", "gptq"):
        bits, group = _int_group(qc, where)
        zero = bits if qc.get("zero_point", True) and not qc.get("sym", False) else 0
        return QuantScheme(method, bits + _group_overhead(group, 16, zero), WEIGHT_ONLY,
                           excluded_classes(not_converted, where))
    if method == "fp8":
        block = qc.get("weight_block_size")
        overhead = 32 / (block[0] * block[1]) if isinstance(block, list) and len(block) == 2 \
            and all(isinstance(b, int) and b > 0 for b in block) else 0.0
        return QuantScheme("fp8", 8 + overhead, "fp8",
                           excluded_classes(not_converted or qc.get("ignored_layers"), where))
    if method == "compressed-tensors":
        return _compressed_tensors(qc, where)
    if method == "mxfp4":
        return QuantScheme("mxfp4", 4 + 8 / 32, WEIGHT_ONLY, excluded_classes(not_converted, where))
    if method == "modelopt":
        algo = str(qc.get("quant_algo") or (qc.get("quantization") or {}).get("quant_algo", "")).upper()
        excluded = excluded_classes(qc.get("exclude_modules") or (qc.get("quantization") or {}).get("exclude_modules"),
                                    where, default=())
        if algo == "FP8":
            return QuantScheme("modelopt", 8.0, "fp8", excluded)
        if algo == "NVFP4":
            group = _number(qc, ("group_size",), 16, where)
            return QuantScheme("modelopt", 4 + _group_overhead(group, 8, 0), "fp4", excluded)
        raise LabError(f"{where}: modelopt quant_algo {algo or None!r} is not FP8 or NVFP4")
    if method == "bitsandbytes":
        if qc.get("load_in_8bit"):
            return QuantScheme("bitsandbytes", 8.0, WEIGHT_ONLY, excluded_classes(qc.get("llm_int8_skip_modules"), where))
        overhead = 8 / 64 + 32 / (64 * 256) if qc.get("bnb_4bit_use_double_quant") else 32 / 64
        return QuantScheme("bitsandbytes", 4 + overhead, WEIGHT_ONLY,
                           excluded_classes(qc.get("llm_int8_skip_modules"), where))
    if method == "quark":
        return _quark(qc, where)
    raise LabError(f"{where}: quantization_config quant_method {raw or None!r} is not one the simulator reads "
                   f"({', '.join(METHODS)}); set sim.model.dtype to price every weight at one precision")
