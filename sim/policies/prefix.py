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

from itertools import accumulate, takewhile
from operator import mul, neg

import numpy as np

from sim.policies.base import Policy

_AR = np.arange(1 << 17)  # shared index ramp: slicing it is cheaper than np.arange per step


def sorted_survival(conf: np.ndarray, max_draft: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, values): flat indices of (r, j) by descending prefix survival, ties by position."""
    if conf.shape[1] > max_draft:
        conf = conf[:, :max_draft]
    flat = conf.cumprod(axis=1).ravel()
    order = (-flat).argsort(kind="stable")
    return order, flat[order]


def best_count(values: np.ndarray, n: int, sps, budget: int, early_stop: bool) -> int:
    """How many of the sorted candidates Algorithm 1 admits (values: descending survivals).

    theta[i] = (n + sum of the first i values) * SPS(n + i), i = 0..m; greedy admission stops at the first
    i with theta[i+1] <= theta[i]; the global variant takes the first argmax.
    """
    m = values.size
    if m and values[m - 1] <= 0:
        m = int(np.count_nonzero(values > 0))
    if budget < m:
        m = max(budget, 0)
    if m == 0:
        return 0
    s = sps(_AR[n:n + m + 1])
    theta = values[:m].cumsum()
    theta += n
    theta *= s[1:]
    theta0 = n * s[0]
    if early_stop:
        if theta[0] <= theta0:
            return 0
        worse = theta[1:] <= theta[:-1]
        i = int(worse.argmax()) if m > 1 else 0
        return i + 1 if m > 1 and worse[i] else m
    i = int(theta.argmax())
    return i + 1 if theta[i] > theta0 else 0  # first maximum: ties keep the cheaper batch


SMALL = 32  # up to this many candidates, pure Python beats numpy's per-call overhead


def _single(count: int) -> np.ndarray:
    """lengths [1] = [count], shared and read-only (building a 1-element array costs more than the rest)."""
    if count >= len(_SINGLE):
        return np.array([count], np.int64)
    return _SINGLE[count]


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


_SINGLE = [_readonly(np.array([k], np.int64)) for k in range(64)]


def _prefix_small(conf: np.ndarray, sps, budget: int, g: int, early_stop: bool) -> np.ndarray:
    """Same result as the numpy path, for tiny batches (most steps of a lightly loaded replica).

    Plain Python over lists: survivals are the running products of each row up to its first non-positive
    one; a stable sort by descending survival keeps ties in row-major order (one row of rates <= 1 is
    already in order); theta_i = (n + sum of the first i) x SPS(n + i), admitted while it improves.
    """
    rows = conf.tolist()
    n = len(rows)
    values = getattr(sps, "values", None)  # a plain-Python SPS (sim/cost.RooflineSps) skips numpy here
    if n == 1 and values is not None and max(rows[0][:g]) <= 1.0:  # one row of rates <= 1: survivals descend
        return _single(_one_row(rows[0], values, budget, g, early_stop))
    surv: list[float] = []  # candidates' prefix survivals, row-major
    owner: list[int] = []  # each candidate's row (n > 1)
    for r, row in enumerate(rows):
        a = 1.0
        for j in range(g):
            a *= row[j]
            if a <= 0:
                break
            surv.append(a)
        if n > 1:
            owner += [r] * (len(surv) - len(owner))
    m = min(len(surv), max(budget, 0))
    if m == 0:
        return _single(0) if n == 1 else np.zeros(n, np.int64)
    order = sorted(range(len(surv)), key=list(map(neg, surv)).__getitem__)[:m]  # stable: ties row-major
    ranked = list(map(surv.__getitem__, order))
    s = values(n, n + m + 1) if values is not None else sps(_AR[n:n + m + 1]).tolist()
    count = _greedy_count(ranked, s, n, early_stop)
    if n == 1:
        return _single(count)
    lengths = [0] * n
    for i in order[:count]:
        lengths[owner[i]] += 1
    return np.array(lengths, np.int64)


def _one_row(row: list, sps_values, budget: int, g: int, early_stop: bool) -> int:
    """_prefix_small's count for one request whose survivals descend: they are admitted in their order
    (`sps_values(lo, hi)`: SPS(b) for b = lo..hi-1 as floats)."""
    surv = list(accumulate(row[:min(g, max(budget, 0))], mul))
    if surv and min(surv) <= 0:  # cut at the first non-positive survival
        surv = list(takewhile((0.0).__lt__, surv))
    return _greedy_count(surv, sps_values(1, len(surv) + 2), 1, early_stop)


def _greedy_count(ranked: list, s: list, n: int, early_stop: bool) -> int:
    """How many of the ranked survivals Algorithm 1 admits: theta_i = (n + sum of the first i) x s[i],
    s[i] = SPS(n + i); greedy stops at the first non-improvement, the global variant takes the first max."""
    best = n * s[0]
    tau = float(n)
    count = 0
    for i, a in enumerate(ranked):
        tau += a
        th = tau * s[i + 1]
        if th > best:
            best = th
            count = i + 1
        elif early_stop:
            break
    return count


def prefix_schedule(conf: np.ndarray, sps, budget: int, max_draft: int | None = None,
                    early_stop: bool = True) -> np.ndarray:
    n, g = conf.shape
    g = min(g, max_draft or g)
    if n * g <= SMALL:
        return _prefix_small(conf, sps, budget, g, early_stop)
    order, values = sorted_survival(conf, g)
    count = best_count(values, n, sps, budget, early_stop)
    if count == 0:
        return np.zeros(n, np.int64)
    return np.bincount(order[:count] // g, minlength=n)


class PrefixPolicy(Policy):
    name = "prefix"

    def choose(self, conf, n, budget, sps):
        return prefix_schedule(conf, sps, budget, self.max_draft)
