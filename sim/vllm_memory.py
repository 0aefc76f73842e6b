"""vLLM's own memory logs against the simulator's KV-memory reserve (sim/kv_cache.py activation_reserve_bytes).

    python -m sim.vllm_memory --out vllm_memory/          # ~1 s; writes vllm_memory.{csv,md}, cuda_graphs.csv
    python -m sim.vllm_memory --fit --out vllm_memory/    # + scores every reserve model in and out of sample (~5 s)

The data (sim/validation/vllm_memory.yaml, each log with its URL or stored-file id) are public vLLM startup logs
that print the card's total_gpu_memory, gpu_memory_utilization, the weights and the KV result per GPU. Each log's
reserve -- what vLLM keeps back from the KV cache beside the weights: the profile run's torch peak plus non-torch
memory (CUDA context, NCCL and custom all-reduce buffers at tp > 1) -- is total x util - weights - KV (V0 and V1
DEBUG logs also print the two parts; where a quoted log cuts off the KV figure their sum is used). Beside it stands
the simulator's `activation_reserve_bytes`: max(forward, sampler) + non-torch, the forward tokens x hidden x a B,
the profile run's dummy sampler min(max_num_seqs, tokens) x vocab x s B with s by how top-k / top-p runs (sort,
flashinfer, triton; the log's `sampler`). --fit scores, on the logs of a known sampler: the simulator's constants;
the old form a x tokens x hidden + b + c x (tp > 1); and the sampler-aware forms max(...) and sum(...) + b + c
(tp > 1 with custom all-reduce) + d (tp > 1, NCCL only), each by least squares and least absolute deviation, with
leave-one-out, leave-one-engine-out (V0 <-> V1) and leave-one-source-out (every log of one page or file held out
together) errors; logs of unknown sampler are priced as sort and as flashinfer beside. The constants in
sim/kv_cache.py are the max form's least-absolute-deviation fit (BENCHMARKS.md, session 28) but FlashInfer's bytes
per logit, counted from vLLM's source (session 35); --fit also refits the max form with that term pinned.
Logs that print vLLM's CUDA-graph estimate ("Estimated CUDA graph memory", vLLM 0.18+; taken off the KV cache from
0.20, `cuda_graphs: true`) are scored against sim/cuda_graphs.py, and --fit refits its two constants (first
capture + per further graph) with leave-one-out and leave-one-source-out errors; a log with `reserve_fit: false`
(its profile run holds what the reserve model leaves out, e.g. a vision encoder) counts for that only.
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
from lab.config_sim import HARDWARE_NAMES, SAMPLERS
from lab.errors import LabError
from lab.io import make_dirs, write_text_atomic
from lab.report import markdown_table
from sim.cuda_graphs import (
    CUDA_GRAPH_FIRST_BYTES,
    CUDA_GRAPH_PER_GRAPH_BYTES,
    cuda_graph_memory_bytes,
    graph_counts,
)
from sim.kv_cache import (
    ACTIVATION_BYTES_PER_TOKEN_HIDDEN,
    FLASHINFER_SAMPLER_BYTES_PER_LOGIT,
    GIB,
    NON_TORCH_BYTES,
    NON_TORCH_TP_BYTES,
    NON_TORCH_TP_NCCL_BYTES,
    SAMPLER_BYTES_PER_LOGIT,
    activation_reserve_bytes,
)
from sim.public_check import REPO_ROOT, validated_runs

DEFAULT_FILE = Path(__file__).parent / "validation" / "vllm_memory.yaml"
COLUMNS = ["id", "device", "model", "moe", "tp", "all_reduce", "tokens", "hidden", "vocab", "max_num_seqs", "sampler", "engine",
           "version", "source", "non_torch_gib", "activation_gib", "act_b_per_token_hidden", "act_b_per_logit",
           "logged_gib", "sim_gib", "error_gib", "weights_gib", "sim_weights_gib"]
SIM_SAMPLER_FOR_UNKNOWN = "sort"  # the simulator's column prices a log of unstated sampler as the costliest


MAX_CARD_GIB = 4096  # per GPU; the largest card in the presets holds 288 GB


class MemoryLog(StrictModel):
    """One public startup log, per GPU (see the data file's header for each field)."""
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str | None = Field(default=None, pattern=r"^https://")
    find_string: str | None = None
    where: str | None = None
    device: str
    device_name: str | None = None
    total_gib: float = Field(gt=0)
    total_source: Literal["log", "usable", "preset", "card", "cuda-graph"]
    util: float = Field(gt=0, le=1)
    usable_gib: float | None = Field(default=None, gt=0)
    tp: int = Field(ge=1)
    all_reduce: Literal["custom", "nccl"] | None = None
    tokens: int = Field(ge=1)
    tokens_basis: Literal["logged", "v0-max-model-len", "v0-chunked-default", "v1-serve-default"]
    model: str
    config: str | None = None
    hidden: int | None = Field(default=None, ge=1)
    vocab: int | None = Field(default=None, ge=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    seqs_basis: Literal["logged", "default"] | None = None
    moe: bool = False
    engine: Literal["V0", "V1"]
    version: str
    weights_gib: float | None = Field(default=None, ge=0)
    kv_gib: float | None = None
    non_torch_gib: float | None = Field(default=None, ge=0)
    activation_gib: float | None = Field(default=None, ge=0)
    cuda_graphs: bool
    cuda_graph_gib: float | None = Field(default=None, ge=0)
    cuda_graph_actual_gib: float | None = Field(default=None, ge=0)
    piecewise_graphs: int | None = Field(default=None, ge=0)
    full_graphs: int | None = Field(default=None, ge=0)
    reserve_fit: bool = True
    sampler: Literal[(*SAMPLERS, "unknown")] = "unknown"  # type: ignore[valid-type]
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
        if self.kv_gib is not None and self.weights_gib is None:
            raise ValueError("weights_gib is required with kv_gib")
        if (self.all_reduce is None) != (self.tp == 1):
            raise ValueError("all_reduce (custom or nccl) is given for tp > 1 and only then")
        if (self.vocab is None) != (self.max_num_seqs is None):
            raise ValueError("vocab and max_num_seqs come together (the sampler term needs both)")
        if self.reserve_fit and self.hidden is None:
            raise ValueError("hidden is required for a log the reserve is scored on (reserve_fit)")
        over = [name for name in ("usable_gib", "weights_gib", "kv_gib", "non_torch_gib", "activation_gib",
                                  "cuda_graph_gib", "cuda_graph_actual_gib")
                if getattr(self, name) is not None and abs(getattr(self, name)) > self.total_gib]
        if over or self.total_gib > MAX_CARD_GIB:  # a mistyped 1e308 overflowed the least-squares fits
            raise ValueError(f"{', '.join(over) or 'total_gib'}: more than one GPU holds (total_gib {self.total_gib:g}, "
                             f"at most {MAX_CARD_GIB} GiB)")
        if self.cuda_graphs and self.cuda_graph_gib is None:
            raise ValueError("cuda_graphs (the KV figure has the CUDA-graph estimate taken off) needs cuda_graph_gib")
        if (self.cuda_graph_gib is None) != (self.piecewise_graphs is None or self.full_graphs is None):
            raise ValueError("cuda_graph_gib comes with piecewise_graphs and full_graphs (the log's counts)")
        return self

    @property
    def sampler_rows(self) -> int:
        """Rows of logits the profile run samples: min(max_num_seqs, tokens) (0: not known)."""
        return min(self.max_num_seqs, self.tokens) if self.max_num_seqs else 0

    def logged_reserve_gib(self) -> float:
        """total x util (as printed, where it is) - weights - KV - the CUDA-graph estimate where vLLM took it off
        (cuda_graphs); the printed parts where the KV figure is cut off."""
        if self.kv_gib is None:
            return self.non_torch_gib + self.activation_gib
        usable = self.usable_gib if self.usable_gib is not None else self.total_gib * self.util
        return usable - self.weights_gib - self.kv_gib - (self.cuda_graph_gib if self.cuda_graphs else 0.0)


def load_logs(path: str | Path) -> list[MemoryLog]:
    """The logs of a data file; LabError naming the file and the first bad field."""
    return validated_runs(MemoryLog, path, "vLLM memory logs", "entry")


def compare(logs: list[MemoryLog]) -> pd.DataFrame:
    """One row per log: the logged reserve beside the simulator's (GiB per GPU), error = simulator - logged."""
    rows = []
    for log in (x for x in logs if x.reserve_fit):
        logged = log.logged_reserve_gib()
        sampler = SIM_SAMPLER_FOR_UNKNOWN if log.sampler == "unknown" else log.sampler
        sim = activation_reserve_bytes(log.hidden, log.tokens, log.vocab or 0, log.max_num_seqs or 0, sampler,
                                       log.tp, log.all_reduce != "nccl") / GIB
        act = log.activation_gib
        logits = log.sampler_rows * (log.vocab or 0)  # the dummy sampler's [rows, vocab] logits
        rows.append({"id": log.id, "device": log.device_name or log.device, "model": log.model, "moe": log.moe,
                     "tp": log.tp, "all_reduce": log.all_reduce or "", "tokens": log.tokens, "hidden": log.hidden,
                     "vocab": log.vocab or 0, "max_num_seqs": log.max_num_seqs or 0, "sampler": log.sampler,
                     "engine": log.engine, "version": log.version, "source": log.url or f"id {log.find_string}",
                     "non_torch_gib": log.non_torch_gib if log.non_torch_gib is not None else float("nan"),
                     "activation_gib": act if act is not None else float("nan"),
                     "act_b_per_token_hidden": round(act * GIB / (log.tokens * log.hidden), 1) if act is not None
                     else float("nan"),
                     "act_b_per_logit": round(act * GIB / logits, 1) if act is not None and logits else float("nan"),
                     "logged_gib": round(logged, 3), "sim_gib": round(sim, 3), "error_gib": round(sim - logged, 3),
                     "weights_gib": log.weights_gib if log.weights_gib is not None else float("nan"),
                     "sim_weights_gib": round(sim_weights_gib(log), 2) if log.config else float("nan")})
    return pd.DataFrame(rows, columns=COLUMNS)


def sim_weights_gib(log: MemoryLog) -> float:
    """The simulator's resident weights per GPU for the log's `config` (GiB): the replica's over tp plus each GPU's
    own copy of the replicated weights (sim/models.REPLICATED), in vLLM's Marlin layout where an mxfp4 checkpoint runs on a card without FP4 matmuls (sim/cost.py does the same)."""
    from sim.hardware import get_hardware
    from sim.models import from_hf_config

    m = from_hf_config(REPO_ROOT / log.config)
    fp4 = log.device != "other" and "fp4" in get_hardware(log.device).peak_tflops
    return (m.resident_weight_bytes() + m.replicated_extra_bytes(log.tp)
            + (0.0 if fp4 else m.marlin_mxfp4_pad_bytes(log.tp))) / log.tp / GIB


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
    for column in ("engine", "source"):  # each engine version's / source's logs predicted by the others' fit
        group_out = np.full(len(df), np.nan)
        for value in df[column].unique():
            held = (df[column] == value).to_numpy()
            if (~held).sum() >= 3:
                group_out[held] = predict(df[held], _solve(df[~held], loss)) - df.logged_gib[held]
        out[f"{column}_out_error_gib"] = np.round(group_out, 3)

    def mae(col, rows=None):
        v = (out[col] if rows is None else out[col][rows]).dropna().abs()
        return round(float(v.mean()), 3) if len(v) else None

    v1 = (out.engine == "V1").to_numpy()
    return {"loss": loss, "a_bytes_per_token_hidden": round(float(coef[0]), 2), "b_gib": round(float(coef[1]), 3),
            "c_tp_gt1_gib": round(float(coef[2]), 3), "points": len(df),
            "mae_in_sample_gib": mae("fit_error_gib"), "mae_in_sample_v1_gib": mae("fit_error_gib", v1),
            "mae_leave_one_out_gib": mae("loo_error_gib"), "mae_leave_one_out_v1_gib": mae("loo_error_gib", v1),
            "mae_leave_one_engine_out_gib": mae("engine_out_error_gib"),
            "mae_leave_one_source_out_gib": mae("source_out_error_gib"),
            "mae_leave_one_source_out_v1_gib": mae("source_out_error_gib", v1), "table": out}


def group_errors(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and mean-absolute simulator error per group (tp 1 / tp > 1, V0 / V1)."""
    groups = {"all": table, "tp 1": table[table.tp == 1], "tp > 1": table[table.tp > 1],
              "V0": table[table.engine == "V0"], "V1": table[table.engine == "V1"], "dense": table[~table.moe],
              "dense tp 1": table[~table.moe & (table.tp == 1)], "MoE": table[table.moe]}
    return pd.DataFrame([{"group": k, "points": len(g), "mean_error_gib": round(float(g.error_gib.mean()), 3),
                          "mae_gib": round(float(g.error_gib.abs().mean()), 3)} for k, g in groups.items() if len(g)])


# ---- the sampler-aware reserve: max(forward, sampler) + non-torch (sim/kv_cache.activation_reserve_bytes) ----

def _columns(df: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(tokens x hidden, sampler logits = min(max_num_seqs, tokens) x vocab, tp > 1 with vLLM's custom all-reduce,
    tp > 1 on NCCL alone), the first two in GiB per byte per element."""  # shapes (n,) each
    rows = np.minimum(df.max_num_seqs.to_numpy(), df.tokens.to_numpy())
    multi = df.tp.to_numpy() > 1
    nccl = (df.all_reduce == "nccl").to_numpy()
    return (df.tokens.to_numpy() * df.hidden.to_numpy() / GIB, rows * df.vocab.to_numpy() / GIB,
            (multi & ~nccl).astype(float), (multi & nccl).astype(float))


def predict_sampler(df: pd.DataFrame, params: dict, form: str = "max") -> np.ndarray:
    """GiB per GPU: form "max" = max(a x T x H, s_kind x R x V) + b + c x (tp > 1, custom all-reduce) + d x (tp > 1,
    NCCL only) (the profile peak is the larger of the forward's and the sampler's: vLLM runs one after the other),
    "sum" = the two added. A log whose kind has no s (unknown, or none of its kind in the fit) gets NaN."""
    th, logits, custom, nccl = _columns(df)
    s = np.array([params.get(f"s_{kind}", np.nan) for kind in df.sampler])
    forward, sampler = params["a"] * th, s * logits
    torch_peak = np.maximum(forward, sampler) if form == "max" else forward + sampler
    return torch_peak + params["b"] + params.get("c", 0.0) * custom + params.get("d", 0.0) * nccl


def _solve_sampler(df: pd.DataFrame, loss: str, form: str, pinned: dict | None = None) -> dict:
    """Fit a, b, c and d (where some log has that tp > 1 kind) and s_kind per sampler kind present (bytes per
    element; GiB), all >= 0: least squares, or least absolute deviation (loss "lad", a smooth L1 of 0.02 GiB scale).
    `pinned` holds parameters given, not fitted (e.g. {"s_flashinfer": 14}: a term counted from vLLM's source)."""
    from scipy.optimize import least_squares

    pinned = pinned or {}
    kinds = [k for k in SAMPLERS if (df.sampler == k).any()]
    _, _, custom, nccl = _columns(df)
    names = ["a", "b"] + (["c"] if custom.any() else []) + (["d"] if nccl.any() else []) + [f"s_{k}" for k in kinds]
    start = {"a": 30.0, "b": 0.3, "c": 1.0, "d": 1.0, **{f"s_{k}": 20.0 for k in kinds}}
    free = [n for n in names if n not in pinned]
    y = df.logged_gib.to_numpy()

    def residual(x):
        return predict_sampler(df, {**pinned, **dict(zip(free, x))}, form) - y

    sol = least_squares(residual, np.array([start[n] for n in free]), bounds=(0.0, np.inf),
                        loss="linear" if loss == "lsq" else "soft_l1", f_scale=0.02)
    return {**dict(zip(free, sol.x)), **{k: v for k, v in pinned.items() if k in names}}


def fit_sampler(df: pd.DataFrame, loss: str = "lsq", form: str = "max", pinned: dict | None = None) -> dict:
    """The sampler-aware fit over the logs of a known sampler, with its in-sample, leave-one-out,
    leave-one-engine-out (V0 <-> V1) and leave-one-source-out (every log of one page or stored file held out
    together) errors, GiB, error = fit - logged; logs of unknown sampler are scored with the fit's sort and
    flashinfer terms beside. `pinned`: parameters held at the values given in every refit (_solve_sampler)."""
    known = df[df.sampler != "unknown"].reset_index(drop=True)
    params = _solve_sampler(known, loss, form, pinned)
    out = known[["id", "engine", "sampler", "tp", "logged_gib"]].copy()
    out["fit_gib"] = predict_sampler(known, params, form).round(3)
    out["fit_error_gib"] = (out.fit_gib - out.logged_gib).round(3)

    def held_out(groups) -> np.ndarray:
        err = np.full(len(known), np.nan)
        for g in pd.unique(groups):
            held = (groups == g)
            rest = known[~held]
            if len(rest) >= 4:
                err[held] = predict_sampler(known[held], _solve_sampler(rest, loss, form, pinned), form) - \
                    known.logged_gib[held]
        return np.round(err, 3)

    out["loo_error_gib"] = held_out(np.arange(len(known)))
    out["engine_out_error_gib"] = held_out(known.engine.to_numpy())
    out["source_out_error_gib"] = held_out(known.source.to_numpy())

    def mae(col, rows=None):
        v = (out[col] if rows is None else out[col][rows]).dropna().abs()
        return round(float(v.mean()), 3) if len(v) else None

    v1 = (out.engine == "V1").to_numpy()
    unknown = df[df.sampler == "unknown"]
    scored = pd.DataFrame({"id": unknown.id, "logged_gib": unknown.logged_gib})
    for kind in ("sort", "flashinfer"):
        scored[f"fit_as_{kind}_gib"] = predict_sampler(unknown.assign(sampler=kind), params, form).round(3)
    return {"loss": loss, "form": form, "points": len(known),
            **{k: round(float(v), 3) for k, v in params.items()},
            "mae_in_sample_gib": mae("fit_error_gib"), "mae_in_sample_v1_gib": mae("fit_error_gib", v1),
            "mae_leave_one_out_gib": mae("loo_error_gib"), "mae_leave_one_out_v1_gib": mae("loo_error_gib", v1),
            "mae_leave_one_engine_out_gib": mae("engine_out_error_gib"),
            "mae_leave_one_source_out_gib": mae("source_out_error_gib"),
            "mae_leave_one_source_out_v1_gib": mae("source_out_error_gib", v1),
            "table": out, "unknown": scored}


# ---- the CUDA-graph estimate vLLM 0.20+ takes off the KV cache (sim/cuda_graphs.py) ----

CUDA_GRAPH_COLUMNS = ["id", "version", "applied", "model", "tokens", "max_num_seqs", "piecewise", "full",
                      "default_counts", "logged_gib", "actual_gib", "sim_gib", "error_gib", "source"]


def compare_cuda_graphs(logs: list[MemoryLog]) -> pd.DataFrame:
    """One row per log that prints vLLM's CUDA-graph estimate: the logged "Estimated CUDA graph memory" beside
    the simulator's (sim/cuda_graphs.cuda_graph_memory_bytes of the log's graph counts), GiB, error = sim -
    logged; `applied`: vLLM took it off the KV cache (0.20+ default); `default_counts`: the counts vLLM's default
    capture sizes give for the log's max_num_seqs and max_num_batched_tokens ("" where max_num_seqs is unknown)."""
    rows = []
    for log in (x for x in logs if x.cuda_graph_gib is not None):
        sim = cuda_graph_memory_bytes(log.piecewise_graphs, log.full_graphs) / GIB
        default = "/".join(map(str, graph_counts(log.max_num_seqs, log.tokens))) if log.max_num_seqs else ""
        rows.append({"id": log.id, "version": log.version, "applied": log.cuda_graphs, "model": log.model,
                     "tokens": log.tokens, "max_num_seqs": log.max_num_seqs or 0, "piecewise": log.piecewise_graphs,
                     "full": log.full_graphs, "default_counts": default, "logged_gib": log.cuda_graph_gib,
                     "actual_gib": log.cuda_graph_actual_gib if log.cuda_graph_actual_gib is not None
                     else float("nan"), "sim_gib": round(sim, 3), "error_gib": round(sim - log.cuda_graph_gib, 3),
                     "source": log.url or f"id {log.find_string}"})
    return pd.DataFrame(rows, columns=CUDA_GRAPH_COLUMNS)


def _graph_design(df: pd.DataFrame, form: str) -> np.ndarray:
    """[1, further graphs (each mode's count - 1; not in form "constant"), max_num_batched_tokens / 2^16 (form
    "tokens")]."""  # shape (n, 1|2|3)
    further = np.maximum(df.piecewise.to_numpy() - 1, 0) + np.maximum(df.full.to_numpy() - 1, 0)
    cols = [np.ones(len(df))] + ([] if form == "constant" else [further.astype(float)])
    if form == "tokens":
        cols.append(df.tokens.to_numpy() / 2**16)
    return np.column_stack(cols)


def _solve_graphs(df: pd.DataFrame, loss: str, form: str) -> np.ndarray:
    """Least squares, or least absolute deviation (loss "lad": iteratively reweighted), of the logged estimate
    on _graph_design; GiB per column."""
    x, y = _graph_design(df, form), df.logged_gib.to_numpy()
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    if loss == "lad":
        for _ in range(200):
            w = 1.0 / np.sqrt(np.maximum(np.abs(y - x @ coef), 1e-4))
            coef = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]
    return coef


def fit_cuda_graphs(df: pd.DataFrame, loss: str = "lad", form: str = "graphs") -> dict:
    """Fit first + per_graph x further graphs (form "graphs": the simulator's), that + c x max_num_batched_tokens
    (form "tokens") or one constant (form "constant"), for comparison, on compare_cuda_graphs' table, with
    in-sample, leave-one-out and leave-one-source-out errors (GiB, fit - logged)."""
    coef = _solve_graphs(df, loss, form)
    x, y = _graph_design(df, form), df.logged_gib.to_numpy()

    def held_out(groups) -> np.ndarray:
        err = np.full(len(df), np.nan)
        for g in pd.unique(groups):
            held = np.asarray(groups == g)
            if (~held).sum() >= x.shape[1] + 1:
                err[held] = x[held] @ _solve_graphs(df[~held], loss, form) - y[held]
        return err

    loo = held_out(np.arange(len(df)))
    source = held_out(df.source.to_numpy())

    def mae(v):
        v = np.abs(v[~np.isnan(v)])
        return round(float(v.mean()), 3) if len(v) else None

    out = {"loss": loss, "form": form, "points": len(df), "first_mib": round(float(coef[0]) * 1024, 1),
           "per_graph_mib": round(float(coef[1]) * 1024, 2) if len(coef) > 1 else 0.0}
    if form == "tokens":
        out["per_64k_tokens_mib"] = round(float(coef[2]) * 1024, 1)
    return {**out, "mae_in_sample_gib": mae(x @ coef - y), "mae_leave_one_out_gib": mae(loo),
            "mae_leave_one_source_out_gib": mae(source), "loo_error_gib": np.round(loo, 3)}


def cuda_graph_report(logs: list[MemoryLog], with_fit: bool) -> str:
    """The CUDA-graph section of the markdown: the per-log table, its MAE and, with_fit, the fits."""
    table = compare_cuda_graphs(logs)
    if table.empty:
        return ""
    text = (f"\nvLLM's logged CUDA-graph estimate vs the simulator's {CUDA_GRAPH_FIRST_BYTES / 2**20:g} MiB + "
            f"{CUDA_GRAPH_PER_GRAPH_BYTES / 2**20:g} MiB x further graphs (sim/cuda_graphs.py; GiB, error = "
            f"simulator - logged; MAE {table.error_gib.abs().mean():.3f} over {len(table)} logs; `applied`: vLLM "
            "took it off the KV cache)\n\n" + markdown_table(table.drop(columns=["source"]), floatfmt="{:g}") + "\n")
    if with_fit:
        fits = [fit_cuda_graphs(table, loss, form) for form in ("graphs", "tokens", "constant")
                for loss in ("lad", "lsq")]
        scores = pd.DataFrame([{k: v for k, v in f.items() if k != "loo_error_gib"} for f in fits])
        text += ("\nCUDA-graph fits (MAE, GiB; leave-one-source-out: every log of one page or stored file held out "
                 "together)\n\n" + markdown_table(scores, floatfmt="{:g}") + "\n")
    return text


def main(argv=None) -> int:
    ap = data_check_parser("python -m sim.vllm_memory", __doc__, DEFAULT_FILE, "vLLM memory logs", "vllm_memory",
                           "also fit and score the reserve models (kv_cache.py is not changed)")
    args = ap.parse_args(argv)
    try:
        logs = load_logs(args.file)
        table = compare(logs)
        make_dirs(args.out)
        text = report(table, args.fit) + cuda_graph_report(logs, args.fit)
        out = Path(args.out)
        write_text_atomic(out / "vllm_memory.csv", table.to_csv(index=False))
        write_text_atomic(out / "cuda_graphs.csv", compare_cuda_graphs(logs).to_csv(index=False))
        write_text_atomic(out / "vllm_memory.md", text)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


SUMMARY_KEYS = ["points", "mae_in_sample_gib", "mae_in_sample_v1_gib", "mae_leave_one_out_gib", "mae_leave_one_out_v1_gib",
                "mae_leave_one_engine_out_gib", "mae_leave_one_source_out_gib", "mae_leave_one_source_out_v1_gib"]


def summary(table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Every model scored on the logs of a known sampler: the simulator's formula as it stands (no fit), the old
    form a x T x H + b + c x (tp > 1), and the sampler-aware forms max / sum, each by least squares and least
    absolute deviation. Returns the table and the fits (their per-log tables inside)."""
    known = table[table.sampler != "unknown"].reset_index(drop=True)
    v1 = known.engine == "V1"
    rows = [{"model": "the simulator's constants (sim/kv_cache.py)", "loss": "-", "params": "-", "points": len(known),
             "mae_in_sample_gib": round(float(known.error_gib.abs().mean()), 3),
             "mae_in_sample_v1_gib": round(float(known.error_gib[v1].abs().mean()), 3)}]
    fits = {}
    for loss in ("lsq", "lad"):
        f = fit(known, loss)
        fits[("linear", loss)] = f
        rows.append({"model": "a T H + b + c [tp > 1]", "loss": loss,
                     "params": f"a {f['a_bytes_per_token_hidden']:g} B, b {f['b_gib']:g}, c {f['c_tp_gt1_gib']:g} GiB",
                     **{k: f.get(k) for k in SUMMARY_KEYS}})
    for form in ("max", "sum"):
        for loss in ("lsq", "lad"):
            f = fit_sampler(table, loss, form)
            fits[(form, loss)] = f
            params = ", ".join(f"{k} {f[k]:g}" for k in ("a", "s_sort", "s_flashinfer", "s_triton", "b", "c", "d")
                               if k in f)
            rows.append({"model": f"{form}(a T H, s R V) + b + c/d [tp > 1]", "loss": loss, "params": params,
                         **{k: f.get(k) for k in SUMMARY_KEYS}})
    for loss in ("lsq", "lad"):  # FlashInfer's bytes per logit held at vLLM's source count (sim/kv_cache.py)
        f = fit_sampler(table, loss, "max", pinned={"s_flashinfer": FLASHINFER_SAMPLER_BYTES_PER_LOGIT})
        fits[("max-pinned", loss)] = f
        params = ", ".join(f"{k} {f[k]:g}" for k in ("a", "s_sort", "s_flashinfer", "s_triton", "b", "c", "d")
                           if k in f)
        rows.append({"model": "max(a T H, s R V) + b + c/d [tp > 1], s_flashinfer counted", "loss": loss,
                     "params": params, **{k: f.get(k) for k in SUMMARY_KEYS}})
    return pd.DataFrame(rows), fits


def report(table: pd.DataFrame, with_fit: bool) -> str:
    """The markdown: the per-log table, the group errors and, with_fit, every model's scores on the logs of a known
    sampler (summary), the chosen fits' per-log errors and the logs of unknown sampler scored as sort / flashinfer."""
    text = ("vLLM's logged per-GPU reserve (total x util - weights - KV) vs the simulator's "
            "max(tokens x hidden x a, min(max_num_seqs, tokens) x vocab x s_sampler) + non-torch "
            f"(a {ACTIVATION_BYTES_PER_TOKEN_HIDDEN:g} B, s {SAMPLER_BYTES_PER_LOGIT}, non-torch "
            f"{NON_TORCH_BYTES / GIB:g} GiB + {NON_TORCH_TP_BYTES / GIB:g} at tp > 1 with custom all-reduce, "
            f"{NON_TORCH_TP_NCCL_BYTES / GIB:g} on NCCL alone; a log of unknown sampler priced as "
            f"{SIM_SAMPLER_FOR_UNKNOWN}) (GiB; error = simulator - logged)\n\n"
            + markdown_table(table.drop(columns=["source"]), floatfmt="{:g}") + "\n\n"
            + markdown_table(group_errors(table), floatfmt="{:g}") + "\n")
    if with_fit:
        scores, fits = summary(table)
        text += ("\nscores on the logs of a known sampler (MAE, GiB; leave-one-out, leave-one-engine-out V0 <-> V1, "
                 "leave-one-source-out: every log of one page or stored file held out together)\n\n"
                 + markdown_table(scores, floatfmt="{:g}") + "\n")
        for key in (("max", "lad"), ("linear", "lad")):
            fitted = dict(fits[key])
            ftable = fitted.pop("table")
            unknown = fitted.pop("unknown", None)
            text += f"\nfit {key[0]} / {key[1]}: {json.dumps(fitted)}\n\n" + markdown_table(ftable, floatfmt="{:g}") + "\n"
            if unknown is not None:
                text += "\nlogs of unknown sampler, as the fit prices them\n\n" + \
                    markdown_table(unknown, floatfmt="{:g}") + "\n"
    return text


if __name__ == "__main__":
    sys.exit(main())
