"""AR: plain autoregressive decoding, no speculation (one token per request per step, no drafter)."""
from __future__ import annotations

import numpy as np

from sim.policies.base import Policy


class ARPolicy(Policy):
    name = "ar"
    needs_conf = False
    spec = False

    def choose(self, conf, n, budget, sps):
        return np.zeros(n, dtype=np.int64)
