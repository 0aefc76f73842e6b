"""Where the cost model's time for one engine step of a public row goes, term by term (sim/cost.py's formula).

    python -m sim.step_breakdown vllm23151-h100-qwen3-30b-a3b-2k-c10 --batch 10 --context 2550
    python -m sim.step_breakdown ROW_ID --batch 10 --context 2550 --file sim/validation/public_vllm.yaml
    python -m sim.step_breakdown ROW_ID --batch 64 --context 4100 --chunk 2048 --done 2048   # + a prefill chunk
    python -m sim.step_breakdown ROW_ID --batch 0 --context 1 --chunk 8192                  # a prefill-only step

A decode step of `batch` requests, each one query token over `context` cached tokens (its own included), on the
row's card, model and tensor-parallel layout (sim.public_check.row_sim_config), and with --chunk C a prefill chunk
of C prompt tokens of one more request that already has --done D tokens in its KV cache, in the same step (vLLM's
chunked prefill: the scheduler fills the step's token budget with decodes first, then a prompt's next chunk). The
step is priced as the simulator's replica plans it (sim.cluster: C more query tokens, D + C more KV tokens, one
more request, the chunk attending causally to C x (D + (C + 1) / 2) cached tokens); the chunk's own KV reads, GEMM
and attention FLOPs are shown beside the decodes', and the step's time without the chunk under it (what the chunk
adds). --chunk 0 (the default) is the decode step alone. The terms: the roofline's weight reads, KV
reads and FLOPs (the longer of reads and FLOPs is the time; the rest is hidden -- on a sheet with mixed_decode_tile_rows
a step with a chunk where FA2 pads the decodes takes the GEMMs' longer, then the attention kernel's, its KV reads once
per query head where they outgrow the L2: sim/cost.py), the linear-attention state traffic
of the recurrent GDN kernel (added: a kernel of its own),
the linear-attention state copies of a mixed step (sim/linear_attn.py; the row's engine.linear_attn_mixed),
FlashInfer's chunked GDN prefill kernel over the chunk where the row's card and release run it (its published time;
the recurrence FLOPs it holds leave the chunk's GEMM FLOPs),
the decodes' padded attention tiles where a card's FA2 kernel pads each decode beside a chunk to 64 query rows per
head (the sheet's mixed_decode_tile_rows; CostModel.mixed_decode_tile_flops),
the routed experts' fused-MoE kernels (floor, per-expert term, reads or FLOPs), the fixed per-step and per-layer
overheads, collectives and the engine core's host time (step_host_ms and the per-request overhead). The terms are read from CostModel's precomputed constants and
checked to add up to CostModel.step_time, so a change to the formula that this breakdown does not follow fails
loudly instead of printing a wrong split. Roofline models only: a row priced from a measured step profile, or with
CUDA-graph buckets, has no terms to split (LabError).
"""
from __future__ import annotations

import math
import sys

from lab.arguments import ArgumentParser
from lab.errors import LabError, print_or_fail
from sim.cost import CostModel
from sim.hardware import dense_gemm_fraction
from sim.linear_attn import gdn_prefill_kernel_s, state_copies
from sim.public_check import DEFAULT_FILE, row_sim_config, rows_by_id

TOLERANCE = 1e-9  # seconds: the terms must add up to step_time to float precision


def adds_up(parts: float, total: float) -> bool:
    """Whether terms summing to `parts` seconds make `total` to float precision: TOLERANCE, or 1e-12 of the total
    where a huge context makes the step longer than the absolute tolerance can resolve (1e15 tokens: ~1e8 s)."""
    return math.isclose(parts, total, rel_tol=1e-12, abs_tol=TOLERANCE)


def check_step(batch: int, context: float, chunk: int = 0, done: int = 0) -> None:
    """LabError naming the bad value: decodes need a context of at least 1, a chunk is at least 1 token after 0 or
    more done, and a step holds something."""
    if batch < 0 or chunk < 0 or done < 0:
        raise LabError(f"sim.step_breakdown: --batch {batch}, --chunk {chunk} and --done {done} cannot be negative")
    if done and not chunk:
        raise LabError(f"sim.step_breakdown: --done {done} is the tokens a prefill chunk's request already has: "
                       "it needs --chunk of at least 1")
    if batch + chunk < 1:
        raise LabError(f"sim.step_breakdown: batch {batch} and chunk {chunk}: the step needs at least 1 token")
    if not math.isfinite(context):
        raise LabError(f"sim.step_breakdown: --context {context}: a finite number of cached tokens is needed")
    if batch and context < 1:
        raise LabError(f"sim.step_breakdown: batch {batch} and context {context} must be at least 1")


HOST_TERM = "engine-core host (step_host_ms + request overhead)"  # its name among decode_terms' terms


def decode_terms(cm: CostModel, batch: int, context: float, chunk: int = 0, done: int = 0,
                 mixed: str = "split") -> dict[str, float]:
    """Seconds per term of a decode step of `batch` requests at `context` cached tokens each (tokens = n_reqs =
    batch, kv_sum = batch x context) and, with `chunk` > 0, a prefill chunk of `chunk` tokens of one more request
    with `done` tokens already cached (tokens + chunk, kv_sum + done + chunk, n_reqs + 1, the chunk attending to
    chunk x (done + (chunk + 1) / 2) tokens, as sim.cluster's plan); 'total' is CostModel.step_time of the same step
    (called as the simulator calls it: with attn_ctx only where there is a chunk). The chunk's KV reads, GEMM and
    attention FLOPs are their own terms; the decodes' are labelled '(decodes)' beside them (chunk 0: today's names).
    A sliding-window model ignores attn_ctx (step_time: every token at the mean, window-capped context): its KV and
    attention terms are split between decodes and chunk by their shares of the step's raw KV and tokens.
    `mixed`: engine.linear_attn_mixed, which requests' linear-attention states a step with a chunk of more than
    one token gathers and scatters back (sim/linear_attn.state_copies; a model without such layers: none).
    Shapes: scalars."""
    if cm.profile is not None or cm._bucket_list is not None:
        raise LabError("sim.step_breakdown: the cost model reads a step profile or pads to CUDA-graph buckets: "
                       "no roofline terms to split")
    check_step(batch, context, chunk, done)
    m = cm.model
    tokens, n_reqs = batch + chunk, batch + (1 if chunk else 0)
    dec_kv, pf_kv = batch * float(context), float(done + chunk) if chunk else 0.0
    kv_sum = raw_kv = dec_kv + pf_kv
    dec_attended, pf_attended = dec_kv, chunk * (done + (chunk + 1) / 2)  # cached tokens attended, summed over tokens
    if cm._sliding:  # as step_time: the window caps each request's context, every token at the mean
        kv_sum = n_reqs * m.attended_context(kv_sum / n_reqs)
        dec_attended, pf_attended = batch * kv_sum / n_reqs, chunk * kv_sum / n_reqs
    gemm_tokens = tokens  # as step_time: past one tile, whole tiles of rows
    if tokens > cm._row_tile > 1:
        gemm_tokens = -(-tokens // cm._row_tile) * cm._row_tile
    weights = cm._t_weights * (cm._gemm_factor if tokens > cm._gemv_rows else 1.0)
    # a step with a chunk where FA2's mixed kernel pads the decodes (sim/cost.py step_time): its attention kernel
    # reads each request's KV once per query head of a group (once where one layer's KV of one KV head fits in the
    # L2), after the GEMMs
    fa2_mixed = bool(cm._mixed_groups) and chunk > 1
    groups = cm._mixed_groups if fa2_mixed and kv_sum > cm._l2_kv_tokens else 1.0
    kv = kv_sum * cm._t_per_kv_token * groups
    state = n_reqs * cm._t_state if cm._t_state else 0.0
    # the dense linears at the sheet's fraction for this many GEMM rows (dense_gemm_mfu; mfu without it)
    per_token = cm._t_per_token_flops * cm.hw.mfu / dense_gemm_fraction(cm._gemm_log_rows, cm._gemm_fractions,
                                                                         cm.hw.mfu, gemm_tokens)
    # the chunk's tokens before its last have no LM-head row (vLLM's logits_indices; CostModel._t_head_flops)
    unsampled_head = max(chunk - 1, 0) * cm._t_head_flops * per_token / cm._t_per_token_flops
    # FlashInfer's chunked GDN kernel over the chunk (CostModel._gdn_prefill): its own time, its FLOPs refunded
    gdn_chunk = chunk if cm._gdn_prefill and chunk > 1 else 0
    gdn_refund = gdn_chunk * cm._t_gdn_refund
    gdn_kernel = m.linear_layers * gdn_prefill_kernel_s(gdn_chunk, gdn_chunk * cm._gdn_spread) if gdn_chunk else 0.0
    gemm = gemm_tokens * per_token - unsampled_head - gdn_refund
    # FA2's mixed batch pads each decode beside a chunk to whole 64-row tiles (CostModel.mixed_decode_tile_flops)
    padded = cm.mixed_decode_tile_flops(dec_kv, batch) * cm._t_attn if chunk > 1 and not cm._sliding else 0.0
    attention = (dec_attended + pf_attended) * cm._t_attn + padded
    memory, compute = weights + kv, gemm + attention  # the state: its own kernel, added (sim/cost.py)
    if fa2_mixed:  # the GEMMs, then the attention kernel (sim/cost.py step_time)
        roofline = max(weights, gemm) + max(attention, kv) + cm._serial * min(weights, compute)
    else:
        roofline = max(memory, compute) + cm._serial * min(memory, compute)
    mine = (lambda name: f"{name} (decodes)") if chunk else (lambda name: name)
    pf_share = pf_kv / raw_kv
    terms = {"weights (non-expert)": weights, mine("kv reads"): kv * (1 - pf_share)}
    if chunk:
        terms["chunk kv reads"] = kv * pf_share
    terms.update({"linear-attention state": state, mine("gemm flops"): batch * per_token})
    if chunk:
        terms["chunk gemm flops"] = chunk * per_token - unsampled_head - gdn_refund
    terms["gemm tile padding"] = (gemm_tokens - tokens) * per_token
    terms[mine("attention flops")] = dec_attended * cm._t_attn
    if chunk:
        terms["chunk attention flops"] = pf_attended * cm._t_attn
    terms["decodes' padded attention tiles (FA2 mixed step)"] = padded
    terms["hidden (overlapped)"] = roofline - memory - compute
    layers, graphs = m.n_layers * cm.layer_overhead_s, m.n_layers * cm.graph_layer_s
    terms.update({"step overhead": cm.step_overhead_s, "layer overhead": layers,
                  "piecewise graphs (engine.cuda_graph_mode)": graphs,
                  "other fixed (act quant, collective latency)": cm._fixed - cm.step_overhead_s - layers - graphs,
                  "tensor-parallel all-reduces": cm.tp_allreduce_s(tokens),  # custom kernel or NCCL by size
                  "collective bytes": tokens * cm._t_per_token_link
                  + min(tokens, n_reqs) * cm._t_per_sampled_row_link})  # the logits' gather: one row per request
    if cm._moe:
        touched = m.touched_experts(tokens, cm.ep, cm._gather)
        experts = cm._experts_time(tokens, gemm_tokens)
        floor, per_expert = cm._moe_fixed, cm._moe_per_expert * touched
        pairs = tokens * cm._t_moe_pairs_per_token  # the pairs' activation rows (sim.cost.moe_pair_bytes)
        terms.update({"moe floor (moe_layer_us)": floor, "moe per-expert (moe_expert_us)": per_expert,
                      "moe pair activations (moe_pair_bytes)": pairs,
                      "moe reads / flops": experts - floor - per_expert - pairs})
    copies = state_copies(batch, [chunk] if chunk else [], False, mixed) if m.linear_layers else 0
    copy_time = copies * cm._t_state_copy
    host = cm.host_s(n_reqs)  # step_host_ms too: without it a sheet that sets one failed the adds_up check below
    if cm.async_scheduling:  # overlapping the rest (engine.async_scheduling): only what outlasts it shows
        host = max(host - sum(terms.values()) - copy_time - gdn_kernel, 0.0)
    terms[HOST_TERM] = host
    terms["linear-attention state copies (mixed step)"] = copy_time
    terms["GDN prefill kernel (FlashInfer SM90)"] = gdn_kernel
    attn_ctx = dec_kv + chunk * (done + (chunk + 1) / 2) if chunk else None  # sim.cluster's plan
    total = cm.step_time(tokens, raw_kv, n_reqs, False, attn_ctx=attn_ctx, state_copies=copies,
                         chunk_max=chunk, chunk_sum=chunk if chunk > 1 else 0,
                         chunk_kv=pf_kv, chunk_reqs=1 if chunk else 0)
    if not adds_up(sum(terms.values()), total):
        raise LabError(f"sim.step_breakdown: the terms add up to {sum(terms.values()) * 1e3:.6f} ms, step_time says "
                       f"{total * 1e3:.6f} ms: sim/cost.py's formula changed, update decode_terms")
    terms["total"] = total
    return terms


def chunk_cost(cm: CostModel, batch: int, context: float, chunk: int, done: int, mixed: str = "split") -> float:
    """Seconds a prefill chunk of `chunk` tokens after `done` adds to a step of `batch` decodes at `context`: the
    step's step_time with it minus without it (the whole step where there are no decodes)."""
    alone = decode_terms(cm, batch, context)["total"] if batch else 0.0
    return decode_terms(cm, batch, context, chunk, done, mixed)["total"] - alone


def markdown(row_id: str, model: str, batch: int, context: float, terms: dict[str, float], cm: CostModel,
             chunk: int = 0, done: int = 0, mixed: str = "split") -> str:
    """The terms as a table: ms and share of the step (terms of zero left out); with a chunk, what it adds."""
    total = terms["total"]
    title = f"one decode step of {batch} requests at {context:g} cached tokens each"
    if chunk:
        title = (f"one step of {batch} decodes at {context:g} cached tokens each and a prefill chunk of {chunk} "
                 f"tokens after {done} done")
    lines = [f"# {row_id}: {title}",
             "", f"{model} on {cm.hw.name}, tp {cm.tp}, ep {cm.ep}", "",
             "| term | ms | share |", "| --- | ---: | ---: |"]
    for name, seconds in terms.items():
        if name != "total" and abs(seconds) > 1e-12:
            lines.append(f"| {name} | {seconds * 1e3:.3f} | {seconds / total:.0%} |")
    lines.append(f"| **total (step_time)** | **{total * 1e3:.3f}** | 100% |")
    if cm._moe:
        touched = cm.model.touched_experts(batch + chunk, cm.ep, cm._gather)
        routing = f"routing skew {cm.model.routing_skew:g}" if cm.model.routing_skew else "uniform routing"
        lines += ["", f"experts touched per MoE layer: {touched:.1f} of {cm.model.moe_experts} ({routing})"]
    if cm._mixed_groups and chunk > 1:
        lines += ["", (f"FlashAttention 2 mixed step (mixed_decode_tile_rows): the attention kernel runs after the "
                       f"GEMMs and reads each request's KV once per query head ({cm._mixed_groups:g} per KV head) "
                       f"where one layer's KV of one KV head outgrows the L2 ({cm._l2_kv_tokens:,.0f} cached tokens)")]
    if chunk:
        added = chunk_cost(cm, batch, context, chunk, done, mixed)
        rate = f": {chunk / added:,.0f} prompt tokens/s at that price" if added > 0 else ""
        lines += ["", f"the chunk adds {added * 1e3:.3f} ms to the {(total - added) * 1e3:.3f} ms of the decodes "
                      f"alone{rate}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.step_breakdown", description=__doc__.splitlines()[0])
    ap.add_argument("row", help="a row id of the public rows file")
    ap.add_argument("--batch", type=int, required=True, help="decoding requests in the step")
    ap.add_argument("--context", type=float, required=True, help="cached tokens per request (its own included)")
    ap.add_argument("--chunk", type=int, default=0, help="prompt tokens of one prefill chunk in the same step "
                                                          "(0: decodes only)")
    ap.add_argument("--done", type=int, default=0, help="tokens the chunk's request already has in its KV cache")
    ap.add_argument("--file", default=str(DEFAULT_FILE), help="public rows file (sim.public_check's format)")
    args = ap.parse_args(argv)

    def table() -> str:
        check_step(args.batch, args.context, args.chunk, args.done)
        row = rows_by_id(args.file, [args.row], "sim.step_breakdown")[args.row]
        sim = row_sim_config(row)
        cm, mixed = CostModel.from_config(sim), sim.engine.linear_attn_mixed
        terms = decode_terms(cm, args.batch, args.context, args.chunk, args.done, mixed)
        return markdown(args.row, row.model, args.batch, args.context, terms, cm, args.chunk, args.done, mixed)
    return print_or_fail(table)

if __name__ == "__main__":
    sys.exit(main())
