"""Rounds: the engine stage's step profile and loads measured several times, interleaved in time.

    dirs = load_dirs(engine_dir, "nospec", "low", rounds=3)   # [<v>/<l>, <v>/<l>/round1, <v>/<l>/round2]
    combine_profiles([round0_csv, round1_csv, round2_csv], engine_dir)   # engine/step_profile.csv: medians
    table = aggregate_rounds([table_round0, table_round1, ...])       # sim and vLLM means, vLLM's spread

On this 2-core machine one vLLM measurement does not repeat: the same seeded load's TPOT mean moved 250 ->
314 ms between four runs minutes apart on one server, and one profile point (1 request decoding over 128
tokens, 12 gaps) 131 -> 217 ms (BENCHMARKS.md, issue 10, session 19). A profile measured once, minutes before
loads measured once, compares two samples of that noise. With `engine.rounds: R` the first variant's server
measures the whole profile grid, then drives every load, R times over; the other variants drive their loads R
times. The simulator reads the per-point median of the R profiles; the fidelity stage replays every round's
log and compares the mean of the simulated metrics with the mean of the engine's, and reports the engine's
own round-to-round spread beside the error (what no simulator can be closer than on one run).

Layout: round 0 keeps the one-round paths (<variant>/<load>/, engine/step_profile.csv), so a one-round run
is what it always was; round k >= 1 writes <variant>/<load>/round<k>/ and every round's profile is kept in
engine/profile_rounds/round<k>/step_profile.csv. With engine.profile_every_variant every other variant's server
measures the grid too, each round before its loads, under engine/<variant>/profile/ (the same layout inside).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROUND_PREFIX = "round"


def load_dirs(engine_dir: Path, variant: str, load: str, rounds: int) -> list[Path]:
    """The load's folder of every round: round 0 at <variant>/<load>, round k at <variant>/<load>/round<k>."""
    base = Path(engine_dir) / variant / load
    return [base] + [base / f"{ROUND_PREFIX}{k}" for k in range(1, rounds)]


def profile_home(engine_dir: Path, variant: str | None = None) -> Path:
    """Where a server's step profile lives: the first variant's (variant None) in engine/, another variant's own
    (engine.profile_every_variant) in engine/<variant>/profile/; step_profile.csv and profile_rounds/ inside."""
    return Path(engine_dir) if variant is None else Path(engine_dir) / variant / "profile"


def variant_profile(engine_dir: Path, variant: str) -> Path:
    """The step profile that prices `variant`: its own server's where the run measured one, else the first
    variant's (engine/step_profile.csv)."""
    own = profile_home(engine_dir, variant) / "step_profile.csv"
    return own if own.exists() else Path(engine_dir) / "step_profile.csv"


def profile_round_dir(home: Path, round_index: int) -> Path:
    """Where round `round_index`'s own step profile is written: <home>/profile_rounds/round<k> (profile_home)."""
    return Path(home) / "profile_rounds" / f"{ROUND_PREFIX}{round_index}"


def api_probe_path(engine_dir: Path, variant: str, round_index: int) -> Path:
    """Where a variant's idle API-path probe of round `round_index` is written (real.engine.server_side)."""
    return Path(engine_dir) / variant / "api_probe" / f"{ROUND_PREFIX}{round_index}.json"


def combine_profiles(round_csvs: list[Path], out_dir: Path) -> Path:
    """engine/step_profile.csv (+ .json) from the rounds' profiles: per grid point the median of the rounds'
    step_ms and of their step_ms_p90, repeats summed; meta of the first round plus the rounds' paths and their
    per-point spread (max / min of step_ms, the worst point). Every round must hold the same grid."""
    from lab.errors import LabError
    from sim.step_profile import read_profile, write_profile

    key = ["batch", "query_tokens", "context_len"]
    profiles = [read_profile(path) for path in round_csvs]
    frames = [p.frame().sort_values(key).reset_index(drop=True) for p in profiles]
    for path, frame in zip(round_csvs[1:], frames[1:]):
        if not frame[key].equals(frames[0][key]):
            raise LabError(f"{path}: its grid differs from {round_csvs[0]}'s; the rounds cannot be combined")
    steps = np.stack([f["step_ms"].to_numpy(float) for f in frames])  # [rounds, points]
    p90s = np.stack([f["step_ms_p90"].to_numpy(float) for f in frames])  # [rounds, points]
    combined = frames[0][key].copy()
    combined["step_ms"] = np.median(steps, axis=0)
    combined["step_ms_p90"] = np.median(p90s, axis=0)
    combined["repeats"] = sum(f["repeats"].to_numpy(int) for f in frames)
    spread = steps.max(axis=0) / steps.min(axis=0)  # [points]
    worst = int(np.argmax(spread))
    meta = {**profiles[0].meta, "rounds": [str(p) for p in round_csvs],
            "round_spread_max": round(float(spread[worst]), 4),
            "round_spread_max_point": [int(v) for v in combined.loc[worst, key]],
            "round_spread_median": round(float(np.median(spread)), 4)}
    return write_profile(out_dir, combined, meta)


def aggregate_rounds(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """One fidelity table (metric, sim, log, rel_error) from the rounds' tables: sim and log are the means over
    rounds, rel_error = sim / log - 1, rounds = how many, log_spread = the engine's round-to-round standard
    deviation over its mean (nan with one round)."""
    stacked = pd.concat([t.assign(round=i) for i, t in enumerate(tables)], ignore_index=True)
    grouped = stacked.groupby("metric", sort=False)
    sim, log = grouped["sim"].mean(), grouped["log"].mean()
    spread = grouped["log"].std(ddof=1) / log if len(tables) > 1 else log * np.nan
    out = pd.DataFrame({"metric": sim.index, "sim": sim.to_numpy(), "log": log.to_numpy()})
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rel_error"] = np.where(np.isfinite(out["log"]) & (out["log"] != 0), out["sim"] / out["log"] - 1, np.nan)
    out["rounds"] = len(tables)
    out["log_spread"] = spread.to_numpy()
    return out
