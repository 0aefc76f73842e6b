"""Benchmarks of the foundation on a real target (BENCHMARKS.md quotes its output).

    python -m real.bench --target gemma3-270m --prompts 8 --max-new-tokens 96 --out bench.json

Measures, side by side in one process and per dtype (fp32, bf16):
- prefill throughput (tokens/s over a 256-token prompt), 1-token decode and 16-token verify throughput;
- n-gram spec decoding vs our own autoregressive decoding on the same PyPI prompts (wall-clock ratio)
  and the fraction of prompts whose output is identical (bf16 divergence is measured, never hidden);
- transformers' own prompt-lookup assisted generation vs its own greedy generate(), same prompts;
- with --assistant PATH, transformers' assisted generation with that small LM the same way (on a GPU:
  Qwen3-0.6B assisting Qwen3-4B/8B, next to the lab's own drafters; none exists for Gemma3-270M).
"""
from __future__ import annotations

import argparse
import json

import torch
from tqdm import tqdm

from lab.arguments import ArgumentParser, positive_int
from lab.config import DatasetSpec, PromptsSection, TargetSection
from lab.errors import exit_on_user_error
from real.decode import autoregressive_decode, speculative_decode
from real.drafters.ngram import NgramDrafter
from real.prompts import encode_prompt, load_prompt_sets
from real.rng import device_generator
from real.targets import load_target
from real.timing import stopwatch


def timed(fn, repeats: int = 3, device=None) -> float:
    """Median wall seconds of fn(), after one warm-up call, the device synchronized around each."""
    fn()
    times = []
    for _ in range(repeats):
        with stopwatch(device) as watch:
            fn()
        times.append(watch.seconds)
    return sorted(times)[len(times) // 2]


def forward_throughput(target, context_len: int = 256) -> dict:
    ids = torch.randint(100, 5000, (1, context_len), generator=device_generator("cpu", 0))

    def prefill():  # as the decode loop prefills: logits of the last position only
        target.forward(ids, target.new_cache(), last_logits_only=True)

    cache = target.new_cache()
    target.forward(ids, cache)
    target.crop(cache, 0)

    def step(n):
        target.forward(ids[:, :n], cache)
        target.crop(cache, n)  # roll back so every repeat sees the same context

    prefill_s, decode_s, verify_s = timed(prefill), timed(lambda: step(1), 7), timed(lambda: step(16), 7)
    return {"prefill_tokens_per_s": context_len / prefill_s, "decode_tokens_per_s": 1 / decode_s,
            "verify16_ms": verify_s * 1000, "decode_ms": decode_s * 1000,
            "verify16_tokens_per_s": 16 / verify_s, "verify16_over_decode_time": verify_s / decode_s}


def spec_vs_ar(target, encoded, max_new: int, drafter) -> dict:
    ar_s = spec_s = ar_tokens = spec_tokens = identical = rounds = accepted = 0
    for ids in tqdm(encoded, desc="ngram vs AR", leave=False):
        base = autoregressive_decode(target, ids, max_new)
        spec = speculative_decode(target, drafter, ids, max_new)
        ar_s += base.wall_ms / 1000
        spec_s += spec.wall_ms / 1000
        ar_tokens += len(base.tokens)
        spec_tokens += len(spec.tokens)
        identical += spec.tokens == base.tokens
        rounds += len(spec.steps)
        accepted += sum(s.accepted for s in spec.steps)
    return {"ar_tokens_per_s": ar_tokens / ar_s, "ngram_tokens_per_s": spec_tokens / spec_s,
            "ngram_speedup": (spec_tokens / spec_s) / (ar_tokens / ar_s), "tau": (accepted + rounds) / rounds,
            "identical_prompts": identical, "prompts": len(encoded)}


def hf_assisted(target, encoded, max_new: int, label: str, **assist) -> dict:
    """transformers' assisted generation (`assist`: prompt_lookup_num_tokens=k, or assistant_model=a
    small LM sharing the tokenizer) vs its own greedy generate(), same prompts, side by side."""
    plain_s = assisted_s = plain_tokens = assisted_tokens = identical = 0
    eos = sorted(target.eos_token_ids)
    for ids in tqdm(encoded, desc=f"transformers {label}", leave=False):
        inputs = torch.tensor([ids])
        common = {"max_new_tokens": max_new, "do_sample": False, "eos_token_id": eos, "pad_token_id": eos[0]}
        with stopwatch(target.device) as plain_watch:
            plain = target.model.generate(inputs, **common)[0, len(ids):].tolist()
        with stopwatch(target.device) as assisted_watch:
            assisted = target.model.generate(inputs, **assist, **common)[0, len(ids):].tolist()
        plain_s += plain_watch.seconds
        assisted_s += assisted_watch.seconds
        plain_tokens += len(plain)
        assisted_tokens += len(assisted)
        identical += plain == assisted
    return {"hf_greedy_tokens_per_s": plain_tokens / plain_s, f"hf_{label}_tokens_per_s": assisted_tokens / assisted_s,
            f"hf_{label}_speedup": (assisted_tokens / assisted_s) / (plain_tokens / plain_s),
            "identical_prompts": identical, "prompts": len(encoded)}


@exit_on_user_error("python -m real.bench")
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m real.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="gemma3-270m", help="embedded or tiny-* name, or a label with --target-path")
    parser.add_argument("--target-path", default=None, help="local checkpoint directory of the target")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--prompts", type=positive_int, default=8, help="prompts per dataset")
    parser.add_argument("--datasets", default="humaneval,sharegpt")
    parser.add_argument("--max-new-tokens", type=positive_int, default=96)
    parser.add_argument("--block-size", type=positive_int, default=7)
    parser.add_argument("--chat-template", action="store_true")
    parser.add_argument("--assistant", default=None,
                        help="local path of a small LM with the target's tokenizer (e.g. Qwen3-0.6B for "
                             "Qwen3-8B): adds transformers' assisted generation with it, side by side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    section = PromptsSection(datasets=[DatasetSpec(name=n, cap=args.prompts) for n in args.datasets.split(",")])
    prompt_sets = load_prompt_sets(section)
    results = {"target": args.target, "threads": torch.get_num_threads(), "by_dtype": {}}
    for dtype in args.dtypes.split(","):
        target = load_target(TargetSection(name=args.target, path=args.target_path, dtype=dtype, device=args.device))
        encoded = [encode_prompt(target.tokenizer, p, args.chat_template, 512)
                   for prompts in prompt_sets.values() for p in prompts]
        autoregressive_decode(target, encoded[0], 4)  # warm-up
        drafter = NgramDrafter("ngram", args.block_size, ngram_max=4, ngram_min=1)
        row = {"forward": forward_throughput(target),
               "ngram_vs_ar": spec_vs_ar(target, encoded, args.max_new_tokens, drafter),
               "transformers": hf_assisted(target, encoded, args.max_new_tokens, "prompt_lookup",
                                           prompt_lookup_num_tokens=args.block_size)}
        if args.assistant:
            assistant = load_target(TargetSection(name="assistant", path=args.assistant, dtype=dtype,
                                                  device=args.device))
            row["transformers_assistant"] = hf_assisted(target, encoded, args.max_new_tokens, "assistant",
                                                        assistant_model=assistant.model)
        results["by_dtype"][dtype] = row
        print(json.dumps({dtype: row}, indent=1), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
