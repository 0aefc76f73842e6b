"""EAGLE-3 drafter as DeepSpec trains it: fused tapped features, one decoder layer over [emb(x); h],
training-time test unrolled over the block with 0.8^i step decay and soft CE to the target's
distribution, chain drafting at inference (dspark_spec.md §2).

    spec = DrafterSpec(name="eagle3", method="eagle3", block_size=7)
    drafter = Eagle3Drafter.from_spec(spec, target, run.path("drafters", "eagle3"))

DeepSpec fuses the same 5 layers as DSpark (fc: 5d -> d) and keeps the full vocabulary; the original
EAGLE-3 fuses 3 layers and uses a 32k draft vocabulary (draft_vocab_size here) and a dynamic tree.
"""
from __future__ import annotations

from real.drafters.chain import ChainDrafter


class Eagle3Drafter(ChainDrafter):
    method = "eagle3"

