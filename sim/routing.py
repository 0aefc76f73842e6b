"""Skewed MoE routing: how many distinct routed experts a step of B tokens touches when some experts of a layer are
more popular than others.

    from sim.routing import distinct_experts, popularity, concentration
    distinct_experts(10, 128, 8, 0.0)     # 60.9: uniform routing, E x (1 - (1 - k/E)^B)
    distinct_experts(10, 128, 8, 1.16)    # 48.0: the popular experts are shared by more of the batch's tokens

The model: one MoE layer's expert popularity p_e (the share of the layer's k-of-E selections expert e gets over a
workload) is gamma-distributed over the experts with coefficient of variation `cv` (std / mean of the shares; shape
1 / cv^2), i.e. the sorted shares of a symmetric Dirichlet: p_e proportional to the (e + 1/2)/E quantiles of
Gamma(1 / cv^2) (deterministic, no sampling). A log-normal of the same concentration was tried and dropped: on the
published Qwen3-30B-A3B traces it puts too much on the top expert and too little on the top half (moe_routing.yaml).
A token selects expert e with probability pi_e = k x p_e (capped at 1, the excess spread over the rest: top-k
selects k distinct experts), independently of the batch's other tokens (a decode step's tokens come from different
requests), so E[distinct of B tokens] = sum_e 1 - (1 - pi_e)^B.
cv 0 is uniform routing, exactly the closed form; at large B every expert is touched either way.

cv is read off a published per-layer skew statistic (sim/validation/moe_routing.yaml; `python -m
sim.moe_routing_check`): concentration = 1 - H(p) / ln E (0 uniform, 1 one expert), solved for cv
(cv_for_concentration), corrected for the finite trace it was measured on (Miller-Madow: a sample of N
selections reads (E - 1) / (2 N ln E) more concentrated than its distribution). Shape: p, pi are (E,) arrays;
`tokens` may be a number or any numpy array (the result has its shape).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.optimize import brentq
from scipy.stats import gamma


@lru_cache(maxsize=64)
def popularity(n_experts: int, cv: float) -> np.ndarray:
    """(E,) expert shares of one layer's selections, sum 1, descending: Gamma(1 / cv^2) quantiles (cv 0: uniform)."""
    if cv <= 0.0:
        p = np.full(n_experts, 1.0 / n_experts)
    else:
        q = gamma.ppf((np.arange(n_experts) + 0.5) / n_experts, 1.0 / cv**2)[::-1]
        p = q / q.sum()
    p.setflags(write=False)
    return p


@lru_cache(maxsize=64)
def inclusion(n_experts: int, top_k: int, cv: float) -> np.ndarray:
    """(E,) probability that one token's top-k selects expert e: k x p_e, capped at 1 with the excess shared
    out over the uncapped experts in proportion (sum k)."""
    pi = top_k * np.asarray(popularity(n_experts, cv))
    for _ in range(n_experts):
        over = pi > 1.0
        if not over.any():
            break
        free = ~over & (pi < 1.0)
        excess = (pi[over] - 1.0).sum()
        pi[over] = 1.0
        pi[free] += excess * pi[free] / pi[free].sum()
    pi = np.minimum(pi, 1.0)
    pi.setflags(write=False)
    return pi


def distinct_experts(tokens, n_experts: int, top_k: int, cv: float = 0.0):
    """Expected distinct experts of one layer that `tokens` independently routed tokens touch (numpy arrays work)."""
    if cv <= 0.0:
        return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)
    if isinstance(tokens, np.ndarray):
        whole = np.rint(tokens)
        if tokens.size and np.array_equal(whole, tokens) and 0 <= whole.min() and whole.max() <= TABLE_MAX:
            table = _distinct_table(n_experts, top_k, float(cv), int(whole.max()))
            return table[whole.astype(np.int64)]
        untouched = 1.0 - inclusion(n_experts, top_k, float(cv))
        return (1.0 - untouched ** tokens[..., None]).sum(axis=-1)
    return _distinct_one(float(tokens), n_experts, top_k, float(cv))


_TABLES: dict[tuple[int, int, float], np.ndarray] = {}
TABLE_ROWS = 1024  # token counts computed at a time (rows x experts floats of scratch)
TABLE_MAX = 1 << 17  # whole token counts up to this are looked up (a table of <= 1 MiB); larger ones computed


def _distinct_table(n_experts: int, top_k: int, cv: float, upto: int) -> np.ndarray:
    """(upto + 1 or more,) distinct_experts of every whole token count 0..upto, grown in place as larger counts are
    asked for: a scheduler that prices every candidate step size each step (the prefix policy's sps_curve) would
    otherwise raise E inclusion probabilities to each count's power, every step."""
    key = (n_experts, top_k, cv)
    table = _TABLES.get(key, np.zeros(0))
    if len(table) > upto:
        return table
    untouched = 1.0 - inclusion(n_experts, top_k, cv)  # (E,)
    size = max(upto + 1, 2 * len(table), TABLE_ROWS)
    parts = [table]
    for start in range(len(table), size, TABLE_ROWS):
        counts = np.arange(start, min(start + TABLE_ROWS, size), dtype=np.float64)  # (rows,)
        parts.append((1.0 - untouched ** counts[:, None]).sum(axis=-1))  # (rows,)
    table = np.concatenate(parts)
    table.setflags(write=False)
    _TABLES[key] = table
    return table


@lru_cache(maxsize=65536)
def _distinct_one(tokens: float, n_experts: int, top_k: int, cv: float) -> float:
    """distinct_experts of one token count, memoised: a simulation prices the same step sizes over and over."""
    return float((1.0 - (1.0 - inclusion(n_experts, top_k, cv)) ** tokens).sum())


def concentration(p: np.ndarray) -> float:
    """1 - H(p) / ln E: 0 for uniform shares, 1 for one expert taking every selection."""
    p = np.asarray(p, dtype=np.float64)
    q = p[p > 0]
    return float(1.0 + (q * np.log(q)).sum() / np.log(len(p)))


def coverage_experts(p: np.ndarray, target: float = 0.9) -> int:
    """How many of the hottest experts it takes to hold `target` of the selections."""
    cum = np.cumsum(np.sort(np.asarray(p))[::-1])
    return int(np.searchsorted(cum, target - 1e-12) + 1)


def sampling_bias(n_experts: int, selections: float) -> float:
    """How much more concentrated a trace of `selections` draws reads than its distribution (Miller-Madow)."""
    return (n_experts - 1) / (2.0 * selections * np.log(n_experts)) if selections else 0.0


def cv_for_concentration(target: float, n_experts: int, selections: float | None = None) -> float:
    """The cv whose popularity has concentration `target` (less the finite-trace bias when `selections`, the
    trace's tokens x k, is given); 0 when the target is at or under uniform."""
    goal = target - (sampling_bias(n_experts, selections) if selections else 0.0)
    if goal <= 0.0:
        return 0.0
    return float(brentq(lambda c: concentration(popularity(n_experts, c)) - goal, 1e-3, 10.0, xtol=1e-6))
