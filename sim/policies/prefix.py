"""DSpark hardware-aware prefix scheduler (paper Sec. 3.2.2, Algorithm 1).

Prefix survival a[r, j] = prod_{i<=j} conf[r, i]. Choosing l_r per request gives B = sum_r (1 + l_r) tokens
and tau = sum_r (1 + sum_{j<=l_r} a[r, j]) expected tokens; the scheduler maximises Theta = tau * SPS(B).
Greedy: sort all (r, j) by a descending (a is non-increasing in j, so a stable sort is prefix-consistent),
start from B = R, tau = R, and admit one candidate at a time while Theta improves; stop at the first
non-improvement (non-anticipation: the decision never depends on outcomes, so it is lossless).

    lengths = prefix_schedule(conf, sps, budget)                   # Algorithm 1
    lengths = prefix_schedule(conf, sps, budget, early_stop=False)  # global argmax (async variant's search)
"""
from __future__ import annotations

import numpy as np

from sim.policies.base import Policy


def sorted_survival(conf: np.ndarray, max_draft: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, values): flat indices of (r, j) by descending prefix survival, ties by position."""
    a = np.cumprod(conf[:, :max_draft], axis=1)
    flat = a.ravel()
    order = np.argsort(-flat, kind="stable")
    return order, flat[order]


def best_count(values: np.ndarray, n: int, sps, budget: int, early_stop: bool) -> int:
    """How many of the sorted candidates Algorithm 1 admits (values: descending survivals)."""
    m = min(int(np.count_nonzero(values > 0)), max(budget, 0))
    if m == 0:
        return 0
    b = np.arange(n, n + m + 1)
    tau = np.empty(m + 1)
    tau[0] = n
    np.cumsum(values[:m], out=tau[1:])
    tau[1:] += n
    theta = tau * sps(b)
    if early_stop:
        worse = np.flatnonzero(theta[1:] <= theta[:-1])
        return int(worse[0]) if worse.size else m
    return int(np.argmax(theta))  # first maximum: ties keep the cheaper batch


def prefix_schedule(conf: np.ndarray, sps, budget: int, max_draft: int | None = None,
                    early_stop: bool = True) -> np.ndarray:
    n, g = conf.shape
    g = min(g, max_draft or g)
    order, values = sorted_survival(conf, g)
    count = best_count(values, n, sps, budget, early_stop)
    return np.bincount(order[:count] // g, minlength=n).astype(np.int64)


class PrefixPolicy(Policy):
    name = "prefix"

    def choose(self, conf, n, budget, sps):
        return prefix_schedule(conf, sps, budget, self.max_draft)
