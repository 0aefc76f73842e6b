"""Dense anchor traces: a draft anchored at every position of the target's own greedy output.

    rows = anchor_steps(target, drafter, prompt_ids, output_ids, k=7)

One target forward over prompt + output gives the features at every position; the drafter then
proposes at each anchor t (context = prompt + output[:t], anchor = output[t]) and the draft is compared
with the known continuation output[t+1:]. accepted(t) is then known for every t, which makes the
simulator's replay exact for any verify-length policy under greedy decoding (DESIGN.md).
verify_ms is NaN in these rows: no per-anchor verify pass exists.
"""
from __future__ import annotations

import math

import torch

from real.decode import StepInfo
from real.drafters.base import Drafter
from real.targets import Target
from real.timing import now_ms


@torch.inference_mode()
def anchor_steps(target: Target, drafter: Drafter, prompt_ids: list[int], output_ids: list[int],
                 k: int | None = None) -> list[StepInfo]:
    k = k or drafter.block_size
    features = None
    if drafter.needs_features:
        full = torch.tensor([list(prompt_ids) + list(output_ids)])  # [1, P + n]
        out = target.forward(full, None, with_features=True, last_logits_only=True)
        features = drafter.select_features(out.features, out.last_hidden)[0]  # [P+n, F]
    n_prompt = len(prompt_ids)
    state = drafter.start(list(prompt_ids), features[:n_prompt] if features is not None else None)
    steps = []
    # The last output token has no known continuation, so anchors stop one short of the end.
    for t in range(len(output_ids) - 1):
        anchor = output_ids[t]
        t0 = now_ms(target.device)
        proposal = drafter.propose(state, anchor, k, 0.0, None)
        draft_ms = now_ms(target.device) - t0
        truth = output_ids[t + 1: t + 1 + k]
        draft = proposal.tokens.tolist()[: len(truth)]  # near the end only the known continuation counts
        confidence = proposal.confidence.float().tolist()[: len(draft)]
        match = [float(d == truth[i]) for i, d in enumerate(draft)]
        accepted = 0
        while accepted < len(match) and match[accepted] == 1.0:
            accepted += 1
        steps.append(StepInfo(context_len=n_prompt + t, k=len(draft), accepted=accepted, accept_prob=match,
                              confidence=confidence, draft_ms=draft_ms,
                              verify_ms=math.nan))
        step_features = features[n_prompt + t: n_prompt + t + 1] if features is not None else None
        drafter.commit(state, [anchor], step_features)
    return steps
