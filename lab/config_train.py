"""Experiment-schema sections for drafters, data preparation and training (issue 3 grows these).

Each drafter in an experiment is one DrafterSpec; `method` picks the file in real/drafters/.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from lab.config_base import StrictModel

DrafterMethod = Literal["ngram", "dspark", "dflash", "eagle3", "mtp"]


class DrafterSpec(StrictModel):
    name: str = Field(description="label used in traces and reports, e.g. dspark-r64")
    method: DrafterMethod
    block_size: int = Field(7, ge=1, le=32, description="draft tokens per round (k at full block)")
    # n-gram / prompt-lookup drafting (training-free)
    ngram_max: int = Field(4, ge=1, le=16, description="longest suffix n-gram to look up")
    ngram_min: int = Field(1, ge=1, le=16, description="shortest suffix n-gram to look up")


class PrepareSection(StrictModel):
    pass


class TrainSection(StrictModel):
    pass
