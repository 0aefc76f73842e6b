"""Stage registry: stage name -> 'module:function'. Imported lazily so that lab never imports torch.

Each stage function takes a lab.runs.RunContext, skips work whose outputs already exist, and writes
atomically. A stage is one registry line.
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


def stage_function(stage: str) -> Callable:
    module_name, func_name = STAGE_FUNCTIONS[stage].split(":")
    return getattr(importlib.import_module(module_name), func_name)
