"""The drafter protocol: what the decode loop needs from any draft method.

A drafter keeps per-request state in a DraftState it creates in `start`. Each round the decode loop
calls `propose(state, anchor, k, temperature, generator)` and, after verification, `commit(state,
tokens, features)` with the tokens that entered the context and the target features at those tokens
(`select_features` says which: the tapped layers, or the final hidden state for MTP).

    state = drafter.start(prompt_ids, prompt_features)   # prompt_features: [P, n_tap*d] or None
    proposal = drafter.propose(state, anchor, k=7, temperature=0.0, generator=g)
    drafter.commit(state, accepted_tokens, accepted_features)

Anchor = the last emitted token, not yet fed through the target; the first draft predicts the token
after it. A new method is one file under real/drafters/ plus one line in real/drafters/__init__.py.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch


@dataclass
class DraftState:
    """Per-request context a drafter sees: token history and target features where known."""

    tokens: list[int]  # every token in the context, prompt first, the anchor not included
    features: torch.Tensor | None = None  # [n, n_tap * d] target features for tokens[:n]
    extra: dict = field(default_factory=dict)  # method-specific (KV caches, hidden states)


@dataclass
class Proposal:
    tokens: torch.Tensor  # [k] long, the drafted continuation after the anchor
    probs: torch.Tensor | None  # [k, V] draft distribution q each token was sampled from; None = one-hot
    confidence: torch.Tensor  # [k] float in (0, 1), drafter's own P(position accepted | earlier accepted)


class Drafter(ABC):
    """Base class; subclasses override `propose` and, if they keep caches, `start`/`commit`."""

    method: str = "base"
    needs_features: bool = False  # True: the loop computes target features for it
    feature_source: str = "tapped"  # "tapped": the tapped layers, concatenated; "final": the final hidden state

    def __init__(self, name: str, block_size: int):
        self.name = name
        self.block_size = block_size

    @classmethod
    def select_features(cls, tapped: torch.Tensor | None, final: torch.Tensor | None) -> torch.Tensor | None:
        """What this drafter reads of a target forward: tapped [..., n_tap*d] or final hidden [..., d]."""
        return final if cls.feature_source == "final" else tapped

    def start(self, prompt_ids: list[int], prompt_features: torch.Tensor | None) -> DraftState:
        return DraftState(tokens=list(prompt_ids), features=prompt_features)

    @abstractmethod
    def propose(self, state: DraftState, anchor: int, k: int, temperature: float,
                generator: torch.Generator | None) -> Proposal:
        """Draft k tokens after `anchor`; sample with `generator` when temperature > 0."""

    def commit(self, state: DraftState, tokens: list[int], features: torch.Tensor | None) -> None:
        """tokens entered the context (the old anchor first); features: [len(tokens), n_tap*d] or None."""
        state.tokens.extend(tokens)
        if features is not None:
            state.features = features if state.features is None else torch.cat([state.features, features], 0)
