"""The target's KV cache is really used: a cached one-token step gives the logits of a full forward
(fp32, tiny Qwen3 and Gemma3), whatever name this transformers version gives the cache argument."""
import pytest
import torch
from transformers import Qwen3ForCausalLM

from real.rng import device_generator
from real.targets import Target, cache_kwarg, tiny_target

pytestmark = pytest.mark.usefixtures("one_thread")


def cached_vs_full(target: Target, n: int = 12, step_tokens: int = 1) -> float:
    ids = torch.randint(100, 5000, (1, n), generator=device_generator("cpu", 0))  # [1, n]
    cache = target.new_cache()
    target.forward(ids[:, :-step_tokens], cache)
    target.crop(cache, 0)
    step = target.forward(ids[:, -step_tokens:], cache).logits[0]  # [step_tokens, V]
    full = target.forward(ids).logits[0, -step_tokens:]
    return float((step - full).abs().max())


@pytest.mark.parametrize("kind", ["qwen3", "gemma3"])
@pytest.mark.parametrize("step_tokens", [1, 4])
def test_cached_step_equals_full_forward(kind, step_tokens):
    # gemma3's sliding window is 16: 24 tokens cross it
    assert cached_vs_full(tiny_target(kind), n=24, step_tokens=step_tokens) < 1e-4


class OldStyleQwen3(Qwen3ForCausalLM):
    """transformers 5.17's signature: the cache is `past_key_values`, an unknown `cache=` is swallowed."""

    def forward(self, input_ids=None, past_key_values=None, **kwargs):
        kwargs.pop("cache", None)  # what 5.17 did with the new name: nothing
        return super().forward(input_ids=input_ids, **{cache_kwarg(Qwen3ForCausalLM): past_key_values},
                               **kwargs)


def test_cache_reaches_a_model_whose_forward_names_it_past_key_values():
    tiny = tiny_target("qwen3")
    old = OldStyleQwen3(tiny.model.config)
    old.load_state_dict(tiny.model.state_dict())
    target = Target(old, tiny.tokenizer, "old-style")
    assert target.cache_kwarg == "past_key_values"
    assert cached_vs_full(target) < 1e-4
