"""Prompt-lookup (n-gram) drafting: no training, what transformers' prompt_lookup_num_tokens and vLLM's
`ngram` method do. The longest suffix n-gram (ngram_max down to ngram_min) of the context is searched
for its most recent earlier occurrence; the tokens that followed it are the draft.

    drafter = NgramDrafter("ngram", block_size=7, ngram_max=4, ngram_min=1)
"""
from __future__ import annotations

import numpy as np
import torch

from real.drafters.base import Drafter, DraftState, Proposal


class NgramDrafter(Drafter):
    method = "ngram"

    def __init__(self, name: str, block_size: int, ngram_max: int = 4, ngram_min: int = 1):
        super().__init__(name, block_size)
        self.ngram_max = ngram_max
        self.ngram_min = ngram_min

    @classmethod
    def from_spec(cls, spec, target=None, checkpoint_dir=None) -> NgramDrafter:
        return cls(spec.name, spec.block_size, spec.ngram_max, spec.ngram_min)

    def lookup(self, history: list[int], k: int) -> list[int]:
        """Continuation (up to k tokens) of the latest earlier match of the longest matching suffix."""
        seq = np.asarray(history, dtype=np.int64)
        n_total = len(seq)
        for n in range(min(self.ngram_max, n_total - 1), self.ngram_min - 1, -1):
            suffix = seq[n_total - n:]
            # windows[i] = seq[i:i+n] for every start i whose match ends before the suffix itself
            windows = np.lib.stride_tricks.sliding_window_view(seq[: n_total - 1], n)
            hits = np.flatnonzero((windows == suffix).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return seq[start:start + k].tolist()
        return []

    def propose(self, state: DraftState, anchor: int, k: int, temperature: float,
                generator: torch.Generator | None) -> Proposal:
        draft = self.lookup(state.tokens + [anchor], k)
        tokens = torch.tensor(draft, dtype=torch.long)  # [k'] with k' <= k; empty when no match
        # A deterministic proposal: q is one-hot, so the draft probability (the confidence) is 1.
        return Proposal(tokens=tokens, probs=None, confidence=torch.ones(len(draft)))
