"""Where the cost model's time for one decode step of a public row goes, term by term (sim/cost.py's formula).

    python -m sim.step_breakdown vllm23151-h100-qwen3-30b-a3b-2k-c10 --batch 10 --context 2550
    python -m sim.step_breakdown ROW_ID --batch 10 --context 2550 --file sim/validation/public_vllm.yaml

A decode step of `batch` requests, each one query token over `context` cached tokens (its own included), on the
row's card, model and tensor-parallel layout (sim.public_check.row_sim_config): the roofline's weight reads, KV
reads, linear-attention state traffic and FLOPs (the longer of reads and FLOPs is the time; the rest is hidden),
the routed experts' fused-MoE kernels (floor, per-expert term, reads or FLOPs), the fixed per-step and per-layer
overheads, collectives and the per-request overhead. The terms are read from CostModel's precomputed constants and
checked to add up to CostModel.step_time, so a change to the formula that this breakdown does not follow fails
loudly instead of printing a wrong split. Roofline models only: a row priced from a measured step profile, or with
CUDA-graph buckets, has no terms to split (LabError).
"""
from __future__ import annotations

import sys

from lab.arguments import ArgumentParser
from lab.errors import LabError
from sim.cost import CostModel
from sim.public_check import DEFAULT_FILE, load_rows, row_sim_config

TOLERANCE = 1e-9  # seconds: the terms must add up to step_time to float precision


def decode_terms(cm: CostModel, batch: int, context: float) -> dict[str, float]:
    """Seconds per term of a decode step of `batch` requests at `context` cached tokens each (tokens = n_reqs =
    batch, kv_sum = batch x context); 'total' is CostModel.step_time of the same step. Shapes: scalars."""
    if cm.profile is not None or cm._bucket_list is not None:
        raise LabError("sim.step_breakdown: the cost model reads a step profile or pads to CUDA-graph buckets: "
                       "no roofline terms to split")
    if batch < 1 or context < 1:
        raise LabError(f"sim.step_breakdown: batch {batch} and context {context} must be at least 1")
    m = cm.model
    tokens = n_reqs = batch
    kv_sum = raw_kv = batch * float(context)
    if cm._sliding:  # as step_time: the window caps each request's context
        kv_sum = n_reqs * m.attended_context(kv_sum / n_reqs)
    weights = cm._t_weights * (cm._gemm_factor if tokens > 1 else 1.0)
    kv = kv_sum * cm._t_per_kv_token
    state = n_reqs * cm._t_state if cm._t_state else 0.0
    gemm = tokens * cm._t_per_token_flops
    attention = tokens * kv_sum / n_reqs * cm._t_attn
    memory, compute = weights + kv + state, gemm + attention
    roofline = max(memory, compute) + cm._serial * min(memory, compute)
    terms = {"weights (non-expert)": weights, "kv reads": kv, "linear-attention state": state,
             "gemm flops": gemm, "attention flops": attention,
             "hidden (overlapped)": roofline - memory - compute}
    layers = m.n_layers * cm.layer_overhead_s
    terms.update({"step overhead": cm.step_overhead_s, "layer overhead": layers,
                  "other fixed (act quant, collective latency)": cm._fixed - cm.step_overhead_s - layers,
                  "collective bytes": tokens * cm._t_per_token_link})
    if cm._moe:
        touched = m.touched_experts(tokens, cm.ep, cm._gather)
        experts = cm._experts_time(tokens, tokens)
        floor, per_expert = cm._moe_fixed, cm._moe_per_expert * touched
        pairs = tokens * cm._t_moe_pairs_per_token  # the pairs' activation rows (sim.cost.moe_pair_bytes)
        terms.update({"moe floor (moe_layer_us)": floor, "moe per-expert (moe_expert_us)": per_expert,
                      "moe pair activations (moe_pair_bytes)": pairs,
                      "moe reads / flops": experts - floor - per_expert - pairs})
    terms["request overhead"] = n_reqs * cm.request_overhead_s
    total = cm.step_time(tokens, raw_kv, n_reqs, False)
    if abs(sum(terms.values()) - total) > TOLERANCE:
        raise LabError(f"sim.step_breakdown: the terms add up to {sum(terms.values()) * 1e3:.6f} ms, step_time says "
                       f"{total * 1e3:.6f} ms: sim/cost.py's formula changed, update decode_terms")
    terms["total"] = total
    return terms


def markdown(row_id: str, model: str, batch: int, context: float, terms: dict[str, float], cm: CostModel) -> str:
    """The terms as a table: ms and share of the step (terms of zero left out)."""
    total = terms["total"]
    lines = [f"# {row_id}: one decode step of {batch} requests at {context:g} cached tokens each",
             "", f"{model} on {cm.hw.name}, tp {cm.tp}, ep {cm.ep}", "",
             "| term | ms | share |", "| --- | ---: | ---: |"]
    for name, seconds in terms.items():
        if name != "total" and abs(seconds) > 1e-12:
            lines.append(f"| {name} | {seconds * 1e3:.3f} | {seconds / total:.0%} |")
    lines.append(f"| **total (step_time)** | **{total * 1e3:.3f}** | 100% |")
    if cm._moe:
        touched = cm.model.touched_experts(batch, cm.ep, cm._gather)
        routing = f"routing skew {cm.model.routing_skew:g}" if cm.model.routing_skew else "uniform routing"
        lines += ["", f"experts touched per MoE layer: {touched:.1f} of {cm.model.moe_experts} ({routing})"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.step_breakdown", description=__doc__.splitlines()[0])
    ap.add_argument("row", help="a row id of the public rows file")
    ap.add_argument("--batch", type=int, required=True, help="decoding requests in the step")
    ap.add_argument("--context", type=float, required=True, help="cached tokens per request (its own included)")
    ap.add_argument("--file", default=str(DEFAULT_FILE), help="public rows file (sim.public_check's format)")
    args = ap.parse_args(argv)
    try:
        rows = {r.id: r for r in load_rows(args.file)}
        if args.row not in rows:
            raise LabError(f"sim.step_breakdown: no row {args.row!r} in {args.file}")
        row = rows[args.row]
        cm = CostModel.from_config(row_sim_config(row))
        terms = decode_terms(cm, args.batch, args.context)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(args.row, row.model, args.batch, args.context, terms, cm), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
