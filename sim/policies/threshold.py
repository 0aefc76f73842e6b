"""Static confidence threshold (DeepSpec's --confidence-threshold): verify drafts up to the first position
whose conditional confidence falls below the threshold."""
from __future__ import annotations

import numpy as np

from sim.policies.base import Policy, trim_to_budget


class ThresholdPolicy(Policy):
    name = "threshold"

    def __init__(self, max_draft: int, threshold: float):
        super().__init__(max_draft)
        self.threshold = threshold

    def choose(self, conf, n, budget, sps):
        lengths = np.cumprod(conf[:, : self.max_draft] >= self.threshold, axis=1).sum(axis=1)
        return trim_to_budget(lengths.astype(np.int64), budget)
