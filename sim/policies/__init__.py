"""Policy registry: kind -> factory. A new policy is one file plus one line here (DESIGN.md rule 2) and its
name in lab.config_sim.POLICY_KINDS, the one list of names (lab cannot import sim; a test keeps the two equal).

    policy = make_policy(PolicySpec(kind="prefix"), max_draft=7)
"""
from __future__ import annotations

from sim.policies.ar import ARPolicy
from sim.policies.base import Policy, trim_to_budget
from sim.policies.fixed_k import FixedKPolicy
from sim.policies.mtp import MTPPolicy
from sim.policies.prefix import PrefixPolicy, prefix_schedule
from sim.policies.prefix_async import PrefixAsyncPolicy
from sim.policies.smartspec import SmartSpecPolicy
from sim.policies.threshold import ThresholdPolicy

POLICIES = {
    "ar": lambda s, g: ARPolicy(g),
    "mtp": lambda s, g: MTPPolicy(g),
    "fixed_k": lambda s, g: FixedKPolicy(g, s.k),
    "threshold": lambda s, g: ThresholdPolicy(g, s.threshold),
    "smartspec": lambda s, g: SmartSpecPolicy(g, s.k0_bonus, s.ema),
    "prefix": lambda s, g: PrefixPolicy(g),
    "prefix_async": lambda s, g: PrefixAsyncPolicy(g, s.stale_steps),
}


def make_policy(spec, max_draft: int) -> Policy:
    g = min(spec.max_draft or max_draft, max_draft)
    return POLICIES[spec.kind](spec, g)


__all__ = ["POLICIES", "Policy", "make_policy", "prefix_schedule", "trim_to_budget"]
