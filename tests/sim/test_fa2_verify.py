"""FA2 and speculative decoding: a verify step (every decode 1 + k query tokens) runs vLLM's one
flash_attn_varlen_func call at max_seqlen_q = 1 + k > 1, so -- with no prefill chunk in the step too -- its decodes
take the unpacked kernel: a 64-row tile per query head (mixed_decode_tile_rows) and, where the sheet sets
mixed_kv_reread, their KV read once per query head; a speculative decode's 1 + d rows share that one tile
(CostModel.mixed_decode_tile_flops `drafts`; BENCHMARKS.md session 39, h139).

    PYTHONPATH=. /work/venv/bin/python -m pytest -q tests/sim/test_fa2_verify.py
"""
import dataclasses

import numpy as np
import pytest

from sim.cost import FA2_KEY_BLOCK, CostModel
from sim.hardware import get_hardware
from sim.models import get_model
from tests.sim.conftest import make_sim

ZERO = {"step_overhead_s": 0, "layer_overhead_s": 0, "request_overhead_s": 0}


def bare(hw, model: str = "qwen3-14b", rows: int = 64) -> CostModel:
    hw = get_hardware(hw) if isinstance(hw, str) else hw
    return CostModel(hw, get_model(model), mixed_decode_rows=rows, **ZERO)


def test_a_speculative_decodes_drafts_share_its_tile():
    """1 + d rows of one decode sit in one 64-row tile: the pairs beyond the step's own (each of the 1 + d tokens
    at the decode's context) are 64 x the padded context - (1 + d) x the context; past 64 rows, two tiles."""
    cm = bare("a100-80g")
    dec, ctx, d = 16, 2000.0, 3
    padded = dec * ctx + dec * (FA2_KEY_BLOCK - 1) / 2
    assert cm.mixed_decode_tile_flops(dec * ctx, dec, dec * d) == pytest.approx(64 * padded - dec * ctx * (1 + d))
    assert cm.mixed_decode_tile_flops(dec * ctx, dec) == pytest.approx(64 * padded - dec * ctx)  # no drafts: as before
    assert cm.mixed_decode_tile_flops(ctx, 1, 64) == pytest.approx(128 * (ctx + 63.5) - 65 * ctx)  # 65 rows: 2 tiles
    drafts = np.array([0, dec, dec * d])
    assert np.allclose(cm.mixed_decode_tile_flops(dec * ctx, dec, drafts),
                       [cm.mixed_decode_tile_flops(dec * ctx, dec, int(x)) for x in drafts], rtol=1e-12)


def test_speculative_decodes_beside_a_chunk_pay_the_tile_once():
    """48 decodes at 1,500 cached tokens of Qwen3-8B, each verifying 3 drafts, beside a 2,048-token chunk on an L40S
    (tiles alone: mixed_kv_reread off): the padded step costs 64 x padded - 4 x the decodes' context pairs more
    than the unpadded one -- not 64 rows on top of the drafts' own (what step_time charged before h139)."""
    hw = get_hardware("l40s").model_copy(update={"mixed_kv_reread": False})
    pad, flat = bare(hw, "qwen3-8b"), bare(hw, "qwen3-8b", rows=0)
    m = pad.model
    dec, ctx, chunk, d = 48, 1500.0, 2048, 3
    kw = {"chunk_max": chunk, "chunk_sum": chunk, "chunk_kv": float(chunk), "chunk_reqs": 1}
    kv = dec * ctx + chunk
    attn = dec * ctx * (1 + d) + chunk * (chunk + 1) / 2  # each decode's 1 + d tokens its sequence (Replica.plan)
    tokens = dec * (1 + d) + chunk
    extra = (64 * (dec * ctx + dec * (FA2_KEY_BLOCK - 1) / 2) - dec * ctx * (1 + d)) * 4 * m.n_heads * m.head_dim \
        * m.n_layers
    rate = hw.peak_for("bf16") * 1e12 * (hw.attn_mfu or hw.mfu)
    gap = pad.step_time(tokens, kv, dec + 1, False, dec * d, attn_ctx=attn, **kw) - \
        flat.step_time(tokens, kv, dec + 1, False, dec * d, attn_ctx=attn, **kw)
    assert gap == pytest.approx(extra / rate, rel=1e-9) and gap > 0


def test_a_verify_step_alone_takes_the_unpacked_kernel():
    """256 decodes at 1,000 cached tokens, each verifying 7 drafts, no prefill in the step, on an A100: max_seqlen_q
    = 8, so FA2 packs no GQA heads -- every decode a 64-row tile per query head, after the GEMMs, and its KV read
    once per query head (5 per Qwen3-14B group; 256,000 tokens of one layer and KV head outgrow the 40 MiB L2).
    Without drafts (max_seqlen_q 1) the step is the packed one, unchanged."""
    pad, flat = bare("a100-80g"), bare("a100-80g", rows=0)
    dec, ctx, d = 256, 1000.0, 7
    tokens, kv, drafts = dec * (1 + d), dec * ctx, dec * d
    attn = kv * (1 + d)
    without = flat.step_time(tokens, kv, dec, False, drafts, attn_ctx=attn)
    with_pad = pad.step_time(tokens, kv, dec, False, drafts, attn_ctx=attn)
    attention = attn * flat._t_attn
    gemm = without - attention  # this compute-bound step's roofline: GEMMs + attention (its host time with them)
    assert gemm > flat._t_weights and pad._mixed_groups == 5 and kv > pad._l2_kv_tokens
    tile = (64 * (kv + dec * (FA2_KEY_BLOCK - 1) / 2) - attn) * pad._t_attn
    assert with_pad == pytest.approx(max(pad._t_weights, gemm)
                                     + max(attention + tile, 5 * kv * pad._t_per_kv_token), rel=1e-9)
    assert with_pad > without * 1.05
    # attn_ctx None (a curve's mean context): the same step, every decode at kv / dec
    assert pad.step_time(tokens, kv, dec, False, drafts) == pytest.approx(with_pad, rel=1e-12)
    # no drafts: max_seqlen_q 1, GQA packed, no tile and no re-read
    assert pad.step_time(dec, kv, dec, False, 0, attn_ctx=kv) == flat.step_time(dec, kv, dec, False, 0, attn_ctx=kv)


@pytest.mark.parametrize("card", ["a100-80g", "l40s"])
def test_the_decode_curve_prices_the_verify_step_as_step_time(card):
    """sps_curve / step_sps_curve of decodes alone (a policy's curve) and step_time as the replica calls it (attn_ctx
    = the decodes' context x (r + drafts) / r) agree at every b; from b = r + 1 the unpacked kernel's cost shows."""
    cm = CostModel.from_config(make_sim(hardware={"preset": card}, model={"name": "qwen3-8b"}))
    flat = dataclasses.replace(cm, mixed_decode_rows=0)  # the same model without FA2's tiles (an FA3-like kernel)
    assert cm._pad_rows == 64 and flat._pad_rows == 0
    r, decode_kv = 32, 32 * 6000.0
    b = np.arange(r, 5 * r + 1)
    curve = cm.step_sps_curve(r, decode_kv, [], 8192)
    want = np.array([1.0 / cm.step_time(int(x), decode_kv, r, True, int(x) - r, decode_kv * x / r) for x in b])
    assert np.allclose(curve(b), want, rtol=1e-9, atol=0)
    packed = np.array([1.0 / flat.step_time(int(x), decode_kv, r, True, int(x) - r, decode_kv * x / r) for x in b])
    assert curve(b)[0] == pytest.approx(packed[0], rel=1e-9)  # b = r: no drafts, the packed kernel
    assert np.all(curve(b)[1:] < packed[1:])
