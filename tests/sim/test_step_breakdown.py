"""sim.step_breakdown: a decode step's terms add up to CostModel.step_time on dense, MoE and hybrid rows, with or
without a prefill chunk (priced as sim.cluster's plan prices it); the chunk's cost grows with its tokens and with
the tokens its request already has; a formula the breakdown does not follow fails loudly; the command line prints
the table (--chunk 0: the decode step alone) or exits 2 with one line on a bad row or value."""
import math

import pytest

from lab.errors import LabError
from sim import step_breakdown as sb
from sim.cost import CostModel
from sim.hardware import dense_gemm_fraction
from sim.public_check import DEFAULT_FILE, load_rows, row_sim_config

ROWS = {r.id: r for r in load_rows(DEFAULT_FILE)}
MOE = "vllm23151-h100-qwen3-30b-a3b-2k-c10"
DENSE = "gpustack-h100-qwen3-8b-c8"
HYBRID = "gpustack-h200-qwen3.5-35b-a3b-fp8-sharegpt-rate-8"
SLIDING = "gpustack-a100-gpt-oss-20b-32k-rate-inf"  # gpt-oss: every other layer a 128-token window


def _cost(row_id):
    return CostModel.from_config(row_sim_config(ROWS[row_id]))


@pytest.mark.parametrize("row_id", [MOE, DENSE, HYBRID])
def test_terms_add_up_to_step_time(row_id):
    cm = _cost(row_id)
    terms = sb.decode_terms(cm, 10, 2550)
    assert terms["total"] == pytest.approx(cm.step_time(10, 10 * 2550.0, 10, False), rel=1e-12)
    assert sum(v for k, v in terms.items() if k != "total") == pytest.approx(terms["total"], rel=1e-9)


@pytest.mark.parametrize("row_id", [MOE, DENSE, HYBRID, SLIDING])
@pytest.mark.parametrize("batch", [0, 10])
def test_a_step_with_a_prefill_chunk_is_priced_as_the_replicas_plan_prices_it(row_id, batch):
    """sim.cluster's plan: C more query tokens, D + C more KV tokens, one more request, the decodes attending to
    their contexts and the chunk causally to C x (D + (C + 1) / 2), its C tokens the step's prefill chunks (the
    chunked GDN kernel's, where the row's card and release price it: the 0.17.1 hybrid row on an H200)."""
    cm, chunk, done, context = _cost(row_id), 2048, 6000, 2550
    terms = sb.decode_terms(cm, batch, context, chunk, done)
    attended = batch * context + chunk * (done + (chunk + 1) / 2)
    copies = 1 if cm.model.linear_layers else 0  # split (the default): the chunk's own state gathered, scattered
    step = cm.step_time(batch + chunk, batch * context + done + chunk, batch + 1, False, attn_ctx=attended,
                        state_copies=copies, chunk_max=chunk, chunk_sum=chunk)
    assert terms["total"] == pytest.approx(step, rel=1e-12)
    assert sum(v for k, v in terms.items() if k != "total") == pytest.approx(terms["total"], rel=1e-9)
    assert (terms["GDN prefill kernel (FlashInfer SM90)"] > 0) == (row_id == HYBRID)
    # the LM head multiplies the chunk's last token only (vLLM's logits_indices): C tokens' layers, one head row;
    # the GDN kernel's tokens give back their recurrence FLOPs (0 off the hybrid row)
    assert cm._t_head_flops > 0
    # the dense linears at the sheet's fraction for the step's rows (dense_gemm_mfu: the A100 rows; 1 elsewhere)
    scale = cm.hw.mfu / dense_gemm_fraction(cm._gemm_log_rows, cm._gemm_fractions, cm.hw.mfu, batch + chunk)
    assert (scale != 1.0) == (cm.hw.name.startswith("a100"))
    assert terms["chunk gemm flops"] == pytest.approx(scale * (chunk * cm._t_per_token_flops
                                                               - (chunk - 1) * cm._t_head_flops)
                                                      - chunk * cm._t_gdn_refund)
    assert terms["gemm flops (decodes)"] == pytest.approx(batch * cm._t_per_token_flops * scale)
    if not cm._sliding:  # a window model prices every token at the mean context (step_time), split by tokens
        assert terms["chunk attention flops"] == pytest.approx(chunk * (done + (chunk + 1) / 2) * cm._t_attn)
    assert "gemm flops" not in terms and "kv reads" not in terms  # the decodes' terms say whose they are


FA2_DENSE = "gpustack-a100-qwen3-14b-2k-rate-inf"  # Qwen3-14B (40 query heads, 8 KV heads) on an A100, vLLM 0.11


@pytest.mark.parametrize("batch, context, groups", [(81, 2050, 5), (48, 130, 1)])
def test_an_fa2_mixed_step_reads_the_decodes_kv_per_query_head_after_the_gemms(batch, context, groups):
    """On an A100 (mixed_decode_tile_rows) a step with a chunk runs the GEMMs, then FA2's padded kernel: KV read once
    per query head (5 for Qwen3-14B) where one layer's KV of one KV head outgrows the 40 MiB L2 (81 x 2,050 tokens:
    166 K x 512 B = 81 MiB), once where it fits (48 x 130); the terms still add up to step_time."""
    cm, chunk = _cost(FA2_DENSE), 2000
    assert cm._mixed_groups == 5 and cm._l2_kv_tokens == pytest.approx(40 * 2 ** 20 / 512)
    terms = sb.decode_terms(cm, batch, context, chunk, 0)
    assert sum(v for k, v in terms.items() if k != "total") == pytest.approx(terms["total"], rel=1e-9)
    kv_sum = batch * context + chunk
    assert terms["kv reads (decodes)"] + terms["chunk kv reads"] == pytest.approx(
        kv_sum * cm._t_per_kv_token * groups)
    gemm = sum(v for k, v in terms.items() if "gemm flops" in k)
    attention = sum(v for k, v in terms.items() if "attention flops" in k or "attention tiles" in k)
    kernel = max(attention, kv_sum * cm._t_per_kv_token * groups)
    fixed = terms["total"] - max(terms["weights (non-expert)"], gemm) - kernel
    assert fixed == pytest.approx(terms["step overhead"] + terms["layer overhead"] + terms[sb.HOST_TERM])
    # the decodes alone (max_seqlen_q == 1): FA2 packs the grouped heads, KV read once and hidden under nothing new
    alone = sb.decode_terms(cm, batch, context)
    assert alone["kv reads"] == pytest.approx(batch * context * cm._t_per_kv_token)


def test_chunk_0_is_the_decode_step_alone():
    cm = _cost(MOE)
    alone, zero = sb.decode_terms(cm, 10, 2550), sb.decode_terms(cm, 10, 2550, 0, 0)
    assert alone == zero and not any("chunk" in k or "(decodes)" in k for k in alone)
    assert sb.chunk_cost(cm, 10, 2550, 1, 0) > 0


def test_the_chunk_costs_more_with_more_tokens_and_with_more_done():
    """More prompt tokens in the chunk: more GEMM rows, KV and attention; more tokens already done: the chunk's
    attention grows by C x the extra done tokens (its GEMM stays), on a compute-bound step."""
    cm, chunk = _cost(DENSE), 2048
    by_chunk = [sb.chunk_cost(cm, 10, 2550, c, 0) for c in (256, 1024, 4096)]
    assert by_chunk[0] < by_chunk[1] < by_chunk[2]
    by_done = [sb.decode_terms(cm, 10, 2550, chunk, d) for d in (0, 8192, 32768)]
    costs = [sb.chunk_cost(cm, 10, 2550, chunk, d) for d in (0, 8192, 32768)]
    assert costs[0] < costs[1] < costs[2]
    grown = by_done[2]["chunk attention flops"] - by_done[0]["chunk attention flops"]
    assert grown == pytest.approx(chunk * 32768 * cm._t_attn, rel=1e-9)
    assert by_done[2]["chunk gemm flops"] == by_done[0]["chunk gemm flops"]


def test_moe_floor_is_the_sheets_per_layer_floor_over_moe_layers():
    cm = _cost(MOE)
    terms = sb.decode_terms(cm, 10, 2550)
    assert terms["moe floor (moe_layer_us)"] == pytest.approx(cm.model.n_moe_layers * cm.hw.moe_layer_us * 1e-6)
    assert terms["layer overhead"] == pytest.approx(cm.model.n_layers * cm.layer_overhead_s)
    assert "moe floor (moe_layer_us)" not in sb.decode_terms(_cost(DENSE), 10, 2550)


def test_a_formula_the_breakdown_does_not_follow_fails(monkeypatch):
    cm = _cost(MOE)
    real = CostModel.step_time
    monkeypatch.setattr(CostModel, "step_time", lambda self, *a, **k: real(self, *a, **k) + 1e-3)
    with pytest.raises(LabError, match="formula changed"):
        sb.decode_terms(cm, 10, 2550)


@pytest.mark.parametrize("batch, context, chunk, done, says", [
    (0, 100, 0, 0, "at least 1 token"), (10, 0, 0, 0, "context 0 must be at least 1"),
    (-1, 100, 0, 0, "cannot be negative"), (10, 100, -5, 0, "cannot be negative"),
    (10, 100, 512, -1, "cannot be negative"), (10, 100, 0, 300, "--done 300"),
    # --context nan / inf printed a table of inf ms and nan% shares with exit 0
    (10, float("nan"), 0, 0, "--context nan: a finite number"), (10, float("inf"), 0, 0, "--context inf: a finite"),
    (0, float("nan"), 512, 0, "--context nan")])
def test_bad_values_are_refused(batch, context, chunk, done, says):
    with pytest.raises(LabError, match=says):
        sb.decode_terms(_cost(DENSE), batch, context, chunk, done)


def test_a_huge_context_adds_up_to_float_precision():
    """At 1e15 cached tokens the step is ~1e8 s: its terms differ from step_time by more than 1e-9 s of rounding
    alone, which raised 'formula changed' (sim.decode_profile_check with context_tokens 1e15 did)."""
    terms = sb.decode_terms(_cost(MOE), 10, 1e15)
    assert terms["total"] > 1e6 and math.isclose(sum(v for k, v in terms.items() if k != "total"), terms["total"],
                                                  rel_tol=1e-12)


def test_command_line(capsys):
    assert sb.main([MOE, "--batch", "10", "--context", "2550"]) == 0
    out = capsys.readouterr().out
    assert "total (step_time)" in out and "moe floor" in out and "47.9 of 128 (routing skew 1.16)" in out
    assert sb.main([MOE, "--batch", "10", "--context", "2550", "--chunk", "0"]) == 0
    assert capsys.readouterr().out == out  # --chunk 0: today's table
    assert sb.main([MOE, "--batch", "10", "--context", "2550", "--chunk", "2048", "--done", "4096"]) == 0
    chunked = capsys.readouterr().out
    assert "prefill chunk of 2048 tokens after 4096 done" in chunked and "| chunk attention flops |" in chunked
    assert "the chunk adds" in chunked and "of the decodes alone" in chunked
    assert sb.main(["no-such-row", "--batch", "1", "--context", "1"]) == 2
    assert "no row" in capsys.readouterr().err
    assert sb.main([MOE, "--batch", "10", "--context", "2550", "--chunk", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--chunk -3" in err


@pytest.mark.parametrize("batch", [0, 10, 200])
def test_a_hybrid_rows_mixed_step_copies_every_state_before_vllm_0_23(batch):
    """vLLM 0.17.1 (the gpustack Qwen3.5 rows: engine.linear_attn_mixed unified) gathers and scatters the state of
    every request of a step with a prefill chunk, its decodes' too: (batch + 1) x 4 x the state bytes at the
    streaming fraction -- 30 layers x 2,146,304 bytes (fp32 recurrent state) on an H200 at 0.75 x 4.8 TB/s; split
    copies the chunk's request's only, and a decode step nothing."""
    row = ROWS[HYBRID]
    sim = row_sim_config(row)
    assert row.vllm == "0.17.1" and sim.engine.linear_attn_mixed == "unified"
    cm = CostModel.from_config(sim)
    per_request = 4 * 30 * 2_146_304 / (0.75 * 4.8e12)
    assert cm._t_state_copy == pytest.approx(per_request, rel=1e-3)
    unified = sb.decode_terms(cm, batch, 500, 342, 0, "unified")
    split = sb.decode_terms(cm, batch, 500, 342, 0, "split")
    key = "linear-attention state copies (mixed step)"
    assert unified[key] == pytest.approx((batch + 1) * cm._t_state_copy) and split[key] == cm._t_state_copy
    assert unified["total"] - split["total"] == pytest.approx(batch * cm._t_state_copy, rel=1e-9)
    if batch:
        assert sb.decode_terms(cm, batch, 500, 0, 0, "unified")[key] == 0.0  # no prefill: in place
        assert sb.decode_terms(cm, batch, 500, 1, 0, "unified")[key] == 0.0  # a 1-token chunk is a decode
    assert sb.decode_terms(_cost(DENSE), batch, 500, 342, 0, "unified")[key] == 0.0  # no linear layers
