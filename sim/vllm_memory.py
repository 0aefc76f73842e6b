"""vLLM's own memory logs against the simulator's KV-memory reserve (sim/kv_cache.py activation_reserve_bytes).

    python -m sim.vllm_memory --out vllm_memory/          # ~1 s; writes vllm_memory.{csv,md}
    python -m sim.vllm_memory --fit --out vllm_memory/    # + fits reserve = a x tokens x hidden + b + c x (tp > 1)

The data (sim/validation/vllm_memory.yaml, each log with its URL or stored-file id) are public vLLM startup logs
that print the card's total_gpu_memory, gpu_memory_utilization, the weights and the KV result per GPU. Each log's
reserve -- what vLLM keeps back from the KV cache beside the weights: the profile run's activation peak plus
non-torch memory (CUDA context, NCCL buffers at tp > 1) -- is total x util - weights - KV (V0 also prints the two
parts; where a quoted log cuts off the KV figure their sum is used). Beside it stands the simulator's
`activation_reserve_bytes(hidden, max_num_batched_tokens)` = tokens x hidden x 32 B + 1 GiB; V0 logs' activation
peak per token x hidden is listed too. --fit finds a (bytes per token x hidden), b and c (GiB) by least squares and
by least absolute deviation, over all logs and over the dense (non-MoE) ones, each scored leave-one-out and
leave-one-engine-out (V0 logs predict the V1 ones and back). sim/kv_cache.py's constants are not changed: the lead decides.
Bad input (missing file, bad field) prints one `error:` line and exits 2 with nothing written.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from lab.arguments import data_check_parser
from lab.config_base import StrictModel
from lab.config_sim import HARDWARE_NAMES
from lab.errors import LabError
from lab.io import make_dirs, write_text_atomic
from lab.report import markdown_table
from sim.kv_cache import ACTIVATION_BYTES_PER_TOKEN_HIDDEN, GIB, NON_TORCH_BYTES, activation_reserve_bytes
from sim.public_check import validated_runs

DEFAULT_FILE = Path(__file__).parent / "validation" / "vllm_memory.yaml"
COLUMNS = ["id", "device", "model", "moe", "tp", "tokens", "hidden", "engine", "version", "non_torch_gib", "activation_gib",
           "act_b_per_token_hidden", "logged_gib", "sim_gib", "error_gib"]


class MemoryLog(StrictModel):
    """One public startup log, per GPU (see the data file's header for each field)."""
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str | None = Field(default=None, pattern=r"^https://")
    find_string: str | None = None
    where: str | None = None
    device: str
    device_name: str | None = None
    total_gib: float = Field(gt=0)
    total_source: Literal["log", "usable", "preset"]
    util: float = Field(gt=0, le=1)
    usable_gib: float | None = Field(default=None, gt=0)
    tp: int = Field(ge=1)
    tokens: int = Field(ge=1)
    tokens_basis: Literal["logged", "v0-max-model-len", "v0-chunked-default", "v1-serve-default"]
    model: str
    hidden: int = Field(ge=1)
    moe: bool = False
    engine: Literal["V0", "V1"]
    version: str
    weights_gib: float = Field(ge=0)
    kv_gib: float | None = None
    non_torch_gib: float | None = Field(default=None, ge=0)
    activation_gib: float | None = Field(default=None, ge=0)
    cuda_graphs: bool
    notes: str | None = None

    @model_validator(mode="after")
    def _complete(self):
        if self.url is None and not (self.find_string and self.where):
            raise ValueError("a url, or find_string and where, is required")
        if self.device not in set(HARDWARE_NAMES) | {"other"}:
            raise ValueError(f"device {self.device!r} is neither a hardware preset nor `other`")
        if self.device == "other" and not self.device_name:
            raise ValueError("an `other` device needs device_name")
        if self.kv_gib is None and (self.non_torch_gib is None or self.activation_gib is None):
            raise ValueError("kv_gib, or non_torch_gib and activation_gib, is required")
        return self

    def logged_reserve_gib(self) -> float:
        """total x util (as printed, where it is) - weights - KV; the printed parts where the KV figure is cut off."""
        if self.kv_gib is None:
            return self.non_torch_gib + self.activation_gib
        usable = self.usable_gib if self.usable_gib is not None else self.total_gib * self.util
        return usable - self.weights_gib - self.kv_gib


def load_logs(path: str | Path) -> list[MemoryLog]:
    """The logs of a data file; LabError naming the file and the first bad field."""
    return validated_runs(MemoryLog, path, "vLLM memory logs", "entry")


def compare(logs: list[MemoryLog]) -> pd.DataFrame:
    """One row per log: the logged reserve beside the simulator's (GiB per GPU), error = simulator - logged."""
    rows = []
    for log in logs:
        logged = log.logged_reserve_gib()
        sim = activation_reserve_bytes(log.hidden, log.tokens) / GIB
        act = log.activation_gib
        rows.append({"id": log.id, "device": log.device_name or log.device, "model": log.model, "moe": log.moe,
                     "tp": log.tp,
                     "tokens": log.tokens, "hidden": log.hidden, "engine": log.engine, "version": log.version,
                     "non_torch_gib": log.non_torch_gib if log.non_torch_gib is not None else float("nan"),
                     "activation_gib": act if act is not None else float("nan"),
                     "act_b_per_token_hidden": round(act * GIB / (log.tokens * log.hidden), 1) if act is not None
                     else float("nan"),
                     "logged_gib": round(logged, 3), "sim_gib": round(sim, 3), "error_gib": round(sim - logged, 3)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _design(df: pd.DataFrame) -> np.ndarray:
    """[tokens x hidden / GiB, 1, tp > 1]: a's column in GiB per (byte per token x hidden)."""  # shape (n, 3)
    return np.column_stack([df.tokens * df.hidden / GIB, np.ones(len(df)), (df.tp > 1).astype(float)])


def _solve(df: pd.DataFrame, loss: str = "lsq") -> np.ndarray:
    """(a B/token/hidden, b GiB, c GiB) by least squares, or least absolute deviation (loss="lad": iteratively
    reweighted least squares); c is 0 when no point has tp > 1."""
    x, y = _design(df), df.logged_gib.to_numpy()
    if not (df.tp > 1).any():
        x = x[:, :2]
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    if loss == "lad":
        for _ in range(200):
            w = 1.0 / np.sqrt(np.maximum(np.abs(y - x @ coef), 1e-4))  # sqrt: rows of the weighted system
            coef = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]
    return np.append(coef, 0.0) if len(coef) == 2 else coef


def predict(df: pd.DataFrame, coef) -> np.ndarray:
    return _design(df) @ np.asarray(coef)


def fit(df: pd.DataFrame, loss: str = "lsq") -> dict:
    """The pooled fit (loss "lsq" or "lad") with its in-sample, leave-one-out and leave-one-engine-out errors (GiB;
    error = fit - logged)."""
    coef = _solve(df, loss)
    out = df[["id", "engine", "tp", "logged_gib"]].copy()
    out["fit_gib"] = predict(df, coef).round(3)
    out["fit_error_gib"] = (out.fit_gib - out.logged_gib).round(3)
    loo = []
    for i in range(len(df)):
        rest = df.drop(index=df.index[i])
        loo.append(float(predict(df.iloc[[i]], _solve(rest, loss))[0]) if len(rest) >= 3 else float("nan"))
    out["loo_error_gib"] = (np.array(loo) - out.logged_gib).round(3)
    engine_out = np.full(len(df), np.nan)
    for engine in df.engine.unique():
        held = (df.engine == engine).to_numpy()
        if (~held).sum() >= 3:
            engine_out[held] = predict(df[held], _solve(df[~held], loss)) - df.logged_gib[held]
    out["engine_out_error_gib"] = np.round(engine_out, 3)

    def mae(col):
        v = out[col].dropna().abs()
        return round(float(v.mean()), 3) if len(v) else None

    return {"loss": loss, "a_bytes_per_token_hidden": round(float(coef[0]), 2), "b_gib": round(float(coef[1]), 3),
            "c_tp_gt1_gib": round(float(coef[2]), 3), "points": len(df),
            "mae_in_sample_gib": mae("fit_error_gib"), "mae_leave_one_out_gib": mae("loo_error_gib"),
            "mae_leave_one_engine_out_gib": mae("engine_out_error_gib"), "table": out}


def group_errors(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and mean-absolute simulator error per group (tp 1 / tp > 1, V0 / V1)."""
    groups = {"all": table, "tp 1": table[table.tp == 1], "tp > 1": table[table.tp > 1],
              "V0": table[table.engine == "V0"], "V1": table[table.engine == "V1"], "dense": table[~table.moe],
              "dense tp 1": table[~table.moe & (table.tp == 1)], "MoE": table[table.moe]}
    return pd.DataFrame([{"group": k, "points": len(g), "mean_error_gib": round(float(g.error_gib.mean()), 3),
                          "mae_gib": round(float(g.error_gib.abs().mean()), 3)} for k, g in groups.items() if len(g)])


def main(argv=None) -> int:
    ap = data_check_parser("python -m sim.vllm_memory", __doc__, DEFAULT_FILE, "vLLM memory logs", "vllm_memory",
                           "also fit reserve = a x tokens x hidden + b + c x (tp > 1); kv_cache.py is not changed")
    args = ap.parse_args(argv)
    try:
        table = compare(load_logs(args.file))
        make_dirs(args.out)
        text = report(table, args.fit)
        out = Path(args.out)
        write_text_atomic(out / "vllm_memory.csv", table.to_csv(index=False))
        write_text_atomic(out / "vllm_memory.md", text)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


def report(table: pd.DataFrame, with_fit: bool) -> str:
    """The markdown: the per-log table, the group errors and, with_fit, the fits over all and dense logs."""
    text = ("vLLM's logged per-GPU reserve (total x util - weights - KV) vs the simulator's "
            f"tokens x hidden x {ACTIVATION_BYTES_PER_TOKEN_HIDDEN} B + {NON_TORCH_BYTES / GIB:g} GiB "
            "(GiB; error = simulator - logged)\n\n"
            + markdown_table(table, floatfmt="{:g}") + "\n\n" + markdown_table(group_errors(table), floatfmt="{:g}")
            + "\n")
    if with_fit:
        for subset, rows in (("all", table), ("dense", table[~table.moe].reset_index(drop=True))):
            for loss in ("lsq", "lad"):
                fitted = fit(rows, loss)
                ftable = fitted.pop("table")
                text += (f"\nfit ({subset} logs): {json.dumps(fitted)}\n\n" + markdown_table(ftable, floatfmt="{:g}")
                         + "\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
