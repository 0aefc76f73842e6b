"""The A100 sheets' two session-39 terms: dense_gemm_mfu (the dense linears' fraction of peak by GEMM rows, from
published GEMM timings) and fa2_mixed_attention (FlashAttention 2 reads a mixed step's KV once per query head, in a
kernel after the GEMMs).

Run: PYTHONPATH=. HF_HUB_OFFLINE=1 /work/venv/bin/python -m pytest -q tests/sim/test_dense_gemm_and_fa2_mixed.py
"""
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from sim import gemm_kernels as gk
from sim.cost import CostModel
from sim.hardware import dense_gemm_fraction, dense_gemm_points, get_hardware
from sim.models import MODEL_NAMES, from_hf_config, get_model
from sim.vllm_versions import vllm_one_call_mixed_attention

CONFIGS = Path(__file__).resolve().parents[2] / "sim" / "validation" / "configs"
A100_CURVE = {128: 0.447, 256: 0.613, 512: 0.621, 1024: 0.685, 2048: 0.755, 4000: 0.742}


def _cost(hw, model="qwen3-14b", **kw):
    shape = get_model(model) if model in MODEL_NAMES else from_hf_config(CONFIGS / f"{model}.json")
    return CostModel(hw, shape, step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0, spec_overhead_s=0, **kw)


def test_the_fraction_is_log_linear_between_points_and_flat_outside():
    log_rows, fractions = dense_gemm_points(get_hardware("a100-80g"))
    assert [round(math.exp(x)) for x in log_rows] == sorted(A100_CURVE) and fractions == list(A100_CURVE.values())
    at = lambda rows: dense_gemm_fraction(log_rows, fractions, 0.55, rows)  # noqa: E731
    for rows, fraction in A100_CURVE.items():
        assert at(rows) == pytest.approx(fraction)
    assert at(1) == at(64) == 0.447 and at(65536) == 0.742  # flat outside the points
    assert at(math.sqrt(1024 * 2048)) == pytest.approx((0.685 + 0.755) / 2)  # halfway in log M
    assert dense_gemm_fraction([], [], 0.35, 2048) == 0.35  # no points: mfu
    assert dense_gemm_points(get_hardware("h100")) == ([], [])


def test_the_a100_presets_carry_the_published_fractions():
    """Both A100 sheets' dense_gemm_mfu is what --fit reads off the shipped GEMM table (vLLM PR 2497's torch fp16
    column on an A100); the MAMF row puts the card's cuBLAS ceiling above it."""
    fitted = gk.fit(gk.load_points(gk.DEFAULT_FILE))
    assert fitted["dense_gemm_mfu"]["a100-40g"] == A100_CURVE
    for card in ("a100-80g", "a100-40g"):
        hw = get_hardware(card)
        assert hw.dense_gemm_mfu == A100_CURVE and hw.fa2_mixed_attention and hw.mfu == 0.55, card
    assert fitted["mamf_fraction"]["a100-80g"] == pytest.approx(271.2 / 312, abs=1e-3)
    assert max(A100_CURVE.values()) < fitted["mamf_fraction"]["a100-80g"]
    assert get_hardware("h100").dense_gemm_mfu is None and not get_hardware("h100").fa2_mixed_attention


@pytest.mark.parametrize("bad", [{}, {0: 0.5}, {128: 0.0}, {128: 1.2}])
def test_a_bad_curve_is_refused_naming_the_field(bad):
    with pytest.raises(ValidationError, match="dense_gemm_mfu"):
        get_hardware("a100-80g").model_validate({**get_hardware("a100-80g").model_dump(), "dense_gemm_mfu": bad})


def test_the_dense_linears_run_at_the_curves_fraction_and_the_rest_at_mfu():
    """A 2,048-token step with no cached context: its GEMM FLOPs at 0.755 of peak instead of 0.55; the routed experts
    of a MoE model keep mfu (the moe_* terms are untouched)."""
    hw = get_hardware("a100-80g")
    flat = hw.model_copy(update={"dense_gemm_mfu": None, "fa2_mixed_attention": False})
    curve = hw.model_copy(update={"fa2_mixed_attention": False})
    m = get_model("qwen3-14b")
    t_flat, t_curve = _cost(flat).step_time(2048, 0, 1, False), _cost(curve).step_time(2048, 0, 1, False)
    flops = 2048 * m.flops_per_token - 2047 * m.head_flops_per_token  # the LM head at the sampled row only
    assert t_flat == pytest.approx(flops / (312e12 * 0.55), rel=1e-9)  # compute bound
    assert t_curve == pytest.approx(t_flat * 0.55 / 0.755, rel=1e-9)
    moe_flat, moe_curve = _cost(flat, "qwen3-30b-a3b"), _cost(curve, "qwen3-30b-a3b")
    assert moe_curve._experts_time(2048, 2048) == moe_flat._experts_time(2048, 2048)
    vec = _cost(curve).step_time_vec(np.array([1.0, 300.0, 2048.0]), 0, 1, False)
    assert np.allclose(vec, [_cost(curve).step_time(t, 0, 1, False) for t in (1, 300, 2048)], rtol=1e-12)


def _gemm_and_attention(roof, tokens, kv, reqs, attn):
    """A compute-bound step's GEMM and attention time from the plain roofline (which then is their sum)."""
    attention = attn * roof._t_attn
    t = roof.step_time(tokens, kv, reqs, False, attn_ctx=attn)
    assert t > roof._t_weights + kv * roof._t_per_kv_token  # compute bound: t = GEMMs + attention
    return t - attention, attention


@pytest.mark.parametrize("decodes, context, chunk, groups", [(81, 2050, 1951, 5), (48, 130, 2000, 1)])
def test_a_mixed_step_reads_each_decodes_kv_once_per_query_head_after_the_gemms(decodes, context, chunk, groups):
    """81 decodes at 2,050 tokens beside a 1,951-token chunk: one layer's KV of one KV head (168 K tokens x 512 B)
    outgrows the 40 MiB L2, so each of Qwen3-14B's 5 query heads per KV head reads it again; 48 decodes at 130
    tokens (8 K tokens) stay in the L2: read once -- both in a kernel after the GEMMs."""
    hw = get_hardware("a100-80g")
    fa2, roof = _cost(hw), _cost(hw.model_copy(update={"fa2_mixed_attention": False}))
    assert fa2._mixed_groups == 5.0 and roof._mixed_groups == 0.0  # Qwen3-14B: 40 query heads over 8 KV heads
    assert fa2._l2_kv_tokens == pytest.approx(40 * 2 ** 20 / 512)
    tokens, reqs, kv = decodes + chunk, decodes + 1, decodes * context + chunk
    attn = decodes * context + chunk * (chunk + 1) / 2
    gemm, attention = _gemm_and_attention(roof, tokens, kv, reqs, attn)
    assert fa2.step_time(tokens, kv, reqs, False, attn_ctx=attn) == pytest.approx(
        max(fa2._t_weights, gemm) + max(attention, groups * kv * fa2._t_per_kv_token), rel=1e-9)
    # the decodes alone (every request one query token): FA2 packs the grouped heads, priced as before
    assert fa2.step_time(decodes, decodes * context, decodes, False) == roof.step_time(
        decodes, decodes * context, decodes, False)
    vec = fa2.step_time_vec(np.array([float(decodes), float(tokens)]), kv, reqs, False)
    assert vec[0] == pytest.approx(fa2.step_time(decodes, kv, reqs, False), rel=1e-12)
    assert vec[1] == pytest.approx(fa2.step_time(tokens, kv, reqs, False), rel=1e-12)


def test_only_full_attention_models_under_a_one_call_release_take_it():
    hw = get_hardware("a100-80g")
    assert _cost(hw, "gpt-oss-20b")._mixed_groups == 0.0  # sliding windows and sinks: another backend on Ampere
    assert _cost(hw, one_call_mixed_attention=False)._mixed_groups == 0.0  # V0: decodes in their own call
    assert _cost(hw, "qwen3-32b")._mixed_groups == 8.0
    assert _cost(hw, "qwen3-32b", tp=2)._mixed_groups == 8.0  # 32 / 4 per GPU
    assert vllm_one_call_mixed_attention(None) and vllm_one_call_mixed_attention("0.8.0")
    assert vllm_one_call_mixed_attention("0.11.0") and not vllm_one_call_mixed_attention("0.7.3")
