"""Does one tokenizer's ShareGPT length table, scaled, stand in for another's? The evidence behind `borrow`
(sim/workload.py borrowed_sharegpt_table): for every ordered pair of cached tables (source A, target B), A's
conversations scaled to B's kept means and filtered again, against B's own kept rows.

    python -m sim.sharegpt_borrow_check              # every pair of $DSPARK_LAB_CACHE/lengths/sharegpt-*.csv
    python -m sim.sharegpt_borrow_check --out DIR    # + DIR/sharegpt_borrow_check.csv

Per pair: the two-sample Kolmogorov-Smirnov distance of prompts and of outputs (0: one distribution; at B's means
alone, every request the same length, it is ~0.6), the 1-Wasserstein distance over B's mean, the worst ratio of
the quartiles / p90 / p99, and the standard deviation of a 200-prompt and a 1000-prompt sample's mean prompt (what
the public check's seed choice works against). Also, per conversation, the spread of B's count over A's (rows of
the same conversation index; tables built by `python -m real.sharegpt_lengths` share them). Build more tables to
check a tokenizer of your own: `python -m real.sharegpt_lengths --tokenizer DIR`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from lab.arguments import ArgumentParser
from lab.errors import LabError
from lab.io import make_dirs, write_text_atomic
from sim.workload import (
    borrowed_sharegpt_table,
    cached_sharegpt_tables,
    load_length_table,
    sharegpt_filter,
    sharegpt_table_path,
)

QUANTILES = (0.25, 0.5, 0.75, 0.9, 0.99)
SAMPLES = (200, 1000)  # prompts per benchmark run: the IOG rows' and the gpustack bursts'


def sample_mean_sd(values: np.ndarray, n: int) -> float:
    """The standard deviation of the mean of n rows drawn without replacement from `values` [N]."""
    big = len(values)
    return float(values.std() / np.sqrt(n) * np.sqrt(max(big - n, 0) / max(big - 1, 1)))


def compare(source: np.ndarray, target: np.ndarray) -> dict:
    """One pair: `source` [m, 2] unfiltered counts scaled to the kept means of `target` [n, 2] (unfiltered)."""
    kept = sharegpt_filter(target)  # [k, 2]
    scaled = borrowed_sharegpt_table(source, *kept.mean(axis=0), where="sim.sharegpt_borrow_check")
    out = {"kept": len(kept), "scaled_kept": len(scaled)}
    for i, side in enumerate(("prompt", "output")):
        mine, theirs = scaled[:, i], kept[:, i]
        out[f"ks_{side}"] = stats.ks_2samp(mine, theirs).statistic
        out[f"w1_over_mean_{side}"] = stats.wasserstein_distance(mine, theirs) / theirs.mean()
        ratio = np.quantile(mine, QUANTILES) / np.quantile(theirs, QUANTILES)
        out[f"worst_quantile_ratio_{side}"] = float(ratio[np.argmax(np.abs(np.log(ratio)))])
        out[f"ks_{side}_at_mean"] = stats.ks_2samp(np.full(len(theirs), theirs.mean()), theirs).statistic
    for n in SAMPLES:
        out[f"sd_mean_prompt_{n}"] = sample_mean_sd(scaled[:, 0].astype(float), n)
        out[f"sd_mean_prompt_{n}_target"] = sample_mean_sd(kept[:, 0].astype(float), n)
    both = (source >= 1).all(axis=1) & (target >= 1).all(axis=1)
    per = target[both] / source[both]  # [j, 2] the same conversation, B's count over A's
    for i, side in enumerate(("prompt", "output")):
        low, mid, high = np.quantile(per[:, i], [0.05, 0.5, 0.95])
        out[f"per_conversation_{side}_p05_p50_p95"] = f"{low:.3f} {mid:.3f} {high:.3f}"
    return out


def check(names: list[str]) -> pd.DataFrame:
    """One row per ordered pair (source, target) of the named cached tables."""
    frames = {}
    for name in names:
        frame = pd.read_csv(sharegpt_table_path(name))
        if "conversation" not in frame.columns:
            raise LabError(f"{sharegpt_table_path(name)}: no `conversation` column (build it with python -m "
                           "real.sharegpt_lengths)")
        frames[name] = frame.set_index("conversation")
    common = sorted(set.intersection(*(set(f.index) for f in frames.values())))
    if not common:
        raise LabError(f"the tables {names} share no conversation")
    tables = {n: load_length_table(sharegpt_table_path(n))[np.searchsorted(frames[n].index, common)] for n in names}
    return pd.DataFrame([{"source": a, "target": b, **compare(tables[a], tables[b])}
                         for b in names for a in names if a != b])


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m sim.sharegpt_borrow_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="directory for sharegpt_borrow_check.csv (default: print only)")
    args = ap.parse_args(argv)
    try:
        names = cached_sharegpt_tables()
        if len(names) < 2:
            raise LabError(f"{sharegpt_table_path('x').parent}: {len(names)} ShareGPT table(s) {names}; two or more "
                           "are needed (python -m real.sharegpt_lengths --tokenizer qwen3 / llama3 / ...)")
        table = check(names)
        if args.out:
            make_dirs(args.out)
            write_text_atomic(Path(args.out) / "sharegpt_borrow_check.csv", table.to_csv(index=False))
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = ["source", "target", "ks_prompt", "ks_output", "w1_over_mean_prompt", "w1_over_mean_output",
             "worst_quantile_ratio_prompt", "worst_quantile_ratio_output", "sd_mean_prompt_200",
             "sd_mean_prompt_200_target"]
    print(table[shown].round(3).to_string(index=False))
    print(f"\nworst KS over all pairs: prompt {table.ks_prompt.max():.3f}, output {table.ks_output.max():.3f} "
          f"(at the target's means alone: {table.ks_prompt_at_mean.min():.2f} or more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
