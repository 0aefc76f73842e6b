"""Derived numbers from traces, computed here and never stored twice. The glossary lives here.

Glossary (DESIGN.md, vLLM's spec-decode counters):
- tau (acceptance length) = mean over rounds of accepted + 1 (the bonus or recovered token included).
- survival s_j = P(accepted >= j | a draft) over the rounds that drafted (k > 0), j = 1..k: vLLM's
  num_accepted_tokens_per_pos[j-1] / num_drafts (its scheduler counts a draft only for a request that had
  draft tokens scheduled, vllm/v1/core/sched/scheduler.py). A draft shorter than j counts as not reaching
  j, so s_j never rises with j, and s_1 = c_1. Rounds with no draft (an n-gram drafter finding no match)
  are left out: over every round, s_1 = 0.06 stood beside c_1 = 0.54 for the same drafter.
- conditional rate c_j = P(accepted >= j | accepted >= j-1, drafted >= j) = s_j / s_(j-1) (s_0 = 1) when
  every round drafts k tokens: the paper's Fig. 2 per-position acceptance.
- draft acceptance rate = accepted draft tokens / drafted tokens (vLLM's spec_decode acceptance rate).
- ECE: expected calibration error of a score against 0/1 outcomes, equal-width bins.
- speedup bound = max(tau x AR ms per token / (draft ms + verify ms per round), 1) x 1.1: the most
  wall-clock speedup a run's own acceptance and step times can explain (the shared prefill pulls a
  slowdown towards 1). A measured speedup above it
  is flagged, not reported (cold first timers, a noisy neighbour, a broken baseline).

    python -c "from lab.trace import read_traces; from lab.metrics import tau_table; print(tau_table(read_traces('runs/...')))"
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def tau(frame: pd.DataFrame) -> float:
    """Mean tokens emitted per verify round (accepted + 1)."""
    if len(frame) == 0:
        return float("nan")
    return float((frame["accepted"].to_numpy(dtype=np.float64) + 1.0).mean())


def survival(frame: pd.DataFrame, max_k: int | None = None) -> np.ndarray:
    """s_j = P(accepted >= j | a draft) over the frame's rounds that drafted (k > 0), j = 1..max_k (NaN when
    none drafted): vllm_counters' num_accepted_tokens_per_pos[j-1] / num_drafts.

    A draft shorter than j did not reach j, so it stays in the denominator; the curve is non-increasing
    and s_1 = c_1. The drafts behind every point: num_drafts(frame)."""
    k = frame["k"].to_numpy()
    accepted = frame["accepted"].to_numpy()
    max_k = int(max_k if max_k is not None else (k.max() if len(k) else 0))
    drafted = accepted[k > 0]
    if len(drafted) == 0:
        return np.full(max_k, np.nan)
    return np.array([float((drafted >= j).mean()) for j in range(1, max_k + 1)])


def num_drafts(frame: pd.DataFrame) -> int:
    """Rounds that drafted at least one token (vLLM's spec_decode_num_drafts): survival's denominator."""
    return int((frame["k"].to_numpy() > 0).sum())


def conditional_counts(frame: pd.DataFrame, max_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per position j = 1..max_k: drafts that reached j (drafted >= j, accepted >= j-1) and of those the
    ones accepted at j -> (reached [max_k], passed [max_k]) integer counts."""
    k = frame["k"].to_numpy()
    accepted = frame["accepted"].to_numpy()
    max_k = int(max_k if max_k is not None else (k.max() if len(k) else 0))
    reached, passed = np.zeros(max_k, dtype=np.int64), np.zeros(max_k, dtype=np.int64)
    for j in range(1, max_k + 1):
        mask = (k >= j) & (accepted >= j - 1)
        reached[j - 1], passed[j - 1] = mask.sum(), (accepted[mask] >= j).sum()
    return reached, passed


def conditional_rates(frame: pd.DataFrame, max_k: int | None = None) -> np.ndarray:
    """c_j = P(accepted >= j | accepted >= j-1, drafted >= j), j = 1..max_k (NaN where none reached j)."""
    reached, passed = conditional_counts(frame, max_k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(reached > 0, passed / np.maximum(reached, 1), np.nan)


def vllm_counters(frame: pd.DataFrame) -> dict:
    """The same numbers vLLM exports: spec_decode_num_drafts, _num_draft_tokens, _num_accepted_tokens,
    _num_accepted_tokens_per_pos (cumulative: position j counts drafts with at least j+1 accepted)."""
    k = frame["k"].to_numpy()
    accepted = frame["accepted"].to_numpy()
    max_k = int(k.max()) if len(k) else 0
    per_pos = [int((accepted >= j + 1).sum()) for j in range(max_k)]
    return {
        "num_drafts": num_drafts(frame),
        "num_draft_tokens": int(k.sum()),
        "num_accepted_tokens": int(accepted.sum()),
        "num_accepted_tokens_per_pos": per_pos,
    }


def counter_acceptance(counters: dict) -> dict:
    """tau, draft acceptance rate and survival per position from a vLLM-style counter table (the names of
    vllm_counters, e.g. the delta of an engine's /metrics over a load): tau = 1 + accepted / drafts (vLLM's
    mean acceptance length), survival s_j = num_accepted_tokens_per_pos[j-1] / num_drafts (given a draft);
    None / [] where nothing was drafted."""
    drafts, drafted = counters["num_drafts"], counters["num_draft_tokens"]
    accepted = counters["num_accepted_tokens"]
    return {
        "draft_acceptance_rate": accepted / drafted if drafted else None,
        "tau": 1 + accepted / drafts if drafts else None,
        "survival": [c / drafts for c in counters["num_accepted_tokens_per_pos"]] if drafts else [],
    }


def draft_acceptance_rate(frame: pd.DataFrame) -> float:
    drafted = frame["k"].sum()
    return float(frame["accepted"].sum() / drafted) if drafted else float("nan")


def tau_table(frame: pd.DataFrame, by=("method", "dataset", "temperature")) -> pd.DataFrame:
    """tau per group plus the counts behind it; rows = groups."""
    rows = []
    for key, group in frame.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "tau": tau(group), "rounds": len(group),
                     "draft_acceptance_rate": draft_acceptance_rate(group), "prompts": group["prompt_id"].nunique()})
    return pd.DataFrame(rows)


def _bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((scores * bins).astype(np.int64), bins - 1)


def ece(scores: np.ndarray, outcomes: np.ndarray, bins: int = 20) -> float:
    """Expected calibration error: sum over equal-width bins of |mean score - mean outcome| * bin weight."""
    scores = np.asarray(scores, dtype=np.float64)
    outcomes = np.asarray(outcomes, dtype=np.float64)
    if scores.size == 0:
        return float("nan")
    index = _bin_index(scores, bins)
    sum_scores = np.bincount(index, weights=scores, minlength=bins)
    sum_outcomes = np.bincount(index, weights=outcomes, minlength=bins)
    return float(np.abs(sum_scores - sum_outcomes).sum() / scores.size)


def reliability_bins(scores: np.ndarray, outcomes: np.ndarray, bins: int = 20) -> pd.DataFrame:
    """Points of a reliability diagram on the same equal-width bins as `ece` (empty bins dropped)."""
    scores = np.asarray(scores, dtype=np.float64)
    outcomes = np.asarray(outcomes, dtype=np.float64)
    index = _bin_index(scores, bins)
    count = np.bincount(index, minlength=bins)
    keep = count > 0
    return pd.DataFrame({
        "bin_lo": (np.arange(bins) / bins)[keep],
        "count": count[keep],
        "mean_confidence": np.bincount(index, weights=scores, minlength=bins)[keep] / count[keep],
        "accept_rate": np.bincount(index, weights=outcomes, minlength=bins)[keep] / count[keep],
    })


def percentiles(values, qs=(50, 90, 99)) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}


SPEEDUP_SLACK = 1.1  # room for prefill and bookkeeping the per-round means leave out


def speedup_bound(tau_value, ar_ms_per_token, draft_ms, verify_ms, slack: float = SPEEDUP_SLACK):
    """max(r, 1) x `slack`, r = tau tokens per (draft + verify) round against ar_ms_per_token per token.

    The measured speedup is (prefill + AR decode) / (prefill + spec decode) over the same prompts: the
    shared prefill pulls it from r towards 1, so a slowdown (r < 1) can measure up to 1 (seen on an H200:
    r = 0.38, measured 0.42 -- honest numbers flagged before this max), a speedup never above r."""
    return np.maximum(tau_value * ar_ms_per_token / (draft_ms + verify_ms), 1.0) * slack


def flag_unexplained_speedups(summary: pd.DataFrame, slack: float = SPEEDUP_SLACK) -> pd.DataFrame:
    """Adds speedup_bound and speedup_unexplained (speedup > bound) to a tau.csv frame. A row without
    rounds or timings has a NaN bound and is not flagged."""
    out = summary.copy()
    out["speedup_bound"] = speedup_bound(out["tau"], out["ar_ms_per_token"], out["draft_ms"], out["verify_ms"],
                                         slack)
    out["speedup_unexplained"] = (out["speedup"] > out["speedup_bound"]).fillna(False).astype(bool)
    return out


def reported_speedup(summary: pd.DataFrame) -> pd.Series:
    """The speedup column with flagged values blanked (NaN): what a report may print as a result."""
    if "speedup_unexplained" not in summary:
        return summary["speedup"]
    return summary["speedup"].where(~summary["speedup_unexplained"].astype(bool))
