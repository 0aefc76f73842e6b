"""Run directories: runs/<name>/<run_id>/ with config.yaml, manifest.json and per-stage outputs.

    ctx = open_run(cfg)            # creates or resumes the directory (locked); writes config + manifest
    ctx.path("traces")             # a sub-path inside the run
    ctx.stage_done("evaluate")     # True once the stage wrote its completion marker
    ctx.redo("train")              # --force: start over instead of resuming; the old marker and outputs
                                   # stay until the new run of the stage succeeds
    ctx.mark_done("train", {...})  # the marker, and the stage's provenance in manifest.json
    ctx.close()                    # drops the lock (so does the process ending, in any way)

Opening a run takes its lock (lab/lock.py; a second process gets `<run dir>: in use by pid N`) and then
removes the `.*.tmp` leftovers of writes that a killed process never finished. manifest.json is written
when the run is created and updated only when a stage finishes, so a stage that fails changes nothing.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.config import ExperimentConfig, dump_config
from lab.errors import LabError
from lab.io import TMP_SUFFIX, make_dirs, write_json_atomic, write_text_atomic
from lab.lock import RunLock

TRACKED_PACKAGES = ("numpy", "pandas", "pyarrow", "pydantic", "simpy", "torch", "transformers", "streamlit")


@dataclass
class RunContext:
    cfg: ExperimentConfig
    root: Path
    show_progress: bool = True
    notes: dict = field(default_factory=dict)
    forced: set[str] = field(default_factory=set)  # stages rerun with --force: start over, no resume
    lock: RunLock | None = None

    @property
    def run_id(self) -> str:
        return self.root.name

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def _marker(self, stage: str) -> Path:
        return self.root / ".stages" / f"{stage}.done"

    def stage_done(self, stage: str) -> bool:
        """True once the stage finished, unless it is being redone (--force, stale inputs)."""
        return stage not in self.forced and self._marker(stage).exists()

    def finished_at(self, stage: str) -> float | None:
        """When the stage last finished (its marker's time), or None when it never did."""
        marker = self._marker(stage)
        try:
            return float(json.loads(marker.read_text())["finished_at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return marker.stat().st_mtime if marker.exists() else None

    def redo(self, stage: str) -> None:
        """Run `stage` from scratch next. The marker stays: a failed rerun leaves the stage as it was."""
        self.forced.add(stage)

    def mark_done(self, stage: str, summary: dict | None = None) -> None:
        now = time.time()
        manifest_path = self.root / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = run_identity(self.cfg, self.root)
        provenance = {**git_state(), "packages": package_versions(), "hardware": hardware_summary()}
        manifest.update(provenance)  # the latest stage's, at the top level (what the dashboard shows)
        manifest.setdefault("stages", {})[stage] = {"finished_at": now, **provenance}
        write_json_atomic(manifest_path, manifest)
        write_json_atomic(self._marker(stage), {"stage": stage, "finished_at": now, **(summary or {})})
        self.forced.discard(stage)  # redone: done again

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=False,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """The lab's commit and whether its tracked files had uncommitted changes when the run opened."""
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha or "unknown", "git_dirty": None if status is None else bool(status)}


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of TRACKED_PACKAGES and of `extra` (those not installed are left out)."""
    versions = {}
    for name in TRACKED_PACKAGES + tuple(extra):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def hardware_summary() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


MANIFEST = "manifest.json"


def run_identity(cfg: ExperimentConfig, root: Path) -> dict:
    return {"run_id": root.name, "name": cfg.name, "seed": cfg.seed, "config_hash": cfg.content_hash(),
            "created_at": time.time(), "stages": {}}


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job: they share rank 0's run directory and lock."""
    return os.environ.get("RANK", "0") == "0"


def remove_leftover_tmp(root: Path) -> list[Path]:
    """Delete `.*.tmp` files and directories under root: unfinished atomic writes of a killed process."""
    leftovers = sorted((p for p in root.rglob(f".*{TMP_SUFFIX}")), key=lambda p: len(p.parts), reverse=True)
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


def _refuse_other_config(cfg: ExperimentConfig, root: Path, config_path: Path) -> None:
    if config_path.exists():
        from lab.config import load_config

        previous = load_config(config_path)
        if previous.content_hash() != cfg.content_hash():
            raise LabError(f"{root}: run_id exists with a different config; choose another run_id")


def run_directory(cfg: ExperimentConfig) -> Path:
    """runs/<name>/<run_id>: where `lab run` keeps this experiment's outputs (only computed here)."""
    return Path(cfg.output_dir) / cfg.name / cfg.resolved_run_id()


def open_run(cfg: ExperimentConfig, show_progress: bool = True) -> RunContext:
    """Create or resume runs/<name>/<run_id>, locked for this process. A different config under an existing
    id is refused."""
    root = run_directory(cfg)
    config_path = root / "config.yaml"
    _refuse_other_config(cfg, root, config_path)  # before the lock: a refused run leaves no trace
    make_dirs(root)
    main = is_main_process()
    lock = RunLock.acquire(root) if main else None
    try:
        _refuse_other_config(cfg, root, config_path)  # again, now that no other process can write it
        if main:
            remove_leftover_tmp(root)
            if not config_path.exists():
                write_text_atomic(config_path, dump_config(cfg))
            if not (root / MANIFEST).exists():
                write_json_atomic(root / MANIFEST, {**run_identity(cfg, root), **git_state(),
                                                    "packages": package_versions(), "hardware": hardware_summary()})
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return RunContext(cfg=cfg, root=root, show_progress=show_progress, lock=lock)
