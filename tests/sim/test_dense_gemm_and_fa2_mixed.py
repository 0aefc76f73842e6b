"""The A100 sheets' session-39 (h130) terms: dense_gemm_mfu (the dense linears' fraction of peak by GEMM rows, from
published GEMM timings) and, where FA2's mixed kernel pads decodes (mixed_decode_tile_rows), that kernel's KV reads
once per query head, after the GEMMs.

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

CONFIGS = Path(__file__).resolve().parents[2] / "sim" / "validation" / "configs"
A100_CURVE = {128: 0.447, 256: 0.613, 512: 0.621, 1024: 0.685, 2048: 0.755, 4000: 0.742}


def _cost(hw, model="qwen3-14b", rows=None, **kw):
    shape = get_model(model) if model in MODEL_NAMES else from_hf_config(CONFIGS / f"{model}.json")
    return CostModel(hw, shape, step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0, spec_overhead_s=0,
                     mixed_decode_rows=(hw.mixed_decode_tile_rows or 0) if rows is None else rows, **kw)


def test_the_fraction_is_log_linear_between_points_and_flat_outside():
    log_rows, fractions = dense_gemm_points(get_hardware("a100-80g"))
    assert [round(math.exp(x)) for x in log_rows] == sorted(A100_CURVE) and fractions == list(A100_CURVE.values())
    at = lambda rows: dense_gemm_fraction(log_rows, fractions, 0.65, rows)
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
        assert get_hardware(card).dense_gemm_mfu == A100_CURVE, card
    assert fitted["mamf_fraction"]["a100-80g"] == pytest.approx(271.2 / 312, abs=1e-3)
    assert max(A100_CURVE.values()) < fitted["mamf_fraction"]["a100-80g"]
    assert get_hardware("h100").dense_gemm_mfu is None


@pytest.mark.parametrize("bad", [{}, {0: 0.5}, {128: 0.0}, {128: 1.2}])
def test_a_bad_curve_is_refused_naming_the_field(bad):
    sheet = get_hardware("a100-80g")
    with pytest.raises(ValidationError, match="dense_gemm_mfu"):
        type(sheet).model_validate({**sheet.model_dump(), "dense_gemm_mfu": bad})


def test_the_dense_linears_run_at_the_curves_fraction_and_the_rest_at_their_own():
    """A 2,048-token step with no cached context: its GEMM FLOPs at 0.755 of peak instead of mfu; the routed experts
    of a MoE model keep their own rate (the moe_* terms are untouched)."""
    hw = get_hardware("a100-80g")
    flat = hw.model_copy(update={"dense_gemm_mfu": None})
    m = get_model("qwen3-14b")
    t_flat, t_curve = _cost(flat).step_time(2048, 0, 1, False), _cost(hw).step_time(2048, 0, 1, False)
    flops = 2048 * m.flops_per_token - 2047 * m.head_flops_per_token  # the LM head at the sampled row only
    assert t_flat == pytest.approx(flops / (312e12 * hw.mfu), rel=1e-9)  # compute bound
    assert t_curve == pytest.approx(t_flat * hw.mfu / 0.755, rel=1e-9)
    moe_flat, moe_curve = _cost(flat, "qwen3-30b-a3b"), _cost(hw, "qwen3-30b-a3b")
    assert moe_curve._experts_time(2048, 2048) == moe_flat._experts_time(2048, 2048)
    vec = _cost(hw).step_time_vec(np.array([1.0, 300.0, 2048.0]), 0, 1, False)
    assert np.allclose(vec, [_cost(hw).step_time(t, 0, 1, False) for t in (1, 300, 2048)], rtol=1e-12)


@pytest.mark.parametrize("decodes, context, chunk, groups", [(81, 2050, 1951, 5), (48, 130, 2000, 1)])
def test_a_mixed_step_reads_each_decodes_kv_once_per_query_head_after_the_gemms(decodes, context, chunk, groups):
    """81 decodes at 2,050 tokens beside a 1,951-token chunk: one layer's KV of one KV head (168 K tokens x 512 B)
    outgrows the 40 MiB L2, so each of Qwen3-14B's 5 query heads per KV head reads it again; 48 decodes at 130
    tokens (8 K tokens) stay in the L2: read once -- both in the attention kernel, after the GEMMs."""
    hw = get_hardware("a100-80g")
    fa2, plain = _cost(hw), _cost(hw, rows=0)
    assert fa2._mixed_groups == 5.0 and plain._mixed_groups == 0.0  # Qwen3-14B: 40 query heads over 8 KV heads
    assert fa2._l2_kv_tokens == pytest.approx(40 * 2 ** 20 / 512)
    tokens, reqs, kv = decodes + chunk, decodes + 1, decodes * context + chunk
    attn = decodes * context + chunk * (chunk + 1) / 2
    kw = {"chunk_max": chunk, "chunk_sum": chunk, "chunk_kv": float(chunk), "chunk_reqs": 1}
    attention = (attn + fa2.mixed_decode_tile_flops(decodes * context, decodes)) * fa2._t_attn
    t_plain = plain.step_time(tokens, kv, reqs, False, attn_ctx=attn, **kw)
    assert t_plain > plain._t_weights + kv * plain._t_per_kv_token  # compute bound: GEMMs + attention
    gemm = t_plain - attn * plain._t_attn
    assert fa2.step_time(tokens, kv, reqs, False, attn_ctx=attn, **kw) == pytest.approx(
        max(fa2._t_weights, gemm) + max(attention, groups * kv * fa2._t_per_kv_token), rel=1e-9)
    # the decodes alone (max_seqlen_q == 1): FA2 packs the grouped heads, priced as the plain roofline
    assert fa2.step_time(decodes, decodes * context, decodes, False) == plain.step_time(
        decodes, decodes * context, decodes, False)


def test_only_where_the_kernel_pads():
    hw = get_hardware("a100-80g")
    assert _cost(hw, "gemma3-12b")._mixed_groups == 0.0  # sliding windows: priced at the mean, as the padding
    assert _cost(hw, rows=0)._mixed_groups == 0.0  # V0 (mixed_decode_rows 0): decodes in their own call
    assert _cost(hw, "qwen3-32b")._mixed_groups == 8.0
    assert _cost(hw, "qwen3-32b", tp=2)._mixed_groups == 8.0  # 32 / 4 per GPU
    assert _cost(get_hardware("h100"))._mixed_groups == 0.0  # FA3 packs GQA in every step
    l40s = _cost(get_hardware("l40s"))  # FA2 pads here too (h133) and re-reads alike (h138)
    assert l40s._pad_rows == 64 and l40s._mixed_groups == 5.0 and get_hardware("l40s").mixed_kv_reread
    assert _cost(get_hardware("rtx-4090"))._mixed_groups == 0.0  # held: no padded tiles there (hardware.yaml)
    assert _cost(hw.model_copy(update={"mixed_kv_reread": False}))._mixed_groups == 0.0
    assert get_hardware("a100-40g").mixed_kv_reread


# every card vLLM V1 runs FA2 on (h133's list) but the held rtx-4090: the same split kernel, so the same re-reads
FA2_REREAD_CARDS = ("a100-80g", "a100-40g", "a10", "a10g", "a40", "rtx-3090", "rtx-a6000", "l4", "l40", "l40s",
                    "rtx-6000-ada", "rtx-5090", "rtx-pro-6000")


def test_every_padding_fa2_card_rereads_and_no_other_does():
    from sim.hardware import hardware_presets
    for name in hardware_presets():
        hw = get_hardware(name)
        assert bool(hw.mixed_kv_reread) == (name in FA2_REREAD_CARDS), name
        if hw.mixed_kv_reread:  # the re-reads are priced only where the kernel pads (same call)
            assert hw.mixed_decode_tile_rows == 64, name


@pytest.mark.parametrize("card, l2_mib", [("l40s", 96), ("l4", 48), ("a10", 6), ("rtx-5090", 96),
                                          ("rtx-pro-6000", 128), ("a100-40g", 40)])
def test_the_l2_decides_per_step_on_each_card(card, l2_mib):
    """Qwen3-14B (5 query heads per KV head, 512 B of K + V per token and KV head): decodes at 2,050 tokens beside a
    128-token chunk read their KV once while one layer's KV of one KV head fits in the card's L2 (Ada's 96 MiB:
    196,608 tokens; GA102's 6 MiB: 12,288), five times once it does not -- one decode more tips it."""
    hw = get_hardware(card)
    assert hw.l2_mib == l2_mib
    fa2, no_l2 = _cost(hw), _cost(hw.model_copy(update={"l2_mib": None}))
    assert fa2._l2_kv_tokens == pytest.approx(l2_mib * 2 ** 20 / 512) and no_l2._l2_kv_tokens == 0.0
    context, chunk = 2050, 128  # a short chunk: its own causal attention does not hide the reads (GA102: 6 decodes)
    fits = int((fa2._l2_kv_tokens - chunk) // context)
    assert fits >= 1
    for decodes, groups in ((fits, 1.0), (fits + 1, 5.0)):
        kv, attn = decodes * context + chunk, decodes * context + chunk * (chunk + 1) / 2
        assert (kv <= fa2._l2_kv_tokens) == (groups == 1.0)
        kw = {"chunk_max": chunk, "chunk_sum": chunk, "chunk_kv": float(chunk), "chunk_reqs": 1}
        args = (decodes + chunk, kv, decodes + 1, False)
        t, t_no_l2 = fa2.step_time(*args, attn_ctx=attn, **kw), no_l2.step_time(*args, attn_ctx=attn, **kw)
        attention = (attn + fa2.mixed_decode_tile_flops(decodes * context, decodes)) * fa2._t_attn
        reads = kv * fa2._t_per_kv_token
        # the kernel is the only term the L2 changes: max(attention, groups x reads) against 5 x reads without it
        assert t - t_no_l2 == pytest.approx(max(attention, groups * reads) - max(attention, 5 * reads),
                                            rel=1e-6, abs=1e-12)
        vec = fa2.step_time_vec(np.array([float(decodes + chunk)]), kv, decodes + 1, False, attn_ctx=attn, **kw)
        assert vec[0] == pytest.approx(t, rel=1e-9)
    assert 5 * reads > attention  # the re-reads bound the kernel past the L2: the two sides of the line differ
