"""Hardware from a spec sheet and models from a config.json: presets, own specs, validation at `lab validate`."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from lab.config import config_from_dict
from lab.config_sim import HARDWARE_NAMES, MODEL_NAMES, PRESETS_DIR, HardwareSheet
from lab.errors import LabError
from sim.cost import CostModel
from sim.hardware import get_hardware
from sim.models import MODELS, from_hf_config, get_model
from tests.sim.conftest import make_sim

DATA = __import__("pathlib").Path(__file__).parent / "data"
NEW_CARDS = ("rtx-4090", "l40s", "rtx-pro-6000", "rtx-5090", "h20", "mi300x", "h100-pcie", "mi325x", "mi355x")
# session 31 (issue 9, "hardware from a spec sheet"): cloud / workstation cards with no public row fitted on them
SPEC_SHEET_CARDS = ("l4", "a10", "a10g", "rtx-3090", "rtx-a6000", "a40", "l40", "rtx-6000-ada")


def experiment(sim: dict) -> dict:
    return {"name": "hw", "stages": ["sim"], "sim": {"acceptance": {"source": "parametric"}, **sim}}


def test_every_preset_is_a_valid_sheet_with_cited_sources():
    raw = yaml.safe_load((PRESETS_DIR / "hardware.yaml").read_text())
    assert tuple(raw) == HARDWARE_NAMES and set(NEW_CARDS) <= set(HARDWARE_NAMES)
    for name in HARDWARE_NAMES:
        sheet = get_hardware(name)
        assert sheet.name == name and sheet.peak_tflops and sheet.mem_gib > 0
        if name != "cpu":
            assert sheet.sources and all(s.startswith("https://") for s in sheet.sources), name
    assert get_hardware("rtx-4090").interconnect.kind == "pcie"
    assert get_hardware("h100").interconnect.kind == "nvlink"


def test_every_gpu_preset_cites_its_sheet_and_says_what_it_is():
    """Each GPU preset: at least one https source, no source twice, a description, a dense bf16 (or fp16) peak and the
    memory it is sold with; usable_mem_gib, where given, a little below it (ECC / driver reservation: within 10%)."""
    for name in HARDWARE_NAMES:
        if name == "cpu":
            continue
        sheet = get_hardware(name)
        assert sheet.description and sheet.sources and len(set(sheet.sources)) == len(sheet.sources), name
        assert all(s.startswith("https://") for s in sheet.sources) and sheet.has_peak("bf16"), name
        if sheet.usable_mem_gib is not None:
            assert 0.9 * sheet.mem_gib < sheet.usable_mem_gib <= sheet.mem_gib, name


def test_spec_sheet_cards_are_their_sheets_with_the_fractions_they_carry_over():
    """Session 31: dense = half the sheets' sparse numbers (L4 BF16 242* / FP8 485*, A10 BF16 250*, RTX A6000 309.7*,
    A40 299.4*, L40 362.1* / FP8 724*, RTX 6000 Ada FP8 1,457*); the RTX 3090 at its FP32-accumulate rate (71);
    Ampere (GA102) sheets have no fp8 peak, Ada ones do; none has a fitted fraction (the L40S's GPU defaults, not
    the RTX 4090's 0.55 / 0.85); the GeForce RTX 3090 takes the RTX 4090's no-P2P NCCL link, the others PCIe 4.0 as
    the L40S; and torch / nvidia-smi device names map to them."""
    from sim.hardware import preset_for_device

    cards = {n: get_hardware(n) for n in SPEC_SHEET_CARDS}
    assert set(SPEC_SHEET_CARDS) <= set(HARDWARE_NAMES)
    assert cards["l4"].peak_tflops == {"bf16": 242 / 2, "fp8": 485 / 2, "int8": 485 / 2}
    assert cards["a10"].peak_tflops["bf16"] == 250 / 2 and cards["rtx-a6000"].peak_tflops["bf16"] == 154.8
    assert cards["a40"].peak_tflops["bf16"] == 149.7 and cards["rtx-3090"].peak_tflops["bf16"] == 71
    assert cards["l40"].peak_tflops == {"bf16": 362.1 / 2, "fp8": 724 / 2, "int8": 724 / 2}
    assert cards["rtx-6000-ada"].peak_tflops == {"bf16": 1457 / 4, "fp8": 1457 / 2}
    assert [c.mem_bw_tbs for c in cards.values()] == [0.3, 0.6, 0.6, 0.936, 0.768, 0.696, 0.864, 0.96]
    ampere, ada = ("a10", "a10g", "rtx-3090", "rtx-a6000", "a40"), ("l4", "l40", "rtx-6000-ada")
    assert not any(cards[n].has_peak("fp8") for n in ampere) and all(cards[n].has_peak("fp8") for n in ada)
    l40s, rtx4090 = get_hardware("l40s"), get_hardware("rtx-4090")
    for name, card in cards.items():
        assert (card.mfu, card.bw_efficiency, card.attn_mfu, card.marlin_efficiency) == (
            l40s.mfu, l40s.bw_efficiency, None, None), name
        assert card.interconnect == (rtx4090 if name == "rtx-3090" else l40s).interconnect, name
    assert (rtx4090.mfu, rtx4090.bw_efficiency) != (l40s.mfu, l40s.bw_efficiency)
    assert cards["l40"].l2_mib == cards["rtx-6000-ada"].l2_mib == l40s.l2_mib == 96 and cards["a40"].l2_mib == 6
    names = {"NVIDIA L4": "l4", "NVIDIA L40": "l40", "NVIDIA L40S": "l40s", "NVIDIA A10G": "a10g", "NVIDIA A10": "a10",
             "NVIDIA A100-SXM4-80GB": "a100-80g", "NVIDIA A40": "a40", "NVIDIA RTX A6000": "rtx-a6000",
             "NVIDIA RTX 6000 Ada Generation": "rtx-6000-ada", "NVIDIA GeForce RTX 3090": "rtx-3090",
             "NVIDIA RTX A4000": "other"}
    assert {n: preset_for_device(n) for n in names} == names


def test_amd_instinct_fractions_come_from_amds_kernel_measurements():
    """mi300x / mi325x / mi355x (session 31): dense peaks of the sheets (MI355X: 256 CUs x 2.4 GHz x 4,096 / 8,192 /
    16,384 FLOPs per CU and clock), attn_mfu = aiter's own fwd_v3 tables' fit (the MI325X takes the MI300X's: same
    gfx942 die), bw_efficiency = AMD's measured HBM roofline (3,910.62 / 4,287.31 / 5,690.42 GB/s) x the GH100 cards'
    serving-over-measured stream ratio (0.75 / 0.865), mfu = the bf16 MAMF fraction x the H100's serving-over-MAMF
    ratio; ROCm device names map to them."""
    from sim.hardware import preset_for_device

    mi300x, mi325x, mi355x = (get_hardware(n) for n in ("mi300x", "mi325x", "mi355x"))
    assert mi325x.peak_tflops == mi300x.peak_tflops == {"bf16": 1307.4, "fp8": 2614.9}
    assert mi355x.peak_tflops == pytest.approx({k: 256 * 2.4e9 * f / 1e12 for k, f in
                                                (("bf16", 4096), ("fp8", 8192), ("fp4", 16384))}, abs=0.1)
    assert [c.mem_bw_tbs for c in (mi300x, mi325x, mi355x)] == [5.3, 6.0, 8.0]
    assert [c.mem_gib for c in (mi300x, mi325x, mi355x)] == [192, 256, 288]
    ratio = 0.75 / 0.865
    for card, hbm_gbs in ((mi300x, 3910.62), (mi325x, 4287.31), (mi355x, 5690.42)):
        assert card.bw_efficiency == pytest.approx(ratio * hbm_gbs / 1000 / card.mem_bw_tbs, abs=0.006), card.name
        assert card.interconnect.kind == "infinity_fabric", card.name
    # bf16 MAMF (TFLOP/s) over the sheet's peak, at the H100's serving-over-MAMF ratio 0.35 / (794.5 / 989.4)
    for card, mamf in ((mi300x, 668.4), (mi325x, 784.9), (mi355x, 1565.0)):
        assert card.mfu == pytest.approx(0.35 / (794.5 / 989.4) * mamf / card.peak_tflops["bf16"], abs=0.006), card.name
    assert mi325x.attn_mfu == mi300x.attn_mfu < mi355x.attn_mfu < get_hardware("h100").attn_mfu
    names = {"AMD Instinct MI300X": "mi300x", "AMD Instinct MI300X VF": "mi300x", "AMD Instinct MI325X": "mi325x",
             "AMD Instinct MI355X": "mi355x", "AMD Instinct MI250X": "other"}
    assert {n: preset_for_device(n) for n in names} == names


def test_h100_pcie_is_the_pcie_card_of_the_h100_die():
    """H100 PCIe 80GB: dense = half the sheet's sparsity numbers (BF16 1,513*, FP8 3,026*), 2.0 TB/s HBM2e, PCIe
    Gen5 between cards (the IOG rows name no NVLink bridge), and the SXM part's fitted mfu (same GH100 die)."""
    pcie, sxm = get_hardware("h100-pcie"), get_hardware("h100")
    assert pcie.peak_tflops["bf16"] == 1513 / 2 and pcie.peak_tflops["fp8"] == 3026 / 2
    assert pcie.mem_bw_tbs == 2.0 and pcie.mem_gib == 80 and pcie.interconnect.kind == "pcie"
    assert pcie.mfu == sxm.mfu and pcie.bw_efficiency == sxm.bw_efficiency
    assert pcie.peak_tflops["bf16"] < sxm.peak_tflops["bf16"] and pcie.mem_bw_tbs < sxm.mem_bw_tbs



def test_rtx_5090_is_the_geforce_gb202_priced_as_the_rtx_pro_6000_sheet():
    """RTX 5090: dense = half the sheet's sparse tensor numbers (FP16 838.4*, FP8 1,676.8*, FP4 3,352*), the same
    derivation as the RTX PRO 6000 (one GB202 die, 170 vs 188 SMs); 1,792 GB/s GDDR7 as the PRO 6000, 32 GB (31.4 GiB
    in torch), PCIe, no fitted fractions (no fit rows: the GPU defaults); torch / nvidia-smi names map to it."""
    from sim.hardware import preset_for_device

    card, pro = get_hardware("rtx-5090"), get_hardware("rtx-pro-6000")
    assert card.peak_tflops == {"bf16": 838.4 / 2, "fp8": 1676.8 / 2, "fp4": 3352 / 2}
    assert card.mem_bw_tbs == pro.mem_bw_tbs == 1.792 and card.mem_gib == 32 and card.usable_mem_gib == 31.4
    assert card.interconnect.kind == "pcie" and (card.mfu, card.bw_efficiency) == (pro.mfu, pro.bw_efficiency)
    assert card.l2_mib == 96 < pro.l2_mib
    assert preset_for_device("NVIDIA GeForce RTX 5090") == "rtx-5090"
    assert preset_for_device("NVIDIA RTX PRO 6000 Blackwell Server Edition") == "rtx-pro-6000"

def test_model_presets_build_and_names_come_from_one_file():
    raw = yaml.safe_load((PRESETS_DIR / "models.yaml").read_text())
    assert tuple(raw) == MODEL_NAMES == tuple(MODELS)
    for name in MODEL_NAMES:
        assert get_model(name).kv_bytes_per_token > 0


def test_own_spec_mapping_and_spec_file(tmp_path):
    sheet = {"name": "mycard", "peak_tflops": {"bf16": 100}, "mem_bw_tbs": 1.0, "mem_gib": 16,
             "interconnect": {"kind": "pcie", "bandwidth_gbs": 25, "latency_us": 10}}
    inline = make_sim(hardware={"spec": sheet})
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(sheet))
    from_file = make_sim(hardware={"spec": str(tmp_path / "card.yaml")})
    assert inline.hardware.sheet() == from_file.hardware.sheet() == HardwareSheet.model_validate(sheet)
    cm = CostModel.from_config(from_file)
    assert cm.hw.name == "mycard"
    # 16 GiB cannot hold llama-2-7b's 13.4 GB at 0.5 utilisation
    with pytest.raises(LabError, match="does not fit"):
        cm.kv_capacity_tokens(0.5)


def test_kv_memory_is_what_the_device_reports_not_the_size_sold():
    """vLLM multiplies gpu_memory_utilization into the total CUDA reports (79.2 GiB of an 80 GB H100): a sheet's
    usable_mem_gib; without one, mem_gib."""
    sheet = {"name": "mycard", "peak_tflops": {"bf16": 100}, "mem_bw_tbs": 1.0, "mem_gib": 48}
    sold = CostModel.from_config(make_sim(hardware={"spec": sheet}))
    reported = CostModel.from_config(make_sim(hardware={"spec": {**sheet, "usable_mem_gib": 44.31}}))
    per_token = sold.model.kv_bytes_per_token
    assert sold.kv_capacity_tokens(0.9) - reported.kv_capacity_tokens(0.9) == pytest.approx(
        (48 - 44.31) * 2**30 * 0.9 / per_token, abs=1)
    assert get_hardware("h100").kv_budget_gib == 79.2 and get_hardware("a100-80g").kv_budget_gib == 79.21


@pytest.mark.parametrize("sim, message", [
    ({"hardware": {"preset": "tpu9"}}, "sim.hardware"),
    ({"hardware": {"preset": "h100", "spec": {"name": "x"}}}, "sim.hardware"),
    ({"hardware": {"spec": "/nonexistent/card.yaml"}}, "spec file"),
    ({"hardware": {"spec": {"name": "x", "peak_tflops": {"bf16": 1}, "mem_bw_tbs": 1}}}, "mem_gib"),
    ({"hardware": {"spec": {"name": "x", "peak_tflops": {"bf16": 1}, "mem_bw_tbs": 1, "mem_gib": 24,
                            "usable_mem_gib": 25}}}, "usable_mem_gib 25 is more than mem_gib 24"),
    ({"model": {"name": "gpt-9"}}, "sim.model"),
    ({"model": {"config": "/nonexistent/config.json"}}, "not found"),
])
def test_mistakes_fail_at_validate(sim, message):
    with pytest.raises(LabError, match=message):
        config_from_dict(experiment(sim), "x.yaml")


def test_a_spec_file_with_a_repeated_key_or_binary_bytes_is_refused(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("name: x\nmem_gib: 24\nmem_gib: 48\n")
    with pytest.raises(LabError, match="sim.hardware.*duplicate key"):
        config_from_dict(experiment({"hardware": {"spec": str(card)}}), "x.yaml")
    card.write_bytes(b"\x00\x9f binary")
    with pytest.raises(LabError, match="sim.hardware.*spec file"):
        config_from_dict(experiment({"hardware": {"spec": str(card)}}), "x.yaml")


def test_qwen3_moe_config():
    m = from_hf_config(DATA / "qwen3_30b_a3b_config.json")
    # Qwen3-30B-A3B: 30.5B total, 3.3B activated (the model card; 3.0B without the input-embedding lookup)
    assert m.params_b == pytest.approx(30.5, abs=0.2)
    assert m.active_params_b + 151936 * 2048 / 1e9 == pytest.approx(3.3, abs=0.1)
    assert (m.moe_experts, m.moe_top_k, m.n_moe_layers) == (128, 8, 48)
    assert m.kv_bytes_per_token == 48 * 2 * 4 * 128 * 2
    # distinct experts touched: E (1 - (1 - k/E)^tokens)
    expert_b = m.expert_params_b * 1e9 * 2
    dense = m.weight_bytes_read(1) - expert_b * 8 / 128
    assert m.weight_bytes_read(64) == pytest.approx(dense + expert_b * (1 - (1 - 8 / 128) ** 64))


def test_deepseek_v3_config_mla_shared_experts_fp8():
    m = from_hf_config(DATA / "deepseek_v3_config.json")
    assert m.params_b == pytest.approx(671, rel=0.01)
    assert m.active_params_b + 129280 * 7168 / 1e9 == pytest.approx(37, rel=0.02)
    # fp8 checkpoint: every decoder matmul's weights 8-bit and run at the fp8 peak; the embeddings / LM head and
    # the KV cache stay bf16 (the activation dtype, vLLM's kv_cache_dtype auto)
    assert m.n_moe_layers == 58 and m.dtype == "bf16" and m.kv_dtype == "bf16"
    assert (m.quant_method, m.quant_bits, m.matmul_dtype, m.quant_experts) == ("fp8", 8.0, "fp8", True)
    embeddings, routers = 2 * 129280 * 7168, 58 * 7168 * 256  # input embedding + untied LM head; MoE routers
    unquantized = (m.params_b - m.quant_dense_params_b - m.expert_params_b) * 1e9  # + norm vectors
    assert unquantized == pytest.approx(embeddings + routers, rel=0.005)
    assert m.weight_bytes == pytest.approx((m.params_b * 1e9 - unquantized) * 1 + unquantized * 2)
    assert m.kv_bytes_per_token == 61 * (512 + 64) * 2  # MLA latent + rope key, bf16


LLAMA4_SCOUT = Path(__file__).resolve().parents[2] / "sim/validation/configs/llama-4-scout-17b-16e-instruct.json"


def test_llama4_scout_shared_expert_every_layer_moe_and_chunked_attention():
    m = from_hf_config(LLAMA4_SCOUT)  # published: 109B total (vision encoder included), 17B active
    embed = 202048 * 5120
    assert m.params_b == pytest.approx(107.8, abs=0.1)
    assert m.active_params_b + embed / 1e9 == pytest.approx(17.2, abs=0.1)
    assert (m.moe_experts, m.moe_top_k, m.n_moe_layers) == (16, 1, 48)
    # one routed expert of 16 plus the shared expert per layer, both of intermediate_size 8192
    assert m.expert_params_b * 1e9 == 48 * 16 * 3 * 5120 * 8192
    assert (m.sliding_window, m.sliding_layers) == (8192, 36)  # chunked attention on the 36 RoPE layers
    # ... its reads and score FLOPs stop at the chunk, but vLLM turns the hybrid KV manager off for chunked
    # attention by default: every layer keeps the whole context's KV, one group
    from sim.kv_cache import kv_groups

    assert m.chunked_attention and (kv_groups(m).full, kv_groups(m).sliding) == (1, 0)
    assert m.attended_context(32768) == (12 * 32768 + 36 * 8192) / 48


def test_llama4_maverick_interleaves_dense_layers_of_their_own_width(tmp_path):
    cfg = json.loads(LLAMA4_SCOUT.read_text())
    cfg["text_config"].update(num_local_experts=128, interleave_moe_layer_step=2, no_rope_layers=None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = from_hf_config(tmp_path / "config.json")  # published: 400B total, 17B active
    assert m.n_moe_layers == 24 and m.params_b == pytest.approx(400.6, abs=0.2)
    assert m.active_params_b + 202048 * 5120 / 1e9 == pytest.approx(17.2, abs=0.1)
    dense_mlp = 24 * 3 * 5120 * 16384  # intermediate_size_mlp, not the experts' 8192
    routed_active = m.expert_params_b * 1e9 / 128
    shared = 24 * 3 * 5120 * 8192
    attention = 48 * (2 * 5120 * 40 * 128 + 2 * 5120 * 8 * 128)
    lm_head_and_norms = 202048 * 5120 + (2 * 48 + 1) * 5120 + 24 * 5120 * 128  # + the routers
    assert m.active_params_b * 1e9 == pytest.approx(dense_mlp + routed_active + shared + attention
                                                     + lm_head_and_norms)
    assert m.sliding_layers == 36  # no no_rope_layers list: every 4th layer global


def test_model_config_in_a_sim_section(tmp_path):
    sim = make_sim(model={"name": None, "config": str(DATA / "qwen3_30b_a3b_config.json")},
                   hardware={"preset": "rtx-pro-6000", "ep": 2})
    cm = CostModel.from_config(sim)
    assert cm.model.name and cm.model.moe_experts == 128 and cm.ep == 2
    assert cm.step_time(64, 0, 8, False) > cm.step_time(1, 0, 1, False)


GEMMA3_LIKE = {"hidden_size": 640, "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
               "head_dim": 256, "vocab_size": 262144, "intermediate_size": 2048, "sliding_window": 512,
               "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)]}


@pytest.mark.parametrize("extra, window, sliding", [
    ({}, 512, 15),                                                                   # Gemma3: layer_types
    ({"layer_types": None, "sliding_window_pattern": 6, "num_hidden_layers": 48}, 512, 40),  # older Gemma3
    ({"layer_types": None}, 512, 18),                                                # Mistral: every layer
    ({"layer_types": None, "use_sliding_window": False}, None, 0),                   # Qwen3 carries an unused one
    ({"layer_types": None, "sliding_window": None}, None, 0),                        # Llama: none
    ({"layer_types": None, "model_type": "gemma2", "num_hidden_layers": 42}, 512, 21),  # Gemma2: every other
])
def test_sliding_window_layers_are_read_from_config_json(tmp_path, extra, window, sliding):
    cfg = {k: v for k, v in {**GEMMA3_LIKE, **extra}.items() if v is not None}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = from_hf_config(tmp_path / "config.json")
    assert (m.sliding_window, m.sliding_layers) == (window, sliding)


def test_sliding_layers_stop_reading_at_the_window():
    full = replace(get_model("gemma3-12b"), sliding_window=None, sliding_layers=0)
    gemma = get_model("gemma3-12b")  # 40 of 48 layers over a 1,024-token window
    assert gemma.attended_context(800) == 800 and full.attended_context(8000) == 8000
    assert gemma.attended_context(8000) == pytest.approx((8 * 8000 + 40 * 1024) / 48)
    hw = get_hardware("h100")
    short, long = CostModel(hw, gemma), CostModel(hw, full)
    assert short.step_time(16, 16 * 800, 16, True) == pytest.approx(long.step_time(16, 16 * 800, 16, True))
    assert short.step_time(16, 16 * 8000, 16, True) < 0.8 * long.step_time(16, 16 * 8000, 16, True)
    b = np.arange(1, 9)
    # the closed-form SPS curve, the vectorised and the scalar step time agree, array contexts included
    assert np.allclose(short.sps_curve(0, 16 * 8000, 16)(b), 1 / short.step_time_vec(b, 16 * 8000, 16, True))
    assert np.allclose(short.step_time_vec(b, 16 * 8000, 16, True),
                       [short.step_time(int(x), 16 * 8000, 16, True) for x in b])
    assert np.all(np.isfinite(short.sps_table(8, kv_per_req=4096)))


def test_a_sliding_count_without_a_window_is_refused():
    with pytest.raises(LabError, match="sliding_layers"):
        replace(get_model("qwen3-8b"), sliding_layers=4)


@pytest.mark.parametrize("preset, seqs, tokens", [("h100", 1024, 8192), ("rtx-pro-6000", 1024, 8192),
                                                  ("a100-80g", 256, 2048), ("rtx-4090", 256, 2048),
                                                  ("l40s", 256, 2048), ("cpu", 256, 2048)])
def test_engine_batch_limits_left_null_are_what_vllm_serve_picks_on_the_card(preset, seqs, tokens):
    """vLLM's rule (arg_utils, PR 17885): >= 70 GiB and not an A100 -> 1024 sequences / 8192 tokens, else
    256 / 2048; a value the YAML sets is kept, and the simulator's replicas run with the resolved ones."""
    from sim.hardware import engine_with_defaults, vllm_serve_batch_defaults
    from sim.simulate import prepare_inputs

    hw = get_hardware(preset)
    assert vllm_serve_batch_defaults(hw) == {"max_num_seqs": seqs, "max_num_batched_tokens": tokens}
    sim = make_sim(hardware={"preset": preset})
    assert sim.engine.max_num_seqs is None and sim.engine.max_num_batched_tokens is None
    resolved = prepare_inputs(sim).sim.engine
    assert (resolved.max_num_seqs, resolved.max_num_batched_tokens) == (seqs, tokens)
    kept = engine_with_defaults(make_sim(hardware={"preset": preset}, engine={"max_num_seqs": 7}).engine, hw)
    assert (kept.max_num_seqs, kept.max_num_batched_tokens) == (7, tokens)


def test_a_sheet_that_says_a100_keeps_the_small_batch_defaults():
    from sim.hardware import vllm_serve_batch_defaults

    sheet = get_hardware("h100").model_copy(update={"name": "my-card", "description": "NVIDIA A100 SXM4 80GB"})
    assert vllm_serve_batch_defaults(sheet)["max_num_seqs"] == 256
    assert vllm_serve_batch_defaults(sheet.model_copy(update={"description": "A800 80GB"}))["max_num_seqs"] == 1024
