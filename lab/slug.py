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
