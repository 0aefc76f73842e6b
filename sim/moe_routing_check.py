"""MoE routing skew in inference: published per-layer expert-popularity statistics against the routing model
(sim/routing.py), and the distinct experts per step that model gives.

    python -m sim.moe_routing_check --out moe_routing/     # fit each published trace, print the curves

The data (sim/validation/moe_routing.yaml, each run with its URL) are per-layer statistics of one model's routing
over a workload: concentration (1 - normalized entropy, mean over layers), the experts that hold 90% of the
selections and the hottest expert's share (medians over layers). For each run the check solves the popularity
spread cv (routing.cv_for_concentration, the trace's finite-sample bias removed) from the concentration alone, then
prints what that popularity says of the two statistics it was not fitted on -- the cross-check of the shape -- for
the gamma shape the cost model uses and for a log-normal of the same concentration (tried, dropped). The published
sources give no distinct-experts-per-batch curve, so the curve printed is the model's: distinct experts a step of B
independently routed tokens touches, skewed vs uniform, and the share of the uniform expert-weight bytes it reads.
The run marked `default` sets lab/config_sim.ROUTING_SKEW (tests/sim/test_moe_routing.py holds the two together).
The held-out serving rows of public_vllm.yaml are not here and choose nothing. Writes moe_routing.csv (each run's
fit and cross-checks), moe_routing_curve.csv (distinct experts by B) and moe_routing.md into --out. Bad input
(missing file, bad field) prints one `error:` line and exits 2 with nothing written.
"""
from __future__ import annotations

import sys
from argparse import ArgumentParser
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from scipy.optimize import brentq
from scipy.stats import norm

from lab.arguments import load_inputs
from lab.config_base import StrictModel
from lab.config_sim import ROUTING_SKEW
from lab.io import write_text_atomic
from lab.report import markdown_table
from sim.public_check import validated_runs
from sim.routing import (
    concentration,
    coverage_experts,
    cv_for_concentration,
    distinct_experts,
    popularity,
    sampling_bias,
)

DEFAULT_FILE = Path(__file__).parent / "validation" / "moe_routing.yaml"
BATCHES = (1, 2, 4, 8, 10, 16, 24, 32, 48, 64, 128, 256, 512, 1024)


class RoutingRun(StrictModel):
    """One published trace: a model's per-layer routing statistics over one workload."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str = Field(pattern=r"^https://")
    where: str = Field(min_length=1)
    model: str = Field(min_length=1)
    experts: int = Field(ge=2, le=4096)
    top_k: int = Field(ge=1)
    engine: str = Field(min_length=1)
    workload: str = Field(min_length=1)
    tokens: int = Field(ge=1, description="the trace's tokens (selections per layer: tokens x top_k)")
    tokens_printed: str | None = None
    concentration: float = Field(gt=0, lt=1, description="1 - entropy / ln E of a layer's selections, layer mean")
    coverage: float = Field(0.9, gt=0, lt=1)
    coverage_experts: int | None = Field(None, ge=1, description="hottest experts holding `coverage`, layer median")
    top1_share: float | None = Field(None, gt=0, lt=1, description="hottest expert's share, layer median")
    default: bool = False
    note: str | None = None

    @model_validator(mode="after")
    def _sizes(self):
        if self.top_k > self.experts:
            raise ValueError(f"top_k {self.top_k} exceeds experts {self.experts}")
        if self.coverage_experts is not None and self.coverage_experts > self.experts:
            raise ValueError(f"coverage_experts {self.coverage_experts} exceeds experts {self.experts}")
        return self


def load_runs(path: str | Path) -> list[RoutingRun]:
    """The runs of a routing data file; LabError naming the file and the first bad field."""
    return validated_runs(RoutingRun, path, "routing traces", "<run>")


def fitted_cv(run: RoutingRun) -> float:
    """The gamma popularity's cv whose concentration is the run's, less its trace's finite-sample bias."""
    return cv_for_concentration(run.concentration, run.experts, run.tokens * run.top_k)


def lognormal_popularity(n_experts: int, sigma: float) -> np.ndarray:
    """(E,) descending shares from log-normal quantiles with log-spread sigma (the shape tried and dropped)."""
    z = norm.ppf((np.arange(n_experts) + 0.5) / n_experts)[::-1]
    w = np.exp(sigma * (z - z[0]))
    return w / w.sum()


def lognormal_fit(run: RoutingRun) -> np.ndarray:
    goal = run.concentration - sampling_bias(run.experts, run.tokens * run.top_k)
    sigma = brentq(lambda s: concentration(lognormal_popularity(run.experts, s)) - goal, 1e-3, 10.0, xtol=1e-6)
    return lognormal_popularity(run.experts, sigma)


def score(runs: list[RoutingRun]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run: the fitted cv and, for the gamma (used) and log-normal (dropped) shapes, the coverage experts and top
    expert share they imply beside the published ones; and the distinct-experts curve of each run's cv."""
    rows, curve = [], []
    for run in runs:
        cv = fitted_cv(run)
        row = {"run": run.id, "model": run.model, "experts": run.experts, "top_k": run.top_k,
               "workload": run.workload, "tokens": run.tokens, "concentration": run.concentration,
               "fitted_cv": round(cv, 4), "default": run.default,
               "published_coverage_experts": run.coverage_experts, "published_top1_pct": (
                   None if run.top1_share is None else round(100 * run.top1_share, 2))}
        for shape, p in (("gamma", popularity(run.experts, cv)), ("lognormal", lognormal_fit(run))):
            row[f"{shape}_coverage_experts"] = coverage_experts(p, run.coverage)
            row[f"{shape}_top1_pct"] = round(100 * float(p[0]), 2)
        rows.append(row)
        for b in BATCHES:
            uniform = float(distinct_experts(b, run.experts, run.top_k, 0.0))
            skewed = float(distinct_experts(b, run.experts, run.top_k, cv))
            curve.append({"run": run.id, "batch": b, "uniform": round(uniform, 2), "skewed": round(skewed, 2),
                          "bytes_vs_uniform": round(skewed / uniform, 3)})
    return pd.DataFrame(rows), pd.DataFrame(curve)


def markdown(fits: pd.DataFrame, curve: pd.DataFrame) -> str:
    lines = [("MoE routing skew: each published trace's concentration -> the popularity spread cv (gamma shape), and "
              "the two statistics it was not fitted on, gamma (used) and log-normal (dropped), beside the "
              "published"), "",
             markdown_table(fits, floatfmt="{:g}"), "",
             f"lab/config_sim.ROUTING_SKEW (the default): {ROUTING_SKEW:g}", "",
             ("Distinct experts of one MoE layer touched by a step of B independently routed tokens (the model's; "
              "no published curve): uniform vs skewed at each run's cv"), ""]
    wide = curve.pivot(index="batch", columns="run", values="skewed")
    wide.insert(0, "uniform", curve.groupby("batch")["uniform"].first())
    lines += [markdown_table(wide.reset_index(), floatfmt="{:g}")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.moe_routing_check", description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=str(DEFAULT_FILE), help="data file of published routing statistics")
    ap.add_argument("--out", default="moe_routing", help="output directory")
    args = ap.parse_args(argv)
    runs = load_inputs(load_runs, args)
    if runs is None:
        return 2
    fits, curve = score(runs)
    text = markdown(fits, curve)
    write_text_atomic(Path(args.out) / "moe_routing.csv", fits.to_csv(index=False))
    write_text_atomic(Path(args.out) / "moe_routing_curve.csv", curve.to_csv(index=False))
    write_text_atomic(Path(args.out) / "moe_routing.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
