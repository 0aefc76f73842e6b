"""KV-cache memory of one replica, as vLLM manages it (paged blocks, per attention group) or as a reservation.

    groups = kv_groups(model, hybrid=True)                # vLLM's KV cache groups of the model
    kv = make_kv_cache(engine_cfg, capacity_tokens, groups, pool_blocks)   # PagedKV, HybridKV or ReserveKV
    hit = kv.lookup(chain, tokens)                       # tokens found in the prefix cache (paged; else 0)
    held = kv.admit(prompt, output, slots_now, hit, chain)   # units now held by the request, or None: no room
    held = kv.grow(held, slots, computed)                # after growing to `slots` token slots, or None
    kv.release(held, chain, computed)                    # paged: its full computed blocks stay cached
    kv.warm(chain, computed)                             # the same, for a request of a run before this one
    blocks = kv_cache_blocks(mem_bytes, utilization, weight_bytes, reserve_bytes, block_bytes, tp)

paged (vLLM): memory is cut into blocks of `block_size` token slots. A request holds ceil(slots / block_size)
blocks, where slots = the tokens its next step writes into the cache (prompt chunk or sequence so far
+ the step's new tokens, speculative ones included). Admission needs only the blocks of the first step;
each later step grows the request; when a step cannot get its blocks the replica preempts (recompute) -
see sim/cluster.py. A "unit" of `held` is one block.
hybrid (vLLM V1's hybrid KV cache manager, models with sliding-window layers, `engine.hybrid_kv`): the layers
form KV cache groups of equal size (`kv_groups`), each group-block one page of every layer in its group, all
groups drawing on one pool. A full-attention group holds ceil(slots / block_size) blocks of a request; a
sliding-window group frees the blocks wholly before its window: ceil(slots / block_size) - skipped, skipped =
max(0, computed - window + 1) // block_size, where computed = tokens already in the cache (vLLM's
SlidingWindowManager.get_num_skipped_tokens; remove_skipped_blocks runs before each step's allocation).
A "unit" of `held` is one group-block. `hybrid_kv: false` (vLLM's --disable-hybrid-kv-cache-manager) keeps
every layer's KV for the whole context, as a model without sliding layers does.
prefix caching (`engine.prefix_caching`, vLLM V1's default): a freed request's full computed blocks stay cached
and are evicted least recently freed first; an admitted request (new or resumed after a preemption) that finds
its prefix cached counts those tokens as computed (sim/prefix_cache.py). A hybrid pool (above) caches a freed
request's group-blocks too; a request finds its own computed prefix again while all of them are cached (a hit
needs the full groups' blocks and each sliding group's window before it: HybridKV's docstring); a linear-state
pool runs without prefix caching (vLLM's mamba prefix caching is not modelled).
A run can start warm (`workload.warm_prefix_cache`, `warm`): the requests it will send already ran once on this
server and freed their blocks, as when one `vllm serve` answers a sweep of vLLM's benchmark that samples the same
prompts at every point; each then finds its prompt's full blocks cached while the pool has kept them.
linear state (hybrid linear-attention models, Qwen3-Next / Qwen3.5, sim/linear_attn.py; always on, as vLLM has
no other manager for them): the full-attention layers form full groups and the Gated DeltaNet layers state groups
of the same size (KVGroups); a request holds ceil(slots / block_size) blocks in each full group and, for its
whole life, 1 + spec_tokens blocks in each state group (vLLM's MambaManager, mamba_cache_mode "none": one state,
plus one per speculative token to roll back rejected drafts). The block size grows until one page of full-
attention KV holds one layer's state (vLLM's HybridAttentionMambaModelConfig, `state_block_size`), so the
state page is padded to the same bytes. `StateKV`; admission needs the state blocks and the first chunk's.
reserve (the simulator's old model, kept for comparison): admission reserves prompt + whole output in
tokens and nothing grows or gets preempted. A "unit" of `held` is one token (on a linear-attention model:
full-attention KV only, no state).

Capacity (vLLM's gpu_memory_utilization): per GPU, utilization x memory - activation peak (- from vLLM 0.20
its CUDA-graph estimate, sim/cuda_graphs.py; sim/simulate.py adds it to the reserve) is for weights + KV;
blocks = (tp x (mem x utilization - reserve) - weights) / (block_size x KV bytes per token) - per token of one
group's layers for a hybrid pool (see `KVGroups`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lab.errors import LabError
from sim.prefix_cache import PrefixCache

GIB = 2**30
# vLLM's profile run (V0 and V1) keeps back from the KV cache its torch peak plus the non-torch memory it grew by.
# The torch peak is the larger of two passes run one after the other: the forward over max_num_batched_tokens
# tokens (~ tokens x hidden x A bytes: residual, QKV, attention out, a ~3.5x wider MLP) and the dummy sampler over
# min(max_num_seqs, tokens) rows of [vocab] logits (V1 gpu_model_runner._dummy_sampler_run; V0 samples its
# max_num_seqs dummy sequences with top_k = vocab - 1): fp32 logits and, by how top-k / top-p runs, a full sort
# with int64 indices, softmax, cumsum and scatter (`sort`), FlashInfer's kernels or vLLM's Triton kernels
# (PR 33538) -- bytes per logit in SAMPLER_BYTES_PER_LOGIT. Fitted to 48 public startup logs of a known sampler
# (sim/validation/vllm_memory.yaml; `python -m sim.vllm_memory --fit`, BENCHMARKS.md session 28). Set
# engine.activation_reserve_gib to what your vLLM log prints to override.
# The least-absolute-deviation fit of max(forward, sampler) + non-torch (leave-one-out MAE 0.37 GiB over the 48
# logs, 0.19 over their 30 V1 ones; the old tokens x hidden x 32 B + 1 GiB: 1.18 / 1.33).
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 38.7
# FlashInfer's sampler term is counted from vLLM's source, not fitted (BENCHMARKS.md session 35): every log of it
# samples 39 - 51 M logits (256 rows), where the fit trades bytes per logit against the non-torch constant (it put
# 8.2 B), while vLLM's H100 / H200 default of 1,024 rows samples 156 - 206 M. The tensors live together at the
# peak (V1 gpu_model_runner._dummy_sampler_run -> Sampler.forward -> TopKTopPSampler.forward_cuda -> flashinfer_sample
# -> flashinfer.sampling.top_k_top_p_sampling_from_logits, top_k_first, vLLM 0.10 - 0.11.0 and the current file):
FLASHINFER_SAMPLER_BYTES_PER_LOGIT = (
    2    # the runner's logits in the model's dtype (bf16), held by _dummy_sampler_run for the whole call
    + 4  # Sampler.forward's fp32 copy (logits.to(torch.float32); temperature then divides it in place)
    + 4  # FlashInfer's top_k_mask_logits output (fp32, a new tensor; top_k = vocab - 1 in the dummy run)
    + 4)  # the softmax of that (fp32 probs), alive beside it while top_p_sampling_from_probs runs
SAMPLER_BYTES_PER_LOGIT = {"sort": 33.4, "flashinfer": FLASHINFER_SAMPLER_BYTES_PER_LOGIT, "triton": 15.0}
NON_TORCH_BYTES = 0.26 * GIB
NON_TORCH_TP_BYTES = 1.88 * GIB  # more at tp > 1 with vLLM's custom all-reduce (P2P: NVLink) beside NCCL's buffers
NON_TORCH_TP_NCCL_BYTES = 0.10 * GIB  # more at tp > 1 on NCCL alone (no P2P: PCIe cards, ranks on several nodes)


def blocks_for(tokens, block_size: int):
    """Blocks that hold `tokens` slots (int or numpy int array)."""
    return (tokens + block_size - 1) // block_size


@dataclass(frozen=True)
class KVGroups:
    """vLLM V1's KV cache groups of a model: `full` full-attention and `sliding` sliding-window groups of
    `layers` layers each, sharing one block pool; a block of the pool is one page (block_size slots) of every
    layer of one group. Source: vllm/v1/core/kv_cache_utils.py (v0.10-0.11):
      _get_kv_cache_groups_uniform_page_size: each attention type's layers split into groups of group_size
        layers, group_size = the fewest layers of any type (the most when max < 1.5 x min); a type's last
        group is padded (Gemma3-12B: 8 full + 40 sliding layers -> 1 + 5 groups of 8; Gemma3-27B: 10 + 52 ->
        1 + 6 groups of 10, 8 padding layers);
      get_kv_cache_config_from_groups / get_num_blocks: num_blocks = KV memory // (page_size x group_size),
        page_size = block_size x one layer's KV bytes per token;
      the logged "GPU KV cache size: N tokens" (what `engine.kv_capacity_tokens` takes from a log and the
        simulator reports): vLLM <= 0.11 (_report_kv_cache_config) N = num_blocks // len(groups) x block_size,
        so pool blocks = N // block_size x groups; newer vLLM (update_kv_cache_capacity; 0.32 in this lab)
        N = int(max_concurrency x max_model_len), max_concurrency = num_blocks / blocks one max_model_len
        request needs (get_max_concurrency_for_kv_cache_config: full groups ceil(max_model_len / block_size),
        sliding groups ceil(min(window - 1 + max_num_batched_tokens, max_model_len) / block_size) + 1), used
        here when `engine.max_model_len` is set. Checked on this lab's vLLM 0.32 CPU log (Gemma3-270M fp32,
        2 GiB, block 128, max_model_len 1,024): groups 1 + 5 of 3 layers, 2 GiB // (128 x 3 x 2 KiB) = 2,730
        blocks, 8 + 5 x 9 = 53 a request, "KV cache size: 52,745 tokens, Maximum concurrency ... 51.51x".
    One group of all layers (`full` 1, `sliding` 0) is a model without sliding layers, or any model with
    hybrid_kv off (vLLM's --disable-hybrid-kv-cache-manager: sliding layers keep the whole context); a model
    whose every layer slides is one sliding group of all layers either way."""

    full: int
    sliding: int
    layers: int
    window: int | None = None
    state: int = 0  # linear-attention (Gated DeltaNet) groups: a fixed state per request (StateKV)
    block_size: int | None = None  # the pool's block size when the model forces one (state_block_size)

    @property
    def count(self) -> int:
        return self.full + self.sliding + self.state

    def request_blocks(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        """Group-blocks newer vLLM counts for one request of max_model_len tokens (its max concurrency)."""
        n = -(-max_model_len // block_size)
        if not self.sliding:  # a state group: one block (MambaSpec.max_memory_usage_bytes, no speculation)
            return self.full * n + self.state
        sliding = -(-min(self.window - 1 + max_num_batched_tokens, max_model_len) // block_size) + 1
        return self.full * n + self.sliding * sliding

    def reported_tokens(self, pool_blocks: int, block_size: int, max_model_len: int | None = None,
                        max_num_batched_tokens: int = 0) -> int:
        """vLLM's logged KV cache size in tokens of a pool of `pool_blocks` group-blocks: vLLM <= 0.11's
        formula, or the newer one when `max_model_len` is given (see the class docstring)."""
        if max_model_len is None:
            return pool_blocks // self.count * block_size
        return int(pool_blocks / self.request_blocks(max_model_len, block_size, max_num_batched_tokens)
                   * max_model_len)

    def pool_blocks(self, reported_tokens: int, block_size: int, max_model_len: int | None = None,
                    max_num_batched_tokens: int = 0) -> int:
        """Pool group-blocks behind a logged KV size in tokens (reported_tokens' inverse: exact for the newer
        formula while a request needs no more blocks than max_model_len tokens; up to groups - 1 blocks low
        for the older)."""
        if max_model_len is None:
            return reported_tokens // block_size * self.count
        per_request = self.request_blocks(max_model_len, block_size, max_num_batched_tokens)
        return -(-reported_tokens * per_request // max_model_len)


def kv_groups(model, hybrid: bool = True, tp: int = 1, block_size: int = 16) -> KVGroups:
    """vLLM's KV cache groups of `model` (sim.models.ModelShape) with the hybrid manager on or off; a linear-
    attention model's groups on `tp` GPUs at the engine's `block_size` (the hybrid switch does not apply)."""
    if model.linear_layers:
        return _linear_groups(model, tp, block_size)
    n, sliding = model.n_layers, model.sliding_layers
    if model.chunked_attention:  # vLLM turns its hybrid manager off for chunked local attention by default
        hybrid = False  # ("a latency regression"; VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=1, not modelled)
    if not sliding or (not hybrid and sliding < n):
        return KVGroups(full=1, sliding=0, layers=n)
    if sliding == n:
        return KVGroups(full=0, sliding=1, layers=n, window=model.sliding_window)
    full = n - sliding
    size = min(full, sliding)
    if max(full, sliding) < 1.5 * size:
        size = max(full, sliding)
    return KVGroups(full=-(-full // size), sliding=-(-sliding // size), layers=size, window=model.sliding_window)


def _linear_groups(model, tp: int, block_size: int) -> KVGroups:
    """Full and state groups of equal size, by _get_kv_cache_groups_uniform_page_size's rule (the fewer layers
    of the two kinds, or the more when max < 1.5 x min); Qwen3-Next-80B's 12 full + 36 linear: 1 + 3 of 12."""
    full, linear = model.kv_layers, model.linear_layers
    size = min(full, linear)
    if max(full, linear) < 1.5 * size:
        size = max(full, linear)
    return KVGroups(full=-(-full // size), sliding=0, layers=size, state=-(-linear // size),
                    block_size=state_block_size(model, tp, block_size))


def state_block_size(model, tp: int = 1, block_size: int = 16) -> int:
    """The block size vLLM serves a linear-attention model with: the smallest multiple of the kernel alignment
    (max(16, block_size)) whose page of one full-attention layer's KV holds one layer's state, both per GPU, or
    the engine's `block_size` when larger (HybridAttentionMambaModelConfig / Platform._align_hybrid_block_size,
    mamba_cache_mode "none"). Qwen3-Next-80B bf16, tp 1: 2 KiB of KV a token a layer, a 1,097,728-byte state
    -> 16 x ceil(1,097,728 / (16 x 2,048)) = 544 tokens."""
    per_token = round(model.kv_bytes_per_token / model.kv_layers * model.kv_replication(tp) / tp)  # one GPU's
    align = max(16, block_size)
    return max(block_size, align * -(-round(model.linear.state_bytes(tp)) // (align * per_token)))


def activation_reserve_bytes(hidden: int, max_num_batched_tokens: int, vocab: int = 0, max_num_seqs: int = 0,
                             sampler: str = "flashinfer", tp: int = 1, custom_all_reduce: bool = True) -> float:
    """Default per-GPU memory vLLM keeps back from the KV cache beside the weights (see the constants above):
    max(forward, sampler) + non-torch; vocab or max_num_seqs 0 leaves the sampler out; custom_all_reduce: tp > 1
    over P2P links (NVLink), where vLLM's custom all-reduce keeps its buffers too."""
    forward = max_num_batched_tokens * hidden * ACTIVATION_BYTES_PER_TOKEN_HIDDEN
    logits = min(max_num_seqs, max_num_batched_tokens) * vocab  # the dummy sampler's [rows, vocab]
    multi = (NON_TORCH_TP_BYTES if custom_all_reduce else NON_TORCH_TP_NCCL_BYTES) if tp > 1 else 0.0
    return max(forward, logits * SAMPLER_BYTES_PER_LOGIT[sampler]) + NON_TORCH_BYTES + multi


def kv_cache_blocks(mem_bytes: float, utilization: float, weight_bytes: float, reserve_bytes: float,
                    block_bytes: float, tp: int = 1, where: str = "sim") -> int:
    """KV blocks of one replica of `tp` GPUs: (tp x (mem x utilization - reserve) - weights) / block bytes."""
    budget = tp * (mem_bytes * utilization - reserve_bytes) - weight_bytes
    # a reserve of 1e300 GiB is infinite bytes: -inf // block_bytes is NaN, and int(NaN) a ValueError traceback
    blocks = int(budget // block_bytes) if math.isfinite(budget) else 0
    if blocks < 1:
        raise LabError(f"{where} does not fit: weights ({weight_bytes / GIB:.1f} GiB) and activations "
                       f"({reserve_bytes / GIB:.1f} GiB per GPU) leave no KV memory in {tp} x {mem_bytes / GIB:.0f} GiB x {utilization:g}; "
                       "raise hardware.tp or engine.gpu_memory_utilization, or set engine.kv_capacity_tokens")
    return blocks


class PagedKV:
    """vLLM's block pool: requests hold whole blocks; blocks come back when a request ends or is preempted.

    With `prefix_caching` (vLLM V1's default, sim/prefix_cache.py) a request's full computed blocks stay cached
    when it frees them: `free` counts them (they are free to allocate, as in vLLM's free queue), `cached` of
    `free` are such blocks, evicted least recently freed first once the truly free ones run out; `lookup`
    finds a request's cached prefix and `admit(..., chain=...)` takes those blocks back. Without it `cached`
    stays 0 and every path is the plain pool's."""

    paged = True

    def __init__(self, total_blocks: int, block_size: int, prefix_caching: bool = False):
        self.block_size = block_size
        self.total = total_blocks
        self.free = total_blocks
        self.capacity_tokens = total_blocks * block_size
        self.prefix_cache = PrefixCache(block_size) if prefix_caching else None
        self.cached = 0  # of `free`: blocks with an identity in the prefix cache (= prefix_cache.evictable)

    def fits_ever(self, tokens: int) -> bool:
        return blocks_for(tokens, self.block_size) <= self.total

    def lookup(self, chain, tokens: int, count: bool = True) -> int:
        """Tokens of the request's first `tokens` found cached along `chain` (0 without prefix caching); `count`
        False: not counted as a query (PrefixCache.lookup)."""
        return 0 if self.prefix_cache is None else self.prefix_cache.lookup(chain, tokens, count)

    def admit_units(self, prompt: int, output: int, slots_now: int, computed: int = 0) -> int:
        """Blocks `admit` would need for these arguments, nothing taken (compared with `free`)."""
        return blocks_for(slots_now, self.block_size)

    def take(self, n: int) -> None:
        """Allocate `n` blocks counted by the caller (n < 0 gives blocks back): truly free blocks first,
        then cached ones, least recently freed first."""
        self.free -= n
        if self.free < self.cached:
            self._evict()

    def _evict(self) -> None:
        self.prefix_cache.evict(self.cached - self.free)
        self.cached = self.free

    def admit(self, prompt: int, output: int, slots_now: int, computed: int = 0, chain=None) -> int | None:
        """Blocks for the first `slots_now` slots, or None: not enough free. `computed` tokens of them were
        found cached along `chain` (lookup): those blocks are re-referenced, not allocated anew."""
        need = blocks_for(slots_now, self.block_size)
        if need > self.free:
            return None
        if computed and chain is not None:
            self.prefix_cache.take(chain, computed // self.block_size)
            self.cached = self.prefix_cache.evictable
        self.take(need)
        return need

    def grow(self, held: int, slots: int, computed: int = 0) -> int | None:
        """Blocks for `slots` slots (`computed` of them already cached: unused here), or None: not enough."""
        need = blocks_for(slots, self.block_size) - held
        if need <= 0:
            return held
        if need > self.free:
            return None
        self.take(need)
        return held + need

    def row_cap(self, held, slots, computed, lookahead: int):
        """The longest sequence a decoding request's allocation holds with `lookahead` draft slots (int or
        arrays): beyond it, the step must grow it."""
        return held * self.block_size - lookahead

    def grow_decode(self, held: int, seq: int, lookahead: int) -> tuple[int, int] | None:
        """A decode step at sequence `seq` with `lookahead` draft slots: (blocks now held, row_cap), or None
        when the blocks run out (nothing taken). grow + row_cap in one call (the replica's per-row path)."""
        need = (seq + lookahead + self.block_size - 1) // self.block_size
        add = need - held
        if add > 0:
            if add > self.free:
                return None
            self.take(add)
            held = need
        return held, held * self.block_size - lookahead

    def release(self, held: int, chain=None, computed: int = 0) -> None:
        """A request frees its `held` blocks; with prefix caching its full blocks of `computed` tokens stay
        cached along `chain`."""
        self.free += held
        if self.prefix_cache is not None and chain is not None and computed >= self.block_size:
            self.prefix_cache.put(chain, min(computed // self.block_size, held))
            self.cached = self.prefix_cache.evictable

    def cached_units(self, computed: int) -> int:
        """The blocks `release` leaves cached for a request with `computed` tokens of KV: its full ones."""
        return computed // self.block_size

    def warm(self, chain, computed: int) -> None:
        """A request that ran on this server before the simulated run began (an earlier point of a benchmark sweep
        that sent the same prompts) freed its `computed` tokens' blocks along `chain`: they are cached as `release`
        leaves them, behind those freed before, and past the pool the least recently freed are evicted (vLLM's
        free queue after that run: every block in it, the most recently freed still hashed). The pool stays
        empty of running requests. Nothing without prefix caching."""
        if self.prefix_cache is None:
            return
        units = self.cached_units(computed)
        self.free -= units  # held for the moment of its release
        self.release(units, chain, computed)
        if self.cached > self.free:
            self._evict()

    @property
    def used_tokens(self) -> int:
        return (self.total - self.free) * self.block_size


class HybridKV(PagedKV):
    """vLLM's hybrid pool (KVGroups): a request holds ceil(slots / block_size) group-blocks in each full group
    and, in each sliding group, those minus the ones wholly before its window (module docstring); `held` can
    shrink as the window slides. `max_chunk`: the most new tokens one step gives a request (the token
    budget with chunked prefill; None: a whole prompt).

    With `prefix_caching` (vLLM V1 caches under the hybrid manager too) a freed request's group-blocks of its full
    computed blocks stay cached: every full group's and, in each sliding group, those still inside the window
    (the ones that slid out were freed earlier, so are evicted first). A request admitted again finds its
    computed prefix only while all of those are cached: vLLM's hit at a position needs the full groups' blocks
    before it and the sliding groups' window before it, and eviction takes a request's blocks tail first, so
    once any went, no earlier position keeps its window (hit 0: recomputed from the start)."""

    def __init__(self, total_blocks: int, block_size: int, groups: KVGroups, max_chunk: int | None,
                 capacity_tokens: int | None = None, prefix_caching: bool = False):
        super().__init__(total_blocks, block_size, prefix_caching)
        self._cached_tokens: dict = {}  # a cached request's chain key -> (units put, tokens they hold)
        self.groups = groups
        self.n_groups, self.n_sliding, self.window = groups.count, groups.sliding, groups.window
        self.max_chunk = max_chunk
        # as vLLM logs it (KVGroups.reported_tokens; the caller's, which knows max_model_len)
        self.capacity_tokens = groups.reported_tokens(total_blocks, block_size) if capacity_tokens is None \
            else capacity_tokens

    def units(self, slots, computed):
        """Group-blocks that hold `slots` slots with `computed` tokens cached (ints or int arrays)."""
        skip = np.maximum(computed - self.window + 1, 0) // self.block_size if isinstance(computed, np.ndarray) \
            else max(computed - self.window + 1, 0) // self.block_size
        return self.n_groups * blocks_for(slots, self.block_size) - self.n_sliding * skip

    def fits_ever(self, tokens: int) -> bool:
        """vLLM's per-request bound (SlidingWindowSpec.max_memory_usage_bytes): full groups over all `tokens`,
        sliding groups over at most the window - 1 + one step's new tokens, +1 block for the window's start."""
        bs = self.block_size
        chunk = tokens if self.max_chunk is None else min(self.max_chunk, tokens)
        n = blocks_for(tokens, bs)
        return self.groups.full * n + self.n_sliding * min(n, blocks_for(self.window - 1 + chunk, bs) + 1) \
            <= self.total

    def lookup(self, chain, tokens: int, count: bool = True) -> int:
        """Tokens of the request's first `tokens` found cached along `chain`: its computed prefix where every
        group-block it left cached still is (class docstring), else 0. Counted as one query (unless `count` is
        False)."""
        cache = self.prefix_cache
        if cache is None:
            return 0
        key = chain[-1][0]
        units, cached_tokens = self._cached_tokens.get(key, (0, 0))
        whole = units > 0 and cache.cached(key) == units
        hit = min(cached_tokens, (tokens - 1) // self.block_size * self.block_size) if whole else 0
        if count:
            cache.count(tokens, hit)
        return hit

    def admit_units(self, prompt: int, output: int, slots_now: int, computed: int = 0) -> int:
        return int(self.units(slots_now, computed))

    def admit(self, prompt: int, output: int, slots_now: int, computed: int = 0, chain=None) -> int | None:
        need = self.units(slots_now, computed)
        if need > self.free:
            return None
        if computed and chain is not None and self.prefix_cache is not None:  # its cached blocks, re-referenced
            key = chain[-1][0]
            self.prefix_cache.take(chain, self._cached_tokens.pop(key)[0])
            self.cached = self.prefix_cache.evictable
        self.take(need)
        return need

    def grow(self, held: int, slots: int, computed: int = 0) -> int | None:
        """Group-blocks for `slots` slots with `computed` of them cached: blocks out of the window come back
        first (vLLM frees them even when the step cannot then allocate), so `need` may be negative."""
        need = self.units(slots, computed) - held
        if need > self.free:
            return None
        self.take(need)
        return held + need

    def cached_units(self, computed: int) -> int:
        """The group-blocks `release` leaves cached for a request with `computed` tokens of KV (class docstring)."""
        aligned = computed // self.block_size * self.block_size
        return int(self.units(aligned, aligned))

    def release(self, held: int, chain=None, computed: int = 0) -> None:
        """A request frees its `held` group-blocks; with prefix caching those of its full computed blocks stay
        cached (class docstring)."""
        self.free += held
        cache = self.prefix_cache
        if cache is None or chain is None or computed < self.block_size:
            return
        aligned = computed // self.block_size * self.block_size
        units = min(int(self.units(aligned, aligned)), held)
        key = chain[-1][0]
        self._cached_tokens.pop(key, None)
        cache.put(((key, None),), units)
        self.cached = cache.evictable
        self._cached_tokens[key] = (units, aligned)

    def row_cap(self, held, slots, computed, lookahead: int):
        """As PagedKV's, and no further than the sequence whose window drops the next block: a decode step
        at sequence s has s - 1 tokens computed, skipping max(0, s - window) // block_size blocks."""
        bs, window = self.block_size, self.window
        if isinstance(computed, np.ndarray):
            skip = np.maximum(computed - window + 1, 0) // bs
            return np.minimum(blocks_for(slots, bs) * bs - lookahead, window - 1 + (skip + 1) * bs)
        skip = max(computed - window + 1, 0) // bs
        return min(blocks_for(slots, bs) * bs - lookahead, window - 1 + (skip + 1) * bs)

    def grow_decode(self, held: int, seq: int, lookahead: int) -> tuple[int, int] | None:
        """As PagedKV's: seq + lookahead slots, seq - 1 computed (max(0, seq - window) // block_size blocks
        skipped by each sliding group)."""
        bs, window = self.block_size, self.window
        n = (seq + lookahead + bs - 1) // bs
        skip = (seq - window) // bs if seq > window else 0
        need = self.n_groups * n - self.n_sliding * skip
        if need - held > self.free:
            return None
        self.take(need - held)
        return need, min(n * bs - lookahead, window - 1 + (skip + 1) * bs)

    @property
    def used_tokens(self) -> int:
        return (self.total - self.free) // self.n_groups * self.block_size


class StateKV(HybridKV):
    """A hybrid linear-attention model's pool (module docstring): a request holds ceil(slots / block_size)
    group-blocks in each full group plus `fixed` = state groups x (1 + spec_tokens) blocks for its state, from
    admission to release; nothing slides. `spec_tokens`: the speculative tokens a step verifies at most (vLLM's
    num_speculative_tokens; 0 without speculation)."""

    def __init__(self, total_blocks: int, block_size: int, groups: KVGroups, spec_tokens: int = 0,
                 capacity_tokens: int | None = None):
        super().__init__(total_blocks, block_size, groups, None, capacity_tokens)
        self.n_full = groups.full
        self.fixed = groups.state * (1 + spec_tokens)

    def units(self, slots, computed):
        """Group-blocks of a request with `slots` slots (int or int array; `computed` does not matter)."""
        return self.n_full * blocks_for(slots, self.block_size) + self.fixed

    def fits_ever(self, tokens: int) -> bool:
        return self.units(tokens, 0) <= self.total

    def row_cap(self, held, slots, computed, lookahead: int):
        return blocks_for(slots, self.block_size) * self.block_size - lookahead

    def grow_decode(self, held: int, seq: int, lookahead: int) -> tuple[int, int] | None:
        n = (seq + lookahead + self.block_size - 1) // self.block_size
        need = self.n_full * n + self.fixed
        if need - held > self.free:
            return None
        self.free -= need - held
        return need, n * self.block_size - lookahead


class ReserveKV:
    """Whole-request reservation at admission (prompt + output tokens); never grows, never preempts."""

    paged = False
    block_size = 1
    prefix_cache = None

    def __init__(self, capacity_tokens: int):
        self.capacity_tokens = capacity_tokens
        self.reserved = 0

    def fits_ever(self, tokens: int) -> bool:
        return tokens <= self.capacity_tokens

    def lookup(self, chain, tokens: int, count: bool = True) -> int:
        return 0

    @property
    def free(self) -> int:
        """Tokens not reserved (what admit_units is compared with)."""
        return self.capacity_tokens - self.reserved

    def admit_units(self, prompt: int, output: int, slots_now: int, computed: int = 0) -> int:
        return prompt + output

    def admit(self, prompt: int, output: int, slots_now: int, computed: int = 0, chain=None) -> int | None:
        need = prompt + output
        if self.reserved + need > self.capacity_tokens:
            return None
        self.reserved += need
        return need

    def grow(self, held: int, slots: int, computed: int = 0) -> int | None:
        return held

    def release(self, held: int, chain=None, computed: int = 0) -> None:
        self.reserved -= held

    @property
    def used_tokens(self) -> int:
        return self.reserved


def make_kv_cache(engine, capacity_tokens: int, groups: KVGroups | None = None,
                  pool_blocks: int | None = None, spec_tokens: int = 0) -> PagedKV | HybridKV | ReserveKV:
    """The replica's KV manager for `engine.kv_policy`: `capacity_tokens` slots in all as vLLM reports them, or
    exactly `pool_blocks` blocks of the pool when known (from memory); `groups` None: one group of all layers;
    `spec_tokens`: the most draft tokens a step verifies (a linear-attention model's extra state blocks)."""
    if engine.kv_policy == "reserve":
        return ReserveKV(capacity_tokens)
    if groups is not None and groups.state:
        bs = groups.block_size or engine.block_size
        blocks = groups.pool_blocks(capacity_tokens, bs) if pool_blocks is None else pool_blocks
        return StateKV(blocks, bs, groups, spec_tokens, capacity_tokens)
    if groups is None or (groups.full, groups.sliding) == (1, 0):
        return PagedKV(capacity_tokens // engine.block_size if pool_blocks is None else pool_blocks, engine.block_size,
                       engine.prefix_caching)
    blocks = groups.pool_blocks(capacity_tokens, engine.block_size) if pool_blocks is None else pool_blocks
    return HybridKV(blocks, engine.block_size, groups,
                    engine.max_num_batched_tokens if engine.enable_chunked_prefill else None, capacity_tokens,
                    engine.prefix_caching)
