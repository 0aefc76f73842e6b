"""The trace: one Parquet row per verify step (DESIGN.md), shards per (method, dataset, table).

Write:  write_shard(records, path)           records: list[StepRecord]
Read:   read_traces(path_or_dir) -> DataFrame validated against SCHEMA_VERSION, all of one run_id
CLI:    lab traces runs/<name>/<run_id>/traces

Two tables share the schema: `rounds` (what a real decode did) and `anchors` (a draft anchored at
every position of the target's own greedy output; exact replay for any verify-length policy).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lab.errors import LabError
from lab.io import atomic_path
from lab.slug import SHARD_SEPARATOR

SCHEMA_VERSION = 1
TABLES = ("rounds", "anchors")

ARROW_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("method", pa.string()),
        ("target", pa.string()),
        ("dataset", pa.string()),
        ("prompt_id", pa.string()),
        ("table", pa.string()),
        ("temperature", pa.float32()),
        ("step", pa.int32()),
        ("context_len", pa.int32()),
        ("k", pa.int16()),
        ("accepted", pa.int16()),
        ("accept_prob", pa.list_(pa.float32())),
        ("confidence", pa.list_(pa.float32())),
        ("draft_ms", pa.float32()),
        ("verify_ms", pa.float32()),
    ],
    metadata={b"dspark_lab_schema_version": str(SCHEMA_VERSION).encode()},
)
COLUMNS = tuple(ARROW_SCHEMA.names)


@dataclass
class StepRecord:
    """One verify step. accepted in 0..k; tokens emitted = accepted + 1 (bonus or recovered token)."""

    run_id: str
    method: str
    target: str
    dataset: str
    prompt_id: str
    table: str
    temperature: float
    step: int
    context_len: int
    k: int
    accepted: int
    accept_prob: list[float] = field(default_factory=list)  # min(1, p/q) per drafted position, len k
    confidence: list[float] = field(default_factory=list)  # drafter's own per-position score, len k
    draft_ms: float = 0.0
    verify_ms: float = 0.0


def records_to_table(records: list[StepRecord]) -> pa.Table:
    rows = [asdict(r) for r in records]
    columns = {name: [row[name] for row in rows] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


def write_shard(records: list[StepRecord], path: str | Path) -> Path:
    """Validate and write one shard atomically; returns the path."""
    path = Path(path)
    table = records_to_table(records)
    validate_frame(table.to_pandas(), str(path))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def shard_name(method: str, dataset: str, table: str, temperature: float) -> str:
    """<table>__<method>__<dataset>__T<t>.parquet; the config refuses a drafter or dataset name holding
    "__" (lab.slug.SHARD_SEPARATOR), so the name splits back into its four parts."""
    return SHARD_SEPARATOR.join([table, method, dataset, f"T{temperature:g}"]) + ".parquet"


def _read_one(path: Path) -> pd.DataFrame:
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 -- pyarrow raises several types for corrupt files
        raise LabError(f"{path}: not a readable Parquet trace ({type(exc).__name__}: {exc})") from None
    meta = pf.schema_arrow.metadata or {}
    version = meta.get(b"dspark_lab_schema_version")
    if version is None:
        raise LabError(f"{path}: not a DSpark Lab trace (no dspark_lab_schema_version in metadata)")
    if version.strip() != str(SCHEMA_VERSION).encode():
        shown = version.decode("utf-8", errors="replace")[:40]
        raise LabError(f"{path}: trace schema version {shown}, this lab reads version {SCHEMA_VERSION}")
    missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise LabError(f"{path}: trace is missing columns {missing}")
    # A column of another type (k written as text) reached numpy's comparisons as a TypeError traceback.
    for name in COLUMNS:
        found, expected = pf.schema_arrow.field(name).type, ARROW_SCHEMA.field(name).type
        if found != expected and not _widens(found, expected):
            raise LabError(f"{path}: trace column {name} has type {found}, expected {expected}")
    try:  # the footer can be whole while a data page is not (a copy cut short, a flipped byte)
        table = pf.read(columns=list(COLUMNS))
    except Exception as exc:  # noqa: BLE001 -- pyarrow raises OSError, ArrowInvalid, ... for damaged pages
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise LabError(f"{path}: not a readable Parquet trace, its data is damaged ({type(exc).__name__}: {detail})") from None
    for name in COLUMNS:
        nulls = table.column(name).null_count
        if nulls and name not in ("accept_prob", "confidence"):  # the lists' nulls are named per row below
            raise LabError(f"{path}: trace column {name} has {nulls} null value(s); every row needs one")
    frame = table.to_pandas()
    validate_frame(frame, str(path))
    return frame


def _widens(found: pa.DataType, expected: pa.DataType) -> bool:
    """A column another writer stored wider or as a large/dictionary string reads the same (int32 for int16,
    float64 for float32, large_string or dictionary<string> for string, large_list for list)."""
    if pa.types.is_dictionary(found):
        found = found.value_type
    if pa.types.is_integer(expected):
        return pa.types.is_integer(found)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(found) or pa.types.is_integer(found)
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    if pa.types.is_list(expected):
        return ((pa.types.is_list(found) or pa.types.is_large_list(found))
                and _widens(found.value_type, expected.value_type))
    return False


def validate_frame(frame: pd.DataFrame, where: str) -> None:
    """Raise LabError naming `where` and the first bad row if the trace is inconsistent."""
    if len(frame) == 0:
        return
    k = frame["k"].to_numpy()
    accepted = frame["accepted"].to_numpy()
    bad = np.flatnonzero((accepted < 0) | (accepted > k) | (k < 0))
    if bad.size:
        i = int(bad[0])
        raise LabError(f"{where}: row {i} has accepted={accepted[i]} outside 0..k={k[i]}")
    for column in ("accept_prob", "confidence"):
        missing = np.flatnonzero(frame[column].isna().to_numpy())
        if missing.size:
            raise LabError(f"{where}: row {int(missing[0])} has no {column} list (null); expected k={k[missing[0]]} values")
        lengths = frame[column].map(len).to_numpy()
        bad = np.flatnonzero(lengths != k)
        if bad.size:
            i = int(bad[0])
            raise LabError(f"{where}: row {i} has len({column})={lengths[i]} but k={k[i]}")
    tables = set(frame["table"].unique())
    if not tables <= set(TABLES):
        raise LabError(f"{where}: unknown table value(s) {sorted(tables - set(TABLES))}, expected {TABLES}")


def trace_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if files:
            return files
        raise LabError(f"{path}: no .parquet trace files in this directory")
    raise LabError(f"{path}: trace path does not exist")


def read_traces(path: str | Path | list[Path]) -> pd.DataFrame:
    """Read and validate one shard, a directory of shards, or a list of shard paths; LabError when they hold
    the rows of more than one run (another run's shards copied into traces/ mixed into tau silently)."""
    files = [Path(p) for p in path] if isinstance(path, list) else trace_files(path)
    frames = [_read_one(f) for f in files]
    check_one_run(files, frames, path if not isinstance(path, list) else None)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))


def run_ids_by_file(files: list[Path], frames: list[pd.DataFrame]) -> dict[str, list[Path]]:
    """run_id -> the files holding rows of it, in file order (a file of two runs is under both)."""
    owners: dict[str, list[Path]] = {}
    for f, frame in zip(files, frames):
        for run_id in pd.unique(frame["run_id"]):
            owners.setdefault(str(run_id), []).append(f)
    return owners


def check_one_run(files: list[Path], frames: list[pd.DataFrame], where: str | Path | None = None) -> None:
    """LabError, one line naming each run_id's files, when the shards hold more than one run_id."""
    owners = run_ids_by_file(files, frames)
    if len(owners) <= 1:
        return
    base = Path(where) if where is not None and Path(where).is_dir() else None
    groups = "; ".join(f"run_id '{run_id}' in {name_files(paths, base)}" for run_id, paths in owners.items())
    raise LabError(f"{where if where is not None else 'traces'}: shards of {len(owners)} runs mixed: {groups} "
                   "(move the other run's files out, or name each run's traces separately)")


def name_files(paths: list[Path], base: Path | None = None, shown: int = 3) -> str:
    """'a.parquet, b.parquet and 4 more': paths relative to base where they lie under it."""
    names = [str(p.relative_to(base)) if base is not None and p.is_relative_to(base) else str(p)
             for p in paths]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
