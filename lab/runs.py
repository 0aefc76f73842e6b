"""Run directories: runs/<name>/<run_id>/ with config.yaml, manifest.json and per-stage outputs.

    ctx = open_run(cfg)            # creates or resumes the directory; writes config + manifest
    ctx.path("traces")             # a sub-path inside the run
    ctx.stage_done("evaluate")     # True once the stage wrote its completion marker
    ctx.redo("train")              # --force: forget the marker; the stage also drops its resumable parts
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.config import ExperimentConfig, dump_config
from lab.errors import LabError
from lab.io import write_json_atomic, write_text_atomic

TRACKED_PACKAGES = ("numpy", "pandas", "pyarrow", "pydantic", "simpy", "torch", "transformers", "streamlit")


@dataclass
class RunContext:
    cfg: ExperimentConfig
    root: Path
    show_progress: bool = True
    notes: dict = field(default_factory=dict)
    forced: set[str] = field(default_factory=set)  # stages rerun with --force: start over, no resume

    @property
    def run_id(self) -> str:
        return self.root.name

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def _marker(self, stage: str) -> Path:
        return self.root / ".stages" / f"{stage}.done"

    def stage_done(self, stage: str) -> bool:
        return self._marker(stage).exists()

    def redo(self, stage: str) -> None:
        self._marker(stage).unlink(missing_ok=True)
        self.forced.add(stage)

    def mark_done(self, stage: str, summary: dict | None = None) -> None:
        write_json_atomic(self._marker(stage), {"stage": stage, "finished_at": time.time(), **(summary or {})})


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


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def hardware_summary() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


def open_run(cfg: ExperimentConfig, show_progress: bool = True) -> RunContext:
    """Create or resume runs/<name>/<run_id>. A different config under an existing id is refused."""
    root = Path(cfg.output_dir) / cfg.name / cfg.resolved_run_id()
    config_text = dump_config(cfg)
    config_path = root / "config.yaml"
    if config_path.exists():
        from lab.config import load_config

        previous = load_config(config_path)
        if previous.content_hash() != cfg.content_hash():
            raise LabError(f"{root}: run_id exists with a different config; choose another run_id")
    else:
        write_text_atomic(config_path, config_text)
    write_json_atomic(root / "manifest.json", {
        "run_id": root.name, "name": cfg.name, "seed": cfg.seed, "config_hash": cfg.content_hash(),
        **git_state(), "packages": package_versions(), "hardware": hardware_summary(),
        "opened_at": time.time(),
    })
    return RunContext(cfg=cfg, root=root, show_progress=show_progress)
