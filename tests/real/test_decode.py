"""The decode loop: greedy identity with the target's own generate() in fp32, and KV rollback."""
import pytest
import torch

from real.decode import autoregressive_decode, speculative_decode
from real.drafters.ngram import NgramDrafter
from tests.real.drafters_for_tests import NoisyOracleDrafter

pytestmark = pytest.mark.usefixtures("one_thread")

SUBJECTS = ["the ocean", "prime numbers", "a red bicycle", "Paris in spring", "binary search", "coffee",
            "the moon landing", "a quiet library", "recursion", "volcanoes"]


def prompts(tokenizer, n):
    texts = [f"Prompt {i}: write {i % 4 + 2} sentences about {SUBJECTS[i % len(SUBJECTS)]}, then count to {i}."
             for i in range(n)]
    return [tokenizer.encode(t) for t in texts]


def hf_greedy(target, ids, max_new):
    """generate()'s greedy output. The attention mask is given: generate() infers one from pad_token_id, and
    Qwen3's token 0 is "!", so a prompt ending in "!" had that token masked out and a different reference."""
    prompt = torch.tensor([ids])
    out = target.model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new,
                                do_sample=False, eos_token_id=sorted(target.eos_token_ids), pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("target_name", ["tiny_qwen3", "tiny_gemma3"])
def test_greedy_identity_30_prompts(target_name, request):
    """fp32: n-gram and noisy-oracle spec decoding equal generate() token for token on 30 prompts."""
    target = request.getfixturevalue(target_name)
    max_new = 32
    ngram = NgramDrafter("ngram", block_size=7, ngram_max=3, ngram_min=1)
    total_accepted = total_rejected = 0
    for i, ids in enumerate(prompts(target.tokenizer, 30)):
        reference = hf_greedy(target, ids, max_new)
        if i < 10:
            assert autoregressive_decode(target, ids, max_new).tokens == reference
        assert speculative_decode(target, ngram, ids, max_new).tokens == reference, f"ngram, prompt {i}"
        oracle = NoisyOracleDrafter(reference, len(ids), seed=i)
        result = speculative_decode(target, oracle, ids, max_new)
        assert result.tokens == reference, f"noisy oracle, prompt {i}"
        total_accepted += sum(s.accepted for s in result.steps)
        total_rejected += sum(s.accepted < s.k for s in result.steps)
    assert total_accepted > 300 and total_rejected > 100  # both paths were exercised (611 / 263 measured)


@pytest.mark.parametrize("target_name", ["tiny_qwen3", "tiny_gemma3"])
def test_kv_rollback_equals_fresh_forward(target_name, request):
    """After verifying 6 drafts and rejecting 4, the cache continues exactly like a fresh forward pass,
    for Gemma3 well past its 16-token sliding window."""
    target = request.getfixturevalue(target_name)
    gen = torch.Generator().manual_seed(0)
    context = torch.randint(0, 5000, (1, 50), generator=gen)  # 50 > sliding window 16
    drafts = torch.randint(0, 5000, (1, 6), generator=gen)
    cache = target.new_cache()
    target.forward(context, cache)
    target.crop(cache, 0)
    target.forward(drafts, cache)
    target.crop(cache, 4)  # keep 2 of the 6
    probe = torch.randint(0, 5000, (1, 3), generator=gen)
    continued = target.forward(probe, cache).logits
    fresh = target.forward(torch.cat([context, drafts[:, :2], probe], 1)).logits[:, -3:]
    torch.testing.assert_close(continued, fresh, rtol=1e-4, atol=1e-4)
    assert cache.get_seq_length() == 50 + 2 + 3


def test_sampling_run_is_reproducible(tiny_qwen3):
    ids = prompts(tiny_qwen3.tokenizer, 1)[0]
    ngram = NgramDrafter("ngram", block_size=5)
    a = speculative_decode(tiny_qwen3, ngram, ids, 30, 1.0, torch.Generator().manual_seed(3))
    b = speculative_decode(tiny_qwen3, ngram, ids, 30, 1.0, torch.Generator().manual_seed(3))
    assert a.tokens == b.tokens and len(a.tokens) == 30


def test_step_records_are_consistent(tiny_qwen3):
    ids = prompts(tiny_qwen3.tokenizer, 1)[0]
    reference = hf_greedy(tiny_qwen3, ids, 30)
    result = speculative_decode(tiny_qwen3, NoisyOracleDrafter(reference, len(ids), seed=1), ids, 30)
    emitted = 1  # the token sampled at prefill
    for step in result.steps:
        assert 0 <= step.accepted <= step.k == len(step.accept_prob) == len(step.confidence)
        assert step.context_len == len(ids) + emitted - 1
        emitted += step.accepted + 1
    assert emitted >= 30
