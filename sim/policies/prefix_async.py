"""DSpark async production variant (paper Sec. 5.2): zero-overhead scheduling.

The engine must know the next step's size before the current step ends, so the total verify budget K comes
from confidences `stale_steps` (default 2) steps old: K = global argmax of Theta over the stale sorted
survivals (no early stop, since a stale budget cannot peek at outcomes; a global search also copes with a
jagged SPS). K is then allocated across the current batch by current prefix survival (dynamic top-K).
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
        k = best_count(stale_values, stale_n, sps, budget, early_stop=False)
        k = min(k, int(np.count_nonzero(values > 0)), budget)
        return np.bincount(order[:k] // g, minlength=n).astype(np.int64)
