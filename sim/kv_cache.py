"""KV-cache memory of one replica, as vLLM manages it (paged blocks) or as a whole-request reservation.

    kv = make_kv_cache(engine_cfg, capacity_tokens)       # PagedKV (default) or ReserveKV
    held = kv.admit(prompt, output, slots_now)           # units now held by the request, or None: no room
    held = kv.grow(held, slots)                          # after growing to `slots` token slots, or None
    kv.release(held)
    blocks = kv_cache_blocks(mem_bytes, utilization, weight_bytes, reserve_bytes, block_bytes, tp)

paged (vLLM): memory is cut into blocks of `block_size` token slots. A request holds ceil(slots / block_size)
blocks, where slots = the tokens its next step writes into the cache (prompt chunk or sequence so far
+ the step's new tokens, speculative ones included). Admission needs only the blocks of the first step;
each later step grows the request; when a step cannot get its blocks the replica preempts (recompute) —
see sim/cluster.py. A "unit" of `held` is one block.
reserve (the simulator's old model, kept for comparison): admission reserves prompt + whole output in
tokens and nothing grows or gets preempted. A "unit" of `held` is one token.

Capacity (vLLM's gpu_memory_utilization): per GPU, utilization x memory - activation peak is for weights
+ KV; blocks = (tp x (mem x utilization - activation) - weights) / (block_size x KV bytes per token).
"""
from __future__ import annotations

from lab.errors import LabError

GIB = 2**30
# assumption [I]: peak activation of vLLM's profiling forward ~ tokens x hidden x 16 bf16 values (residual,
# QKV, attention out, gate/up/act of an MLP ~3.5x wider) + ~1 GiB non-torch and CUDA-graph memory; this
# puts Llama-3-8B at 8,192 tokens at ~2 GiB. Set engine.activation_reserve_gib to what your vLLM log prints.
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 32
NON_TORCH_BYTES = 1 * GIB


def blocks_for(tokens, block_size: int):
    """Blocks that hold `tokens` slots (int or numpy int array)."""
    return (tokens + block_size - 1) // block_size


def activation_reserve_bytes(hidden: int, max_num_batched_tokens: int) -> float:
    """Default per-GPU memory kept back from the KV cache for activations (see ACTIVATION_BYTES_...)."""
    return max_num_batched_tokens * hidden * ACTIVATION_BYTES_PER_TOKEN_HIDDEN + NON_TORCH_BYTES


def kv_cache_blocks(mem_bytes: float, utilization: float, weight_bytes: float, reserve_bytes: float,
                    block_bytes: float, tp: int = 1, where: str = "sim") -> int:
    """KV blocks of one replica of `tp` GPUs: (tp x (mem x utilization - reserve) - weights) / block bytes."""
    budget = tp * (mem_bytes * utilization - reserve_bytes) - weight_bytes
    blocks = int(budget // block_bytes)
    if blocks < 1:
        raise LabError(f"{where} does not fit: weights ({weight_bytes / GIB:.1f} GiB) and activations "
                       f"({reserve_bytes / GIB:.1f} GiB per GPU) leave no KV memory in {tp} x {mem_bytes / GIB:.0f} GiB x {utilization:g}; "
                       "raise hardware.tp or engine.gpu_memory_utilization, or set engine.kv_capacity_tokens")
    return blocks


class PagedKV:
    """vLLM's block pool: requests hold whole blocks; blocks come back only when a request ends or is preempted."""

    paged = True

    def __init__(self, total_blocks: int, block_size: int):
        self.block_size = block_size
        self.total = total_blocks
        self.free = total_blocks
        self.capacity_tokens = total_blocks * block_size

    def fits_ever(self, tokens: int) -> bool:
        return blocks_for(tokens, self.block_size) <= self.total

    def admit(self, prompt: int, output: int, slots_now: int) -> int | None:
        need = blocks_for(slots_now, self.block_size)
        if need > self.free:
            return None
        self.free -= need
        return need

    def grow(self, held: int, slots: int) -> int | None:
        need = blocks_for(slots, self.block_size) - held
        if need <= 0:
            return held
        if need > self.free:
            return None
        self.free -= need
        return held + need

    def release(self, held: int) -> None:
        self.free += held

    @property
    def used_tokens(self) -> int:
        return (self.total - self.free) * self.block_size


class ReserveKV:
    """Whole-request reservation at admission (prompt + output tokens); never grows, never preempts."""

    paged = False
    block_size = 1

    def __init__(self, capacity_tokens: int):
        self.capacity_tokens = capacity_tokens
        self.reserved = 0

    def fits_ever(self, tokens: int) -> bool:
        return tokens <= self.capacity_tokens

    def admit(self, prompt: int, output: int, slots_now: int) -> int | None:
        need = prompt + output
        if self.reserved + need > self.capacity_tokens:
            return None
        self.reserved += need
        return need

    def grow(self, held: int, slots: int) -> int | None:
        return held

    def release(self, held: int) -> None:
        self.reserved -= held

    @property
    def used_tokens(self) -> int:
        return self.reserved


def make_kv_cache(engine, capacity_tokens: int) -> PagedKV | ReserveKV:
    """The replica's KV manager for `engine.kv_policy`, `capacity_tokens` slots in all."""
    if engine.kv_policy == "reserve":
        return ReserveKV(capacity_tokens)
    return PagedKV(capacity_tokens // engine.block_size, engine.block_size)
