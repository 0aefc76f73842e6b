"""vLLM's fused_marlin_moe token blocks: the block size it picks and the padded rows its grouped GEMMs multiply.

    block = marlin_block_size_m(tokens=2048, top_k=8, local_experts=128)         # 64 (vLLM's rule)
    factor = marlin_padding_factor(tokens=2048, top_k=8, experts=128)           # ~1.07: padded rows / routed rows

A weight-only quantized MoE checkpoint's routed experts (GPTQ / AWQ int4, fp8 weights on a card without fp8
tensor cores, gpt-oss's mxfp4 below Hopper or without triton_kernels) run through fused_marlin_moe
(vllm/model_executor/layers/fused_moe/fused_marlin_moe.py). It has no tuned config files: it picks the token block
of its two moe_wna16_marlin_gemm calls with one fixed rule, the same text in every version read (the 0.10 / 0.11
file, find_string id 66031868617, and vllm-project/vllm@00a130a03146d74300d01c0bcf806f323f887fbb, fused_marlin_moe):

    for block_size_m in [8, 16, 32, 48, 64]:
        if M * topk / E / block_size_m < 0.9:
            break

(M: the tokens the call gets, E: the experts this GPU holds, w1.size(0)), i.e. the first block above 1.11x the mean
rows per expert, else 64. moe_align_block_size then pads every expert's rows up to a whole number of blocks (an
expert with none gets no block), and the Marlin kernel multiplies whole blocks: an expert of n rows costs
ceil(n / block) x block rows of FLOPs. With uniform routing an expert's rows are Binomial(M, k / E_all) (each token
picks k distinct experts of E_all); the expected padded rows over the routed rows (M x k) is the factor by which the
experts' FLOP term grows. The rule keeps the block at or above the mean, so the factor is 1.1-2x where experts see
8-64 rows (decode batches), and near 1 once they see hundreds (prefill chunks: ~1.03 at 1,024 rows).

Published check: vLLM's fused_marlin_moe at W4A16 on an H100 over Mixtral's shape (8 experts, top 2), timed in
flagos-ai/FlagGems PR 4350 (https://github.com/flagos-ai/FlagGems/pull/4350): the cost model without padding is
-35 / -21 / -16% at 256 / 512 / 1,024 tokens (64 / 128 / 256 rows per expert, where the rule picks 64 and about half
the experts spill into a second block), -8..-9% at 4,096-32,768 (sim/validation/moe_kernels.yaml, BENCHMARKS.md
"Session 37: fused_marlin_moe's token blocks").
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

MARLIN_BLOCKS = (8, 16, 32, 48, 64)  # fused_marlin_moe's candidate block_size_m, in its order
BLOCK_FILL = 0.9  # the rule's threshold: mean rows per expert / block below it ends the search


def marlin_block_size_m(tokens: float, top_k: int, local_experts: int) -> int:
    """The block_size_m fused_marlin_moe picks for a call of `tokens` tokens over `local_experts` experts."""
    for block in MARLIN_BLOCKS:
        if tokens * top_k / local_experts / block < BLOCK_FILL:
            return block
    return MARLIN_BLOCKS[-1]


@lru_cache(maxsize=65536)
def _padding_factor(tokens: int, top_k: int, experts: int, local_experts: int) -> float:
    if tokens <= 0:
        return 1.0
    from scipy.stats import binom  # sim may use scipy (DESIGN.md); imported here, off the import path of cost.py

    block = marlin_block_size_m(tokens, top_k, local_experts)
    p = min(1.0, top_k / experts)
    mean = tokens * p
    # E[ceil(n / b) b] = b x sum_{j >= 0} P(n > j b), n ~ Binomial(tokens, p); beyond ~12 sd the tail is nil
    last = int((mean + 12.0 * np.sqrt(mean * (1.0 - p)) + block) // block) + 1
    thresholds = np.arange(0, last + 1) * block
    padded = block * float(binom.sf(thresholds, tokens, p).sum())
    return max(1.0, padded / mean)


def marlin_padding_factor(tokens, top_k: int, experts: int, local_experts: int | None = None):
    """Expected padded rows over routed rows of one fused_marlin_moe call: `tokens` tokens (the call's M; numpy
    arrays work, counts rounded to whole tokens), top_k of `experts` experts each, `local_experts` of them on this GPU
    (default: all; with expert parallelism E / ep, which the block rule divides by). 1 for no tokens."""
    local = experts if local_experts is None else local_experts
    if isinstance(tokens, np.ndarray):
        flat = [_padding_factor(int(round(float(t))), top_k, experts, local) for t in tokens.ravel()]
        return np.array(flat, dtype=np.float64).reshape(tokens.shape)
    return _padding_factor(int(round(float(tokens))), top_k, experts, local)
