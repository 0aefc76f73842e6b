"""Confidence calibration: Sequential Temperature Scaling (STS, paper Sec. 3.2.1) on held-out trace rows.

    lab run experiments/fig7_sla.yaml        # stage 'calibrate' (sim/stages.run_calibrate) fits and writes
    fit = fit_sts(conf[n, gamma], kcap[n], accepted[n], grid, bins)   # pure numpy, used by real/ too

The drafter's per-position score c_j = sigmoid(z_j) estimates P(position j accepted | earlier accepted);
the scheduler uses the prefix product a_k = prod_{j<=k} c_j. STS fixes positions left to right: for k = 1..gamma
it grid-searches T_k minimising the ECE of prod_{j<=k} sigmoid(z_j / T_j) against the label 1[accepted >= k],
with T_{<k} already fixed (order-preserving per position). Prompts are split (seeded) into a fit part and an
evaluation part; ECE before/after is reported on the evaluation part.
Outputs: <run>/calibration.json {"methods": {method: {"temperatures": [...], "ece_before": [...], ...}}}
and reliability.png.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lab.errors import LabError
from lab.metrics import ece, reliability_bins
from sim.trace_rows import pack_rows, select_rows


def check_calibration(payload, where: str) -> dict:
    """The calibration.json payload, checked as its readers use it (the simulator's replay, the dashboards):
    a "methods" object whose entries each hold a non-empty list of positive finite temperatures. LabError
    "<where>: ..." otherwise."""
    if not isinstance(payload, dict):
        raise LabError(f"{where}: expected a JSON object, found {type(payload).__name__}")
    methods = payload.get("methods")
    if not isinstance(methods, dict):
        raise LabError(f'{where}: no "methods" object')
    for name, entry in methods.items():
        temps = entry.get("temperatures") if isinstance(entry, dict) else None
        if not (isinstance(temps, list) and temps and all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < np.inf for t in temps)):
            raise LabError(f"{where}: methods.{name}.temperatures is not a non-empty list of positive numbers")
    return payload


def _logit(c: np.ndarray) -> np.ndarray:
    c = np.clip(c.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(c / (1 - c))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def prefix_probs(conf: np.ndarray, temps: np.ndarray) -> np.ndarray:
    """[n, gamma] cumulative survival prod_{j<=k} sigmoid(logit(c_j) / T_j)."""
    z = _logit(conf)
    return np.exp(np.cumsum(_log_sigmoid(z / temps[None, :]), axis=1))


def fit_sts(conf: np.ndarray, kcap: np.ndarray, accepted: np.ndarray, grid: np.ndarray, bins: int = 20) -> np.ndarray:
    """Per-position temperatures T[gamma] (1.0 where a position has no rows)."""
    n, g = conf.shape
    z = _logit(conf)
    temps = np.ones(g)
    prefix = np.zeros(n)  # log prod_{j<k} sigmoid(z_j / T_j)
    for k in range(g):
        rows = kcap > k
        if rows.sum() >= 2:
            label = accepted[rows] > k
            best, best_e = 1.0, np.inf
            for t in grid:
                p = np.exp(prefix[rows] + _log_sigmoid(z[rows, k] / t))
                e = ece(p, label, bins)
                if e < best_e - 1e-12:
                    best, best_e = float(t), e
            temps[k] = best
        prefix = prefix + _log_sigmoid(z[:, k] / temps[k])
    return temps


def per_position_ece(conf, kcap, accepted, temps, bins) -> list[float]:
    p = prefix_probs(conf, temps)
    out = []
    for k in range(conf.shape[1]):
        rows = kcap > k
        out.append(ece(p[rows, k], accepted[rows] > k, bins) if rows.any() else float("nan"))
    return out


def calibrate_frame(frame: pd.DataFrame, spec, seed: int, gamma: int, temperature: float | None = None) -> dict:
    """Fit STS per method on a trace frame; returns the calibration.json payload.

    Each method is fitted on the rows the simulator replays by default: the given sampling temperature
    (default: the method's lowest) and, with table 'auto', anchors where recorded, rounds otherwise —
    acceptance at T=0 and T=1 differs, so one set of temperatures must not mix them.
    """
    if len(frame) == 0:
        raise LabError("calibrate: no trace rows")
    grid = np.geomspace(spec.t_min, spec.t_max, spec.grid)
    rng = np.random.default_rng(seed)
    methods = {}
    for method in sorted(frame["method"].unique()):
        sel = select_rows(frame, method, temperature, spec.table, where="calibrate")
        table, sampling_t = sel.table, sel.temperature
        f = sel.rows[sel.rows["k"] > 0]
        keys = np.array(sorted(set(zip(f["dataset"], f["prompt_id"]))), dtype=object)
        if len(keys) < 2:
            raise LabError(f"calibrate: method {method!r} has {len(keys)} prompt(s) with drafts; need >= 2 to split")
        perm = rng.permutation(len(keys))
        n_eval = max(1, round(spec.holdout_frac * len(keys)))
        n_eval = min(n_eval, len(keys) - 1)
        eval_keys = {tuple(k) for k in keys[perm[:n_eval]]}
        is_eval = np.array([(d, p) in eval_keys for d, p in zip(f["dataset"], f["prompt_id"])])
        fit_c, _, fit_k, fit_a = pack_rows(f[~is_eval], gamma)
        ev_c, _, ev_k, ev_a = pack_rows(f[is_eval], gamma)
        temps = fit_sts(fit_c, fit_k, fit_a, grid, spec.bins)
        ones = np.ones(gamma)
        methods[str(method)] = {
            "temperatures": [float(t) for t in temps], "table": table, "sampling_temperature": sampling_t,
            "ece_before": per_position_ece(ev_c, ev_k, ev_a, ones, spec.bins),
            "ece_after": per_position_ece(ev_c, ev_k, ev_a, temps, spec.bins),
            "n_fit_rows": int((~is_eval).sum()), "n_eval_rows": int(is_eval.sum()),
            "n_fit_prompts": int(len(keys) - n_eval), "n_eval_prompts": int(n_eval),
        }
        methods[str(method)]["_eval"] = (ev_c, ev_k, ev_a)
    return {"methods": methods, "bins": spec.bins, "seed": seed, "grid": [spec.t_min, spec.t_max, spec.grid]}


def plot_reliability(payload: dict, path, bins: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lab.io import atomic_path

    methods = payload["methods"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4), squeeze=False)
    for ax, (method, m) in zip(axes[0], methods.items()):
        conf, kcap, acc = m["_eval"]
        g = conf.shape[1]
        label = (acc[:, None] > np.arange(g)[None, :])
        valid = kcap[:, None] > np.arange(g)[None, :]
        for name, temps in (("before", np.ones(g)), ("after STS", np.asarray(m["temperatures"]))):
            p = prefix_probs(conf, temps)[valid]
            y = label[valid]
            points = reliability_bins(p, y, bins)
            ax.plot(points["mean_confidence"], points["accept_rate"], marker="o",
                    label=f"{name} (ECE {ece(p, y, bins):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", ls=":")
        ax.set_title(f"{method}: prefix survival, held-out prompts")
        ax.set_xlabel("predicted P(accepted >= k)")
        ax.set_ylabel("observed")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
