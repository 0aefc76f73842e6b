"""Stage freshness: whether a stage marked done must run again because its inputs changed.

    reason = stale_reason(ctx, "report", ran_now={"evaluate"})   # "evaluate ran in this invocation"

A stage's inputs are the outputs of the stages before it (lab.config.STAGES order) and the files its
config section names (prompt files, a target checkpoint, trace paths, a profile CSV). A done stage is
stale, and `lab run` redoes it from scratch, when an earlier stage ran in this invocation, an earlier
stage finished after it (e.g. `--stages evaluate --force` yesterday, the full run today), or a named
input file was modified after it finished.
"""
from __future__ import annotations

from pathlib import Path

from lab.config import STAGES, ExperimentConfig
from lab.paths import expand_path


def _nested(obj, *names: str):
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def input_files(cfg: ExperimentConfig, stage: str) -> list[Path]:
    """Files or directories outside the run that `stage` reads, as the config names them."""
    paths: list[str | None] = []
    if stage == "prepare":
        paths += [d.path for d in cfg.prepare.datasets]
    if stage in ("prepare", "train", "evaluate"):
        paths.append(cfg.target.path)
    if stage == "evaluate" and cfg.prompts is not None:
        paths += [d.path for d in cfg.prompts.datasets]
    if stage in ("calibrate", "sim") and cfg.sim is not None:
        if _nested(cfg.sim, "acceptance", "source") == "traces":
            paths += list(_nested(cfg.sim, "acceptance", "paths") or [])
        paths.append(_nested(cfg.sim, "acceptance", "calibration_path"))
    if stage == "sim" and cfg.sim is not None:
        # every file the sim section names (a hardware spec file is read into the config: its run id changes)
        profile = _nested(cfg.sim, "cost", "profile")
        paths += [None if profile == "run" else profile, _nested(cfg.sim, "cost", "spec_profile"),
                  _nested(cfg.sim, "model", "config"), _nested(cfg.sim, "workload", "trace_path"),
                  _nested(cfg.sim, "workload", "log_path"), _nested(cfg.sim, "workload", "lengths", "csv_path")]
    return [expand_path(p) for p in paths if p]


def newest_mtime(path: Path) -> float | None:
    """The latest modification time of a file, or of any file under a directory; None when missing."""
    try:
        if path.is_dir():
            return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=path.stat().st_mtime)
        return path.stat().st_mtime
    except OSError:
        return None


def stale_reason(ctx, stage: str, ran_now: set[str]) -> str | None:
    """Why the done stage `stage` must run again, or None when its outputs are still current."""
    earlier = STAGES[:STAGES.index(stage)] if stage in STAGES else ()
    for before in earlier:
        if before in ran_now:
            return f"{before} ran in this invocation"
    done_at = ctx.finished_at(stage)
    if done_at is None:
        return None
    for before in earlier:
        finished = ctx.finished_at(before)
        if finished is not None and finished > done_at:
            return f"{before} finished after it"
    for path in input_files(ctx.cfg, stage):
        modified = newest_mtime(path)
        if modified is not None and modified > done_at:
            return f"{path} changed after it"
    return None
