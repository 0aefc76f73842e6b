"""vLLM speculative decoding on GPUs: published TPOT with and without a drafter, and the acceptance length of the
same run, against the cost model's speculative step.

    python -m sim.spec_decode_check --out spec_decode/          # price every published point on its preset card
    python -m sim.spec_decode_check --fit --out spec_decode/    # + the what-if: the drafter run as K passes in a row

The data (sim/validation/spec_decode.yaml, each run with its URL) are decode timings of one target at one
concurrency without speculation (baseline_tpot_ms) and with a drafter at K = num_speculative_tokens, each with the
mean acceptance length AL of the same run (tokens per verify step, the bonus token included). The check prices, with
CostModel (the run's config.json, its preset card, drafter_layers, max_draft = K; a V1 engine's FLASH_ATTN, so on an
FA2 card a verify step pays FA2's unpacked tiles and KV re-reads, sim.cost.mixed_decode_rows), `concurrency` requests
of `context_tokens` each:
    priced baseline TPOT = step_time(n, one token each)
    priced spec TPOT     = step_time(n x (1 + K) tokens, spec=True, drafts = n x K) / AL
and splits the speculative step into verify (the target over 1 + K tokens), drafter (the pass over n x K tokens +
drafter_layers x layer_overhead) and spec_overhead (lab.config_sim's spec_overhead_ms). The measured step is TPOT x
AL; `implied drafter` is what it leaves once the priced verify and spec_overhead are paid. The speed-up (baseline
TPOT / spec TPOT), measured vs priced, is what a user of the lab reads. `drafter_ms_per_k` is the slope of the
implied drafter over K within a run (least squares): the cost of one more draft token as the engine runs it.

--fit adds a what-if, not a change: the drafter priced as K passes in a row (vLLM's EAGLE / MTP proposers draft
autoregressively), each the cost model's own pass over n tokens + drafter_layers x layer_overhead. The held-out
serving rows of public_vllm.yaml are not here and choose nothing. Writes spec_decode.csv (every priced point) and
spec_decode.md into --out. Bad input (missing file, bad field) prints one `error:` line and exits 2 with nothing
written.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from lab.arguments import start_data_check, write_check_outputs
from lab.config_base import StrictModel
from lab.config_sim import DRAFTER_PASSES
from sim.cost import CostModel, mixed_decode_rows
from sim.hardware import get_hardware
from sim.public_check import HardwarePreset, RepoFile, repo_model, validated_runs

DEFAULT_FILE = Path(__file__).parent / "validation" / "spec_decode.yaml"


class SpecPoint(StrictModel):
    """One speculative setting of a run: K draft tokens per step, the run's mean acceptance length, its TPOT."""

    num_speculative_tokens: int = Field(ge=1, le=32)
    acceptance_length: float = Field(ge=1.0, description="tokens per verify step, the bonus token included")
    tpot_ms: float = Field(gt=0)

    @model_validator(mode="after")
    def _at_most_k_plus_one(self):
        if self.acceptance_length > self.num_speculative_tokens + 1:
            raise ValueError(f"acceptance_length {self.acceptance_length:g} exceeds num_speculative_tokens + 1 "
                             f"({self.num_speculative_tokens + 1})")
        return self


class SpecDecodeRun(StrictModel):
    """One source: one target on one card at one concurrency, without speculation and with one drafter at one or
    more K."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str = Field(pattern=r"^https://")
    where: str = Field(min_length=1)
    host: str = Field(min_length=1)
    device: HardwarePreset = Field(description="a hardware preset name")
    device_name: str = Field(min_length=1)
    engine: str = Field(min_length=1)
    engine_version: str | None = None
    model: str = Field(min_length=1)
    model_config_path: RepoFile = Field(alias="model_config", description="a config.json, repository-relative")
    tp: int = Field(1, ge=1, le=64)
    method: Literal["eagle", "eagle3", "mtp", "ngram", "draft-model"]
    drafter: str | None = None
    drafter_layers: int = Field(ge=0, le=16, description="EAGLE / EAGLE-3: 1; MTP: the MTP layers; n-gram: 0")
    drafter_passes: Literal[DRAFTER_PASSES] = Field(  # type: ignore[valid-type]
        "one", description="as sim.model.drafter_passes: per_token for a chain (vLLM's EAGLE / MTP proposers)")
    drafter_head_vocab: int = Field(0, ge=0, description="as sim.model.drafter_head_vocab: LM-head rows per pass")
    concurrency: int = Field(ge=1, le=4096)
    context_tokens: int = Field(ge=0)
    baseline_tpot_ms: float = Field(gt=0)
    points: list[SpecPoint] = Field(min_length=1)
    note: str | None = None

    @model_validator(mode="after")
    def _ngram_has_no_layers(self):
        if self.method == "ngram" and self.drafter_layers:
            raise ValueError("an ngram drafter runs no layers: drafter_layers must be 0")
        return self


def load_runs(path: str | Path) -> list[SpecDecodeRun]:
    """The runs of a spec-decode data file; LabError naming the file and the first bad field."""
    return validated_runs(SpecDecodeRun, path, "speculative decoding runs", "<run>")



def _cost(run: SpecDecodeRun, k: int) -> CostModel:
    """The run's cost model as CostModel.from_config builds it for a V1 engine: on an FA2 card (the sheet's
    mixed_decode_tile_rows) a verify step takes FA2's unpacked kernel (64-row tiles, per-query-head KV reads)."""
    hw = get_hardware(run.device)
    return CostModel(hw=hw, model=repo_model(run.model_config_path), tp=run.tp,
                     drafter_layers=run.drafter_layers, max_draft=k, drafter_passes=run.drafter_passes,
                     drafter_head_vocab=run.drafter_head_vocab, mixed_decode_rows=mixed_decode_rows(hw, None))


def priced(run: SpecDecodeRun, k: int) -> dict[str, float]:
    """The cost model's steps of the run at K draft tokens, ms: baseline (one token per request), verify (the target
    over 1 + K tokens per request), drafter (the pass over n x K tokens + drafter_layers x layer_overhead),
    spec_overhead, spec (verify + drafter + spec_overhead = CostModel.step_time(spec=True)), and drafter_seq (the
    what-if: K passes over n tokens in a row, each with drafter_layers x layer_overhead)."""
    cost = _cost(run, k)
    n, kv = run.concurrency, run.concurrency * run.context_tokens
    base = cost.step_time(n, kv, n, False) * 1e3
    verify = cost.step_time(n * (1 + k), kv, n, False, drafts=n * k) * 1e3
    spec = cost.step_time(n * (1 + k), kv, n, True, drafts=n * k) * 1e3
    overhead = cost.spec_overhead_s * 1e3
    one = _cost(run, 1)  # one drafter pass over n tokens (max_draft 1)
    seq = k * (one.step_time(n, kv, n, True) - one.step_time(n, kv, n, False)
               - one.spec_overhead_s) * 1e3
    return {"base": base, "verify": verify, "drafter": spec - verify - overhead, "spec_overhead": overhead,
            "spec": spec, "drafter_seq": seq}


def score(runs: list[SpecDecodeRun]) -> pd.DataFrame:
    """Every point: measured and priced TPOT (baseline and speculative), speed-ups, the priced step's split, the
    measured step (TPOT x AL) and the drafter it implies, and the run's drafter cost per draft token."""
    rows = []
    for run in runs:
        mine = []
        for p in run.points:
            k, al = p.num_speculative_tokens, p.acceptance_length
            c = priced(run, k)
            step = p.tpot_ms * al
            spec_seq = c["verify"] + c["drafter_seq"] + c["spec_overhead"]
            mine.append({"run": run.id, "host": run.host, "device": run.device, "model": run.model,
                         "method": run.method, "drafter_layers": run.drafter_layers, "concurrency": run.concurrency,
                         "k": k, "acceptance_length": al,
                         "measured_base_tpot_ms": run.baseline_tpot_ms, "sim_base_tpot_ms": c["base"],
                         "measured_tpot_ms": p.tpot_ms, "sim_tpot_ms": c["spec"] / al,
                         "tpot_rel_err": c["spec"] / al / p.tpot_ms - 1,
                         "measured_speedup": run.baseline_tpot_ms / p.tpot_ms,
                         "sim_speedup": c["base"] / (c["spec"] / al),
                         "measured_step_ms": step, "sim_step_ms": c["spec"], "verify_ms": c["verify"],
                         "drafter_ms": c["drafter"], "spec_overhead_ms": c["spec_overhead"],
                         "implied_drafter_ms": step - c["verify"] - c["spec_overhead"],
                         "sim_tpot_seq_ms": spec_seq / al, "sim_speedup_seq": c["base"] / (spec_seq / al),
                         "drafter_seq_ms": c["drafter_seq"]})
        ks = np.array([r["k"] for r in mine], dtype=np.float64)
        implied = np.array([r["implied_drafter_ms"] for r in mine])
        slope = float(np.polyfit(ks, implied, 1)[0]) if len(set(ks)) > 1 else float("nan")
        for r in mine:
            r["drafter_ms_per_k"] = slope
        rows += mine
    return pd.DataFrame(rows)


def summary(points: pd.DataFrame) -> pd.DataFrame:
    """Per run: the baseline TPOT measured vs priced, median TPOT and speed-up errors over its points, and the
    implied drafter cost per draft token beside the priced one (the drafter's growth over K)."""
    rows = []
    for run, g in points.groupby("run", sort=False):
        ks = g.k.to_numpy(dtype=np.float64)
        priced_slope = float(np.polyfit(ks, g.drafter_ms.to_numpy(), 1)[0]) if len(set(ks)) > 1 else float("nan")
        rows.append({"run": run, "points": len(g), "base_rel_err": g.sim_base_tpot_ms.iloc[0]
                     / g.measured_base_tpot_ms.iloc[0] - 1,
                     "tpot_median_rel_err": float(np.median(g.tpot_rel_err)),
                     "speedup_median_rel_err": float(np.median(g.sim_speedup / g.measured_speedup - 1)),
                     "implied_drafter_ms_per_k": g.drafter_ms_per_k.iloc[0], "priced_drafter_ms_per_k": priced_slope,
                     "best_k_measured": int(g.k.iloc[int(np.argmin(g.measured_tpot_ms))]),
                     "best_k_priced": int(g.k.iloc[int(np.argmin(g.sim_tpot_ms))])})
    return pd.DataFrame(rows)


def markdown(points: pd.DataFrame, sums: pd.DataFrame, what_if: bool) -> str:
    seq_head = " priced TPOT, drafter K passes | speed-up, K passes |" if what_if else ""
    lines = [("Speculative decoding: measured vs the cost model on each run's preset card (error = priced / measured "
              "- 1; TPOT = step / acceptance length; speed-up = baseline TPOT / spec TPOT; step split priced: "
              "verify + drafter + spec_overhead; implied drafter = measured step - verify - spec_overhead)"), "",
             "| run | K | AL | TPOT meas | TPOT priced | error | speed-up meas | speed-up priced | step meas | "
             "verify | drafter | overhead | implied drafter |" + seq_head,
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if what_if else "")]
    for _, p in points.iterrows():
        seq = f" {p.sim_tpot_seq_ms:.2f} | {p.sim_speedup_seq:.2f}x |" if what_if else ""
        lines.append(f"| {p.run} | {p.k} | {p.acceptance_length:g} | {p.measured_tpot_ms:g} | {p.sim_tpot_ms:.2f} | "
                     f"{100 * p.tpot_rel_err:+.1f}% | {p.measured_speedup:.2f}x | {p.sim_speedup:.2f}x | "
                     f"{p.measured_step_ms:.2f} | {p.verify_ms:.2f} | {p.drafter_ms:.2f} | {p.spec_overhead_ms:.2f} | "
                     f"{p.implied_drafter_ms:.2f} |" + seq)
    lines += ["", ("Per run (baseline TPOT error; medians over the points; drafter ms per draft token: implied by the "
                   "measurements vs priced; the K with the lowest TPOT):"), "",
              ("| run | points | baseline TPOT error | TPOT error (median) | speed-up error (median) | "
               "implied drafter ms/K | priced drafter ms/K | best K measured | best K priced |"),
              "|---|---|---|---|---|---|---|---|---|"]
    for _, s in sums.iterrows():
        lines.append(f"| {s.run} | {s.points} | {100 * s.base_rel_err:+.1f}% | {100 * s.tpot_median_rel_err:+.1f}% | "
                     f"{100 * s.speedup_median_rel_err:+.1f}% | {s.implied_drafter_ms_per_k:.3f} | "
                     f"{s.priced_drafter_ms_per_k:.3f} | {s.best_k_measured} | {s.best_k_priced} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args, runs, cpu0, wall0 = start_data_check(
        load_runs, argv, "python -m sim.spec_decode_check", __doc__, DEFAULT_FILE, "speculative decoding runs",
        "spec_decode", "also price the what-if of a drafter run as K passes in a row (columns sim_tpot_seq_ms, "
        "sim_speedup_seq are always in the csv); the cost model is not changed")
    if runs is None:
        return 2
    points = score(runs)
    sums = summary(points)
    text = markdown(points, sums, args.fit)
    return write_check_outputs(args.out, {"spec_decode.csv": points}, "spec_decode.md", text, cpu0, wall0)


if __name__ == "__main__":
    sys.exit(main())
