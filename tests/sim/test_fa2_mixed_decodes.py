"""FA2's mixed batch: a decode beside a prefill chunk pays a 64-row attention tile per query head (the sheet's
mixed_decode_tile_rows, CostModel.mixed_decode_tile_flops; BENCHMARKS.md session 39, h125)."""
import dataclasses

import pydantic
import pytest

from lab.config_sim import HardwareSheet
from sim.cluster import _chunk_kw
from sim.cost import FA2_KEY_BLOCK, CostModel, mixed_decode_rows
from sim.hardware import get_hardware, hardware_presets
from sim.models import get_model
from sim.step_breakdown import decode_terms
from tests.sim.conftest import make_sim


def bare(hw_name: str, model: str = "qwen3-14b", rows: int | None = None, **kw) -> CostModel:
    hw = get_hardware(hw_name)
    return CostModel(hw, get_model(model), step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0,
                     mixed_decode_rows=hw.mixed_decode_tile_rows or 0 if rows is None else rows, **kw)


# presets vLLM V1 runs FlashAttention 2 on (FLASH_ATTN leads everywhere but 10.x; get_flash_attn_version takes FA3 on
# 9.x only): compute capability 8.0, 8.6, 8.9 and 12.0 (BENCHMARKS.md session 39, h133). rtx-4090 (8.9) is held null
# (re-checked after h132's decode repricing, session 39 h138: 64 still costs held-out rows; hardware.yaml), so it is
# in neither list.
FA2_CARDS = ("a100-80g", "a100-40g", "a10", "a10g", "a40", "rtx-3090", "rtx-a6000", "l4", "l40", "l40s",
             "rtx-6000-ada", "rtx-5090", "rtx-pro-6000")
# FA3 (Hopper: GQA packed with vLLM's 16-token pages, tiles per request's own rows), FlashInfer (B200), ROCm, CPU
NOT_FA2 = ("h100", "h200", "h100-pcie", "h20", "b200", "mi300x", "mi325x", "mi355x", "cpu")


def test_the_fa2_sheets_pad_the_others_do_not():
    for name in FA2_CARDS:
        assert get_hardware(name).mixed_decode_tile_rows == 64, name
    for name in NOT_FA2:
        assert get_hardware(name).mixed_decode_tile_rows is None, name
    assert set(FA2_CARDS) | set(NOT_FA2) | {"rtx-4090"} == set(hardware_presets())  # a new preset is placed


@pytest.mark.parametrize("card", ["l40s", "a10g", "rtx-5090"])
def test_an_ada_ampere_or_gb202_mixed_step_pays_the_same_tiles(card):
    """The padded FLOPs on the other FA2 cards follow the A100's arithmetic at the card's own attention rate:
    48 decodes at 1,500 cached tokens of Qwen3-8B beside a 2,048-token chunk. The tiles alone: the sheet's
    mixed_kv_reread off here (its per-head reads: test_dense_gemm_and_fa2_mixed.py's L2 test)."""
    hw = get_hardware(card)
    assert hw.mixed_kv_reread  # session 39 (h138): every card that pads re-reads too
    hw = hw.model_copy(update={"mixed_kv_reread": False})
    zero = {"step_overhead_s": 0, "layer_overhead_s": 0, "request_overhead_s": 0}
    pad = CostModel(hw, get_model("qwen3-8b"), mixed_decode_rows=64, **zero)
    flat = CostModel(hw, get_model("qwen3-8b"), mixed_decode_rows=0, **zero)
    m = pad.model
    dec, ctx, chunk = 48, 1500.0, 2048
    kw = {"chunk_max": chunk, "chunk_sum": chunk, "chunk_kv": float(chunk), "chunk_reqs": 1}
    kv, attn = dec * ctx + chunk, dec * ctx + chunk * (chunk + 1) / 2
    extra = (64 * (dec * ctx + dec * (FA2_KEY_BLOCK - 1) / 2) - dec * ctx) * 4 * m.n_heads * m.head_dim * m.n_layers
    rate = hw.peak_for("bf16") * 1e12 * (hw.attn_mfu or hw.mfu)
    gap = pad.step_time(dec + chunk, kv, dec + 1, False, attn_ctx=attn, **kw) - \
        flat.step_time(dec + chunk, kv, dec + 1, False, attn_ctx=attn, **kw)
    assert gap == pytest.approx(extra / rate, rel=1e-9) and gap > 0


def test_an_fp8_kv_cache_takes_another_backend():
    """vLLM's FLASH_ATTN takes an fp8 KV cache on FA3 only (flash_attn_supports_fp8), so on an FA2 card such a
    model runs Triton / FlashInfer attention: no padded tiles."""
    fp8_kv = dataclasses.replace(get_model("qwen3-8b"), kv_dtype="fp8")
    assert CostModel(get_hardware("l40s"), fp8_kv, mixed_decode_rows=64)._pad_rows == 0
    assert CostModel(get_hardware("l40s"), get_model("qwen3-8b"), mixed_decode_rows=64)._pad_rows == 64


def test_a_mixed_step_pays_the_padded_rows_by_hand():
    """80 decodes at 4,000 cached tokens beside a 1,968-token chunk: the compute term grows by (64 x (each context
    rounded up to whole key blocks, on average + 63.5) - the decodes' own context) x 4 x heads x head_dim x layers
    attention FLOPs at the attention rate; the step without the field costs that much less where compute binds."""
    pad, flat = bare("a100-80g"), bare("a100-80g", rows=0)
    m = pad.model
    dec, ctx, chunk = 80, 4000.0, 1968
    kv = dec * ctx + chunk
    attn = dec * ctx + chunk * (chunk + 1) / 2
    kw = {"chunk_max": chunk, "chunk_sum": chunk, "chunk_kv": float(chunk), "chunk_reqs": 1}
    extra_pairs = 64 * (dec * ctx + dec * (FA2_KEY_BLOCK - 1) / 2) - dec * ctx
    flops = extra_pairs * 4 * m.n_heads * m.head_dim * m.n_layers
    rate = get_hardware("a100-80g").peak_for("bf16") * 1e12 * get_hardware("a100-80g").mfu  # attn_mfu null: mfu
    with_pad = pad.step_time(dec + chunk, kv, dec + 1, False, attn_ctx=attn, **kw)
    without = flat.step_time(dec + chunk, kv, dec + 1, False, attn_ctx=attn, **kw)
    assert 0.05 < flops / rate < 0.2  # ~70 ms on one A100: no rounding error beside a ~0.2 s chunk
    # the same kernel runs after the GEMMs and reads each decode's KV once per query head (session 39, h130): the
    # step is the GEMMs, then the longer of its FLOPs (the padded tiles too) and those reads (5 per Qwen3-14B group;
    # 80 x 4,000 tokens of one layer and KV head outgrow the 40 MiB L2)
    attention = attn * flat._t_attn
    gemm = without - attention  # the plain roofline of this compute-bound step: GEMMs + attention
    assert gemm > flat._t_weights and pad._mixed_groups == 5 and kv > pad._l2_kv_tokens
    assert with_pad == pytest.approx(max(pad._t_weights, gemm)
                                     + max(attention + flops / rate, 5 * kv * pad._t_per_kv_token), rel=1e-9)


def test_decode_only_steps_chunks_of_one_and_empty_decodes_are_unchanged():
    pad, flat = bare("a100-80g"), bare("a100-80g", rows=0)
    assert pad.step_time(64, 64 * 3000.0, 64, False) == flat.step_time(64, 64 * 3000.0, 64, False)
    one = {"chunk_max": 1, "chunk_sum": 0, "chunk_kv": 501.0, "chunk_reqs": 1}  # max_seqlen_q 1: GQA-packed path
    assert pad.step_time(65, 64 * 3000.0 + 501, 65, False, attn_ctx=64 * 3000.0 + 500, **one) == \
        flat.step_time(65, 64 * 3000.0 + 501, 65, False, attn_ctx=64 * 3000.0 + 500, **one)
    alone = {"chunk_max": 2048, "chunk_sum": 2048, "chunk_kv": 2048.0, "chunk_reqs": 1}  # no decodes beside it
    assert pad.step_time(2048, 2048.0, 1, False, attn_ctx=2048 * 2049 / 2, **alone) == \
        flat.step_time(2048, 2048.0, 1, False, attn_ctx=2048 * 2049 / 2, **alone)
    assert pad.mixed_decode_tile_flops(0.0, 0) == 0.0


def test_the_release_and_the_attention_kind_decide():
    a100 = get_hardware("a100-80g")
    assert mixed_decode_rows(a100, "0.11.0") == 64 and mixed_decode_rows(a100, None) == 64
    assert mixed_decode_rows(a100, "0.7.3") == 0  # V0: prefills and decodes as two attention calls
    assert mixed_decode_rows(get_hardware("h100"), "0.11.0") == 0
    assert CostModel.from_config(make_sim(hardware={"preset": "a100-80g"},
                                          engine={"vllm_version": "0.6.0"})).mixed_decode_rows == 0
    assert CostModel.from_config(make_sim(hardware={"preset": "a100-80g"},
                                          engine={"vllm_version": "0.11.0"})).mixed_decode_rows == 64
    assert bare("a100-80g", "gemma3-12b")._pad_rows == 0  # sliding-window roofline: attended context capped
    mla = dataclasses.replace(get_model("qwen3-14b"), kv_dim_override=576)  # MLA: another attention backend
    assert CostModel(get_hardware("a100-80g"), mla, mixed_decode_rows=64)._pad_rows == 0


def test_the_breakdown_shows_the_term_and_still_adds_up():
    cm = CostModel.from_config(make_sim(hardware={"preset": "a100-80g"}, model={"name": "qwen3-14b"}))
    terms = decode_terms(cm, 80, 4000, chunk=1968, done=0)  # raises if the terms miss step_time
    padded = terms["decodes' padded attention tiles (FA2 mixed step)"]
    assert padded == pytest.approx(cm.mixed_decode_tile_flops(80 * 4000.0, 80) * cm._t_attn)
    assert padded > 0 and decode_terms(cm, 80, 4000)["decodes' padded attention tiles (FA2 mixed step)"] == 0


def test_the_replica_tells_step_time_what_the_chunks_hold():
    class Item:
        def __init__(self, done):
            self.done = done
    kw = _chunk_kw([(Item(4000), 96), (Item(0), 1872)])
    assert kw["chunk_kv"] == 4000 + 96 + 1872 and kw["chunk_reqs"] == 2
    assert kw["chunk_max"] == 1872 and _chunk_kw([]) == {}


def test_the_sheet_field_is_checked():
    sheet = hardware_presets()["a100-80g"]
    with pytest.raises(pydantic.ValidationError, match="mixed_decode_tile_rows"):
        HardwareSheet.model_validate({**sheet, "mixed_decode_tile_rows": 1})
    assert HardwareSheet.model_validate({**sheet, "mixed_decode_tile_rows": None}).mixed_decode_tile_rows is None
