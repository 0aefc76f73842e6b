"""The mxfp4 experts' Marlin layout priced as vLLM runs it: padded weights read and multiplied, padded activation rows.

vLLM 0.10 - 0.11 (Mxfp4MoEMethod.create_weights, MARLIN branch) rounds each rank's expert intermediate size up to a
multiple of 128 and the hidden size to one of 256; FusedMoE pads each token's hidden row to that size before the call.
gpt-oss (2880 x 2880) runs its experts as 2944 x 3072 matrices on cards without FP4 matmuls (H100, A100)."""
import dataclasses

import pytest

from sim.cost import CostModel, moe_pair_bytes
from sim.hardware import achievable_bandwidth, get_hardware
from sim.models import from_hf_config, get_model

GPT_OSS_120B = "sim/validation/configs/gpt-oss-120b.json"
GPT_OSS_20B = "sim/validation/configs/gpt-oss-20b.json"
PAD_TP1 = 2944 * 3072 / 2880 ** 2  # 1.0904


def test_the_padded_dims_follow_vllms_rounding():
    m = from_hf_config(GPT_OSS_120B)
    assert m.marlin_mxfp4_dims(1) == (2944, 3072)
    assert m.marlin_mxfp4_dims(4) == (768, 3072)  # 720 per rank -> 768
    assert m.marlin_mxfp4_dims(4, expert_parallel=True) == (2944, 3072)  # whole experts on a rank
    assert m.marlin_mxfp4_pad_factor(1) == pytest.approx(PAD_TP1)
    assert m.marlin_mxfp4_pad_factor(4) == pytest.approx(768 * 3072 / (720 * 2880))
    qwen = get_model("qwen3-8b")
    assert qwen.marlin_mxfp4_dims(1) is None and qwen.marlin_mxfp4_pad_factor(1) == 1.0
    # the resident bytes keep what vLLM logs (65.97 GiB of gpt-oss-120b on one H100, test_reserve_sampler)
    assert m.marlin_mxfp4_pad_bytes(1) == pytest.approx(
        m.expert_params_b * 1e9 * m.expert_bytes_per_param * (PAD_TP1 - 1.0))


@pytest.mark.parametrize("config", [GPT_OSS_120B, GPT_OSS_20B])
@pytest.mark.parametrize("card", ["h100", "a100-80g"])
def test_marlin_experts_read_and_multiply_the_padded_matrices(config, card):
    m = from_hf_config(config)
    unpadded = dataclasses.replace(m, moe_intermediate=0)  # expert shape unknown: nothing padded
    assert unpadded.routed_intermediate == pytest.approx(m.moe_intermediate)
    hw = get_hardware(card)
    cm, plain = CostModel(hw, m), CostModel(hw, unpadded)
    assert cm._marlin_moe and plain._marlin_moe
    assert cm._t_per_token_expert_flops == pytest.approx(PAD_TP1 * plain._t_per_token_expert_flops)
    assert cm._t_per_expert_byte == pytest.approx(PAD_TP1 * plain._t_per_expert_byte)
    pairs = m.n_moe_layers * moe_pair_bytes(1.0, m.moe_top_k, 2944, 3072, 2.0) / achievable_bandwidth(hw)
    assert cm._t_moe_pairs_per_token == pytest.approx(pairs)
    assert cm._t_moe_pairs_per_token > plain._t_moe_pairs_per_token
    # a prefill chunk's experts (FLOP-bound) and a decode step's (read-bound) both cost ~9% more
    for tokens in (4.0, 8192.0):
        ratio = cm.moe_layer_time(tokens) / plain.moe_layer_time(tokens)
        assert 1.03 < ratio < PAD_TP1 + 1e-9, tokens


def test_a_card_with_fp4_matmuls_runs_no_marlin_padding():
    """vLLM takes FlashInfer's mxfp4 kernels there (get_mxfp4_backend, SM100), not Marlin's layout; kv_blocks' weights
    are not padded there either."""
    m = from_hf_config(GPT_OSS_120B)
    hw = get_hardware("b200")
    cm, plain = CostModel(hw, m), CostModel(hw, dataclasses.replace(m, moe_intermediate=0))
    assert cm._t_per_token_expert_flops == pytest.approx(plain._t_per_token_expert_flops)
    assert cm._t_per_expert_byte == pytest.approx(plain._t_per_expert_byte)
    assert cm._t_moe_pairs_per_token == pytest.approx(plain._t_moe_pairs_per_token)


def test_the_h100_marlin_efficiency_is_its_own_fit_on_vllms_published_marlin_moe_table():
    """marlin_efficiency on the GH100 sheets: the own-card fit on FlagGems PR 4350's H100 timings of vLLM's
    fused_marlin_moe (W4A16, Mixtral's shape) -- the one Hopper Marlin table read; with it that table's FLOP-bound points
    (128 tokens on) are priced within 5%, where a bf16 rate left them 4-9% fast."""
    import numpy as np

    from sim import moe_kernels as mk

    runs = mk.load_runs(mk.DEFAULT_FILE)
    marlin = mk.fit_runs(runs, mk.MARLIN_TERMS)
    assert {r.id for r in marlin} >= {"flaggems4350-h100-mixtral-w4a16-marlin", "flaggems4483-h20-mixtral-mxfp4-marlin"}
    assert all(mk.marlin_runs(r) for r in marlin) and not any(r.tool == "lab" for r in marlin)
    h100_runs = [r for r in marlin if r.device == "h100"]
    fitted = mk.fit_terms(h100_runs, mk.MARLIN_TERMS)["marlin_efficiency"]
    for card in ("h100", "h200", "h100-pcie"):
        assert get_hardware(card).marlin_efficiency == pytest.approx(fitted, abs=0.005), card
    run = h100_runs[0]
    tokens, priced = mk.priced_us(run, get_hardware("h100"))
    measured = np.array([run.kernel_us[int(t)] for t in tokens])
    big = tokens >= 128
    assert big.sum() == 7 and np.all(np.abs(priced[big] / measured[big] - 1) < 0.05)
