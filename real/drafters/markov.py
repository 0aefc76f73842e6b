"""DSpark's Markov heads (vanilla / gated / rnn) and confidence head (dspark_spec.md §1.2, §1.4).

    head = MarkovHead(d=256, vocab=8192, rank=64, variant="vanilla")
    state = head.init_state(n)                                # [n, r] (rnn) or None
    bias, state = head.step(h_j, prev_draft_ids, state)       # [n, Vd] added to U_j = lm_head(h_j)
    conf_logit = ConfidenceHead(d, rank)(h_j, head.embed(prev))   # sigmoid -> c_j

The head factorises the first-order transition bias B ~ W1 W2 with W1 = Embedding(Vd+1, r) (the extra
row is for target tokens outside a reduced draft vocab) and W2 = Linear(r, Vd, no bias), so that
logits_j = U_j + W2 W1[x_(j-1)]. Training feeds ground-truth previous tokens; inference feeds the
sampled drafts, one position at a time.
"""
from __future__ import annotations

import torch
from torch import nn


class MarkovHead(nn.Module):
    def __init__(self, d: int, vocab: int, rank: int, variant: str = "vanilla"):
        super().__init__()
        if variant not in ("vanilla", "gated", "rnn"):
            raise ValueError(f"markov_variant {variant!r}: expected vanilla, gated or rnn")
        self.rank, self.variant = rank, variant
        self.w1 = nn.Embedding(vocab + 1, rank)
        self.w2 = nn.Linear(rank, vocab, bias=False)
        if variant == "gated":
            self.gate = nn.Linear(d + rank, rank)
        elif variant == "rnn":
            self.joint_proj = nn.Linear(2 * rank + d, 3 * rank)

    def embed(self, prev: torch.Tensor) -> torch.Tensor:
        """prev: [...] draft ids (Vd = out of vocab) -> [..., r]."""
        return self.w1(prev)

    def init_state(self, n: int, device, dtype=torch.float32) -> torch.Tensor | None:
        return torch.zeros(n, self.rank, device=device, dtype=dtype) if self.variant == "rnn" else None

    def step(self, h: torch.Tensor, prev: torch.Tensor, state: torch.Tensor | None):
        """h: [n, d] block hidden at slot j; prev: [n] x_(j-1) draft ids -> (bias [n, Vd], state)."""
        e = self.w1(prev)  # [n, r]
        if self.variant == "vanilla":
            return self.w2(e), state
        if self.variant == "gated":
            g = torch.sigmoid(self.gate(torch.cat([h, e], dim=-1)))  # [n, r]
            return self.w2(g * e), state
        gate, cand, out = self.joint_proj(torch.cat([e, state.to(e.dtype), h], dim=-1)).chunk(3, dim=-1)
        g = torch.sigmoid(gate)
        state = g * state + (1 - g) * torch.tanh(cand)  # s_j = g s_(j-1) + (1-g) tanh(c)
        return self.w2(torch.tanh(out)), state


class ConfidenceHead(nn.Module):
    """c_j = sigmoid(w . [h_j ; W1[x_(j-1)]] + b): P(slot j accepted | all earlier accepted)."""

    def __init__(self, d: int, rank: int):
        super().__init__()
        self.proj = nn.Linear(d + rank, 1)

    def forward(self, h: torch.Tensor, prev_embed: torch.Tensor | None) -> torch.Tensor:
        """h: [..., d]; prev_embed: [..., r] or None (rank 0) -> logits [...] (apply sigmoid for c)."""
        x = h if prev_embed is None else torch.cat([h, prev_embed.to(h.dtype)], dim=-1)
        return self.proj(x).squeeze(-1)
