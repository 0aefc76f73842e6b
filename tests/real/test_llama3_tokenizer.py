"""Meta's Llama 3 tokenizer converted from llama-models' tiktoken file (real/llama3_tokenizer.py): the same ids
as Meta's own tokenizer, a <|begin_of_text|> before every text, built once, bad files named in one line."""
from __future__ import annotations

import pytest

from lab.errors import LabError
from real.llama3_tokenizer import BASE_TOKENS, llama3_tokenizer_dir, read_bpe_ranks

pytest.importorskip("llama_models")

TEXTS = ["Hello world", "  two  spaces\n\nand lines\r\n", "numbers 1234567 and 3.14159", "日本語のテキスト",
         "emoji 🙂 and accents: café naïve", "code: def f(x):\n    return x ** 2  # 'quoted'", "I'm they'll we'd",
         "special <|eot_id|> inside", ""]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama3_tokenizer_dir(tmp_path_factory.mktemp("tokenizers")))


def test_known_ids_and_a_bos_before_every_text(tokenizer):
    assert tokenizer("Hello world").input_ids == [BASE_TOKENS, 9906, 1917]  # <|begin_of_text|> Hello ' world'
    assert tokenizer("").input_ids == [BASE_TOKENS]
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") == 128009


def test_same_ids_as_metas_tiktoken_tokenizer(tokenizer):
    pytest.importorskip("tiktoken")
    from llama_models.llama3.tokenizer import Tokenizer

    meta = Tokenizer.get_instance()
    for text in TEXTS:
        assert tokenizer(text).input_ids == meta.encode(text, bos=True, eos=False, allowed_special="all"), text


def test_built_once_and_reused(tmp_path):
    first = llama3_tokenizer_dir(tmp_path)
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert llama3_tokenizer_dir(tmp_path) == first and (first / "tokenizer.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama3"]  # no half-built directory left beside it


def test_a_bad_bpe_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"SGVsbG8= 0\nnot-a-pair\n")
    with pytest.raises(LabError, match=r"tokenizer.model: line 2 is not `<base64 token> <rank>`"):
        read_bpe_ranks(bad)
    bad.write_bytes(b"SGVsbG8= 0\nd29ybGQ= 5\n")
    with pytest.raises(LabError, match=r"ranks are not 0..1"):
        read_bpe_ranks(bad)


def test_without_llama_models_the_table_command_says_what_to_install(tmp_path, monkeypatch, capsys):
    import importlib.util

    from real import sharegpt_lengths

    monkeypatch.setenv("DSPARK_LAB_CACHE", str(tmp_path / "cache"))
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_models" else real_find(name, *a))
    assert sharegpt_lengths.main(["--tokenizer", "llama3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --tokenizer llama3: llama-models is not installed: pip install llama-models"
    assert not (tmp_path / "cache" / "lengths").exists()  # nothing written
