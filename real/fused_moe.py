"""A fused-MoE layer as vLLM's Triton kernel computes it: token sort by expert, two grouped GEMMs, weighted sum.

    from real.fused_moe import route_uniform, align_tokens, fused_moe, reference_moe
    topk_ids, topk_weights = route_uniform(tokens, experts, top_k, generator)   # [M, k], [M, k]
    out = fused_moe(x, w13, w2, topk_ids, topk_weights, config)     # CUDA + Triton; [M, H]
    ref = reference_moe(x, w13, w2, topk_ids, topk_weights)         # any device, fp32 loops

What real/bench_moe.py times on a GPU: the kernel the simulator's MoE terms (moe_layer_us, moe_bw_efficiency,
moe_mfu; sim/cost.py) stand for. The algorithm is vLLM's fused_moe (vllm/model_executor/layers/fused_moe/
fused_moe.py, Apache-2.0), written here from its description, not copied:

1. align: the M x k (token, expert) slots sorted by expert, each expert's run padded to a multiple of BLOCK_M
   with a sentinel slot (M x k); one expert id per BLOCK_M block (align_tokens; pure torch, no host sync, so a
   CUDA graph holds it; vLLM does this in one CUDA kernel, moe_align_block_size).
2. w13: per block, the block's tokens' hidden rows (gathered by slot // k) times that expert's [2I, H] gate/up
   weights -> [M x k, 2I];
3. activation: silu(gate) x up -> [M x k, I];
4. w2: per block, the rows times the expert's [H, I] down weights, scaled by the slot's routing weight ->
   [M x k, H];
5. sum over the k slots of each token -> [M, H].

Expert parallel: a rank holds experts [rank x E_local, (rank + 1) x E_local); slots routed elsewhere are given
the local sentinel expert E_local, which the kernel skips (their output rows stay 0), as vLLM's expert_map does.
fp8 (w8a8, per-tensor scales): activations and weights e4m3, one scale per expert's weights and one for the
activations, the accumulator scaled back in the kernel's epilogue.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import torch

try:  # Triton ships with CUDA builds of torch; the lab's CPU environment has none (the reference still runs)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None


# Tile sizes of the grouped GEMMs (vLLM's config-file keys BLOCK_SIZE_M/N/K, GROUP_SIZE_M) and the launch
KernelConfig = namedtuple("KernelConfig", "block_m block_n block_k group_m num_warps num_stages",
                          defaults=(16, 32, 64, 1, 4, 3))


def tile_label(config: KernelConfig) -> str:
    """m16n32k64g1w4s3: a tile choice as the runs' `tiles` name it."""
    return "m{}n{}k{}g{}w{}s{}".format(*config)


def default_config(tokens: int, experts: int) -> KernelConfig:
    """vLLM's built-in choice where no tuned config file matches the shape (fused_moe.get_default_config,
    unquantized / per-tensor fp8): small tiles while tokens <= experts (a few rows per expert), else 64 x 64."""
    if tokens <= experts:
        return KernelConfig(16, 32, 64, 1)
    return KernelConfig(64, 64, 32, 8)


SEARCH_CONFIGS = (  # a small tuning grid (vLLM's benchmark_moe --tune searches a larger one)
    KernelConfig(16, 64, 128, 1), KernelConfig(16, 128, 128, 1, num_stages=4), KernelConfig(32, 64, 128, 1),
    KernelConfig(32, 128, 64, 1), KernelConfig(64, 64, 64, 8), KernelConfig(64, 128, 64, 8, num_warps=8),
    KernelConfig(128, 128, 64, 8, num_warps=8),
)


def route_uniform(tokens: int, experts: int, top_k: int, generator: torch.Generator,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k routing of random gating logits, as vLLM's kernel benchmark draws it (tokens spread about evenly
    over the experts): (topk_ids [M, k] int32, topk_weights [M, k] fp32, softmax over the k chosen)."""
    logits = torch.randn(tokens, experts, generator=generator, device=generator.device)  # [M, E]
    weights, ids = torch.topk(torch.softmax(logits, dim=-1), top_k, dim=-1)  # [M, k]
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return ids.to(torch.int32).to(device), weights.to(torch.float32).to(device)


def local_ids(topk_ids: torch.Tensor, experts_local: int, rank: int) -> torch.Tensor:
    """Global expert ids [M, k] -> this rank's local ids, the sentinel `experts_local` for experts elsewhere."""
    local = topk_ids.long() - rank * experts_local
    outside = (local < 0) | (local >= experts_local)
    return torch.where(outside, torch.full_like(local, experts_local), local)


def max_padded_slots(slots: int, experts_local: int, block_m: int) -> int:
    """The most slots the aligned order can take: every expert's run (the sentinel's too) padded by < BLOCK_M."""
    return slots + (experts_local + 1) * (block_m - 1)


def align_tokens(ids_local: torch.Tensor, experts_local: int, block_m: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort the M x k slots by local expert, padding each expert's run to whole BLOCK_M blocks.

    ids_local [M, k] (sentinel experts_local for experts on other ranks) -> (sorted_slots [P] int32: slot
    indices, the sentinel M x k in padding; block_experts [P / BLOCK_M] int32: each block's expert, the sentinel
    for blocks of other ranks' slots or past the end; padded_total [1] int32: slots in use). P =
    max_padded_slots(...), a size fixed by the shape alone (no host sync, so a CUDA graph can hold it)."""
    flat = ids_local.reshape(-1).long()  # [S]
    slots = flat.numel()
    device = flat.device
    bins = experts_local + 1  # the sentinel expert last
    # [E+1]; scatter_add, not bincount: bincount reads its input's max on the host, which a CUDA graph forbids
    counts = torch.zeros(bins, dtype=torch.int64, device=device).scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m  # [E+1]
    padded_end = torch.cumsum(padded, 0)  # [E+1]
    padded_start = padded_end - padded
    start = torch.cumsum(counts, 0) - counts
    order = torch.argsort(flat, stable=True)  # [S] slots by expert
    by_expert = flat[order]
    dest = padded_start[by_expert] + torch.arange(slots, device=device) - start[by_expert]  # [S]
    total = max_padded_slots(slots, experts_local, block_m)
    sorted_slots = torch.full((total,), slots, dtype=torch.int64, device=device)
    sorted_slots[dest] = order
    block_starts = torch.arange(0, total, block_m, device=device)  # [P / BLOCK_M]
    block_experts = torch.searchsorted(padded_end, block_starts, right=True).clamp(max=experts_local)
    used = padded_end[experts_local - 1] if experts_local else torch.zeros((), dtype=torch.int64, device=device)
    return (sorted_slots.to(torch.int32), block_experts.to(torch.int32),
            used.reshape(1).to(torch.int32))


def reference_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_ids: torch.Tensor,
                  topk_weights: torch.Tensor, rank: int = 0) -> torch.Tensor:
    """The layer in fp32, one expert at a time: x [M, H], w13 [E_local, 2I, H], w2 [E_local, H, I] -> [M, H];
    only this rank's experts contribute."""
    experts_local = w13.shape[0]
    ids = local_ids(topk_ids, experts_local, rank)  # [M, k]
    out = torch.zeros(x.shape[0], w2.shape[1], dtype=torch.float32, device=x.device)  # [M, H]
    xf = x.float()
    for e in range(experts_local):
        token, slot = torch.nonzero(ids == e, as_tuple=True)
        if token.numel() == 0:
            continue
        gate_up = xf[token] @ w13[e].float().T  # [n, 2I]
        gate, up = gate_up.chunk(2, dim=-1)
        act = torch.nn.functional.silu(gate) * up  # [n, I]
        out.index_add_(0, token, (act @ w2[e].float().T) * topk_weights[token, slot, None])
    return out


if triton is not None:
    @triton.jit
    def _grouped_gemm(a_ptr, b_ptr, c_ptr, weights_ptr, sorted_slots_ptr, block_experts_ptr, padded_total_ptr,
                      a_scale_ptr, b_scale_ptr, N, K: tl.constexpr, num_slots, blocks_m, stride_am, stride_be, stride_bn,
                      stride_cm,
                      ROWS_PER_A: tl.constexpr, MUL_WEIGHT: tl.constexpr, FP8: tl.constexpr,
                      SENTINEL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):  # pragma: no cover - GPU only
        """C[slot, :N] = A[slot // ROWS_PER_A, :K] @ B[expert(slot)][:N, :K]^T (x the slot's weight), one
        BLOCK_M x BLOCK_N tile per program, the M blocks of one expert each."""
        pid = tl.program_id(0)
        blocks_n = tl.cdiv(N, BLOCK_N)
        in_group = GROUP_M * blocks_n
        first_m = pid // in_group * GROUP_M
        group_rows = min(blocks_m - first_m, GROUP_M)
        pid_m = first_m + (pid % in_group) % group_rows
        pid_n = (pid % in_group) // group_rows
        if pid_m * BLOCK_M >= tl.load(padded_total_ptr):
            return
        expert = tl.load(block_experts_ptr + pid_m).to(tl.int64)
        if expert == SENTINEL:
            return
        slots = tl.load(sorted_slots_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # [BLOCK_M]
        valid = slots < num_slots
        offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + (slots // ROWS_PER_A)[:, None] * stride_am + offs_k[None, :]  # [BLOCK_M, BLOCK_K]
        b_ptrs = b_ptr + expert * stride_be + offs_n[None, :] * stride_bn + offs_k[:, None]  # [BLOCK_K, BLOCK_N]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k_start in range(0, K, BLOCK_K):
            left = K - k_start
            a = tl.load(a_ptrs, mask=valid[:, None] & (offs_k[None, :] < left), other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < left, other=0.0)
            acc += tl.dot(a, b)
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
        if FP8:
            acc = acc * tl.load(a_scale_ptr) * tl.load(b_scale_ptr + expert)
        if MUL_WEIGHT:
            acc = acc * tl.load(weights_ptr + slots, mask=valid, other=0.0)[:, None]
        offs_cn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        c_ptrs = c_ptr + slots[:, None] * stride_cm + offs_cn[None, :]
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & (offs_cn[None, :] < N))


def _gemm(a, b, c, weights, aligned, config: KernelConfig, rows_per_a: int, mul_weight: bool,
          scales) -> None:  # pragma: no cover - GPU only
    sorted_slots, block_experts, padded_total = aligned
    n, k = b.shape[1], b.shape[2]
    grid = (block_experts.numel() * triton.cdiv(n, config.block_n),)
    a_scale, b_scale = scales if scales is not None else (weights, weights)
    _grouped_gemm[grid](a, b, c, weights, sorted_slots, block_experts, padded_total, a_scale, b_scale, n, k,
                        c.shape[0], block_experts.numel(), a.stride(0), b.stride(0), b.stride(1), c.stride(0),
                        ROWS_PER_A=rows_per_a, MUL_WEIGHT=mul_weight, FP8=scales is not None,
                        SENTINEL=b.shape[0], BLOCK_M=config.block_m, BLOCK_N=config.block_n,
                        BLOCK_K=config.block_k, GROUP_M=config.group_m, num_warps=config.num_warps,
                        num_stages=config.num_stages)


@dataclass
class Fp8Weights:
    """e4m3 expert weights with one fp32 scale per expert (w8a8, per-tensor), and the activation scales."""
    w13: torch.Tensor  # [E, 2I, H] e4m3
    w2: torch.Tensor  # [E, H, I] e4m3
    w13_scale: torch.Tensor  # [E] fp32
    w2_scale: torch.Tensor  # [E] fp32
    a13_scale: torch.Tensor  # [1] fp32
    a2_scale: torch.Tensor  # [1] fp32


def quantize_experts(w13: torch.Tensor, w2: torch.Tensor) -> Fp8Weights:
    """Per-expert e4m3 copies of bf16 expert weights; activation scales for inputs of about unit size."""
    def per_expert(w):
        scale = w.abs().amax(dim=(1, 2)).float().clamp(min=1e-12) / 448.0  # [E]
        return (w.float() / scale[:, None, None]).to(torch.float8_e4m3fn), scale
    q13, s13 = per_expert(w13)
    q2, s2 = per_expert(w2)
    one = torch.full((1,), 8.0 / 448.0, device=w13.device)
    return Fp8Weights(q13, q2, s13, s2, one, one.clone())


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_ids: torch.Tensor,
              topk_weights: torch.Tensor, config: KernelConfig, rank: int = 0,
              fp8: Fp8Weights | None = None) -> torch.Tensor:  # pragma: no cover - GPU only
    """One MoE layer on this rank: x [M, H] (bf16) -> [M, H]; w13 [E_local, 2I, H], w2 [E_local, H, I]
    (ignored when `fp8` holds the quantized copies)."""
    if triton is None:
        raise RuntimeError("the fused-MoE kernel needs Triton (a CUDA build of torch)")
    tokens, top_k = topk_ids.shape
    experts_local, inter2, hidden = w13.shape
    ids = local_ids(topk_ids, experts_local, rank)
    aligned = align_tokens(ids, experts_local, config.block_m)
    weights = topk_weights.reshape(-1)  # [M k]
    act_dtype = x.dtype
    gate_up = torch.zeros(tokens * top_k, inter2, dtype=act_dtype, device=x.device)  # [M k, 2I]
    down = torch.zeros(tokens * top_k, hidden, dtype=act_dtype, device=x.device)  # [M k, H]
    if fp8 is None:
        _gemm(x, w13, gate_up, weights, aligned, config, top_k, False, None)
        act = torch.nn.functional.silu(gate_up[:, :inter2 // 2]) * gate_up[:, inter2 // 2:]  # [M k, I]
        _gemm(act, w2, down, weights, aligned, config, 1, True, None)
    else:
        xq = (x.float() / fp8.a13_scale).clamp(-448, 448).to(torch.float8_e4m3fn)  # [M, H] per-tensor quant
        _gemm(xq, fp8.w13, gate_up, weights, aligned, config, top_k, False, (fp8.a13_scale, fp8.w13_scale))
        act = torch.nn.functional.silu(gate_up[:, :inter2 // 2]) * gate_up[:, inter2 // 2:]
        actq = (act.float() / fp8.a2_scale).clamp(-448, 448).to(torch.float8_e4m3fn)
        _gemm(actq, fp8.w2, down, weights, aligned, config, 1, True, (fp8.a2_scale, fp8.w2_scale))
    return down.view(tokens, top_k, hidden).sum(dim=1)
