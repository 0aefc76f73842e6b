"""DFlash drafter: the same parallel backbone as DSpark without Markov or confidence head, CE only.

    spec = DrafterSpec(name="dflash", method="dflash", block_size=7, num_layers=5)
    drafter = DFlashDrafter.from_spec(spec, target, run.path("drafters", "dflash"))

Equivalent to DSpark with markov_rank 0 and no confidence head (tests/real/test_drafters.py checks it);
its per-slot confidence is the draft probability of the chosen token. With block_layout "vllm" its block is
vLLM's [anchor, mask x k] (real/drafters/backbone.py), and real/export_vllm.py exports it to vLLM's DFlash.
"""
from __future__ import annotations

import torch

from real.drafters.backbone import ParallelDrafter, ParallelDraftModel
from real.drafters.layers import FrozenIO, draft_dims


class DFlashDrafter(ParallelDrafter):
    method = "dflash"

    @classmethod
    def build_model(cls, spec, target, d2t: torch.Tensor) -> ParallelDraftModel:
        dims = draft_dims(target, spec, vocab_size=d2t.numel())
        dims.markov_rank, dims.confidence_head = 0, False
        return ParallelDraftModel(dims, FrozenIO(target, d2t), target.mask_token_id).to(target.device)
