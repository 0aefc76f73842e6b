"""SmartSpec goodput (arXiv 2406.14066): one batch-level k from an EMA of observed acceptance.

goodput(k) = R * (1 - a^(k+1)) / (1 - a) * SPS(R (k + 1)); scan k = 0..gamma and stop at the first drop;
k = 0 gets a bonus (default x1.1) so that speculation must clearly beat plain decoding. a is updated after
each step as a <- (1 - w) a + w a_obs from the engine's own acceptance log (past steps only).
"""
from __future__ import annotations

import numpy as np

from sim.policies.base import Policy, trim_to_budget


class SmartSpecPolicy(Policy):
    name = "smartspec"
    needs_conf = False

    def __init__(self, max_draft: int, k0_bonus: float = 1.1, ema: float = 0.15, alpha0: float = 0.7):
        super().__init__(max_draft)
        self.k0_bonus = k0_bonus
        self.ema = ema
        self.alpha = alpha0
        self._ks = np.arange(max_draft + 1)

    def choose(self, conf, n, budget, sps):
        a = min(max(self.alpha, 1e-6), 1 - 1e-6)
        acc = (1 - a ** (self._ks + 1)) / (1 - a)
        good = n * acc * sps(n * (self._ks + 1))
        good[0] *= self.k0_bonus
        drops = np.flatnonzero(np.diff(good) <= 0)
        k = int(drops[0]) if drops.size else self.max_draft
        return trim_to_budget(np.full(n, k, dtype=np.int64), budget)

    def observe(self, lengths, accepted):
        drafted = lengths.sum()
        if drafted > 0:
            # a per-position conditional rate from the accepted-prefix counts: a = acc / (acc + rejections)
            rejections = np.count_nonzero(accepted < lengths)
            obs = accepted.sum() / max(accepted.sum() + rejections, 1)
            self.alpha = (1 - self.ema) * self.alpha + self.ema * obs
