"""Stage registry: stage name -> 'module:function'. Imported lazily so that lab never imports torch.

Each stage function takes a lab.runs.RunContext, skips work whose outputs already exist, and writes
atomically. A stage is one registry line. A stage outside lab whose input files need its own readers to be
checked (without torch) registers a check too: check(cfg, run_root, ahead) raises LabError at a bad file;
`ahead` says stages before it in this run may still write into run_root (lab/preflight.py calls them).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

STAGE_FUNCTIONS: dict[str, str] = {
    "prepare": "real.prepare:run_stage",
    "train": "real.train:run_stage",
    "evaluate": "real.evaluate:run_stage",
    "profile": "real.profile:run_stage",
    "engine": "real.engine.stage:run_stage",
    "fidelity": "real.engine.fidelity:run_stage",
    "calibrate": "sim.stages:run_calibrate",
    "sim": "sim.stages:run_sim",
    "report": "lab.report:run_stage",
}

# stage -> 'module:function' checking its input files before a run starts (`lab validate`, `lab run`)
STAGE_CHECKS: dict[str, str] = {
    "engine": "real.engine.loadgen:check_loads",
    "calibrate": "sim.stages:check_calibrate",
    "sim": "sim.stages:check_sim",
}


def stage_function(stage: str) -> Callable:
    return _load(STAGE_FUNCTIONS[stage])


def stage_check(stage: str) -> Callable | None:
    """The stage's input check from STAGE_CHECKS, or None when it has none."""
    return _load(STAGE_CHECKS[stage]) if stage in STAGE_CHECKS else None


def _load(target: str) -> Callable:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)
