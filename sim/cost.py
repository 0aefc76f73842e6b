"""Cost model: the wall time of one engine step, and the steps-per-second curve SPS(B) policies use.

The one place the step-cost formula lives (cluster.py and the policies call it, never rebuild it).

    cm = CostModel.from_config(sim, run_root)     # reads a step profile when sim.cost.profile is set
    cm.step_time(tokens, kv_sum, n_reqs, spec, drafts, attn_ctx)    # seconds, scalar (hot path, pure Python)
    cm.step_time_vec(tokens_array, kv_sum, n_reqs, spec, drafts_array)   # numpy, same batch, other verify budgets
    cm.profile_point(tokens, kv_sum, n_reqs, drafts)   # (batch, query_tokens, context_len) a profile is read at
    sps = cm.sps_curve(prefill_tokens, kv_sum, n_reqs, decode_reqs)     # b -> steps/s of a step with b decode tokens
    #   = 1 / step_time of that step (+ a hybrid's state_copies / chunk_max / chunk_sum, once_s: its autotune)
    sps = cm.step_sps_curve(decodes, decode_kv, prefills, budget, chunked)   # b -> steps/s of the step a replica
    #   plans: its decodes verify b tokens and the prefill chunks fit in budget - b (sim/prefill_outlook.py), each
    #   priced as Replica.run prices it (attn_ctx, FA2's padded decode tiles, the chunks' cached tokens)
    cm.kv_capacity_tokens(gpu_mem_util, reserve_bytes, block_size)   # KV tokens one replica holds (vLLM's split)

tokens = query tokens in the step (sum over requests of 1 + drafts, plus prefill chunk tokens);
kv_sum = cached tokens the step's requests attend to; n_reqs = requests in the step; drafts = the draft
tokens among `tokens` (what the step verifies beyond each decoding request's own token). On a model with
sliding-window layers the roofline counts n_reqs x attended_context(kv_sum / n_reqs) instead of kv_sum
(sim/models.py; exact for equal contexts, an upper bound otherwise). On a hybrid linear-attention model
(Qwen3-Next, Qwen3.5) KV bytes per token and score FLOPs count only the full-attention layers, the linear
layers' recurrence is part of the per-token FLOPs, and each request in a step reads and writes its fixed
linear-attention state once: n_reqs x 2 x state bytes, its own kernel's term below.

Roofline (hardware from its spec sheet, sim/hardware.py; model shape from sim/models.py), per replica of
tp GPUs:
    compute = gemm tokens x 2 x active params / (tp x mfu x eff x peak[matmul dtype]) + attended x attention FLOPs per
              cached token / (tp x mfu_a x peak[dtype]); matmul dtype = a quantized checkpoint's (fp8 / int8 / fp4,
              sim/quant.py) where the sheet has that peak, else the activation dtype `dtype`; eff =
              lowp_matmul_efficiency[matmul dtype] for fp8 / int8 / fp4 (1 otherwise; sim/gemm_kernels.py); where
              the sheet gives dense_gemm_mfu ({GEMM rows: fraction}, from published GEMM timings) the dense
              linears take its fraction at the step's gemm tokens (log-linear between its points) in place of mfu,
              gemm tokens = tokens, or past one tile of gemm_row_tile rows the tokens rounded up to whole tiles;
              less (tokens - n_reqs - drafts) x 2 x LM-head params (vocab x hidden): vLLM multiplies the LM head
              only at the rows it samples from -- the last scheduled token of each request and each verified draft
              (V1 gpu_model_runner: logits_indices = query_start_loc[1:] - 1, compute_logits(hidden_states[
              logits_indices]); V0 alike, its sampling metadata's selected_token_indices) -- so a prefill chunk's
              earlier prompt tokens pay only the layers' FLOPs (a decode step: unchanged);
              attention's mfu_a = attn_mfu (the FlashAttention kernel's own fraction of peak, from published
              kernel benchmarks: sim.attention_kernels), or mfu where the sheet gives none
              attended = the cached tokens each query token attends to, summed over the step's tokens
              (step_time's attn_ctx: the replica's plan gives a decoding request's tokens its sequence and a
              prefill chunk of c tokens after `done` c x (done + (c + 1) / 2)); without it, and on a
              sliding-window model, tokens x kv_sum / n_reqs (every token at the mean context);
              + in a step with a prefill chunk or drafts to verify (max_seqlen_q > 1) on a card whose FA2 kernel pads
              decodes (mixed_decode_tile_rows), each decoding request's context x (rows - 1 - its drafts) more, its
              context rounded up to whole key blocks (mixed_decode_tile_flops: vLLM V1 runs the batch as one paged
              varlen call; a decode's 1 + d rows share one tile)
    memory  = weights read(tokens) / (tp x w_eff x bandwidth) + kv_sum x KV bytes per token / (tp x kv_eff x
              bandwidth), w_eff = bw_efficiency for a one-token step
              (matrix-vector products; on a CPU sheet with gemv_rows > 1 a step of up to gemv_rows tokens too) and
              gemm_bw_efficiency (default: the same) for a step of more tokens (matrix-matrix products);
              the linears vLLM keeps whole on every GPU (MLA's down-projections, MoE routers: sim/models.REPLICATED)
              count tp times in both terms: weights read + (tp - 1) x replicated bytes, active params + (tp - 1) x
              replicated params (each GPU multiplies its own whole copy); tp 1 or a model without them: unchanged
              kv_eff = kv_bw_efficiency (default: bw_efficiency)
    t = max(compute, memory) + (1 - compute_memory_overlap) x min(compute, memory)   [overlap 1: the roofline]
        -- except a step with a prefill chunk or drafts where FA2's unpacked kernel pads its decodes
          (mixed_decode_tile_rows, V1) on a sheet with mixed_kv_reread:
          that kernel runs a CTA per (request, query head), each loading its request's K / V, the grouped query
          heads packed onto one read only when max_seqlen_q == 1 (vllm-project/flash-attention flash_api.cpp
          mha_varlen_fwd), so the attention kernel, after the GEMMs, lasts max(attention FLOPs with the padded
          tiles, kv_sum x KV bytes x query heads per KV head / (tp x kv_eff x bandwidth)) -- x 1 where one layer's
          KV of one KV head (kv_sum x 2 x head_dim x KV bytes) fits in l2_mib -- and t = max(weights, compute less
          attention) + that kernel (step_time_vec alike where it is given the chunks, as for the padding)
        + n_reqs x 2 x state bytes / (tp x state_eff x bandwidth): a hybrid linear-attention model's recurrent states,
          each read and written back by the fused recurrent GDN kernel, a kernel of its own between the layer's
          projections (vLLM's GDN layer: in_proj GEMMs, conv update, the recurrent kernel, gated norm, out_proj
          GEMM, one after another), so its time adds to the step rather than hiding under the GEMMs' FLOPs, as
          state_eff was fitted: linear_state_bw_efficiency (default: kv_eff), that kernel's own fraction of peak,
          its published timings alone (sim.gdn_kernels)
        + experts (a MoE model: its routed experts run as their own fused-MoE kernels, so compute and memory
          above hold only the rest; per MoE layer moe_layer_us (the kernel's floor) + moe_expert_us x experts
          touched + max(touched experts' bytes / (moe_[quant_]bw_efficiency x bandwidth), tokens x k experts' FLOPs /
          (moe_mfu x peak[the experts' dtype]), or for w8a8 experts (fp8 / int8) moe_lowp_efficiency x that peak
          where the sheet sets it, or for unquantized experts on vLLM's built-in tiles (engine.moe_tiles default: no
          tuned config file for the shape) moe_default_tile_mfu x that peak and moe_default_tile_bw_efficiency for the
          reads where the sheet sets them, once the call's tokens pass the GPU's experts, vLLM's 64 x 64 x 32 branch;
          weight-only quantized experts (fused_marlin_moe) multiply whole token blocks of the size vLLM's fixed rule
          picks, their FLOPs x the expected padded rows over the routed rows, sim/marlin_moe.py; an mxfp4
          checkpoint's experts there run at vLLM's padded Marlin layout, ModelShape.marlin_mxfp4_dims: reads, FLOPs
          and the pairs' activation rows x the padded sizes, gpt-oss at tp 1 x 1.090);
          sim/moe_kernels.py fits these on published kernel timings;
          experts touched: sim/models.touched_experts -- uniform routing in the kernel checks, a serving router's
          skew (model.routing_skew, sim/routing.py) in a `sim.model` section's runs: fewer distinct experts;
          without EP each GPU reads a 1/tp slice of every touched expert, with EP (ep = tp x dp, as vLLM lays
          it) each GPU reads its own E/ep experts whole, touched by the tokens of all dp ranks; with EP also
          the work vLLM's fused-MoE call spends on the other ranks' token-expert pairs, ep_remote_pair_bytes;
          and every pair's activation rows through HBM -- gathered input, intermediate caches, moe_sum -- which
          do not shrink with tp, moe_pair_bytes)
        + step + n_layers x (layer + graph layout) + step host + n_reqs x request overhead (graph layout: 0 on the
          FULL_AND_PIECEWISE graphs the sheets are scored on, 14.3 us for a PIECEWISE server, engine.cuda_graph_mode;
          sim/cuda_graphs.py; step host (the sheet's step_host_ms) + request overhead: the engine core's host time
          per step and per running request, in series with
          the rest -- or, under async scheduling (engine.async_scheduling, vLLM's default from 0.14), overlapping
          it: the step lasts max(the rest, step host + n_reqs x request overhead), as AsyncScheduler prepares step N+1 while
          step N runs)
        + quantized linears x act_quant_us (a w8a8 / w4a4 checkpoint quantizes their inputs on the fly)
        + state copies x 4 x state bytes / (tp x bw_efficiency x bandwidth): a hybrid linear-attention model's step
          with a prefill, where vLLM gathers the recurrent states of the requests its chunked kernel runs over into
          a contiguous copy and scatters them back, two plain copies beside the kernel (step_time's
          `state_copies`, counted by sim/linear_attn.state_copies; 0 otherwise)
        + linear layers x FlashInfer's chunked GDN prefill kernel (gdn_prefill_sms > 0: a hybrid model on a card and
          release that run FlashInfer's SM90 kernel, sim/linear_attn.flashinfer_prefill_sms): a step whose longest
          prefill chunk is chunk_max tokens and whose prefill chunks hold chunk_sum, sim/linear_attn.
          gdn_prefill_kernel_s(chunk_max, chunk_sum x value heads per GPU / SMs), its published H100 time; the
          recurrence FLOPs of those chunk_sum tokens leave `compute` (the kernel's time holds them)
        + TP all-reduce (2 per layer and 1 for the vocab-parallel input embedding, ring: 2 (tp-1)/tp x tokens x
          hidden x activation bytes on the configured link, + its latency; allreduce_time_s, scored on published
          collective timings by sim.allreduce_check) + the logits' gather once a step ((tp-1)/tp x sampled rows x
          vocab x activation bytes + one latency: the vocab-parallel LM head's columns joined for the sampler)
          + EP communication over dp = ep / tp > 1 data-parallel ranks
          (dispatch and combine per MoE layer as vLLM's all2all backend moves them, all2all_cost: by default
          an all-gather and a reduce-scatter of (dp-1) x tokens x hidden x activation bytes each, + latency),
          or, vLLM's DP without EP (moe_dp > 1, engine.dp_mode vllm: every expert split over moe_dp x tp GPUs, each
          GPU's experts run on all moe_dp ranks' tokens), the same all-gather and reduce-scatter around every MoE
          layer (dp_moe_collective_cost)
        + drafter pass (the same roofline over drafter_layers, plus drafter_head_vocab x hidden LM-head weights where
          given; one pass over every draft position -- DSpark, DFlash -- or, drafter_passes per_token, max_draft
          passes in a row of one token per request, each with the drafter layers' overhead -- EAGLE / MTP chains as
          vLLM runs them) + speculative overhead (when it verifies drafts).
The CPU terms (gemm_bw_efficiency, kv_bw_efficiency, compute_memory_overlap < 1) describe eager PyTorch on a
CPU (kv_bw_efficiency: eager attention moves KV far slower than a weight read, sim.bench_profile). A step
of 1 x 4 or 4 x 1 query tokens costs ~2.7x one of 1 token over the same weights (Gemma3-270M fp32, AVX2;
BLAS takes another, slower path for matrix-matrix products and packs the weights), and reading weights
does not hide the FLOPs; the defaults leave a GPU sheet's roofline as it was (sim.bench_profile fits them), but for
the Ada sheets' compute_memory_overlap < 1: there a decode GEMM's time grows with its rows by 0.36 of their FLOPs' time
at the tensor peak (published L40S timings, sim.gemm_growth).
Profile (sim.cost.profile: a measured step_profile.csv, sim/step_profile.py): t = the profile's step time
at (n_reqs + drafts, tokens / (n_reqs + drafts), (kv_sum - tokens) / n_reqs), interpolated: kv_sum counts
each request's KV including this step's own tokens, a profile row's context_len the cached tokens before the
step (a fresh prompt's prefill is context 0, not its own length). A draft token is read as one more
decoding request's token, not as one more query token of its request: the engine computes logits at every
verified position, as for each decoding request, while a vLLM server's profile row of query_tokens > 1
(real.engine) is a prefill with one logit row per request (`lab profile`'s rows, real/profile.py, compute logits
at every new position instead; sim.bench_profile prices them so) (for Gemma3-270M's 262,144-token vocabulary that row costs more than the token's
pass through the layers; vLLM's n-gram server's own decode steps, engine/ngram/step_profile.csv, agree with
this reading and not with the query axis: 16 requests x ~3.7 verified tokens, measured 757-1,053 ms, read
as 59 decoding requests 630-930 ms, as 16 x 3.7 query tokens 430-600 ms). It already holds attention, KV reads,
overheads and the parallel layout it was measured on, so nothing of the roofline is added; the drafter pass
is the profile's step over the drafter's share of layers. KV capacity still comes from the hardware sheet.
sim.cost.spec_profile (decode steps measured on the speculative server itself) adds, to a speculative step,
what that server's step costs over the profile's step of the same shape (its requests x (1 + k) tokens read
as decoding requests' tokens, as above).
Optional CUDA-graph buckets pad a step up to the next captured size (jagged SPS, as real engines) in
either mode.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.config_sim import ALL2ALL_BACKENDS, DRAFTER_PASSES, MOE_TILES
from lab.errors import LabError
from lab.paths import expand_path
from sim.cuda_graphs import graph_mode_layer_s
from sim.hardware import (
    Hardware,
    achievable_attention_flops,
    achievable_bandwidth,
    achievable_flops,
    dense_gemm_fraction,
    dense_gemm_points,
    hardware_from_config,
    vllm_platform,
)
from sim.kv_cache import GIB, kv_cache_blocks
from sim.linear_attn import (
    GDN_PREFILL_FLOOR_S,
    GDN_PREFILL_S_PER_TOKEN,
    STATE_COPY_PASSES,
    flashinfer_prefill_sms,
    gdn_prefill_kernel_s,
)
from sim.linear_attn import (
    state_copies as linear_state_copies,
)
from sim.marlin_moe import marlin_padding_factor
from sim.models import ModelShape, model_from_config
from sim.prefill_outlook import PrefillPiece, prefill_pieces
from sim.quant import W8A8_DTYPES
from sim.step_profile import CSV_NAME, StepProfile, read_profile
from sim.vllm_versions import engine_async_scheduling, is_v0, vllm_all2all, vllm_symm_mem_allreduce


def all2all_cost(backend: str, dp: int, ep: int, hidden: int, top_k: int, experts: int,
                 act_bytes: float) -> tuple[int, float]:
    """One MoE layer's expert-parallel communication on one of dp data-parallel ranks (ep GPUs in all): (collective
    calls, each paying the link's latency; bytes per token of the rank's step each way on its link). Every rank's
    batch is padded to the group's largest (cluster.LockstepGroup), so each of the other dp - 1 ranks sends as
    many tokens as this one. vLLM's backends (vllm/distributed/device_communicators/all2all.py):
      allgather_reducescatter (the default since v0.11): dispatch = one grouped all_gatherv of every rank's hidden
          states (tokens x hidden, not x top_k) with their top-k weights and ids (fp32 + int32); the rank runs its
          experts over all dp ranks' tokens; combine = one grouped reduce_scatterv of the tokens x hidden sums:
          2 calls, (dp - 1) x (2 x hidden x act_bytes + 8 x top_k) bytes
      naive (the default up to v0.10; removed in 2026, PR #33728): dispatch = dp broadcasts of the hidden states
          and dp of the router logits (experts values per token); combine = an all-reduce of all dp ranks'
          tokens x hidden (ring: 2 (dp - 1) x the rank's share): 2 dp + 1 calls, (dp - 1) x (3 x hidden +
          experts) x act_bytes bytes
      dispatch (pplx / deepep_*: a token goes only where its top_k experts live): 2 calls, 2 x top_k x hidden
          x act_bytes x (ep - 1) / ep bytes
    dp 1 (ep = tp): no all-to-all at all -- the tokens are already on every TP rank and the MoE output joins the
    tensor-parallel all-reduce; the caller skips it."""
    if backend == "allgather_reducescatter":
        return 2, (dp - 1) * (2 * hidden * act_bytes + 8 * top_k)
    if backend == "naive":
        return 2 * dp + 1, (dp - 1) * (3 * hidden + experts) * act_bytes
    if backend == "dispatch":
        return 2, 2 * top_k * hidden * act_bytes * (ep - 1) / ep
    raise LabError(f"sim: all2all {backend!r} is not one of {ALL2ALL_BACKENDS}")


def dp_moe_collective_cost(backend: str, dp: int, hidden: int, experts: int, act_bytes: float) -> tuple[int, float]:
    """One MoE layer's collectives on one of dp data-parallel ranks of a vLLM server run without expert parallelism
    (--data-parallel-size dp, no --enable-expert-parallel; CostModel.moe_dp): (collective calls, bytes per token of
    the rank's step on its link). vLLM then shards every expert over dp x tp GPUs (FusedMoEParallelConfig.make:
    flatten_tp_across_dp, use_ep False, so use_all2all_kernels is False) and FusedMoE takes its naive dispatch /
    combine path (do_naive_dispatch_combine: dp_size > 1): get_ep_group().dispatch_router_logits gathers the DP
    ranks' hidden states and router logits (experts values per token, act dtype) before the experts, combine
    reduce-scatters their partial sums back after (vllm/model_executor/layers/fused_moe/layer.py,
    vllm/distributed/device_communicators/all2all.py). Every rank is padded to the group's largest batch
    (cluster.LockstepGroup), so each of the other dp - 1 ranks sends as many tokens as this one:
      allgather_reducescatter (AgRsAll2AllManager): one all_gatherv of [hidden states, router logits] over the DP
          group and one reduce_scatterv of the output: 2 calls, (dp - 1) x (2 x hidden + experts) x act_bytes
      naive (NaiveAll2AllManager): dp broadcasts of each and an all-reduce of all dp ranks' outputs: 2 dp + 1
          calls, (dp - 1) x (3 x hidden + experts) x act_bytes (all2all_cost's naive: the same traffic)
    dispatch (pplx / DeepEP) needs expert parallelism (their all2all kernels run only with use_ep): a LabError."""
    if backend == "allgather_reducescatter":
        return 2, (dp - 1) * (2 * hidden + experts) * act_bytes
    if backend == "naive":
        return 2 * dp + 1, (dp - 1) * (3 * hidden + experts) * act_bytes
    raise LabError(f"sim.hardware.all2all {backend!r} with sim.engine.dp_mode vllm and hardware.ep 1: vLLM's "
                   "dispatch all2all kernels (pplx / DeepEP) run only with expert parallelism; set all2all "
                   "allgather_reducescatter or naive, or hardware.ep to tp x replicas")


def moe_pair_bytes(tokens, top_k: int, width: float, hidden: int, act_bytes: float, own_share: float = 1.0):
    """Activation bytes one rank's fused-MoE call moves through HBM per MoE layer for its token-expert pairs, in a
    step of `tokens` tokens handed to the call (scalar or numpy) -- what its weight reads and FLOPs leave out, and
    what does not shrink with tensor parallelism (a pair's rows are hidden-wide on every tp GPU). vLLM's Triton
    path (fused_moe.py fused_experts_impl, vllm-project/vllm@000d1458098ebf47491dad470d164d443ab18a9c) per pair:
    GEMM1 gathers the token's hidden-wide input row (read) and writes intermediate_cache1 (M x top_k x N, N = 2 x
    the rank's expert width); silu_and_mul reads it and writes intermediate_cache2 (width wide); GEMM2 reads that
    and writes intermediate_cache3 (M x top_k x hidden); ops.moe_sum reads cache3 back and writes one hidden row
    per token: 3 x hidden + 6 x width per pair (+ hidden per token), x act_bytes. `width` is the rank's slice of an
    expert's intermediate size (intermediate / tp; whole experts under EP), `own_share` the share of pairs whose
    expert the rank holds (1 under TP; the others' width-wide rows are ep_remote_pair_bytes'). At tp 8 on
    Qwen3-235B-A22B (hidden 4096, width 192, top 8) that is ~220 KB per token and layer, about as long at HBM speed
    as the token's expert FLOPs; at tp 1 on Qwen3-30B-A3B (hidden 2048, width 768) ~170 KB against 8x the FLOPs
    per byte -- the reason MoE rows at high tp were priced too fast where tp 1 rows were not."""
    per_pair = 3.0 * hidden + 6.0 * width * own_share
    return tokens * (top_k * per_pair + hidden) * act_bytes


def ep_remote_pair_bytes(tokens, dp: int, ep: int, top_k: int, intermediate: int, hidden: int, act_bytes: float,
                         marlin: bool = False):
    """Activation bytes one EP rank's fused-MoE call moves per MoE layer, beyond TP's layout, for the token-expert
    pairs whose expert lives on another rank, in a step of `tokens` tokens per DP rank (scalar or numpy). vLLM
    hands the call every pair of its tokens (its own DP rank's and, over dp > 1, the gathered others': dp x tokens
    x top_k) and sizes the intermediate caches for all of them at the width of the rank's own experts, which under
    EP are whole (2 x intermediate for gate and up) where TP holds 1/tp of every expert (fused_moe.py
    fused_experts_impl / TritonExperts.apply: cache1 = M x top_k x N, N = w1's width; moe_align_block_size maps the
    other ranks' experts to -1 through expert_map). Of each pair a share 1 - 1/ep is another rank's:
      Triton (fused_moe_kernel; vLLM 0.10 / 0.11): GEMM1 writes zeros into those rows (`if off_experts == -1:
          write_zeros_to_output`), and silu_and_mul reads 2 x intermediate and writes intermediate of every row:
          5 x intermediate x (1 - 1/ep) x act_bytes per pair. GEMM2 writes those rows' hidden-wide outputs as
          zeros, but TP writes every row of that output too: nothing over TP.
      marlin (fused_marlin_moe: weight-only and fp8-on-Ampere experts): GEMM1 skips them (is_ep), silu_and_mul
          runs over every row (3 x intermediate x (1 - 1/ep)), and the down projection's output (M x top_k x
          hidden) is zeroed first (`if expert_map is not None: intermediate_cache3.zero_()`), which TP does not do:
          (3 x intermediate x (1 - 1/ep) + hidden) x act_bytes per pair.
    vLLM issue #28887 (8 x H200, DeepSeek-R1 FP8, nsys): the context phase's MoE layer took 3.4 ms at EP 8 vs 3.1
    ms at TP 8, "mainly from MoE gemm (FC1, act, FC2)". ep 1: 0. A dispatch backend (pplx / DeepEP) over dp > 1
    ranks hands each rank only the pairs of its own experts: the cost model adds nothing then."""
    if ep <= 1:
        return 0.0 * tokens
    remote = 1.0 - 1.0 / ep
    per_pair = (3.0 * intermediate * remote + hidden) if marlin else 5.0 * intermediate * remote
    return dp * tokens * top_k * per_pair * act_bytes


def linear_state_bandwidth(hw: Hardware) -> float:
    """Bytes/s one device moves a hybrid linear-attention model's recurrent state at (the fused recurrent GDN decode
    kernel reading each request's state and writing it back): linear_state_bw_efficiency x peak, else the KV reads'
    fraction (kv_bw_efficiency, else bw_efficiency). sim.gdn_kernels scores it on published kernel timings."""
    eff = hw.linear_state_bw_efficiency or hw.kv_bw_efficiency or hw.bw_efficiency
    return hw.mem_bw_tbs * 1e12 * eff


def allreduce_latency_s(link, tp: int) -> float:
    """The fixed part of one ring all-reduce on `tp` GPUs over `link` (an InterconnectSheet), seconds: its
    latency_us (per collective call, whatever the size)."""
    return link.latency_us * 1e-6


def allreduce_s_per_byte(link, tp: int) -> float:
    """Seconds per byte of the reduced tensor for one ring all-reduce on `tp` GPUs: each GPU sends and receives
    2 (tp-1)/tp of it at the link's bandwidth_gbs."""
    return 2 * (tp - 1) / tp / (link.bandwidth_gbs * 1e9)


def allgather_s_per_byte(link, tp: int) -> float:
    """Seconds per byte of the gathered (whole) tensor for one ring all-gather (or gather to one rank) on `tp` GPUs:
    each GPU sends or receives the other (tp-1)/tp of it at the link's bandwidth_gbs; the latency is
    allreduce_latency_s's (one collective call)."""
    return (tp - 1) / tp / (link.bandwidth_gbs * 1e9)


def tp_step_collectives(n_layers: int) -> int:
    """All-reduces of the hidden states in one tensor-parallel forward pass: two per layer (RowParallelLinear's
    o_proj and down_proj) and one for the input embedding (VocabParallelEmbedding.forward masks the tokens outside
    its vocabulary shard and all-reduces the rows: vllm/model_executor/layers/vocab_parallel_embedding.py, every
    release the lab prices)."""
    return 2 * n_layers + 1


# world sizes vLLM's custom all-reduce runs at (CustomAllreduce._SUPPORTED_WORLD_SIZES, custom_all_reduce.py)
FA2_KEY_BLOCK = 128  # kBlockN of FA2's split-KV kernel at head dim <= 128 (run_mha_fwd_splitkv_dispatch)


def mixed_decode_rows(hw: Hardware, version: str | None) -> int:
    """Query rows per head a decoding request of a mixed step (decodes beside a prefill chunk) costs in attention:
    the sheet's mixed_decode_tile_rows (FA2 cards) under vLLM's V1 engine -- one flash_attn_varlen_func call over
    the whole batch -- for a release from 0.8 or one not named; 0 (its own row) otherwise. V0's FlashAttention
    backend ran a step's prefills and decodes as two calls (vllm/attention/backends/flash_attn.py, the decode
    through flash_attn_with_kvcache / a varlen call of its own), so its decodes took the GQA-packed path."""
    rows = hw.mixed_decode_tile_rows or 0
    return 0 if version is not None and is_v0(version) else rows


CUSTOM_ALLREDUCE_WORLD_SIZES = (2, 4, 6, 8)
ALLREDUCE_KERNELS = ("auto", "nccl", "custom", "symm_mem")


def custom_allreduce_max_bytes(link, tp: int, symm_mem: bool = False) -> int:
    """Bytes below which vLLM runs its custom all-reduce on `tp` GPUs over `link` (0: never). CustomAllreduce
    (vllm/distributed/device_communicators/custom_all_reduce.py, v0.11.0) is disabled outside world sizes 2 / 4 /
    6 / 8, and on GPUs that are not fully connected (PCIe) at tp > 2 ("not supported on more than two PCIe-only
    GPUs"); should_custom_ar then takes a tensor while inp_size < max_size. Where torch symmetric memory runs
    (`symm_mem`, a release from 0.11.0, and the link has a symm_mem_allreduce sheet covering tp) max_size is the
    smaller of that and CUSTOM_ALL_REDUCE_MAX_SIZES[tp] (symm_mem_allreduce.custom_max_bytes). A card without a
    custom_allreduce pair (no P2P, or no published custom-kernel timing) prices every all-reduce at the link's one
    pair."""
    custom = getattr(link, "custom_allreduce", None)
    if custom is None or tp not in CUSTOM_ALLREDUCE_WORLD_SIZES:
        return 0
    if link.kind == "pcie" and tp > 2:
        return 0
    limit = int(custom.max_bytes.get(tp, 0)) if isinstance(custom.max_bytes, dict) else int(custom.max_bytes)
    if symm_mem_allreduce_max_bytes(link, tp, symm_mem):
        limit = min(limit, int(link.symm_mem_allreduce.custom_max_bytes.get(tp, limit)))
    return limit


def symm_mem_allreduce_max_bytes(link, tp: int, symm_mem: bool) -> int:
    """Bytes below which vLLM runs torch symmetric-memory all-reduce on `tp` GPUs (0: it does not run): its
    SYMM_MEM_ALL_REDUCE_MAX_SIZES[tp] (link.symm_mem_allreduce.max_bytes) where `symm_mem` (the release runs it:
    sim.vllm_versions.vllm_symm_mem_allreduce) and the link has the sheet; SymmMemCommunicator is off at a world size
    its table lacks (vllm/distributed/device_communicators/symm_mem.py, v0.11.0)."""
    sheet = getattr(link, "symm_mem_allreduce", None)
    if not symm_mem or sheet is None:
        return 0
    return int(sheet.max_bytes.get(tp, 0))


def kernel_link(link, kernel: str):
    """The InterconnectSheet whose one pair prices `kernel`'s all-reduces on `link`: custom -> the custom kernel's
    latency / bandwidth, symm_mem -> torch symmetric memory's (the link itself where it has no such pair), nccl ->
    the link's own pair; none carries a custom or symmetric-memory pair, so allreduce_time_s prices it as one
    regime."""
    if kernel not in ALLREDUCE_KERNELS[1:]:
        raise LabError(f"all-reduce kernel {kernel!r} is not one of {ALLREDUCE_KERNELS[1:]}")
    bare = {"custom_allreduce": None, "symm_mem_allreduce": None}
    sheet = {"custom": getattr(link, "custom_allreduce", None),
             "symm_mem": getattr(link, "symm_mem_allreduce", None)}.get(kernel)
    if sheet is not None:
        return link.model_copy(update={"latency_us": sheet.latency_us, "bandwidth_gbs": sheet.bandwidth_gbs, **bare})
    return link.model_copy(update=bare)


def _pair_time_s(link, tp: int, nbytes):
    return allreduce_latency_s(link, tp) + nbytes * allreduce_s_per_byte(link, tp)


def allreduce_time_s(link, tp: int, nbytes, kernel: str = "auto", symm_mem: bool = False):
    """One ring all-reduce of `nbytes` (scalar or array) on `tp` GPUs, seconds: latency_us + 2 (tp-1)/tp x bytes /
    bandwidth. The regimes as vLLM runs them (kernel auto; CudaCommunicator.all_reduce tries the custom kernel, then
    torch symmetric memory, then pynccl): its custom all-reduce's pair (link.custom_allreduce) below
    custom_allreduce_max_bytes; where `symm_mem` (the release runs torch symmetric memory: vllm_symm_mem_allreduce)
    the symmetric-memory pair (link.symm_mem_allreduce) from there below symm_mem_allreduce_max_bytes; NCCL's (the
    link's own) from there up. kernel nccl / custom / symm_mem forces one (sim.allreduce_check prices each published
    table at the kernel it timed). The cost model prices each tensor-parallel layer's two all-reduces with it;
    sim.allreduce_check scores it against published collective timings (sim/validation/allreduce.yaml)."""
    if kernel != "auto":
        link = kernel_link(link, kernel)
    nccl = _pair_time_s(link, tp, nbytes)
    limit = custom_allreduce_max_bytes(link, tp, symm_mem)
    symm_limit = symm_mem_allreduce_max_bytes(link, tp, symm_mem)
    if not limit and not symm_limit:
        return nccl
    fast = _pair_time_s(kernel_link(link, "custom"), tp, nbytes) if limit else nccl
    middle = _pair_time_s(kernel_link(link, "symm_mem"), tp, nbytes) if symm_limit > limit else nccl
    if isinstance(nbytes, np.ndarray):
        return np.where(nbytes < limit, fast, np.where(nbytes < symm_limit, middle, nccl))
    return fast if nbytes < limit else (middle if nbytes < symm_limit else nccl)


def check_tp_split(model: ModelShape, tp: int, field: str = "sim.hardware.tp") -> None:
    """LabError where vLLM would refuse to start the model at tensor-parallel size `tp`: its attention heads must
    split evenly over the GPUs (vllm/config ModelConfig.verify_with_parallel_config), and its KV heads either split
    evenly or, below tp, be replicated a whole number of times (QKVParallelLinear's assertion). `field`: the setting
    the error line names."""
    if tp <= 1:
        return
    if model.n_heads % tp:
        raise LabError(f"{field} {tp}: the model's {model.n_heads} attention heads ({model.name}) do not split "
                       f"over {tp} GPUs (vLLM refuses to start it at this tensor-parallel size)")
    kv = model.n_kv_heads
    if not model.kv_dim_override and kv and (kv % tp if kv >= tp else tp % kv):
        raise LabError(f"{field} {tp}: the model's {kv} KV heads ({model.name}) neither split evenly over "
                       f"{tp} GPUs nor replicate evenly on them (vLLM refuses to start it at this tensor-parallel size)")


def hardware_all2all(sim) -> str:
    """The all2all backend a `sim:` section runs: sim.hardware.all2all where the YAML sets it, else the default of
    `vllm serve` at sim.engine.vllm_version (sim.vllm_versions.vllm_all2all: naive before 0.11; the current
    release's allgather_reducescatter when no release is named)."""
    if "all2all" in sim.hardware.model_fields_set:
        return sim.hardware.all2all
    return vllm_all2all(sim.engine.vllm_version)


def moe_data_parallel(sim, model: ModelShape) -> int:
    """DP ranks a `sim:` section's MoE layers are tensor-parallel across (CostModel.moe_dp): sim.replicas under
    engine.dp_mode vllm with hardware.ep 1 (vLLM's --data-parallel-size without --enable-expert-parallel); 1
    otherwise -- separate replicas, expert parallelism, or a dense model (vLLM's DP ranks of a dense model share
    nothing)."""
    if sim.engine.dp_mode != "vllm" or not model.moe_experts or sim.hardware.ep > 1:
        return 1
    return sim.replicas


def check_dp_link(sim, moe_dp: int) -> None:
    """LabError naming sim.hardware.spec.interconnect where vLLM's DP without EP (moe_dp > 1) would price every MoE
    layer's all-gather and reduce-scatter on a hand-written spec sheet's default link (kind none, 1 GB/s: a
    single device's); tp / ep > 1 on such a sheet is refused at validation (lab/config_sim.py HardwareSpec),
    this case needs the model, read here."""
    hw = sim.hardware
    if moe_dp > 1 and hw.spec is not None and hw.interconnect is None and hw.spec.interconnect.kind == "none":
        raise LabError(f"sim.hardware.spec.interconnect: sim.engine.dp_mode vllm over {moe_dp} replicas of a MoE model "
                       "prices every MoE layer's all-gather and reduce-scatter on the GPUs' link, and hardware.spec "
                       "gives none: set spec.interconnect (kind: pcie | nvlink | infinity_fabric | ethernet, "
                       "bandwidth_gbs per GPU and direction, latency_us)")


@dataclass
class CostModel:
    hw: Hardware
    model: ModelShape
    tp: int = 1
    ep: int = 1
    all2all: str = "allgather_reducescatter"  # vLLM's all2all backend for ep over dp > 1 ranks (ALL2ALL_BACKENDS)
    moe_dp: int = 1  # vLLM --data-parallel-size without EP (engine.dp_mode vllm): MoE layers TP over moe_dp x tp GPUs
    moe_tiles: str = "tuned"  # vLLM's fused-MoE Triton tiles: a tuned config file's, or its built-in ones (MOE_TILES)
    drafter_layers: int = 2
    max_draft: int = 7
    drafter_passes: str = "one"  # one: all drafts in one pass (DSpark, DFlash); per_token: a chain (EAGLE, MTP)
    drafter_head_vocab: int = 0  # LM-head rows each drafter pass reads beyond its layers (0: none counted)
    step_overhead_s: float | None = None  # None: the hardware sheet's
    layer_overhead_s: float | None = None
    request_overhead_s: float | None = None
    step_host_s: float | None = None  # None: the sheet's step_host_ms
    graph_layer_s: float = 0.0  # per layer and step beyond the sheets' FULL_AND_PIECEWISE layout (sim/cuda_graphs.py)
    async_scheduling: bool = False  # the engine core's host time (host_s) overlaps the GPU's (engine.async_scheduling)
    symm_mem_allreduce: bool = False  # the release runs torch symmetric-memory all-reduce (vllm_symm_mem_allreduce)
    gdn_prefill_sms: int = 0  # SMs of a card running FlashInfer's SM90 GDN prefill kernel (flashinfer_prefill_sms)
    mixed_decode_rows: int = 0  # attention rows per query head a decode of a step with a prefill chunk pays (0: 1)
    spec_overhead_s: float = 0.3e-3
    buckets: tuple[int, ...] | None = None
    eager_penalty: float = 1.1
    profile: StepProfile | None = None
    spec_profile: StepProfile | None = None  # decode steps of the speculative server (query_tokens = 1 + k)

    def __post_init__(self):
        hw, m, tp = self.hw, self.model, self.tp
        if self.step_overhead_s is None:
            self.step_overhead_s = hw.step_overhead_ms / 1e3
        if self.layer_overhead_s is None:
            self.layer_overhead_s = hw.layer_overhead_us / 1e6
        if self.request_overhead_s is None:
            self.request_overhead_s = hw.request_overhead_us / 1e6
        if self.step_host_s is None:
            self.step_host_s = hw.step_host_ms / 1e3
        bw = achievable_bandwidth(hw) * tp
        # attention scores: the activation dtype, at the attention kernel's own fraction of peak (attn_mfu)
        flops = achievable_attention_flops(hw, m.dtype) * tp
        # a quantized checkpoint's matmuls at their own peak where the card has one (fp8 / int8 / fp4 w8a8-style);
        # else, as vLLM's weight-only kernels (Marlin) do, dequantized to the activation dtype
        matmul = m.matmul_dtype if m.matmul_dtype and hw.has_peak(m.matmul_dtype) else m.dtype
        matmul_flops = achievable_flops(hw, matmul) * tp * hw.lowp_matmul_efficiency.get(matmul, 1.0)
        # per-step constants, precomputed so that step_time is a handful of float ops
        self._bw = bw
        # weight-read time of a multi-token step (GEMM) / that of a one-token step (GEMV); 1 on GPU sheets
        self._gemm_factor = hw.bw_efficiency / hw.gemm_bw_efficiency if hw.gemm_bw_efficiency else 1.0
        self._serial = 1.0 - hw.compute_memory_overlap  # share of min(compute, memory) not hidden
        self._row_tile = hw.gemm_row_tile  # FLOPs of a step over more tokens than a tile: whole tiles
        self._gemv_rows = hw.gemv_rows  # a step of up to this many tokens reads weights at the one-token rate
        self._moe = bool(m.moe_experts)
        self._sliding = bool(m.sliding_layers)  # roofline: KV reads / score FLOPs stop at the window
        # a MoE model's routed experts: _experts_time; the weights vLLM replicates (MLA's down-projections, the
        # routers: sim/models.REPLICATED) every GPU reads whole, (tp - 1) more copies than the 1/tp split prices
        self._t_weights = (m.dense_bytes_read + m.replicated_extra_bytes(tp)) / bw
        # a weight-only checkpoint (GPTQ / AWQ, or fp8 / mxfp4 weights on a card without that peak) runs its
        # quantized linears through Marlin: dequantized in the kernel, multiplied at marlin_efficiency x a bf16 rate
        self._marlin = bool(m.quant_method) and matmul == m.dtype and hw.marlin_efficiency is not None
        marlin_eff = hw.marlin_efficiency if self._marlin else 1.0
        # per token, all tp GPUs together: the replicated linears each GPU multiplies whole, (tp - 1) more times
        # than the split prices; of those and the rest, the quantized linears (Marlin)
        extra = 2.0 * m.replicated_params_b * 1e9 * (tp - 1)
        quant_flops = 2.0 * (m.quant_dense_params_b + m.replicated_quant_params_b * (tp - 1)) * 1e9 \
            if self._marlin else 0.0
        self._t_per_token_flops = ((m.flops_per_token + extra - m.routed_flops_per_token - quant_flops) / matmul_flops
                                   + quant_flops / (matmul_flops * marlin_eff))
        # the LM head's share of that, which vLLM multiplies only at the rows it samples from (logits_indices: the
        # last scheduled token of each request, plus each draft it verifies), not at every prompt token of a chunk
        self._t_head_flops = m.head_flops_per_token / matmul_flops
        # the dense linears' fraction of peak by GEMM rows where the sheet gives one (dense_gemm_mfu): their FLOP
        # time above, priced at mfu, is scaled by mfu / that fraction at each step's rows
        self._gemm_log_rows, self._gemm_fractions = dense_gemm_points(hw)
        self._gemm_scales: dict[float, float] = {}  # _gemm_scale's memo: GEMM rows -> mfu / fraction
        self._mean_terms: dict[tuple, list[tuple]] = {}  # _mean_context_terms' memo
        self._mean_values: dict[tuple, tuple] = {}  # MeanContextSps.values' memo
        if self.ep > 1 and self.ep % tp:
            raise LabError(f"sim: ep {self.ep} over tp {tp}: vLLM's expert parallelism spans tp x dp GPUs, so ep "
                           "must be 1 or a multiple of tp")
        self._dp = self.ep // tp if self.ep > 1 else 1  # data-parallel ranks of one EP group (vLLM: ep = tp x dp)
        if self.moe_dp > 1 and self.ep > 1:
            raise LabError(f"sim: moe_dp {self.moe_dp} with ep {self.ep}: vLLM's data parallelism without expert "
                           "parallelism (engine.dp_mode vllm) needs hardware.ep 1")
        # DP ranks whose tokens each GPU's experts run on (vLLM gathers them): an EP group's, or moe_dp's
        self._gather = self._dp if self.ep > 1 else self.moe_dp
        # GPUs one replica's routed-expert bytes are spread over: tp, or tp x moe_dp (each holds 1/(tp x dp) of each)
        moe_split = tp * self.moe_dp
        if self._moe:  # the routed experts run as their own kernels (fused MoE): their own roofline and floor
            moe_eff = hw.moe_bw_efficiency or hw.bw_efficiency
            if m.quant_experts and hw.moe_quant_bw_efficiency:
                moe_eff = hw.moe_quant_bw_efficiency
            # without EP each of the tp GPUs reads a 1/tp slice of every touched expert (the replica's bytes over tp
            # GPUs); with EP each GPU reads its own whole experts (routed_bytes_read per GPU, one GPU's bandwidth)
            moe_bw = hw.mem_bw_tbs * 1e12 * moe_eff * (1 if self.ep > 1 else moe_split)
            expert_dtype = matmul if m.quant_experts else m.dtype
            marlin = m.quant_experts and expert_dtype == m.dtype  # quantized experts run dequantized: Marlin
            moe_flops = (hw.peak_for(expert_dtype) * 1e12 * (hw.moe_mfu or hw.mfu) * tp
                         * hw.lowp_matmul_efficiency.get(expert_dtype, 1.0)
                         * ((hw.marlin_efficiency or 1.0) if marlin else 1.0))  # fused_marlin_moe
            if expert_dtype in W8A8_DTYPES and hw.moe_lowp_efficiency is not None:  # w8a8 fused-MoE kernels'
                moe_flops = hw.peak_for(expert_dtype) * 1e12 * hw.moe_lowp_efficiency * tp  # own fraction of peak
            if self.moe_tiles not in MOE_TILES:
                raise LabError(f"sim: moe_tiles {self.moe_tiles!r} is not one of {MOE_TILES}")
            # an mxfp4 checkpoint's experts through Marlin (a card without FP4 matmuls, as kv_blocks' weights) run at
            # vLLM's padded layout (ModelShape.marlin_mxfp4_dims): each touched expert's padded bytes read, each pair's
            # padded GEMMs multiplied (gpt-oss at tp 1: x 1.090)
            marlin_layout = marlin and "fp4" not in hw.peak_tflops
            marlin_dims = m.marlin_mxfp4_dims(moe_split, self.ep > 1) if marlin_layout else None
            pad = m.marlin_mxfp4_pad_factor(moe_split, self.ep > 1) if marlin_layout else 1.0
            self._t_per_expert_byte = pad / moe_bw
            self._t_per_token_expert_flops = pad * m.routed_flops_per_token / moe_flops
            # unquantized experts on vLLM's built-in tiles (no tuned file for the shape): get_default_config before
            # vLLM PR 34846 takes 16 x 32 x 64 tiles while the call's tokens M <= E (the GPU's experts) and 64 x 64 x
            # 32 past that (fused_moe.py, vllm-project/vllm@000d1458); in that branch the grouped GEMMs run at the
            # sheet's own FLOP and read fractions for them (moe_default_tile_mfu / _bw_efficiency; null: as tuned)
            self._builtin_past = np.inf  # tokens per rank past which the 64 x 64 x 32 tiles run (inf: never)
            self._t_byte_builtin, self._t_flops_builtin = self._t_per_expert_byte, self._t_per_token_expert_flops
            if self.moe_tiles == "default" and not m.quant_experts:
                self._builtin_past = m.moe_experts / self.ep / self._gather  # M = tokens x the DP ranks gathered
                if hw.moe_default_tile_mfu is not None:
                    self._t_flops_builtin = m.routed_flops_per_token / (
                        hw.peak_for(expert_dtype) * 1e12 * hw.moe_default_tile_mfu * tp)
                if hw.moe_default_tile_bw_efficiency is not None:
                    self._t_byte_builtin = moe_eff / hw.moe_default_tile_bw_efficiency / moe_bw
            # fused_marlin_moe multiplies whole token blocks of its own fixed size: the padded rows (sim/marlin_moe.py)
            self._marlin_moe = marlin
            self._local_experts = max(1, m.moe_experts // self.ep) if self.ep > 1 else m.moe_experts
            self._moe_fixed = m.n_moe_layers * hw.moe_layer_us * 1e-6
            self._moe_per_expert = m.n_moe_layers * hw.moe_expert_us * 1e-6  # x experts touched per layer
            # EP: the pairs of other ranks' experts the fused-MoE call still writes and activates
            # (ep_remote_pair_bytes), per token of the rank's step, all MoE layers, at one GPU's achievable bandwidth
            # a dispatch backend (pplx / DeepEP) over dp > 1 ranks sends each rank only the pairs of its own experts
            remote_pairs = not (self._dp > 1 and self.all2all == "dispatch")
            # the activation rows of Marlin's padded mxfp4 layout are padded too (FusedMoE pads the hidden rows)
            hidden = marlin_dims[1] if marlin_dims else m.hidden
            expert_width = marlin_dims[0] if marlin_dims else None  # one rank's padded intermediate
            whole_width = expert_width if (marlin_dims and self.ep > 1) else m.routed_intermediate
            self._t_ep_remote_per_token = remote_pairs * (m.n_moe_layers * ep_remote_pair_bytes(
                1.0, self._dp, self.ep, m.moe_top_k, whole_width, hidden, 4.0 if m.dtype == "fp32" else 2.0, marlin)
                / achievable_bandwidth(hw))
            # every pair's activation rows through HBM (moe_pair_bytes), per token of the rank's step, all MoE
            # layers, at one GPU's achievable bandwidth: the call is handed dp x tokens tokens (a dispatch backend:
            # only its own experts' pairs, top_k / ep of each of dp x tokens tokens, ~top_k / tp per step token)
            act = 4.0 if m.dtype == "fp32" else 2.0
            if self.ep == 1:  # a 1/tp slice of every expert (1/(tp x moe_dp)), all pairs of the moe_dp ranks' tokens
                pairs_tokens, width, own_share = float(self.moe_dp), expert_width or m.routed_intermediate / moe_split, 1.0
            elif remote_pairs:  # whole experts; dp x tokens tokens' pairs, 1/ep of them the rank's own
                pairs_tokens, width, own_share = float(self._dp), whole_width, 1.0 / self.ep
            else:  # dispatch: only the rank's own pairs
                pairs_tokens, width, own_share = 1.0 / tp, whole_width, 1.0
            self._t_moe_pairs_per_token = (m.n_moe_layers * moe_pair_bytes(
                pairs_tokens, m.moe_top_k, width, hidden, act, own_share) / achievable_bandwidth(hw))
        self._t_attn = m.attn_flops_per_context_token / flops  # per (query token x cached token)
        # FA2's mixed batch (mixed_decode_rows > 1): each decoding request a whole kBlockM-row tile per query head
        # over its context rounded up to kBlockN; not where vLLM runs another attention kernel (MLA; a 1-byte KV
        # cache, which FLASH_ATTN takes on FA3 only -- flash_attn_supports_fp8 -- so FA2 cards run Triton /
        # FlashInfer there) or the sliding-window roofline applies (attended context capped, priced at the mean)
        self._pad_rows = (self.mixed_decode_rows if self.mixed_decode_rows > 1 and not self._sliding
                          and m.kv_dim_override is None and m.kv_bytes_per_elem >= 2 else 0)
        kv_bw = bw * (hw.kv_bw_efficiency / hw.bw_efficiency if hw.kv_bw_efficiency else 1.0)
        self._t_per_kv_token = m.kv_bytes_per_token * m.kv_replication(tp) / kv_bw  # each GPU reads its copy
        # the same FA2 kernel (where _pad_rows; priced where the sheet sets mixed_kv_reread) reads each request's KV
        # once per query head of its group: a (request, query head) CTA loads its K / V itself, the GQA heads
        # packed only at max_seqlen_q == 1
        kv_heads_gpu = max(1, m.n_kv_heads // tp)
        self._mixed_groups = (max(1.0, m.n_heads / tp / kv_heads_gpu) if self._pad_rows and hw.mixed_kv_reread
                              else 0.0)
        # cached tokens whose KV of one layer and one KV head fill the L2 (no L2 given: never): below, the next
        # query head's CTAs find the K / V there (the grid runs every request of one query head, then the next)
        head_bytes = 2.0 * m.head_dim * m.kv_bytes_per_elem
        self._l2_kv_tokens = hw.l2_mib * 2 ** 20 / head_bytes if hw.l2_mib else 0.0
        # per request in a step: its linear-attention state read and written back (split by heads over tp), at the
        # fused recurrent kernel's own fraction of peak (linear_state_bandwidth; sim.gdn_kernels)
        self._t_state = 2.0 * m.state_bytes / (linear_state_bandwidth(hw) * tp)
        # per request whose state a step with a prefill gathers into a contiguous copy and scatters back (vLLM's
        # chunked GDN path, sim/linear_attn.py): read + write twice, plain copies at the streaming fraction
        self._t_state_copy = STATE_COPY_PASSES * m.state_bytes / bw  # bw: all tp GPUs, each its heads' share
        # FlashInfer's chunked GDN prefill kernel at its published time (sim/linear_attn.gdn_prefill_kernel_s) where
        # the card and release run it: per prefill chunk token, the work spread over the SMs, and the recurrence
        # FLOPs the roofline charged those tokens refunded
        self._gdn_prefill = bool(self.gdn_prefill_sms and m.linear_layers)
        self._gdn_spread = (m.linear.v_heads // tp) / self.gdn_prefill_sms if self._gdn_prefill else 0.0
        self._t_gdn_refund = (m.linear_layers * m.linear.recurrence_flops_per_token / matmul_flops
                              if self._gdn_prefill else 0.0)
        # a PIECEWISE server launches each layer's attention from Python between graphs (engine.cuda_graph_mode)
        self._fixed = self.step_overhead_s + m.n_layers * (self.layer_overhead_s + self.graph_layer_s)
        if matmul != m.dtype:  # a w8a8 / w4a4 checkpoint quantizes each quantized linear's input on the fly
            self._fixed += m.quant_linears * hw.act_quant_us * 1e-6
        self._t_per_token_link = 0.0
        self._t_per_sampled_row_link = 0.0  # per row the LM head computes (a request's sampled token, each draft)
        link = hw.interconnect
        act_bytes = 4.0 if m.dtype == "fp32" else 2.0
        # ring all-reduces of the hidden states, 2 per layer + the embedding's (tp_allreduce_s: each at the custom
        # kernel's pair below the card's custom max size, at NCCL's above -- allreduce_time_s)
        self._tp_collectives = tp_step_collectives(m.n_layers) if tp > 1 else 0
        self._tp_allreduce_bytes_per_token = m.hidden * act_bytes
        if tp > 1:
            # the LM head's logits are vocab-parallel: each GPU computes vocab / tp columns of every sampled row and
            # LogitsProcessor._gather_logits joins them once a step -- an all-gather in V1, whose every worker runs
            # the sampler (vLLM PR 9856), a gather to the driver in V0 -- (tp-1)/tp of rows x vocab x activation
            # bytes over the link, plus one call's latency (vllm/model_executor/layers/logits_processor.py)
            self._fixed += allreduce_latency_s(link, tp)
            self._t_per_sampled_row_link = m.vocab * act_bytes * allgather_s_per_byte(link, tp)
        if self.all2all not in ALL2ALL_BACKENDS:
            raise LabError(f"sim: all2all {self.all2all!r} is not one of {ALL2ALL_BACKENDS}")
        dp = self._dp  # with dp 1 (ep = tp) there is no all-to-all
        if dp > 1 and self._moe:  # dispatch + combine per MoE layer (per token, per rank; see all2all_cost)
            calls, per_token = all2all_cost(self.all2all, dp, self.ep, m.hidden, m.moe_top_k, m.moe_experts,
                                            act_bytes)
            self._fixed += m.n_moe_layers * calls * link.latency_us * 1e-6
            self._t_per_token_link += m.n_moe_layers * per_token / (link.bandwidth_gbs * 1e9)
        if self.moe_dp > 1 and self._moe:  # DP without EP: all-gather + reduce-scatter per MoE layer
            calls, per_token = dp_moe_collective_cost(self.all2all, self.moe_dp, m.hidden, m.moe_experts, act_bytes)
            self._fixed += m.n_moe_layers * calls * link.latency_us * 1e-6
            self._t_per_token_link += m.n_moe_layers * per_token / (link.bandwidth_gbs * 1e9)
        self._frac = self.drafter_layers / m.n_layers
        if self.drafter_passes not in DRAFTER_PASSES:
            raise LabError(f"sim: drafter_passes {self.drafter_passes!r} is not one of {DRAFTER_PASSES}")
        # a pass reads the drafter's layers (that share of the target's active weights) and, where given, its LM
        # head (drafter_head_vocab x hidden); a chain runs max_draft passes of one token per request, each paying
        # the drafter layers' overhead, where a parallel drafter runs one pass over every draft position
        self._draft_passes = self.max_draft if self.drafter_passes == "per_token" else 1
        self._draft_tokens = 1 if self.drafter_passes == "per_token" else self.max_draft  # per request, per pass
        head = float(self.drafter_head_vocab) * m.hidden
        self._draft_weights = (self._frac * m.active_weight_bytes + head * m.bytes_per_param) / bw
        self._draft_per_token = (self._frac * m.flops_per_token + 2.0 * head) / matmul_flops
        self._draft_fixed = self._draft_passes * self.drafter_layers * self.layer_overhead_s
        self._bucket_list = list(self.buckets) if self.buckets else None
        self._bucket_max = self.buckets[-1] if self.buckets else 0
        # the SPS curve has a closed form (RooflineSps) on the plain roofline, async scheduling's overlap included
        self._closed_sps = not (self.profile is not None or self._bucket_list is not None
                                or self._t_per_token_link or self._t_per_sampled_row_link or self._moe
                                or self._tp_collectives
                                or self._gemm_factor != 1.0 or self._serial or self._row_tile > 1
                                or self._gemm_fractions or self._mixed_groups or self._pad_rows)

    @classmethod
    def from_config(cls, sim, run_root: str | Path | None = None) -> CostModel:
        """The cost model a `sim:` section describes; `run_root` resolves `cost.profile: run`."""
        c = sim.cost
        model = model_from_config(sim.model)
        check_tp_split(model, sim.hardware.tp)
        moe_dp = moe_data_parallel(sim, model)
        check_dp_link(sim, moe_dp)
        hw = hardware_from_config(sim.hardware)
        return cls(hw=hw, model=model, tp=sim.hardware.tp,
                   ep=sim.hardware.ep, all2all=hardware_all2all(sim), moe_dp=moe_dp,
                   moe_tiles=sim.engine.moe_tiles,
                   drafter_layers=sim.model.drafter_layers,
                   drafter_passes=sim.model.drafter_passes, drafter_head_vocab=sim.model.drafter_head_vocab,
                   max_draft=sim.acceptance.max_draft,
                   step_overhead_s=None if c.step_overhead_ms is None else c.step_overhead_ms / 1e3,
                   layer_overhead_s=None if c.layer_overhead_us is None else c.layer_overhead_us / 1e6,
                   request_overhead_s=None if c.request_overhead_us is None else c.request_overhead_us / 1e6,
                   graph_layer_s=graph_mode_layer_s(sim.engine.cuda_graph_mode, hw.graphs),
                   async_scheduling=engine_async_scheduling(sim.engine, vllm_platform(hw)),
                   symm_mem_allreduce=vllm_symm_mem_allreduce(sim.engine.vllm_version),
                   gdn_prefill_sms=flashinfer_prefill_sms(sim.engine.vllm_version, hw.name, bool(model.linear_layers)),
                   mixed_decode_rows=mixed_decode_rows(hw, sim.engine.vllm_version),
                   spec_overhead_s=c.spec_overhead_ms / 1e3,
                   buckets=tuple(c.cuda_graph_buckets) if c.cuda_graph_buckets else None,
                   eager_penalty=c.eager_penalty, profile=load_cost_profile(c.profile, run_root),
                   spec_profile=None if c.spec_profile is None else load_spec_profile(c.spec_profile))

    # ---- KV capacity -------------------------------------------------------------------------------
    def kv_capacity_tokens(self, gpu_mem_util: float, reserve_bytes: float = 0.0, block_size: int = 1,
                           drafter: bool = False) -> int:
        """KV tokens one replica (tp GPUs) holds in whole blocks of `block_size`: vLLM's split of memory x
        utilisation minus `reserve_bytes` of activations per GPU minus the resident weights
        (sim/kv_cache.kv_cache_blocks, the one formula); `drafter`: a speculative server's, whose drafter
        layers hold weights and KV too (drafter_memory_bytes)."""
        return self.kv_blocks(gpu_mem_util, reserve_bytes, block_size, drafter=drafter) * block_size

    def drafter_memory_bytes(self) -> tuple[float, float]:
        """(weight bytes of one replica, KV bytes per token of one replica) of the drafter's `drafter_layers`
        layers of target width, priced as the step cost prices them (that share of the target's active
        weights): vLLM loads a model drafter (EAGLE / MTP / draft model) on the GPU beside the target and gives
        its attention layers KV in the same block pool (one more layer per block row); an n-gram drafter
        (drafter_layers 0) has neither."""
        m = self.model
        weights = self._frac * m.active_weight_bytes
        kv_per_token = self.drafter_layers / m.kv_layers * m.kv_bytes_per_token * m.kv_replication(self.tp) \
            if m.kv_layers else 0.0
        return weights, kv_per_token

    def kv_blocks(self, gpu_mem_util: float, reserve_bytes: float, block_size: int,
                  layers: int | None = None, drafter: bool = False) -> int:
        """Blocks of `block_size` tokens over `layers` layers (default: all; a hybrid pool's block spans one
        KV cache group's layers, sim/kv_cache.KVGroups) that one replica's KV memory holds; `drafter`: a
        speculative server's pool, which also holds the drafter's weights and its layers' KV."""
        m = self.model
        block_bytes = block_size * m.kv_bytes_per_token * m.kv_replication(self.tp)  # all of the tp GPUs' copies
        if layers is not None:  # a linear-attention group's state page is padded to the same bytes (KVGroups)
            block_bytes = block_bytes * layers / m.kv_layers
        # one replica's share of the experts, and each of its tp GPUs' own copy of the replicated weights
        weights = m.resident_weight_bytes(self._dp * self.moe_dp) + m.replicated_extra_bytes(self.tp)
        where = f"sim: model {m.name} on {self.tp} x {self.hw.name}"
        if drafter:  # the drafter's layers take a share of every block row (as many blocks as the target's)
            drafter_weights, drafter_kv = self.drafter_memory_bytes()
            weights += drafter_weights
            block_bytes *= 1.0 + drafter_kv / (m.kv_bytes_per_token * m.kv_replication(self.tp))
            where = (f"sim: model {m.name} with a speculative policy's drafter ({self.drafter_layers} layers, "
                     f"{drafter_weights / GIB:.1f} GiB) on {self.tp} x {self.hw.name}")
        if "fp4" not in self.hw.peak_tflops:  # vLLM runs an mxfp4 checkpoint through Marlin: a padded layout
            weights += m.marlin_mxfp4_pad_bytes(self.tp * self.moe_dp, self._dp * self.moe_dp, self.ep > 1)
        return kv_cache_blocks(self.hw.kv_budget_gib * GIB, gpu_mem_util, weights,
                               reserve_bytes, block_bytes, self.tp,
                               where=where)

    # ---- step time ---------------------------------------------------------------------------------
    def step_time(self, tokens: int, kv_sum: float, n_reqs: int, spec: bool, drafts: int = 0,
                  attn_ctx: float | None = None, moe_tokens: float | None = None, state_copies: int = 0,
                  chunk_max: int = 0, chunk_sum: int = 0, chunk_kv: float = 0.0, chunk_reqs: int = 0) -> float:
        """Seconds for one engine step with `tokens` query tokens of `n_reqs` requests reading `kv_sum`
        cached tokens, `drafts` of those tokens drafts to verify (a speculative step also pays the drafter
        pass). `drafts` changes profile reads only (see the module docstring): the roofline prices every
        query token alike. `attn_ctx`: the cached tokens each query token attends to, summed over the step's
        tokens (the replica's step plan knows it); None: tokens x kv_sum / n_reqs, every token at the mean
        context (and always on a sliding-window model, whose window caps each request's context).
        `moe_tokens`: the tokens per data-parallel rank the routed experts see, where the ranks of an expert-parallel
        group run unequal steps (cluster.LockstepGroup without DP padding): vLLM's dispatch gathers every rank's
        tokens (all_gatherv over the DP group), so each rank's experts run on the group's total, which is dp x this;
        None: the step's own `tokens` (one rank, or every rank padded to the same count).
        `state_copies`: the requests whose linear-attention states the step gathers and scatters back (a hybrid
        linear-attention model's step with a prefill: sim/linear_attn.state_copies); 0 on other models.
        `chunk_max` / `chunk_sum`: the longest and the total query tokens of the step's prefill chunks of more than
        one token (sim/linear_attn.prefill_chunk_tokens), which FlashInfer's chunked GDN kernel runs over where
        gdn_prefill_sms prices it; ignored otherwise. `chunk_kv` / `chunk_reqs`: the cached tokens (done + chunk)
        and the requests of those chunks, so that kv_sum - chunk_kv is what the step's n_reqs - chunk_reqs decoding
        requests hold: on a card whose attention kernel pads a mixed step's decodes (mixed_decode_rows, FA2) they
        pay mixed_decode_tile_flops; ignored otherwise."""
        mult = 1.0
        if self._bucket_list is not None:
            if tokens <= self._bucket_max:
                tokens = self._bucket_list[bisect.bisect_left(self._bucket_list, tokens)]
            else:
                mult = self.eager_penalty
        reqs = n_reqs if n_reqs > 0 else 1
        if self.profile is not None:
            rows, query, ctx = profile_point(tokens, kv_sum, reqs, drafts)
            t = self.profile.step_ms(rows, query, ctx) * 1e-3
            if spec:
                t += self._profile_draft_ms(reqs, ctx) * 1e-3 + self.spec_overhead_s
                if self.spec_profile is not None:
                    t += float(self._spec_extra_ms(reqs, ctx)) * 1e-3
            return t * mult
        if self._sliding:
            kv_sum = reqs * self.model.attended_context(kv_sum / reqs)
        weights = self._t_weights
        if tokens > self._gemv_rows:
            weights *= self._gemm_factor
        gemm_tokens = tokens  # the rows the weight products compute: whole tiles past the first
        if tokens > self._row_tile > 1:
            gemm_tokens = -(-tokens // self._row_tile) * self._row_tile
        per_token, head = self._t_per_token_flops, self._t_head_flops
        if self._gemm_fractions:  # the dense linears at their fraction of peak for this many rows
            scale = self._gemm_scale(gemm_tokens)
            per_token, head = per_token * scale, head * scale
        # FA2's varlen call at max_seqlen_q > 1 (a prefill chunk, or a verify step's drafts): no GQA packing, each
        # decode a whole tile per query head (mixed_decode_tile_flops) and, on a sheet with mixed_kv_reread, its KV
        # read per query head (below)
        unpacked = bool(self._pad_rows) and (chunk_max > 1 or drafts > 0)
        if attn_ctx is None or self._sliding:
            compute = (tokens * (per_token + kv_sum / reqs * self._t_attn) if gemm_tokens == tokens
                       else gemm_tokens * per_token + tokens * kv_sum / reqs * self._t_attn)
            unpacked = unpacked and chunk_max <= 1  # a verify step alone: every request a decode at the mean context
            if unpacked:
                tile = self.mixed_decode_tile_flops(kv_sum, n_reqs, drafts) * self._t_attn
                attention = tokens * kv_sum / reqs * self._t_attn + tile
                compute += tile
        else:  # a prefill chunk beside long decodes is not charged their context (nor they its)
            attention = (attn_ctx + (self.mixed_decode_tile_flops(kv_sum - chunk_kv, n_reqs - chunk_reqs, drafts)
                                     if unpacked else 0.0)) * self._t_attn
            compute = gemm_tokens * per_token + attention
        unsampled = tokens - reqs - drafts  # prompt tokens before each request's last: no LM-head row
        if unsampled > 0:
            compute -= unsampled * head
        gdn = 0.0
        if self._gdn_prefill and chunk_max > 1:  # the chunked kernel's own time, not its FLOPs at the card's mfu
            compute -= chunk_sum * self._t_gdn_refund
            gdn = self.model.linear_layers * gdn_prefill_kernel_s(chunk_max, chunk_sum * self._gdn_spread)
        if self._mixed_groups and unpacked:  # FA2's unpacked kernel (a chunk or drafts in the step), after the GEMMs
            groups = self._mixed_groups if kv_sum > self._l2_kv_tokens else 1.0  # KV re-read per query head
            t = max(weights, compute - attention) + max(attention, kv_sum * self._t_per_kv_token * groups)
            memory = weights
        else:
            memory = weights + kv_sum * self._t_per_kv_token
            t = max(memory, compute)
        t = t + self._fixed + tokens * self._t_per_token_link + self.tp_allreduce_s(tokens)
        if self._t_per_sampled_row_link:  # the logits' gather: the rows the LM head computed
            t += (tokens - unsampled if unsampled > 0 else tokens) * self._t_per_sampled_row_link
        if self._t_state:  # the recurrent GDN kernel's own state traffic, after the GEMMs, not beside them
            t += n_reqs * self._t_state
        if self._serial:
            t += self._serial * min(memory, compute)
        if self._moe:
            if moe_tokens is None:
                t += self._experts_time(tokens, gemm_tokens)
            else:  # the group's gathered tokens (per rank), not this rank's own; no tiles on a GPU sheet
                t += self._experts_time(moe_tokens, moe_tokens)
        t += state_copies * self._t_state_copy + gdn
        if spec:
            t += self._draft_pass(n_reqs) + self._draft_fixed + self.spec_overhead_s
        host = self.host_s(n_reqs)
        if self.async_scheduling:  # the engine core's host work for the next step runs beside this one
            return max(t * mult, host)
        return (t + host) * mult

    def _mean_context_terms(self, p0: int, own: int, n_reqs: int, big: bool, hi: int) -> list[tuple]:
        """MeanContextSps.values' terms of b = 0..hi-1 that do not depend on the cached tokens, memoised per (p0, own,
        n_reqs, big): (tokens, drafts, weights, GEMM FLOP time, the GEMM-rate curve's extra FLOP time, the LM-head
        time of unsampled rows, query rows per decode, FA2's padded rows per decode and query head (0: packed),
        per-token link time, all-reduce time, sampled-row link time), each as step_time_vec computes it."""
        key = (p0, own, n_reqs, big)
        table = self._mean_terms.get(key)
        if table is None:
            if len(self._mean_terms) >= 4096:  # many prefill sizes (p0): start over rather than grow without bound
                self._mean_terms.clear()
            table = self._mean_terms[key] = []
        if len(table) < hi:
            reqs = n_reqs if n_reqs > 0 else 1
            pad = 0 if big else self._pad_rows
            decodes = max(n_reqs, 1)
            t_tok, row_tile = self._t_per_token_flops, self._row_tile
            for b in range(len(table), hi):
                tokens = float(b + p0)
                drafts = float(b - own) if b > own else 0.0
                weights = self._t_weights
                if self._gemm_factor != 1.0:
                    weights = weights * (self._gemm_factor if tokens > self._gemv_rows else 1.0)
                gemm_tokens = tokens
                if row_tile > 1 and tokens > row_tile:
                    gemm_tokens = float(math.ceil(tokens / row_tile)) * row_tile
                head, gemm_term = self._t_head_flops, 0.0
                if self._gemm_fractions:
                    scale = self._gemm_scale(gemm_tokens)
                    gemm_term = gemm_tokens * t_tok * (scale - 1.0)
                    head = head * scale
                unsampled = tokens - reqs - drafts
                per_req = 1.0 + drafts / decodes
                rows = pad * float(math.ceil(per_req / pad)) if pad and drafts > 0 else 0.0
                table.append((tokens, drafts, weights, gemm_tokens * t_tok, gemm_term,
                              (max(0.0, unsampled)) * head, per_req, rows,
                              tokens * self._t_per_token_link,
                              self.tp_allreduce_s(tokens) if self._tp_collectives else 0.0,
                              min(tokens, reqs + drafts) * self._t_per_sampled_row_link))
        return table

    def _gemm_scale(self, gemm_rows) -> float:
        """mfu / the dense linears' fraction of peak at `gemm_rows` GEMM rows (dense_gemm_fraction), the factor
        step_time and step_time_vec scale their FLOP time by; memoised per row count (the same floats)."""
        rows = float(gemm_rows)
        scale = self._gemm_scales.get(rows)
        if scale is None:
            scale = self.hw.mfu / dense_gemm_fraction(self._gemm_log_rows, self._gemm_fractions, self.hw.mfu, rows)
            self._gemm_scales[rows] = scale
        return scale

    def mixed_decode_tile_flops(self, decode_kv: float, decodes: int, drafts=0) -> float:
        """The attended (query row x cached token) pairs beyond the decodes' own that `decodes` decoding requests
        holding `decode_kv` cached tokens cost in a step with a prefill chunk, where the attention kernel pads each
        to mixed_decode_rows query rows per head (0 where it does not, CostModel._pad_rows). vLLM's FA2 (compute
        capability 8.x and 12.x, V1 engine) runs the mixed batch as one paged flash_attn_varlen_func call
        (vllm/v1/attention/backends/flash_attn.py FlashAttentionImpl.forward, vllm-project/vllm@0084b783); a block
        table forces the split-KV kernel (run_mha_fwd(params, stream, /*force_split_kernel=*/paged_KV)), whose
        tiles are kBlockM = 64 query rows x kBlockN = 128 keys at head dim 128 (run_mha_fwd_splitkv_dispatch), one
        CTA per (query block, request, query head), every key block of the request's context; the GQA heads are
        packed into the rows (seqlenq_ngroups_swapped) only when max_seqlen_q == 1 (mha_varlen_fwd; csrc/flash_attn/
        flash_api.cpp and src/flash_fwd_launch_template.h, vllm-project/flash-attention@04325b67). So a decode beside
        a chunk multiplies 64 rows x its context, rounded up to whole key blocks (on average half a block more).
        `drafts`: the draft tokens the decodes verify in the step. A speculative decode's 1 + d query rows sit in that
        same tile (cdiv(1 + d, 64) tiles: one below 64), and its drafts' rows are already in the step's attended
        pairs (attn_ctx: each decode's 1 + d tokens its sequence, the mean context), so the tile costs what is beyond
        those, not 64 rows more per draft. The same padding holds in a verify step with no chunk: max_seqlen_q = 1 + k
        > 1 there too (vLLM's FLASH_ATTN calls the same flash_attn_varlen_func with max_seqlen_q = max_query_len;
        its FlashAttentionMetadataBuilder notes FA2's packed-GQA handling is for max_query_len = 1 only; session 39,
        h139). Shapes: scalars or numpy arrays alike."""
        if not self._pad_rows:
            return 0.0 * decode_kv
        if not isinstance(drafts, np.ndarray) and not isinstance(decode_kv, np.ndarray):  # scalars: the same floats
            per_req = 1.0 + float(drafts) / max(decodes, 1)
            rows = self._pad_rows * float(math.ceil(per_req / self._pad_rows))
            return float(rows * (decode_kv + decodes * (FA2_KEY_BLOCK - 1) / 2) - decode_kv * per_req)
        per_req = 1.0 + np.asarray(drafts, dtype=np.float64) / max(decodes, 1)  # query rows per decode (mean)
        rows = self._pad_rows * np.ceil(per_req / self._pad_rows)  # whole tiles per decode and query head
        padded = decode_kv + decodes * (FA2_KEY_BLOCK - 1) / 2  # each context rounded up to whole key blocks
        out = rows * padded - decode_kv * per_req
        return float(out) if np.ndim(out) == 0 else out

    def tp_allreduce_s(self, tokens):
        """Seconds of one step's tensor-parallel all-reduces of the hidden states (scalar or numpy `tokens`, the
        step's padded query tokens): tp_step_collectives of tokens x hidden x activation bytes each, priced by
        allreduce_time_s (custom kernel, torch symmetric memory on the releases that run it, or NCCL by size); 0 at
        tp 1."""
        if not self._tp_collectives:
            return 0.0 * tokens
        return self._tp_collectives * allreduce_time_s(self.hw.interconnect, self.tp,
                                                       tokens * self._tp_allreduce_bytes_per_token,
                                                       symm_mem=self.symm_mem_allreduce)

    def profile_point(self, tokens: int, kv_sum: float, n_reqs: int, drafts: float = 0) -> tuple[float, float, float]:
        """(batch, query_tokens, context_len) at which step_time reads the measured profile for this step, after
        CUDA-graph bucket padding (what sim/profile_coverage.py checks against the profile's grid)."""
        if self._bucket_list is not None and tokens <= self._bucket_max:
            tokens = self._bucket_list[bisect.bisect_left(self._bucket_list, tokens)]
        return profile_point(tokens, kv_sum, n_reqs if n_reqs > 0 else 1, drafts)

    def _experts_time(self, tokens, gemm_tokens):
        """Seconds of the routed experts in a step of `tokens` query tokens (`gemm_tokens` of GEMM rows), all
        MoE layers, on one rank: per layer the fused-MoE kernel's floor (moe_layer_us), moe_expert_us per
        touched expert, and the longer of its expert-weight reads and its grouped-GEMM FLOPs (scalar or numpy)."""
        touched = self.model.touched_experts(tokens, self.ep, self._gather)  # one GPU's kernel
        builtin = tokens > self._builtin_past  # vLLM's 64 x 64 x 32 built-in tiles (engine.moe_tiles default)

        def pick(on_builtin, on_tuned):  # per token count (scalar or numpy)
            return np.where(builtin, on_builtin, on_tuned) if isinstance(tokens, np.ndarray) \
                else (on_builtin if builtin else on_tuned)
        per_byte = pick(self._t_byte_builtin, self._t_per_expert_byte)
        per_flop = pick(self._t_flops_builtin, self._t_per_token_expert_flops)
        memory = self.model.routed_bytes_read(tokens, self.ep, self._gather) * per_byte
        if self._gemm_factor != 1.0:
            memory = memory * np.where(tokens > self._gemv_rows, self._gemm_factor, 1.0) \
                if isinstance(tokens, np.ndarray) else memory * (self._gemm_factor if tokens > self._gemv_rows else 1.0)
        compute = gemm_tokens * per_flop
        if self._marlin_moe:  # the call gets the gathered tokens of the ranks it serves (vLLM's M)
            compute = compute * marlin_padding_factor(tokens * self._gather, self.model.moe_top_k,
                                                      self.model.moe_experts, self._local_experts)
        longer = np.maximum(memory, compute) if isinstance(memory, np.ndarray) else max(memory, compute)
        if self._serial:
            longer = longer + self._serial * (np.minimum(memory, compute) if isinstance(memory, np.ndarray)
                                              else min(memory, compute))
        return (longer + self._moe_fixed + self._moe_per_expert * touched
                + tokens * (self._t_ep_remote_per_token + self._t_moe_pairs_per_token))

    def moe_layer_time(self, tokens):
        """Seconds of one MoE layer's routed experts over `tokens` tokens on one rank (what a fused-MoE kernel
        benchmark times: sim/moe_kernels.py); numpy arrays work."""
        tokens = np.asarray(tokens, dtype=np.float64)
        return self._experts_time(tokens, tokens) / self.model.n_moe_layers

    def attention_time(self, attended):
        """Seconds of attention's score FLOPs over `attended` (query token x cached token) pairs, all KV layers, on
        the replica (the compute term's attention part alone: what a FlashAttention forward benchmark times,
        sim/attention_kernels.py); numpy arrays work."""
        return attended * self._t_attn

    def _draft_pass(self, n_reqs: int) -> float:
        """Roofline time of the drafter's passes (no fixed overheads): one over n_reqs x max_draft tokens, or
        (drafter_passes per_token) max_draft in a row over n_reqs tokens each."""
        rows = n_reqs * self._draft_tokens
        dc = rows * self._draft_per_token
        weights = self._draft_weights * (self._gemm_factor if rows > self._gemv_rows else 1.0)
        return self._draft_passes * (max(weights, dc) + self._serial * min(weights, dc))

    def _profile_draft_ms(self, reqs, ctx, many: bool = False):
        """A measured profile's drafter: its step over the drafter's share of layers, per pass."""
        step = self.profile.step_ms_many if many else self.profile.step_ms
        return self._draft_passes * self._frac * step(reqs, self._draft_tokens, ctx)

    def step_time_vec(self, tokens: np.ndarray, kv_sum, n_reqs: int, spec: bool,
                      drafts: np.ndarray | int = 0, state_copies: int = 0, chunk_max=0,
                      chunk_sum=0, attn_ctx=None, chunk_kv=0.0, chunk_reqs: int = 0) -> np.ndarray:
        """Vectorised step_time over an array of token counts (same batch, different verify budgets);
        `drafts`: the draft tokens among each entry's tokens (an array of the same shape, or one number);
        `kv_sum`, `attn_ctx`, `chunk_max` / `chunk_sum`, `chunk_kv`: as step_time's, one number or an array of that
        shape (a step whose prefill shrinks as its verify tokens grow: step_sps_curve), where every entry has a
        chunk of more than one token or none does; `state_copies`, `chunk_reqs`: as step_time's, one number.
        Without step_time's moe_tokens: it prices what a policy compares (sps_curve, step_sps_curve, sps_table;
        sim/cluster.py Replica._choose), never a step's duration, which step_time gives
        (tests/sim/test_sps_closed_form.py holds the two equal)."""
        tokens = np.asarray(tokens, dtype=np.float64)
        mult = 1.0
        if self._bucket_list is not None:
            b = np.asarray(self._bucket_list, dtype=np.float64)
            idx = np.searchsorted(b, tokens)
            inside = idx < len(b)
            tokens = np.where(inside, b[np.minimum(idx, len(b) - 1)], tokens)
            mult = np.where(inside, 1.0, self.eager_penalty)
        reqs = n_reqs if n_reqs > 0 else 1
        if self.profile is not None:
            ctx = np.maximum(kv_sum - tokens, 0.0) / reqs  # as in step_time
            rows = reqs + np.asarray(drafts, dtype=np.float64)
            t = self.profile.step_ms_many(rows, tokens / rows, ctx) * 1e-3
            if spec:
                t = t + (self._profile_draft_ms(reqs, ctx, many=True) * 1e-3 + self.spec_overhead_s)
                if self.spec_profile is not None:
                    t = t + self._spec_extra_ms(reqs, ctx) * 1e-3
            return t * mult
        if self._sliding:
            kv_sum = reqs * self.model.attended_context(kv_sum / reqs)
        weights = self._t_weights
        if self._gemm_factor != 1.0:
            weights = weights * np.where(tokens > self._gemv_rows, self._gemm_factor, 1.0)
        gemm_tokens = tokens
        if self._row_tile > 1:  # whole tiles, as in step_time
            gemm_tokens = np.where(tokens > self._row_tile, np.ceil(tokens / self._row_tile) * self._row_tile, tokens)
        big = np.any(np.asarray(chunk_max) > 1)  # a prefill chunk of more than one token (each entry alike)
        drafted = np.asarray(drafts, dtype=np.float64) > 0
        # as step_time: FA2's call at max_seqlen_q > 1 (a chunk, or drafts: per entry) pads and re-reads
        unpacked = (np.logical_or(big, drafted) if self._pad_rows else np.zeros_like(drafted)) & np.ones_like(tokens, bool)
        if attn_ctx is not None and not self._sliding:  # as step_time: the plan's attention, FA2's padded decodes
            attention = attn_ctx * self._t_attn
            if np.any(unpacked):
                attention = attention + np.where(unpacked, self.mixed_decode_tile_flops(
                    kv_sum - chunk_kv, n_reqs - chunk_reqs, drafts) * self._t_attn, 0.0)
            compute = gemm_tokens * self._t_per_token_flops + attention
        else:
            if self._row_tile > 1:
                compute = gemm_tokens * self._t_per_token_flops + tokens * kv_sum / reqs * self._t_attn
            else:
                compute = tokens * (self._t_per_token_flops + kv_sum / reqs * self._t_attn)
            unpacked = unpacked & (not big)  # as step_time: a verify step alone, at the mean context
            if np.any(unpacked):
                tile = np.where(unpacked, self.mixed_decode_tile_flops(kv_sum, n_reqs, drafts) * self._t_attn, 0.0)
                attention = tokens * kv_sum / reqs * self._t_attn + tile
                compute = compute + tile
        head = self._t_head_flops
        if self._gemm_fractions:  # as in step_time: the dense linears at their fraction of peak for these rows
            scale = np.array([self._gemm_scale(g) for g in np.ravel(gemm_tokens).tolist()]).reshape(
                np.shape(gemm_tokens))
            compute = compute + gemm_tokens * self._t_per_token_flops * (scale - 1.0)
            head = head * scale
        if self._t_head_flops:  # as in step_time: no LM-head row for a prompt token before its request's last
            compute = compute - np.maximum(tokens - reqs - np.asarray(drafts, dtype=np.float64), 0.0) * head
        gdn = 0.0
        if self._gdn_prefill and big:  # as step_time: the chunked kernel's own time, its FLOPs refunded
            compute = compute - chunk_sum * self._t_gdn_refund
            gdn = self.model.linear_layers * gdn_prefill_kernel_s(chunk_max, chunk_sum * self._gdn_spread)
        if self._mixed_groups and np.any(unpacked):  # as step_time: FA2's unpacked kernel after the GEMMs
            groups = np.where(kv_sum > self._l2_kv_tokens, self._mixed_groups, 1.0)
            split = (np.maximum(weights, compute - attention)
                     + np.maximum(attention, kv_sum * self._t_per_kv_token * groups))
            plain = weights + kv_sum * self._t_per_kv_token
            t = np.where(unpacked, split, np.maximum(compute, plain))
            memory = np.where(unpacked, weights, plain)
        else:
            memory = weights + kv_sum * self._t_per_kv_token
            t = np.maximum(compute, memory)
        t = t + n_reqs * self._t_state  # as step_time: the state kernel on its own
        if self._serial:
            t = t + self._serial * np.minimum(compute, memory)
        if self._moe:
            t = t + self._experts_time(tokens, gemm_tokens)
        t = t + (state_copies * self._t_state_copy + gdn)
        t = t + self._fixed + tokens * self._t_per_token_link + self.tp_allreduce_s(tokens)
        if self._t_per_sampled_row_link:  # as step_time: the logits' gather over the sampled rows
            t = t + np.minimum(tokens, reqs + np.asarray(drafts, dtype=np.float64)) * self._t_per_sampled_row_link
        if spec:
            t = t + (self._draft_pass(n_reqs) + self._draft_fixed + self.spec_overhead_s)
        host = self.host_s(n_reqs)
        if self.async_scheduling:  # as step_time: overlapping the GPU's time
            return np.maximum(t * mult, host)
        return (t + host) * mult

    def _spec_extra_ms(self, reqs, ctx):
        """What the speculative server's decode step costs over the profile's step of the same shape (reqs
        x (1 + k) query tokens over ctx): its draft lookup, rejection sampling and logits at every drafted
        position, which a profile measured without speculation does not hold. May be negative."""
        query = self.spec_profile.axes[1][0]  # the one query length of a speculative server's rows (1 + k)
        return (self.spec_profile.step_ms_many(reqs, query, ctx)
                - self.profile.step_ms_many(reqs * query, 1.0, ctx))

    def sps_curve(self, prefill_tokens: int, kv_sum: float, n_reqs: int, decode_reqs: int | None = None,
                  state_copies: int = 0, chunk_max: int = 0, chunk_sum: int = 0, once_s: float = 0.0):
        """SPS(b): steps per second of a speculative step verifying b tokens beside `prefill_tokens` prefill
        tokens, `n_reqs` requests, `kv_sum` cached tokens (what a policy maximises tau x SPS over); b counts
        the `decode_reqs` decoding requests' own tokens (default n_reqs), the rest of b are drafts.
        `state_copies`, `chunk_max` / `chunk_sum`: a hybrid model's state copies and GDN prefill chunks of the
        step, as step_time takes them; `once_s`: seconds the step adds beyond step_time (a GDN hybrid's one-off
        Triton autotune, engine.linear_attn_autotune_s: sim/cluster.py). SPS(b) = 1 / (step_time(b +
        prefill_tokens, kv_sum, n_reqs, True, b - decode_reqs, state_copies=..., chunk_max=..., chunk_sum=...) +
        once_s), the step's mean-context attention (attn_ctx None), host overlap under async scheduling included.
        A closed form on the plain roofline (RooflineSps); step_time_vec otherwise. What a replica hands its policy
        is step_sps_curve (the attention, tiles and prefill of the step it builds at each b); this one is its
        decode-only case and the mean-context curve of a batch (tables, tests)."""
        own = n_reqs if decode_reqs is None else decode_reqs
        if not self._closed_sps:
            return MeanContextSps(self, prefill_tokens, kv_sum, n_reqs, own, state_copies, chunk_max, chunk_sum,
                                  once_s)
        reqs = n_reqs if n_reqs > 0 else 1
        if self._sliding:
            kv_sum = reqs * self.model.attended_context(kv_sum / reqs)
        per_token = self._t_per_token_flops + kv_sum / reqs * self._t_attn
        # the compute step_time takes off (b + p0) x per_token does not depend on b: the prompt tokens without an
        # LM-head row (its `unsampled`: tokens - requests - drafts; b + p0 tokens, n_reqs + (b - own) sampled rows)
        # and the recurrence FLOPs of the GDN prefill chunks FlashInfer's kernel runs; folded into the prefill count
        unsampled = max(prefill_tokens - (reqs - own), 0)
        refund = unsampled * self._t_head_flops
        fixed, floor = self._closed_fixed(n_reqs, state_copies)
        if self._gdn_prefill and chunk_max > 1:
            refund += chunk_sum * self._t_gdn_refund
            fixed += self.model.linear_layers * gdn_prefill_kernel_s(chunk_max, chunk_sum * self._gdn_spread)
        prefill = prefill_tokens - refund / per_token if refund else prefill_tokens
        return RooflineSps(prefill, per_token, self._t_weights + kv_sum * self._t_per_kv_token, fixed, floor, once_s)

    def host_s(self, n_reqs: int) -> float:
        """Seconds of the engine core's host work for a step of `n_reqs` requests: the sheet's step_host_ms and
        n_reqs x request_overhead_us, in series with the GPU's time or, under async scheduling, beside it (step_time
        and every SPS curve take it from here)."""
        return self.step_host_s + n_reqs * self.request_overhead_s

    def _closed_fixed(self, n_reqs: int, state_copies: int) -> tuple[float, float]:
        """The closed forms' (RooflineSps, PiecewiseSps) seconds beside a speculative step's roofline max that do not
        depend on b, and its host floor: fixed overheads, the drafter, a hybrid's recurrent states and state copies,
        and the host work (host_s) -- in the first without async scheduling, the second (a floor) with it."""
        host = self.host_s(n_reqs)
        fixed = self._fixed + self.spec_overhead_s + self._draft_fixed
        if not self.async_scheduling:
            fixed += host
        fixed = fixed + n_reqs * self._t_state + self._draft_pass(n_reqs) + state_copies * self._t_state_copy
        return fixed, host if self.async_scheduling else 0.0

    def step_sps_curve(self, decodes: int, decode_kv: float, prefills, budget: int, chunked: bool = True,
                       linear_mixed: str | None = None, once_s: float = 0.0):
        """SPS(b) of the step a replica plans (sim/cluster.py Replica._choose): `decodes` decoding requests holding
        `decode_kv` cached tokens verify b tokens (their own and b - decodes drafts), and the prefill chunks the
        scheduler then fits in budget - b tokens (`budget`: max_num_batched_tokens) go beside them: `prefills`, the
        (tokens to compute, tokens cached before, stops) of the running prefills and the queued admissions in its
        order, `chunked`: chunked prefill (sim/prefill_outlook.py). At each b, 1 / (step_time + once_s) of that
        step as Replica.run prices it: attn_ctx (each decode's tokens its sequence, a chunk of c after `done`
        c x (done + (c + 1) / 2)), the chunks' cached tokens in kv_sum, FA2's padded decodes beside a chunk
        (chunk_kv / chunk_reqs: mixed_decode_tile_flops), a hybrid's state copies (`linear_mixed`: the engine's
        mode, None on other models) and GDN prefill kernel, and `once_s` (the first chunked step's autotune) where a
        chunk holds more than one token. Defined for b >= decodes. No prefills: sps_curve's closed form of the
        decodes alone (RooflineSps, the same floats). On the plain roofline (not sliding-window) a closed form per
        piece of b (PiecewiseSps); step_time_vec per piece otherwise (PlanSps)."""
        r = decodes
        if not prefills:
            return self.sps_curve(0, decode_kv, r, r)
        pieces = prefill_pieces(prefills, budget, chunked, r)
        if self._closed_sps and not self._sliding:
            return PiecewiseSps([self._closed_piece(r, decode_kv, p, linear_mixed, once_s) for p in pieces])
        return PlanSps(self, r, decode_kv, pieces, linear_mixed, once_s)

    def _piece_terms(self, r: int, p: PrefillPiece, linear_mixed: str | None):
        """The terms of a piece's step that do not depend on b: (whole chunks' tokens, attended pairs, cached
        tokens after the step, chunks, whole chunks of more than one token: tokens and the longest, any chunk of
        more than one token, state copies)."""
        tokens = attended = kv = 0.0
        big_sum = big_max = 0
        sizes = []
        for c, done in p.whole:
            tokens += c
            attended += c * (done + (c + 1) / 2)
            kv += done + c
            sizes.append(c)
            if c > 1:
                big_sum += c
                big_max = max(big_max, c)
        k = len(p.whole)
        if p.part_top is not None:
            k += 1
            sizes.append(2 if p.part_big else 1)  # what state_copies reads: more than one token or not
        big = big_max > 1 or p.part_big
        copies = linear_state_copies(r, sizes, True, linear_mixed) if linear_mixed else 0
        return tokens, attended, kv, k, big_sum, big_max, big, copies

    def _closed_piece(self, r: int, decode_kv: float, p: PrefillPiece, linear_mixed: str | None, once_s: float):
        """PiecewiseSps's coefficients of one piece (its docstring), step_time's terms rearranged in b."""
        tokens, attended, kv, k, big_sum, big_max, big, copies = self._piece_terms(r, p, linear_mixed)
        t_tok, t_attn, t_head, t_kv = self._t_per_token_flops, self._t_attn, self._t_head_flops, self._t_per_kv_token
        n = r + k
        per_draft = decode_kv / r  # attended pairs per verify token (each decode's tokens its sequence)
        # no FA2 tile term: _pad_rows rules out the closed forms (_closed_sps), PlanSps prices it (h139)
        gdn = self._gdn_prefill and big
        if p.part_top is None:  # tokens b + whole, LM-head-free rows whole - k (each chunk's last samples)
            q2, q1 = 0.0, t_tok + per_draft * t_attn
            q0 = tokens * t_tok + attended * t_attn - (tokens - k) * t_head
            m0, m1 = self._t_weights + (decode_kv + kv) * t_kv, 0.0
            if gdn:
                q0 -= big_sum * self._t_gdn_refund
        else:  # + the partial chunk u = top - b after `done`: b + u = top tokens, u x (done + (u + 1) / 2) pairs
            top, half = float(p.part_top), p.part_done + 0.5
            q2 = 0.5 * t_attn
            q1 = (per_draft - half - top) * t_attn + t_head
            q0 = ((tokens + top) * t_tok + (attended + top * half + 0.5 * top * top) * t_attn
                  - (tokens + top - k) * t_head)
            m0, m1 = self._t_weights + (decode_kv + kv + p.part_done + top) * t_kv, -t_kv
            if gdn:
                q0 -= (big_sum + (top if p.part_big else 0.0)) * self._t_gdn_refund
                if p.part_big:
                    q1 += self._t_gdn_refund
        c, floor = self._closed_fixed(n, copies)
        gk = lines = None
        if gdn:  # linear layers x (floor + per token x max(longest chunk, chunk tokens x spread)), lines in b
            c += self.model.linear_layers * GDN_PREFILL_FLOOR_S
            gk = self.model.linear_layers * GDN_PREFILL_S_PER_TOKEN
            spread = self._gdn_spread
            if p.part_big:
                top = float(p.part_top)
                lines = (float(big_max), top, -1.0, spread * (big_sum + top), -spread)
            else:
                lines = (float(big_max), spread * big_sum, 0.0, spread * big_sum, 0.0)
        return (p.hi, q0, q1, q2, m0, m1, c, floor, once_s if big else 0.0, gk, lines)

    @property
    def t_per_kv_token(self) -> float:
        return self._t_per_kv_token

    def sps_table(self, max_tokens: int, kv_per_req: float = 1024, spec: bool = True) -> np.ndarray:
        """SPS(B) for B = 1..max_tokens at one request per token (the 'profiled once at init' table)."""
        b = np.arange(1, max_tokens + 1)
        return 1.0 / self.step_time_vec(b, kv_per_req * b, int(b[0]), spec, b - b[0])  # every token sampled


def profile_point(tokens, kv_sum: float, reqs: int, drafts=0) -> tuple[float, float, float]:
    """A step's point in a measured profile (the module docstring's reading): batch = requests + drafts (each draft
    token read as one more decoding request's token), query_tokens = tokens / batch, context_len = the cached tokens
    per request before the step (kv_sum counts the step's own tokens; a fresh prompt's prefill is context 0).
    `reqs` >= 1. The one formula step_time and CostModel.profile_point share."""
    rows = reqs + drafts
    return rows, tokens / rows, max(kv_sum - tokens, 0.0) / reqs


class RooflineSps:
    """SPS(b) = 1 / (max(max((b + p0) x f, m) + c, h) + e) of one batch on the plain roofline: f the seconds per
    query token, m the memory time, c the step's other seconds, h the host floor (async scheduling: the engine
    core's host work overlapping the step; 0 otherwise, that work then in c), e seconds beyond the step (a one-off
    autotune; 0 otherwise).

    Callable on a numpy array of b (the policy interface, sim/policies/base.SpsFn); `values(lo, hi)` gives
    SPS(b) for b = lo..hi-1 as a list of floats with the same float operations in plain Python (small batches,
    where numpy's per-call overhead would dominate; the two agree bit for bit).
    """

    __slots__ = ("c", "e", "f", "h", "m", "p0")

    def __init__(self, p0: float, f: float, m: float, c: float, h: float = 0.0, e: float = 0.0):
        self.p0, self.f, self.m, self.c, self.h, self.e = p0, f, m, c, h, e

    def __call__(self, b):
        return 1.0 / (np.maximum(np.maximum((b + self.p0) * self.f, self.m) + self.c, self.h) + self.e)

    def values(self, lo: int, hi: int) -> list[float]:
        p0, f, m, c = self.p0, self.f, self.m, self.c
        memory_bound = (hi - 1 + p0) * f <= m  # over the whole range ((b + p0) x f grows with b)
        if self.h or self.e:
            h, e = self.h, self.e
            if memory_bound:
                return [1.0 / (max(m + c, h) + e)] * (hi - lo)
            return [1.0 / (max(max((b + p0) * f, m) + c, h) + e) for b in range(lo, hi)]
        # no floor, nothing beyond: two float operations fewer, the same floats (max(x, 0) + 0 is x for x > 0)
        if memory_bound:
            return [1.0 / (m + c)] * (hi - lo)
        return [1.0 / (max((b + p0) * f, m) + c) for b in range(lo, hi)]


MEAN_VALUES_MEMO = 1 << 16  # MeanContextSps.values' memo starts over past this many curves (bounded memory)


class MeanContextSps:
    """CostModel.sps_curve off the plain roofline: SPS(b) = 1 / (step_time_vec(b + p0, kv_sum, n_reqs, True,
    max(b - own, 0), ...) + once_s), the mean-context curve of a batch. Callable on a numpy array of b (the policy
    interface); `values(lo, hi)` gives SPS(b) for b = lo..hi-1 as a list of floats, on a GPU roofline (no measured
    profile, CUDA-graph buckets or MoE) with step_time_vec's float operations in plain Python, one b at a time
    (most steps of a light load price a few b: numpy's per-call overhead was most of sim.bench's time on FA2
    cards, session 39 h142); the two agree bit for bit (tests/sim/test_sps_closed_form.py)."""

    __slots__ = ("chunk_max", "chunk_sum", "cost", "kv_sum", "n_reqs", "once_s", "own", "p0", "state_copies",
                 "values")

    def __init__(self, cost: CostModel, p0: int, kv_sum: float, n_reqs: int, own: int, state_copies: int,
                 chunk_max: int, chunk_sum: int, once_s: float):
        self.cost, self.p0, self.kv_sum, self.n_reqs, self.own = cost, p0, kv_sum, n_reqs, own
        self.state_copies, self.chunk_max, self.chunk_sum, self.once_s = state_copies, chunk_max, chunk_sum, once_s
        scalar = (cost.profile is None and cost._bucket_list is None and not cost._moe
                  and not isinstance(kv_sum, np.ndarray))
        self.values = self._values if scalar else None  # prefix.py reads `values` (None: numpy only)

    def __call__(self, b):
        return 1.0 / (self.cost.step_time_vec(b + self.p0, self.kv_sum, self.n_reqs, True,
                                              np.maximum(np.asarray(b) - self.own, 0), self.state_copies,
                                              self.chunk_max, self.chunk_sum) + self.once_s)

    def _values(self, lo: int, hi: int) -> list[float]:
        """step_time_vec's roofline branch (attn_ctx None, one spec step, no profile / buckets / MoE), scalar;
        memoised per curve and range (a decode's context recurs across requests: most of a light load's curves)."""
        cm = self.cost
        key = (self.p0, self.own, self.n_reqs, self.kv_sum, self.state_copies, self.chunk_max, self.chunk_sum,
               self.once_s, lo, hi)
        memo = cm._mean_values
        got = memo.get(key)
        if got is None:
            if len(memo) >= MEAN_VALUES_MEMO:
                memo.clear()
            got = memo[key] = tuple(self._compute_values(lo, hi))
        return list(got)

    def _compute_values(self, lo: int, hi: int) -> list[float]:
        cm = self.cost
        n_reqs, own, p0 = self.n_reqs, self.own, self.p0
        reqs = n_reqs if n_reqs > 0 else 1
        kv_sum = self.kv_sum
        if cm._sliding:
            kv_sum = reqs * cm.model.attended_context(kv_sum / reqs)
        t_tok, t_attn, t_head, t_kv = cm._t_per_token_flops, cm._t_attn, cm._t_head_flops, cm._t_per_kv_token
        row_tile = cm._row_tile
        big = self.chunk_max > 1
        kv_per_req = kv_sum / reqs
        plain_kv = kv_sum * t_kv
        gdn, refund = 0.0, 0.0
        if cm._gdn_prefill and big:
            refund = self.chunk_sum * cm._t_gdn_refund
            gdn = cm.model.linear_layers * gdn_prefill_kernel_s(self.chunk_max, self.chunk_sum * cm._gdn_spread)
        mixed = bool(cm._mixed_groups)
        reread = plain_kv * ((cm._mixed_groups if kv_sum > cm._l2_kv_tokens else 1.0) if mixed else 0.0)
        state = n_reqs * cm._t_state
        copies = self.state_copies * cm._t_state_copy + gdn
        spec = cm._draft_pass(n_reqs) + cm._draft_fixed + cm.spec_overhead_s
        host, floor = cm.host_s(n_reqs), cm.async_scheduling
        serial, fixed, row_link = cm._serial, cm._fixed, cm._t_per_sampled_row_link
        # FA2's tile (mixed_decode_tile_flops, inlined: the same floats): each decode a whole tile per query head
        padded = kv_sum + n_reqs * (FA2_KEY_BLOCK - 1) / 2
        per_token = t_tok + kv_per_req * t_attn
        fractions, once_s = cm._gemm_fractions, self.once_s
        out = []
        for (tokens, drafts, weights, gemm_flops, gemm_term, unsampled_head, per_req, rows, link_term, allreduce,
             row_term) in cm._mean_context_terms(p0, own, n_reqs, big, hi)[lo:hi]:
            if row_tile > 1:
                compute = gemm_flops + tokens * kv_sum / reqs * t_attn
            else:
                compute = tokens * per_token
            if rows:  # FA2's unpacked call: the verify step's drafts
                tile = (rows * padded - kv_sum * per_req) * t_attn
                attention = tokens * kv_sum / reqs * t_attn + tile
                compute = compute + tile
            if fractions:
                compute = compute + gemm_term
            if t_head:
                compute = compute - unsampled_head
            if refund:
                compute = compute - refund
            if mixed and rows:
                t = max(weights, compute - attention) + max(attention, reread)
                memory = weights
            else:
                memory = weights + plain_kv
                t = max(memory, compute)
            t = t + state
            if serial:
                t = t + serial * min(compute, memory)
            t = t + copies
            t = t + fixed + link_term + allreduce
            if row_link:
                t = t + row_term
            t = t + spec
            t = (max(host, t)) if floor else t + host
            out.append(1.0 / (t + once_s))
        return out


class PiecewiseSps:
    """SPS(b) of a step whose prefill shrinks as its verify tokens b grow (CostModel.step_sps_curve), on the plain
    roofline: per piece of b (sim/prefill_outlook.py) 1 / (max(max(q0 + q1 b + q2 b^2, m0 + m1 b) + c + g(b), h)
    + e), compute quadratic in b (a partial chunk of u = top - b tokens attends to u x (done + (u + 1) / 2)
    cached ones), memory linear (its cached tokens), g(b) = gk x max(a0, a1 + s1 b, a2 + s2 b) FlashInfer's GDN
    prefill kernel (longest chunk vs spread work; None: none). Pieces are (hi, q0, q1, q2, m0, m1, c, h, e, gk,
    lines), in order of b, each for the b up to its hi (the last: inf).

    Callable on a numpy array of b (the policy interface, sim/policies/base.SpsFn); `values(lo, hi)` gives the same
    curve for b = lo..hi-1 as a list of floats in plain Python (small batches).
    """

    __slots__ = ("his", "pieces")

    def __init__(self, pieces: list[tuple]):
        self.pieces = pieces
        self.his = np.array([p[0] for p in pieces])

    def __call__(self, b):
        b = np.asarray(b, dtype=np.float64)
        which = np.searchsorted(self.his, b)  # the piece holding each b: the first whose hi >= b
        out = np.empty(b.shape)
        for i in np.unique(which).tolist():
            _, q0, q1, q2, m0, m1, c, h, e, gk, lines = self.pieces[i]
            x = b[which == i]
            t = np.maximum(q0 + x * (q1 + x * q2), m0 + m1 * x) + c
            if gk:
                a0, a1, s1, a2, s2 = lines
                t = t + gk * np.maximum(np.maximum(a0, a1 + s1 * x), a2 + s2 * x)
            out[which == i] = 1.0 / (np.maximum(t, h) + e)
        return out

    def values(self, lo: int, hi: int) -> list[float]:
        out = []
        pieces = iter(self.pieces)
        top, q0, q1, q2, m0, m1, c, h, e, gk, lines = next(pieces)
        for b in range(lo, hi):
            while b > top:
                top, q0, q1, q2, m0, m1, c, h, e, gk, lines = next(pieces)
            comp = q0 + b * (q1 + b * q2)
            mem = m0 + m1 * b
            t = max(comp, mem) + c
            if gk:
                a0, a1, s1, a2, s2 = lines
                t += gk * max(a0, a1 + s1 * b, a2 + s2 * b)
            out.append(1.0 / (max(t, h) + e))
        return out


class PlanSps:
    """CostModel.step_sps_curve off the plain roofline (a MoE, tensor parallelism, a measured profile, CUDA-graph
    buckets, a sliding-window model...): per piece of b, the step's shape as arrays over its b and
    CostModel.step_time_vec. The same interface as PiecewiseSps."""

    __slots__ = ("cost", "decode_kv", "his", "linear_mixed", "once_s", "pieces", "r")

    def __init__(self, cost: CostModel, r: int, decode_kv: float, pieces: list[PrefillPiece],
                 linear_mixed: str | None, once_s: float):
        self.cost, self.r, self.decode_kv, self.pieces = cost, r, decode_kv, pieces
        self.linear_mixed, self.once_s = linear_mixed, once_s
        self.his = np.array([p.hi for p in pieces])

    def __call__(self, b):
        b = np.asarray(b, dtype=np.float64)
        which = np.searchsorted(self.his, b)
        out = np.empty(b.shape)
        cm, r = self.cost, self.r
        for i in np.unique(which).tolist():
            p = self.pieces[i]
            x = b[which == i]
            tokens, attended, kv, k, big_sum, big_max, big, copies = cm._piece_terms(r, p, self.linear_mixed)
            attn = self.decode_kv * x / r + attended
            chunk_kv, chunk_sum, chunk_max = kv, big_sum, big_max
            if p.part_top is not None:
                u = p.part_top - x
                tokens = tokens + u
                attn = attn + u * (p.part_done + (u + 1) / 2)
                chunk_kv = kv + p.part_done + u
                if p.part_big:
                    chunk_sum, chunk_max = big_sum + u, np.maximum(big_max, u)
            t = cm.step_time_vec(x + tokens, self.decode_kv + chunk_kv, r + k, True, x - r, copies, chunk_max,
                                 chunk_sum, attn_ctx=attn, chunk_kv=chunk_kv, chunk_reqs=k)
            out[which == i] = 1.0 / (t + (self.once_s if big else 0.0))
        return out

    def values(self, lo: int, hi: int) -> list[float]:
        return self(np.arange(lo, hi)).tolist()


def load_spec_profile(setting: str) -> StepProfile:
    """sim.cost.spec_profile: a speculative server's decode steps, one query length (1 + drafts)."""
    profile = _read_profile_of("sim.cost.spec_profile", expand_path(setting))
    queries = profile.axes[1]
    if len(queries) != 1:
        raise LabError(f"sim.cost.spec_profile {setting}: rows of one query_tokens value (1 + drafts, a "
                       f"speculative server's decode steps) expected, found {[int(q) for q in queries]}")
    return profile


def cost_profile_path(setting: str, run_root: str | Path | None) -> Path:
    """The file `sim.cost.profile` names: `run` -> <run_root>/step_profile.csv, else the path ($VARS)."""
    if setting != "run":
        return expand_path(setting)
    if run_root is None:
        raise LabError("sim.cost.profile: 'run' needs a run directory (lab run, after the profile stage)")
    return Path(run_root) / CSV_NAME


def load_cost_profile(setting: str | None, run_root: str | Path | None) -> StepProfile | None:
    """The step profile `sim.cost.profile` names: a path, or `run` (the run's own from `lab profile`)."""
    if setting is None:
        return None
    path = cost_profile_path(setting, run_root)
    if setting == "run" and not path.is_file():
        raise LabError(f"sim.cost.profile: 'run' but {path} does not exist; run the profile stage first "
                       "(lab profile X.yaml, or stages: [profile, ...])")
    return _read_profile_of("sim.cost.profile", path)


def _read_profile_of(field: str, path: Path) -> StepProfile:
    """read_profile, its one-line errors prefixed with the config field that named the file."""
    try:
        return read_profile(path)
    except LabError as exc:
        raise LabError(f"{field}: {exc}") from None
