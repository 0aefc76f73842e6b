"""Meta's Llama 3 tokenizer without a model hub: the tiktoken BPE file that the PyPI package llama-models ships
(llama_models/llama3/tokenizer.model, the 128,000 ranks of Llama 3 / 3.1 / 3.2 / 3.3 and their distills),
converted once into a Hugging Face tokenizer directory that AutoTokenizer loads.

    python -m real.llama3_tokenizer            # builds $DSPARK_LAB_CACHE/tokenizers/llama3 (~10 s), prints it
    python -m real.sharegpt_lengths --tokenizer llama3   # uses it: the ShareGPT length table of Llama-3 rows

What the conversion keeps from Meta's own tokenizer (llama_models/llama3/tokenizer.py): the split pattern, the
byte-level BPE ranks (ids 0-127999), the 256 special tokens after them (<|begin_of_text|> = 128000 ...) and a
<|begin_of_text|> before every text, as `tokenizer(text).input_ids` of the Hugging Face Llama-3 tokenizer gives
(the count vLLM's benchmark takes). The tiktoken file is read here (base64 token, rank per line), so tiktoken
itself is not needed. Writes are atomic: a half-built directory is never left where it is looked for.
"""
from __future__ import annotations

import base64
import importlib.util
import sys
import tempfile
from pathlib import Path

from lab.errors import LabError
from lab.io import make_dirs, replace_dir, write_json_atomic
from lab.paths import cache_root

PACKAGE = "llama-models"
BPE_FILE = ("llama3", "tokenizer.model")  # inside the llama_models package
BASE_TOKENS = 128000  # ranks in the BPE file
RESERVED_SPECIAL = 256  # special tokens after them (Meta's num_reserved_special_tokens)
NAMED_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                 "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                 "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
                 "<|image|>"]
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BOS = "<|begin_of_text|>"


def special_tokens() -> list[str]:
    """The 256 special tokens in id order from 128000 (Meta's list, reserved ones numbered from 2)."""
    reserved = [f"<|reserved_special_token_{2 + i}|>" for i in range(RESERVED_SPECIAL - len(NAMED_SPECIAL))]
    return NAMED_SPECIAL + reserved


def bpe_file() -> Path:
    """llama_models/llama3/tokenizer.model of the installed llama-models (found without importing it)."""
    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        raise LabError(f"--tokenizer llama3: {PACKAGE} is not installed: pip install {PACKAGE}")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*BPE_FILE)
    if not path.is_file():
        raise LabError(f"--tokenizer llama3: {path} is missing from {PACKAGE}")
    return path


def read_bpe_ranks(path: Path) -> dict[bytes, int]:
    """{token bytes: rank} of a tiktoken BPE file: one `base64 rank` pair per line, ranks 0..n-1."""
    ranks = {}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError:
            raise LabError(f"{path}: line {number} is not `<base64 token> <rank>`") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise LabError(f"{path}: ranks are not 0..{len(ranks) - 1}")
    return ranks


def ranks_to_tokenizer(ranks: dict[bytes, int], path: Path, pattern: str, specials: list[str]):
    """A byte-level BPE tokenizers.Tokenizer of tiktoken `ranks` (read from `path`), split by `pattern`, with
    `specials` after the ranks (transformers' TikTokenConverter, fed the ranks instead of tiktoken's download)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class FileConverter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(_url: str) -> dict[bytes, int]:
            return ranks

    return FileConverter(vocab_file=str(path), pattern=pattern, extra_special_tokens=specials).converted()


def build_tokenizer(path: Path):
    """A tokenizers.Tokenizer equal to Meta's: byte-level BPE of `path`, the special tokens, a BOS per text."""
    from tokenizers import processors

    ranks = read_bpe_ranks(path)
    if len(ranks) != BASE_TOKENS:
        raise LabError(f"{path}: {len(ranks)} BPE ranks, Llama 3 has {BASE_TOKENS}")
    tokenizer = ranks_to_tokenizer(ranks, path, SPLIT_PATTERN, special_tokens())
    bos_id = tokenizer.token_to_id(BOS)
    if bos_id != BASE_TOKENS:
        raise LabError(f"{path}: {BOS} got id {bos_id}, Llama 3 has {BASE_TOKENS}")
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]),
    ])
    return tokenizer


def llama3_tokenizer_dir(root: Path | None = None) -> Path:
    """The converted tokenizer's directory (built on first use under $DSPARK_LAB_CACHE/tokenizers/llama3)."""
    final = (root or cache_root() / "tokenizers") / "llama3"
    if (final / "tokenizer.json").is_file():
        return final
    source = bpe_file()
    make_dirs(final.parent)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".llama3.") as tmp:
        work = Path(tmp) / "llama3"
        work.mkdir()
        build_tokenizer(source).save(str(work / "tokenizer.json"))
        write_json_atomic(work / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": "<|end_of_text|>",
            "model_max_length": 131072, "clean_up_tokenization_spaces": True})
        write_json_atomic(work / "source.json", {"package": PACKAGE, "file": str(source),
                                                 "rule": "tiktoken ranks -> byte-level BPE (TikTokenConverter), "
                                                         "256 special tokens from 128000, BOS before every text"})
        replace_dir(work, final)
    return final


def main() -> int:
    try:
        print(llama3_tokenizer_dir())
        return 0
    except LabError as exc:  # one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
