"""real/bench.py's side-by-side comparisons with transformers' assisted generation (tiny models)."""
import pytest

from real.bench import hf_assisted
from real.targets import tiny_target

PROMPTS = [[1000, 2000, 3000, 4000, 1000, 2000], [5, 6, 7, 8, 9, 10, 11, 12]]


@pytest.mark.usefixtures("one_thread")
def test_assisted_generation_with_a_small_assistant_is_greedy_lossless(tiny_qwen3):
    assistant = tiny_target("qwen3", seed=7, num_layers=2)  # another LM sharing the Qwen3 tokenizer
    row = hf_assisted(tiny_qwen3, PROMPTS, 12, "assistant", assistant_model=assistant.model)
    assert row["prompts"] == 2 and row["identical_prompts"] == 2  # fp32 greedy: same tokens as generate()
    assert row["hf_assistant_speedup"] > 0 and row["hf_greedy_tokens_per_s"] > 0


@pytest.mark.usefixtures("one_thread")
def test_prompt_lookup_row(tiny_qwen3):
    row = hf_assisted(tiny_qwen3, PROMPTS, 12, "prompt_lookup", prompt_lookup_num_tokens=4)
    assert row["identical_prompts"] == 2 and "hf_prompt_lookup_tokens_per_s" in row
