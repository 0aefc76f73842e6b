"""The prefill a speculative step holds beside b verify tokens, as a function of b (what the SPS curve prices).

    pieces = prefill_pieces(prefills, budget, chunked, b_min)
    # prefills: [(tokens to compute, tokens cached before, stops)] in the scheduler's order; each piece a range of b
    # over which the step's chunks are the same whole ones and at most one partial one that shrinks as b grows

A replica plans a step as vLLM V1's scheduler does (sim/cluster.py Replica.plan): the decoding requests and their
drafts first -- b verify tokens, the requests' own tokens included -- then prefill chunks, first come first
served, in the L = budget - b tokens left (budget = max_num_batched_tokens): with chunked prefill each item gets
min(its tokens, what is left), so the last one cut is partial; without, an item runs whole or not at all (a
running prefill that does not fit waits and the next may run; a queued request that does not fit stops the
admissions: `stops`). So as b grows the prefill shrinks: a piece of b holds the same items, the partial one's
chunk u = U - b tokens (U = budget - the tokens of the whole items before it). A piece of chunked prefill whose
partial chunk is one token stands alone (a one-token chunk is no prefill chunk to the kernels that count those:
sim/linear_attn.prefill_chunk_tokens, CostModel.mixed_decode_tile_flops).
"""
from __future__ import annotations

from dataclasses import dataclass

INF = float("inf")


@dataclass(frozen=True)
class PrefillPiece:
    """Verify lengths lo < b <= hi (-inf / inf at the ends) and the chunks the step holds there: `whole`
    ((tokens, cached before) each), and `part_done` / `part_top` of the partial chunk, u = part_top - b tokens
    after part_done cached ones (part_top None: none); `part_big`: u > 1 over the whole piece."""

    lo: float
    hi: float
    whole: tuple[tuple[int, int], ...]
    part_done: int = 0
    part_top: int | None = None
    part_big: bool = False


def chunk_tokens(need: int, left: int, chunked: bool) -> int:
    """The tokens the scheduler hands an item of `need` tokens when `left` remain: all of them if they fit, else
    with chunked prefill what is left (0 when nothing is), else none (the one rule: sim/cluster.py
    Replica._chunk, Replica._prefill_outlook and fill)."""
    if need <= left:
        return need
    return max(left, 0) if chunked else 0


def fill(left: int, prefills, chunked: bool):
    """The chunks the scheduler hands out in `left` tokens: (whole items [(tokens, done)], their tokens, the
    partial item's (done, tokens before it, tokens to compute) or None). An item that gets nothing is passed
    over, or stops the hand-out where its `stops` says so (a queued request: Replica._admit)."""
    whole, total = [], 0
    for need, done, stops in prefills:
        if left <= 0:
            break
        c = chunk_tokens(need, left, chunked)
        if c == need:
            whole.append((need, done))
            total += need
            left -= need
        elif c > 0:
            return whole, total, (done, total, need)
        elif stops:
            break
    return whole, total, None


def prefill_pieces(prefills, budget: int, chunked: bool, b_min: int) -> list[PrefillPiece]:
    """The pieces of b from b_min up (the first piece also stands for b below it, the last for b past the
    budget), in order of b. `prefills`: (tokens to compute >= 1, tokens cached before, stops) in the scheduler's
    order (module docstring); `budget`: the step's token budget."""
    pieces = []
    top = budget - b_min  # L at the piece's smallest b
    lo = -INF
    while True:
        whole, total, part = fill(top, prefills, chunked)
        if part is not None:
            base = part[1]
            big = top - base >= 2
            low = base + 2 if big else base + 1  # L at the piece's largest b
            pieces.append(PrefillPiece(lo, budget - low, tuple(whole), part[0], budget - base, big))
        elif whole:
            low = total
            pieces.append(PrefillPiece(lo, budget - low, tuple(whole)))
        else:
            pieces.append(PrefillPiece(lo, INF, ()))
            return pieces
        lo = budget - low
        top = low - 1
