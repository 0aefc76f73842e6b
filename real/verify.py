"""Lossless verification of drafts against target logits, batched over requests of different lengths.

    result = verify(target_logits, draft_tokens, draft_lens, temperature=0.0)          # greedy
    result = verify(target_logits, draft_tokens, draft_lens, 1.0, draft_probs, generator=g, eos_ids={1})

Greedy (T = 0): a draft token is accepted iff it equals the target's argmax; the next token is the
argmax after the accepted prefix. Sampling (Leviathan et al. / Chen et al.): accept x with probability
min(1, p(x)/q(x)); at the first rejection sample from norm(max(0, p - q)); if all are accepted, a bonus
token from p. An accepted EOS ends the round (no bonus). q=None means a one-hot (deterministic) draft.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

GREEDY_EPS = 1e-5  # temperatures below this are greedy, as in DeepSpec
NO_TOKEN = -1  # next_tokens value when an accepted EOS ended the round


@dataclass
class VerifyResult:
    accepted: torch.Tensor  # [B] long, accepted prefix length 0..len_b
    next_tokens: torch.Tensor  # [B] long, recovered or bonus token; NO_TOKEN after an accepted EOS
    accept_prob: torch.Tensor  # [B, K] float, min(1, p/q) per drafted position (0/1 under greedy)
    eos_hit: torch.Tensor  # [B] bool, the round ended on an accepted EOS


def _valid_mask(draft_lens: torch.Tensor, k: int) -> torch.Tensor:
    # [B, K] True where position j < len_b
    return torch.arange(k, device=draft_lens.device)[None, :] < draft_lens[:, None]


def _prefix_length(ok: torch.Tensor) -> torch.Tensor:
    # ok: [B, K] bool -> [B] number of leading True values
    return torch.cumprod(ok.long(), dim=1).sum(dim=1)


def _truncate_at_eos(draft_tokens: torch.Tensor, accepted: torch.Tensor, eos_ids: set[int] | None):
    """Cut each accepted prefix just after its first EOS; returns (accepted, eos_hit)."""
    batch, k = draft_tokens.shape
    eos_hit = torch.zeros(batch, dtype=torch.bool, device=draft_tokens.device)
    if not eos_ids or k == 0:
        return accepted, eos_hit
    is_eos = torch.isin(draft_tokens, torch.tensor(sorted(eos_ids), device=draft_tokens.device))
    in_prefix = torch.arange(k, device=draft_tokens.device)[None, :] < accepted[:, None]
    eos_in_prefix = is_eos & in_prefix
    eos_hit = eos_in_prefix.any(dim=1)
    first_eos = torch.argmax(eos_in_prefix.long(), dim=1)
    accepted = torch.where(eos_hit, first_eos + 1, accepted)
    return accepted, eos_hit


def verify_greedy(target_logits: torch.Tensor, draft_tokens: torch.Tensor, draft_lens: torch.Tensor,
                  eos_ids: set[int] | None = None) -> VerifyResult:
    # target_logits: [B, K+1, V]; draft_tokens: [B, K] (padded); draft_lens: [B]
    k = draft_tokens.shape[1]
    target_argmax = target_logits.argmax(dim=-1)  # [B, K+1]
    match = (draft_tokens == target_argmax[:, :k]) & _valid_mask(draft_lens, k)  # [B, K]
    accepted = _prefix_length(match)
    accepted, eos_hit = _truncate_at_eos(draft_tokens, accepted, eos_ids)
    next_tokens = target_argmax.gather(1, accepted[:, None]).squeeze(1)
    next_tokens = torch.where(eos_hit, torch.full_like(next_tokens, NO_TOKEN), next_tokens)
    return VerifyResult(accepted, next_tokens, match.float(), eos_hit)


def verify_sampling(target_logits: torch.Tensor, draft_tokens: torch.Tensor, draft_lens: torch.Tensor,
                    temperature: float, draft_probs: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, eos_ids: set[int] | None = None) -> VerifyResult:
    # target_logits: [B, K+1, V]; draft_tokens: [B, K]; draft_probs: [B, K, V] or None (one-hot q)
    batch, k = draft_tokens.shape
    p = torch.softmax(target_logits.float() / temperature, dim=-1)  # [B, K+1, V]
    p_draft = p[:, :k].gather(2, draft_tokens[..., None]).squeeze(2)  # [B, K] p(x_j)
    if draft_probs is None:
        q_draft = torch.ones_like(p_draft)
    else:
        q_draft = draft_probs.float().gather(2, draft_tokens[..., None]).squeeze(2).clamp_min(1e-8)
    valid = _valid_mask(draft_lens, k)
    accept_prob = torch.where(valid, (p_draft / q_draft).clamp(max=1.0), torch.zeros_like(p_draft))
    uniforms = torch.rand(batch, k, generator=generator, device=p.device)  # [B, K]
    accepted = _prefix_length((uniforms < accept_prob) & valid)
    accepted, eos_hit = _truncate_at_eos(draft_tokens, accepted, eos_ids)

    rows = torch.arange(batch, device=p.device)
    p_next = p[rows, accepted]  # [B, V] target distribution at the first unaccepted position
    rejected = accepted < draft_lens  # else: every draft accepted -> bonus token from p
    residual = p_next.clone()
    if rejected.any():
        j = accepted.clamp(max=max(k - 1, 0))
        if draft_probs is None:
            q_next = torch.zeros_like(p_next)
            q_next[rows, draft_tokens[rows, j]] = 1.0
        else:
            q_next = draft_probs[rows, j].float()
        corrected = (p_next - q_next).clamp_min(0.0)
        mass = corrected.sum(dim=-1, keepdim=True)
        corrected = torch.where(mass > 1e-8, corrected / mass.clamp_min(1e-12), p_next)
        residual = torch.where(rejected[:, None], corrected, p_next)
    next_tokens = torch.multinomial(residual, 1, generator=generator).squeeze(1)
    next_tokens = torch.where(eos_hit, torch.full_like(next_tokens, NO_TOKEN), next_tokens)
    return VerifyResult(accepted, next_tokens, accept_prob, eos_hit)


def verify(target_logits: torch.Tensor, draft_tokens: torch.Tensor, draft_lens: torch.Tensor,
           temperature: float, draft_probs: torch.Tensor | None = None,
           generator: torch.Generator | None = None, eos_ids: set[int] | None = None) -> VerifyResult:
    if temperature < GREEDY_EPS:
        return verify_greedy(target_logits, draft_tokens, draft_lens, eos_ids)
    return verify_sampling(target_logits, draft_tokens, draft_lens, temperature, draft_probs, generator, eos_ids)


def sample_token(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Target's own next-token choice; logits: [B, V] -> [B]. Argmax when greedy."""
    if temperature < GREEDY_EPS:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
