"""Gated DeltaNet linear-attention layers of hybrid models: their shape, parameters, per-request state and FLOPs.

Qwen3-Next (model_type qwen3_next, e.g. Qwen3-Next-80B-A3B) and Qwen3.5 (qwen3_5 / qwen3_5_moe, the text model under
text_config) interleave Gated DeltaNet "linear_attention" layers with ordinary "full_attention" ones (3:1). A linear
layer keeps no KV cache: each request carries a fixed state per layer that every step reads and writes once, and the
layer's per-token FLOPs do not grow with the context. sim/models.py reads the shape (`gated_deltanet`), sim/cost.py
prices the state traffic, sim/kv_cache.py gives the state its blocks of vLLM's pool.

    lin, n_linear = gated_deltanet(cfg, n_layers, dtype="bf16", where="config.json")  # (None, 0): not hybrid-linear
    lin.params(hidden)        # one layer's weights
    lin.state_bytes(tp)       # one request's state of one layer on one of tp GPUs
    lin.flops_per_token       # one layer's recurrence FLOPs per token, outside its projections

Config keys (transformers' Qwen3NextConfig, defaults in brackets): layer_types ("linear_attention" /
"full_attention"), else full_attention_interval [4] (layer i is full when (i + 1) % interval == 0),
linear_num_key_heads [16], linear_key_head_dim [128], linear_num_value_heads [32], linear_value_head_dim [128],
linear_conv_kernel_dim [4]; Qwen3.5's mamba_ssm_dtype (its recurrent state's dtype, float32 in the published
configs; vLLM follows it) else the model dtype (vLLM's mamba_ssm_cache_dtype "auto"); the conv state is always in
the model dtype (mamba_cache_dtype "auto").

One layer (transformers' Qwen3NextGatedDeltaNet; Qwen3.5 splits in_proj_qkvz / in_proj_ba into four matrices of
the same total): key_dim = k_heads x k_dim, value_dim = v_heads x v_dim, conv_dim = 2 key_dim + value_dim;
    in_proj_qkvz  hidden x (2 key_dim + 2 value_dim)      q, k, v and the output gate z
    in_proj_ba    hidden x 2 v_heads                     beta (write strength) and a (decay) per value head
    conv1d        conv_dim x kernel                      depthwise causal conv over q, k, v
    dt_bias, A_log   v_heads each; norm (gated RMSNorm)   v_dim
    out_proj      value_dim x hidden
State (vLLM's MambaStateShapeCalculator.gated_delta_net_state_shape): conv state conv_dim / tp x (kernel - 1),
recurrent state v_heads / tp x k_dim x v_dim.

A step that mixes prefills with decodes (vllm/model_executor/layers/mamba/gdn_linear_attn.py, GatedDeltaNetAttention.
_forward_core at 0218d05; the same code in models/qwen3_next.py before it): vLLM splits a step's requests by query
length (split_decodes_and_prefills, decode_threshold 1: a request of more than one query token is a prefill). A step
of decodes alone updates each state in place (causal_conv1d_update + the fused recurrent kernel). A step with any
prefill runs causal_conv1d_fn and the chunked kernel (chunk_gated_delta_rule: FlashInfer's on compute capability 9.0
from vLLM PR 32846, 2026-02, else FLA's Triton) over its "non-spec" requests, and around the kernel copies their
recurrent states twice per linear layer: `initial_state = ssm_state[non_spec_state_indices_tensor].contiguous()` (a
gather: each state read and written once) and `ssm_state[non_spec_state_indices_tensor] = last_recurrent_state.to(
ssm_state.dtype)` (a scatter: read and written once more) -- 4 x the state's bytes beyond the kernel's own read and
write. Which requests are non-spec (`state_copies`): until vLLM PR 44700 (merged 2026-06-06) every request that is
not a speculative decode -- the single-token decodes of the step too ("unified"); from it the decodes are peeled off
to the recurrent kernel and only the prefill requests are gathered ("split"). sim/cost.py prices the copies
(CostModel.step_time's `state_copies`), sim/cluster.py counts them per step, engine.linear_attn_mixed names the mode.

The chunked kernel itself: on the H100 / H200 from FLASHINFER_GDN_PREFILL_SINCE, FlashInfer's SM90 kernel at its
published time (gdn_prefill_kernel_s, flashinfer_prefill_sms; CostModel.step_time's chunk_max / chunk_sum, from
prefill_chunk_tokens); elsewhere its recurrence FLOPs (flops_per_token) at the card's mfu, as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.errors import LabError

STATE_DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}
_TORCH = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# model types whose configs imply Gated DeltaNet layers even without layer_types (transformers fills it from
# full_attention_interval); the text model's type is what a merged text_config shows
HYBRID_LINEAR_TYPES = ("qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text")
MIXED_MODES = ("unified", "split")  # how vLLM runs a step of prefills beside decodes (module docstring)
STATE_COPY_PASSES = 4  # a gathered state is read and written, and scattered back: read and written again
# The first prefill of a fresh server autotunes FLA's Triton kernels (first_prefill_autotune_s): cards of compute
# capability 9.0 run FlashInfer's chunked kernel instead (PR 32846; PR 36599: "non-SM90 GPUs" only); releases from
# GDN_AUTOTUNE_FIXED_SINCE warm the autotuner with the real dtypes during the profile run (PR 37338, merged
# 2026-03-18; the first release after it taken as 0.18.0: not established; PR 39169, 2026-04-07, aligned the warm-up
# with the real prefill path further, so 0.18 - 0.19 may still pay part of it: not priced).
SM90_CARDS = ("h100", "h100-pcie", "h200", "h20")
GDN_AUTOTUNE_FIXED_SINCE = (0, 18, 0)
# Its seconds: fitted on the fit half of the deplodock RTX PRO 6000 sweep (C 8, 16, 24, 40; jointly with that host's
# front end; grid 6-14 by 2, then 10-12 by 1). Beside it, not fitted: Triton times each config for at least its
# do_bench budget, warmup=25 + rep=100 ms (https://github.com/triton-lang/triton/blob/main/python/triton/testing.py),
# and PR 37338's 746 autotuning events over 8 dp ranks are ~93 configs a rank: >= 11.7 s before compiling them.
FIRST_PREFILL_AUTOTUNE_S = 11.0
# The chunked prefill kernel's own time on the cards that run FlashInfer's SM90 kernel (flashinfer_prefill_sms;
# gdn_prefill_kernel_s). vLLM PR 32846 ("[Kernel] use flashinfer for gdn prefill", merged 2026-02-09, sha 285bab4;
# https://github.com/vllm-project/vllm/pull/32846) routes chunk_gated_delta_rule to FlashInfer on compute capability
# 9.0, and Qwen3.5 took the same ChunkGatedDeltaRule layer that week (PR 34198); the first release holding both taken
# as 0.16.0 (not established; the public rows it moves are all 0.17.1). Its time, fitted on FlashInfer PR 3477's
# H100 80GB HBM3 table (https://github.com/flashinfer-ai/flashinfer/pull/3477, column "FI Hopper (main)": the CUTLASS
# kernel before that PR's CuTe-DSL rewrite), rows "35B/9B/4B TP1" (16 key / 32 value heads of dim 128, Qwen3.5-9B's
# and -35B-A3B's shape): 1x2048 0.098 ms, 1x4096 0.189, 1x8192 0.372 -> 6.5 us + 44.6 ns per token of the longest
# sequence (least squares). The kernel walks each (sequence, head)'s 64-token chunks in order, one CTA each, so one
# sequence's time does not depend on the heads (1x8192: 0.371 ms at 8 value heads, 0.372 at 32, 0.380 at 64 in the
# same table) and several sequences run side by side until the SMs are full (2048x4 at 32 heads 0.110 ms, at 64 heads
# 0.208): time = floor + per token x max(longest sequence, all sequences' tokens x heads / SMs).
FLASHINFER_GDN_PREFILL_SINCE = (0, 16, 0)
FLASHINFER_GDN_PREFILL_SMS = {"h100": 132, "h200": 132}  # the GH100 SXM cards' SMs (H100 SXM5 and H200: 132 each)
GDN_PREFILL_FLOOR_S = 6.5e-6
GDN_PREFILL_S_PER_TOKEN = 44.6e-9


@dataclass(frozen=True)
class GatedDeltaNet:
    """One Gated DeltaNet layer (see the module docstring for the weights and the state)."""

    k_heads: int = 16
    k_dim: int = 128
    v_heads: int = 32
    v_dim: int = 128
    conv_kernel: int = 4
    conv_dtype: str = "bf16"  # the conv state's dtype (the model's)
    ssm_dtype: str = "bf16"  # the recurrent state's dtype

    @property
    def key_dim(self) -> int:
        return self.k_heads * self.k_dim

    @property
    def value_dim(self) -> int:
        return self.v_heads * self.v_dim

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_dim + self.value_dim

    def params(self, hidden: int) -> int:
        """Weights of one layer (projections, conv, per-head decay terms, gated norm)."""
        return (hidden * (2 * self.key_dim + 2 * self.value_dim) + hidden * 2 * self.v_heads
                + self.conv_dim * self.conv_kernel + 2 * self.v_heads + self.v_dim + self.value_dim * hidden)

    def state_bytes(self, tp: int = 1) -> float:
        """One request's state of one layer on one of `tp` GPUs (vLLM splits both states by heads): what one
        decode step reads and writes back, and the real size of one page of vLLM's MambaSpec."""
        conv = self.conv_dim // tp * (self.conv_kernel - 1) * STATE_DTYPE_BYTES[self.conv_dtype]
        return conv + self.v_heads // tp * self.k_dim * self.v_dim * STATE_DTYPE_BYTES[self.ssm_dtype]

    @property
    def recurrence_flops_per_token(self) -> float:
        """The recurrence's share of flops_per_token (7 k_dim x v_dim per value head), the part the chunked prefill
        kernel computes (where its published time prices it, sim/cost.py refunds these FLOPs for prefill tokens)."""
        return 7.0 * self.v_heads * self.k_dim * self.v_dim

    @property
    def flops_per_token(self) -> float:
        """Recurrence FLOPs of one token in one layer beyond its projections (those are 2 x params): per value
        head the decay S *= g (k_dim x v_dim), the read S^T k, the rank-1 write S += k (x) delta and the output
        S^T q (2 k_dim x v_dim each), so 7 k_dim x v_dim; plus the depthwise conv (2 x conv_dim x kernel). The
        same whatever the context: a decode step's, and a prefill's to first order (its chunked form adds
        chunk-local products that this leaves out)."""
        return self.recurrence_flops_per_token + 2.0 * self.conv_dim * self.conv_kernel


def gated_deltanet(cfg: dict, n_layers: int, dtype: str, where: str) -> tuple[GatedDeltaNet | None, int]:
    """(layer shape, linear layers) of a config (text_config already merged), or (None, 0) when it has no Gated
    DeltaNet layers. `dtype`: the model's activation dtype (fp32 / bf16 / fp16); `where`: for error lines."""
    types = cfg.get("layer_types")
    if isinstance(types, list) and "linear_attention" in types:
        if len(types) != n_layers:
            raise LabError(f"{where}: 'layer_types' lists {len(types)} layers, num_hidden_layers is {n_layers}")
        unknown = sorted({str(t) for t in types} - {"linear_attention", "full_attention"})
        if unknown:
            raise LabError(f"{where}: 'layer_types' mixes linear_attention with {unknown}; only full_attention is "
                           "read beside it")
        n_linear = types.count("linear_attention")
    elif cfg.get("model_type") in HYBRID_LINEAR_TYPES and not isinstance(types, list):
        interval = _whole(cfg, "full_attention_interval", 4, where)
        n_linear = sum(1 for i in range(n_layers) if (i + 1) % interval)
    else:
        return None, 0
    if n_linear >= n_layers:
        raise LabError(f"{where}: every layer is linear_attention; the simulator needs at least one full_attention "
                       "layer")
    ssm = str(cfg.get("mamba_ssm_dtype") or "")
    layer = GatedDeltaNet(k_heads=_whole(cfg, "linear_num_key_heads", 16, where),
                          k_dim=_whole(cfg, "linear_key_head_dim", 128, where),
                          v_heads=_whole(cfg, "linear_num_value_heads", 32, where),
                          v_dim=_whole(cfg, "linear_value_head_dim", 128, where),
                          conv_kernel=_whole(cfg, "linear_conv_kernel_dim", 4, where),
                          conv_dtype=dtype, ssm_dtype=_TORCH.get(ssm, dtype))
    return layer, n_linear


def _whole(cfg: dict, key: str, default: int, where: str) -> int:
    """cfg[key] as a positive integer; absent or null: `default` (transformers' Qwen3NextConfig default)."""
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LabError(f"{where}: config.json {key!r} must be a positive integer, not {value!r}")
    return value


def state_copies(decodes: int, chunks, spec: bool, mode: str) -> int:
    """Requests of one step whose recurrent states vLLM gathers into a contiguous copy and scatters back (module
    docstring): none in a step without a prefill (no request of more than one query token); else the prefill
    requests (`mode` split) or every request that is not a speculative decode (`mode` unified: the `chunks`'
    requests, a one-token chunk included, and the `decodes` unless the step verifies drafts, `spec`, which vLLM
    updates in place on its speculative path). `chunks`: each prefill request's query tokens in the step."""
    if mode not in MIXED_MODES:
        raise LabError(f"engine.linear_attn_mixed {mode!r} is not one of {MIXED_MODES}")
    prefills = sum(1 for c in chunks if c > 1)
    if not prefills:
        return 0
    if mode == "split":
        return prefills
    return len(chunks) + (0 if spec else decodes)


def first_prefill_autotune_s(version: str | None, card: str, hybrid_linear: bool) -> float:
    """Seconds a fresh vLLM server's first step holding a prefill adds, once, on a Gated DeltaNet hybrid model
    (engine.linear_attn_autotune_s; sim/cluster.py adds it to each replica's first such step). Up to vLLM 0.17
    the profile run skips the linear layers' kernels (`_forward_core` returns while attn_metadata is None), so the
    first real prefill launches FLA's @triton.autotune'd chunked kernels (chunk_local_cumsum,
    chunk_scaled_dot_kkt, solve_tril, recompute_w_u, chunk_gated_delta_rule_fwd_h, chunk_fwd_o) for the first
    time and Triton compiles and times every config of each before it runs
    (https://github.com/vllm-project/vllm/pull/36599: "The first real inference then triggers the Triton
    autotuner ... non-SM90 GPUs"; https://github.com/vllm-project/vllm/pull/37338: 746 autotuning events over 6
    FLA kernels in the first batch of a dp 8 server, after the warm-up PR 36599 added missed them;
    https://github.com/vllm-project/vllm/pull/37188: autotuning "adds significant latency to the first inference
    request after each server start"). 0 for a model without linear layers, a release that does not say
    (`version` None), one from GDN_AUTOTUNE_FIXED_SINCE, or a card of SM90_CARDS (FlashInfer's kernel, no
    autotuner). FIRST_PREFILL_AUTOTUNE_S is the one-off's size (BENCHMARKS.md, "Session 38: ... closed loops"),
    fitted on the fit half of the deplodock RTX PRO 6000 sweep: no published timing of it was found."""
    from sim.vllm_versions import version_tuple

    if not hybrid_linear or version is None or card in SM90_CARDS:
        return 0.0
    return FIRST_PREFILL_AUTOTUNE_S if version_tuple(version) < GDN_AUTOTUNE_FIXED_SINCE else 0.0


def flashinfer_prefill_sms(version: str | None, card: str, hybrid_linear: bool) -> int:
    """SMs of the card where vLLM runs FlashInfer's SM90 chunked GDN prefill kernel and its published time prices
    it (CostModel.gdn_prefill_sms; FLASHINFER_GDN_PREFILL_SMS), else 0: a model without linear layers, another card
    (FLA's Triton kernel, or FlashInfer on a card with no table read: priced by its FLOPs, as before), or a release
    before FLASHINFER_GDN_PREFILL_SINCE. `version` None (a row that does not say): a current release's."""
    from sim.vllm_versions import version_tuple

    if not hybrid_linear or card not in FLASHINFER_GDN_PREFILL_SMS:
        return 0
    if version is not None and version_tuple(version) < FLASHINFER_GDN_PREFILL_SINCE:
        return 0
    return FLASHINFER_GDN_PREFILL_SMS[card]


def gdn_prefill_kernel_s(longest, spread):
    """Seconds of FlashInfer's SM90 chunked kernel in one linear layer of a step whose longest prefill chunk is
    `longest` tokens, `spread` = all its prefill chunks' tokens x value heads per GPU / SMs (the work spread over
    the card): GDN_PREFILL_FLOOR_S + GDN_PREFILL_S_PER_TOKEN x max(longest, spread); 0 without a chunk of more than
    one token. Numbers (step_time), or arrays of one shape (or an array and a number) for steps entry by entry
    (step_time_vec's). The steps' one-token decodes that vLLM 0.17 also runs through it ("unified" mixed steps) are
    not counted: no SM90 timing of one-token sequences was found (BENCHMARKS.md, session 34)."""
    if isinstance(longest, np.ndarray) or isinstance(spread, np.ndarray):
        return np.where(np.asarray(longest) > 1,
                        GDN_PREFILL_FLOOR_S + GDN_PREFILL_S_PER_TOKEN * np.maximum(longest, spread), 0.0)
    if longest <= 1:
        return 0.0
    return GDN_PREFILL_FLOOR_S + GDN_PREFILL_S_PER_TOKEN * max(float(longest), spread)


def prefill_chunk_tokens(chunks) -> tuple[int, int]:
    """(longest, total) query tokens of a step's prefill chunks of more than one token (`chunks`: token counts):
    what CostModel.step_time's chunk_max / chunk_sum take."""
    longest = total = 0
    for c in chunks:
        if c > 1:
            total += c
            longest = c if c > longest else longest
    return longest, total
