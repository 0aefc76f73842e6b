"""Drafter registry: method name -> 'module:Class'. A new method is one file plus one line here.

    drafter = build_drafter(spec, target, checkpoint_dir)   # spec: lab.config_train.DrafterSpec

Every class implements real.drafters.base.Drafter and a classmethod
`from_spec(spec, target, checkpoint_dir)`; trained methods load their weights from checkpoint_dir.
"""
from __future__ import annotations

import importlib
from pathlib import Path

DRAFTERS: dict[str, str] = {
    "ngram": "real.drafters.ngram:NgramDrafter",
    "dspark": "real.drafters.dspark:DSparkDrafter",
    "dflash": "real.drafters.dflash:DFlashDrafter",
    "eagle3": "real.drafters.eagle3:Eagle3Drafter",
    "mtp": "real.drafters.mtp:MTPDrafter",
}


def drafter_class(method: str):
    module_name, class_name = DRAFTERS[method].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_drafter(spec, target, checkpoint_dir: Path | None = None):
    return drafter_class(spec.method).from_spec(spec, target, checkpoint_dir)
