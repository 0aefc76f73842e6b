"""Quantized checkpoints (sim/quant.py, sim/models.py): weight bytes per module class, matmul precision.

    python -m pytest -q tests/sim/test_quant.py
"""
import json
from pathlib import Path

import pytest

from lab.errors import LabError
from sim.cost import CostModel
from sim.hardware import achievable_bandwidth, get_hardware
from sim.models import from_hf_config, model_from_config
from sim.quant import excluded_classes, quant_scheme

REPO = Path(__file__).resolve().parents[2]
QWEN3_32B = REPO / "real/presets/qwen3-32b.json"
GPT_OSS_20B = REPO / "sim/validation/configs/gpt-oss-20b.json"


def with_quant(tmp_path, base: Path, quantization_config: dict, name="quantized") -> Path:
    cfg = json.loads(base.read_text())
    cfg["quantization_config"] = quantization_config
    path = tmp_path / name / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(cfg))
    return path


def test_gpt_oss_20b_mxfp4_quantizes_only_its_experts():
    m = from_hf_config(GPT_OSS_20B)
    assert m.params_b == pytest.approx(20.9, abs=0.1) and m.active_params_b == pytest.approx(3.6, abs=0.05)
    assert (m.quant_method, m.quant_bits, m.quant_experts, m.matmul_dtype) == ("mxfp4", 4.25, True, None)
    assert m.quant_dense_params_b == 0.0  # attention, router, embeddings and LM head not converted
    experts = m.expert_params_b * 1e9
    assert m.weight_bytes == pytest.approx(experts * 4.25 / 8 + (m.params_b * 1e9 - experts) * 2)
    # the published checkpoint (openai/gpt-oss-20b safetensors) is 13.8 GB; biases are not counted here
    assert m.weight_bytes / 1e9 == pytest.approx(13.8, rel=0.02)
    assert m.sliding_layers == 12 and m.sliding_window == 128


def test_awq_4bit_reads_about_a_quarter_of_the_bf16_bytes(tmp_path):
    dense = from_hf_config(QWEN3_32B)
    awq = from_hf_config(with_quant(tmp_path, QWEN3_32B, {"bits": 4, "group_size": 128, "quant_method": "awq",
                                                           "version": "gemm", "zero_point": True}))
    bits = 4 + (16 + 4) / 128  # an fp16 scale and a 4-bit zero per 128 weights
    assert awq.quant_bits == pytest.approx(bits) and awq.matmul_dtype is None and awq.dtype == "bf16"
    embeddings = 2 * 151936 * 5120  # untied input embedding + LM head stay bf16
    linear = dense.params_b * 1e9 - embeddings - (64 * 2 + 1) * 5120  # minus the RMSNorm vectors
    assert awq.quant_dense_params_b * 1e9 == pytest.approx(linear, rel=1e-6)
    assert awq.weight_bytes == pytest.approx(dense.weight_bytes - linear * (2 - bits / 8), rel=1e-6)
    assert 19.0 < awq.weight_bytes / 1e9 < 19.6  # 31.2B linear weights at 4.16 bits + 1.56B bf16 embeddings
    assert dense.weight_bytes / 1e9 == pytest.approx(65.53, abs=0.02)  # bartowski/Qwen_Qwen3-32B-GGUF bf16 file: 65.53 GB
    h100 = get_hardware("h100")
    one_bf16, one_awq = CostModel(h100, dense).step_time(1, 0, 1, False), CostModel(h100, awq).step_time(1, 0, 1, False)
    saved = (dense.active_weight_bytes - awq.active_weight_bytes) / achievable_bandwidth(h100)
    assert one_bf16 - one_awq == pytest.approx(saved, rel=1e-6)  # a decode step: the weight reads it saves
    assert one_awq < 0.35 * one_bf16
    # weight-only: a compute-bound prefill costs what the bf16 model's does at Marlin's own rate -- the bf16 rate on a
    # sheet without marlin_efficiency, 1 / 0.922 of it on the H100's (its quantized linears; the LM head stays bf16)
    bf16_rate = h100.model_copy(update={"marlin_efficiency": None})
    big_bf16, big_awq = CostModel(h100, dense).step_time(8192, 0, 1, False), CostModel(bf16_rate, awq).step_time(8192, 0, 1, False)
    assert big_awq == pytest.approx(big_bf16, rel=0.02)
    marlin_awq = CostModel(h100, awq).step_time(8192, 0, 1, False)
    assert h100.marlin_efficiency == pytest.approx(0.922)
    assert big_awq * 1.04 < marlin_awq < big_awq / h100.marlin_efficiency


def test_fp8_w8a8_runs_at_the_fp8_peak_only_where_the_card_has_one(tmp_path):
    fp8 = from_hf_config(with_quant(tmp_path, QWEN3_32B, {
        "quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
        "config_groups": {"group_0": {"targets": ["Linear"],
                                      "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
                                      "input_activations": {"num_bits": 8, "type": "float", "dynamic": True}}}}))
    dense = from_hf_config(QWEN3_32B)
    assert (fp8.quant_bits, fp8.matmul_dtype) == (8.0, "fp8")
    h100, a100 = get_hardware("h100"), get_hardware("a100-80g")
    prefill = (8192, 0, 1, False)
    ideal = h100.model_copy(update={"lowp_matmul_efficiency": {}, "act_quant_us": 0.0})  # 2x the bf16 peak, no quant
    assert CostModel(ideal, fp8).step_time(*prefill) == pytest.approx(CostModel(h100, dense).step_time(*prefill) / 2,
                                                                      rel=0.05)
    # as served: fp8 GEMMs reach lowp_matmul_efficiency of that fraction, and each quantized linear's input is
    # quantized on the fly (64 layers x qkv, o, gate_up, down; the LM head is left out)
    assert fp8.quant_linears == 64 * 4
    served = CostModel(h100, fp8).step_time(*prefill)
    assert served == pytest.approx(CostModel(ideal, fp8).step_time(*prefill) / h100.lowp_matmul_efficiency["fp8"]
                                   + 256 * h100.act_quant_us * 1e-6, rel=0.02)
    # the A100 has no fp8 tensor cores: vLLM runs fp8 weights through Marlin, bf16 math at marlin_efficiency of a
    # bf16 GEMM's rate (0.61 on the a100 presets, Marlin's published A100 table; 1: exactly the bf16 model's step)
    bf16_rate = a100.model_copy(update={"marlin_efficiency": None})
    dense_t = CostModel(a100, dense).step_time(*prefill)
    assert CostModel(bf16_rate, fp8).step_time(*prefill) == pytest.approx(dense_t, rel=0.02)
    assert CostModel(a100, fp8).step_time(*prefill) == pytest.approx(dense_t / a100.marlin_efficiency, rel=0.05)


def test_nvfp4_and_bitsandbytes_bits():
    nvfp4 = quant_scheme({"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
                          "exclude_modules": ["lm_head"]}, "x")
    assert (nvfp4.weight_bits, nvfp4.matmul_dtype, nvfp4.quantizes("lm_head")) == (4.5, "fp4", False)
    nf4 = quant_scheme({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}, "x")
    assert nf4.method == "bitsandbytes" and nf4.weight_bits == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert quant_scheme({"quant_method": "gptq_marlin", "bits": 8, "group_size": -1, "sym": True}, "x").weight_bits == 8
    assert quant_scheme({}, "x") is None and quant_scheme(None, "x") is None


def test_not_converted_names_map_to_module_classes():
    names = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head",
             "re:.*mlp.gate$", "model.layers.0.mlp.down_proj", "visual.blocks"]
    assert excluded_classes(names, "x", default=()) == {"attention", "lm_head"}
    assert excluded_classes(["model.layers.*.mlp"], "x", default=()) == {"mlp", "experts", "shared_experts"}
    assert excluded_classes(["shared_expert"], "x", default=()) == {"shared_experts"}
    # gates are not the modules they sit beside (Qwen3-Next-FP8 lists mlp.gate and mlp.shared_expert_gate)
    assert excluded_classes(["mlp.shared_expert_gate", "mlp.gate", "re:.*router$"], "x", default=()) == set()
    with pytest.raises(LabError, match="list of module names"):
        excluded_classes("lm_head", "x")


def test_unknown_method_is_one_clear_error(tmp_path):
    path = with_quant(tmp_path, QWEN3_32B, {"quant_method": "hqq", "nbits": 4})
    with pytest.raises(LabError, match=r"config\.json.*quant_method 'hqq' is not one the simulator reads"):
        from_hf_config(path)


def test_unknown_method_fails_at_validation_and_dtype_overrides_it(tmp_path):
    from lab.config_sim import ModelSpec

    path = with_quant(tmp_path, QWEN3_32B, {"quant_method": "hqq"})
    with pytest.raises(ValueError, match="hqq"):
        ModelSpec.model_validate({"config": str(path)})
    spec = ModelSpec.model_validate({"config": str(path), "dtype": "fp8"})
    m = model_from_config(spec)  # every weight fp8: the checkpoint's scheme is set aside
    assert (m.dtype, m.quant_bits, m.matmul_dtype) == ("fp8", None, None)
    assert m.weight_bytes == pytest.approx(m.params_b * 1e9)


def test_dtype_override_sets_the_quantization_aside(tmp_path):
    from lab.config_sim import ModelSpec

    path = with_quant(tmp_path, QWEN3_32B, {"bits": 4, "group_size": 128, "quant_method": "awq"})
    quantized = model_from_config(ModelSpec.model_validate({"config": str(path)}))
    plain = model_from_config(ModelSpec.model_validate({"config": str(path), "dtype": "bf16"}))
    assert quantized.quant_method == "awq" and plain.quant_method is None
    assert plain.weight_bytes == pytest.approx(from_hf_config(QWEN3_32B).weight_bytes)


def test_quark_and_fbgemm_fp8_exports():
    fp8 = quant_scheme({"quant_method": "quark", "exclude": ["lm_head"], "global_quant_config": {
        "weight": {"dtype": "fp8_e4m3", "qscheme": "per_tensor"}, "input_tensors": {"dtype": "fp8_e4m3"}}}, "x")
    assert (fp8.method, fp8.weight_bits, fp8.matmul_dtype, fp8.quantizes("lm_head")) == ("quark", 8.0, "fp8", False)
    w4 = quant_scheme({"quant_method": "quark", "global_quant_config": {
        "weight": {"dtype": "uint4", "qscheme": "per_group", "group_size": 128}, "input_tensors": None}}, "x")
    assert w4.weight_bits == pytest.approx(4 + 20 / 128) and w4.matmul_dtype is None
    mx = quant_scheme({"quant_method": "quark", "global_quant_config": {
        "weight": {"dtype": "fp4", "group_size": 32}, "input_tensors": {"dtype": "fp4"}}}, "x")
    assert (mx.weight_bits, mx.matmul_dtype) == (4.25, "fp4")
    meta = quant_scheme({"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                         "modules_to_not_convert": ["lm_head"]}, "x")
    assert (meta.method, meta.weight_bits, meta.matmul_dtype) == ("fp8", 8.0, "fp8")
    with pytest.raises(LabError, match="quark weight dtype 'bf8'"):
        quant_scheme({"quant_method": "quark", "global_quant_config": {"weight": {"dtype": "bf8"}}}, "x")
    with pytest.raises(LabError, match="no global_quant_config.weight.dtype"):
        quant_scheme({"quant_method": "quark"}, "x")


@pytest.mark.parametrize("name", ["qwen3-30b-a3b", "qwen3-235b-a22b-instruct-2507"])
def test_qwen3_moe_fp8_configs_are_the_bf16_shape_with_block_fp8(name):
    """The held-out Qwen3-MoE FP8 rows' configs (sim/validation/configs/*-fp8.json): the bf16 file's architecture
    keys plus Qwen's fp8 form (e4m3, dynamic activations, 128 x 128 weight blocks): same parameters, every linear
    -- the experts too -- at 8 bits + block scales, matmuls at the fp8 peak."""
    base = from_hf_config(REPO / f"sim/validation/configs/{name}.json")
    fp8 = from_hf_config(REPO / f"sim/validation/configs/{name}-fp8.json")
    assert (fp8.params_b, fp8.active_params_b) == (base.params_b, base.active_params_b)
    assert (fp8.quant_method, fp8.quant_experts, fp8.matmul_dtype) == ("fp8", True, "fp8")
    assert fp8.quant_bits == pytest.approx(8 + 32 / 128**2)  # one fp32 scale per 128 x 128 block
    assert fp8.weight_bytes == pytest.approx(base.weight_bytes / 2, rel=0.03)  # embeddings / LM head stay bf16
