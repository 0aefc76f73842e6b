"""vLLM V1's automatic prefix caching, for the simulator's paged block pool (sim/kv_cache.PagedKV).

    cache = PrefixCache(block_size)
    hit = cache.lookup(chain, tokens)      # tokens of a request's prefix found cached (block-aligned, < tokens)
    cache.take(chain, hit // block_size)   # admission re-references them (they leave the evictable queue)
    cache.put(chain, full_blocks)          # a freed request's full computed blocks stay cached, newest last
    cache.evict(n)                         # an allocation needs n of them: least recently freed go first

What vLLM does (vllm/v1/core/block_pool.py, kv_cache_manager.py, single_type_kv_cache_manager.py, v0.8 to
main): every full block a request has computed carries a hash chained over all tokens up to it. A freed block
keeps its hash and joins the free queue; blocks without a hash are put at the queue's front (reused first,
vLLM >= 0.24; earlier ones appended them too), hashed ones at its back, a request's blocks in reverse order so
its tail is evicted before its head. An allocation pops the front, evicting the hash of a cached block it
takes. Admission looks up the longest run of the request's leading block hashes that are cached, at most
num_tokens - 1 tokens (the last token is always recomputed for its logits), counts those tokens as computed,
and takes the blocks back out of the free queue (`touch`). vLLM counts prefix_cache_queries += num_tokens and
prefix_cache_hits += hit tokens at every lookup (`vllm:prefix_cache_queries` / `_hits`).

Here a block's identity is (chain key, index in the chain), not a token hash: a request's blocks are a `chain`
of segments ((key, blocks), ..., (key, None)), each a run of blocks that requests with the same key share (the
last segment unbounded). The simulator gives every request one private segment (its id): what a preempted
request finds again of its own blocks. A shared prefix (a common system prompt, the earlier turns of a
conversation) is a leading segment whose key several requests carry. The queue holds, per key, the count of
cached blocks from the segment's start (a segment's tail is evicted first), keys in the order they were freed.
Simplifications against vLLM: cached blocks serve one running request at a time (a hit takes the segment's
blocks out of the cache until that request frees them; vLLM would share them by reference count, so a second
concurrent request with the same prefix misses here and computes its own copy), and blocks of a segment that
lie beyond a hit are dropped from the cache (vLLM keeps them hashed).
"""
from __future__ import annotations

from collections import OrderedDict


class PrefixCache:
    """Cached full blocks that no running request holds, in vLLM's eviction order (least recently freed
    first); `evictable` of the pool's free blocks are these, the rest are truly free (used first)."""

    def __init__(self, block_size: int):
        self.block_size = block_size
        self.queue: OrderedDict = OrderedDict()  # key -> cached blocks from the segment's start, oldest key first
        self.evictable = 0
        self.queries = 0  # tokens looked up (vLLM's prefix_cache_queries)
        self.hits = 0  # tokens found cached (vLLM's prefix_cache_hits)

    def cached(self, key) -> int:
        """Cached blocks of segment `key` from its start (0: none)."""
        return self.queue.get(key, 0)

    def count(self, tokens: int, hit: int) -> None:
        """One lookup of `tokens` tokens that found `hit` cached, in vLLM's prefix_cache_queries / _hits."""
        self.queries += tokens
        self.hits += hit

    def lookup(self, chain, tokens: int, count: bool = True) -> int:
        """Tokens of a request of `tokens` tokens found cached along `chain`: whole blocks, fewer than
        `tokens` (vLLM recomputes at least the last one). Counted as one query (`count` False: a look that
        vLLM's scheduler does not make, the SPS curve's outlook: not counted)."""
        limit = (tokens - 1) // self.block_size
        found = 0
        for key, length in chain:
            cached = self.queue.get(key, 0)
            if length is None or cached < length:
                found += cached
                break
            found += length
        hit = min(found, limit) * self.block_size
        if count:
            self.count(tokens, hit)
        return hit

    def take(self, chain, blocks: int) -> None:
        """A request admitted with `blocks` leading blocks of `chain` cached holds them again: they leave the
        cache, with the rest of each segment they came from (see the module docstring)."""
        queue = self.queue
        for key, length in chain:
            if blocks <= 0:
                break
            self.evictable -= queue.pop(key, 0)
            blocks -= blocks if length is None else length

    def put(self, chain, blocks: int) -> None:
        """A request freed with `blocks` full computed blocks: they stay cached behind every block freed
        before, its last segment nearest the front (vLLM frees a request's blocks tail first). A segment
        already cached at least as far keeps its blocks; the new copies are then truly free."""
        spans = []
        for key, length in chain:
            if blocks <= 0:
                break
            n = blocks if length is None else min(length, blocks)
            spans.append((key, n))
            blocks -= n
        queue = self.queue
        for key, n in reversed(spans):
            old = queue.pop(key, 0)
            queue[key] = max(old, n)
            self.evictable += max(n - old, 0)

    def evict(self, n: int) -> None:
        """Forget the `n` cached blocks an allocation takes: the least recently freed segment's tail first."""
        queue = self.queue
        self.evictable -= n
        while n > 0:
            key, cached = next(iter(queue.items()))
            if cached > n:
                queue[key] = cached - n  # an existing key keeps its place
                return
            del queue[key]
            n -= cached
