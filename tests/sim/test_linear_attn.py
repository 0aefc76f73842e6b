"""Hybrid linear-attention models (Qwen3-Next, Qwen3.5): parameters per layer kind, KV from the full layers only,
a fixed state per request in the step cost and in vLLM's block pool (sim/linear_attn.py, sim/kv_cache.StateKV).
The expected numbers are computed by hand in each docstring from transformers' Qwen3NextGatedDeltaNet and vLLM
V1's rules (HybridAttentionMambaModelConfig, _get_kv_cache_groups_uniform_page_size, MambaManager)."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydantic
import pytest

from lab.errors import LabError
from sim.cost import CostModel, linear_state_bandwidth
from sim.cuda_graphs import cuda_graph_memory_bytes, graph_counts
from sim.hardware import achievable_bandwidth, get_hardware
from sim.kv_cache import GIB, KVGroups, StateKV, activation_reserve_bytes, kv_groups
from sim.linear_attn import state_copies
from sim.models import from_hf_config, get_model
from sim.public_check import vllm_version_defaults
from sim.serving_metrics import per_request
from sim.simulate import kv_pool, prepare_inputs, simulate
from tests.sim.conftest import make_sim

QWEN3_NEXT = Path(__file__).resolve().parents[2] / "sim" / "validation" / "configs" / "qwen3-next-80b-a3b-instruct.json"

# 4 layers, every 2nd full: layers 1 and 3 full attention, 0 and 2 Gated DeltaNet
TINY = {"model_type": "qwen3_next", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 100,
        "tie_word_embeddings": False, "full_attention_interval": 2, "linear_num_key_heads": 2,
        "linear_key_head_dim": 8, "linear_num_value_heads": 4, "linear_value_head_dim": 8,
        "linear_conv_kernel_dim": 4, "torch_dtype": "bfloat16"}


def _write(tmp_path, cfg, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


def test_params_counted_per_layer_kind(tmp_path):
    """Full layer (gated q): q 64 x (4 x 16 x 2) = 8,192, k + v 2 x 64 x 32 = 4,096, o 64 x 64 = 4,096: 16,384.
    Linear layer: key_dim 16, value_dim 32, conv_dim 64; in_proj_qkvz 64 x 96 = 6,144, in_proj_ba 64 x 8 = 512,
    conv1d 64 x 4 = 256, dt_bias + A_log 8, norm 8, out_proj 32 x 64 = 2,048: 8,976.
    MLP 3 x 64 x 96 = 18,432 a layer; norms 2 x 64 a layer + 64; untied embeddings 2 x 100 x 64 = 12,800.
    Total 12,800 + 2 x 16,384 + 2 x 8,976 + 4 x (18,432 + 128) + 64 = 137,824; active = total - input embedding."""
    m = from_hf_config(_write(tmp_path, TINY))
    assert (m.linear_layers, m.kv_layers) == (2, 2)
    assert m.linear.params(64) == 8_976
    assert round(m.params_b * 1e9) == 137_824 and round(m.active_params_b * 1e9) == 137_824 - 6_400


def test_kv_and_attention_only_from_full_layers(tmp_path):
    """KV per token: 2 full layers x 2 x 2 heads x 16 x 2 bytes = 256 (all 4 layers would be 512); score FLOPs
    per cached token 2 x 2 layers x 2 x 64 = 512. State per request and layer: conv 64 x 3 x 2 = 384 bytes +
    recurrent 4 x 8 x 8 x 2 = 512; the recurrence 7 x 4 x 8 x 8 + 2 x 64 x 4 = 2,304 FLOPs a token a layer."""
    m = from_hf_config(_write(tmp_path, TINY))
    assert m.kv_bytes_per_token == 256 and m.attn_flops_per_context_token == 512
    assert m.linear.state_bytes() == 896 and m.state_bytes == 2 * 896
    assert m.linear.flops_per_token == 2_304
    assert m.flops_per_token == 2 * (137_824 - 6_400) + 2 * 2_304
    assert m.attended_context(10_000) == 10_000  # the full layers attend over everything, the linear ones not at all


def test_layer_types_and_qwen35_text_config_read_alike(tmp_path):
    """An explicit layer_types list is the interval's pattern; Qwen3.5 nests the text model under text_config and
    keeps its recurrent state in float32 (mamba_ssm_dtype): 4 x 8 x 8 x 4 = 1,024 bytes + the bf16 conv 384."""
    listed = {k: v for k, v in TINY.items() if k != "full_attention_interval"}
    listed["layer_types"] = ["linear_attention", "full_attention"] * 2
    a, b = from_hf_config(_write(tmp_path, TINY, "a.json")), from_hf_config(_write(tmp_path, listed, "b.json"))
    assert replace(a, source=None, name="x") == replace(b, source=None, name="x")
    qwen35 = {"model_type": "qwen3_5", "text_config": {**listed, "model_type": "qwen3_5_text",
                                                       "mamba_ssm_dtype": "float32", "attn_output_gate": True}}
    c = from_hf_config(_write(tmp_path, qwen35, "c.json"))
    assert c.params_b == a.params_b and c.linear.state_bytes() == 384 + 1_024
    with pytest.raises(LabError, match="layer_types"):
        from_hf_config(_write(tmp_path, {**listed, "layer_types": ["linear_attention"] * 3}, "d.json"))
    with pytest.raises(LabError, match="at least one full_attention"):
        from_hf_config(_write(tmp_path, {**listed, "layer_types": ["linear_attention"] * 4}, "e.json"))


def test_qwen3_next_80b_matches_its_card():
    """The published config (sim/validation/configs): 48 layers, 12 full + 36 linear; ~80B total, ~3B active
    (the card: "80B total parameters, only 3B active"). KV 12 x 2 x 2 x 256 x 2 = 24,576 bytes a token (a quarter
    of what 48 full layers would hold); state 36 x (8,192 x 3 x 2 + 32 x 128 x 128 x 2) = 39,518,208 bytes."""
    m = from_hf_config(QWEN3_NEXT)
    assert (m.n_layers, m.kv_layers, m.linear_layers) == (48, 12, 36)
    assert 79.0 < m.params_b < 81.0 and 3.0 < m.active_params_b < 3.8
    assert m.kv_bytes_per_token == 24_576 and m.state_bytes == 36 * 1_097_728 == 39_518_208


def test_step_cost_reads_state_once_per_request(tmp_path):
    """One more request with the same KV adds its request overhead and one read + write of its state; one
    more cached token adds its full-layer KV only. The SPS curve's closed form agrees with step_time."""
    m = from_hf_config(_write(tmp_path, TINY))
    hw = get_hardware("h100")
    cm = CostModel(hw, m)
    bw, state_bw = achievable_bandwidth(hw), linear_state_bandwidth(hw)
    t4, t5 = cm.step_time(4, 4_000, 4, False), cm.step_time(4, 4_000, 5, False)
    assert t5 - t4 == pytest.approx(cm.request_overhead_s + 2 * 2 * 896 / state_bw, rel=1e-9)
    assert cm.step_time(4, 5_000, 4, False) - t4 == pytest.approx(1_000 * 256 / bw, rel=1e-9)
    assert float(cm.step_time_vec([4], 4_000, 5, False)[0]) == pytest.approx(t5, rel=1e-12)
    sps = cm.sps_curve(0, 4_000, 4)
    assert 1 / float(sps(4)) == pytest.approx(cm.step_time(4, 4_000, 4, True), rel=1e-12)


def test_state_moves_at_the_recurrent_kernels_fraction(tmp_path):
    """The recurrent state moves at linear_state_bw_efficiency x peak (the fused recurrent GDN kernel's fraction,
    0.54 on the GH100 cards from vLLM PR 31722's H200 timings), not at the KV reads' 0.75: one more request costs
    2 x 2 x 896 B / (0.54 x 3.35 TB/s) on an H100. A sheet without the field keeps the KV fraction, and a
    sheet's kv_bw_efficiency does not move the state when the field is set."""
    m = from_hf_config(_write(tmp_path, TINY))
    hw = get_hardware("h100")
    assert hw.linear_state_bw_efficiency == 0.54
    assert linear_state_bandwidth(hw) == pytest.approx(0.54 * 3.35e12)
    cm = CostModel(hw, m)
    extra = cm.step_time(4, 4_000, 5, False) - cm.step_time(4, 4_000, 4, False) - cm.request_overhead_s
    assert extra == pytest.approx(2 * 2 * 896 / (0.54 * 3.35e12), rel=1e-9)
    plain = hw.model_copy(update={"linear_state_bw_efficiency": None, "kv_bw_efficiency": 0.6})
    assert linear_state_bandwidth(plain) == pytest.approx(0.6 * 3.35e12)
    assert linear_state_bandwidth(hw.model_copy(update={"kv_bw_efficiency": 0.6})) == pytest.approx(0.54 * 3.35e12)
    assert linear_state_bandwidth(get_hardware("a100-80g")) == pytest.approx(0.75 * 2.039e12)


def test_kv_groups_and_block_size_as_vllm():
    """Qwen3-Next-80B bf16: 12 full + 36 linear layers -> groups of 12: 1 full + 3 state. tp 1: a token's KV in
    one layer 2 x 2 x 256 x 2 = 2,048 bytes, one layer's state 1,097,728 -> block 16 x ceil(1,097,728 / 32,768)
    = 544; tp 4: one KV head a GPU (replicated), 1,024 bytes, a quarter of the state 274,432 -> 16 x 17 = 272.
    An engine block of 1,024 is kept (alignment max(16, 1,024)). Dense and sliding models keep their groups."""
    m = from_hf_config(QWEN3_NEXT)
    assert kv_groups(m) == KVGroups(full=1, sliding=0, layers=12, state=3, block_size=544)
    assert kv_groups(m, tp=4).block_size == 272 and kv_groups(m, block_size=1024).block_size == 1024
    assert kv_groups(m, hybrid=False) == kv_groups(m)  # vLLM has no other manager for these layers
    assert kv_groups(get_model("qwen3-8b"), tp=4) == KVGroups(full=1, sliding=0, layers=36)
    assert kv_groups(get_model("gemma3-12b"), tp=2) == KVGroups(full=1, sliding=5, layers=8, window=1024)


def test_state_blocks_by_hand():
    """Block 4, 1 full + 3 state groups, 40 blocks: a request of 10 slots holds 3 full blocks + 3 state blocks;
    its decode grows only the full group. 1-token requests hold 4 blocks each: 10 fit where full KV alone would
    hold 40; with 2 speculative tokens a request keeps 3 x (1 + 2) = 9 state blocks."""
    kv = StateKV(total_blocks=40, block_size=4, groups=KVGroups(1, 0, 1, state=3))
    held = kv.admit(prompt=10, output=5, slots_now=10)
    assert held == 6 and kv.free == 34
    assert kv.grow(held, 12, 10) == 6 and kv.grow(held, 13, 12) == 7 and kv.free == 33
    assert kv.grow_decode(7, 13, 0) == (7, 16) and kv.row_cap(7, 13, 12, 0) == 16
    kv.release(7)
    assert kv.free == 40 and kv.fits_ever(37 * 4) and not kv.fits_ever(37 * 4 + 1)
    assert [kv.admit(1, 1, 1) for _ in range(11)] == [4] * 10 + [None]
    spec = StateKV(total_blocks=40, block_size=4, groups=KVGroups(1, 0, 1, state=3), spec_tokens=2)
    assert spec.admit(1, 1, 1 + 2) == 1 + 9


def _next_sim(policy, **engine):
    return make_sim(model={"config": str(QWEN3_NEXT)}, hardware={"name": "h200", "tp": 2},
                    engine={"kv_capacity_tokens": 25 * 544, **engine},
                    workload={"kind": "closed_loop", "concurrency": 64, "duration_s": 5, "warmup_s": 0.5,
                              "lengths": {"source": "fixed", "prompt_tokens": 100, "output_tokens": 50}},
                    policies=[policy])


def test_concurrency_bounded_by_state_memory():
    """A logged KV size of 25 x 544 tokens is 25 x 4 = 100 group-blocks (vLLM <= 0.11: blocks // 4 groups x 544).
    A 150-token request needs one full block and 3 state blocks: 25 run at once though the full-layer KV of
    64 such requests is only 64 x 150 tokens; with fixed k = 3 each also keeps 3 x 3 more: 100 // 13 = 7."""
    ar = simulate(prepare_inputs(_next_sim({"kind": "ar"})), "ar", None, 0, keep_cluster=True)
    kv = ar.cluster.replicas[0].kv
    assert isinstance(kv, StateKV) and (kv.total, kv.block_size) == (100, 544)
    assert ar.summary["peak_running"] == 25 and ar.summary["finished"] > 0
    k3 = simulate(prepare_inputs(_next_sim({"kind": "fixed_k", "k": 3})), "fixed_k3", None, 0)
    assert k3.summary["peak_running"] == 7


def test_pool_from_memory_by_hand():
    """Qwen3-Next-80B on 2 x H200 at 0.92 (vLLM 0.20+'s default): a group-block is 544 slots x 12 layers x 2,048 bytes (one KV head per
    GPU, 1,024 bytes each) = 13,369,344 bytes; pool = (2 x (141 GiB x 0.92 - reserve) - weights) // that, the
    reserve the engine's (`vllm serve`'s defaults on an H200: 8,192 tokens, 1,024 sequences of its 151,936-token
    vocab; FlashInfer's sampler, custom all-reduce over NVLink) and vLLM 0.20+'s CUDA-graph estimate; vLLM's log:
    pool // 4 x 544 tokens."""
    sim = _next_sim({"kind": "ar"}, kv_capacity_tokens=None)
    cost = CostModel.from_config(sim)
    m = cost.model
    assert (m.vocab, sim.engine.max_num_seqs, sim.engine.sampler) == (151936, None, "flashinfer")
    reserve = activation_reserve_bytes(2048, 8192, 151936, 1024, "flashinfer", tp=2, custom_all_reduce=True) + \
        cuda_graph_memory_bytes(*graph_counts(1024, 8192))  # vLLM 0.20+'s CUDA-graph estimate
    # the weights, and the second GPU's own copy of the MoE routers (vLLM replicates them: sim/models.REPLICATED)
    budget = 2 * (get_hardware("h200").usable_mem_gib * GIB * 0.92 - reserve) - m.params_b * 1e9 * 2 \
        - m.replicated_params_b * 1e9 * 2
    tokens, blocks = kv_pool(sim, cost)
    assert blocks == int(budget // (544 * 12 * 2048)) and tokens == blocks // 4 * 544


def test_state_copies_follow_vllms_mixed_step_rule():
    """vLLM's GDN layer (gdn_linear_attn.py _forward_core): a step without a request of more than one query token
    copies nothing; with one, before PR 44700 (unified) every non-speculative request's state is gathered and
    scattered back -- the chunks' (a 1-token chunk too) and the decodes' unless they verify drafts; from it (split)
    only the prefill requests'."""
    assert state_copies(8, [], False, "unified") == 0 and state_copies(8, [1, 1], False, "unified") == 0
    assert state_copies(8, [342], False, "unified") == 9 and state_copies(8, [342, 1], False, "unified") == 10
    assert state_copies(8, [342, 1], True, "unified") == 2  # drafting decodes: the speculative path, in place
    assert state_copies(8, [342, 1], False, "split") == 1 and state_copies(0, [342, 90], False, "split") == 2
    with pytest.raises(LabError, match="linear_attn_mixed"):
        state_copies(8, [342], False, "fused")


def test_a_state_copy_costs_four_passes_at_the_streaming_fraction(tmp_path):
    """TINY's 2 linear layers hold 2 x 896 bytes of state a request: each copied request adds 4 x 1,792 bytes at
    bw_efficiency x peak (0.75 x 3.35 TB/s on an H100), outside the roofline's max (the copies are kernels of their
    own); a model without linear layers has nothing to copy."""
    m = from_hf_config(_write(tmp_path, TINY))
    cm = CostModel(get_hardware("h100"), m)
    base = cm.step_time(104, 4_000, 5, False)
    assert cm.step_time(104, 4_000, 5, False, state_copies=3) - base == pytest.approx(
        3 * 4 * 1_792 / (0.75 * 3.35e12), rel=1e-9)
    dense = CostModel(get_hardware("h100"), get_model("qwen3-8b"))
    assert dense.step_time(104, 4_000, 5, False, state_copies=3) == dense.step_time(104, 4_000, 5, False)


def test_vllm_before_0_23_runs_mixed_steps_unified():
    """v0.22.0 predates PR 44700 (merged 2026-06-06; v0.22.0 logs from 2026-05-30); 0.23 on is taken as split, and a
    row that names no version keeps the engine default (split: priced as before for its decodes)."""
    assert vllm_version_defaults("0.17.1")["linear_attn_mixed"] == "unified"
    assert vllm_version_defaults("0.22.1rc2")["linear_attn_mixed"] == "unified"
    assert vllm_version_defaults("0.23.0")["linear_attn_mixed"] == "split"
    assert "linear_attn_mixed" not in vllm_version_defaults(None)
    assert make_sim().engine.linear_attn_mixed == "split"
    with pytest.raises(pydantic.ValidationError, match="linear_attn_mixed"):
        make_sim(engine={"linear_attn_mixed": "fused"})


def _mixed_sim(mode, model=None):
    return make_sim(model=model or {"config": str(QWEN3_NEXT)}, hardware={"name": "h200", "tp": 2},
                    engine={"linear_attn_mixed": mode},
                    workload={"kind": "poisson", "rate": 30.0, "max_requests": 150, "duration_s": 60,
                              "warmup_s": 0.0, "drain": True,
                              "lengths": {"source": "fixed", "prompt_tokens": 300, "output_tokens": 300}})


def test_unified_mixed_steps_slow_a_hybrids_decodes_under_load():
    """Poisson arrivals beside running decodes: unified, every step that takes a new prompt also copies the
    running requests' states, so TPOT rises over split; TTFT rises with it (slower steps). A dense model runs alike
    under either setting."""
    out = {mode: simulate(prepare_inputs(_mixed_sim(mode)), "ar", None, 0) for mode in ("split", "unified")}
    tpot = {mode: float(per_request(r.requests)["tpot_ms"].mean()) for mode, r in out.items()}
    assert tpot["unified"] > 1.015 * tpot["split"]
    ttft = {mode: float(per_request(r.requests)["ttft_s"].mean()) for mode, r in out.items()}
    assert ttft["unified"] > ttft["split"]
    dense = {mode: simulate(prepare_inputs(_mixed_sim(mode, {"name": "qwen3-8b"})), "ar", None, 0)
             for mode in ("split", "unified")}
    assert per_request(dense["split"].requests)["tpot_ms"].mean() == per_request(dense["unified"].requests)[
        "tpot_ms"].mean()


def test_the_state_kernel_adds_to_a_compute_bound_step(tmp_path):
    """The recurrent GDN kernel that reads and writes each request's state is a kernel of its own between the
    layer's projections (vLLM runs them one after another), and linear_state_bw_efficiency was fitted on its
    timings alone (sim.gdn_kernels): in a step whose GEMMs bind (8192 prompt tokens), one more request still adds
    its 2 x state bytes at that fraction, not nothing (hidden under the FLOPs). The vector and closed-form SPS
    paths agree; a memory-bound step (4 tokens) costs what it did, weights + KV + state."""
    m = from_hf_config(_write(tmp_path, TINY))
    hw = get_hardware("h100")
    cm = CostModel(hw, m)
    big = 8192
    assert big * cm._t_per_token_flops > cm._t_weights + 4_000 * cm._t_per_kv_token  # the GEMMs bind
    attended = big * 2_000.0  # the same attention either way (step_time's attn_ctx)
    five, four = (cm.step_time(big, 4_000, n, False, attn_ctx=attended) for n in (5, 4))
    extra = five - four - cm.request_overhead_s - cm._t_head_flops  # one more request: one more logit row too
    assert extra == pytest.approx(2 * 2 * 896 / linear_state_bandwidth(hw), rel=1e-9)
    assert float(cm.step_time_vec([big], 4_000, 5, False)[0]) == pytest.approx(cm.step_time(big, 4_000, 5, False))
    sps = cm.sps_curve(big, 4_000, 5, 4)
    assert 1 / float(sps(4)) == pytest.approx(cm.step_time(big + 4, 4_000, 5, True), rel=1e-12)
    memory_bound = cm.step_time(4, 4_000, 4, False) - cm._fixed - 4 * cm.request_overhead_s
    assert memory_bound == pytest.approx(cm._t_weights + 4_000 * cm._t_per_kv_token + 4 * cm._t_state, rel=1e-9)


CODER_NEXT_FP8 = QWEN3_NEXT.parent / "qwen3-coder-next-fp8.json"


def test_first_prefill_autotunes_fla_kernels_before_0_18_off_sm90():
    """vLLM up to 0.17 skips the GDN kernels in its profile run, so a fresh server's first prefill autotunes FLA's
    Triton kernels (PR 36599, non-SM90 only; PR 37338's fix taken from 0.18): the one-off is set for a hybrid on an
    RTX PRO 6000 at 0.16.0, not on an H200 (FlashInfer's kernel), not from 0.18, not without a release, not for a
    model without linear layers; engine_with_defaults writes it, a value the section gives stands."""
    from sim.hardware import engine_with_defaults, hardware_from_config
    from sim.linear_attn import FIRST_PREFILL_AUTOTUNE_S, first_prefill_autotune_s
    from sim.models import model_from_config

    assert first_prefill_autotune_s("0.16.0", "rtx-pro-6000", True) == FIRST_PREFILL_AUTOTUNE_S > 0
    assert first_prefill_autotune_s("0.17.1", "rtx-5090", True) == FIRST_PREFILL_AUTOTUNE_S
    assert first_prefill_autotune_s("0.16.0", "h200", True) == 0.0
    assert first_prefill_autotune_s("0.18.0", "rtx-pro-6000", True) == 0.0
    assert first_prefill_autotune_s(None, "rtx-pro-6000", True) == 0.0
    assert first_prefill_autotune_s("0.16.0", "rtx-pro-6000", False) == 0.0

    def engine(**kw):
        sim = make_sim(model={"config": str(CODER_NEXT_FP8)}, hardware={"name": "rtx-pro-6000"},
                       engine={"vllm_version": "0.16.0", **kw})
        return engine_with_defaults(sim.engine, hardware_from_config(sim.hardware), model_from_config(sim.model))

    assert engine().linear_attn_autotune_s == FIRST_PREFILL_AUTOTUNE_S
    assert engine(linear_attn_autotune_s=0.0).linear_attn_autotune_s == 0.0


def _autotune_run(seconds):
    sim = make_sim(model={"config": str(CODER_NEXT_FP8)}, hardware={"name": "rtx-pro-6000"},
                   engine={"linear_attn_autotune_s": seconds},
                   workload={"kind": "closed_loop", "concurrency": 2, "max_requests": 6, "duration_s": 1e4,
                             "warmup_s": 0.0, "drain": True,
                             "lengths": {"source": "fixed", "prompt_tokens": 600, "output_tokens": 20}})
    return per_request(simulate(prepare_inputs(sim), "ar", None, 0).requests).sort_values("request_id")


def test_the_autotune_is_paid_once_by_the_first_prefill_step():
    """The one-off lengthens the replica's first step that holds a prefill only: both requests of the first wave
    (one step of 1200 prompt tokens) wait the extra seconds; every later request's TTFT is as without it."""
    base, tuned = _autotune_run(0.0), _autotune_run(5.0)
    extra = tuned["ttft_s"].to_numpy() - base["ttft_s"].to_numpy()
    assert extra[:2] == pytest.approx([5.0, 5.0], abs=1e-6)
    assert extra[2:] == pytest.approx([0.0] * 4, abs=1e-6)


# FlashInfer PR 3477's H100 80GB HBM3 table, column "FI Hopper (main)" (the CUTLASS SM90 kernel vLLM 0.16 - 0.17 ran),
# https://github.com/flashinfer-ai/flashinfer/pull/3477: (value heads, sequences, ms); "35B/9B/4B TP1" rows (32 value
# heads, Qwen3.5-9B's shape) and two other head counts of the same table
FI_SM90_MAIN_MS = [(32, [8192], 0.372), (32, [4096], 0.189), (32, [2048], 0.098), (32, [6144, 2048], 0.282),
                   (32, [4096, 4096], 0.191), (32, [2048, 6144], 0.282), (32, [1024, 7168], 0.329),
                   (32, [2048] * 4, 0.110), (32, [1024] * 8, 0.121), (8, [8192], 0.371), (8, [1024] * 8, 0.055),
                   (64, [8192], 0.380), (64, [2048] * 4, 0.208), (64, [1024] * 8, 0.228)]


def test_the_gdn_prefill_kernel_prices_flashinfers_published_h100_times():
    """One linear layer's chunked kernel, floor + per token x max(longest sequence, tokens x heads / SMs), against
    every point of the published table it was fitted on (3 of them) or not: one or two sequences within 3%, four or
    eight side by side within 25% (the wave quantisation the max() leaves out: all priced faster, not slower)."""
    from sim.linear_attn import FLASHINFER_GDN_PREFILL_SMS, gdn_prefill_kernel_s, prefill_chunk_tokens

    sms = FLASHINFER_GDN_PREFILL_SMS["h100"]
    for heads, seqs, ms in FI_SM90_MAIN_MS:
        longest, total = prefill_chunk_tokens(seqs)
        priced = gdn_prefill_kernel_s(longest, total * heads / sms) * 1e3
        tolerance = 0.03 if len(seqs) <= 2 else 0.25
        assert priced == pytest.approx(ms, rel=tolerance), (heads, seqs)
        assert len(seqs) <= 2 or priced <= ms
    assert gdn_prefill_kernel_s(1, 0.2) == 0.0  # a one-token "chunk" (a decode) is not a prefill
    assert prefill_chunk_tokens([1, 300, 1, 8000]) == (8000, 8300)
    # arrays (step_time_vec's steps, entry by entry) price each entry as the numbers do, bit for bit
    longest, spread = np.array([1, 300, 8000, 2]), np.array([0.2, 900.0, 10.0, 0.0])
    want = [gdn_prefill_kernel_s(int(n), float(s)) for n, s in zip(longest, spread)]
    assert gdn_prefill_kernel_s(longest, spread).tolist() == want and want[0] == 0.0
    assert gdn_prefill_kernel_s(300, spread).tolist() == [gdn_prefill_kernel_s(300, float(s)) for s in spread]


def test_flashinfer_gdn_prefill_only_where_vllm_runs_it():
    """FlashInfer's SM90 kernel from vLLM PR 32846 (taken as 0.16.0) on the H100 / H200 sheets, whose table was
    read: 0.17.1 and a row without a release get it; 0.15.1, another card and a model without linear layers do not
    (their chunked kernel stays priced by its FLOPs); the row's cost model carries it."""
    from sim.linear_attn import flashinfer_prefill_sms

    assert flashinfer_prefill_sms("0.17.1", "h100", True) == 132
    assert flashinfer_prefill_sms(None, "h200", True) == 132
    assert flashinfer_prefill_sms("0.15.1", "h100", True) == 0
    assert flashinfer_prefill_sms("0.17.1", "rtx-pro-6000", True) == 0
    assert flashinfer_prefill_sms("0.17.1", "h100", False) == 0
    sim = make_sim(model={"config": str(QWEN3_NEXT)}, hardware={"name": "h200", "tp": 2},
                   engine={"vllm_version": "0.17.1"})
    assert CostModel.from_config(sim).gdn_prefill_sms == 132
    dense = make_sim(model={"name": "qwen3-8b"}, hardware={"name": "h200"}, engine={"vllm_version": "0.17.1"})
    assert CostModel.from_config(dense).gdn_prefill_sms == 0


def test_a_long_prefill_chunk_pays_the_chunked_gdn_kernel_on_hopper():
    """An 8192-token chunk of Qwen3-Next (36 linear layers) at tp 2 on an H200: each linear layer adds the kernel's
    published time (6.5 us + 8192 x 44.6 ns = 0.372 ms; 8192 x 16 heads / 132 SMs < 8192) and gives back the
    recurrence FLOPs the roofline had charged those tokens; a step without a chunk of more than one token, and a
    cost model without the kernel (gdn_prefill_sms 0), cost what they did."""
    model = from_hf_config(QWEN3_NEXT)
    hw = get_hardware("h200")
    on, off = CostModel(hw, model, tp=2, gdn_prefill_sms=132), CostModel(hw, model, tp=2)
    big, attended = 8192, 8192 * 4096.5
    with_kernel = on.step_time(big, big, 1, False, attn_ctx=attended, chunk_max=big, chunk_sum=big)
    base = off.step_time(big, big, 1, False, attn_ctx=attended, chunk_max=big, chunk_sum=big)
    assert base == off.step_time(big, big, 1, False, attn_ctx=attended)
    kernel = model.linear_layers * (6.5e-6 + big * 44.6e-9)
    refund = big * model.linear_layers * model.linear.recurrence_flops_per_token / (
        hw.peak_for("bf16") * 1e12 * hw.mfu * 2)
    assert with_kernel - base == pytest.approx(kernel - refund, rel=1e-6)
    assert on.step_time(64, 64 * 500, 64, False) == off.step_time(64, 64 * 500, 64, False)  # decodes only


def test_the_replica_passes_its_prefill_chunks_to_the_gdn_kernel():
    """A Poisson run of Qwen3-Next on an H200 at 0.17.1: with the kernel priced each step holding a prefill lasts
    longer, so TTFT rises; TPOT too (the same steps carry decodes); a dense model's run does not change."""
    def run(sms, model=None):
        sim = _mixed_sim("unified", model)
        sim = sim.model_copy(update={"engine": sim.engine.model_copy(update={"vllm_version": "0.17.1"})})
        inputs = prepare_inputs(sim)
        inputs = replace(inputs, cost=replace(inputs.cost, gdn_prefill_sms=sms))
        return per_request(simulate(inputs, "ar", None, 0).requests)

    on, off = run(132), run(0)
    assert on["ttft_s"].mean() > off["ttft_s"].mean()
    assert on["tpot_ms"].mean() > off["tpot_ms"].mean()
    dense_on, dense_off = run(132, {"name": "qwen3-8b"}), run(0, {"name": "qwen3-8b"})
    assert dense_on["ttft_s"].mean() == dense_off["ttft_s"].mean()
