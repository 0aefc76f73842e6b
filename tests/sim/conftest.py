"""Shared helpers for the simulator tests: tiny configs and synthetic traces written with lab.trace."""
from __future__ import annotations

import numpy as np
import pytest

from lab.config_sim import SimSection
from lab.trace import StepRecord, write_shard


def make_sim(**sections) -> SimSection:
    base = {
        "hardware": {"name": "h100"}, "model": {"name": "llama-2-7b"}, "replicas": 1,
        "workload": {"kind": "closed_loop", "concurrency": 4, "duration_s": 20, "warmup_s": 2},
        "acceptance": {"source": "parametric", "max_draft": 7},
        "policies": [{"kind": "ar"}], "sweep": {"axis": "none", "workers": 1},
    }
    if {"preset", "spec"} & set(sections.get("hardware", {})):
        base["hardware"] = {}  # the test names its own device
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return SimSection.model_validate(base)


def synthetic_records(rng, method="dspark", dataset="gsm8k", n_prompts=6, out_len=60, k=7, alpha=0.8,
                      table="anchors", temperature=0.0, noise=0.3):
    """Greedy-style traces: per position, accepted = leading successes of Bernoulli(rate) with a per-row
    rate ~ Beta around alpha; the confidence reports that rate through logit noise."""
    recs = []
    for p in range(n_prompts):
        rows = out_len if table == "anchors" else out_len // 3
        for t in range(rows):
            rate = rng.beta(alpha * 5, (1 - alpha) * 5)
            ok = rng.random(k) < rate
            acc = int(np.cumprod(ok).sum())
            z = np.log(rate / (1 - rate)) + rng.normal(0, noise, size=k)
            conf = (1 / (1 + np.exp(-z))).tolist()
            recs.append(StepRecord(run_id="test", method=method, target="tiny", dataset=dataset,
                                   prompt_id=f"p{p}", table=table, temperature=temperature, step=t,
                                   context_len=100 + t, k=k, accepted=acc,
                                   accept_prob=[float(rate)] * k, confidence=conf))
    return recs


@pytest.fixture
def trace_dir(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "traces"
    d.mkdir()
    write_shard(synthetic_records(rng, table="anchors"), d / "anchors__dspark__gsm8k__T0.parquet")
    write_shard(synthetic_records(rng, table="rounds"), d / "rounds__dspark__gsm8k__T0.parquet")
    write_shard(synthetic_records(rng, dataset="mtbench", alpha=0.5, table="anchors"),
                d / "anchors__dspark__mtbench__T0.parquet")
    write_shard(synthetic_records(rng, method="mtp", k=1, alpha=0.7, table="rounds"),
                d / "rounds__mtp__gsm8k__T0.parquet")
    return d


class LockstepRank:
    """A stand-in for a Replica inside a LockstepGroup: fixed step plans, the group's step lengths recorded."""

    def __init__(self, env, plans):
        from types import SimpleNamespace
        self.cl, self.plans, self.n_active, self.dts = SimpleNamespace(env=env), list(plans), 0, []

    def plan(self):
        return self.plans.pop(0) if self.plans else None

    def finish_step(self, step, dt):
        self.dts.append(dt)
