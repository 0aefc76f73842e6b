"""Which trace rows a replay, a calibration or a reliability diagram uses, and their packed arrays.

    method = resolve_method(frame, method=None)           # the given one, else the only one, else dspark
    sel = select_rows(frame, method=None, temperature=None, table="auto", weights=None, where="traces")
    sel.rows, sel.method, sel.temperature, sel.table      # rows sorted by (dataset, prompt_id, step)
    conf, accept_prob, kcap, accepted = pack_rows(sel.rows, gamma)

The one place that decides: method (the only one, else dspark), sampling temperature (default: the lowest
recorded; acceptance at T=0 and T=1 differs, so one replay or fit never mixes them), table ('auto': dense
anchors where recorded, rounds otherwise), dataset weights (a name absent from every method's traces is a
typo). Used by sim/acceptance.TraceSource, sim/calibrate.calibrate_frame and dashboards/data.reliability.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.errors import LabError


@dataclass
class Selection:
    rows: pd.DataFrame
    method: str
    temperature: float
    table: str


def resolve_method(frame: pd.DataFrame, method: str | None = None, where: str = "traces") -> str:
    """The method to use: the given one (it must be in the traces), else the only one, else dspark."""
    if len(frame) == 0:
        raise LabError(f"{where}: no trace rows")
    methods = sorted(frame["method"].unique())
    if method is None:
        method = methods[0] if len(methods) == 1 else ("dspark" if "dspark" in methods else None)
        if method is None:
            raise LabError(f"{where}: several methods {methods}; set sim.acceptance.method")
    if method not in methods:
        raise LabError(f"{where}: method {method!r} not in traces (found {methods})")
    return str(method)


def select_rows(frame: pd.DataFrame, method: str | None = None, temperature: float | None = None,
                table: str = "auto", weights: dict[str, float] | None = None, where: str = "traces") -> Selection:
    """The rows of one method at one sampling temperature from one table (LabError naming `where` if none)."""
    method = resolve_method(frame, method, where)
    f = frame[frame["method"] == method]
    temps_avail = sorted(f["temperature"].unique())
    temp = float(min(temps_avail)) if temperature is None else float(temperature)
    f = f[np.isclose(f["temperature"], temp)]
    if len(f) == 0:
        raise LabError(f"{where}: no rows of method {method!r} at temperature {temp} (found {temps_avail})")
    if table == "auto":
        table = "anchors" if (f["table"] == "anchors").any() else "rounds"
    f = f[f["table"] == table]
    if len(f) == 0:
        raise LabError(f"{where}: no {table!r} rows for method {method!r}")
    if weights:
        datasets = sorted(f["dataset"].unique())
        unknown = sorted(set(weights) - set(frame["dataset"].unique()))
        if unknown:
            raise LabError(f"sim.acceptance.datasets: {unknown} not in traces (found {datasets})")
        f = f[f["dataset"].isin([d for d, w in weights.items() if w > 0])]
        if len(f) == 0:
            raise LabError(f"sim.acceptance.datasets: none of {sorted(weights)} has {method!r} rows "
                           f"(it has {datasets})")
    f = f.sort_values(["dataset", "prompt_id", "step"], kind="stable")
    return Selection(f, str(method), temp, table)


def pack_rows(rows: pd.DataFrame, gamma: int):
    """Dense arrays of the rows: conf [n, gamma] f32 and accept_prob [n, gamma] f32 (0 beyond a row's k),
    kcap [n] (drafts recorded, capped at gamma), accepted [n] (capped at gamma)."""
    n = len(rows)
    # [n, gamma]: per-position confidence and min(1, p/q), zero-padded beyond the row's k
    conf = np.zeros((n, gamma), np.float32)
    aprob = np.zeros((n, gamma), np.float32)
    for i, (c, p) in enumerate(zip(rows["confidence"].to_numpy(), rows["accept_prob"].to_numpy())):
        m = min(len(c), gamma)
        conf[i, :m] = c[:m]
        aprob[i, :m] = p[:m]
    kcap = np.minimum(rows["k"].to_numpy().astype(np.int64), gamma)
    accepted = np.minimum(rows["accepted"].to_numpy().astype(np.int64), gamma)
    return conf, aprob, kcap, accepted
