"""The decode loop: prefill -> draft -> verify -> accept -> KV rollback, one request at a time.

    result = speculative_decode(target, drafter, prompt_ids, max_new_tokens=128, temperature=0.0)
    result.tokens, result.steps          # emitted tokens; one StepInfo per verify round
    baseline = autoregressive_decode(target, prompt_ids, max_new_tokens=128, temperature=0.0)

Drafts are verified at the drafter's full block, so a trace row's shorter verify lengths are exact
prefix truncations of it (DESIGN.md). Output is cut to max_new_tokens; in fp32 greedy decoding the
result equals the target's own greedy output token for token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from real.drafters.base import Drafter
from real.targets import Target
from real.timing import now_ms
from real.verify import NO_TOKEN, sample_token, verify


@dataclass
class StepInfo:
    context_len: int  # KV length before this verify step
    k: int
    accepted: int
    accept_prob: list[float]
    confidence: list[float]
    draft_ms: float
    verify_ms: float


@dataclass
class DecodeResult:
    tokens: list[int]  # emitted tokens, at most max_new_tokens
    prefill_ms: float
    decode_ms: float  # wall time after prefill
    steps: list[StepInfo] = field(default_factory=list)

    @property
    def wall_ms(self) -> float:
        return self.prefill_ms + self.decode_ms


def _finish(tokens: list[int], max_new_tokens: int, eos_ids: set[int], stop_at_eos: bool) -> list[int]:
    out = tokens[:max_new_tokens]
    if stop_at_eos:
        for i, tok in enumerate(out):
            if tok in eos_ids:
                return out[: i + 1]
    return out


@torch.inference_mode()
def autoregressive_decode(target: Target, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                          generator: torch.Generator | None = None, stop_at_eos: bool = True) -> DecodeResult:
    """The baseline: one target forward per token, same sampling rule as the verifier's."""
    device, eos_ids = target.device, target.eos_token_ids
    cache = target.new_cache(max_len=len(prompt_ids) + max_new_tokens + 2)
    start = now_ms(device)
    logits = target.forward(torch.tensor([prompt_ids]), cache, last_logits_only=True).logits[:, -1]  # [1, V]
    target.crop(cache, 0)
    token = int(sample_token(logits, temperature, generator)[0])
    prefill_done = now_ms(device)
    tokens = [token]
    while len(tokens) < max_new_tokens and not (stop_at_eos and token in eos_ids):
        logits = target.forward(torch.tensor([[token]]), cache).logits[:, -1]
        target.crop(cache, 0)
        token = int(sample_token(logits, temperature, generator)[0])
        tokens.append(token)
    end = now_ms(device)
    return DecodeResult(tokens=tokens, prefill_ms=prefill_done - start, decode_ms=end - prefill_done)


@torch.inference_mode()
def speculative_decode(target: Target, drafter: Drafter, prompt_ids: list[int], max_new_tokens: int,
                       temperature: float = 0.0, generator: torch.Generator | None = None,
                       stop_at_eos: bool = True, block_size: int | None = None) -> DecodeResult:
    """Speculative decoding of one request; every verify round becomes one StepInfo."""
    device, eos_ids = target.device, target.eos_token_ids
    eos_for_verify = eos_ids if stop_at_eos else None
    k_full = block_size or drafter.block_size
    cache = target.new_cache(max_len=len(prompt_ids) + max_new_tokens + k_full + 2)
    start = now_ms(device)
    prefill = target.forward(torch.tensor([prompt_ids]), cache, with_features=drafter.needs_features,
                             last_logits_only=True)
    target.crop(cache, 0)
    anchor = int(sample_token(prefill.logits[:, -1], temperature, generator)[0])
    prompt_features = drafter.select_features(prefill.features, prefill.last_hidden)  # [1, P, F] or None
    prompt_features = prompt_features[0] if prompt_features is not None else None
    state = drafter.start(list(prompt_ids), prompt_features)
    prefill_done = now_ms(device)

    tokens, steps = [anchor], []
    finished = stop_at_eos and anchor in eos_ids
    while len(tokens) < max_new_tokens and not finished:
        context_len = len(prompt_ids) + len(tokens) - 1  # the anchor is not in the KV cache yet
        t0 = now_ms(device)
        proposal = drafter.propose(state, anchor, k_full, temperature, generator)
        t1 = now_ms(device)
        draft = proposal.tokens.to(device)  # [k]
        k = int(draft.numel())
        verify_input = torch.cat([torch.tensor([anchor], device=device), draft])[None]  # [1, k+1]
        out = target.forward(verify_input, cache, with_features=drafter.needs_features)
        probs = proposal.probs[None].to(device) if proposal.probs is not None else None  # [1, k, V]
        result = verify(out.logits, draft[None], torch.tensor([k], device=device), temperature, probs,
                        generator, eos_for_verify)
        accepted = int(result.accepted[0])
        target.crop(cache, k - accepted)  # keep the anchor and the accepted drafts
        t2 = now_ms(device)

        accepted_tokens = draft[:accepted].tolist()
        features = drafter.select_features(out.features, out.last_hidden)  # [1, k+1, F] or None
        features = features[0, : accepted + 1] if features is not None else None  # [a+1, F]
        drafter.commit(state, [anchor] + accepted_tokens, features)
        steps.append(StepInfo(context_len=context_len, k=k, accepted=accepted,
                              accept_prob=result.accept_prob[0].tolist(),
                              confidence=proposal.confidence.float().tolist(),
                              draft_ms=t1 - t0, verify_ms=t2 - t1))
        tokens.extend(accepted_tokens)
        next_token = int(result.next_tokens[0])
        if next_token == NO_TOKEN:  # an accepted EOS ended the round
            break
        tokens.append(next_token)
        anchor = next_token
        finished = stop_at_eos and next_token in eos_ids
    end = now_ms(device)
    return DecodeResult(tokens=_finish(tokens, max_new_tokens, eos_ids, stop_at_eos),
                        prefill_ms=prefill_done - start, decode_ms=end - prefill_done, steps=steps)
