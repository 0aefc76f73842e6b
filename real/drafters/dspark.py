"""DSpark drafter: the parallel KV-injected backbone + Markov head + confidence head (dspark_spec.md §1).

    spec = DrafterSpec(name="dspark", method="dspark", block_size=7, num_layers=5, markov_rank=256)
    drafter = DSparkDrafter.from_spec(spec, target, run.path("drafters", "dspark"))   # after training

One backbone pass gives k slot hiddens h_j; logits_j = lm_head(h_j) + W2 W1[x_(j-1)] (x_0 = anchor)
are sampled slot by slot (argmax when greedy); the corrected softmax is the q used in verification;
the confidence head gives c_j = sigmoid(w . [h_j ; W1[x_(j-1)]] + b). Trained with 0.1 CE + 0.9 L1 +
1.0 BCE (real/losses.py).
"""
from __future__ import annotations

import torch

from real.drafters.backbone import ParallelDrafter, ParallelDraftModel
from real.drafters.layers import FrozenIO, draft_dims


class DSparkDrafter(ParallelDrafter):
    method = "dspark"

    @classmethod
    def build_model(cls, spec, target, d2t: torch.Tensor) -> ParallelDraftModel:
        dims = draft_dims(target, spec, vocab_size=d2t.numel())
        dims.markov_rank = spec.markov_rank
        dims.markov_variant = spec.markov_variant
        dims.confidence_head = spec.confidence_head
        return ParallelDraftModel(dims, FrozenIO(target, d2t), target.mask_token_id).to(target.device)
