"""User-given paths: one place that expands ~ and $VARS, and the config type that documents it.

    from lab.paths import expand_path, UserPath
    expand_path("$DATA/azure.csv")      # -> Path('/work/shared/data/azure.csv') when DATA is set
    class Section(StrictModel):
        trace_path: UserPath | None = None   # kept as written in the YAML; expanded where it is opened

Paths are stored as written (so a run id does not depend on one machine's environment) and expanded with
expand_path at the moment a file is opened. cache_root() is the lab's cache ($DSPARK_LAB_CACHE, default
~/.cache/dspark-lab): embedded models, downloaded wheels, length tables (real/ writes, sim/ reads).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

CACHE_ENV = "DSPARK_LAB_CACHE"

def _no_nul(text: str) -> str:
    """The operating system takes no path with a NUL character in it: Python's path calls raise ValueError
    ("embedded null byte"), a traceback where `lab validate` resolved a path."""
    if "\x00" in text:
        raise ValueError(f"{text!r}: a path cannot hold a NUL character")
    return text


PathText = Annotated[str, AfterValidator(_no_nul)]  # a path that may be empty ('' is the working directory)
UserPath = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_no_nul),
                     Field(description="a file path; ~ and $VARS expand when it is opened")]


def expand_path(raw: str | os.PathLike) -> Path:
    """`raw` with ~ and $VARS (or ${VARS}) expanded; an unset variable stays as written."""
    return Path(os.path.expandvars(os.path.expanduser(os.fspath(raw))))


def config_json_path(raw: str | os.PathLike) -> Path:
    """A model's config.json from a user's `raw` path: the file itself, or a checkpoint directory holding one
    (what `target.path` takes); ~ and $VARS expanded. A directory without config.json gives that file's path, for
    the caller's "not found"."""
    path = expand_path(raw)
    return path / "config.json" if path.is_dir() else path


def cache_root() -> Path:
    """$DSPARK_LAB_CACHE, default ~/.cache/dspark-lab: embedded models, downloaded wheels, length tables."""
    return expand_path(os.environ.get(CACHE_ENV) or "~/.cache/dspark-lab")
