"""Regeneration-speed benchmark (prepare stage): transformers' stock sampling vs the lab's path, side by side.

    python -m real.bench_regen --target gemma3-270m --dtype bfloat16 --prompts 32 --batch 16 --max-new-tokens 64

Both sides run `model.generate` on the same left-padded ShareGPT prompts (PyPI) with DeepSpec's sampling
defaults (T 0.7, top-p 0.8, top-k 20):
  stock: do_sample=True with transformers' warper chain, the LM head fed a strided last-position slice;
  lab:   real.prepare.regenerate_batch (TopKTopPSampler draws from the top-k survivors; the Target's
         LM-head hook makes the prefill slice contiguous).
Prints tokens/s of each and their ratio as a markdown table row.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from lab.arguments import ArgumentParser, positive_int
from lab.config import TargetSection
from lab.config_base import DatasetSpec
from lab.errors import exit_on_user_error
from real.prepare import left_padded, regenerate_batch
from real.prompts import encode_prompt, load_dataset
from real.targets import load_target


def stock_generate(target, prompts: list[list[int]], section, seed: int) -> list[list[int]]:
    """transformers' own sampling path, with the Target's contiguity hook taken off for the call."""
    hooks = dict(target.lm_head._forward_pre_hooks)
    target.lm_head._forward_pre_hooks.clear()
    try:
        input_ids, attention, pad = left_padded(target, prompts)
        torch.manual_seed(seed)
        out = target.model.generate(input_ids=input_ids, attention_mask=attention, do_sample=True,
                                    temperature=section.temperature, top_p=section.top_p, top_k=section.top_k,
                                    max_new_tokens=section.max_new_tokens, pad_token_id=pad,
                                    eos_token_id=sorted(target.eos_token_ids))
        return [row[input_ids.shape[1]:].tolist() for row in out]
    finally:
        target.lm_head._forward_pre_hooks.update(hooks)


@exit_on_user_error("python -m real.bench_regen")
def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(prog="python -m real.bench_regen", description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="gemma3-270m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=positive_int, default=32)
    ap.add_argument("--batch", type=positive_int, default=16)
    ap.add_argument("--max-new-tokens", type=positive_int, default=64)
    ap.add_argument("--max-prompt-tokens", type=positive_int, default=128)
    ap.add_argument("--threads", type=positive_int, default=torch.get_num_threads())
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    target = load_target(TargetSection(name=args.target, dtype=args.dtype))
    texts = load_dataset(DatasetSpec(name="sharegpt", cap=args.prompts), shuffle_seed=0)
    prompts = [encode_prompt(target.tokenizer, p, False, args.max_prompt_tokens) for p in texts]
    section = SimpleNamespace(temperature=0.7, top_p=0.8, top_k=20, max_new_tokens=args.max_new_tokens)
    seconds = {"stock": 0.0, "lab": 0.0}
    tokens = {"stock": 0, "lab": 0}
    for b in range(0, len(prompts), args.batch):
        batch = prompts[b:b + args.batch]
        for name, fn in (("stock", stock_generate), ("lab", regenerate_batch)):
            t0 = time.perf_counter()
            out = fn(target, batch, section, seed=b)
            seconds[name] += time.perf_counter() - t0
            tokens[name] += sum(len(r) for r in out)
    rate = {k: tokens[k] / seconds[k] for k in seconds}
    print("| target | dtype | batch | new tokens | stock tok/s | lab tok/s | lab / stock |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.target} | {args.dtype} | {args.batch} | {args.max_new_tokens} | {rate['stock']:.1f} | "
          f"{rate['lab']:.1f} | {rate['lab'] / rate['stock']:.2f}x |")


if __name__ == "__main__":
    main()
