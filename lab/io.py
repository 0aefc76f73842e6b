"""Atomic file writes: write to a temporary name beside the target, then rename.

A crash or a bad input mid-write never leaves a half-written result where a complete one stood. The
temporary name is `.<name>.<random>.tmp` (TMP_SUFFIX), which lab.runs sweeps up when a run opens, and the
result gets the permissions of an ordinary new file (0644 under the usual umask), not mkstemp's 0600.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lab.errors import LabError

TMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()
DIR_MODE = 0o777 & ~_current_umask()


def make_dirs(directory: str | Path) -> Path:
    """mkdir -p, with a path component that is a file (or unwritable) reported as a LabError."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [directory, *directory.parents] if p.exists() and not p.is_dir()), directory)
        raise LabError(f"{blocker}: is a file, a directory is needed here") from None
    except OSError as exc:
        raise LabError(f"{directory}: cannot create directory ({exc.strerror})") from None
    return directory


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same directory; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    make_dirs(path.parent)
    try:  # a read-only run directory (copied from elsewhere, a mounted archive): one line, not a traceback
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise LabError(f"{path.parent}: cannot write {path.name} here ({exc.strerror})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, FILE_MODE)
        try:
            os.replace(tmp_path, path)
        except IsADirectoryError:
            raise LabError(f"{path}: is a directory, a file is needed here") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def replace_dir(new: Path, final: Path) -> None:
    """Put the finished directory `new` where `final` is; the old one is removed only after the swap."""
    old = final.with_name(f".{final.name}.old{TMP_SUFFIX}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def add_runs_to_file(out: str | Path, measure, what: str = "run file") -> list[dict]:
    """Write the runs `measure()` returns into the YAML file `out` (a `runs:` list; an existing file keeps its
    other runs, those with the same ids are replaced), atomically. The file is checked before `measure` runs
    (minutes on a device), so a file that is not a run list, or a folder that cannot be written, fails first with
    one LabError naming --out; nothing is written then."""
    import yaml

    out = Path(out)
    if out.is_dir():
        raise LabError(f"--out {out}: is a directory, a YAML file path is needed")
    try:
        existing = yaml.safe_load(out.read_text()) if out.is_file() else {"runs": []}
    except yaml.YAMLError as exc:
        raise LabError(f"--out {out}: exists and is not YAML ({str(exc).splitlines()[0]}); not overwritten") from None
    except UnicodeDecodeError:
        raise LabError(f"--out {out}: exists and is not UTF-8 text (a binary file?); not overwritten") from None
    if not isinstance(existing, dict) or not isinstance(existing.get("runs"), list):
        raise LabError(f"--out {out}: exists and is not a {what} (no runs: list); not overwritten")
    make_dirs(out.parent)
    if not os.access(out.parent, os.W_OK):
        raise LabError(f"--out {out}: {out.parent} is not writable")
    runs = measure()
    ids = {r["id"] for r in runs}
    existing["runs"] = [r for r in existing["runs"] if r.get("id") not in ids] + runs
    write_text_atomic(out, yaml.safe_dump(existing, sort_keys=False, width=120, default_flow_style=None))
    return runs
