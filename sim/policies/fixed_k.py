"""Fixed-k: every request verifies the same k drafts each step (trimmed evenly to the token budget)."""
from __future__ import annotations

import numpy as np

from sim.policies.base import Policy, trim_to_budget


class FixedKPolicy(Policy):
    name = "fixed_k"
    needs_conf = False

    def __init__(self, max_draft: int, k: int):
        super().__init__(max_draft)
        self.k = min(k, max_draft)
        self.spec = self.k > 0

    def max_verify(self) -> int:
        return self.k

    def choose(self, conf, n, budget, sps):
        return trim_to_budget(np.full(n, self.k, dtype=np.int64), budget)
