"""MTP-1 drafter: a one-layer next-next-token module (DeepSeek-V3's MTP), the paper's production baseline.

    spec = DrafterSpec(name="mtp", method="mtp", block_size=1)
    drafter = MTPDrafter.from_spec(spec, target, run.path("drafters", "mtp"))

Entry t combines the target's hidden state at t with the embedding of token t+1 and predicts token t+2:
u = M([norm(h_t); norm(emb(x_(t+1)))]), one decoder layer, the frozen LM head. It drafts one token per
round by default (block_size 1); with block_size > 1 it chains, feeding its own output back. Trained
with CE on the regenerated tokens. h_t is the target's final hidden state (the LM head's input), so the
decode loop, the dense anchors and training hand it `select_features(tapped, final)` = final.
"""
from __future__ import annotations

from real.drafters.chain import ChainDrafter


class MTPDrafter(ChainDrafter):
    method = "mtp"
    feature_source = "final"

