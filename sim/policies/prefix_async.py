"""DSpark async production variant (paper Sec. 5.2): zero-overhead scheduling.

The engine must know the next step's size before the current step ends, so the total verify budget K comes
from confidences `stale_steps` (default 2) steps old: K = global argmax of Theta over the stale sorted
survivals (no early stop, since a stale budget cannot peek at outcomes; a global search also copes with a
jagged SPS). The stale search fixes the step's size in tokens, B* = R' + K (what a CUDA-graph engine must
know in advance); the current batch of R requests gets K_now = B* - R draft tokens, allocated by current
prefix survival (dynamic top-K). Keeping B* rather than K avoids spilling into the next padding bucket
when requests joined or left in between.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from sim.policies.base import Policy
from sim.policies.prefix import best_count, sorted_survival


class PrefixAsyncPolicy(Policy):
    name = "prefix_async"

    def __init__(self, max_draft: int, stale_steps: int = 2):
        super().__init__(max_draft)
        self.stale_steps = stale_steps
        self._history: deque = deque(maxlen=stale_steps + 1)

    def choose(self, conf, n, budget, sps):
        g = min(conf.shape[1], self.max_draft)
        order, values = sorted_survival(conf, g)
        self._history.append((values, n))
        stale_values, stale_n = self._history[0]  # oldest kept: stale_steps old once warmed up
        k_stale = best_count(stale_values, stale_n, sps, budget, early_stop=False)
        k = stale_n + k_stale - n  # same step size in tokens as planned
        k = max(0, min(k, int(np.count_nonzero(values > 0)), budget))
        return np.bincount(order[:k] // g, minlength=n).astype(np.int64)
