"""MTP-1: one multi-token-prediction draft per step (the production baseline of the paper's Fig. 7).

Same mechanics as fixed_k with k = 1; its acceptance comes from the policy's `method` traces (e.g. mtp) or
its `alpha`, so that the baseline replays its own drafter rather than DSpark's.
"""
from __future__ import annotations

from sim.policies.fixed_k import FixedKPolicy


class MTPPolicy(FixedKPolicy):
    name = "mtp"

    def __init__(self, max_draft: int):
        super().__init__(max_draft, k=1)
