"""The policy interface: pick each request's verify length l_r in 0..gamma for one engine step.

A policy sees what a real engine sees: the drafter's per-position confidences conf[R, gamma] (conditional
survival, i.e. P(position j accepted | all earlier accepted)), the step's token budget, the engine's SPS
curve for this batch, and -- after the step -- the observed accepted counts (as a real engine logs them).
It never sees the outcomes of the step it is planning.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

SpsFn = Callable[[np.ndarray], np.ndarray]  # decode tokens in the step (R + sum l) -> steps per second


class Policy(ABC):
    name = "base"
    needs_conf = True  # False: the replica skips asking the drafter for confidences
    spec = True  # False: no drafter runs (AR), so the cost model omits the draft pass

    def __init__(self, max_draft: int):
        self.max_draft = max_draft

    @abstractmethod
    def choose(self, conf: np.ndarray | None, n: int, budget: int, sps: SpsFn) -> np.ndarray:
        """Verify lengths [n] for this step from the drafters' confidences (never outcomes)."""

    def max_verify(self) -> int:
        """Most draft tokens a request may verify in one step (the KV slots a step reserves for them)."""
        return self.max_draft if self.spec else 0

    def observe(self, lengths: np.ndarray, accepted: np.ndarray) -> None:
        """Called after each step with what the engine logged (past outcomes only)."""


def trim_to_budget(lengths: np.ndarray, budget: int) -> np.ndarray:
    """Cut verify lengths so that sum(lengths) <= budget, keeping them as even as possible."""
    total = int(lengths.sum())
    if total <= budget:
        return lengths
    n = len(lengths)
    if budget <= 0 or n == 0:
        return np.zeros_like(lengths)
    # largest cap c with sum(min(l, c)) <= budget, then hand the remainder to the first longer ones
    srt = np.sort(lengths)
    c = 0
    for cap in range(int(srt[-1]), -1, -1):
        if np.minimum(srt, cap).sum() <= budget:
            c = cap
            break
    out = np.minimum(lengths, c)
    extra = budget - int(out.sum())
    if extra > 0:
        idx = np.flatnonzero(lengths > c)[:extra]
        out[idx] += 1
    return out
