"""Measured engine-step profiles: read, write and interpolate `step_profile.csv` + `step_profile.json`.

The shared format (written by `lab profile` and by the vLLM engine profiler, read by sim/cost.py):

    step_profile.csv   batch,query_tokens,context_len,step_ms,step_ms_p90,repeats
                       one row per measured point; step_ms = median wall ms of one engine step of `batch`
                       requests, each with `query_tokens` new tokens over `context_len` tokens of KV
    step_profile.json  {"source": "lab"|"vllm", "model", "dtype", "device", "hardware",
                        "cpu_capability": str|null, "threads": int|null, "versions": {pkg: ver}, "created"}

Use:

    write_profile(run_dir, rows, meta)       # rows: DataFrame or list of dicts with the CSV columns
    prof = read_profile(path)                # path: the directory, the .csv or the .json
    prof.step_ms(batch=8, query_tokens=4, context_len=1500)   # interpolated, milliseconds

Interpolation: the rows must cover a full grid batch x query_tokens x context_len (each axis may have a
single value). Inside the measured box step_ms is multilinear (linear along each axis between neighbouring
grid values). Outside it: below an axis' smallest value the smallest value is used (a smaller step is
taken to cost what the smallest measured one did); above an axis' largest value step_ms is extended
linearly with the slope of that axis' last segment, because past the measured range a step's cost grows
with its tokens and KV reads; an extension never falls below the value at the nearest point of the box
(measurement noise can make a last segment slope down). An axis measured at one value is constant.
"""
from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lab.errors import LabError
from lab.io import atomic_path, write_json_atomic

CSV_NAME = "step_profile.csv"
JSON_NAME = "step_profile.json"
INT_COLUMNS = ("batch", "query_tokens", "context_len", "repeats")
FLOAT_COLUMNS = ("step_ms", "step_ms_p90")
COLUMNS = ("batch", "query_tokens", "context_len", "step_ms", "step_ms_p90", "repeats")
SOURCES = ("lab", "vllm")
# meta key -> (accepted types, may be null)
META_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "source": ((str,), False),
    "model": ((str,), False),
    "dtype": ((str,), False),
    "device": ((str,), False),
    "hardware": ((str,), False),
    "cpu_capability": ((str,), True),
    "threads": ((int,), True),
    "versions": ((dict,), False),
    "created": ((str,), False),
}


@dataclass(frozen=True)
class StepProfile:
    """One measured profile: the rows as numpy arrays (one entry per row) and the meta mapping."""

    batch: np.ndarray  # int64 [rows]
    query_tokens: np.ndarray  # int64 [rows]
    context_len: np.ndarray  # int64 [rows]
    step_ms_median: np.ndarray  # float64 [rows]  (the CSV's step_ms column)
    step_ms_p90: np.ndarray  # float64 [rows]
    repeats: np.ndarray  # int64 [rows]
    meta: dict
    path: Path | None = None
    _grid: tuple = field(default=(), repr=False, compare=False)  # (axes as lists, values as nested lists)
    _values: np.ndarray | None = field(default=None, repr=False, compare=False)  # [n_batch, n_query, n_context]

    def __post_init__(self):
        where = str(self.path) if self.path else "step profile"
        axes = [sorted({int(v) for v in col}) for col in (self.batch, self.query_tokens, self.context_len)]
        index = [{v: i for i, v in enumerate(axis)} for axis in axes]
        # values [n_batch, n_query, n_context]; NaN until a row fills it
        values = np.full([len(a) for a in axes], np.nan)
        for b, q, c, ms in zip(self.batch, self.query_tokens, self.context_len, self.step_ms_median):
            cell = (index[0][int(b)], index[1][int(q)], index[2][int(c)])
            if not np.isnan(values[cell]):
                raise LabError(f"{where}: duplicate row for batch={b} query_tokens={q} context_len={c}")
            values[cell] = ms
        if np.isnan(values).any():
            i, j, k = (int(x[0]) for x in np.nonzero(np.isnan(values)))
            raise LabError(f"{where}: rows must cover every batch x query_tokens x context_len combination; "
                           f"missing batch={axes[0][i]} query_tokens={axes[1][j]} context_len={axes[2][k]}")
        object.__setattr__(self, "_grid", ([[float(v) for v in a] for a in axes], values.tolist()))
        object.__setattr__(self, "_values", values)

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def axes(self) -> tuple[list[float], list[float], list[float]]:
        """The measured values of batch, query_tokens and context_len (sorted)."""
        return tuple(self._grid[0])

    def frame(self):
        """The rows as a pandas DataFrame with the CSV's columns."""
        import pandas as pd

        return pd.DataFrame({"batch": self.batch, "query_tokens": self.query_tokens,
                             "context_len": self.context_len, "step_ms": self.step_ms_median,
                             "step_ms_p90": self.step_ms_p90, "repeats": self.repeats})

    def step_ms(self, batch: float, query_tokens: float, context_len: float) -> float:
        """Interpolated median step time in ms (see the module docstring for behaviour outside the box)."""
        axes = self._grid[0]
        located = (_locate(axes[0], batch), _locate(axes[1], query_tokens), _locate(axes[2], context_len))
        value = self._multilinear(*located)
        if any(w > 1.0 for _, w in located):  # extended past the box: not below the box's nearest point
            value = max(value, self._multilinear(*((i, min(w, 1.0)) for i, w in located)))
        return value

    def _multilinear(self, b_loc: tuple[int, float], q_loc: tuple[int, float], c_loc: tuple[int, float]):
        values = self._grid[1]
        (ib, wb), (iq, wq), (ic, wc) = b_loc, q_loc, c_loc
        total = 0.0
        for db, fb in ((0, 1.0 - wb), (1, wb)):
            if fb == 0.0:
                continue
            plane = values[ib + db]
            for dq, fq in ((0, 1.0 - wq), (1, wq)):
                if fq == 0.0:
                    continue
                row = plane[iq + dq]
                total += fb * fq * ((1.0 - wc) * row[ic] + (wc * row[ic + 1] if wc else 0.0))
        return total

    def step_ms_many(self, batch, query_tokens, context_len) -> np.ndarray:
        """step_ms over arrays (broadcast together, vectorised); float64 of the broadcast shape."""
        axes, _ = self._grid
        values = self._values
        b, q, c = np.broadcast_arrays(np.asarray(batch, float), np.asarray(query_tokens, float),
                                      np.asarray(context_len, float))
        located = [_locate_many(np.asarray(axis), x) for axis, x in zip(axes, (b, q, c))]
        out = _multilinear_many(values, located)
        if any(np.any(w > 1.0) for _, w in located):
            clamped = [(i, np.minimum(w, 1.0)) for i, w in located]
            out = np.maximum(out, _multilinear_many(values, clamped))
        return out


def axis_weights(axis, x) -> np.ndarray:
    """[len(x), len(axis)] weights w so that w @ values is a profile's reading along one axis at each x (as
    step_ms reads it: clamped below the axis, the last segment extended linearly above it)."""
    axis, x = np.asarray(axis, float), np.asarray(x, float)
    out = np.zeros((len(x), len(axis)))
    i, w = _locate_many(axis, x)
    rows = np.arange(len(x))
    out[rows, i] += 1.0 - w
    if len(axis) > 1:
        out[rows, i + 1] += w
    return out


def _locate_many(axis: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised _locate: segment indices and weights for every entry of x."""
    if len(axis) == 1:
        return np.zeros(x.shape, dtype=np.int64), np.zeros(x.shape)
    i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, len(axis) - 2)
    w = (x - axis[i]) / (axis[i + 1] - axis[i])
    return i, np.where(x <= axis[0], 0.0, w)


def _multilinear_many(values: np.ndarray, located) -> np.ndarray:
    (ib, wb), (iq, wq), (ic, wc) = located
    # pad each axis of one value so that index + 1 exists (its weight is always 0)
    padded = np.pad(values, [(0, 1) if n == 1 else (0, 0) for n in values.shape], mode="edge")
    total = np.zeros(ib.shape)
    for db, fb in ((0, 1.0 - wb), (1, wb)):
        for dq, fq in ((0, 1.0 - wq), (1, wq)):
            for dc, fc in ((0, 1.0 - wc), (1, wc)):
                total = total + fb * fq * fc * padded[ib + db, iq + dq, ic + dc]
    return total


def _locate(axis: list[float], x: float) -> tuple[int, float]:
    """Segment index i and weight w so that value = (1-w) * v[i] + w * v[i+1] (w may exceed 1 above the
    axis: linear extension of the last segment; clamped to 0 below it; an axis of one value gives (0, 0))."""
    n = len(axis)
    if n == 1 or x <= axis[0]:
        return 0, 0.0
    if x >= axis[-1]:
        return n - 2, (x - axis[-2]) / (axis[-1] - axis[-2])
    i = bisect.bisect_right(axis, x) - 1
    return i, (x - axis[i]) / (axis[i + 1] - axis[i])


def write_profile(directory: str | Path, rows, meta: Mapping) -> Path:
    """Write step_profile.csv and step_profile.json into `directory` (each atomically); returns the CSV path.

    `rows`: a pandas DataFrame or an iterable of mappings with the CSV columns. Both are validated exactly
    as read_profile validates them, so a written profile always reads back."""
    import pandas as pd

    directory = Path(directory)
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(_as_dicts(rows)))
    profile = _from_frame(frame, dict(meta), directory / CSV_NAME)
    out = profile.frame()
    csv_path = directory / CSV_NAME
    with atomic_path(csv_path) as tmp:
        out.to_csv(tmp, index=False, float_format="%.6g")
    write_json_atomic(directory / JSON_NAME, profile.meta)
    return csv_path


def read_profile(path: str | Path) -> StepProfile:
    """Read a profile from its directory, its .csv or its .json (the other file is found beside it)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        csv_path, json_path = path / CSV_NAME, path / JSON_NAME
    elif path.suffix == ".json":
        csv_path, json_path = path.with_name(CSV_NAME), path
    elif path.suffix == ".csv":
        csv_path, json_path = path, path.with_name(JSON_NAME)
    elif not path.exists():
        raise LabError(f"{path}: step profile directory does not exist")
    else:
        raise LabError(f"{path}: not a step profile (give its directory, or its {CSV_NAME} / {JSON_NAME})")
    for p in (csv_path, json_path):
        if not p.is_file():
            raise LabError(f"{p}: step profile file does not exist")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"{json_path}: not readable JSON ({exc})") from None
    try:
        frame = pd.read_csv(csv_path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise LabError(f"{csv_path}: not a readable CSV ({exc})") from None
    return _from_frame(frame, meta, csv_path, json_path)


def _as_dicts(rows: Iterable) -> Iterable[dict]:
    for row in rows:
        if not isinstance(row, Mapping):
            raise LabError(f"step profile rows: expected mappings with columns {list(COLUMNS)}, got {row!r}")
        yield dict(row)


def _from_frame(frame, meta, csv_path: Path, json_path: Path | None = None) -> StepProfile:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise LabError(f"{csv_path}: step profile needs columns {','.join(COLUMNS)} (missing {missing})")
    if len(frame) == 0:
        raise LabError(f"{csv_path}: step profile has no rows")
    arrays = {}
    for col in INT_COLUMNS:
        values = np.asarray(frame[col])
        if (values.dtype.kind not in "iuf" or not np.all(np.isfinite(values)) or np.any(values != np.round(values))
                or np.any(np.abs(values) > 2**53)):  # 1e308 is a whole float, and no int64 (numpy warns, wraps)
            raise LabError(f"{csv_path}: column {col} must hold integers")
        arrays[col] = values.astype(np.int64)
    for col in FLOAT_COLUMNS:
        values = np.asarray(frame[col])
        if values.dtype.kind not in "iuf" or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise LabError(f"{csv_path}: column {col} must hold positive finite numbers")
        arrays[col] = values.astype(np.float64)
    for col, low in (("batch", 1), ("query_tokens", 1), ("context_len", 0), ("repeats", 1)):
        if np.any(arrays[col] < low):
            raise LabError(f"{csv_path}: column {col} must be >= {low}")
    below = np.flatnonzero(arrays["step_ms_p90"] < arrays["step_ms"])  # a 90th percentile under its median
    if below.size:
        i = int(below[0])
        raise LabError(f"{csv_path}: row {i + 1} (batch={arrays['batch'][i]} query_tokens={arrays['query_tokens'][i]} "
                       f"context_len={arrays['context_len'][i]}): step_ms_p90 {arrays['step_ms_p90'][i]:g} is below "
                       f"its median step_ms {arrays['step_ms'][i]:g}; a 90th percentile is never below the median")
    _check_meta(meta, json_path or csv_path.with_name(JSON_NAME))
    return StepProfile(batch=arrays["batch"], query_tokens=arrays["query_tokens"],
                       context_len=arrays["context_len"], step_ms_median=arrays["step_ms"],
                       step_ms_p90=arrays["step_ms_p90"], repeats=arrays["repeats"], meta=dict(meta),
                       path=csv_path)


def _check_meta(meta, json_path: Path) -> None:
    if not isinstance(meta, dict):
        raise LabError(f"{json_path}: step profile meta must be a JSON object")
    for key, (types, nullable) in META_FIELDS.items():
        if key not in meta:
            raise LabError(f"{json_path}: step profile meta needs {key!r}")
        value = meta[key]
        if value is None and nullable:
            continue
        # bool is an int subclass; a threads count of True is a mistake
        if not isinstance(value, types) or isinstance(value, bool):
            raise LabError(f"{json_path}: step profile meta {key!r} must be "
                           f"{' or '.join(t.__name__ for t in types)}{' or null' if nullable else ''}")
    if meta["source"] not in SOURCES:
        raise LabError(f"{json_path}: step profile meta 'source' must be one of {list(SOURCES)}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta["versions"].items()):
        raise LabError(f"{json_path}: step profile meta 'versions' must map package names to version strings")


__all__ = ["COLUMNS", "CSV_NAME", "JSON_NAME", "StepProfile", "read_profile", "write_profile"]
