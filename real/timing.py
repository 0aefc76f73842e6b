"""The one clock of real/: wall time that waits for the device, so a timer measures the work, not the launch.

    t0 = now_ms(target.device); ...; ms = now_ms(target.device) - t0
    with stopwatch(device) as sw: ...      # sw.ms, sw.seconds once the block ends

CUDA runs kernels asynchronously: reading the clock right after launching them times the Python that
queued them (and charges their execution to whatever synchronizes next). Every timer in real/ therefore
goes through now_ms, which synchronizes a CUDA device first and is a plain perf_counter on a CPU.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def synchronize(device) -> None:
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def now_ms(device=None) -> float:
    """perf_counter in ms after the device's queued work has finished."""
    synchronize(device)
    return time.perf_counter() * 1000.0


@dataclass
class Stopwatch:
    ms: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ms / 1000.0


@contextmanager
def stopwatch(device=None):
    """Times the block, synchronizing `device` at both ends."""
    watch = Stopwatch()
    start = now_ms(device)
    try:
        yield watch
    finally:
        watch.ms = now_ms(device) - start
