"""Run-directory lock: one process at a time works in a run directory (DESIGN.md rule 7); the same
lock guards other one-process resources (an engine server's port, real/engine/server.py).

    lock = RunLock.acquire(run_dir)     # LabError "<run dir>: in use by pid N" when another process holds it
    ...                                 # the lock lives as long as the object (or the process: kill -9 safe)
    lock.release()
    lock = RunLock.acquire_file(path, "engine.port 8765")   # any other resource: a lock file and its label

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
        return cls.acquire_file(Path(run_dir) / LOCK_FILE, str(run_dir))

    @classmethod
    def acquire_file(cls, path: Path, label: str) -> RunLock:
        """Lock the file `path` (created when missing); LabError "<label>: in use by pid N" when another
        process holds it."""
        try:
            handle = open(path, "a+")  # noqa: SIM115 -- held open for the life of the lock
        except OSError as exc:
            raise LabError(f"{label}: cannot open the lock {path} ({exc.strerror})") from None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise LabError(f"{label}: in use by pid {holder}") from None
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
