"""Run-directory lock: one process at a time works in a run directory (DESIGN.md rule 7).

    lock = RunLock.acquire(run_dir)     # LabError "<run dir>: in use by pid N" when another process holds it
    ...                                 # the lock lives as long as the object (or the process: kill -9 safe)
    lock.release()

An OS advisory lock (fcntl.flock) on <run dir>/.lock: the kernel drops it when the holding process exits
in any way, so a crashed run never leaves a stale lock behind. The file holds the holder's pid for the
message only; its presence means nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

from lab.errors import LabError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected there
    fcntl = None

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, path: Path, handle):
        self.path, self._handle = path, handle

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        path = Path(run_dir) / LOCK_FILE
        try:
            handle = open(path, "a+")  # noqa: SIM115 -- held open for the life of the run
        except OSError as exc:
            raise LabError(f"{run_dir}: cannot open the run lock ({exc.strerror})") from None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise LabError(f"{run_dir}: in use by pid {holder}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return cls(path, handle)

    def release(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()  # closing the descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._handle is not None and not self._handle.closed
