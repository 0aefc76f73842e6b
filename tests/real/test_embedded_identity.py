"""Slow: greedy identity on the real embedded Gemma3-270M in fp32 (builds the cache on first use)."""
import pytest
import torch

from lab.config import DatasetSpec, TargetSection
from real.decode import speculative_decode
from real.drafters.ngram import NgramDrafter
from real.prompts import encode_prompt, load_dataset
from real.targets import load_target


@pytest.mark.slow
@pytest.mark.parametrize("cpu_linear", ["on", "off"])
def test_embedded_gemma3_ngram_greedy_identity_fp32(cpu_linear):
    """on: every verify step's linears run as W @ x^T (real/cpu_linear.py) while decode steps use F.linear."""
    target = load_target(TargetSection(name="gemma3-270m", dtype="float32", cpu_linear=cpu_linear))
    assert target.cpu_linear["applied"] == (cpu_linear == "on")
    prompts = load_dataset(DatasetSpec(name="humaneval", cap=6), shuffle_seed=0)
    drafter = NgramDrafter("ngram", block_size=7)
    accepted = 0
    for prompt in prompts:
        ids = encode_prompt(target.tokenizer, prompt, chat_template=False, max_prompt_tokens=256)
        reference = target.model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                          eos_token_id=sorted(target.eos_token_ids))[0, len(ids):].tolist()
        result = speculative_decode(target, drafter, ids, 32)
        assert result.tokens == reference, prompt.prompt_id
        accepted += sum(s.accepted for s in result.steps)
    assert accepted > 0
