"""Slug: the one validator for every name that becomes part of a path (DESIGN.md rule 7).

    from lab.slug import Slug
    class DrafterSpec(StrictModel):
        name: Slug

A slug is letters, digits, '.', '_' and '-', does not start with '.', and holds no '..', so that a run id,
an experiment, drafter, dataset or policy name can never climb out of its run directory, name an absolute
path or hide as a dot-file.
"""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

SLUG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_slug(value: str) -> str:
    if not SLUG_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(f"{value!r} is not a slug: use letters, digits, '.', '_' and '-' (at most 128), "
                         "not starting with '.' and without '..'; it becomes part of a path")
    return value


Slug = Annotated[str, AfterValidator(check_slug)]

# lab.trace.shard_name joins <table>__<drafter>__<dataset>__T<t>.parquet: a drafter or dataset name holding it
# made the name split wrongly (the Live ablation page then kept every shard)
SHARD_SEPARATOR = "__"


def check_shard_part(value: str) -> str:
    """A drafter or dataset name: a slug without SHARD_SEPARATOR."""
    check_slug(value)
    if SHARD_SEPARATOR in value:
        raise ValueError(f"{value!r} holds {SHARD_SEPARATOR!r}, which separates the parts of a trace file's name "
                         f"(<table>__<drafter>__<dataset>__T<t>.parquet); use a single '_'")
    return value


def case_collision(names: list[str], what: str) -> str | None:
    """Why two of `names` would name one file on a case-insensitive filesystem (macOS, Windows): the first
    repeat, or the first two that differ only by case ("NA" and "na"); None if every name is its own."""
    first: dict[str, str] = {}
    for name in names:
        seen = first.setdefault(name.casefold(), name)
        if seen == name and names.count(name) > 1:
            return f"{name!r} is given twice; each {what} once"
        if seen != name:
            return (f"{seen!r} and {name!r} differ only by case: on a case-insensitive filesystem (macOS, Windows) "
                    f"they name the same files; give each {what} its own name")
    return None


ShardPart = Annotated[str, AfterValidator(check_shard_part)]
